//! `hopper bench`: drives the real HTTP API.

/// Arguments of `hopper bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}

/// Serves the bare baseline handler.
pub async fn serve_bare(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let app = axum::Router::new().fallback(|| async { "" });
    axum::serve(listener, app).await?;
    Ok(())
}

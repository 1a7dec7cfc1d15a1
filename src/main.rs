//! The `hopper` command: parses arguments and calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hopper::config::{Config, LogFormat, Overrides, DEFAULT_STORE};
use hopper::domain::ClientId;

/// glibc's malloc spends measurable time consolidating free lists under the many
/// small, short-lived allocations of request handling; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hopper",
    version,
    about = "An asynchronous HTTP front door: durable queues in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "HOPPER_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "HOPPER_LISTEN")]
        listen: Option<String>,
        /// Store URL [default: sqlite://data/hopper.db].
        #[arg(long, env = "HOPPER_STORE")]
        store: Option<String>,
        /// Log format [default: text].
        #[arg(long, env = "HOPPER_LOG_FORMAT", value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Manage clients directly in the store (the server may be running).
    Clients {
        /// Store URL.
        #[arg(long, env = "HOPPER_STORE", default_value = DEFAULT_STORE, global = true)]
        store: String,
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Measure throughput and latency of the HTTP API against a bare handler.
    Bench(hopper::bench::BenchArgs),
    /// A bare HTTP handler answering 200 to everything, the benchmark's baseline.
    #[command(hide = true)]
    Bare {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
    },
}

#[derive(Subcommand)]
enum ClientsAction {
    /// Create a client; prints its secret.
    Add {
        /// Client id.
        id: String,
        /// Secret to set; generated when absent.
        #[arg(long)]
        secret: Option<String>,
        /// A grant such as `admin` or `queue:orders:produce`; repeatable.
        #[arg(long = "grant")]
        grants: Vec<String>,
    },
    /// List clients and their grants.
    List,
    /// Delete a client.
    Remove {
        /// Client id.
        id: String,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("cannot install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn serve(overrides: Overrides) -> anyhow::Result<()> {
    let config = Config::load(overrides)?;
    init_logging(config.log_format);
    let server = hopper::server::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.shutdown();
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn clients(store_url: &str, action: ClientsAction) -> anyhow::Result<()> {
    let store = hopper::store::open(store_url).await?;
    let result = async {
        match action {
            ClientsAction::Add { id, secret, grants } => {
                let id = ClientId::parse(&id)?;
                let created =
                    hopper::auth::clients::create(store.as_ref(), id, secret, &grants).await?;
                println!(
                    "{}",
                    serde_json::json!({ "id": created.id.as_str(), "secret": created.secret })
                );
            }
            ClientsAction::List => {
                for client in store.list_clients().await? {
                    let grants: Vec<String> =
                        client.grants.iter().map(ToString::to_string).collect();
                    println!("{}\t{}", client.id, grants.join(","));
                }
            }
            ClientsAction::Remove { id } => {
                hopper::auth::clients::delete(store.as_ref(), &ClientId::parse(&id)?).await?;
                println!("removed {id}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            store,
            log_format,
        } => {
            serve(Overrides {
                config,
                listen,
                store,
                log_format,
                admin_secret: std::env::var("HOPPER_ADMIN_SECRET").ok(),
            })
            .await
        }
        Command::Clients { store, action } => clients(&store, action).await,
        Command::Bench(args) => hopper::bench::run(args).await,
        Command::Bare { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            hopper::bench::serve_bare(listener).await
        }
    }
}

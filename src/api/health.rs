//! `/health` (is the store answering?) and `/api/v1/ping` (is the process answering?).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Reply};
use crate::domain::clock::{now_millis, rfc3339};

/// How long `/health` waits for the store before calling it down.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ping))
}

/// How the store answered.
#[derive(Serialize, ToSchema)]
pub struct StoreHealth {
    /// `sqlite`, `postgres` or `redis`.
    backend: &'static str,
    /// What a 2xx write survives here: `fsync` (SQLite), `commit` (PostgreSQL),
    /// `fsync-always`, `fsync-everysec` or `none` (Redis, from its persistence settings).
    #[schema(pattern = "^(fsync|commit|fsync-always|fsync-everysec|none)$")]
    durability: &'static str,
    /// Whether it answered.
    ok: bool,
    /// How long it took to answer, in milliseconds.
    latency_ms: f64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `/health`'s answer.
#[derive(Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `unavailable`.
    #[schema(pattern = "^(ok|unavailable)$")]
    status: &'static str,
    /// The store's part.
    store: StoreHealth,
}

/// `GET /health` → 200 when the store answers, else 503 with the reason.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    operation_id = "health",
    summary = "Whether the store answers (no credentials)",
    security(()),
    responses(
        (status = 200, description = "The store answers", body = HealthView),
        (status = 503, description = "The store does not answer", body = HealthView),
    )
)]
pub async fn health(State(state): State<AppState>) -> Reply<HealthView> {
    let started = Instant::now();
    let checked = tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.ping()).await;
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let backend = state.store.backend();
    let failure = match checked {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!(
            "no answer within {} s",
            STORE_CHECK_TIMEOUT.as_secs()
        )),
    };
    if let Some(error) = &failure {
        tracing::warn!(%error, "health check: store down");
    }
    let (status, text) = match failure {
        None => (StatusCode::OK, "ok"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    Reply(
        status,
        HealthView {
            status: text,
            store: StoreHealth {
                backend,
                durability: state.store.durability().as_str(),
                ok: failure.is_none(),
                latency_ms,
                error: failure,
            },
        },
    )
}

/// `/api/v1/ping`'s answer.
#[derive(Serialize, ToSchema)]
pub struct PongView {
    /// Always `true`.
    pong: bool,
    /// The server's time (RFC 3339, UTC).
    #[schema(format = DateTime)]
    time: String,
}

/// `GET /api/v1/ping` → `{"pong": true, "time": "<RFC 3339>"}`; no credentials needed.
#[utoipa::path(
    get,
    path = "/api/v1/ping",
    tag = "health",
    operation_id = "ping",
    summary = "Whether the process answers (no credentials)",
    security(()),
    responses((status = 200, description = "It does", body = PongView))
)]
pub async fn ping() -> Reply<PongView> {
    Reply::ok(PongView {
        pong: true,
        time: rfc3339(now_millis()),
    })
}

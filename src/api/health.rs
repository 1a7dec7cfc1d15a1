//! `/health` (is the store answering?) and `/api/v1/ping` (is the process answering?).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{reply, AppState};
use crate::domain::clock::{now_millis, rfc3339};

/// How long `/health` waits for the store before calling it down.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health` → 200 when the store answers, else 503 with the reason.
pub async fn health(State(state): State<AppState>) -> Response {
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
    match failure {
        None => reply(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "store": { "backend": backend, "ok": true, "latency_ms": latency_ms }
            }),
        ),
        Some(error) => {
            tracing::warn!(%error, "health check: store down");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({
                    "status": "unavailable",
                    "store": { "backend": backend, "ok": false, "latency_ms": latency_ms, "error": error }
                }),
            )
        }
    }
}

/// `GET /api/v1/ping` → `{"pong": true, "time": "<RFC 3339>"}`; no credentials needed.
pub async fn ping() -> Response {
    reply(
        StatusCode::OK,
        &serde_json::json!({ "pong": true, "time": rfc3339(now_millis()) }),
    )
}

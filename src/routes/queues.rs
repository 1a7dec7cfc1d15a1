//! `enqueue`, `pop` and `count` routes (seeds 000 and 002). A queue nobody has pushed
//! to yet is empty, not missing: legacy clients count and pop before the first push.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

use super::request::{body_json, render, RouteRequest};
use super::Route;
use crate::api::extract::header_text;
use crate::api::{json_response, ApiError, AppState, Reply};
use crate::domain::PushOutcome;
use crate::domain::{DomainError, QueueName};

/// An enqueue route's answer without `respond`.
#[derive(Serialize)]
pub struct Enqueued {
    /// The message's id.
    pub id: String,
}

/// A count route's answer without `respond`.
#[derive(Serialize)]
pub struct Counted {
    /// Ready messages.
    pub count: u64,
}

/// Pushes the body verbatim (JSON as sent, other text as a JSON string), once per
/// `Idempotency-Key`; answers `respond` with `{{id}}`, else 202 `{"id"}`.
pub async fn enqueue(
    route: &Route,
    state: &AppState,
    queue: &QueueName,
    request: RouteRequest,
) -> Result<Response, ApiError> {
    let message = body_json(&request.body)?
        .ok_or_else(|| ApiError::bad_request("a request body is required"))?;
    let key = header_text(&request.headers, "idempotency-key")?.map(str::to_owned);
    let id = match state
        .queues
        .push(
            &request.caller,
            queue.clone(),
            vec![message.into()],
            None,
            key,
        )
        .await?
    {
        PushOutcome::Created(ids) => ids.first().map(ToString::to_string).unwrap_or_default(),
        PushOutcome::Duplicate(id) => id.to_string(),
    };
    Ok(match &route.respond {
        Some(answer) => {
            let mut values = request.values();
            values.set("id", Value::String(id));
            render(answer, &values)
        }
        None => Reply(StatusCode::ACCEPTED, Enqueued { id }).into_response(),
    })
}

/// Pops the oldest ready message: `respond` with `{{id}}` and `{{message}}`, else 200
/// with the message's body; when there is none, `empty`, else 204.
pub async fn pop(
    route: &Route,
    state: &AppState,
    queue: &QueueName,
    request: RouteRequest,
) -> Result<Response, ApiError> {
    let popped = match state.queues.pop(&request.caller, queue, 1).await {
        Ok(messages) => messages,
        Err(DomainError::NotFound(_)) => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let Some(message) = popped.into_iter().next() else {
        return Ok(match &route.empty {
            Some(answer) => render(answer, &request.values()),
            None => StatusCode::NO_CONTENT.into_response(),
        });
    };
    Ok(match &route.respond {
        Some(answer) => {
            let body: Value =
                serde_json::from_str(&message.body).map_err(|e| ApiError::Internal {
                    context: "a stored message is not valid JSON",
                    source: Box::new(e),
                })?;
            let mut values = request.values();
            values.set("id", Value::String(message.id.to_string()));
            values.set("message", body);
            render(answer, &values)
        }
        None => json_response(StatusCode::OK, message.body),
    })
}

/// Counts the ready messages: `respond` with `{{count}}`, else 200 `{"count"}`.
pub async fn count(
    route: &Route,
    state: &AppState,
    queue: &QueueName,
    request: RouteRequest,
) -> Result<Response, ApiError> {
    let ready = match state.queues.info(&request.caller, queue).await {
        Ok(info) => info.counts.ready,
        Err(DomainError::NotFound(_)) => 0,
        Err(error) => return Err(error.into()),
    };
    Ok(match &route.respond {
        Some(answer) => {
            let mut values = request.values();
            values.set("count", json!(ready));
            render(answer, &values)
        }
        None => Reply::ok(Counted { count: ready }).into_response(),
    })
}

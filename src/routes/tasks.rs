//! `task` routes (seed 001): the body becomes a task's payload and the request waits
//! for its result. A task finished by a delivery answers as the upstream did; one
//! finished by a worker answers with the task; one still running answers 202 with
//! where to find it.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::request::{body_json, render, RouteRequest};
use super::Route;
use crate::api::extract::header_text;
use crate::api::tasks::{pointing_to, TaskView};
use crate::api::{json_response, ApiError, AppState, Reply};
use crate::domain::QueueName;

/// Creates the task with the body as payload (`null` when empty: a route may carry
/// its input in the path alone) and waits up to the route's `wait`.
pub async fn create(
    route: &Route,
    state: &AppState,
    queue: &QueueName,
    wait: Option<Duration>,
    request: RouteRequest,
) -> Result<Response, ApiError> {
    let payload = body_json(&request.body)?.unwrap_or_else(|| "null".to_owned());
    let key = header_text(&request.headers, "idempotency-key")?.map(str::to_owned);
    let wait = state.tasks.wait_for(wait);
    let task = state
        .tasks
        .create(&request.caller, queue.clone(), &payload, key, wait)
        .await?;
    if task.status.is_final() {
        return match task.upstream_status {
            Some(status) => Ok(upstream_answer(status, task.result.as_deref())),
            None => Ok(Reply::ok(TaskView::new(task)?).into_response()),
        };
    }
    let pointer = pointing_to(&task.id);
    let answer = match &route.respond {
        Some(answer) => {
            let mut values = request.values();
            values.set("task_id", Value::String(task.id.to_string()));
            render(answer, &values)
        }
        None => Reply(StatusCode::ACCEPTED, TaskView::new(task)?).into_response(),
    };
    Ok((pointer, answer).into_response())
}

/// The upstream's status with its answer: JSON as JSON; text (kept by the delivery as
/// a JSON string of non-JSON text) as the text itself.
fn upstream_answer(status: u16, result: Option<&str>) -> Response {
    let Ok(status) = StatusCode::from_u16(status) else {
        return ApiError::Internal {
            context: "a task holds an invalid upstream status",
            source: format!("status {status}").into(),
        }
        .into_response();
    };
    let Some(result) = result.filter(|_| !matches!(status.as_u16(), 204 | 304)) else {
        // These statuses carry no body (the delivery keeps an empty answer as null).
        return status.into_response();
    };
    if let Ok(Value::String(text)) = serde_json::from_str::<Value>(result) {
        if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
            let mut response = (status, text).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return response;
        }
    }
    json_response(status, result.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text_of(response: Response) -> (StatusCode, Option<String>, String) {
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn upstream_answers_pass_json_as_json_and_text_as_text() {
        let json = Some("application/json; charset=utf-8".to_owned());
        let text = Some("text/plain; charset=utf-8".to_owned());
        assert_eq!(
            text_of(upstream_answer(201, Some(r#"{"id":7}"#))).await,
            (StatusCode::CREATED, json.clone(), r#"{"id":7}"#.to_owned())
        );
        assert_eq!(
            text_of(upstream_answer(200, Some(r#""created""#))).await,
            (StatusCode::OK, text, "created".to_owned())
        );
        // A JSON string holding JSON text was JSON all along: kept as is.
        assert_eq!(
            text_of(upstream_answer(200, Some(r#""[1]""#))).await,
            (StatusCode::OK, json, r#""[1]""#.to_owned())
        );
        for result in [None, Some("null")] {
            assert_eq!(
                text_of(upstream_answer(204, result)).await,
                (StatusCode::NO_CONTENT, None, String::new())
            );
        }
        assert_eq!(
            upstream_answer(1000, Some("1")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}

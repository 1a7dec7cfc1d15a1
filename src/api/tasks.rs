//! `/api/v1/tasks`: asynchronous request-reply (seed 001). A create waits up to
//! `Prefer: wait=N` (RFC 7240) for the result: 200 when the task finished in time,
//! else 202 with `Location` to poll (or to wait on again with `Prefer: wait`).

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{header_text, parse_json, path_segments, reply, ApiError, AppState};
use super::{JsonBytes, QueuePath};
use crate::auth::Principal;
use crate::domain::clock::rfc3339;
use crate::domain::settings::parse_duration;
use crate::domain::{Action, ResourceKind, TaskId};
use crate::domain::{TaskFinish, TaskRecord};

/// How long a caller answered 202 is told to wait before asking again.
const RETRY_AFTER_SECONDS: &str = "1";

/// The `{id}` path segment of the task routes, validated.
pub struct TaskPath(pub TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let segments = path_segments(parts, state).await?;
        let raw = segments.first().map(String::as_str).unwrap_or_default();
        Ok(TaskPath(TaskId::parse(raw)?))
    }
}

/// The preferences of RFC 7240 that tasks honour; others are ignored, as it asks.
#[derive(Debug, Default, PartialEq)]
struct Prefer {
    /// `wait=N`: how long the caller is willing to wait for the result.
    wait: Option<Duration>,
    /// `respond-async`: answer 202 rather than wait (after `wait`, when both are given).
    respond_async: bool,
}

impl Prefer {
    fn from_headers(headers: &HeaderMap) -> Result<Prefer, ApiError> {
        let mut prefer = Prefer::default();
        for value in headers.get_all("prefer") {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_request("Prefer must be visible ASCII"))?;
            // `token [= value] *( ";" parameter )`, comma-separated; parameters unused.
            for preference in text.split(',') {
                let head = preference.split(';').next().unwrap_or("").trim();
                let (name, value) = head.split_once('=').unwrap_or((head, ""));
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "wait" => {
                        prefer.wait = Some(parse_duration(value).map_err(|_| {
                            ApiError::bad_request(
                                "Prefer: wait must be a number of seconds, e.g. wait=5",
                            )
                        })?)
                    }
                    "respond-async" => prefer.respond_async = true,
                    _ => {}
                }
            }
        }
        Ok(prefer)
    }
}

/// Seconds as RFC 7240 writes them, with a fraction only when there is one.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.3}", duration.as_secs_f64())
    }
}

#[derive(Serialize)]
struct TaskView<'a> {
    id: &'a str,
    queue: &'a str,
    status: &'static str,
    result: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    attempts: u32,
    created_at: String,
    finished_at: Option<String>,
}

fn stored_json(text: &Option<String>) -> Result<Option<&RawValue>, ApiError> {
    text.as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| ApiError::Internal {
            context: "a stored task value is not valid JSON",
            source: Box::new(e),
        })
}

/// The task as `GET /api/v1/tasks/{id}` shows it, answered with `status`.
pub(crate) fn task_json(task: &TaskRecord, status: StatusCode) -> Result<Response, ApiError> {
    let view = TaskView {
        id: task.id.as_str(),
        queue: &task.queue,
        status: task.status.as_str(),
        result: stored_json(&task.result)?,
        error: stored_json(&task.error)?,
        attempts: task.attempts,
        created_at: rfc3339(task.created_at),
        finished_at: task.finished_at.map(rfc3339),
    };
    Ok(reply(status, &view))
}

/// Adds what a 202 for an unfinished task carries: where to fetch it, and when.
pub(crate) fn point_to_task(response: &mut Response, task: &TaskRecord) {
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/tasks/{}", task.id)) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
}

/// The task as JSON with `status`, plus the headers RFC 7240 and 202 call for.
fn task_reply(
    task: &TaskRecord,
    status: StatusCode,
    applied: &[String],
) -> Result<Response, ApiError> {
    let mut response = task_json(task, status)?;
    if status == StatusCode::ACCEPTED {
        point_to_task(&mut response, task);
    }
    if !applied.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&applied.join(", ")) {
            response.headers_mut().insert("preference-applied", value);
        }
    }
    Ok(response)
}

/// The wait a request gets, and the preferences that say so (for `Preference-Applied`).
fn applied_wait(state: &AppState, prefer: &Prefer, default: Duration) -> (Duration, Vec<String>) {
    let mut applied = Vec::new();
    let wait = match (prefer.wait, prefer.respond_async) {
        (Some(wait), _) => state.tasks.wait_for(Some(wait)),
        (None, true) => Duration::ZERO,
        (None, false) => default,
    };
    if prefer.respond_async {
        applied.push("respond-async".to_owned());
    }
    if prefer.wait.is_some() {
        applied.push(format!("wait={}", seconds(wait)));
    }
    (wait, applied)
}

fn authorize(principal: &Principal, queue: &str, action: Action) -> Result<(), ApiError> {
    Ok(principal.authorize(ResourceKind::Task, queue, action)?)
}

/// `POST /tasks/{q}`: create a task with the JSON body as payload, wait for its result.
pub async fn create(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    authorize(&principal, queue.as_str(), Action::Produce)?;
    let prefer = Prefer::from_headers(&headers)?;
    let key = header_text(&headers, "idempotency-key")?.map(str::to_owned);
    let payload: &RawValue = parse_json(&body)?;
    let (wait, applied) = applied_wait(&state, &prefer, state.tasks.wait_for(None));
    let task = state.tasks.create(queue, payload.get(), key, wait).await?;
    let status = if task.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    task_reply(&task, status, &applied)
}

/// `GET /tasks/{id}`: the task, after waiting for its result if `Prefer: wait` asks.
pub async fn get(
    principal: Principal,
    State(state): State<AppState>,
    TaskPath(id): TaskPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let prefer = Prefer::from_headers(&headers)?;
    let task = state.tasks.get(&id).await?;
    principal.authorize_any(ResourceKind::Task, &task.queue)?;
    let (wait, applied) = applied_wait(&state, &prefer, Duration::ZERO);
    let task = if task.status.is_final() || wait.is_zero() {
        task
    } else {
        state.tasks.wait(&id, wait).await?
    };
    task_reply(&task, StatusCode::OK, &applied)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// Body of `POST /tasks/{id}/complete`.
pub struct CompleteBody<'a> {
    receipt: String,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// Body of `POST /tasks/{id}/fail`.
pub struct FailBody<'a> {
    receipt: String,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(default)]
    retry: bool,
    #[serde(default, with = "crate::domain::settings::opt_duration")]
    delay: Option<Duration>,
}

/// Looks the task up and checks the caller may finish it.
async fn authorize_worker(
    state: &AppState,
    principal: &Principal,
    id: &TaskId,
) -> Result<(), ApiError> {
    // A worker allowed on every task queue needs no lookup of this task's queue.
    if principal.may_on_every(ResourceKind::Task, Action::Consume) {
        return Ok(());
    }
    let task = state.tasks.get(id).await?;
    authorize(principal, &task.queue, Action::Consume)
}

fn json_or_null(value: Option<&RawValue>) -> String {
    value.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned())
}

/// `POST /tasks/{id}/complete` `{"receipt", "result"}`: the result, and the ack of its message.
pub async fn complete(
    principal: Principal,
    State(state): State<AppState>,
    TaskPath(id): TaskPath,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let body: CompleteBody = parse_json(&bytes)?;
    authorize_worker(&state, &principal, &id).await?;
    let finish = TaskFinish::Succeeded {
        result: json_or_null(body.result),
        upstream_status: None,
    };
    let task = state.tasks.finish(&id, &body.receipt, finish).await?;
    task_reply(&task, StatusCode::OK, &[])
}

/// `POST /tasks/{id}/fail` `{"receipt", "error", "retry", "delay"}`: give up, or retry.
pub async fn fail(
    principal: Principal,
    State(state): State<AppState>,
    TaskPath(id): TaskPath,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let body: FailBody = parse_json(&bytes)?;
    if body.delay.is_some() && !body.retry {
        return Err(ApiError::bad_request("delay applies only with retry: true"));
    }
    authorize_worker(&state, &principal, &id).await?;
    let error = json_or_null(body.error);
    let finish = if body.retry {
        TaskFinish::Retry {
            error,
            delay: body.delay.unwrap_or(Duration::ZERO),
        }
    } else {
        TaskFinish::Failed { error }
    };
    let task = state.tasks.finish(&id, &body.receipt, finish).await?;
    task_reply(&task, StatusCode::OK, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> Result<Prefer, ApiError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("prefer", HeaderValue::from_str(value).unwrap());
        }
        Prefer::from_headers(&headers)
    }

    #[test]
    fn prefer_reads_wait_and_respond_async_and_ignores_the_rest() {
        assert_eq!(prefer(&[]).unwrap(), Prefer::default());
        let both = prefer(&["return=minimal, respond-async", "Wait=10"]).unwrap();
        assert_eq!(both.wait, Some(Duration::from_secs(10)));
        assert!(both.respond_async);
        assert_eq!(
            prefer(&["wait=0.5; foo=bar"]).unwrap().wait,
            Some(Duration::from_millis(500))
        );
        assert!(prefer(&["wait=soon"]).is_err());
        assert_eq!(seconds(Duration::from_secs(5)), "5");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
    }
}

//! `/api/v1/tasks`: asynchronous request-reply (seed 001). A create waits up to
//! `Prefer: wait=N` (RFC 7240) for the result: 200 when the task finished in time,
//! else 202 with `Location` to poll (or to wait on again with `Prefer: wait`).

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{
    header_param, name_schema, party_schema, receipt_schema, task_id_schema, Conflict, NotFound,
};
use super::extract::header_text;
use super::{ApiError, AppJson, AppState, JsonBody, Path, Reply};
use crate::auth::Principal;
use crate::domain::clock::rfc3339;
use crate::domain::settings::parse_duration;
use crate::domain::{QueueName, TaskFinish, TaskId, TaskRecord};

/// How long a caller answered 202 is told to wait before asking again.
const RETRY_AFTER_SECONDS: &str = "1";

/// The task routes, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, get))
        .routes(routes!(complete))
        .routes(routes!(fail))
}

/// `{queue_or_id}` of `POST /tasks/{q}`: the queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CreatePath {
    /// The queue the task's message goes to (created if needed).
    #[serde(rename = "queue_or_id")]
    #[param(value_type = String, schema_with = name_schema, required = true)]
    queue: QueueName,
}

/// `{queue_or_id}` of `GET /tasks/{id}`: the task.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GetPath {
    /// The task's id, as its create answered it.
    #[serde(rename = "queue_or_id")]
    #[param(value_type = String, schema_with = task_id_schema, required = true)]
    id: TaskId,
}

/// `{id}` of a worker's complete or fail.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    /// The task's id, the `task_id` of its message.
    #[param(value_type = String, schema_with = task_id_schema, required = true)]
    id: TaskId,
}

/// The preferences of RFC 7240 that tasks honour; others, and values that cannot
/// be honoured, are ignored, as RFC 7240 asks.
#[derive(Debug, Default, PartialEq)]
pub struct Prefer {
    /// `wait=N`: how long the caller will wait for the result.
    wait: Option<Duration>,
    /// `respond-async`: answer 202 rather than wait.
    respond_async: bool,
}

impl IntoParams for Prefer {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "Prefer",
            false,
            "RFC 7240: `wait=N`, how long to wait for the result in seconds (capped by `tasks.max_wait`); `respond-async`, answer 202 at once. Other preferences are ignored. `Preference-Applied` names those honoured",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .examples(["wait=10"]),
        )]
    }
}

impl Prefer {
    fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer::default();
        for value in headers.get_all("prefer") {
            let Ok(text) = value.to_str() else { continue };
            // `token [= value] *( ";" parameter )`, comma-separated; parameters unused.
            for preference in text.split(',') {
                let head = preference.split(';').next().unwrap_or("").trim();
                let (name, value) = head.split_once('=').unwrap_or((head, ""));
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "wait" => {
                        if let Ok(wait) = parse_duration(value) {
                            prefer.wait = Some(wait);
                        }
                    }
                    "respond-async" => prefer.respond_async = true,
                    _ => {}
                }
            }
        }
        prefer
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Prefer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Prefer::from_headers(&parts.headers))
    }
}

/// The headers a create reads besides `Prefer`.
#[derive(Debug)]
pub struct CreateHeaders {
    idempotency_key: Option<String>,
}

impl IntoParams for CreateHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "Idempotency-Key",
            false,
            "Within the queue's `idempotency_window`, a second create with this key makes no task and answers the first one",
            party_schema(),
        )]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CreateHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(CreateHeaders {
            idempotency_key: header_text(&parts.headers, "idempotency-key")?.map(str::to_owned),
        })
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

/// Where a task stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusView {
    /// Waiting for a worker (or for a retry delay to pass).
    Pending,
    /// A worker holds its message's lease.
    Running,
    /// A worker completed it.
    Succeeded,
    /// A worker failed it, or its message ran out of attempts.
    Failed,
    /// Its message was dropped (retention, purge, delete, pop) unfinished.
    Expired,
}

/// A task.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    /// The task's id.
    #[schema(schema_with = task_id_schema)]
    id: String,
    /// The queue its message went to.
    queue: String,
    /// Where it stands.
    status: StatusView,
    /// The worker's result (any JSON), once succeeded.
    #[schema(value_type = Option<Value>)]
    result: Option<Box<RawValue>>,
    /// The worker's last error (any JSON), from a failure with or without retry.
    #[schema(value_type = Option<Value>)]
    error: Option<Box<RawValue>>,
    /// Times its message was handed out.
    attempts: u32,
    /// When it was created (RFC 3339, UTC).
    #[schema(format = DateTime)]
    created_at: String,
    /// When it finished (or expired).
    #[schema(format = DateTime)]
    finished_at: Option<String>,
}

fn stored_json(text: Option<String>) -> Result<Option<Box<RawValue>>, ApiError> {
    text.map(RawValue::from_string)
        .transpose()
        .map_err(|e| ApiError::Internal {
            context: "a stored task value is not valid JSON",
            source: Box::new(e),
        })
}

impl TaskView {
    /// The task as `GET /api/v1/tasks/{id}` shows it.
    pub(crate) fn new(task: TaskRecord) -> Result<TaskView, ApiError> {
        use crate::domain::TaskStatus;
        Ok(TaskView {
            id: task.id.to_string(),
            queue: task.queue,
            status: match task.status {
                TaskStatus::Pending => StatusView::Pending,
                TaskStatus::Running => StatusView::Running,
                TaskStatus::Succeeded => StatusView::Succeeded,
                TaskStatus::Failed => StatusView::Failed,
                TaskStatus::Expired => StatusView::Expired,
            },
            result: stored_json(task.result)?,
            error: stored_json(task.error)?,
            attempts: task.attempts,
            created_at: rfc3339(task.created_at),
            finished_at: task.finished_at.map(rfc3339),
        })
    }
}

/// The headers a 202 for an unfinished task carries: where to fetch it, and when.
pub(crate) fn pointing_to(task: &TaskId) -> [(HeaderName, HeaderValue); 2] {
    let location = HeaderValue::from_str(&format!("/api/v1/tasks/{task}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/tasks"));
    [
        (header::LOCATION, location),
        (
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        ),
    ]
}

/// A task answer: 200 once finished (or for a read), else 202 pointing to it; with
/// the preferences applied named.
struct TaskAnswer {
    status: StatusCode,
    task: TaskRecord,
    applied: Vec<String>,
}

impl IntoResponse for TaskAnswer {
    fn into_response(self) -> Response {
        let pointer = (self.status == StatusCode::ACCEPTED).then(|| pointing_to(&self.task.id));
        let applied = HeaderValue::from_str(&self.applied.join(", "))
            .ok()
            .filter(|_| !self.applied.is_empty())
            .map(|value| [(HeaderName::from_static("preference-applied"), value)]);
        match TaskView::new(self.task) {
            Ok(view) => (pointer, applied, Reply(self.status, view)).into_response(),
            Err(error) => error.into_response(),
        }
    }
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

/// `POST /tasks/{q}`: create a task with the JSON body as payload, wait for its result.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{queue_or_id}",
    tag = "tasks",
    operation_id = "createTask",
    summary = "Create a task and wait for its result",
    description = "Stores the task and pushes `{\"task_id\", \"payload\"}` on the queue in one transaction, then waits up to `Prefer: wait` seconds (default `tasks.default_wait`) for a worker to finish it.",
    params(CreatePath, Prefer, CreateHeaders),
    request_body(content = Value, description = "The task's payload: any JSON value", content_type = "application/json"),
    responses(
        (status = 200, description = "Finished within the wait", body = TaskView, headers(("Preference-Applied" = String, description = "The preferences honoured, e.g. `wait=10`"))),
        (status = 202, description = "Not finished yet: fetch it from `Location`", body = TaskView, headers(
            ("Location" = String, description = "Where the task is: `/api/v1/tasks/{id}`"),
            ("Retry-After" = u32, description = "Seconds before asking again"),
            ("Preference-Applied" = String, description = "The preferences honoured"),
        )),
        (status = 409, response = Conflict),
    )
)]
pub async fn create(
    principal: Principal,
    State(state): State<AppState>,
    Path(CreatePath { queue }): Path<CreatePath>,
    prefer: Prefer,
    headers: CreateHeaders,
    payload: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let (wait, applied) = applied_wait(&state, &prefer, state.tasks.wait_for(None));
    let task = state
        .tasks
        .create(
            &principal,
            queue,
            payload.text(),
            headers.idempotency_key,
            wait,
        )
        .await?;
    let status = if task.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(TaskAnswer {
        status,
        task,
        applied,
    })
}

/// `GET /tasks/{id}`: the task, after waiting for its result if `Prefer: wait` asks.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{queue_or_id}",
    tag = "tasks",
    operation_id = "getTask",
    summary = "A task, at once or once it finishes",
    description = "With `Prefer: wait=N`, waits up to N seconds for an unfinished task to finish. Finished tasks are kept for `tasks.retention`, then 404.",
    params(GetPath, Prefer),
    responses(
        (status = 200, description = "The task", body = TaskView, headers(("Preference-Applied" = String, description = "The preferences honoured"))),
        (status = 404, response = NotFound),
    )
)]
pub async fn get(
    principal: Principal,
    State(state): State<AppState>,
    Path(GetPath { id }): Path<GetPath>,
    prefer: Prefer,
) -> Result<impl IntoResponse, ApiError> {
    let (wait, applied) = applied_wait(&state, &prefer, Duration::ZERO);
    let task = state.tasks.wait(&principal, &id, wait).await?;
    Ok(TaskAnswer {
        status: StatusCode::OK,
        task,
        applied,
    })
}

/// Body of `POST /tasks/{id}/complete`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The receipt `receive` handed out with the task's message.
    #[schema(schema_with = receipt_schema)]
    receipt: String,
    /// The result, any JSON; `null` when absent.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    result: Option<Box<RawValue>>,
}

/// Body of `POST /tasks/{id}/fail`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    /// The receipt `receive` handed out with the task's message.
    receipt: String,
    /// The error, any JSON; kept as the task's last error.
    #[serde(default)]
    error: Option<Box<RawValue>>,
    /// `true`: hand the task out again after `delay`; `false`: failed now.
    #[serde(default)]
    retry: bool,
    /// With `retry`: the delay before the task is handed out again.
    #[serde(default, deserialize_with = "super::queues::delay_value")]
    delay: Option<Duration>,
}

impl utoipa::PartialSchema for FailBody {
    /// Two shapes, so the description says what the handler checks: a `delay`
    /// comes only with `"retry": true`.
    fn schema() -> RefOr<Schema> {
        let shape = |retry: bool| {
            let mut object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("receipt", receipt_schema())
                .required("receipt")
                .property(
                    "error",
                    ObjectBuilder::new()
                        .description(Some("The error, any JSON; kept as the task's last error")),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            let retry_schema = ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .enum_values(Some([retry]));
            if retry {
                object = object
                    .description(Some("Failed this time: the task is handed out again after `delay` (a dead letter, and the task failed, once out of attempts)"))
                    .property("retry", retry_schema)
                    .required("retry")
                    .property("delay", super::queues::delay_schema());
            } else {
                object = object
                    .description(Some("Given up: the task is failed now"))
                    .property("retry", retry_schema);
            }
            object
        };
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(shape(false))
                .item(shape(true))
                .build(),
        ))
    }
}

impl ToSchema for FailBody {}

fn json_or_null(value: Option<Box<RawValue>>) -> String {
    value.map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned())
}

/// `POST /tasks/{id}/complete` `{"receipt", "result"}`: the result, and the ack of its message.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/complete",
    tag = "tasks",
    operation_id = "completeTask",
    summary = "A worker's result",
    description = "Stores the result and acks the task's message in one transaction; every request waiting on the task, on any node, is answered.",
    params(TaskPath),
    request_body(content = CompleteBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Completed: the task after", body = TaskView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn complete(
    principal: Principal,
    State(state): State<AppState>,
    Path(TaskPath { id }): Path<TaskPath>,
    AppJson(body): AppJson<CompleteBody>,
) -> Result<Reply<TaskView>, ApiError> {
    let finish = TaskFinish::Succeeded {
        result: json_or_null(body.result),
        upstream_status: None,
    };
    let task = state
        .tasks
        .finish(&principal, &id, &body.receipt, finish)
        .await?;
    Ok(Reply::ok(TaskView::new(task)?))
}

/// `POST /tasks/{id}/fail` `{"receipt", "error", "retry", "delay"}`: give up, or retry.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/fail",
    tag = "tasks",
    operation_id = "failTask",
    summary = "A worker's failure: give up, or retry later",
    params(TaskPath),
    request_body(content = FailBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Failed or put back: the task after", body = TaskView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn fail(
    principal: Principal,
    State(state): State<AppState>,
    Path(TaskPath { id }): Path<TaskPath>,
    AppJson(body): AppJson<FailBody>,
) -> Result<Reply<TaskView>, ApiError> {
    if body.delay.is_some() && !body.retry {
        return Err(ApiError::bad_request("delay applies only with retry: true"));
    }
    let error = json_or_null(body.error);
    let finish = if body.retry {
        TaskFinish::Retry {
            error,
            delay: body.delay.unwrap_or(Duration::ZERO),
        }
    } else {
        TaskFinish::Failed { error }
    };
    let task = state
        .tasks
        .finish(&principal, &id, &body.receipt, finish)
        .await?;
    Ok(Reply::ok(TaskView::new(task)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> Prefer {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("prefer", HeaderValue::from_str(value).unwrap());
        }
        Prefer::from_headers(&headers)
    }

    #[test]
    fn prefer_reads_wait_and_respond_async_and_ignores_the_rest() {
        assert_eq!(prefer(&[]), Prefer::default());
        let both = prefer(&["return=minimal, respond-async", "Wait=10"]);
        assert_eq!(both.wait, Some(Duration::from_secs(10)));
        assert!(both.respond_async);
        assert_eq!(
            prefer(&["wait=0.5; foo=bar"]).wait,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            prefer(&["wait=soon"]).wait,
            None,
            "cannot be honoured: ignored"
        );
        assert_eq!(seconds(Duration::from_secs(5)), "5");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
    }
}

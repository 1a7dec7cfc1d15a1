//! The HTTP edge: one file per resource, plus the extractors they share. A handler
//! parses, calls the domain, and maps the result; nothing else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{Authenticator, Credentials, Principal};
use crate::domain::settings::parse_duration;
use crate::domain::Store;
use crate::domain::{ClientId, QueueName, QueueService, StreamName, StreamService, TaskService};

mod admin;
pub mod error;
mod health;
mod queues;
mod streams;
pub(crate) mod tasks;

use error::json_response;
pub use error::ApiError;

/// What every handler can reach; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Queue rules and storage.
    pub queues: QueueService,
    /// Stream rules and storage.
    pub streams: StreamService,
    /// Task rules and storage.
    pub tasks: TaskService,
    /// Credential checks.
    pub auth: Arc<Authenticator>,
    /// The store, for health checks and the admin API.
    pub store: Arc<dyn Store>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Client for upstream calls (pooled keep-alive connections).
    pub http: reqwest::Client,
    /// What this node's deliveries to upstreams are doing.
    pub deliveries: Arc<crate::delivery::Deliveries>,
}

/// Every route of the API, without middleware (see [`crate::server::app`]).
pub fn routes() -> Router<AppState> {
    // Full paths rather than `nest`: nesting rewrites every request's URI, a cost
    // paid on the hot path for nothing.
    Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/ping", get(health::ping))
        .route("/api/v1/queues", get(queues::list))
        .route(
            "/api/v1/queues/{queue}",
            get(queues::info)
                .put(queues::configure)
                .delete(queues::delete),
        )
        .route("/api/v1/queues/{queue}/messages", post(queues::push))
        .route(
            "/api/v1/queues/{queue}/messages/batch",
            post(queues::push_batch),
        )
        .route("/api/v1/queues/{queue}/pop", post(queues::pop))
        .route("/api/v1/queues/{queue}/receive", post(queues::receive))
        .route("/api/v1/queues/{queue}/ack", post(queues::ack))
        .route("/api/v1/queues/{queue}/nack", post(queues::nack))
        .route("/api/v1/queues/{queue}/extend", post(queues::extend))
        .route("/api/v1/queues/{queue}/purge", post(queues::purge))
        .route("/api/v1/queues/{queue}/dead", get(queues::dead_letters))
        .route("/api/v1/queues/{queue}/dead/redrive", post(queues::redrive))
        .route(
            "/api/v1/tasks/{queue_or_id}",
            post(tasks::create).get(tasks::get),
        )
        .route("/api/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/api/v1/tasks/{id}/fail", post(tasks::fail))
        .route("/api/v1/streams", get(streams::list))
        .route(
            "/api/v1/streams/{stream}",
            get(streams::info).put(streams::configure),
        )
        .route(
            "/api/v1/streams/{stream}/events",
            post(streams::append).get(streams::read),
        )
        .route(
            "/api/v1/streams/{stream}/events/{event}",
            post(streams::ack),
        )
        .route(
            "/api/v1/admin/streams/{stream}/owner",
            axum::routing::put(streams::set_owner),
        )
        .route(
            "/api/v1/admin/clients",
            get(admin::list).post(admin::create),
        )
        .route(
            "/api/v1/admin/clients/{id}",
            axum::routing::delete(admin::remove),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ApiError {
    ApiError::NotFound(String::new())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A `200`-family JSON answer.
pub fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => json_response(status, text),
        Err(error) => ApiError::Internal {
            context: "cannot encode the answer",
            source: Box::new(error),
        }
        .into_response(),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let credentials = Credentials::from_headers(
            header(header::AUTHORIZATION.as_str()),
            header("api-client-id"),
        )
        .ok_or(ApiError::Unauthorized)?;
        Ok(state.auth.authenticate(&credentials).await?)
    }
}

/// Path segments, percent-decoded, in route order.
async fn path_segments<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<String>, ApiError> {
    let Path(segments) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
    Ok(segments.into_iter().map(|(_, value)| value).collect())
}

/// Defines an extractor for a validated name taken from the route's first path segment.
macro_rules! name_path {
    ($(#[$doc:meta])* $extractor:ident($name:ty)) => {
        $(#[$doc])*
        pub struct $extractor(pub $name);

        impl<S: Send + Sync> FromRequestParts<S> for $extractor {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let segments = path_segments(parts, state).await?;
                let raw = segments.first().map(String::as_str).unwrap_or_default();
                Ok($extractor(<$name>::parse(raw)?))
            }
        }
    };
}

name_path!(
    /// The `{queue}` path segment, validated.
    QueuePath(QueueName)
);
name_path!(
    /// The `{stream}` path segment, validated.
    StreamPath(StreamName)
);
name_path!(
    /// The `{id}` path segment of the admin API, validated.
    ClientPath(ClientId)
);

/// The second path segment as text, e.g. `{event}` in `/streams/{stream}/events/{event}`.
pub struct SecondSegment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SecondSegment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let segments = path_segments(parts, state).await?;
        Ok(SecondSegment(segments.get(1).cloned().unwrap_or_default()))
    }
}

/// A header's value as text, if present; a 400 naming it when it is not visible ASCII.
pub fn header_text<'a>(
    headers: &'a axum::http::HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("{name} must be visible ASCII")))
        })
        .transpose()
}

/// Query parameters, read one by one with errors that name the parameter.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
            })?;
        Ok(Params(map))
    }
}

impl Params {
    /// A parameter as given, if present.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A count-like parameter: an integer between 1 and `max`, `default` when absent.
    pub fn count(&self, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(default);
        };
        raw.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be between 1 and {max}")))
    }

    /// A duration parameter: seconds (`1.5`) or with a unit (`"500ms"`); `None` when absent.
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        self.0
            .get(name)
            .map(|raw| {
                parse_duration(raw).map_err(|_| {
                    ApiError::bad_request(format!(
                        "{name} must be a number of seconds or a duration such as 500ms"
                    ))
                })
            })
            .transpose()
    }
}

/// A JSON request body as bytes: the content type checked, the size limit enforced.
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.max_body_bytes;
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let essence = content_type
                .to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got {essence:?}"
                )));
            }
        }
        let (parts, body) = request.into_parts();
        read_limited(&parts.headers, body, limit)
            .await
            .map(JsonBytes)
    }
}

/// A request body of any content type, up to `limit` bytes (413 beyond, refused from
/// its declared length before anything is read).
pub async fn read_limited(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collected = Limited::new(body, limit).collect().await.map_err(|error| {
        if error.downcast_ref::<LengthLimitError>().is_some() {
            too_large()
        } else {
            ApiError::bad_request("could not read the request body")
        }
    })?;
    Ok(collected.to_bytes())
}

/// A JSON request body parsed into `T`; a malformed body is a 400 that says why.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(request, state).await?;
        parse_json(&bytes).map(AppJson)
    }
}

/// Parses a JSON body, turning serde's complaint into a 400 detail.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

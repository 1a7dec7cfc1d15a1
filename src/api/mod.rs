//! The HTTP edge: one file per resource, plus the extractors and answers they
//! share. A handler parses (typed extractors), calls the domain, and answers with a
//! typed body; nothing else. Every route is registered through utoipa-axum's
//! [`OpenApiRouter`], so a route cannot exist without its description in
//! `/openapi.json`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{Authenticator, Credentials, Principal};
use crate::domain::{QueueService, Store, StreamService, TaskService};

mod admin;
mod auth;
pub mod body;
pub mod docs;
pub mod durable_streams;
pub mod error;
pub mod extract;
mod health;
pub mod params;
pub mod prometheus;
mod queues;
pub mod reply;
pub mod sqs;
mod streams;
pub(crate) mod tasks;
mod ui;

pub use error::ApiError;
pub use extract::{read_limited, AppJson, Form, JsonBody, Path, Query};
pub use reply::{json_response, Reply};

/// What every handler can reach; one shared allocation, so the clone each request
/// makes of it is one atomic increment, not one per service, token and setting.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` among the handlers.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The services and settings behind [`AppState`].
pub struct Shared {
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
    /// `GET /metrics`: who may scrape, and the gauges of the last scrape.
    pub metrics: Arc<prometheus::Metrics>,
    /// `[durable_streams]`: the protocol's long-poll and whether it is open to anyone.
    pub durable_streams: durable_streams::DurableStreamsSettings,
}

/// Every route of the API with its description, without middleware (see
/// [`crate::server::app`]). Full paths rather than `nest`: nesting rewrites every
/// request's URI, a cost paid on the hot path for nothing.
pub fn routes() -> (Router<AppState>, OpenApi) {
    OpenApiRouter::with_openapi(docs::base())
        .merge(health::routes())
        .merge(prometheus::routes())
        .merge(queues::routes())
        .merge(tasks::routes())
        .merge(streams::routes())
        .merge(durable_streams::routes())
        .merge(sqs::routes())
        .merge(admin::routes())
        .merge(auth::routes())
        .merge(docs::routes())
        .merge(ui::routes())
        .split_for_parts()
}

/// The answer of a path no route has: `404 "Not Found"`, without a detail, so it
/// is told apart from a named thing that is missing.
pub async fn not_found() -> ApiError {
    ApiError::NotFound(String::new())
}

/// The answer of a known path with a method it does not have.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
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
        Ok(state
            .auth
            .authenticate(&credentials, source_address(parts))
            .await?)
    }
}

/// The address a request came from, as the accept loop recorded it.
pub fn source_address(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

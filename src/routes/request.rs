//! One request on a route: credentials and grants checked before any work, path
//! parameters named as the route names them, the body read within the size limit,
//! then the action. Also the pieces the actions share: reading a body as JSON and
//! answering with a template.

use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;

use super::template::Values;
use super::{forward, queues, tasks, Answer, Forward, Route, RouteAction};
use crate::api::body::json_text;
use crate::api::{json_response, read_limited, ApiError, AppState};
use crate::auth::Principal;
use crate::domain::{Action, ResourceKind};

/// What the actions get from a request, once it is allowed in.
pub struct RouteRequest {
    /// The method, for forwarding.
    pub method: Method,
    /// The headers (content type, idempotency key, request id).
    pub headers: HeaderMap,
    /// The raw query string, for forwarding.
    pub query: Option<String>,
    /// `(name, percent-decoded value)` of each path parameter, named as the route names them.
    pub params: Vec<(String, String)>,
    /// The body, within the size limit.
    pub body: Bytes,
    /// Who asks: the client its credentials name, or for a public route this node,
    /// by the operator's choice. The services ask the access policy about it.
    pub caller: Principal,
}

impl RouteRequest {
    /// The path parameters as template values.
    pub fn values(&self) -> Values {
        let mut values = Values::default();
        for (name, value) in &self.params {
            values.set(name, Value::String(value.clone()));
        }
        values
    }
}

/// Serves `request` on `route`.
pub async fn serve(
    route: &Route,
    state: &AppState,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let caller = if route.public {
        Principal::node()
    } else {
        Principal::from_request_parts(&mut parts, state).await?
    };
    if let RouteAction::Forward(forward) = &route.action {
        authorize_forward(&caller, route, forward)?;
    }
    let params = path_params(route, &mut parts, state).await?;
    let body = read_limited(&parts.headers, body, state.max_body_bytes).await?;
    let request = RouteRequest {
        method: parts.method,
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        params,
        body,
        caller,
    };
    match &route.action {
        RouteAction::Enqueue(queue) => queues::enqueue(route, state, queue, request).await,
        RouteAction::Pop(queue) => queues::pop(route, state, queue, request).await,
        RouteAction::Count(queue) => queues::count(route, state, queue, request).await,
        RouteAction::Task { queue, wait } => {
            tasks::create(route, state, queue, *wait, request).await
        }
        RouteAction::Forward(upstream) => forward::forward(upstream, state, request).await,
    }
}

/// A forward calls its upstream before anything that would ask the policy (or
/// without anything): the grant it needs is asked first. One with a compensation
/// queue pushes there, so it needs that queue's `produce`; one without touches no
/// queue, and needs `route:<path>:call`.
fn authorize_forward(caller: &Principal, route: &Route, forward: &Forward) -> Result<(), ApiError> {
    Ok(match forward.compensation_queue() {
        Some(queue) => caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Produce),
        None => caller.authorize(ResourceKind::Route, &route.spec.path, Action::Call),
    }?)
}

/// The path parameters, renamed from the shape's positional names to the route's own.
async fn path_params(
    route: &Route,
    parts: &mut Parts,
    state: &AppState,
) -> Result<Vec<(String, String)>, ApiError> {
    let names = route.path.param_names();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let Path(captured) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
    Ok(names
        .into_iter()
        .filter_map(|(shape_name, name)| {
            captured
                .iter()
                .find(|(key, _)| *key == shape_name)
                .map(|(_, value)| (name, value.clone()))
        })
        .collect())
}

/// The body as JSON text: JSON as sent, any other text as a JSON string of it (old
/// clients send JSON as a form, or plain text); `None` when empty. Not UTF-8 is a 400.
pub fn body_json(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // JSON is held to the API's body policy; other text is stored as a JSON string.
    if serde_json::from_slice::<&RawValue>(body).is_ok() {
        return json_text(body).map(|raw| Some(raw.get().to_owned()));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the body must be JSON or UTF-8 text"))?;
    Ok(Some(Value::String(text.to_owned()).to_string()))
}

/// The answer `answer` gives with `values`.
pub fn render(answer: &Answer, values: &Values) -> Response {
    match &answer.body {
        Some(template) => json_response(answer.status, template.render(values).to_string()),
        None => answer.status.into_response(),
    }
}

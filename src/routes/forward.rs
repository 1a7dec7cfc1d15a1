//! `forward` routes (seed 003): call the upstream now, pass its answer through. When
//! the call fails (no connection, no answer in time, a 5xx) the upstream may have done
//! part of the work, so the route's `compensate` queue gets a message to undo it, made
//! durable before the client hears of the failure. The client's credentials never go
//! upstream: only the body, its content type, `Accept` and the request id do. At most
//! `max_body_bytes` of the upstream's answer is read: a longer one is a failure (502).

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use percent_encoding::utf8_percent_encode;
use serde_json::{Map, Value};

use super::request::RouteRequest;
use super::template::is_name;
use super::ForwardSpec;
use crate::api::error::error_body;
use crate::api::{json_response, ApiError, AppState};
use crate::domain::delivery::URL_VALUE;
use crate::domain::QueueName;

/// Upstream timeout when the route names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest upstream timeout: a request held longer meets proxy and client timeouts.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Request headers passed upstream, besides the body's length.
const PASSED_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-request-id"),
];

/// A validated `forward`: where to call, for how long, where compensations go.
#[derive(Debug, Clone)]
pub struct Forward {
    url: Vec<UrlPiece>,
    timeout: Duration,
    compensate: Option<QueueName>,
}

/// A part of the upstream URL.
#[derive(Debug, Clone)]
enum UrlPiece {
    Literal(String),
    /// A path parameter's value, percent-encoded.
    Param(String),
}

/// Why a call did not give an answer to pass through.
enum Failure {
    /// The upstream answered with a 5xx.
    Status(StatusCode),
    /// No complete answer within the timeout.
    Timeout,
    /// No connection, or the exchange broke.
    Unreachable,
    /// The answer's body is longer than `max_body_bytes`; the rest was not read.
    TooLarge(usize),
}

impl Forward {
    /// The queue a failed call's compensation message goes to, if any.
    pub fn compensation_queue(&self) -> Option<&QueueName> {
        self.compensate.as_ref()
    }

    /// Validates `spec` against the route's path parameters `params`.
    pub(super) fn compile(
        spec: &ForwardSpec,
        compensate: Option<QueueName>,
        params: &[&str],
    ) -> Result<Forward, String> {
        let raw = &spec.url;
        let mut url = Vec::new();
        let mut rest = raw.as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                url.push(UrlPiece::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("forward.url {raw:?} opens {{ without closing it"))?;
            let name = &rest[open + 1..open + close];
            if !is_name(name) || !params.contains(&name) {
                return Err(format!(
                    "forward.url {raw:?} names {{{name}}}, which is not a parameter of the path"
                ));
            }
            url.push(UrlPiece::Param(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("forward.url {raw:?} closes }} without opening it"));
        }
        if !rest.is_empty() {
            url.push(UrlPiece::Literal(rest.to_owned()));
        }
        let forward = Forward {
            url,
            timeout: spec.timeout.unwrap_or(DEFAULT_TIMEOUT),
            compensate,
        };
        let sample = forward.fill(|_| "x".to_owned());
        let parsed = reqwest::Url::parse(&sample)
            .map_err(|e| format!("forward.url {raw:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(format!(
                "forward.url {raw:?} must be an http:// or https:// URL with a host"
            ));
        }
        if parsed.fragment().is_some() {
            return Err(format!(
                "forward.url {raw:?} has a #fragment, which is never sent"
            ));
        }
        if forward.timeout.is_zero() || forward.timeout > MAX_TIMEOUT {
            return Err(format!(
                "forward.timeout must be more than 0 and at most {} seconds",
                MAX_TIMEOUT.as_secs()
            ));
        }
        Ok(forward)
    }

    fn fill(&self, value: impl Fn(&str) -> String) -> String {
        self.url
            .iter()
            .map(|piece| match piece {
                UrlPiece::Literal(text) => text.clone(),
                UrlPiece::Param(name) => value(name),
            })
            .collect()
    }

    /// The upstream URL of a request: parameters encoded, the request's query appended.
    fn url_for(&self, request: &RouteRequest) -> Result<reqwest::Url, ApiError> {
        let mut url = self.fill(|name| {
            let value = request
                .params
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str());
            utf8_percent_encode(value, URL_VALUE).to_string()
        });
        if let Some(query) = request.query.as_deref().filter(|q| !q.is_empty()) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(query);
        }
        reqwest::Url::parse(&url)
            .map_err(|_| ApiError::bad_request("the query string cannot be passed upstream"))
    }
}

/// Calls the upstream and answers as it did; on failure, queues the compensation first.
pub async fn forward(
    forward: &Forward,
    state: &AppState,
    request: RouteRequest,
) -> Result<Response, ApiError> {
    let url = forward.url_for(&request)?;
    let mut call = state
        .http
        .request(request.method.clone(), url.clone())
        .timeout(forward.timeout);
    if !request.body.is_empty() {
        call = call.body(request.body.clone());
    }
    for name in PASSED_HEADERS {
        if let Some(value) = request.headers.get(&name) {
            call = call.header(name, value.clone());
        }
    }
    let timeout = forward.timeout;
    let limit = state.max_body_bytes;
    // The upstream's time is the route's to give: request_timeout counts on top.
    crate::domain::waiters::allow(timeout);
    let Some(queue) = forward.compensate.clone() else {
        return Ok(answer(call_upstream(call, &url, limit).await, timeout));
    };
    let message = compensation(&request);
    let (queues, caller) = (state.queues.clone(), request.caller.clone());
    // On its own task: a client that hangs up mid-call must not cancel the
    // compensation of a call that may have done half its work upstream.
    tokio::spawn(async move {
        let outcome = call_upstream(call, &url, limit).await;
        if outcome.is_err() {
            if let Err(error) = queues
                .push(&caller, queue.clone(), vec![message.into()], None, None)
                .await
            {
                tracing::error!(%queue, %error, %url, "forward failed and its compensation could not be queued");
                return Err(ApiError::ServiceUnavailable(
                    "the upstream call failed and its compensation could not be queued".into(),
                ));
            }
            tracing::info!(%queue, %url, "forward failed; compensation queued");
        }
        Ok(answer(outcome, timeout))
    })
    .await
    .map_err(|error| ApiError::Internal {
        context: "the forward stopped unexpectedly",
        source: Box::new(error),
    })?
}

/// The compensation message: the JSON body (an object) with the path parameters as
/// top-level fields, which win over body fields of the same name since they name the
/// resource. A body that is not an object goes under `body` (as text when not JSON).
fn compensation(request: &RouteRequest) -> String {
    let mut fields = if request.body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(Value::Object(fields)) => fields,
            Ok(other) => Map::from_iter([("body".to_owned(), other)]),
            Err(_) => Map::from_iter([(
                "body".to_owned(),
                Value::String(String::from_utf8_lossy(&request.body).into_owned()),
            )]),
        }
    };
    for (name, value) in &request.params {
        fields.insert(name.clone(), Value::String(value.clone()));
    }
    Value::Object(fields).to_string()
}

/// The upstream's status, content type and body; a 5xx, a transport error or a body
/// over `limit` bytes is a failure. Since the client is then told the call failed, an
/// oversized answer is compensated like any other failure.
async fn call_upstream(
    call: reqwest::RequestBuilder,
    url: &reqwest::Url,
    limit: usize,
) -> Result<(StatusCode, Option<HeaderValue>, Bytes), Failure> {
    let classify = |error: reqwest::Error| {
        let failure = if error.is_timeout() {
            Failure::Timeout
        } else {
            Failure::Unreachable
        };
        let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        tracing::warn!(%url, error = %chain, "forward: the upstream call failed");
        failure
    };
    let mut response = call.send().await.map_err(classify)?;
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%url, %status, "forward: the upstream answered with an error");
        return Err(Failure::Status(status));
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let too_large = || {
        tracing::warn!(%url, limit, "forward: the upstream's answer exceeds max_body_bytes");
        Failure::TooLarge(limit)
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, content_type, body.freeze()))
}

/// The client's answer: the upstream's, or 502 (504 when it did not answer in time).
fn answer(
    outcome: Result<(StatusCode, Option<HeaderValue>, Bytes), Failure>,
    timeout: Duration,
) -> Response {
    match outcome {
        Ok((status, content_type, body)) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(failure) => {
            let (status, detail) = match failure {
                Failure::Status(upstream) => (
                    StatusCode::BAD_GATEWAY,
                    format!("upstream answered {}", upstream.as_u16()),
                ),
                Failure::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "upstream did not answer within {}",
                        humantime::format_duration(timeout)
                    ),
                ),
                Failure::Unreachable => {
                    (StatusCode::BAD_GATEWAY, "upstream unreachable".to_owned())
                }
                Failure::TooLarge(limit) => (
                    StatusCode::BAD_GATEWAY,
                    format!("upstream answer exceeds {limit} bytes"),
                ),
            };
            json_response(status, error_body(status, Some(&detail)))
        }
    }
}

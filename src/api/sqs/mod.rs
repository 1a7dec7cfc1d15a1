//! `POST /sqs`: Amazon SQS over Hopper's queues, so code written for SQS runs
//! against Hopper given only an endpoint URL and an access key. Both of SQS's
//! wire protocols are spoken (see [`wire`]); every request is signed with AWS
//! Signature Version 4 and checked by the one authenticator, and every action is
//! a call of the queue service (see [`actions`]).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{read_limited, source_address, AppState};
use crate::auth::SignedRequest;

mod actions;
pub mod error;
mod message;
mod queue;
pub mod wire;

use actions::{Call, ACCOUNT};
use error::{SqsError, SqsResult};
use wire::Protocol;

/// Largest SQS request read: a batch of ten messages of the largest size, with
/// room for attributes and encoding.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The region ARNs name when a request's signature names none.
const DEFAULT_REGION: &str = "us-east-1";

/// The SQS routes, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(endpoint))
        .routes(routes!(queue_endpoint))
}

/// `POST /sqs`: one SQS action.
#[utoipa::path(
    post,
    path = "/sqs",
    tag = "sqs",
    operation_id = "sqs",
    summary = "Amazon SQS (AWS JSON 1.0 and the query protocol)",
    description = "Speaks Amazon SQS over Hopper's queues: point an SDK's endpoint URL here (`http://HOST:PORT/sqs`). AWS JSON 1.0 requests name the action in `X-Amz-Target: AmazonSQS.<Action>` with `Content-Type: application/x-amz-json-1.0`; any other request is read as the query protocol (a form with `Action=...`, answered in XML). Requests are signed with AWS Signature Version 4 by an access key from `POST /api/v1/admin/clients/{id}/aws-keys`; the client's grants apply. Queue URLs are `http://HOST:PORT/sqs/000000000000/<queue>`.",
    request_body(content = Object, description = "An SQS request: a query-protocol form, or (with `X-Amz-Target`) a JSON 1.0 object", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The action's result, in the request's protocol"),
        (status = 400, description = "An SQS error: JSON `{\"__type\", \"message\"}` with `x-amzn-query-error`, or an XML `ErrorResponse`"),
        (status = 403, description = "A missing, unknown or wrong signature, or a grant the client lacks"),
        (status = 413, description = "The request is larger than the endpoint reads"),
        (status = 429, description = "Too many failed signatures from this key or address lately"),
    )
)]
pub async fn endpoint(State(state): State<AppState>, request: Request) -> Response {
    serve(state, request, None).await
}

/// `POST /sqs/{account}/{queue}`: one SQS action on the queue its URL names (the
/// query protocol sends actions to the queue's URL).
#[utoipa::path(
    post,
    path = "/sqs/{account}/{queue}",
    tag = "sqs",
    operation_id = "sqsQueue",
    summary = "Amazon SQS, sent to a queue's URL",
    params(
        ("account" = String, Path, description = "Any account id; Hopper's queue URLs name 000000000000"),
        ("queue" = String, Path, description = "The queue"),
    ),
    request_body(content = Object, description = "An SQS request: a query-protocol form, or (with `X-Amz-Target`) a JSON 1.0 object", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The action's result, in the request's protocol"),
        (status = 400, description = "An SQS error"),
        (status = 403, description = "A missing, unknown or wrong signature, or a grant the client lacks"),
        (status = 413, description = "The request is larger than the endpoint reads"),
        (status = 429, description = "Too many failed signatures from this key or address lately"),
    )
)]
pub async fn queue_endpoint(State(state): State<AppState>, request: Request) -> Response {
    let queue = request.uri().path().rsplit('/').next().map(str::to_owned);
    serve(state, request, queue).await
}

/// What every answer carries: its protocol and request id.
struct Answering {
    protocol: Protocol,
    action: String,
    request_id: String,
}

async fn serve(state: AppState, request: Request, path_queue: Option<String>) -> Response {
    let (parts, body) = request.into_parts();
    let protocol = protocol_of(&parts.headers);
    let mut answering = Answering {
        protocol,
        action: String::new(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let limit = state.max_body_bytes.max(MAX_REQUEST_BYTES);
    let body = match read_limited(&parts.headers, body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return answering.error(SqsError::new(
                error::REQUEST_TOO_LARGE,
                format!("The request is larger than {limit} bytes or could not be read."),
            ))
        }
    };
    let (action, params) = match read_request(protocol, &parts, &body) {
        Ok(read) => read,
        Err(error) => return answering.error(error),
    };
    answering.action = action.clone();
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &headers,
        body: &body,
    };
    let caller = match state
        .auth
        .authenticate_sigv4(&signed, source_address(&parts))
        .await
    {
        Ok(caller) => caller,
        Err(error) => return answering.error(error.into()),
    };
    let call = Call {
        queues: &state.queues,
        caller: &caller,
        base_url: format!("{}/sqs/{ACCOUNT}", origin(&parts.headers)),
        region: signed_region(&parts.headers)
            .unwrap_or(DEFAULT_REGION)
            .to_owned(),
        path_queue,
    };
    match call.run(&action, params).await {
        Ok(answer) => answering.answer(&answer),
        Err(error) => answering.error(error),
    }
}

/// JSON when the request says so by its target and content type, else query.
fn protocol_of(headers: &HeaderMap) -> Protocol {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.starts_with(wire::JSON_CONTENT_TYPE) || t.starts_with("application/json")
        });
    if json_type && headers.contains_key("x-amz-target") {
        Protocol::Json
    } else {
        Protocol::Query
    }
}

/// The action a request names and its parameters as a JSON object.
fn read_request(
    protocol: Protocol,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> SqsResult<(String, Map<String, Value>)> {
    match protocol {
        Protocol::Json => {
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let action = target.strip_prefix("AmazonSQS.").ok_or_else(|| {
                SqsError::new(
                    error::INVALID_ACTION,
                    format!("X-Amz-Target {target:?} names no SQS action (AmazonSQS.<Action>)."),
                )
            })?;
            let params = if body.is_empty() {
                Map::new()
            } else {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(map)) => map,
                    _ => {
                        return Err(SqsError::new(
                            error::SERIALIZATION,
                            "The request body must be a JSON object.",
                        ))
                    }
                }
            };
            Ok((action.to_owned(), params))
        }
        Protocol::Query => {
            let mut pairs: Vec<(String, String)> = parts
                .uri
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            pairs.extend(form_urlencoded::parse(body).into_owned());
            let action = pairs
                .iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            Ok((action, wire::query_to_json(&pairs)))
        }
    }
}

/// `scheme://host` as the client reached this server.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The region of a signature's scope (`Credential=KEY/DATE/REGION/sqs/aws4_request`),
/// named in ARNs; the authenticator has checked the signature over it.
fn signed_region(headers: &HeaderMap) -> Option<&str> {
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(2).filter(|r| !r.is_empty())
}

impl Answering {
    fn answer(&self, answer: &Map<String, Value>) -> Response {
        match self.protocol {
            Protocol::Json => self.respond(
                StatusCode::OK,
                wire::JSON_CONTENT_TYPE,
                Value::Object(answer.clone()).to_string(),
                None,
            ),
            Protocol::Query => self.respond(
                StatusCode::OK,
                "text/xml",
                wire::xml_answer(&self.action, answer, &self.request_id),
                None,
            ),
        }
    }

    fn error(&self, error: SqsError) -> Response {
        let code = error.code;
        match self.protocol {
            Protocol::Json => {
                let body = serde_json::json!({
                    "__type": format!("com.amazonaws.sqs#{}", code.json),
                    "message": error.message,
                });
                let query_error = format!(
                    "{};{}",
                    code.query,
                    if code.sender { "Sender" } else { "Receiver" }
                );
                self.respond(
                    code.status,
                    wire::JSON_CONTENT_TYPE,
                    body.to_string(),
                    Some(query_error),
                )
            }
            Protocol::Query => self.respond(
                code.status,
                "text/xml",
                wire::xml_error(code.query, code.sender, &error.message, &self.request_id),
                None,
            ),
        }
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: String,
        query_error: Option<String>,
    ) -> Response {
        let mut response = (status, Body::from(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(id) = HeaderValue::from_str(&self.request_id) {
            headers.insert("x-amzn-requestid", id);
        }
        if let Some(value) = query_error.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert("x-amzn-query-error", value);
        }
        response
    }
}

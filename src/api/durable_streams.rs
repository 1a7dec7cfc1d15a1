//! `/api/v1/stream/{stream}`: the Durable Streams protocol over the same streams as
//! seed 004's API. PUT creates, POST appends (with idempotent producers and
//! closure), GET reads from an offset (catch-up or long-poll), HEAD tells the
//! tail, DELETE removes. The rules are `domain::log`'s; this file reads headers,
//! calls the stream service and writes the protocol's headers back.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{header_param, NotFound};
use super::extract::{header_text, read_limited};
use super::params::StreamPath;
use super::{ApiError, AppState, Path, Query};
use crate::auth::Principal;
pub use crate::config::DurableStreamsSettings;
use crate::domain::clock::{now_millis, Millis};
use crate::domain::log::{
    is_json, is_text, json_entries, offset_of, parse_offset, parse_position, response_cursor,
    AppendOutcome, CreateLog, CreateOutcome, Entry, Expiry, ForkRequest, LogAppend, LogConfig,
    LogState, Position, ProducerClaim, ProducerState, ReadStart, DEFAULT_CONTENT_TYPE,
};
use crate::domain::streams::LogAnswer;
use crate::domain::{DomainError, ResourceKind, StreamName};

/// The protocol's headers, lower case as HTTP/1 sends them.
mod names {
    pub const NEXT_OFFSET: &str = "stream-next-offset";
    pub const UP_TO_DATE: &str = "stream-up-to-date";
    pub const CLOSED: &str = "stream-closed";
    pub const CURSOR: &str = "stream-cursor";
    pub const TTL: &str = "stream-ttl";
    pub const EXPIRES_AT: &str = "stream-expires-at";
    pub const SEQ: &str = "stream-seq";
    pub const PRODUCER_ID: &str = "producer-id";
    pub const PRODUCER_EPOCH: &str = "producer-epoch";
    pub const PRODUCER_SEQ: &str = "producer-seq";
    pub const EXPECTED_SEQ: &str = "producer-expected-seq";
    pub const RECEIVED_SEQ: &str = "producer-received-seq";
    pub const FORKED_FROM: &str = "stream-forked-from";
    pub const FORK_OFFSET: &str = "stream-fork-offset";
    pub const FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
}

/// Largest producer epoch or seq: what a JavaScript client can count exactly (2^53 - 1).
const MAX_PRODUCER_NUMBER: u64 = (1 << 53) - 1;

/// The protocol's routes, described; every answer carries the browser headers.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, append, read, head, delete))
        .route("/api/v1/stream/{stream}", axum::routing::options(preflight))
        .layer(axum::middleware::map_response(browser_headers))
}

/// What a browser client needs: CORS for any origin, and no sniffing of bytes
/// into another content type.
async fn browser_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(headers, "access-control-allow-origin", "*");
    set(
        headers,
        "access-control-expose-headers",
        "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, ETag, Location",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "cross-origin-resource-policy", "cross-origin");
    response
}

/// A browser's CORS preflight: which methods and headers a page may send.
async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, PUT, DELETE, HEAD, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Content-Type, Authorization, API-Client-Id, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, Stream-Closed, Producer-Id, Producer-Epoch, Producer-Seq"),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("86400"));
    response
}

/// The caller: Hopper's credentials as everywhere, or, on a public endpoint, an
/// anonymous caller when the request carries none.
pub struct StreamCaller(Principal);

impl FromRequestParts<AppState> for StreamCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let anonymous = !parts.headers.contains_key(header::AUTHORIZATION)
            && !parts.headers.contains_key("api-client-id");
        if state.durable_streams.public && anonymous {
            return Ok(StreamCaller(Principal::anonymous(ResourceKind::Stream)));
        }
        Principal::from_request_parts(parts, state)
            .await
            .map(StreamCaller)
    }
}

/// An answer under construction: a status, the protocol's headers, a body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
}

impl Answer {
    fn new(status: StatusCode) -> Self {
        Answer {
            status,
            headers: HeaderMap::new(),
            body: Body::empty(),
        }
    }

    /// Adds a header; values come from this server (offsets, numbers, content
    /// types it accepted), so one that is not a header value is left out.
    fn with(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        if let Ok(value) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(HeaderName::from_static(name), value);
        }
        self
    }

    fn with_if(self, condition: bool, name: &'static str, value: &str) -> Self {
        if condition {
            self.with(name, value)
        } else {
            self
        }
    }

    fn body(mut self, body: impl Into<Body>) -> Self {
        self.body = body.into();
        self
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// An error answer with the protocol's headers added.
fn refusal(error: ApiError, headers: &[(&'static str, String)]) -> Response {
    let mut response = error.into_response();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// `Stream-Closed: true` or `false` (the same as none); another value is a mistake.
fn closes(headers: &HeaderMap) -> Result<bool, ApiError> {
    match header_text(headers, names::CLOSED)? {
        None => Ok(false),
        Some(value) if value.eq_ignore_ascii_case("true") => Ok(true),
        Some(value) if value.eq_ignore_ascii_case("false") => Ok(false),
        Some(value) => Err(ApiError::bad_request(format!(
            "Stream-Closed must be true or false, got {value:?}"
        ))),
    }
}

/// A content type as a stream keeps it: its type and subtype must be there.
fn content_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    Ok(header_text(headers, header::CONTENT_TYPE.as_str())?
        .map(str::trim)
        .filter(|value| {
            let essence = value.split(';').next().unwrap_or_default();
            essence
                .split_once('/')
                .is_some_and(|(kind, sub)| !kind.trim().is_empty() && !sub.trim().is_empty())
        })
        .map(str::to_owned))
}

/// `Stream-TTL` or `Stream-Expires-At`, not both.
fn expiry(headers: &HeaderMap) -> Result<Expiry, ApiError> {
    match (
        header_text(headers, names::TTL)?,
        header_text(headers, names::EXPIRES_AT)?,
    ) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "Stream-TTL and Stream-Expires-At exclude each other",
        )),
        (Some(ttl), None) => {
            let canonical = ttl == "0" || (!ttl.starts_with('0') && !ttl.is_empty());
            match ttl.parse::<u64>() {
                Ok(seconds) if canonical && ttl.bytes().all(|b| b.is_ascii_digit()) => {
                    Ok(Expiry::Idle(seconds))
                }
                _ => Err(ApiError::bad_request(
                    "Stream-TTL must be a whole number of seconds, in digits without a leading zero",
                )),
            }
        }
        (None, Some(at)) => chrono::DateTime::parse_from_rfc3339(at)
            .map(|at| Expiry::At(at.timestamp_millis()))
            .map_err(|_| ApiError::bad_request("Stream-Expires-At must be an RFC 3339 timestamp")),
        (None, None) => Ok(Expiry::Never),
    }
}

/// `Stream-Forked-From` with `Stream-Fork-Offset` and `Stream-Fork-Sub-Offset`; the
/// last two only with the first.
fn fork(headers: &HeaderMap) -> Result<Option<ForkRequest>, ApiError> {
    let offset = header_text(headers, names::FORK_OFFSET)?;
    let sub = header_text(headers, names::FORK_SUB_OFFSET)?;
    let Some(source) = header_text(headers, names::FORKED_FROM)? else {
        return match (offset, sub) {
            (None, None) => Ok(None),
            _ => Err(ApiError::bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            )),
        };
    };
    let name = source
        .strip_prefix("/api")
        .unwrap_or(source)
        .strip_prefix("/v1/stream/")
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Stream-Forked-From must be a stream's path, /v1/stream/{{name}}; got {source:?}"
            ))
        })?;
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("Stream-Forked-From is not UTF-8 once decoded"))?;
    let offset = offset
        .map(|offset| parse_position(offset).map_err(ApiError::from))
        .transpose()?;
    let sub = match sub {
        None => 0,
        Some(text) if text == "0" || (!text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit())) => {
            text.parse::<u64>().map_err(|_| {
                ApiError::bad_request("Stream-Fork-Sub-Offset is too large")
            })?
        }
        Some(text) => {
            return Err(ApiError::bad_request(format!(
                "Stream-Fork-Sub-Offset must be a whole number in digits without a leading zero, got {text:?}"
            )))
        }
    };
    Ok(Some(ForkRequest {
        source: StreamName::parse(&name)?,
        offset,
        sub,
    }))
}

/// `Producer-Id`, `Producer-Epoch` and `Producer-Seq`: all three or none.
fn producer(headers: &HeaderMap) -> Result<Option<ProducerClaim>, ApiError> {
    let id = header_text(headers, names::PRODUCER_ID)?;
    let epoch = header_text(headers, names::PRODUCER_EPOCH)?;
    let seq = header_text(headers, names::PRODUCER_SEQ)?;
    let (id, epoch, seq) =
        match (id, epoch, seq) {
            (None, None, None) => return Ok(None),
            (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
            _ => return Err(ApiError::bad_request(
                "Producer-Id, Producer-Epoch and Producer-Seq go together: send all three or none",
            )),
        };
    if id.trim().is_empty() {
        return Err(ApiError::bad_request("Producer-Id must not be empty"));
    }
    let number = |name: &str, value: &str| {
        value
            .parse::<u64>()
            .ok()
            .filter(|n| value.bytes().all(|b| b.is_ascii_digit()) && *n <= MAX_PRODUCER_NUMBER)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be a whole number from 0 to {MAX_PRODUCER_NUMBER}, in digits"
                ))
            })
    };
    Ok(Some(ProducerClaim {
        id: id.to_owned(),
        epoch: number("Producer-Epoch", epoch)?,
        seq: number("Producer-Seq", seq)?,
    }))
}

/// The entries a body holds for a stream of `content_type`: a JSON body's
/// messages, or the body as one entry.
fn entries(content_type: &str, body: &Bytes, create: bool) -> Result<Vec<Entry>, ApiError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    if !is_json(content_type) {
        return Ok(vec![Entry {
            name: None,
            data: body.to_vec(),
        }]);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid JSON: the body is not UTF-8"))?;
    let raw: Box<RawValue> = serde_json::from_str(text)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON: {error}")))?;
    Ok(json_entries(&raw, create)?)
}

/// The absolute URL of a stream, from the request's `Host` (and a proxy's `X-Forwarded-Proto`).
fn location(headers: &HeaderMap, stream: &StreamName) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v == "https")
        .unwrap_or("http");
    Some(format!("{scheme}://{host}/api/v1/stream/{stream}"))
}

/// An RFC 3339 time in UTC with milliseconds.
fn timestamp(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The headers every description of a stream's tail carries.
fn tail_headers(answer: Answer, state: &LogState) -> Answer {
    answer
        .with(header::CONTENT_TYPE.as_str(), &state.config.content_type)
        .with(names::NEXT_OFFSET, offset_of(state.tail))
        .with_if(state.closed, names::CLOSED, "true")
}

/// A header of the protocol, described by its pattern.
fn protocol_header(
    name: &str,
    description: &str,
    pattern: &str,
) -> utoipa::openapi::path::Parameter {
    let schema = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .build();
    header_param(name, false, description, schema)
}

/// A whole number in digits, without a leading zero.
const DIGITS_PATTERN: &str = "^(0|[1-9][0-9]{0,14})$";

/// The headers a create reads, described.
struct CreateHeaders;

impl IntoParams for CreateHeaders {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![
            protocol_header("Stream-Closed", "`true`: create the stream closed", "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"),
            protocol_header("Stream-TTL", "Seconds the stream lives after its last read or write (not with Stream-Expires-At)", DIGITS_PATTERN),
            protocol_header(
                "Stream-Expires-At",
                "When the stream expires, RFC 3339 (not with Stream-TTL)",
                r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,3})?Z$",
            ),
            protocol_header("Stream-Forked-From", "Create a fork of this stream, named by its path, `/v1/stream/{source}`", r"^/v1/stream/[A-Za-z0-9._~-]{1,128}$"),
            protocol_header("Stream-Fork-Offset", "Where the fork branches off (an offset this server gave); the source's tail when absent", "^[0-9]{16}_[0-9]{16}$"),
            protocol_header("Stream-Fork-Sub-Offset", "Messages (JSON streams) or bytes (others) past Stream-Fork-Offset the fork takes too", DIGITS_PATTERN),
        ]
    }
}

/// The headers an append reads, described.
struct AppendHeaders;

impl IntoParams for AppendHeaders {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![
            protocol_header("Stream-Closed", "`true`: close the stream, with this append's data if any", "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"),
            protocol_header("Stream-Seq", "A writer's sequence: each must sort above the last, as bytes", r"^[\x21-\x7E]{1,64}$"),
            protocol_header("Producer-Id", "An idempotent producer's id (with Producer-Epoch and Producer-Seq, or none of them)", r"^[\x21-\x7E]{1,64}$"),
            protocol_header("Producer-Epoch", "The producer's epoch; a newer one fences older ones", DIGITS_PATTERN),
            protocol_header("Producer-Seq", "The request's number within the epoch, from 0", DIGITS_PATTERN),
        ]
    }
}

/// `PUT /api/v1/stream/{stream}`: creates a stream, with a first body if sent.
#[utoipa::path(
    put,
    path = "/api/v1/stream/{stream}",
    tag = "durable-streams",
    operation_id = "createDurableStream",
    summary = "Create a stream (Durable Streams)",
    description = "Creates the stream with the request's content type (`application/octet-stream` when none), an expiry (`Stream-TTL` or `Stream-Expires-At`), closed with `Stream-Closed: true`, and the body as its first data. A repeat with the same settings answers 200; other settings 409.",
    params(StreamPath, CreateHeaders),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "The first data, in the stream's content type (optional)"),
    responses(
        (status = 201, description = "Created; `Location` names it, `Stream-Next-Offset` is its tail"),
        (status = 200, description = "It existed with these settings"),
        (status = 409, description = "It exists with other settings"),
    )
)]
pub async fn create(
    StreamCaller(caller): StreamCaller,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let fork = fork(headers)?;
    let content_type = match (content_type(headers)?, &fork) {
        (Some(content_type), _) => content_type,
        (None, None) => DEFAULT_CONTENT_TYPE.into(),
        // A fork without a content type takes its source's, which its body is then in.
        (None, Some(fork)) => {
            state
                .streams
                .log_state(&caller, &fork.source)
                .await
                .map_err(|error| match error {
                    DomainError::Gone(detail) => DomainError::Conflict(detail),
                    other => other,
                })?
                .config
                .content_type
        }
    };
    let config = LogConfig::new(content_type, expiry(headers)?);
    let closed = closes(headers)?;
    let body = read_limited(headers, body, state.max_body_bytes).await?;
    let entries = entries(&config.content_type, &body, true)?;
    let request = CreateLog {
        config,
        closed,
        entries,
        fork,
    };
    Ok(
        match state.streams.create_log(&caller, &stream, request).await? {
            CreateOutcome::Created(log) => {
                let answer = tail_headers(Answer::new(StatusCode::CREATED), &log);
                match location(headers, &stream) {
                    Some(url) => answer.with(header::LOCATION.as_str(), url),
                    None => answer,
                }
                .into_response()
            }
            CreateOutcome::Exists(log) => {
                tail_headers(Answer::new(StatusCode::OK), &log).into_response()
            }
            CreateOutcome::Conflict => ApiError::Conflict(format!(
                "stream {stream} exists with another content type, expiry, closure or origin, or its name or its source is a deleted stream that forks remain of, or the source has another content type"
            ))
            .into_response(),
            CreateOutcome::SourceNotFound => {
                ApiError::NotFound(format!("the source of fork {stream}")).into_response()
            }
            CreateOutcome::BadFork(detail) => ApiError::BadRequest(detail).into_response(),
        },
    )
}

/// `POST /api/v1/stream/{stream}`: appends, closes, or both.
#[utoipa::path(
    post,
    path = "/api/v1/stream/{stream}",
    tag = "durable-streams",
    operation_id = "appendDurableStream",
    summary = "Append to a stream (Durable Streams)",
    description = "Appends the body, in the stream's content type (a JSON stream takes a value or an array of them, each one message). `Stream-Closed: true` closes the stream, with or without data. An idempotent producer's retry is answered 204 without a second copy.",
    params(StreamPath, AppendHeaders),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "The data, in the stream's content type"),
    responses(
        (status = 204, description = "Appended (or a producer's retry): `Stream-Next-Offset` is the new tail"),
        (status = 200, description = "Appended for an idempotent producer, whose epoch and seq are echoed"),
        (status = 403, description = "A producer epoch older than the stream's (`Producer-Epoch` says which)"),
        (status = 404, response = NotFound),
        (status = 409, description = "The stream is closed, the content type differs, `Stream-Seq` went back, or a producer skipped a seq (`Producer-Expected-Seq`)"),
    )
)]
pub async fn append(
    StreamCaller(caller): StreamCaller,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let close = closes(headers)?;
    let producer = producer(headers)?;
    let stream_seq = header_text(headers, names::SEQ)?.map(str::to_owned);
    let body = read_limited(headers, body, state.max_body_bytes).await?;
    let sent_type = content_type(headers)?;
    if body.is_empty() && !close {
        return Err(ApiError::bad_request(
            "an append needs a body, or Stream-Closed: true to close the stream",
        ));
    }
    let entries = match (&sent_type, body.is_empty()) {
        (_, true) => Vec::new(),
        (None, false) => {
            return Err(ApiError::bad_request(
                "Content-Type is required with a body: the stream's content type",
            ))
        }
        (Some(sent), false) => entries(sent, &body, false)?,
    };
    let request = LogAppend {
        content_type: sent_type,
        entries,
        close,
        producer,
        stream_seq,
    };
    let claimed = request.producer.is_some();
    let echo = |answer: Answer, producer: Option<ProducerState>| match producer {
        Some(known) => answer
            .with(names::PRODUCER_EPOCH, known.epoch.to_string())
            .with(names::PRODUCER_SEQ, known.seq.to_string()),
        None => answer,
    };
    Ok(match state.streams.append_log(&caller, &stream, request).await? {
        AppendOutcome::Appended {
            tail,
            closed,
            producer,
        } => {
            // A producer's new data answers 200 with its state; a close alone, 204.
            let status = if claimed && !body.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            };
            let answer = Answer::new(status)
                .with(names::NEXT_OFFSET, offset_of(tail))
                .with_if(closed, names::CLOSED, "true");
            echo(answer, producer).into_response()
        }
        AppendOutcome::Duplicate {
            tail,
            closed,
            producer,
        } => {
            let answer = Answer::new(StatusCode::NO_CONTENT)
                .with(names::NEXT_OFFSET, offset_of(tail))
                .with_if(closed, names::CLOSED, "true");
            echo(answer, producer).into_response()
        }
        AppendOutcome::Closed { tail } => refusal(
            ApiError::Conflict(format!("stream {stream} is closed")),
            &[
                (names::CLOSED, "true".into()),
                (names::NEXT_OFFSET, offset_of(tail)),
            ],
        ),
        AppendOutcome::ContentTypeMismatch => ApiError::Conflict(format!(
            "the body's content type is not the one stream {stream} was created with"
        ))
        .into_response(),
        AppendOutcome::SeqRegression => ApiError::Conflict(
            "Stream-Seq must sort above the last one this stream accepted".into(),
        )
        .into_response(),
        AppendOutcome::StaleEpoch { current } => refusal(
            ApiError::Forbidden(format!(
                "producer epoch is older than the stream's, {current}: a newer session of this producer took over"
            )),
            &[(names::PRODUCER_EPOCH, current.to_string())],
        ),
        AppendOutcome::EpochStartsAtZero => {
            ApiError::bad_request("a new producer epoch starts at Producer-Seq 0").into_response()
        }
        AppendOutcome::SeqGap { expected, received } => refusal(
            ApiError::Conflict(format!(
                "producer sequence gap: expected seq {expected}, got {received}"
            )),
            &[
                (names::EXPECTED_SEQ, expected.to_string()),
                (names::RECEIVED_SEQ, received.to_string()),
            ],
        ),
    })
}

/// `?offset=&live=&cursor=` of a read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogReadQuery {
    /// Where to start: `-1` (the beginning, the default), `now` (the tail), or a
    /// `Stream-Next-Offset` this server gave.
    #[param(pattern = r"^(-1|now|[0-9]{16}_[0-9]{16})$")]
    pub offset: Option<String>,
    /// `long-poll`: at the tail, wait for an append (up to `[durable_streams]
    /// long_poll_timeout`). `sse`: a server-sent event stream of `data` and
    /// `control` events that stays open.
    #[param(pattern = "^(long-poll|sse)$")]
    pub live: Option<String>,
    /// The `Stream-Cursor` of the previous long-poll answer.
    pub cursor: Option<String>,
}

/// `GET /api/v1/stream/{stream}`: reads from an offset.
#[utoipa::path(
    get,
    path = "/api/v1/stream/{stream}",
    tag = "durable-streams",
    operation_id = "readDurableStream",
    summary = "Read a stream (Durable Streams)",
    description = "The data after `offset`, in the stream's content type (a JSON stream answers an array of its messages). `Stream-Next-Offset` is where the next read starts; `Stream-Up-To-Date: true` when it reached the tail. With `live=long-poll` a reader at the tail waits for an append, and is answered 204 when none came.",
    params(StreamPath, LogReadQuery),
    responses(
        (status = 200, description = "The data after the offset"),
        (status = 204, description = "A long-poll that saw no append, or a reader at the tail of a closed stream"),
        (status = 304, description = "The `If-None-Match` ETag still holds"),
        (status = 404, response = NotFound),
    )
)]
pub async fn read(
    StreamCaller(caller): StreamCaller,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    Query(query): Query<LogReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let start = match query.offset.as_deref() {
        None => ReadStart::Beginning,
        Some(offset) => parse_offset(offset)?,
    };
    let (long_poll, sse) = match query.live.as_deref() {
        None => (false, false),
        Some("long-poll") => (true, false),
        Some("sse") => (false, true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "live must be long-poll or sse, got {other:?}"
            )))
        }
    };
    if (long_poll || sse) && query.offset.is_none() {
        return Err(ApiError::bad_request("a live read needs an offset"));
    }
    if sse {
        return sse_read(state, caller, stream, start, query.cursor).await;
    }
    if start == ReadStart::Now && !long_poll {
        // Read, not only looked at: a read restarts an idle stream's countdown.
        let read = state
            .streams
            .read_log(&caller, &stream, start, None)
            .await?;
        let answer = tail_headers(Answer::new(StatusCode::OK), &read.state)
            .with(names::UP_TO_DATE, "true")
            .with(header::CACHE_CONTROL.as_str(), "no-store");
        let body = if is_json(&read.state.config.content_type) {
            "[]"
        } else {
            ""
        };
        return Ok(answer.body(body).into_response());
    }
    let wait = long_poll.then_some(state.durable_streams.long_poll_timeout);
    let read = state
        .streams
        .read_log(&caller, &stream, start, wait)
        .await?;
    let cursor = || response_cursor(query.cursor.as_deref(), now_millis(), rand::random());
    if long_poll && read.entries.is_empty() {
        // At the tail: nothing came in time, or the stream is closed.
        let answer = Answer::new(StatusCode::NO_CONTENT)
            .with(names::NEXT_OFFSET, offset_of(read.next))
            .with(names::UP_TO_DATE, "true")
            .with(names::CURSOR, cursor())
            .with_if(read.state.closed, names::CLOSED, "true");
        return Ok(answer.into_response());
    }
    let at_closed_tail = read.up_to_date && read.state.closed;
    let etag = format!(
        "\"{}:{}:{}{}\"",
        base64::engine::general_purpose::STANDARD.encode(stream.as_str()),
        query.offset.as_deref().unwrap_or("-1"),
        offset_of(read.next),
        if at_closed_tail { ":c" } else { "" }
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == etag.as_bytes())
    {
        return Ok(Answer::new(StatusCode::NOT_MODIFIED)
            .with(header::ETAG.as_str(), &etag)
            .into_response());
    }
    let answer = Answer::new(StatusCode::OK)
        .with(
            header::CONTENT_TYPE.as_str(),
            &read.state.config.content_type,
        )
        .with(names::NEXT_OFFSET, offset_of(read.next))
        .with_if(read.up_to_date, names::UP_TO_DATE, "true")
        .with_if(at_closed_tail, names::CLOSED, "true")
        .with(header::ETAG.as_str(), &etag);
    let answer = if long_poll {
        answer.with(names::CURSOR, cursor())
    } else {
        answer
    };
    Ok(answer.body(body_of(&read)).into_response())
}

/// A live read as server-sent events: each entry a `data` event (base64 for a
/// stream that is not text, each JSON message as a one-element array), then a
/// `control` event with the next offset; at the tail it waits for appends, one
/// long-poll after another, and ends after the close of the stream.
async fn sse_read(
    state: AppState,
    caller: Principal,
    stream: StreamName,
    start: ReadStart,
    cursor: Option<String>,
) -> Result<Response, ApiError> {
    state.streams.check_room_to_wait()?;
    // The first read answers a missing stream with a status, not an event.
    let first = state
        .streams
        .read_log(&caller, &stream, start, None)
        .await?;
    let base64 = !is_text(&first.state.config.content_type);
    let json = is_json(&first.state.config.content_type);
    let wait = state.durable_streams.long_poll_timeout;
    // The protocol asks servers to end SSE responses now and then (so caches can
    // collapse readers onto one request); the client reconnects from the last offset.
    let ends_at = tokio::time::Instant::now() + state.streams.max_poll();
    struct Live {
        state: AppState,
        caller: Principal,
        stream: StreamName,
        cursor: Option<String>,
        pending: std::collections::VecDeque<Bytes>,
        read: Option<LogAnswer>,
        last: Option<Position>,
        done: bool,
    }
    impl Live {
        fn next_from(&self) -> Position {
            self.last.unwrap_or_default()
        }
    }
    let live = Live {
        state,
        caller,
        stream,
        cursor,
        pending: Default::default(),
        read: Some(first),
        last: None,
        done: false,
    };
    let events = futures_util::stream::unfold(live, move |mut live| async move {
        loop {
            if let Some(event) = live.pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(event), live));
            }
            if live.done {
                return None;
            }
            let read = match live.read.take() {
                Some(read) => read,
                None => {
                    let at = ReadStart::At(live.next_from());
                    let left = ends_at.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    let wait = Some(wait.min(left));
                    match live
                        .state
                        .streams
                        .read_log(&live.caller, &live.stream, at, wait)
                        .await
                    {
                        // A wait ends early without data only at shutdown: end the response.
                        Ok(read)
                            if read.entries.is_empty() && !read.timed_out && !read.state.closed =>
                        {
                            return None
                        }
                        Ok(read) => read,
                        Err(_) => return None,
                    }
                }
            };
            // Each data event is followed by the control event of its offset.
            let count = read.entries.len();
            for (index, (position, data)) in read.entries.iter().enumerate() {
                let payload = if base64 {
                    base64::engine::general_purpose::STANDARD.encode(data)
                } else if json {
                    format!("[{}]", String::from_utf8_lossy(data))
                } else {
                    String::from_utf8_lossy(data).into_owned()
                };
                live.pending.push_back(sse_frame("data", &payload));
                if index + 1 < count {
                    let cursor =
                        response_cursor(live.cursor.as_deref(), now_millis(), rand::random());
                    let control = serde_json::json!({
                        "streamNextOffset": offset_of(*position),
                        "streamCursor": cursor,
                    });
                    live.pending
                        .push_back(sse_frame("control", &control.to_string()));
                }
            }
            let mut control = serde_json::Map::new();
            control.insert("streamNextOffset".into(), offset_of(read.next).into());
            if read.state.closed && read.up_to_date {
                control.insert("streamClosed".into(), true.into());
                live.done = true;
            } else {
                let cursor = response_cursor(live.cursor.as_deref(), now_millis(), rand::random());
                control.insert("streamCursor".into(), cursor.into());
                if read.up_to_date {
                    control.insert("upToDate".into(), true.into());
                }
            }
            live.pending.push_back(sse_frame(
                "control",
                &serde_json::Value::Object(control).to_string(),
            ));
            live.last = Some(read.next);
        }
    });
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if base64 {
        headers.insert(
            HeaderName::from_static("stream-sse-data-encoding"),
            HeaderValue::from_static("base64"),
        );
    }
    Ok(response)
}

/// One server-sent event: each line of the payload (split at CR, LF or CRLF) its
/// own `data:` line, so no payload can end the event early or forge another.
fn sse_frame(event: &str, payload: &str) -> Bytes {
    let mut frame = String::with_capacity(payload.len() + event.len() + 16);
    frame.push_str("event: ");
    frame.push_str(event);
    frame.push('\n');
    for line in payload
        .split("\r\n")
        .flat_map(|line| line.split(['\r', '\n']))
    {
        frame.push_str("data:");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    Bytes::from(frame)
}

/// A read's bytes: entries one after another, or a JSON array of a JSON stream's messages.
fn body_of(read: &LogAnswer) -> Vec<u8> {
    let json = is_json(&read.state.config.content_type);
    let size: usize = read.entries.iter().map(|(_, data)| data.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 2);
    if json {
        body.push(b'[');
    }
    for (index, (_, data)) in read.entries.iter().enumerate() {
        if json && index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(data);
    }
    if json {
        body.push(b']');
    }
    body
}

/// `HEAD /api/v1/stream/{stream}`: the stream's tail and settings, without data.
#[utoipa::path(
    head,
    path = "/api/v1/stream/{stream}",
    tag = "durable-streams",
    operation_id = "describeDurableStream",
    summary = "A stream's tail (Durable Streams)",
    description = "`Stream-Next-Offset` (the tail), the content type, `Stream-Closed`, and the expiry (`Stream-TTL` or `Stream-Expires-At`).",
    params(StreamPath),
    responses(
        (status = 200, description = "The stream exists"),
        (status = 404, description = "No such stream"),
    )
)]
pub async fn head(
    StreamCaller(caller): StreamCaller,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
) -> Result<Response, ApiError> {
    let log = state.streams.log_state(&caller, &stream).await?;
    let answer = tail_headers(Answer::new(StatusCode::OK), &log)
        .with(header::CACHE_CONTROL.as_str(), "no-store")
        .with(
            header::ETAG.as_str(),
            format!(
                "\"{}:-1:{}{}\"",
                base64::engine::general_purpose::STANDARD.encode(stream.as_str()),
                offset_of(log.tail),
                if log.closed { ":c" } else { "" }
            ),
        );
    let answer = match log.config.expiry {
        Expiry::Never => answer,
        Expiry::Idle(seconds) => answer.with(names::TTL, seconds.to_string()),
        Expiry::At(at) => answer.with(names::EXPIRES_AT, timestamp(at)),
    };
    Ok(answer.into_response())
}

/// `DELETE /api/v1/stream/{stream}`: removes the stream with all it holds.
#[utoipa::path(
    delete,
    path = "/api/v1/stream/{stream}",
    tag = "durable-streams",
    operation_id = "deleteDurableStream",
    summary = "Delete a stream (Durable Streams)",
    description = "Removes the stream, its data, its consumers' offsets and its producers; a create may then make it anew.",
    params(StreamPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete(
    StreamCaller(caller): StreamCaller,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
) -> Result<StatusCode, ApiError> {
    state.streams.delete_log(&caller, &stream).await?;
    Ok(StatusCode::NO_CONTENT)
}

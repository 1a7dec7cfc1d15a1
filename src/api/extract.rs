//! The extractors every handler takes its input through: bodies under the one
//! body policy ([`super::body`]), path and query parameters and forms parsed into
//! typed structs. Each rejection is an [`ApiError`], so a bad request reads like
//! every other error.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::body::{json_text, parse_form, parse_object};
use super::{ApiError, AppState};

/// A JSON object body parsed into `T`: `Content-Type: application/json` (or
/// `+json`), within the size limit, under the body policy.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state).await?;
        parse_object(&bytes).map(AppJson)
    }
}

/// A JSON object body parsed into `T`, or `T::default()` when the request has no
/// body at all, or `null` (a `PUT` that changes nothing, say).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if json_text(&bytes)?.get() == "null" {
            return Ok(OptionalJson(T::default()));
        }
        parse_object(&bytes).map(OptionalJson)
    }
}

/// Any JSON value as sent (less surrounding whitespace), checked against the body
/// policy: what a push stores, a task carries or a stream appends.
pub struct JsonBody(pub Box<RawValue>);

impl JsonBody {
    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state).await?;
        json_text(&bytes).map(|raw| JsonBody(raw.to_owned()))
    }
}

/// A form body (`application/x-www-form-urlencoded`) parsed into `T`.
pub struct Form<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Form<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        require_content_type(
            &parts.headers,
            "application/x-www-form-urlencoded",
            |essence| essence == "application/x-www-form-urlencoded",
        )?;
        let bytes = read_limited(&parts.headers, body, state.max_body_bytes).await?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::bad_request("the form body must be UTF-8"))?;
        parse_form(text).map(Form)
    }
}

/// Path parameters parsed into `T`, each value validated by its type.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => {
                let detail = match error.into_kind() {
                    ErrorKind::Message(message) => message,
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        format!("{key} must be UTF-8 once percent-decoded")
                    }
                    other => format!("invalid path: {other}"),
                };
                Err(ApiError::BadRequest(detail))
            }
            Err(other) => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                other.body_text()
            ))),
        }
    }
}

/// The query string parsed into `T`; an absent query string is an empty one.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_form(parts.uri.query().unwrap_or("")).map(Query)
    }
}

/// A header's value as text, if present; a 400 naming it when it is not visible ASCII.
pub fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("{name} must be visible ASCII")))
        })
        .transpose()
}

/// The body of a request that must be JSON: its content type checked (a body
/// without one is refused too: it may be anything), its size limited.
async fn json_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let declares_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    // Checked before anything is read, so a body of another kind costs nothing.
    if declares_body || headers.contains_key(header::CONTENT_TYPE) {
        require_content_type(headers, "application/json", |essence| {
            essence == "application/json" || essence.ends_with("+json")
        })?;
    }
    read_limited(headers, body, state.max_body_bytes).await
}

/// Checks the media type of `Content-Type` (parameters such as `charset` aside).
fn require_content_type(
    headers: &HeaderMap,
    expected: &str,
    accepts: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let essence = headers.get(header::CONTENT_TYPE).map(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match essence {
        Some(essence) if accepts(&essence) => Ok(()),
        Some(essence) => Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: {expected}, got {essence:?}"
        ))),
        None => Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: {expected}, got none"
        ))),
    }
}

/// The most of a refused body that is read and dropped before the 413 goes out, and
/// for how long: a client still sending when the server closes the connection sees
/// it reset, not the answer. A larger body is cut off at once.
const DRAIN_BYTES: u64 = 64 << 20;
/// See [`DRAIN_BYTES`].
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops a refused body, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(body: axum::body::Body) {
    let mut frames = body.into_data_stream();
    let mut read = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = frames.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// A request body of any content type, up to `limit` bytes (413 beyond, refused from
/// its declared length before it is kept).
pub async fn read_limited(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|n| *n > limit as u64) {
        if declared <= DRAIN_BYTES {
            drain(body).await;
        }
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

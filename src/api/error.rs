//! The one place errors become a status and a seed-004 body: a JSON string
//! `"<Reason> - <detail>"` or `"<Reason>"`. 5xx answers carry no internals; their
//! cause chain goes to the log, inside the request's span (which holds its id).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::reply::json_response;
use crate::auth::aws_keys::AwsKeyError;
use crate::auth::AuthError;
use crate::domain::{DomainError, StoreError};

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range; the detail says which.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no, malformed or wrong credentials. Never says which, to not help guessing.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: valid credentials without the needed grant.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown path, queue or client.
    #[error("{0}")]
    NotFound(String),
    /// 410: the thing was deleted, and its name stays taken for now.
    #[error("{0}")]
    Gone(String),
    /// 405: the path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the thing exists already.
    #[error("{0}")]
    Conflict(String),
    /// 423: the stream belongs to another producer (seed 004).
    #[error("{0}")]
    Locked(String),
    /// 413: the body is over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 + `Retry-After`: too many failed credential checks for this client id or
    /// from this address; refused unchecked for the time given.
    #[error("too many failed credential checks")]
    TooManyFailures(std::time::Duration),
    /// 503: the store is unreachable or the server is stopping; retrying later may work.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 503 + `Retry-After`: a limit of this node turned the request away to protect the
    /// rest (`limits.max_waiters` reached, `limits.request_timeout` passed); the same
    /// request later may work.
    #[error("{0}")]
    Overloaded(String),
    /// 503 without `Retry-After`: the feature needs a setting this node lacks; the
    /// text names it. Retrying does not help until an operator sets it.
    #[error("{0}")]
    NotConfigured(String),
    /// 501: this store does not offer the feature yet; the text names it.
    #[error("{0}")]
    NotImplemented(String),
    /// 504: the store did not confirm a write: it may or may not be stored; check before retrying.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// 500: a bug or a backend failure; the source is logged, never sent.
    #[error("{context}")]
    Internal {
        /// Short, safe text for the client.
        context: &'static str,
        /// The cause, for the log.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// A 400 with a detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest(detail.into())
    }

    fn status_and_detail(&self) -> (StatusCode, Option<String>) {
        match self {
            ApiError::BadRequest(d) => (StatusCode::BAD_REQUEST, Some(d.clone())),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, None),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, Some(d.clone())),
            ApiError::NotFound(d) if d.is_empty() => (StatusCode::NOT_FOUND, None),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, Some(d.clone())),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, None),
            ApiError::Gone(d) => (StatusCode::GONE, Some(d.clone())),
            ApiError::Conflict(d) => (StatusCode::CONFLICT, Some(d.clone())),
            ApiError::Locked(d) => (StatusCode::LOCKED, Some(d.clone())),
            ApiError::PayloadTooLarge(d) => (StatusCode::PAYLOAD_TOO_LARGE, Some(d.clone())),
            ApiError::UnsupportedMediaType(d) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(d.clone()))
            }
            ApiError::TooManyFailures(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(format!(
                    "too many failed credential checks; retry in {} s",
                    retry_after_secs(*wait)
                )),
            ),
            ApiError::ServiceUnavailable(d)
            | ApiError::Overloaded(d)
            | ApiError::NotConfigured(d) => (StatusCode::SERVICE_UNAVAILABLE, Some(d.clone())),
            ApiError::NotImplemented(d) => (StatusCode::NOT_IMPLEMENTED, Some(d.clone())),
            ApiError::OutcomeUnknown(d) => (StatusCode::GATEWAY_TIMEOUT, Some(d.clone())),
            ApiError::Internal { context, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Some((*context).to_owned()),
            ),
        }
    }
}

/// The seed-004 body for a status: `"<Reason>"` or `"<Reason> - <detail>"`.
pub fn error_body(status: StatusCode, detail: Option<&str>) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    let text = match detail {
        Some(detail) => format!("{reason} - {detail}"),
        None => reason.to_owned(),
    };
    serde_json::Value::String(text).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = self.status_and_detail();
        if status.is_server_error() {
            let chain =
                std::iter::successors(Some(&self as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ");
            tracing::error!(status = status.as_u16(), error = %chain, "request failed");
        }
        let mut response = json_response(status, error_body(status, detail.as_deref()));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="hopper", charset="UTF-8""#),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE && !matches!(self, ApiError::NotConfigured(_))
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::TooManyFailures(wait) = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(wait)),
            );
        }
        response
    }
}

/// Whole seconds, rounded up, so a client that waits them is past the lock-out.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::from(DomainError::from(error))
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::Invalid(d) => ApiError::BadRequest(d),
            DomainError::NotFound(d) => ApiError::NotFound(d),
            DomainError::Forbidden(d) => ApiError::Forbidden(d),
            DomainError::Gone(d) => ApiError::Gone(d),
            DomainError::Conflict(d) => ApiError::Conflict(d),
            DomainError::TooManyWaiters { .. } => ApiError::Overloaded(error.to_string()),
            DomainError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "store unavailable");
                ApiError::ServiceUnavailable("store".into())
            }
            DomainError::Store(StoreError::OutcomeUnknown(cause)) => {
                tracing::error!(%cause, "store outcome unknown");
                ApiError::OutcomeUnknown("outcome unknown".into())
            }
            DomainError::Store(error @ StoreError::Unsupported(_)) => {
                ApiError::NotImplemented(error.to_string())
            }
            DomainError::Store(source) => ApiError::Internal {
                context: "storage failure",
                source: Box::new(source),
            },
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthorized => ApiError::Unauthorized,
            AuthError::TooManyFailures(wait) => ApiError::TooManyFailures(wait),
            AuthError::Store(store) => store.into(),
        }
    }
}

impl From<AwsKeyError> for ApiError {
    fn from(error: AwsKeyError) -> Self {
        match error {
            AwsKeyError::NoSecretKey => ApiError::NotConfigured(error.to_string()),
            AwsKeyError::Domain(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_map_to_retryable_or_unknown_statuses() {
        let answer = |error: StoreError| ApiError::from(error).into_response();
        let unavailable = answer(StoreError::Unavailable("connection refused".into()));
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(unavailable.headers().contains_key(header::RETRY_AFTER));
        // A write that may have happened must not invite a blind retry.
        let unknown = answer(StoreError::OutcomeUnknown("fsync failed".into()));
        assert_eq!(unknown.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!unknown.headers().contains_key(header::RETRY_AFTER));
        let not_found = answer(StoreError::QueueNotFound("orders".into()));
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn bodies_follow_seed_004() {
        assert_eq!(
            error_body(StatusCode::UNAUTHORIZED, None),
            r#""Unauthorized""#
        );
        assert_eq!(
            error_body(
                StatusCode::BAD_REQUEST,
                Some("limit must be between 1 and 1000")
            ),
            r#""Bad Request - limit must be between 1 and 1000""#
        );
        assert_eq!(
            error_body(StatusCode::NOT_FOUND, Some("queue \"x\"")),
            r#""Not Found - queue \"x\"""#
        );
    }
}

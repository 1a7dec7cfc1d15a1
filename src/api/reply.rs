//! Typed answers: a status and a body that serializes to JSON, with the content
//! type every answer carries.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiError;

/// A JSON answer: `status` and `body`.
pub struct Reply<T>(pub StatusCode, pub T);

impl<T> Reply<T> {
    /// `200 OK` with `body`.
    pub fn ok(body: T) -> Self {
        Reply(StatusCode::OK, body)
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match serde_json::to_string(&self.1) {
            Ok(text) => json_response(self.0, text),
            Err(error) => ApiError::Internal {
                context: "cannot encode the answer",
                source: Box::new(error),
            }
            .into_response(),
        }
    }
}

/// A JSON response with the charset the conventions require.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

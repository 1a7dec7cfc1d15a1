//! `GET /ui`: the dashboard, a page of plain HTML, one script and one style sheet,
//! compiled into the binary. The page is public; everything it shows comes from the
//! JSON API, called with the token of the user who logged in on it, so it can show
//! and do what that client's grants allow and no more.

use axum::extract::Path as RawPath;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};

/// The page's own files and nothing else: no inline script or style, no other origin.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The files under `/ui/`, with their content types.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("ui/app.css"),
    ),
];

/// The dashboard's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(file))
}

/// `GET /ui`: the dashboard.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "docs",
    operation_id = "dashboard",
    summary = "The dashboard: queues, dead letters, streams and tasks in a browser, after logging in",
    security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub async fn page() -> Response {
    serve(
        include_str!("ui/index.html"),
        "text/html; charset=utf-8",
        Some(CONTENT_SECURITY_POLICY),
    )
}

/// `GET /ui/{file}`: the dashboard's script and style sheet.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "docs",
    operation_id = "dashboardFile",
    summary = "A file of the dashboard",
    security(()),
    params(("file" = String, Path, description = "The file's name: `app.js` or `app.css`")),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = String),
        (status = 404, response = super::docs::NotFound),
    )
)]
pub async fn file(RawPath(file): RawPath<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, text)) => serve(text, content_type, None),
        None => ApiError::NotFound(format!("file {file}")).into_response(),
    }
}

fn serve(text: &'static str, content_type: &'static str, policy: Option<&'static str>) -> Response {
    let mut response = (StatusCode::OK, text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(policy) = policy {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(policy),
        );
    }
    response
}

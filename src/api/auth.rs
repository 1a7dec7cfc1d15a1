//! `/api/v1/auth`: log in for a token, and ask who the caller is.

use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppJson, AppState, Form, Reply};
use crate::auth::Principal;

/// The auth routes, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(whoami))
}

/// A login: a client id and its secret, as JSON or as a form.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The client id.
    #[schema(min_length = 1, max_length = 128)]
    username: String,
    /// The client's secret.
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

/// A token to send as `Authorization: Bearer <token>`.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    /// An HS256 JWT naming the client.
    token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until it expires.
    expires_in: u64,
}

/// The caller.
#[derive(Serialize, ToSchema)]
pub struct WhoamiView {
    /// The client id.
    id: String,
    /// Its grants, now.
    grants: Vec<String>,
}

/// `POST /api/v1/auth/login` `{"username", "password"}` (or the same as a form) →
/// `{"token", "token_type": "Bearer", "expires_in"}`.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    operation_id = "login",
    summary = "Trade a client id and secret for a token",
    description = "The token goes in `Authorization: Bearer <token>` on every later request, with no `API-Client-Id`. It names the client, not its grants: a grant change applies to it at once, and deleting the client or changing its secret voids it.",
    security(()),
    request_body(content(
        (LoginBody = "application/json"),
        (LoginBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Logged in", body = TokenView),
        (status = 401, response = super::docs::Unauthorized),
        (status = 429, response = super::docs::TooManyRequests),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    request: Request,
) -> Result<Reply<TokenView>, ApiError> {
    let (parts, body) = request.into_parts();
    let source = super::source_address(&parts);
    let request = Request::from_parts(parts, body);
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.split(';').next().is_some_and(|essence| {
                essence
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let body: LoginBody = if form {
        Form::from_request(request, &state).await?.0
    } else {
        AppJson::from_request(request, &state).await?.0
    };
    let issued = state
        .auth
        .login(&body.username, &body.password, source)
        .await?;
    Ok(Reply::ok(TokenView {
        token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in.as_secs(),
    }))
}

/// `GET /api/v1/auth/whoami` → `{"id", "grants"}` of the caller.
#[utoipa::path(
    get,
    path = "/api/v1/auth/whoami",
    tag = "auth",
    operation_id = "whoami",
    summary = "The caller's id and grants",
    responses((status = 200, description = "The caller", body = WhoamiView))
)]
pub async fn whoami(principal: Principal) -> Reply<WhoamiView> {
    Reply::ok(WhoamiView {
        id: principal.id.to_string(),
        grants: principal.grants.iter().map(ToString::to_string).collect(),
    })
}

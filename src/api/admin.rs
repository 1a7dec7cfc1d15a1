//! `/api/v1/admin/clients`: create, list and delete clients. Admins only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{reply, ApiError, AppJson, AppState, ClientPath};
use crate::auth::clients;
use crate::auth::Principal;
use crate::domain::clock::rfc3339;
use crate::domain::ClientId;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// Body of a client creation.
pub struct NewClient {
    id: String,
    secret: Option<String>,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Serialize)]
struct ClientView {
    id: String,
    grants: Vec<String>,
    created_at: String,
}

/// `POST /admin/clients` `{"id", "secret"?, "grants": [...]}` → 201 `{"id", "secret"}`.
pub async fn create(
    principal: Principal,
    State(state): State<AppState>,
    AppJson(body): AppJson<NewClient>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let id = ClientId::parse(&body.id)?;
    let created = clients::create(state.store.as_ref(), id, body.secret, &body.grants).await?;
    Ok(reply(
        StatusCode::CREATED,
        &serde_json::json!({ "id": created.id.as_str(), "secret": created.secret }),
    ))
}

/// `GET /admin/clients` → `{"clients": [{"id", "grants", "created_at"}]}`; never a secret.
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let clients: Vec<ClientView> = state
        .store
        .list_clients()
        .await?
        .into_iter()
        .map(|c| ClientView {
            id: c.id.to_string(),
            grants: c.grants.iter().map(ToString::to_string).collect(),
            created_at: rfc3339(c.created_at),
        })
        .collect();
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "clients": clients }),
    ))
}

/// `DELETE /admin/clients/{id}`: revoked at once, cached credentials included.
pub async fn remove(
    principal: Principal,
    State(state): State<AppState>,
    ClientPath(id): ClientPath,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    state.store.delete_client(&id).await?;
    state.auth.forget(&id);
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "id": id.as_str(), "deleted": true }),
    ))
}

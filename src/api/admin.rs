//! `/api/v1/admin/clients`: create, list and delete clients. Admins only.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{grants_schema, name_schema, secret_schema, Conflict, NotFound};
use super::params::ClientPath;
use super::{ApiError, AppJson, AppState, Path, Reply};
use crate::auth::clients;
use crate::auth::Principal;
use crate::domain::clock::rfc3339;
use crate::domain::ClientId;

/// The admin routes for clients, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
}

/// Body of a client creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// The client's id.
    #[schema(value_type = String, schema_with = name_schema)]
    id: ClientId,
    /// Its secret, at least 12 characters; one is generated when absent.
    #[schema(schema_with = secret_schema)]
    secret: Option<String>,
    /// What it may do: `admin`, or `<queue|stream|task>:<name|*>:<produce|consume|manage|*>`.
    #[serde(default)]
    #[schema(schema_with = grants_schema)]
    grants: Vec<String>,
}

/// A client just created: its secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedView {
    /// The client's id.
    id: String,
    /// Its secret, chosen or generated; it is stored only as a hash.
    secret: String,
}

/// A client as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct ClientView {
    /// The client's id.
    id: String,
    /// What it may do.
    grants: Vec<String>,
    /// When it was created (RFC 3339, UTC).
    #[schema(format = DateTime)]
    created_at: String,
}

/// `{"clients": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct ClientsView {
    /// Every client, by id.
    clients: Vec<ClientView>,
}

/// A client deleted.
#[derive(Serialize, ToSchema)]
pub struct RemovedView {
    /// The client's id.
    id: String,
    /// Always `true`.
    deleted: bool,
}

/// `POST /admin/clients` `{"id", "secret"?, "grants": [...]}` → 201 `{"id", "secret"}`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/clients",
    tag = "admin",
    operation_id = "createClient",
    summary = "Create a client (admins)",
    request_body(content = NewClient, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the secret is shown only now", body = CreatedView),
        (status = 409, response = Conflict),
    )
)]
pub async fn create(
    principal: Principal,
    State(state): State<AppState>,
    AppJson(body): AppJson<NewClient>,
) -> Result<Reply<CreatedView>, ApiError> {
    principal.require_admin()?;
    let created = clients::create(state.store.as_ref(), body.id, body.secret, &body.grants).await?;
    Ok(Reply(
        StatusCode::CREATED,
        CreatedView {
            id: created.id.to_string(),
            secret: created.secret,
        },
    ))
}

/// `GET /admin/clients` → `{"clients": [{"id", "grants", "created_at"}]}`; never a secret.
#[utoipa::path(
    get,
    path = "/api/v1/admin/clients",
    tag = "admin",
    operation_id = "listClients",
    summary = "Every client (admins)",
    responses((status = 200, description = "The clients, by id", body = ClientsView))
)]
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Reply<ClientsView>, ApiError> {
    principal.require_admin()?;
    let clients = state
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
    Ok(Reply::ok(ClientsView { clients }))
}

/// `DELETE /admin/clients/{id}`: revoked at once, cached credentials included.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/clients/{id}",
    tag = "admin",
    operation_id = "deleteClient",
    summary = "Delete a client, revoking it at once (admins)",
    description = "Refused (409) for the caller itself and for the last client with the grant `admin`.",
    params(ClientPath),
    responses(
        (status = 200, description = "Deleted", body = RemovedView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn remove(
    principal: Principal,
    State(state): State<AppState>,
    Path(ClientPath { id }): Path<ClientPath>,
) -> Result<Reply<RemovedView>, ApiError> {
    principal.require_admin()?;
    // An admin that deletes itself by mistake loses its own access mid-task; another
    // admin can always do it.
    if principal.id == id {
        return Err(ApiError::Conflict(format!(
            "client {id} is the caller; another admin must delete it"
        )));
    }
    clients::delete(state.store.as_ref(), &id).await?;
    state.auth.forget(&id);
    Ok(Reply::ok(RemovedView {
        id: id.to_string(),
        deleted: true,
    }))
}

//! `/api/v1/admin/clients`: create, list, change (grants, secret) and delete
//! clients, and issue, list and delete their AWS access keys. Admins only. Every
//! change applies at once, on every node.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{grants_schema, name_schema, secret_schema, Conflict, NotFound};
use super::extract::OptionalJson;
use super::params::{AwsKeyPath, ClientPath};
use super::{ApiError, AppJson, AppState, Path, Reply};
use crate::auth::Principal;
use crate::auth::{aws_keys, clients};
use crate::domain::clock::rfc3339;
use crate::domain::{AwsKeyRecord, ClientId, ClientRecord};

/// The admin routes for clients, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
        .routes(routes!(set_grants))
        .routes(routes!(rotate))
        .routes(routes!(list_aws_keys, issue_aws_key))
        .routes(routes!(delete_aws_key))
}

/// Body of a client creation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// The client's id.
    #[schema(value_type = String, schema_with = name_schema)]
    id: ClientId,
    /// Its secret, at least 12 characters; one is generated when absent.
    #[serde(default, deserialize_with = "present_string")]
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

impl ClientView {
    fn new(client: &ClientRecord) -> Self {
        ClientView {
            id: client.id.to_string(),
            grants: client.grants.iter().map(ToString::to_string).collect(),
            created_at: rfc3339(client.created_at),
        }
    }
}

/// Body of a grant change: the client's grants from now on.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrants {
    /// Every grant the client holds from now on, replacing the ones it had; `[]` leaves it none.
    #[schema(schema_with = grants_schema)]
    grants: Vec<String>,
}

/// Body of a secret rotation, optional.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    /// The new secret, at least 12 characters; one is generated when absent.
    #[serde(default, deserialize_with = "present_string")]
    #[schema(schema_with = secret_schema)]
    secret: Option<String>,
}

/// A string where one is given: `null` is refused, not taken for "absent", since
/// the description says a string (leave the field out for a generated secret).
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
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
    let created = clients::create(
        &principal,
        state.store.as_ref(),
        body.id,
        body.secret,
        &body.grants,
    )
    .await?;
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
    let clients = clients::list(&principal, state.store.as_ref())
        .await?
        .iter()
        .map(ClientView::new)
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
    clients::delete(&principal, state.store.as_ref(), &id).await?;
    state.auth.forget(&id);
    Ok(Reply::ok(RemovedView {
        id: id.to_string(),
        deleted: true,
    }))
}

/// `PUT /admin/clients/{id}/grants` `{"grants": [...]}` → 200 `{"id", "grants", "created_at"}`.
#[utoipa::path(
    put,
    path = "/api/v1/admin/clients/{id}/grants",
    tag = "admin",
    operation_id = "setClientGrants",
    summary = "Replace a client's grants, at once (admins)",
    description = "The new grants apply at once, on every node, to the client's secret and to the login tokens it holds already. Refused (409) when it would take `admin` from the last client holding it.",
    params(ClientPath),
    request_body(content = NewGrants, content_type = "application/json"),
    responses(
        (status = 200, description = "The client with its new grants", body = ClientView),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn set_grants(
    principal: Principal,
    State(state): State<AppState>,
    Path(ClientPath { id }): Path<ClientPath>,
    AppJson(body): AppJson<NewGrants>,
) -> Result<Reply<ClientView>, ApiError> {
    let client = clients::set_grants(&principal, state.store.as_ref(), &id, &body.grants).await?;
    // The store's announcement reaches this node's cache too, but on its own task:
    // forgetting here means the next request of this caller already sees the change.
    state.auth.forget(&id);
    Ok(Reply::ok(ClientView::new(&client)))
}

/// `POST /admin/clients/{id}/rotate` `{"secret"?}` → 200 `{"id", "secret"}`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/clients/{id}/rotate",
    tag = "admin",
    operation_id = "rotateClientSecret",
    summary = "Give a client a new secret, shown once (admins)",
    description = "With no body, a secret is generated; `{\"secret\": ...}` chooses it. From now on, on every node, the old secret is refused, and so are the login tokens issued before.",
    params(ClientPath),
    request_body(content = Option<NewSecret>, content_type = "application/json"),
    responses(
        (status = 200, description = "Rotated; the new secret is shown only now", body = CreatedView),
        (status = 404, response = NotFound),
    )
)]
pub async fn rotate(
    principal: Principal,
    State(state): State<AppState>,
    Path(ClientPath { id }): Path<ClientPath>,
    OptionalJson(body): OptionalJson<NewSecret>,
) -> Result<Reply<CreatedView>, ApiError> {
    let rotated = clients::rotate(&principal, state.store.as_ref(), &id, body.secret).await?;
    state.auth.forget(&id);
    Ok(Reply::ok(CreatedView {
        id: rotated.id.to_string(),
        secret: rotated.secret,
    }))
}

/// An AWS access key just issued: its secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct IssuedAwsKeyView {
    /// The access key id, which SigV4 requests name in `Credential=`.
    #[schema(example = "HOPRK7QZ2M4XW5N6TJ3A")]
    access_key_id: String,
    /// The secret access key; it is stored only sealed, and never shown again.
    #[schema(example = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")]
    secret_access_key: String,
}

/// An AWS access key as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct AwsKeyView {
    /// The access key id.
    access_key_id: String,
    /// When it was issued (RFC 3339, UTC).
    #[schema(format = DateTime)]
    created_at: String,
}

impl AwsKeyView {
    fn new(key: &AwsKeyRecord) -> Self {
        AwsKeyView {
            access_key_id: key.access_key_id.to_string(),
            created_at: rfc3339(key.created_at),
        }
    }
}

/// `{"aws_keys": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct AwsKeysView {
    /// The client's keys, oldest first.
    aws_keys: Vec<AwsKeyView>,
}

/// An AWS access key deleted.
#[derive(Serialize, ToSchema)]
pub struct RemovedAwsKeyView {
    /// The access key id.
    access_key_id: String,
    /// Always `true`.
    deleted: bool,
}

/// `POST /admin/clients/{id}/aws-keys` → 201 `{"access_key_id", "secret_access_key"}`.
#[utoipa::path(
    post,
    path = "/api/v1/admin/clients/{id}/aws-keys",
    tag = "admin",
    operation_id = "issueAwsKey",
    summary = "Issue an AWS access key to a client, its secret shown once (admins)",
    description = "Requests signed with the key (AWS Signature Version 4, as AWS SDKs sign them) act as the client, with its grants. The secret is stored sealed under the server's secret key (`auth.secret_key` or `HOPPER_SECRET_KEY`; on SQLite a key file beside the database when neither is set): without one, on PostgreSQL and Redis, the answer is 503 naming the setting.",
    params(ClientPath),
    responses(
        (status = 201, description = "Issued; the secret is shown only now", body = IssuedAwsKeyView),
        (status = 404, response = NotFound),
    )
)]
pub async fn issue_aws_key(
    principal: Principal,
    State(state): State<AppState>,
    Path(ClientPath { id }): Path<ClientPath>,
) -> Result<Reply<IssuedAwsKeyView>, ApiError> {
    let issued = aws_keys::issue(
        &principal,
        state.store.as_ref(),
        state.auth.secret_key(),
        &id,
    )
    .await?;
    Ok(Reply(
        StatusCode::CREATED,
        IssuedAwsKeyView {
            access_key_id: issued.access_key_id.to_string(),
            secret_access_key: issued.secret_access_key,
        },
    ))
}

/// `GET /admin/clients/{id}/aws-keys` → `{"aws_keys": [{"access_key_id", "created_at"}]}`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/clients/{id}/aws-keys",
    tag = "admin",
    operation_id = "listAwsKeys",
    summary = "A client's AWS access keys, never their secrets (admins)",
    params(ClientPath),
    responses(
        (status = 200, description = "The keys, oldest first", body = AwsKeysView),
        (status = 404, response = NotFound),
    )
)]
pub async fn list_aws_keys(
    principal: Principal,
    State(state): State<AppState>,
    Path(ClientPath { id }): Path<ClientPath>,
) -> Result<Reply<AwsKeysView>, ApiError> {
    let keys = aws_keys::list(&principal, state.store.as_ref(), &id).await?;
    Ok(Reply::ok(AwsKeysView {
        aws_keys: keys.iter().map(AwsKeyView::new).collect(),
    }))
}

/// `DELETE /admin/clients/{id}/aws-keys/{key_id}`: refused at once, on every node.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/clients/{id}/aws-keys/{key_id}",
    tag = "admin",
    operation_id = "deleteAwsKey",
    summary = "Delete a client's AWS access key, refusing it at once (admins)",
    params(AwsKeyPath),
    responses(
        (status = 200, description = "Deleted", body = RemovedAwsKeyView),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete_aws_key(
    principal: Principal,
    State(state): State<AppState>,
    Path(AwsKeyPath { id, key_id }): Path<AwsKeyPath>,
) -> Result<Reply<RemovedAwsKeyView>, ApiError> {
    aws_keys::delete(&principal, state.store.as_ref(), &id, &key_id).await?;
    // As for a client: the store's announcement reaches this node on its own task.
    state.auth.forget(&id);
    Ok(Reply::ok(RemovedAwsKeyView {
        access_key_id: key_id.to_string(),
        deleted: true,
    }))
}

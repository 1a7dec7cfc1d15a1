//! Creating and deleting clients: one path for the admin API, the CLI and the
//! bootstrap admin, so the rules (secret strength, grants, never locking every
//! admin out) hold whichever way a client comes or goes.

use crate::auth::{generate_secret, hash_secret, MIN_SECRET_LEN};
use crate::domain::clock::now_millis;
use crate::domain::{ClientId, DomainError, Grant};
use crate::domain::{ClientRecord, ClientStore, StoreError};

/// A client just created, with its secret in clear: the only time it is known.
pub struct CreatedClient {
    /// The client id.
    pub id: ClientId,
    /// The secret, chosen or generated.
    pub secret: String,
}

/// Validates and stores a new client; generates a secret when none is chosen.
pub async fn create(
    store: &dyn ClientStore,
    id: ClientId,
    secret: Option<String>,
    grants: &[String],
) -> Result<CreatedClient, DomainError> {
    let grants = grants
        .iter()
        .map(|g| g.parse::<Grant>())
        .collect::<Result<Vec<_>, _>>()?;
    let (secret, secret_hash) = match secret {
        None => generate_secret(),
        Some(secret) => {
            if secret.len() < MIN_SECRET_LEN || secret.chars().any(char::is_control) {
                return Err(DomainError::invalid(format!(
                    "secret must be at least {MIN_SECRET_LEN} characters, without control characters"
                )));
            }
            let to_hash = secret.clone();
            let hash = tokio::task::spawn_blocking(move || hash_secret(&to_hash))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    DomainError::Store(StoreError::Unavailable(
                        "the secret could not be hashed".into(),
                    ))
                })?;
            (secret, hash)
        }
    };
    let record = ClientRecord {
        id: id.clone(),
        secret_hash,
        grants,
        created_at: now_millis(),
    };
    store.create_client(&record).await.map_err(|e| match e {
        StoreError::ClientExists(id) => DomainError::Conflict(format!("client {id} exists")),
        other => other.into(),
    })?;
    Ok(CreatedClient { id, secret })
}

/// Deletes a client, unless it is the last one with the grant `admin`: without an
/// admin, nobody could create, change or delete clients through the API again.
pub async fn delete(store: &dyn ClientStore, id: &ClientId) -> Result<(), DomainError> {
    let clients = store.list_clients().await?;
    let is_admin = |client: &ClientRecord| client.grants.contains(&Grant::Admin);
    let Some(client) = clients.iter().find(|client| &client.id == id) else {
        return Err(DomainError::NotFound(format!("client {id}")));
    };
    if is_admin(client)
        && !clients
            .iter()
            .any(|other| &other.id != id && is_admin(other))
    {
        return Err(DomainError::Conflict(format!(
            "client {id} is the last admin; create another admin before deleting it"
        )));
    }
    Ok(store.delete_client(id).await?)
}

//! Creating clients: one path for the admin API, the CLI and the bootstrap admin.

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

//! Creating, changing and deleting clients: one path for the admin API, the CLI and
//! the bootstrap admin, so the rules (secret strength, grants, never locking every
//! admin out) hold whichever way a client comes, changes or goes.
//!
//! Every change is the admins' (the caller is checked here, by the access policy);
//! the CLI and the bootstrap act as the node itself.
//!
//! The store announces every change and deletion, so cached credentials are
//! forgotten at once; nothing here caches.

use crate::auth::{generate_secret, hash_secret, Principal, MIN_SECRET_LEN};
use crate::domain::clock::now_millis;
use crate::domain::{ClientId, DomainError, Grant};
use crate::domain::{ClientRecord, ClientStore, StoreError};

/// A client just created or given a new secret, with its secret in clear: the only
/// time it is known.
pub struct CreatedClient {
    /// The client id.
    pub id: ClientId,
    /// The secret, chosen or generated.
    pub secret: String,
}

/// Validates and stores a new client; generates a secret when none is chosen.
pub async fn create(
    caller: &Principal,
    store: &dyn ClientStore,
    id: ClientId,
    secret: Option<String>,
    grants: &[String],
) -> Result<CreatedClient, DomainError> {
    caller.require_admin()?;
    let grants = parse_grants(grants)?;
    let (secret, secret_hash) = secret_and_hash(secret).await?;
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

/// Every client, by id (admins only).
pub async fn list(
    caller: &Principal,
    store: &dyn ClientStore,
) -> Result<Vec<ClientRecord>, DomainError> {
    caller.require_admin()?;
    Ok(store.list_clients().await?)
}

/// Deletes a client, unless it is the caller or the last one with the grant `admin`.
pub async fn delete(
    caller: &Principal,
    store: &dyn ClientStore,
    id: &ClientId,
) -> Result<(), DomainError> {
    caller.require_admin()?;
    // An admin that deletes itself by mistake loses its own access mid-task; another
    // admin can always do it.
    if &caller.id == id {
        return Err(DomainError::Conflict(format!(
            "client {id} is the caller; another admin must delete it"
        )));
    }
    let clients = store.list_clients().await?;
    keep_an_admin(&clients, id, None)?;
    Ok(store.delete_client(id).await?)
}

/// Replaces a client's grants with `grants` (duplicates dropped), unless that takes
/// `admin` from the last admin; returns the client as it is now.
pub async fn set_grants(
    caller: &Principal,
    store: &dyn ClientStore,
    id: &ClientId,
    grants: &[String],
) -> Result<ClientRecord, DomainError> {
    caller.require_admin()?;
    let grants = parse_grants(grants)?;
    change_grants(store, id, |_| Ok(grants)).await
}

/// Adds `grants` to those a client holds (one it holds already is kept once).
pub async fn add_grants(
    caller: &Principal,
    store: &dyn ClientStore,
    id: &ClientId,
    grants: &[String],
) -> Result<ClientRecord, DomainError> {
    caller.require_admin()?;
    let added = parse_grants(grants)?;
    change_grants(store, id, |held| {
        Ok(held.iter().cloned().chain(added).collect())
    })
    .await
}

/// Takes `grants` from a client, unless that takes `admin` from the last admin. A
/// grant the client does not hold is refused, so a misspelt one is not taken for done.
pub async fn remove_grants(
    caller: &Principal,
    store: &dyn ClientStore,
    id: &ClientId,
    grants: &[String],
) -> Result<ClientRecord, DomainError> {
    caller.require_admin()?;
    let removed = parse_grants(grants)?;
    change_grants(store, id, |held| {
        if let Some(missing) = removed.iter().find(|grant| !held.contains(grant)) {
            return Err(DomainError::invalid(format!(
                "client {id} does not hold the grant {missing}"
            )));
        }
        Ok(held
            .iter()
            .filter(|grant| !removed.contains(grant))
            .cloned()
            .collect())
    })
    .await
}

/// Gives a client a new secret, chosen or generated: its old secret, and the login
/// tokens issued with it, are refused from now on.
pub async fn rotate(
    caller: &Principal,
    store: &dyn ClientStore,
    id: &ClientId,
    secret: Option<String>,
) -> Result<CreatedClient, DomainError> {
    caller.require_admin()?;
    let (secret, secret_hash) = secret_and_hash(secret).await?;
    store.set_client_secret(id, &secret_hash).await?;
    Ok(CreatedClient {
        id: id.clone(),
        secret,
    })
}

/// Reads the client's grants, computes the new ones and stores them, under the
/// last-admin rule.
async fn change_grants(
    store: &dyn ClientStore,
    id: &ClientId,
    change: impl FnOnce(&[Grant]) -> Result<Vec<Grant>, DomainError>,
) -> Result<ClientRecord, DomainError> {
    let clients = store.list_clients().await?;
    let current = find(&clients, id)?;
    let mut grants = Vec::new();
    for grant in change(&current.grants)? {
        if !grants.contains(&grant) {
            grants.push(grant);
        }
    }
    keep_an_admin(&clients, id, Some(&grants))?;
    store.set_client_grants(id, &grants).await?;
    Ok(ClientRecord {
        grants,
        ..current.clone()
    })
}

fn find<'a>(clients: &'a [ClientRecord], id: &ClientId) -> Result<&'a ClientRecord, DomainError> {
    clients
        .iter()
        .find(|client| &client.id == id)
        .ok_or_else(|| DomainError::NotFound(format!("client {id}")))
}

/// Refuses to leave the store without a client holding `admin` when client `id` is
/// one now and would be deleted (`grants_after` is `None`) or left with
/// `grants_after`: without an admin, nobody could create, change or delete clients
/// through the API again. `NotFound` when there is no client `id`.
///
/// The check reads the clients before the write, so two admins taken away at the
/// same moment, each while the other still held `admin`, can both pass; the CLI
/// (`hopper clients add ... --grant admin`) recovers from that.
fn keep_an_admin(
    clients: &[ClientRecord],
    id: &ClientId,
    grants_after: Option<&[Grant]>,
) -> Result<(), DomainError> {
    let is_admin = |grants: &[Grant]| grants.contains(&Grant::Admin);
    let client = find(clients, id)?;
    let stays_admin = grants_after.is_some_and(is_admin);
    let another_admin = clients
        .iter()
        .any(|other| &other.id != id && is_admin(&other.grants));
    if is_admin(&client.grants) && !stays_admin && !another_admin {
        let doing = match grants_after {
            None => "deleting it",
            Some(_) => "taking its grant admin",
        };
        return Err(DomainError::Conflict(format!(
            "client {id} is the last admin; create another admin before {doing}"
        )));
    }
    Ok(())
}

fn parse_grants(grants: &[String]) -> Result<Vec<Grant>, DomainError> {
    grants.iter().map(|g| g.parse::<Grant>()).collect()
}

/// The secret (chosen, checked, or generated) and the hash to store.
async fn secret_and_hash(secret: Option<String>) -> Result<(String, String), DomainError> {
    let Some(secret) = secret else {
        return Ok(generate_secret());
    };
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
    Ok((secret, hash))
}

//! Issuing, listing and deleting the AWS access keys a client signs SigV4 requests
//! with: one path for the admin API and the CLI, so the rules (admins only, the
//! secret shown once and stored only sealed) hold whichever way a key comes or goes.
//!
//! Nothing here caches: a deletion is announced by the store, and the caller
//! forgets the client in its own authenticator at once.

use base64::Engine;
use rand::{Rng, RngCore};

use super::sealing::SecretKey;
use super::Principal;
use crate::domain::clock::{now_millis, Millis};
use crate::domain::{AccessKeyId, AwsKeyRecord, ClientId, DomainError, Store, StoreError};

/// What every access key id Hopper issues begins with, as AWS's begin with `AKIA`:
/// it tells at a glance where a key comes from.
pub const ACCESS_KEY_ID_PREFIX: &str = "HOPR";
/// Random characters after the prefix: 16 of base32's 32, 80 bits, so ids never
/// collide in practice (a collision is retried anyway).
const ACCESS_KEY_ID_RANDOM: usize = 16;
/// Base32's alphabet (RFC 4648), as AWS's access key ids use it.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Random bytes of a secret: 30 bytes are 40 base64 characters, the length of
/// AWS's secret access keys, 240 bits.
const SECRET_BYTES: usize = 30;
/// Attempts at an unused access key id before giving up.
const ISSUE_ATTEMPTS: usize = 3;

/// Why a key was not issued.
#[derive(Debug, thiserror::Error)]
pub enum AwsKeyError {
    /// No key to seal secrets under (PostgreSQL and Redis without one configured):
    /// nothing can be issued until an operator sets one on every node (503).
    #[error("AWS access keys need a secret key to seal their secrets: set HOPPER_SECRET_KEY or auth.secret_key to the base64 of 32 random bytes (`openssl rand -base64 32`), the same on every node")]
    NoSecretKey,
    /// The rules or the store refused.
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// A key just issued, with its secret in clear: the only time it is known.
pub struct IssuedAwsKey {
    /// The access key id.
    pub access_key_id: AccessKeyId,
    /// The secret access key.
    pub secret_access_key: String,
    /// When it was issued.
    pub created_at: Millis,
}

/// Issues a new access key to client `client` (admins only); its secret is stored
/// sealed under `secret_key`.
pub async fn issue(
    caller: &Principal,
    store: &dyn Store,
    secret_key: Option<&SecretKey>,
    client: &ClientId,
) -> Result<IssuedAwsKey, AwsKeyError> {
    caller.require_admin()?;
    let secret_key = secret_key.ok_or(AwsKeyError::NoSecretKey)?;
    let secret_access_key = generate_secret();
    let created_at = now_millis();
    for _ in 0..ISSUE_ATTEMPTS {
        let access_key_id = generate_access_key_id();
        let record = AwsKeyRecord {
            sealed_secret: secret_key.seal(&access_key_id, &secret_access_key),
            access_key_id: access_key_id.clone(),
            client_id: client.clone(),
            created_at,
        };
        match store.create_aws_key(&record).await {
            Ok(()) => {
                return Ok(IssuedAwsKey {
                    access_key_id,
                    secret_access_key,
                    created_at,
                })
            }
            Err(StoreError::AwsKeyExists(_)) => continue,
            Err(error) => return Err(DomainError::from(error).into()),
        }
    }
    Err(DomainError::Store(StoreError::Unavailable(
        "no unused access key id was drawn".into(),
    ))
    .into())
}

/// The keys of client `client`, oldest first (admins only); `NotFound` for an unknown client.
pub async fn list(
    caller: &Principal,
    store: &dyn Store,
    client: &ClientId,
) -> Result<Vec<AwsKeyRecord>, DomainError> {
    caller.require_admin()?;
    if store.client(client).await?.is_none() {
        return Err(DomainError::NotFound(format!("client {client}")));
    }
    Ok(store.list_aws_keys(client).await?)
}

/// Deletes key `id` of client `client` (admins only); `NotFound` when the client
/// holds no such key.
pub async fn delete(
    caller: &Principal,
    store: &dyn Store,
    client: &ClientId,
    id: &AccessKeyId,
) -> Result<(), DomainError> {
    caller.require_admin()?;
    Ok(store.delete_aws_key(client, id).await?)
}

fn generate_access_key_id() -> AccessKeyId {
    let mut rng = rand::thread_rng();
    let random: String = (0..ACCESS_KEY_ID_RANDOM)
        .map(|_| BASE32[rng.gen_range(0..BASE32.len())] as char)
        .collect();
    AccessKeyId::parse(&format!("{ACCESS_KEY_ID_PREFIX}{random}"))
        .expect("a generated access key id is well-formed")
}

fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_and_secrets_look_like_aws_ones() {
        let id = generate_access_key_id();
        assert_eq!(id.as_str().len(), 20);
        assert!(id.as_str().starts_with("HOPR"));
        assert!(id.as_str()[4..].bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(generate_access_key_id(), id);
        let secret = generate_secret();
        assert_eq!(secret.len(), 40);
        assert!(secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    }
}

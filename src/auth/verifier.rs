//! Verifies credentials with a cache: the first request of a client with a secret
//! pays for the hash check (argon2 for chosen secrets, on the blocking pool); later
//! ones compare a SHA-256 digest in constant time. Forgetting a client revokes it at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::{verify_secret, Credentials, Principal};
use crate::domain::ClientId;
use crate::store::{Store, StoreError};

/// Concurrent slow hash checks; a flood of wrong secrets then costs two cores' worth at most.
const CONCURRENT_HASH_CHECKS: usize = 2;
/// Distinct verified secrets remembered per client; old ones are forgotten first.
const SECRETS_PER_CLIENT: usize = 4;

/// Why credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown or wrong credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct CachedClient {
    principal: Principal,
    secret_digests: Vec<[u8; 32]>,
}

/// Verifies credentials and remembers verified ones.
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<String, CachedClient>>,
    /// Bumped by every `forget`, so a verification that read the store before a
    /// deletion cannot put the deleted client back into the cache.
    generation: AtomicU64,
    hash_checks: Semaphore,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Authenticator {
    /// An authenticator over the clients of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Authenticator {
            store,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            hash_checks: Semaphore::new(CONCURRENT_HASH_CHECKS),
        }
    }

    /// The principal behind `credentials`, or `Unauthorized`.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let secret_digest = digest(&credentials.secret);
        if let Some(principal) = self.cached(&credentials.client_id, &secret_digest) {
            return Ok(principal);
        }
        let id = ClientId::parse(&credentials.client_id).map_err(|_| AuthError::Unauthorized)?;
        let generation = self.generation.load(Ordering::Acquire);
        let record = self
            .store
            .client(&id)
            .await?
            .ok_or(AuthError::Unauthorized)?;
        let verified = {
            let _permit = self
                .hash_checks
                .acquire()
                .await
                .map_err(|_| AuthError::Unauthorized)?;
            // Concurrent first requests of one client queue here; the first one's success
            // is then a cache hit for the rest instead of another argon2 run each.
            if let Some(principal) = self.cached(&credentials.client_id, &secret_digest) {
                return Ok(principal);
            }
            let (secret, hash) = (credentials.secret.clone(), record.secret_hash.clone());
            tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
                .await
                .unwrap_or(false)
        };
        if !verified {
            return Err(AuthError::Unauthorized);
        }
        let principal = Principal {
            id: record.id,
            grants: record.grants.into(),
        };
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            let entry = cache
                .entry(credentials.client_id.clone())
                .or_insert_with(|| CachedClient {
                    principal: principal.clone(),
                    secret_digests: Vec::new(),
                });
            if entry.secret_digests.len() >= SECRETS_PER_CLIENT {
                entry.secret_digests.remove(0);
            }
            entry.secret_digests.push(secret_digest);
        }
        Ok(principal)
    }

    fn cached(&self, client_id: &str, secret_digest: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let client = cache.get(client_id)?;
        let matched = client
            .secret_digests
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(secret_digest)
            });
        bool::from(matched).then(|| client.principal.clone())
    }

    /// Drops a client from the cache, e.g. after it was deleted; its next request re-checks the store.
    pub fn forget(&self, id: &ClientId) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.remove(id.as_str());
    }
}

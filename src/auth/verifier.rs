//! Verifies credentials with a cache: the first request of a client with a secret
//! pays for the hash check (argon2 for chosen secrets, on the blocking pool); later
//! ones compare a SHA-256 digest in constant time. Forgetting a client revokes it at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::{verify_secret, Credentials, Principal};
use crate::domain::{ClientId, Revocation};
use crate::domain::{Store, StoreError};

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

/// How long a cached client is trusted before the store is asked again whether it
/// still exists with the same secret: bounds how long a deletion made outside this
/// process (the CLI, another node's lost notification) goes unseen.
const REVALIDATE_AFTER: Duration = Duration::from_secs(1);

struct CachedClient {
    principal: Principal,
    /// The stored hash the digests were verified against; a changed hash voids them.
    secret_hash: String,
    secret_digests: Vec<[u8; 32]>,
    checked_at: Instant,
}

enum Cached {
    Fresh(Principal),
    /// Verified, but longer ago than [`REVALIDATE_AFTER`]: confirm against the store.
    Stale {
        secret_hash: String,
    },
    Miss,
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
        let generation = self.generation.load(Ordering::Acquire);
        let stale_hash = match self.cached(&credentials.client_id, &secret_digest) {
            Cached::Fresh(principal) => return Ok(principal),
            Cached::Stale { secret_hash } => Some(secret_hash),
            Cached::Miss => None,
        };
        let id = ClientId::parse(&credentials.client_id).map_err(|_| AuthError::Unauthorized)?;
        let Some(record) = self.store.client(&id).await? else {
            // No generation bump here: with no stored client, no verification in flight
            // can succeed for this id, and bumping would let a stream of unknown ids keep
            // every other client from being cached.
            if stale_hash.is_some() {
                self.cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&credentials.client_id);
            }
            return Err(AuthError::Unauthorized);
        };
        if stale_hash.as_deref() == Some(record.secret_hash.as_str()) {
            return Ok(self.remember(credentials, secret_digest, record, generation));
        }
        let verified = {
            let _permit = self
                .hash_checks
                .acquire()
                .await
                .map_err(|_| AuthError::Unauthorized)?;
            // Concurrent first requests of one client queue here; the first one's success
            // is then a cache hit for the rest instead of another argon2 run each.
            if let Cached::Fresh(principal) = self.cached(&credentials.client_id, &secret_digest) {
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
        Ok(self.remember(credentials, secret_digest, record, generation))
    }

    /// Caches a verified secret (unless a revocation happened since `generation`).
    fn remember(
        &self,
        credentials: &Credentials,
        secret_digest: [u8; 32],
        record: crate::domain::ClientRecord,
        generation: u64,
    ) -> Principal {
        let principal = Principal {
            id: record.id,
            grants: record.grants.into(),
        };
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return principal;
        }
        let entry = cache
            .entry(credentials.client_id.clone())
            .or_insert_with(|| CachedClient {
                principal: principal.clone(),
                secret_hash: record.secret_hash.clone(),
                secret_digests: Vec::new(),
                checked_at: Instant::now(),
            });
        if entry.secret_hash != record.secret_hash {
            entry.secret_digests.clear();
            entry.secret_hash = record.secret_hash;
        }
        entry.principal = principal.clone();
        entry.checked_at = Instant::now();
        if !entry.secret_digests.contains(&secret_digest) {
            if entry.secret_digests.len() >= SECRETS_PER_CLIENT {
                entry.secret_digests.remove(0);
            }
            entry.secret_digests.push(secret_digest);
        }
        principal
    }

    fn cached(&self, client_id: &str, secret_digest: &[u8; 32]) -> Cached {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let Some(client) = cache.get(client_id) else {
            return Cached::Miss;
        };
        let matched = client
            .secret_digests
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(secret_digest)
            });
        if !bool::from(matched) {
            Cached::Miss
        } else if client.checked_at.elapsed() > REVALIDATE_AFTER {
            Cached::Stale {
                secret_hash: client.secret_hash.clone(),
            }
        } else {
            Cached::Fresh(client.principal.clone())
        }
    }

    /// Forgets each client the store announces as deleted, on this node or another.
    pub async fn follow_revocations(
        self: Arc<Self>,
        mut revocations: tokio::sync::broadcast::Receiver<Revocation>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match revocations.recv().await {
                Ok(Revocation::Client(id)) => self.forget_id(&id),
                Ok(Revocation::All) | Err(RecvError::Lagged(_)) => self.forget_all(),
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn forget_id(&self, id: &str) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.remove(id);
    }

    /// Empties the cache: every client's next request re-checks the store.
    pub fn forget_all(&self) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
    }

    /// Drops a client from the cache, e.g. after it was deleted; its next request re-checks the store.
    pub fn forget(&self, id: &ClientId) {
        self.forget_id(id.as_str());
    }
}

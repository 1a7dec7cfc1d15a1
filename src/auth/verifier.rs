//! Verifies credentials with a cache: the first request of a client with a secret
//! pays for the hash check (argon2 for chosen secrets, on the blocking pool); later
//! ones compare a SHA-256 digest in constant time. Forgetting a client revokes it at once.
//!
//! A refusal costs what a wrong chosen secret costs (one argon2 check), whether the
//! id exists or not, so timing does not tell which ids exist.
//!
//! SigV4 requests (see [`super::sigv4`]) go through the same cache and limits: a
//! key's secret is opened once, and the signing key of each day and region it signs
//! for is kept, so a request costs two HMACs and no store read while the key is fresh.
//! SigV4 answers which key ids exist (`InvalidClientTokenId`), as AWS does: an
//! access key id is no secret.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::limiter::{FailureLimiter, Suspect};
use super::sealing::SecretKey;
use super::sigv4::{self, Challenge, SigV4Error, SignedRequest};
use super::tokens::{fingerprint, Issued, Tokens};
use super::{hash_secret, verify_secret, Credentials, Principal};
use crate::domain::{AccessKeyId, ClientId, ClientRecord, Revocation};
use crate::domain::{Store, StoreError};

/// Concurrent slow hash checks; a flood of wrong secrets then costs two cores' worth at most.
const CONCURRENT_HASH_CHECKS: usize = 2;
/// Distinct verified secrets remembered per client; old ones are forgotten first.
const SECRETS_PER_CLIENT: usize = 4;
/// Signing keys (one per day and region) remembered per access key; a client signs
/// for one region or a few, and a day's key serves for a day, so the oldest go first.
const SIGNING_KEYS_PER_ACCESS_KEY: usize = 4;
/// How hashes of chosen secrets begin (argon2id, PHC strings).
const ARGON2_PREFIX: &str = "$argon2";

/// The hash a refusal is checked against when there is no real one (see
/// [`Authenticator::spend_a_decoy_check`]); made on first use, on the blocking pool.
static DECOY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_secret("a secret that no client holds").unwrap_or_default());

/// Why credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown or wrong credentials.
    #[error("unauthorized")]
    Unauthorized,
    /// Too many failures for this client id or from this address, lately: refused
    /// unchecked for this long.
    #[error("too many failed credential checks")]
    TooManyFailures(Duration),
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
    /// [`fingerprint`] of `secret_hash`, which a token must carry.
    fingerprint: String,
    secret_digests: Vec<[u8; 32]>,
    checked_at: Instant,
}

/// An AWS access key verified lately: whom it acts for, and what it signs with.
struct CachedAwsKey {
    /// Its client, to forget the key with the client.
    client_id: ClientId,
    principal: Principal,
    /// As stored: opened again for a new day or region, without a store read.
    sealed_secret: Vec<u8>,
    /// `(date, region, signing key)`, newest last.
    signing_keys: Vec<(String, String, [u8; 32])>,
    checked_at: Instant,
}

/// What the cache knows of an access key, for one request's day and region.
enum CachedKey {
    /// Checked within [`REVALIDATE_AFTER`], its signing key for the day and region derived.
    Signs {
        principal: Principal,
        signing_key: [u8; 32],
    },
    /// Checked within [`REVALIDATE_AFTER`] (at `checked_at`), but not yet signing for
    /// this day or region: its secret is opened again, without a store read.
    Opens {
        principal: Principal,
        sealed_secret: Vec<u8>,
        checked_at: Instant,
    },
    /// Checked longer ago, or never: ask the store.
    Unknown,
}

enum Cached {
    /// Verified recently: the principal and the stored hash.
    Fresh(Principal, String),
    /// Verified, but longer ago than [`REVALIDATE_AFTER`]: confirm against the store.
    Stale {
        secret_hash: String,
    },
    Miss,
}

/// Verifies credentials and remembers verified ones.
pub struct Authenticator {
    store: Arc<dyn Store>,
    tokens: Tokens,
    failures: FailureLimiter,
    cache: RwLock<HashMap<String, CachedClient>>,
    /// AWS access keys verified lately, by id.
    aws_keys: RwLock<HashMap<AccessKeyId, CachedAwsKey>>,
    /// The key AWS secrets are sealed under; without one, no SigV4 request passes.
    secret_key: Option<SecretKey>,
    /// Bumped by every `forget`, so a verification that read the store before a
    /// deletion cannot put the deleted client back into the cache.
    generation: AtomicU64,
    hash_checks: Semaphore,
}

/// Whom a failure counts against: the id the credentials claim, and the address.
fn suspects(client_id: Option<&str>, source: Option<IpAddr>) -> Vec<Suspect> {
    client_id
        .map(|id| Suspect::Client(id.to_owned()))
        .into_iter()
        .chain(source.map(Suspect::Address))
        .collect()
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Authenticator {
    /// An authenticator over the clients of `store`, reading and issuing `tokens`,
    /// refusing those that failed too often lately (`failures`).
    pub fn new(store: Arc<dyn Store>, tokens: Tokens, failures: FailureLimiter) -> Self {
        Authenticator {
            store,
            tokens,
            failures,
            cache: RwLock::new(HashMap::new()),
            aws_keys: RwLock::new(HashMap::new()),
            secret_key: None,
            generation: AtomicU64::new(0),
            hash_checks: Semaphore::new(CONCURRENT_HASH_CHECKS),
        }
    }

    /// The same, opening AWS secrets with `secret_key` (see [`super::sealing`]).
    pub fn with_secret_key(mut self, secret_key: Option<SecretKey>) -> Self {
        self.secret_key = secret_key;
        self
    }

    /// The key AWS secrets are sealed under, for issuing keys; `None` when none is configured.
    pub fn secret_key(&self) -> Option<&SecretKey> {
        self.secret_key.as_ref()
    }

    /// The principal behind `credentials` sent from `source`, or why not.
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        source: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let suspects = suspects(credentials.claimed_id(), source);
        self.limited(&suspects, async {
            match credentials {
                Credentials::Secret { client_id, secret } => {
                    Ok(self.check_secret(client_id, secret).await?.0)
                }
                Credentials::Token(token) => self.check_token(token).await,
            }
        })
        .await
    }

    /// The principal of the client whose AWS access key signed `request` (SigV4,
    /// see [`super::sigv4`]), sent from `source`, or why not: the same principal,
    /// with the same grants, as its secret or a token gives.
    pub async fn authenticate_sigv4(
        &self,
        request: &SignedRequest<'_>,
        source: Option<IpAddr>,
    ) -> Result<Principal, SigV4Error> {
        let authorization = sigv4::parse_authorization(request)?;
        let suspects: Vec<Suspect> =
            std::iter::once(Suspect::AccessKey(authorization.access_key_id.to_owned()))
                .chain(source.map(Suspect::Address))
                .collect();
        if let Some(wait) = self.failures.locked(&suspects) {
            return Err(SigV4Error::TooManyFailures(wait));
        }
        let checked = async {
            let challenge = sigv4::challenge(request, &authorization, self.store.now())?;
            let id = authorization.key_id().ok_or(SigV4Error::UnknownKey)?;
            self.check_signature(&id, authorization.date, authorization.region, &challenge)
                .await
        }
        .await;
        if checked.as_ref().is_err_and(SigV4Error::counts_as_failure) {
            self.failures.record(&suspects);
        }
        checked
    }

    /// The principal of access key `id` if its signing key for `date` and `region`
    /// signed `challenge`.
    async fn check_signature(
        &self,
        id: &AccessKeyId,
        date: &str,
        region: &str,
        challenge: &Challenge,
    ) -> Result<Principal, SigV4Error> {
        let generation = self.generation.load(Ordering::Acquire);
        let (principal, client_id, sealed_secret, checked_at) =
            match self.cached_aws_key(id, date, region) {
                CachedKey::Signs {
                    principal,
                    signing_key,
                } => {
                    return match challenge.is_signed_by(&signing_key) {
                        true => Ok(principal),
                        false => Err(SigV4Error::SignatureMismatch),
                    };
                }
                // What the store said then still stands, until it is REVALIDATE_AFTER old.
                CachedKey::Opens {
                    principal,
                    sealed_secret,
                    checked_at,
                } => (principal.clone(), principal.id, sealed_secret, checked_at),
                CachedKey::Unknown => {
                    let Some(key) = self.store.aws_key(id).await? else {
                        self.aws_keys
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(id);
                        return Err(SigV4Error::UnknownKey);
                    };
                    let client = self
                        .store
                        .client(&key.client_id)
                        .await?
                        .ok_or(SigV4Error::UnknownKey)?;
                    let principal = Principal {
                        id: client.id,
                        grants: client.grants.into(),
                    };
                    (principal, key.client_id, key.sealed_secret, Instant::now())
                }
            };
        let secret = self
            .secret_key
            .as_ref()
            .and_then(|secret_key| secret_key.open(id, &sealed_secret))
            .ok_or_else(|| {
                tracing::error!(
                    access_key_id = %id,
                    configured = self.secret_key.is_some(),
                    "cannot open the secret of an AWS access key: is auth.secret_key (HOPPER_SECRET_KEY) the one it was issued under?"
                );
                SigV4Error::CannotOpenSecret
            })?;
        let signing_key = sigv4::signing_key(&secret, date, region, sigv4::SERVICE);
        drop(secret);
        self.remember_aws_key(
            id,
            CachedAwsKey {
                client_id,
                principal: principal.clone(),
                sealed_secret,
                signing_keys: vec![(date.to_owned(), region.to_owned(), signing_key)],
                checked_at,
            },
            generation,
        );
        match challenge.is_signed_by(&signing_key) {
            true => Ok(principal),
            false => Err(SigV4Error::SignatureMismatch),
        }
    }

    fn cached_aws_key(&self, id: &AccessKeyId, date: &str, region: &str) -> CachedKey {
        let keys = self.aws_keys.read().unwrap_or_else(|e| e.into_inner());
        let Some(key) = keys
            .get(id)
            .filter(|key| key.checked_at.elapsed() <= REVALIDATE_AFTER)
        else {
            return CachedKey::Unknown;
        };
        let signing_key = key
            .signing_keys
            .iter()
            .find(|(d, r, _)| d == date && r == region);
        match signing_key {
            Some((_, _, signing_key)) => CachedKey::Signs {
                principal: key.principal.clone(),
                signing_key: *signing_key,
            },
            None => CachedKey::Opens {
                principal: key.principal.clone(),
                sealed_secret: key.sealed_secret.clone(),
                checked_at: key.checked_at,
            },
        }
    }

    /// Caches `fresh` (unless a revocation happened since `generation`), keeping
    /// the signing keys already derived from the same stored secret.
    fn remember_aws_key(&self, id: &AccessKeyId, mut fresh: CachedAwsKey, generation: u64) {
        let mut keys = self.aws_keys.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if let Some(known) = keys.remove(id) {
            if known.sealed_secret == fresh.sealed_secret {
                fresh.checked_at = fresh.checked_at.max(known.checked_at);
                let new = fresh.signing_keys.pop();
                fresh.signing_keys = known.signing_keys;
                fresh.signing_keys.extend(new);
                let excess = fresh
                    .signing_keys
                    .len()
                    .saturating_sub(SIGNING_KEYS_PER_ACCESS_KEY);
                fresh.signing_keys.drain(..excess);
            }
        }
        keys.insert(id.clone(), fresh);
    }

    /// A token for the client `client_id`, logging in from `source`, if `secret` is its secret.
    pub async fn login(
        &self,
        client_id: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<Issued, AuthError> {
        let suspects = suspects(Some(client_id), source);
        let (principal, secret_hash) = self
            .limited(&suspects, self.check_secret(client_id, secret))
            .await?;
        self.tokens
            .issue(&principal.id, &secret_hash, self.store.now())
            .map_err(|error| {
                tracing::error!(%error, "cannot sign a token");
                AuthError::Unauthorized
            })
    }

    /// Runs `check` unless one of `suspects` is locked out; counts its refusal.
    async fn limited<T>(
        &self,
        suspects: &[Suspect],
        check: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        if let Some(wait) = self.failures.locked(suspects) {
            return Err(AuthError::TooManyFailures(wait));
        }
        let checked = check.await;
        if matches!(checked, Err(AuthError::Unauthorized)) {
            self.failures.record(suspects);
        }
        checked
    }

    /// The principal behind a login token, if the token is valid and its client
    /// still exists with the secret it had when the token was issued.
    async fn check_token(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self
            .tokens
            .check(token, self.store.now())
            .ok_or(AuthError::Unauthorized)?;
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(principal) = self.cached_for_token(&claims.sub, &claims.sfp) {
            return Ok(principal);
        }
        let id = ClientId::parse(&claims.sub).map_err(|_| AuthError::Unauthorized)?;
        let record = self
            .store
            .client(&id)
            .await?
            .ok_or(AuthError::Unauthorized)?;
        if fingerprint(&record.secret_hash) != claims.sfp {
            return Err(AuthError::Unauthorized);
        }
        Ok(self.remember(&claims.sub, None, record, generation))
    }

    /// The principal and stored hash of `client_id` if `secret` is its secret.
    async fn check_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<(Principal, String), AuthError> {
        let secret_digest = digest(secret);
        let generation = self.generation.load(Ordering::Acquire);
        let stale_hash = match self.cached(client_id, &secret_digest) {
            Cached::Fresh(principal, hash) => return Ok((principal, hash)),
            Cached::Stale { secret_hash } => Some(secret_hash),
            Cached::Miss => None,
        };
        let id = ClientId::parse(client_id).map_err(|_| AuthError::Unauthorized)?;
        let Some(record) = self.store.client(&id).await? else {
            // No generation bump here: with no stored client, no verification in flight
            // can succeed for this id, and bumping would let a stream of unknown ids keep
            // every other client from being cached.
            if stale_hash.is_some() {
                self.cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(client_id);
            }
            self.spend_a_decoy_check(secret).await;
            return Err(AuthError::Unauthorized);
        };
        if stale_hash.as_deref() == Some(record.secret_hash.as_str()) {
            let hash = record.secret_hash.clone();
            return Ok((
                self.remember(client_id, Some(secret_digest), record, generation),
                hash,
            ));
        }
        let verified = {
            let _permit = self
                .hash_checks
                .acquire()
                .await
                .map_err(|_| AuthError::Unauthorized)?;
            // Concurrent first requests of one client queue here; the first one's success
            // is then a cache hit for the rest instead of another argon2 run each.
            if let Cached::Fresh(principal, hash) = self.cached(client_id, &secret_digest) {
                return Ok((principal, hash));
            }
            let (secret, hash) = (secret.to_owned(), record.secret_hash.clone());
            tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
                .await
                .unwrap_or(false)
        };
        if !verified {
            // A generated secret's hash checks in microseconds: pay the argon2 time a
            // chosen one costs, so the answer's timing tells nothing either.
            if !record.secret_hash.starts_with(ARGON2_PREFIX) {
                self.spend_a_decoy_check(secret).await;
            }
            return Err(AuthError::Unauthorized);
        }
        let hash = record.secret_hash.clone();
        Ok((
            self.remember(client_id, Some(secret_digest), record, generation),
            hash,
        ))
    }

    /// One argon2 check of `secret` against a hash no client holds, under the same
    /// limit as real checks: the cost of a refusal, paid where nothing was checked.
    async fn spend_a_decoy_check(&self, secret: &str) {
        let Ok(_permit) = self.hash_checks.acquire().await else {
            return;
        };
        let secret = secret.to_owned();
        let _ = tokio::task::spawn_blocking(move || verify_secret(&secret, &DECOY_HASH)).await;
    }

    /// Caches a verified client, with the digest of its secret when one was checked
    /// (unless a revocation happened since `generation`).
    fn remember(
        &self,
        client_id: &str,
        secret_digest: Option<[u8; 32]>,
        record: ClientRecord,
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
            .entry(client_id.to_owned())
            .or_insert_with(|| CachedClient {
                principal: principal.clone(),
                fingerprint: fingerprint(&record.secret_hash),
                secret_hash: record.secret_hash.clone(),
                secret_digests: Vec::new(),
                checked_at: Instant::now(),
            });
        if entry.secret_hash != record.secret_hash {
            entry.secret_digests.clear();
            entry.fingerprint = fingerprint(&record.secret_hash);
            entry.secret_hash = record.secret_hash;
        }
        entry.principal = principal.clone();
        entry.checked_at = Instant::now();
        if let Some(secret_digest) = secret_digest {
            if !entry.secret_digests.contains(&secret_digest) {
                if entry.secret_digests.len() >= SECRETS_PER_CLIENT {
                    entry.secret_digests.remove(0);
                }
                entry.secret_digests.push(secret_digest);
            }
        }
        principal
    }

    /// The cached principal of `client_id` if it was checked recently and its
    /// secret's fingerprint is still `token_fingerprint`.
    fn cached_for_token(&self, client_id: &str, token_fingerprint: &str) -> Option<Principal> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let client = cache.get(client_id)?;
        let fresh = client.checked_at.elapsed() <= REVALIDATE_AFTER;
        let same_secret = bool::from(
            client
                .fingerprint
                .as_bytes()
                .ct_eq(token_fingerprint.as_bytes()),
        );
        (fresh && same_secret).then(|| client.principal.clone())
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
            Cached::Fresh(client.principal.clone(), client.secret_hash.clone())
        }
    }

    /// Forgets each client the store announces as deleted or changed, on this node or another.
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
        drop(cache);
        // After the bump: a key cached before it goes here, one cached after it is refused.
        self.aws_keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, key| key.client_id.as_str() != id);
    }

    /// Empties the cache: every client's next request re-checks the store.
    pub fn forget_all(&self) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
        drop(cache);
        self.aws_keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drops a client from the cache, with its AWS access keys, e.g. after it or one of
    /// its keys was deleted; its next request re-checks the store.
    pub fn forget(&self, id: &ClientId) {
        self.forget_id(id.as_str());
    }
}

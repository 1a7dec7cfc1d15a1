//! Who is calling: credentials parsed from headers, verified against stored
//! hashes, and cached so argon2 runs once per client and secret.
//!
//! Never logs or stores a secret in clear; only hashes and SHA-256 digests.

pub mod clients;
mod credentials;
pub mod limiter;
mod secrets;
pub mod tokens;
mod verifier;

pub use credentials::Credentials;
pub use secrets::{generate_secret, hash_secret, verify_secret, MIN_SECRET_LEN};
pub use verifier::{AuthError, Authenticator};

use std::sync::Arc;

use crate::domain::grants::describe;
use crate::domain::{Action, ClientId, DomainError, Grant, ResourceKind};

/// An authenticated caller and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The client id.
    pub id: ClientId,
    /// Its grants.
    pub grants: Arc<[Grant]>,
}

impl Principal {
    /// Allows `action` on `kind` `name`, or says which grant is missing.
    pub fn authorize(
        &self,
        kind: ResourceKind,
        name: &str,
        action: Action,
    ) -> Result<(), DomainError> {
        if self.grants.iter().any(|g| g.allows(kind, name, action)) {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "needs grant {}",
                describe(kind, name, action)
            )))
        }
    }

    /// Allows any action on `kind` `name`: seeing a queue's or stream's details needs
    /// only some grant on it (seed 002's producers count too).
    pub fn authorize_any(&self, kind: ResourceKind, name: &str) -> Result<(), DomainError> {
        let allowed = [Action::Consume, Action::Produce, Action::Manage]
            .into_iter()
            .any(|action| self.grants.iter().any(|g| g.allows(kind, name, action)));
        if allowed {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "needs a grant on {}:{name}",
                kind.as_str()
            )))
        }
    }

    /// Whether `action` is allowed on every resource of `kind`, so a check by name
    /// (which may need a lookup first) can be skipped.
    pub fn may_on_every(&self, kind: ResourceKind, action: Action) -> bool {
        self.grants.iter().any(|g| g.allows_every(kind, action))
    }

    /// Allows only admins.
    pub fn require_admin(&self) -> Result<(), DomainError> {
        if self.grants.contains(&Grant::Admin) {
            Ok(())
        } else {
            Err(DomainError::Forbidden("needs grant admin".into()))
        }
    }
}

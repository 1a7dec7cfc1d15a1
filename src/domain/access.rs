//! The one access policy: what a caller may do, decided here for every edge (the
//! API, the configuration's routes, and whatever edge comes next). The services
//! take the caller with every operation and ask this policy first, so an edge
//! cannot reach an operation without the check.

use std::sync::Arc;

use super::grants::{describe, NamePattern};
use super::{Action, ClientId, DomainError, Grant, ResourceKind};

/// An authenticated caller and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The client id.
    pub id: ClientId,
    /// Its grants.
    pub grants: Arc<[Grant]>,
}

impl Principal {
    /// This node itself, for the work it does on its own (deliveries, sweeps):
    /// everything is allowed.
    pub fn node() -> Self {
        Principal {
            id: ClientId::node(),
            grants: Arc::from([Grant::Admin]),
        }
    }

    /// A caller without credentials where a deployment opens every resource of
    /// `kind` to anyone (it authenticates in front of Hopper): every action on
    /// every resource of that kind, nothing else.
    pub fn anonymous(kind: ResourceKind) -> Self {
        Principal {
            id: ClientId::anonymous(),
            grants: Arc::from([Grant::Scoped {
                kind,
                names: NamePattern::everything(),
                action: None,
            }]),
        }
    }

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

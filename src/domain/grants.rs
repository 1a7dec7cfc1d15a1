//! Grants: what a client may do, as `admin` or `<kind>:<name-pattern>:<action>`.

use std::fmt;
use std::str::FromStr;

use super::DomainError;

/// The kinds of resource a grant can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Work queues.
    Queue,
    /// Event streams.
    Stream,
    /// Asynchronous tasks.
    Task,
}

impl ResourceKind {
    /// The kind as grants spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Queue => "queue",
            ResourceKind::Stream => "stream",
            ResourceKind::Task => "task",
        }
    }
}

/// What a grant allows on its resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write: push, append, create a task.
    Produce,
    /// Read and settle: pop, receive, ack, nack, extend, stats.
    Consume,
    /// Change settings, purge, delete, redrive.
    Manage,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Manage => "manage",
        }
    }
}

/// One permission held by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything, including the admin API.
    Admin,
    /// `kind:pattern:action`; `None` stands for `*`.
    Scoped {
        /// The kind of resource.
        kind: ResourceKind,
        /// An exact name, or `None` for every name.
        name: Option<String>,
        /// The action, or `None` for every action.
        action: Option<Action>,
    },
}

impl Grant {
    /// Whether this grant allows `action` on the resource `kind` named `name`.
    /// Whether this grant allows `action` on every resource of `kind`, whatever its name.
    pub fn allows_every(&self, kind: ResourceKind, action: Action) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Scoped {
                kind: k,
                name: n,
                action: a,
            } => *k == kind && n.is_none() && a.is_none_or(|a| a == action),
        }
    }

    pub fn allows(&self, kind: ResourceKind, name: &str, action: Action) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Scoped {
                kind: k,
                name: n,
                action: a,
            } => {
                *k == kind
                    && n.as_deref().is_none_or(|n| n == name)
                    && a.is_none_or(|a| a == action)
            }
        }
    }
}

impl FromStr for Grant {
    type Err = DomainError;

    fn from_str(raw: &str) -> Result<Self, DomainError> {
        let invalid = || {
            DomainError::invalid(format!(
                "invalid grant {raw:?}: use admin or <queue|stream|task>:<name|*>:<produce|consume|manage|*>"
            ))
        };
        if raw == "admin" {
            return Ok(Grant::Admin);
        }
        let mut parts = raw.split(':');
        let (Some(kind), Some(name), Some(action), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let kind = match kind {
            "queue" => ResourceKind::Queue,
            "stream" => ResourceKind::Stream,
            "task" => ResourceKind::Task,
            _ => return Err(invalid()),
        };
        let name = match name {
            "*" => None,
            exact => Some(
                super::QueueName::parse(exact)
                    .map_err(|_| invalid())?
                    .as_str()
                    .to_owned(),
            ),
        };
        let action = match action {
            "*" => None,
            "produce" => Some(Action::Produce),
            "consume" => Some(Action::Consume),
            "manage" => Some(Action::Manage),
            _ => return Err(invalid()),
        };
        Ok(Grant::Scoped { kind, name, action })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Admin => f.write_str("admin"),
            Grant::Scoped { kind, name, action } => write!(
                f,
                "{}:{}:{}",
                kind.as_str(),
                name.as_deref().unwrap_or("*"),
                action.map_or("*", Action::as_str)
            ),
        }
    }
}

/// Describes a refused action for the 403 detail, e.g. `queue:orders:produce`.
pub fn describe(kind: ResourceKind, name: &str, action: Action) -> String {
    format!("{}:{}:{}", kind.as_str(), name, action.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_and_match() {
        for text in ["admin", "queue:orders:produce", "stream:*:*", "task:jobs:*"] {
            let grant: Grant = text.parse().unwrap();
            assert_eq!(grant.to_string(), text);
        }
        let grant: Grant = "queue:orders:produce".parse().unwrap();
        assert!(grant.allows(ResourceKind::Queue, "orders", Action::Produce));
        assert!(!grant.allows(ResourceKind::Queue, "orders", Action::Consume));
        assert!(!grant.allows(ResourceKind::Queue, "other", Action::Produce));
        assert!(!grant.allows(ResourceKind::Stream, "orders", Action::Produce));
        for bad in [
            "",
            "queue",
            "queue:orders",
            "queue:a b:produce",
            "bucket:x:produce",
            "queue:x:eat",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<Grant>().is_err(), "{bad:?} accepted");
        }
    }
}

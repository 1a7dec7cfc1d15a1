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
    /// Routes of the configuration file whose action names no queue (a `forward`
    /// without a compensation queue), by their configured path.
    Route,
}

impl ResourceKind {
    /// The kind as grants spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Queue => "queue",
            ResourceKind::Stream => "stream",
            ResourceKind::Task => "task",
            ResourceKind::Route => "route",
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
    /// Call a route.
    Call,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Manage => "manage",
            Action::Call => "call",
        }
    }
}

/// The names a grant covers: one name, or a glob whose `*` matches any run of name
/// characters (`orders-*`, `*.eu`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// Every name.
    pub fn everything() -> Self {
        NamePattern("*".into())
    }

    /// A pattern of name characters and `*`; a run of `*` is one `*`.
    fn parse(raw: &str) -> Option<Self> {
        if !raw.contains('*') {
            return super::QueueName::parse(raw)
                .ok()
                .map(|name| NamePattern(name.as_str().to_owned()));
        }
        let valid = raw.len() <= super::names::MAX_NAME_LEN
            && raw
                .chars()
                .all(|c| c == '*' || super::names::is_name_char(c));
        valid.then(|| NamePattern(collapse_stars(raw)))
    }

    /// A pattern of route paths: `/` first, then visible ASCII but `:`, where `*`
    /// matches any run of characters, `/` included (`/hooks/*`).
    fn parse_path(raw: &str) -> Option<Self> {
        let valid = raw.starts_with('/')
            && raw.len() <= MAX_ROUTE_PATTERN_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        valid.then(|| NamePattern(collapse_stars(raw)))
    }

    /// Whether the pattern covers every name.
    pub fn is_everything(&self) -> bool {
        self.0 == "*"
    }

    /// Whether `name` is covered. Greedy matching with one backtrack point (the
    /// last `*`) is exact for globs with `*` alone, in time linear in practice.
    pub fn matches(&self, name: &str) -> bool {
        let (pattern, name) = (self.0.as_bytes(), name.as_bytes());
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            if p < pattern.len() && pattern[p] == b'*' {
                star = Some((p, n));
                p += 1;
            } else if p < pattern.len() && pattern[p] == name[n] {
                p += 1;
                n += 1;
            } else if let Some((star_p, star_n)) = star {
                // The last `*` takes one more character; retry from there.
                star = Some((star_p, star_n + 1));
                p = star_p + 1;
                n = star_n + 1;
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }
}

/// Longest route pattern a grant holds.
const MAX_ROUTE_PATTERN_LEN: usize = 1024;

/// `raw` with each run of `*` made one: the same names match, in less time.
fn collapse_stars(raw: &str) -> String {
    let mut collapsed = String::with_capacity(raw.len());
    for c in raw.chars() {
        if !(c == '*' && collapsed.ends_with('*')) {
            collapsed.push(c);
        }
    }
    collapsed
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One permission held by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything, including the admin API.
    Admin,
    /// `kind:pattern:action`.
    Scoped {
        /// The kind of resource.
        kind: ResourceKind,
        /// The names covered.
        names: NamePattern,
        /// The action, or `None` for every action.
        action: Option<Action>,
    },
}

impl Grant {
    /// Whether this grant allows `action` on every resource of `kind`, whatever its name.
    pub fn allows_every(&self, kind: ResourceKind, action: Action) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Scoped {
                kind: k,
                names,
                action: a,
            } => *k == kind && names.is_everything() && a.is_none_or(|a| a == action),
        }
    }

    /// Whether this grant allows `action` on the resource `kind` named `name`.
    pub fn allows(&self, kind: ResourceKind, name: &str, action: Action) -> bool {
        match self {
            Grant::Admin => true,
            Grant::Scoped {
                kind: k,
                names,
                action: a,
            } => *k == kind && a.is_none_or(|a| a == action) && names.matches(name),
        }
    }
}

impl FromStr for Grant {
    type Err = DomainError;

    fn from_str(raw: &str) -> Result<Self, DomainError> {
        let invalid = || {
            DomainError::invalid(format!(
                "invalid grant {raw:?}: use admin, <queue|stream|task>:<name or pattern with *>:<produce|consume|manage|*> or route:<path or pattern with *>:call"
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
        if kind == "route" {
            let names = NamePattern::parse_path(name).ok_or_else(invalid)?;
            let action = match action {
                "*" | "call" => Some(Action::Call),
                _ => return Err(invalid()),
            };
            return Ok(Grant::Scoped {
                kind: ResourceKind::Route,
                names,
                action,
            });
        }
        let kind = match kind {
            "queue" => ResourceKind::Queue,
            "stream" => ResourceKind::Stream,
            "task" => ResourceKind::Task,
            _ => return Err(invalid()),
        };
        let names = NamePattern::parse(name).ok_or_else(invalid)?;
        let action = match action {
            "*" => None,
            "produce" => Some(Action::Produce),
            "consume" => Some(Action::Consume),
            "manage" => Some(Action::Manage),
            _ => return Err(invalid()),
        };
        Ok(Grant::Scoped {
            kind,
            names,
            action,
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Admin => f.write_str("admin"),
            Grant::Scoped {
                kind,
                names,
                action,
            } => write!(
                f,
                "{}:{}:{}",
                kind.as_str(),
                names,
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
        for text in [
            "admin",
            "queue:orders:produce",
            "stream:*:*",
            "task:jobs:*",
            "queue:*.eu:consume",
        ] {
            let grant: Grant = text.parse().unwrap();
            assert_eq!(grant.to_string(), text);
        }
        let grant: Grant = "queue:orders:produce".parse().unwrap();
        assert!(grant.allows(ResourceKind::Queue, "orders", Action::Produce));
        assert!(!grant.allows(ResourceKind::Queue, "orders", Action::Consume));
        assert!(!grant.allows(ResourceKind::Queue, "other", Action::Produce));
        assert!(!grant.allows(ResourceKind::Stream, "orders", Action::Produce));
        let pattern: Grant = "queue:orders-*:produce".parse().unwrap();
        assert!(pattern.allows(ResourceKind::Queue, "orders-eu", Action::Produce));
        assert!(pattern.allows(ResourceKind::Queue, "orders-", Action::Produce));
        assert!(!pattern.allows(ResourceKind::Queue, "orders", Action::Produce));
        assert!(!pattern.allows(ResourceKind::Queue, "billing", Action::Produce));
        assert!(!pattern.allows_every(ResourceKind::Queue, Action::Produce));
        let every: Grant = "queue:**:*".parse().unwrap();
        assert_eq!(every.to_string(), "queue:*:*");
        assert!(every.allows_every(ResourceKind::Queue, Action::Manage));
        let route: Grant = "route:/hooks/*:*".parse().unwrap();
        assert_eq!(route.to_string(), "route:/hooks/*:call");
        assert!(route.allows(ResourceKind::Route, "/hooks/a/{b}", Action::Call));
        assert!(!route.allows(ResourceKind::Route, "/other", Action::Call));
        assert!(!route.allows(ResourceKind::Queue, "/hooks/a", Action::Call));
        for bad in [
            "route:hooks:call",
            "route:/a:produce",
            "queue:q:call",
            "queue:orders-?:produce",
            "queue:a/*:produce",
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

    #[test]
    fn patterns_match_as_globs() {
        let cases = [
            ("*", "anything", true),
            ("*.eu", "orders.eu", true),
            ("*.eu", "orders.eu.x", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abcbc", true),
            ("a*b*c", "acb", false),
            ("a*a*a", "aaa", true),
            ("a*a*a", "aa", false),
            ("*x*", "x", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, name, expected) in cases {
            let pattern = NamePattern::parse(pattern).unwrap();
            assert_eq!(pattern.matches(name), expected, "{pattern} ~ {name}");
        }
    }
}

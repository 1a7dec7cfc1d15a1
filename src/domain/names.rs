//! Validated names: a value of these types is known to be well-formed.

use std::fmt;

use super::DomainError;

/// Longest queue, stream or client name accepted.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Names as a regular expression (ECMA-262), for the API description: the
/// alphabet, and at least one character that is not a dot.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$";

/// Whether `c` may occur in a name.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_name(kind: &str, raw: &str) -> Result<(), DomainError> {
    if raw.is_empty() || raw.len() > MAX_NAME_LEN || !raw.chars().all(is_name_char) {
        return Err(DomainError::invalid(format!(
            "invalid {kind} name {raw:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"
        )));
    }
    // `.` and `..` are path segments every URL library normalises away: a client
    // could create such a queue through one library and never reach it again.
    if raw.chars().all(|c| c == '.') {
        return Err(DomainError::invalid(format!(
            "invalid {kind} name {raw:?}: a name needs a character other than ."
        )));
    }
    Ok(())
}

/// Defines a validated name type over the shared alphabet.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts a name that matches `[A-Za-z0-9._-]{1,128}`.
            pub fn parse(raw: &str) -> Result<Self, DomainError> {
                check_name($kind, raw)?;
                Ok($name(raw.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A queue name: `[A-Za-z0-9._-]{1,128}`.
    QueueName,
    "queue"
);
name_type!(
    /// A stream name: `[A-Za-z0-9._-]{1,128}`.
    StreamName,
    "stream"
);
name_type!(
    /// A client id: the same alphabet as queue names, so it is safe in headers and logs.
    ClientId,
    "client"
);

impl ClientId {
    /// The id the node itself acts under (deliveries, the CLI, the bootstrap): `*`
    /// is not a name character, so no client can hold it.
    pub(crate) fn node() -> Self {
        ClientId("*node*".to_owned())
    }

    /// The id of a caller without credentials on an endpoint opened to anyone.
    pub(crate) fn anonymous() -> Self {
        ClientId("*anonymous*".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_alphabet() {
        assert!(QueueName::parse("orders.v2_eu-1").is_ok());
        assert!(QueueName::parse(&"a".repeat(128)).is_ok());
        assert!(QueueName::parse("..a").is_ok());
        for bad in [
            "",
            "bad name",
            "a/b",
            "ñ",
            &"a".repeat(129),
            ".",
            "..",
            "...",
        ] {
            assert!(QueueName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

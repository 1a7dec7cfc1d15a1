//! A client as the store keeps it: an identity, its secret only as a hash, and
//! what it may do; and the AWS access keys it may sign requests with.

use std::fmt;

use super::clock::Millis;
use super::{ClientId, DomainError, Grant};

/// A client as stored: the secret only as a hash.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// The client id.
    pub id: ClientId,
    /// PHC string (argon2id) or `sha256$<hex>` for generated secrets.
    pub secret_hash: String,
    /// What the client may do.
    pub grants: Vec<Grant>,
    /// When it was created.
    pub created_at: Millis,
}

/// Access key ids as a regular expression, for the API description.
pub const ACCESS_KEY_ID_PATTERN: &str = "^[A-Z0-9]{16,128}$";

/// Shortest and longest access key id accepted: AWS's own are 16 to 128 characters.
const ACCESS_KEY_ID_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// An AWS access key id: 16 to 128 of `A-Z 0-9`, as AWS's own. Checked before any
/// store lookup, so whatever a request's `Credential=` holds never reaches a query
/// or a key name unvalidated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKeyId(String);

impl AccessKeyId {
    /// Accepts `[A-Z0-9]{16,128}`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let valid = ACCESS_KEY_ID_LEN.contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !valid {
            return Err(DomainError::invalid(format!(
                "invalid access key id {raw:?}: use 16 to 128 of A-Z 0-9"
            )));
        }
        Ok(AccessKeyId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for AccessKeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        AccessKeyId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS access key as stored: SigV4 needs the secret itself to check a
/// signature, so it is kept sealed (see `auth::sealing`), never in clear, and the
/// key that opens it is never in the store.
#[derive(Clone)]
pub struct AwsKeyRecord {
    /// The access key id, which requests name in `Credential=`.
    pub access_key_id: AccessKeyId,
    /// The client whose principal a request signed with this key acts as.
    pub client_id: ClientId,
    /// The secret access key, sealed with the access key id as associated data, so
    /// a sealed secret copied onto another key's row does not open.
    pub sealed_secret: Vec<u8>,
    /// When it was issued.
    pub created_at: Millis,
}

impl fmt::Debug for AwsKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKeyRecord")
            .field("access_key_id", &self.access_key_id)
            .field("client_id", &self.client_id)
            .field("sealed_secret", &"<sealed>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_ids_are_uppercase_letters_and_digits() {
        assert!(AccessKeyId::parse("HOPRABCDEFGHIJ234567").is_ok());
        assert!(AccessKeyId::parse("AKIDEXAMPLE12345").is_ok());
        for bad in [
            "",
            "AKIDEXAMPLE",
            "hoprabcdefghij234567",
            "HOPR/ABCDEFGHIJ2345",
            &"A".repeat(129),
        ] {
            assert!(AccessKeyId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

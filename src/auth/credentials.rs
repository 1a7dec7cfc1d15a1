//! Credentials as sent in headers: `Basic base64(id:secret)`, `Bearer <secret>` with
//! `API-Client-Id: <id>` (the nginx + Lua front door's clients), or `Bearer <token>`
//! from a login.

use base64::Engine;

/// Credentials as sent, unverified.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A client id and the secret it claims: `Basic`, or `Bearer` with `API-Client-Id`.
    Secret {
        /// The claimed client id, unvalidated.
        client_id: String,
        /// The secret as sent.
        secret: String,
    },
    /// A login token: `Bearer` without `API-Client-Id`.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Secret { client_id, .. } => f
                .debug_struct("Secret")
                .field("client_id", client_id)
                .field("secret", &"<redacted>")
                .finish(),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Reads credentials from the `Authorization` and `API-Client-Id` header values;
    /// `None` when they are malformed or ambiguous (Basic names its client itself,
    /// so an `API-Client-Id` beside it would claim a second one).
    pub fn from_headers(authorization: Option<&str>, api_client_id: Option<&str>) -> Option<Self> {
        let (scheme, value) = authorization?.trim().split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            if api_client_id.is_some() {
                return None;
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (client_id, secret) = decoded.split_once(':')?;
            return Some(Credentials::Secret {
                client_id: client_id.to_owned(),
                secret: secret.to_owned(),
            });
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(match api_client_id {
                Some(client_id) => Credentials::Secret {
                    client_id: client_id.trim().to_owned(),
                    secret: value.to_owned(),
                },
                None => Credentials::Token(value.to_owned()),
            });
        }
        None
    }

    /// The client id these credentials claim, when they name one in clear.
    pub fn claimed_id(&self) -> Option<&str> {
        match self {
            Credentials::Secret { client_id, .. } => Some(client_id),
            Credentials::Token(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_and_bearer_with_client_id() {
        let secret = |client_id: &str, secret: &str| Credentials::Secret {
            client_id: client_id.into(),
            secret: secret.into(),
        };
        assert_eq!(
            Credentials::from_headers(Some("Basic YWRtaW46czNjcjN0OndpdGg6Y29sb25z"), None),
            Some(secret("admin", "s3cr3t:with:colons"))
        );
        assert_eq!(
            Credentials::from_headers(Some("Bearer tok"), Some("12345")),
            Some(secret("12345", "tok"))
        );
        assert_eq!(
            Credentials::from_headers(Some("Bearer a.b.c"), None),
            Some(Credentials::Token("a.b.c".into()))
        );
        assert!(Credentials::from_headers(Some("Basic !!!"), None).is_none());
        assert!(Credentials::from_headers(Some("Digest x"), None).is_none());
        assert!(Credentials::from_headers(None, Some("1")).is_none());
        let basic = Some("Basic YWRtaW46czNjcjN0OndpdGg6Y29sb25z");
        assert!(Credentials::from_headers(basic, Some("")).is_none());
        assert!(Credentials::from_headers(basic, Some("admin")).is_none());
    }
}

//! Credentials as sent in headers: `Basic base64(id:secret)`, or `Bearer <secret>`
//! with `API-Client-Id: <id>` (seed 000).

use base64::Engine;

/// A client id and the secret it claims.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The claimed client id, unvalidated.
    pub client_id: String,
    /// The secret as sent.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads credentials from the `Authorization` and `API-Client-Id` header values.
    pub fn from_headers(authorization: Option<&str>, api_client_id: Option<&str>) -> Option<Self> {
        let (scheme, value) = authorization?.trim().split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (client_id, secret) = decoded.split_once(':')?;
            return Some(Credentials {
                client_id: client_id.to_owned(),
                secret: secret.to_owned(),
            });
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Credentials {
                client_id: api_client_id?.trim().to_owned(),
                secret: value.to_owned(),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_basic_and_bearer_with_client_id() {
        let basic = Credentials::from_headers(Some("Basic YWRtaW46czNjcjN0OndpdGg6Y29sb25z"), None)
            .unwrap();
        assert_eq!(
            (basic.client_id.as_str(), basic.secret.as_str()),
            ("admin", "s3cr3t:with:colons")
        );
        let bearer = Credentials::from_headers(Some("Bearer tok"), Some("12345")).unwrap();
        assert_eq!(
            (bearer.client_id.as_str(), bearer.secret.as_str()),
            ("12345", "tok")
        );
        assert!(Credentials::from_headers(Some("Bearer tok"), None).is_none());
        assert!(Credentials::from_headers(Some("Basic !!!"), None).is_none());
        assert!(Credentials::from_headers(Some("Digest x"), None).is_none());
        assert!(Credentials::from_headers(None, Some("1")).is_none());
    }
}

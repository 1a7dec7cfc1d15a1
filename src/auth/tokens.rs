//! Login tokens: HS256 JWTs naming a client (`sub`), never its grants, so a grant
//! change applies at once to tokens already out. Each carries a fingerprint of the
//! client's secret hash, so a secret that changes voids the tokens issued before.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::clock::Millis;
use crate::domain::ClientId;

/// Leeway past `exp`: the nodes share the store's clock, so a second is plenty.
const LEEWAY_MS: Millis = 1000;
/// Verified tokens remembered; past it they are all forgotten, and each is verified again once.
const VERIFIED_TOKENS: usize = 10_000;

/// What a token says.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: i64,
    /// A random id of this token.
    pub jti: String,
    /// The fingerprint of the client's secret hash when the token was issued.
    pub sfp: String,
}

/// A token issued at login.
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Its lifetime.
    pub expires_in: Duration,
}

/// Signs and checks tokens with one key.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Tokens whose signature checked, by their exact text: a client sends the same
    /// token on every request, and decoding and verifying it cost about 40% of a push.
    verified: RwLock<HashMap<Box<str>, Arc<Claims>>>,
}

impl Tokens {
    /// Tokens signed with `key`, each valid for `ttl`.
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the store's clock (see `check`), not this node's.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["sub", "iat", "exp", "jti"]);
        Tokens {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl,
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// How long a token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for the client `id` whose stored secret hash is `secret_hash`, issued at `now`.
    pub fn issue(
        &self,
        id: &ClientId,
        secret_hash: &str,
        now: Millis,
    ) -> Result<Issued, jsonwebtoken::errors::Error> {
        let iat = now / 1000;
        let claims = Claims {
            sub: id.to_string(),
            iat,
            exp: iat.saturating_add(self.ttl.as_secs() as i64),
            jti: uuid::Uuid::new_v4().to_string(),
            sfp: fingerprint(secret_hash),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(Issued {
            token,
            expires_in: self.ttl,
        })
    }

    /// The claims of `token` if it is signed with this key (HS256 only, so neither
    /// `alg: none` nor another algorithm passes) and unexpired at `now`.
    pub fn check(&self, token: &str, now: Millis) -> Option<Arc<Claims>> {
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                        .ok()?
                        .claims,
                );
                let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= VERIFIED_TOKENS {
                    verified.clear();
                }
                verified.insert(token.into(), claims.clone());
                claims
            }
        };
        (claims.exp.saturating_mul(1000).saturating_add(LEEWAY_MS) > now).then_some(claims)
    }
}

/// A short digest of a stored secret hash: it changes whenever the secret does, and
/// tells nothing of the secret or the hash.
pub fn fingerprint(secret_hash: &str) -> String {
    let digest = Sha256::digest(secret_hash.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_checks_until_it_expires_and_only_with_its_key() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let now = 1_700_000_000_000;
        let shop = ClientId::parse("shop").unwrap();
        let issued = tokens.issue(&shop, "h1", now).unwrap();
        let claims = tokens.check(&issued.token, now).unwrap();
        assert_eq!(claims.sub, "shop");
        assert_eq!(claims.exp - claims.iat, 60);
        assert_eq!(claims.sfp, fingerprint("h1"));
        assert!(
            tokens.check(&issued.token, now + 60_500).is_some(),
            "within the leeway"
        );
        assert!(
            tokens.check(&issued.token, now + 61_000).is_none(),
            "expired"
        );
        assert!(
            tokens.check(&issued.token, now).is_some(),
            "a remembered token is still checked for expiry, not refused for good"
        );
        let other = Tokens::new(b"another key of thirty-two bytes!", Duration::from_secs(60));
        assert!(other.check(&issued.token, now).is_none(), "another key");
        let mut tampered = issued.token.clone();
        tampered.pop();
        tampered.push(if issued.token.ends_with('A') {
            'B'
        } else {
            'A'
        });
        assert!(
            tokens.check(&tampered, now).is_none(),
            "a changed signature"
        );
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        use base64::Engine;
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60));
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let payload = b64(r#"{"sub":"shop","iat":1,"exp":99999999999,"jti":"x","sfp":"y"}"#);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{payload}.", b64(header));
            assert!(tokens.check(&token, 1000).is_none(), "{header}");
        }
    }
}

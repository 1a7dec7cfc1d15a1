//! Secret hashing: argon2id for secrets a person chose, SHA-256 for the 256-bit
//! random secrets Hopper generates (their entropy makes a slow hash pointless).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest secret a client may choose.
pub const MIN_SECRET_LEN: usize = 12;
/// Prefix of hashes of generated secrets.
const SHA256_PREFIX: &str = "sha256$";

/// A new random secret (256 bits, base64url) and its hash.
pub fn generate_secret() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = format!("{SHA256_PREFIX}{}", hex(&Sha256::digest(secret.as_bytes())));
    (secret, hash)
}

/// The argon2id hash (PHC string) of a chosen secret.
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::thread_rng());
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)?
        .to_string())
}

/// Whether `secret` matches `hash`; slow (argon2) for chosen secrets: call off the async runtime.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    if let Some(expected) = hash.strip_prefix(SHA256_PREFIX) {
        let actual = hex(&Sha256::digest(secret.as_bytes()));
        return actual.as_bytes().ct_eq(expected.as_bytes()).into();
    }
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_and_chosen_secrets_verify() {
        let (secret, hash) = generate_secret();
        assert!(verify_secret(&secret, &hash));
        assert!(!verify_secret("nope", &hash));
        let hash = hash_secret("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret("correct horse battery", &hash));
        assert!(!verify_secret("correct horse", &hash));
        assert!(!verify_secret("x", "garbage"));
    }
}

//! Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The three headers of one signed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `webhook-id`: stays the same on every retry so receivers can deduplicate.
    pub id: String,
    /// `webhook-timestamp`: renewed per attempt so receivers can refuse replays.
    pub timestamp: String,
    /// `webhook-signature`: `v1,` marks HMAC-SHA256 among the schemes receivers accept.
    pub signature: String,
}

/// Signs `body` sent as message `id` at `timestamp` (Unix seconds) with the key bytes.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Signature {
    // A `.` in the id would let one (id, body) pair pass for another.
    debug_assert!(!id.contains('.'), "webhook ids must not contain '.'");
    let timestamp = timestamp.to_string();
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    // Fed in pieces so a large body is not copied into one signed string.
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    Signature {
        id: id.to_owned(),
        timestamp,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::signing_key;

    /// The vector of `test_sign_function` in the reference Python library
    /// (standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py).
    #[test]
    fn matches_the_reference_test_vector() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signed,
            Signature {
                id: "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned(),
                timestamp: "1614265330".to_owned(),
                signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned(),
            }
        );
    }

    #[test]
    fn every_signed_part_changes_the_signature() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = sign(&key, "msg_1", 1614265330, b"{}").signature;
        assert_ne!(base, sign(&key, "msg_2", 1614265330, b"{}").signature);
        assert_ne!(base, sign(&key, "msg_1", 1614265331, b"{}").signature);
        assert_ne!(base, sign(&key, "msg_1", 1614265330, b"{ }").signature);
        assert_ne!(
            base,
            sign(b"other key", "msg_1", 1614265330, b"{}").signature
        );
    }
}

//! Who is calling: credentials parsed from headers, verified against stored
//! hashes, and cached so argon2 runs once per client and secret; AWS access keys
//! whose SigV4 signatures are checked with their secrets, kept sealed.
//!
//! Never logs or stores a secret in clear; only hashes, SHA-256 digests and sealed
//! AWS secrets.

pub mod aws_keys;
pub mod clients;
mod credentials;
pub mod limiter;
pub mod sealing;
mod secrets;
pub mod sigv4;
pub mod tokens;
mod verifier;

pub use credentials::Credentials;
pub use sealing::SecretKey;
pub use secrets::{generate_secret, hash_secret, verify_secret, MIN_SECRET_LEN};
pub use sigv4::{SigV4Error, SignedRequest};
pub use verifier::{AuthError, Authenticator};

pub use crate::domain::access::Principal;

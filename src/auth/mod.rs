//! Who is calling: credentials parsed from headers, verified against stored
//! hashes, and cached so argon2 runs once per client and secret.
//!
//! Never logs or stores a secret in clear; only hashes and SHA-256 digests.

pub mod clients;
mod credentials;
pub mod limiter;
mod secrets;
pub mod tokens;
mod verifier;

pub use credentials::Credentials;
pub use secrets::{generate_secret, hash_secret, verify_secret, MIN_SECRET_LEN};
pub use verifier::{AuthError, Authenticator};

pub use crate::domain::access::Principal;

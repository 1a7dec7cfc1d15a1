//! A client as the store keeps it: an identity, its secret only as a hash, and
//! what it may do.

use super::clock::Millis;
use super::{ClientId, Grant};

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

//! Reasons a domain operation refuses, each one a caller can act on.

use super::storage::StoreError;

/// Why a request to the domain did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller sent a value the rules do not accept; the text says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist, e.g. `queue orders`.
    #[error("{0}")]
    NotFound(String),
    /// The thing was deleted, and its name stays taken for now (410).
    #[error("{0}")]
    Gone(String),
    /// The caller is known but lacks the grant; the text names what was refused.
    #[error("{0}")]
    Forbidden(String),
    /// The thing exists already, e.g. a client id taken.
    #[error("{0}")]
    Conflict(String),
    /// As many requests wait (long-polls, task waits) as the node admits; retrying later may work.
    #[error("{max} requests are waiting already, the most this node admits")]
    TooManyWaiters {
        /// `limits.max_waiters`.
        max: usize,
    },
    /// Storage failed; the cause is for the log, not for the caller.
    #[error(transparent)]
    Store(StoreError),
}

impl DomainError {
    /// Shorthand for an invalid-input error.
    pub fn invalid(detail: impl Into<String>) -> Self {
        DomainError::Invalid(detail.into())
    }
}

impl From<StoreError> for DomainError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::QueueNotFound(name) => DomainError::NotFound(format!("queue {name}")),
            StoreError::StreamNotFound(name) => DomainError::NotFound(format!("stream {name}")),
            StoreError::StreamGone(name) => {
                DomainError::Gone(format!("stream {name} is deleted; forks of it remain"))
            }
            StoreError::ClientExists(id) => DomainError::Conflict(format!("client {id} exists")),
            StoreError::ClientNotFound(id) => DomainError::NotFound(format!("client {id}")),
            StoreError::AwsKeyNotFound(id) => DomainError::NotFound(format!("AWS access key {id}")),
            StoreError::AwsKeyExists(id) => {
                DomainError::Conflict(format!("AWS access key {id} exists"))
            }
            other => DomainError::Store(other),
        }
    }
}

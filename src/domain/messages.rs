//! Messages as the queue rules see them: what a push stores, what a consumer is
//! handed, the receipt that proves a lease, and how a lease is settled.

use std::fmt;
use std::time::Duration;

use super::clock::Millis;
use super::tasks::TaskId;
use super::{DomainError, QueueName, QueueSettings};

/// A message id, unique across every queue of a store and increasing in push order.
pub type MessageId = i64;

/// Proof of a lease: only the holder of the current lease can settle a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The leased message.
    pub message_id: MessageId,
    /// Random per lease, so a receipt from an earlier lease never matches.
    pub lease_token: i64,
}

impl Receipt {
    /// Parses a receipt as [`Receipt`]'s `Display` writes it.
    pub fn parse(raw: &str) -> Result<Receipt, DomainError> {
        raw.split_once('.')
            .and_then(|(id, token)| {
                let message_id = id.parse().ok()?;
                let lease_token = u64::from_str_radix(token, 16).ok()? as i64;
                (token.len() == 16).then_some(Receipt {
                    message_id,
                    lease_token,
                })
            })
            .ok_or_else(|| DomainError::invalid(format!("invalid receipt {raw:?}")))
    }
}

/// A receipt as text: `<message id>.<lease token in hex>`.
impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:016x}", self.message_id, self.lease_token as u64)
    }
}

/// A message as handed to a consumer.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message id.
    pub id: MessageId,
    /// The JSON body exactly as pushed.
    pub body: String,
    /// Times handed out, this time included.
    pub attempts: u32,
    /// When it was pushed.
    pub enqueued_at: Millis,
    /// Present when the message was leased (receive), absent for pop and dead letters.
    pub receipt: Option<Receipt>,
    /// Why its last delivery to an upstream failed (dead letters of delivering queues).
    pub last_error: Option<String>,
    /// The task this message carries, when it is a task's message (marked by the
    /// store when the task is created, never guessed from the body).
    pub task: Option<TaskId>,
}

/// One or more messages to push to one queue.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Target queue; created with `defaults` if it does not exist.
    pub queue: QueueName,
    /// JSON bodies, already validated.
    pub bodies: Vec<String>,
    /// Delay before the messages become ready.
    pub delay: Duration,
    /// With a key, a second push with the same key inside the queue's window creates nothing.
    pub idempotency_key: Option<String>,
    /// Settings for a queue this push creates.
    pub defaults: QueueSettings,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// New messages, ids in the order of the bodies.
    Created(Vec<MessageId>),
    /// The idempotency key was seen inside the window: the id its first push created.
    Duplicate(MessageId),
}

/// Messages leased by a receive.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Leased messages, oldest first.
    pub messages: Vec<Message>,
    /// When nothing was ready: how long until a delayed or leased message becomes ready
    /// (relative, so the caller's clock need not agree with the store's).
    pub next_ready_in: Option<Duration>,
}

/// Per receipt, whether an ack, nack or extend was applied.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// Receipts that held the lease and were applied.
    pub applied: Vec<Receipt>,
    /// Receipts whose lease was lost to another consumer or whose message is gone.
    pub stale: Vec<Receipt>,
}

/// How a settlement changes leased messages.
#[derive(Debug, Clone, Copy)]
pub enum Settlement {
    /// Done: delete the message.
    Ack,
    /// Give it back, ready after the delay (dead-lettered if out of attempts).
    Nack {
        /// Delay before it is ready again.
        delay: Duration,
    },
    /// Keep the lease for this long from now.
    Extend {
        /// New lease, counted from now.
        lease: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_reject_garbage() {
        let receipt = Receipt {
            message_id: 42,
            lease_token: -5,
        };
        assert_eq!(Receipt::parse(&receipt.to_string()).unwrap(), receipt);
        for bad in ["", "42", "42.", "x.0000000000000001", "42.zz", "42.1"] {
            assert!(Receipt::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

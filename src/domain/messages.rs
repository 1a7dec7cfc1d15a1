//! Messages as the queue rules see them: what a push stores, what a consumer is
//! handed, the receipt that proves a lease, and how a lease is settled.

use std::fmt;
use std::time::Duration;

use super::clock::Millis;
use super::tasks::{TaskEnding, TaskId};
use super::{DomainError, QueueName, QueueSettings};

/// A message id, unique within its queue and increasing in push order.
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
    /// Its group, if it was pushed with one.
    pub group: Option<String>,
    /// What the edge that pushed it keeps beside the body (see [`NewMessage::meta`]).
    pub meta: Option<String>,
    /// When it was first handed out by a receive, if it was.
    pub first_received_at: Option<Millis>,
}

impl Message {
    /// A message as a backend read it: the fields every message has, the rest absent.
    pub fn stored(id: MessageId, body: String, attempts: u32, enqueued_at: Millis) -> Message {
        Message {
            id,
            body,
            attempts,
            enqueued_at,
            receipt: None,
            last_error: None,
            task: None,
            group: None,
            meta: None,
            first_received_at: None,
        }
    }
}

/// One message to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The JSON body, already validated.
    pub body: String,
    /// Its group (see [`super::settings::Ordering::Group`]).
    pub group: Option<String>,
    /// Opaque to the queue rules: what the edge that pushed it needs to hand it out
    /// as it came in (the SQS endpoint keeps message attributes and the body's
    /// original text here), returned with the message, never read by Hopper.
    pub meta: Option<String>,
}

impl From<&str> for NewMessage {
    fn from(body: &str) -> Self {
        body.to_owned().into()
    }
}

impl From<String> for NewMessage {
    fn from(body: String) -> Self {
        NewMessage {
            body,
            group: None,
            meta: None,
        }
    }
}

/// One or more messages to push to one queue.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Target queue; created with `defaults` if it does not exist.
    pub queue: QueueName,
    /// The messages, in order.
    pub messages: Vec<NewMessage>,
    /// Delay before the messages become ready; the queue's own when `None`.
    pub delay: Option<Duration>,
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
    /// The queue's `wait` setting, for a receive that names no wait of its own.
    pub queue_wait: Duration,
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

/// Where a stored message stands; every backend stores these codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Ready, or delayed until its time.
    Waiting,
    /// Handed out under a lease (which may have run out unnoticed).
    Leased,
    /// A dead letter: out of attempts, kept until redriven or dropped.
    Dead,
}

impl MessageState {
    /// The code every backend stores for this state.
    pub const fn code(self) -> i16 {
        match self {
            MessageState::Waiting => 0,
            MessageState::Leased => 1,
            MessageState::Dead => 2,
        }
    }

    /// The state a stored code stands for; `None` for a code this binary never writes.
    pub fn from_code(code: i64) -> Option<MessageState> {
        [
            MessageState::Waiting,
            MessageState::Leased,
            MessageState::Dead,
        ]
        .into_iter()
        .find(|state| i64::from(state.code()) == code)
    }

    /// Where a message goes when its lease ends without an ack (a nack, an expiry,
    /// a task's retry): back to waiting, or to the dead letters once it has been
    /// handed out `max_attempts` times.
    pub fn after_lease(attempts: u32, max_attempts: u32) -> MessageState {
        if out_of_attempts(attempts, max_attempts) {
            MessageState::Dead
        } else {
            MessageState::Waiting
        }
    }
}

/// Whether a message handed out `attempts` times has used up `max_attempts`: the
/// one rule behind dead letters (the Redis scripts' `exhausted` mirrors it).
pub fn out_of_attempts(attempts: u32, max_attempts: u32) -> bool {
    attempts >= max_attempts
}

/// Of messages whose lease just ended, given as `(id, attempts)`, those
/// [`MessageState::after_lease`] sends to the dead letters.
pub fn exhausted(ended: &[(MessageId, u32)], max_attempts: u32) -> Vec<(MessageId, u32)> {
    ended
        .iter()
        .copied()
        .filter(|(_, attempts)| {
            MessageState::after_lease(*attempts, max_attempts) == MessageState::Dead
        })
        .collect()
}

/// What a settle changes besides the statement that matched its receipts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SettleEffects {
    /// Nacked messages out of attempts, to move to the dead letters.
    pub dead: Vec<(MessageId, u32)>,
    /// How tasks end with their messages, and which: `(message id, attempts)`.
    pub tasks_end: Option<(TaskEnding, Vec<(MessageId, u32)>)>,
}

impl Settlement {
    /// Whether this settlement can make a message ready, so waiting receives look
    /// again: a nack returns its message; on a queue ordered by group, an ack (or a
    /// nack into the dead letters) lets the group's next message go.
    pub fn wakes_waiters(self, ordering: super::settings::Ordering) -> bool {
        match self {
            Settlement::Nack { .. } => true,
            Settlement::Ack => ordering == super::settings::Ordering::Group,
            Settlement::Extend { .. } => false,
        }
    }

    /// What follows from this settlement of `settled`, the `(id, attempts)` of the
    /// messages whose receipts held: an ack ends their tasks; a nack sends the
    /// exhausted ones to the dead letters, failing their tasks; an extend nothing.
    pub fn effects(self, settled: Vec<(MessageId, u32)>, max_attempts: u32) -> SettleEffects {
        match self {
            Settlement::Ack => SettleEffects {
                dead: Vec::new(),
                tasks_end: Some((TaskEnding::Acked, settled)),
            },
            Settlement::Nack { .. } => {
                let dead = exhausted(&settled, max_attempts);
                SettleEffects {
                    tasks_end: Some((TaskEnding::OutOfAttempts, dead.clone())),
                    dead,
                }
            }
            Settlement::Extend { .. } => SettleEffects::default(),
        }
    }
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

    #[test]
    fn a_lease_ends_in_the_dead_letters_once_the_attempts_are_spent() {
        assert_eq!(MessageState::after_lease(2, 3), MessageState::Waiting);
        assert_eq!(MessageState::after_lease(3, 3), MessageState::Dead);
        assert_eq!(MessageState::after_lease(4, 3), MessageState::Dead);
        for state in [
            MessageState::Waiting,
            MessageState::Leased,
            MessageState::Dead,
        ] {
            assert_eq!(MessageState::from_code(state.code().into()), Some(state));
        }
        assert_eq!(MessageState::from_code(7), None);
    }

    #[test]
    fn only_an_ack_or_a_nack_into_the_dead_letters_ends_a_task() {
        let nack = Settlement::Nack {
            delay: Duration::ZERO,
        };
        let extend = Settlement::Extend {
            lease: Duration::from_secs(1),
        };
        let settled = vec![(1, 2), (2, 3)];
        assert_eq!(
            Settlement::Ack.effects(settled.clone(), 3),
            SettleEffects {
                dead: vec![],
                tasks_end: Some((TaskEnding::Acked, settled.clone())),
            }
        );
        assert_eq!(
            nack.effects(settled.clone(), 3),
            SettleEffects {
                dead: vec![(2, 3)],
                tasks_end: Some((TaskEnding::OutOfAttempts, vec![(2, 3)])),
            }
        );
        assert_eq!(extend.effects(settled, 3), SettleEffects::default());
    }
}

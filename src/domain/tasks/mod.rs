//! Tasks: asynchronous request-reply over a queue (seed 001). A task is a message
//! `{"task_id", "payload"}` that expects a result. This module holds what a task is
//! and how its status follows from its stored state and its message, the rules every
//! backend applies; [`service`] holds the operations and the waits.

use std::fmt;
use std::time::Duration;

use super::clock::Millis;
use super::messages::PushRequest;
use super::DomainError;

mod service;

pub use service::{TaskService, TaskSettings};

/// A task id: a UUID, so ids cannot be guessed from one another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId(String);

impl TaskId {
    /// A new random id.
    pub fn generate() -> Self {
        TaskId(uuid::Uuid::new_v4().to_string())
    }

    /// Accepts a UUID in its hyphenated form (any case), kept lowercase.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        uuid::Uuid::try_parse(raw)
            .ok()
            .filter(|_| raw.len() == 36)
            .map(|id| TaskId(id.to_string()))
            .ok_or_else(|| {
                DomainError::invalid(format!("invalid task id {raw:?}: expected a UUID"))
            })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TaskId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// Its message waits for a worker (or for a retry delay to pass).
    Pending,
    /// A worker holds its message's lease.
    Running,
    /// A worker completed it.
    Succeeded,
    /// A worker failed it, or its message ran out of attempts.
    Failed,
    /// Its message was dropped (queue retention, purge or delete) before any worker finished it.
    Expired,
}

impl TaskStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Expired => "expired",
        }
    }

    /// Whether the task has its outcome; waiting for it ends here.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Expired
        )
    }
}

/// Task counts of a queue, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Waiting for a worker.
    pub pending: u64,
    /// Leased by a worker.
    pub running: u64,
    /// Completed by a worker.
    pub succeeded: u64,
    /// Failed by a worker, or out of attempts.
    pub failed: u64,
    /// Their message was dropped before any worker finished them.
    pub expired: u64,
}

impl TaskCounts {
    /// Adds `n` tasks of `status`.
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        let slot = match status {
            TaskStatus::Pending => &mut self.pending,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Succeeded => &mut self.succeeded,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Expired => &mut self.expired,
        };
        *slot += n;
    }
}

/// A task to create: its message (pushed in the same transaction) and its id.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The task id, chosen by the caller.
    pub id: TaskId,
    /// The push of the task's message `{"task_id", "payload"}`; with an idempotency
    /// key, a repeated create finds the task its first push made.
    pub message: PushRequest,
    /// How long the task is kept once finished.
    pub keep_finished: Duration,
}

/// What a task create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCreated {
    /// A new task.
    New(TaskId),
    /// The idempotency key was seen inside the window: the task its first create made.
    Existing(TaskId),
    /// The idempotency key belongs to a message that is not a task; nothing was created.
    KeyTaken,
}

/// A task as stored, its status derived from its message while it is unfinished.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// The task id.
    pub id: TaskId,
    /// The queue its message went to.
    pub queue: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// The worker's result (JSON), once succeeded.
    pub result: Option<String>,
    /// The worker's last error (JSON), from a failure with or without retry.
    pub error: Option<String>,
    /// Times its message was handed out.
    pub attempts: u32,
    /// When it was created.
    pub created_at: Millis,
    /// When a worker finished it (or it expired).
    pub finished_at: Option<Millis>,
    /// The upstream's status, when a delivery finished it.
    pub upstream_status: Option<u16>,
    /// While running: how long until its lease ends, when the status may change
    /// without anyone finishing it (redelivery, or failure when out of attempts).
    pub lease_ends_in: Option<Duration>,
}

/// How a worker finishes a task.
#[derive(Debug, Clone)]
pub enum TaskFinish {
    /// Done: the result (JSON) is kept and the message acked.
    Succeeded {
        /// The result, JSON text.
        result: String,
        /// The upstream's status, when a delivery finished it.
        upstream_status: Option<u16>,
    },
    /// Given up: the error (JSON) is kept and the message acked.
    Failed {
        /// The error, JSON text.
        error: String,
    },
    /// Failed this time: the error is kept and the message nacked, to be handed out
    /// again after `delay` (a dead letter, and the task failed, when out of attempts).
    Retry {
        /// The error, JSON text.
        error: String,
        /// Delay before the message is ready again.
        delay: Duration,
    },
}

impl TaskFinish {
    /// The upstream status this finish records.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            TaskFinish::Succeeded {
                upstream_status, ..
            } => *upstream_status,
            _ => None,
        }
    }
}

/// What finishing a task did.
#[derive(Debug, Clone)]
pub enum TaskFinished {
    /// Applied, together with the settlement of its message: the task after.
    Applied(TaskRecord),
    /// No such task.
    NotFound,
    /// The receipt is for another message than the task's.
    WrongMessage,
    /// The receipt no longer holds the lease (expired and re-leased, already
    /// settled, out of attempts) or the task is finished; nothing changed.
    Stale,
}

/// What a stored task records of its outcome. While it is `Unfinished` its status
/// is read off its message ([`TaskState::status`]), so queue operations move it
/// without touching the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Pending, running or failed, as its message says; expired when the message is gone.
    Unfinished,
    /// Completed by a worker (or acked through the queue API).
    Succeeded,
    /// Failed by a worker, or out of attempts.
    Failed,
    /// Its message was dropped unfinished.
    Expired,
}

impl TaskState {
    /// The code every backend stores for this state.
    pub const fn code(self) -> i16 {
        match self {
            TaskState::Unfinished => 0,
            TaskState::Succeeded => 1,
            TaskState::Failed => 2,
            TaskState::Expired => 3,
        }
    }

    /// The state a stored code stands for; `None` for a code this binary never writes.
    pub fn from_code(code: i64) -> Option<TaskState> {
        [
            TaskState::Unfinished,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Expired,
        ]
        .into_iter()
        .find(|state| i64::from(state.code()) == code)
    }

    /// The task's status: this state once finished; while unfinished, what its
    /// message (`None`: gone) says.
    pub fn status(self, message: Option<TaskMessage>) -> TaskStatus {
        match (self, message) {
            (TaskState::Succeeded, _) => TaskStatus::Succeeded,
            (TaskState::Failed, _) => TaskStatus::Failed,
            (TaskState::Expired, _) | (TaskState::Unfinished, None) => TaskStatus::Expired,
            (TaskState::Unfinished, Some(m)) if m.dead || m.lease_ended_exhausted => {
                TaskStatus::Failed
            }
            (TaskState::Unfinished, Some(m)) if m.leased => TaskStatus::Running,
            (TaskState::Unfinished, Some(_)) => TaskStatus::Pending,
        }
    }
}

/// How a task ends when its message does without a worker's `complete` or `fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnding {
    /// Acked through the queue API: done, with no result.
    Acked,
    /// Dead-lettered: out of attempts.
    OutOfAttempts,
    /// Dropped (retention, purge, queue deleted) or popped, which no worker can answer.
    Dropped,
}

impl TaskEnding {
    /// The state the task ends in.
    pub fn state(self) -> TaskState {
        match self {
            TaskEnding::Acked => TaskState::Succeeded,
            TaskEnding::OutOfAttempts => TaskState::Failed,
            TaskEnding::Dropped => TaskState::Expired,
        }
    }
}

/// The error a task failed by running out of attempts shows when no worker gave one.
pub const OUT_OF_ATTEMPTS: &str = r#""out of attempts""#;

/// A task message's state, as far as its task's status depends on it.
#[derive(Debug, Clone, Copy)]
pub struct TaskMessage {
    /// Dead letter: out of attempts.
    pub dead: bool,
    /// Under a lease that has not ended.
    pub leased: bool,
    /// Its lease ended with no attempts left: a dead letter not yet moved.
    pub lease_ended_exhausted: bool,
}

impl TaskMessage {
    /// From a message's `state` (0 waiting, 1 leased, 2 dead), whether its lease is
    /// still running, and whether it has used up its attempts.
    pub fn new(state: i64, lease_running: bool, exhausted: bool) -> Self {
        TaskMessage {
            dead: state == 2,
            leased: state == 1 && lease_running,
            lease_ended_exhausted: state == 1 && !lease_running && exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_hyphenated_uuids() {
        let id = TaskId::generate();
        assert_eq!(TaskId::parse(id.as_str()).unwrap(), id);
        assert_eq!(
            TaskId::parse("A0B1C2D3-0000-4000-8000-000000000000")
                .unwrap()
                .as_str(),
            "a0b1c2d3-0000-4000-8000-000000000000"
        );
        for bad in ["", "42", "a0b1c2d30000400080000000000000000", "../x"] {
            assert!(TaskId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

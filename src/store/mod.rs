//! Persistence behind traits: the domain speaks to storage only through these.
//!
//! The traits take and return domain types; no SQL, connection or backend type
//! crosses them, so every backend (SQLite and PostgreSQL; Redis next) is a
//! drop-in. A method returns only after its write is durable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::clock::Millis;
use crate::domain::delivery::DeliverySettings;
use crate::domain::streams::StreamRetention;
use crate::domain::tasks::{TaskId, TaskStatus};
use crate::domain::{ClientId, Grant, QueueName, QueueSettings, StreamName, Wakeups};

pub mod postgres;
pub mod sqlite;

/// A message id, unique across every queue of a store and increasing in push order.
pub type MessageId = i64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue was never created (or was deleted).
    #[error("queue {0} not found")]
    QueueNotFound(String),
    /// The stream has no events yet (or never existed).
    #[error("stream {0} not found")]
    StreamNotFound(String),
    /// A client with this id exists already.
    #[error("client {0} exists")]
    ClientExists(String),
    /// No client has this id.
    #[error("client {0} not found")]
    ClientNotFound(String),
    /// The store cannot take requests now (closed, unreachable, out of space); retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been stored (e.g. committed but the fsync failed,
    /// or the connection dropped during the commit); retrying may duplicate it.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The backend failed; the source holds the backend's own error.
    #[error("{context}")]
    Backend {
        /// What the store was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps a backend error with what the store was doing.
    pub fn backend(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            context,
            source: Box::new(source),
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Proof of a lease: only the holder of the current lease can settle a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The leased message.
    pub message_id: MessageId,
    /// Random per lease, so a receipt from an earlier lease never matches.
    pub lease_token: i64,
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

/// Message counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready to be handed out now.
    pub ready: u64,
    /// Handed out under a lease that has not expired.
    pub leased: u64,
    /// Pushed with a delay, or nacked with one, not yet ready.
    pub delayed: u64,
    /// Out of attempts.
    pub dead: u64,
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

/// A queue with its settings and counts.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    /// The queue.
    pub name: QueueName,
    /// Its settings.
    pub settings: QueueSettings,
    /// Its message counts.
    pub counts: QueueCounts,
    /// Its tasks' counts.
    pub tasks: TaskCounts,
}

/// A change of settings computed from the current ones (`None`: the queue is new).
pub type SettingsUpdate = Box<dyn FnOnce(Option<QueueSettings>) -> QueueSettings + Send>;

/// What a settings write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The queue was created.
    Created,
    /// The queue existed and was updated.
    Updated,
}

/// Queue persistence.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Appends messages (all or nothing), creating the queue if needed.
    async fn push(&self, request: PushRequest) -> StoreResult<PushOutcome>;
    /// Removes and returns up to `count` of the oldest ready messages.
    async fn pop(&self, queue: &QueueName, count: u32) -> StoreResult<Vec<Message>>;
    /// Leases up to `count` of the oldest ready messages for `lease` (the queue's own when `None`).
    async fn receive(
        &self,
        queue: &QueueName,
        count: u32,
        lease: Option<Duration>,
    ) -> StoreResult<Received>;
    /// Acks, nacks or extends leased messages; stale receipts change nothing.
    async fn settle(
        &self,
        queue: &QueueName,
        receipts: &[Receipt],
        settlement: Settlement,
    ) -> StoreResult<Settled>;
    /// A queue with its counts.
    async fn queue_info(&self, queue: &QueueName) -> StoreResult<QueueInfo>;
    /// Every queue with its counts, by name.
    async fn list_queues(&self) -> StoreResult<Vec<QueueInfo>>;
    /// Creates the queue or changes its settings to `update(current)` (`None` when the
    /// queue is new), read and written in one atomic step so concurrent changes compose.
    async fn update_settings(
        &self,
        queue: &QueueName,
        update: SettingsUpdate,
    ) -> StoreResult<Upsert>;
    /// The settings of an existing queue.
    async fn settings(&self, queue: &QueueName) -> StoreResult<QueueSettings>;
    /// Every queue that delivers to an upstream, with its delivery setting; cheap
    /// (no counts), for the delivery engine's periodic look.
    async fn delivering_queues(&self) -> StoreResult<Vec<(QueueName, DeliverySettings)>>;
    /// Deletes the queue and all its messages; returns how many messages went with it.
    async fn delete_queue(&self, queue: &QueueName) -> StoreResult<u64>;
    /// Deletes every message of the queue, dead letters included; returns how many.
    async fn purge(&self, queue: &QueueName) -> StoreResult<u64>;
    /// Up to `limit` dead letters, oldest first.
    async fn dead_letters(&self, queue: &QueueName, limit: u32) -> StoreResult<Vec<Message>>;
    /// Nacks a leased message after a failed delivery, ready again after `delay` (a
    /// dead letter when out of attempts), keeping `error` on it; `false` when the
    /// receipt no longer holds the lease.
    async fn retry_later(
        &self,
        queue: &QueueName,
        receipt: Receipt,
        delay: Duration,
        error: String,
    ) -> StoreResult<bool>;
    /// Makes up to `limit` dead letters ready again with attempts reset to 0; returns how many.
    async fn redrive(&self, queue: &QueueName, limit: u32) -> StoreResult<u64>;
    /// Drops messages past their queue's retention, events past their stream's,
    /// idempotency keys past their window and tasks past their `keep_finished`;
    /// marks tasks whose message is gone unfinished as expired.
    async fn sweep(&self) -> StoreResult<u64>;
}

/// An event id: the event's position in its stream, from 1, without gaps.
pub type EventId = i64;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The stream; created, owned by `producer`, by its first event.
    pub stream: StreamName,
    /// The producer writing it.
    pub producer: String,
    /// The event's name (`event.name`), by which consumers read and ack.
    pub name: String,
    /// The JSON body exactly as posted.
    pub body: String,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this id.
    Event(EventId),
    /// The stream belongs to another producer; nothing was stored.
    Locked,
}

/// An event as read back.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its id.
    pub id: EventId,
    /// The JSON body exactly as posted.
    pub body: String,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom {
    /// After the consumer's committed offset for the event name.
    Offset,
    /// After this event id (replay); offsets are untouched.
    After(EventId),
}

/// One consumer's committed offset for one event name.
#[derive(Debug, Clone)]
pub struct ConsumerOffset {
    /// The consumer.
    pub consumer: String,
    /// The event name.
    pub event_name: String,
    /// The last acked event id.
    pub offset: EventId,
    /// Events of that name after the offset.
    pub lag: u64,
}

/// A stream with its owner, extent and consumers.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream.
    pub name: StreamName,
    /// The producer allowed to write it.
    pub owner: String,
    /// Events stored.
    pub length: u64,
    /// Oldest stored event.
    pub first_event: Option<EventId>,
    /// Newest event.
    pub last_event: Option<EventId>,
    /// Committed offsets (empty in listings).
    pub consumers: Vec<ConsumerOffset>,
    /// How long it keeps events.
    pub retention: StreamRetention,
}

/// Stream persistence.
#[async_trait]
pub trait StreamStore: Send + Sync {
    /// Appends an event if `producer` owns the stream (or creates it).
    async fn append(&self, event: NewEvent) -> StoreResult<Appended>;
    /// Up to `limit` events named `event_name`, oldest first, from `from`.
    async fn read_events(
        &self,
        stream: &StreamName,
        consumer: &str,
        event_name: &str,
        from: ReadFrom,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// Moves `consumer`'s offset for the event's name up to `event` (never back);
    /// `false` when the stream has no such event.
    async fn ack_event(
        &self,
        stream: &StreamName,
        consumer: &str,
        event: EventId,
    ) -> StoreResult<bool>;
    /// A stream with its consumers.
    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo>;
    /// Every stream, by name, without consumers.
    async fn list_streams(&self) -> StoreResult<Vec<StreamInfo>>;
    /// Gives the stream to another producer.
    async fn set_stream_owner(&self, stream: &StreamName, owner: &str) -> StoreResult<()>;
    /// Sets how long the stream keeps events; [`QueueStore::sweep`] drops the rest.
    async fn set_stream_retention(
        &self,
        stream: &StreamName,
        retention: StreamRetention,
    ) -> StoreResult<()>;
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

/// The upstream status a finish records.
pub(crate) fn upstream_status(finish: &TaskFinish) -> Option<u16> {
    match finish {
        TaskFinish::Succeeded {
            upstream_status, ..
        } => *upstream_status,
        _ => None,
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

/// Stored task status codes, shared by every backend's schema.
pub(crate) mod task_codes {
    /// Unfinished: pending, running or failed, as its message says; expired when it is gone.
    pub const UNFINISHED: i64 = 0;
    /// Completed by a worker.
    pub const SUCCEEDED: i64 = 1;
    /// Failed by a worker.
    pub const FAILED: i64 = 2;
    /// Its message was dropped unfinished.
    pub const EXPIRED: i64 = 3;
}

/// How a task ends when its message does without a worker's `complete` or `fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskEnding {
    /// Acked through the queue API: done, with no result.
    Acked,
    /// Dead-lettered: out of attempts.
    OutOfAttempts,
    /// Dropped (retention, purge, queue deleted) or popped, which no worker can answer.
    Dropped,
}

impl TaskEnding {
    /// The stored status code the task ends with.
    pub(crate) fn code(self) -> i64 {
        match self {
            TaskEnding::Acked => task_codes::SUCCEEDED,
            TaskEnding::OutOfAttempts => task_codes::FAILED,
            TaskEnding::Dropped => task_codes::EXPIRED,
        }
    }
}

/// The error a task failed by running out of attempts shows when no worker gave one.
pub(crate) const OUT_OF_ATTEMPTS: &str = r#""out of attempts""#;

/// A task message's state, as far as its task's status depends on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskMessage {
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
    pub(crate) fn new(state: i64, lease_running: bool, exhausted: bool) -> Self {
        TaskMessage {
            dead: state == 2,
            leased: state == 1 && lease_running,
            lease_ended_exhausted: state == 1 && !lease_running && exhausted,
        }
    }
}

/// A task's status from its stored code and, while unfinished, its message (`None`: gone).
pub(crate) fn task_status(code: i64, message: Option<TaskMessage>) -> TaskStatus {
    match (code, message) {
        (task_codes::SUCCEEDED, _) => TaskStatus::Succeeded,
        (task_codes::FAILED, _) => TaskStatus::Failed,
        (task_codes::EXPIRED, _) | (_, None) => TaskStatus::Expired,
        (_, Some(m)) if m.dead || m.lease_ended_exhausted => TaskStatus::Failed,
        (_, Some(m)) if m.leased => TaskStatus::Running,
        _ => TaskStatus::Pending,
    }
}

/// Task persistence. A task lives beside its queue message; finishing it settles
/// the message in the same transaction.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores the task and pushes its message in one transaction.
    async fn create_task(&self, task: NewTask) -> StoreResult<TaskCreated>;
    /// A task, unless it does not exist or has been dropped after `keep_finished`.
    async fn task(&self, id: &TaskId) -> StoreResult<Option<TaskRecord>>;
    /// Finishes (or retries) a task if `receipt` holds its message's lease.
    async fn finish_task(
        &self,
        id: &TaskId,
        receipt: Receipt,
        finish: TaskFinish,
    ) -> StoreResult<TaskFinished>;
}

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

/// Client persistence.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Stores a new client; `ClientExists` if the id is taken.
    async fn create_client(&self, client: &ClientRecord) -> StoreResult<()>;
    /// Every client, by id.
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    /// One client, if it exists.
    async fn client(&self, id: &ClientId) -> StoreResult<Option<ClientRecord>>;
    /// Deletes a client; `ClientNotFound` if there is none.
    async fn delete_client(&self, id: &ClientId) -> StoreResult<()>;
}

/// A complete backend.
#[async_trait]
pub trait Store: QueueStore + ClientStore + StreamStore + TaskStore {
    /// The backend's name as `/health` shows it, e.g. `sqlite`.
    fn backend(&self) -> &'static str;
    /// Checks the store answers, through the same path writes take.
    async fn ping(&self) -> StoreResult<()>;
    /// The wake-ups this store signals after commits that make messages ready.
    fn wakeups(&self) -> Arc<Wakeups>;
    /// Finishes every accepted write and releases the backend; later calls fail with `Unavailable`.
    async fn close(&self);
}

/// Opens the backend named by a store URL: `sqlite://PATH` or `postgres://...`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open(url).await?));
    }
    anyhow::bail!(
        "unsupported store URL {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
    )
}

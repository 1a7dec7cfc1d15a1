//! What the domain needs from storage: the traits every backend implements, in
//! domain types, and the error they fail with. No SQL, connection or backend type
//! crosses them, so every backend (the `store` module: SQLite, PostgreSQL; Redis next)
//! is a drop-in. A write method returns only after its write is durable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::clients::ClientRecord;
use super::clock::Millis;
use super::delivery::DeliverySettings;
use super::messages::{Message, PushOutcome, PushRequest, Receipt, Received, Settled, Settlement};
use super::queues::{QueueInfo, Upsert};
use super::streams::{
    Appended, EventId, NewEvent, ReadFrom, StoredEvent, StreamInfo, StreamRetention,
};
use super::tasks::{NewTask, TaskCreated, TaskFinish, TaskFinished, TaskId, TaskRecord};
use super::{ClientId, Grant, QueueName, QueueSettings, StreamName, Wakeups};

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

/// A change of settings computed from the current ones (`None`: the queue is new).
pub type SettingsUpdate = Box<dyn FnOnce(Option<QueueSettings>) -> QueueSettings + Send>;

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
    /// Up to `limit` of the oldest ready messages, oldest first, as a receive would
    /// take them, but read only: nothing is leased, no attempt is counted, no expired
    /// lease is released.
    async fn peek(&self, queue: &QueueName, limit: u32) -> StoreResult<Vec<Message>>;
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
    /// Replaces a client's grants; `ClientNotFound` if there is none. Announces a
    /// [`super::Revocation`] as a deletion does, since cached credentials hold the old grants.
    async fn set_client_grants(&self, id: &ClientId, grants: &[Grant]) -> StoreResult<()>;
    /// Replaces a client's secret hash; `ClientNotFound` if there is none. Announces a
    /// [`super::Revocation`] as a deletion does, so the old secret is refused at once.
    async fn set_client_secret(&self, id: &ClientId, secret_hash: &str) -> StoreResult<()>;
    /// The key tokens are signed with: the one stored, or else `candidate`, stored
    /// now, so that every node on this store signs and checks with the same key.
    async fn signing_key(&self, candidate: &[u8]) -> StoreResult<Vec<u8>>;
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
    /// Now, by the clock every node of this store shares (the database's, where
    /// there is one), in milliseconds since the Unix epoch.
    fn now(&self) -> Millis {
        crate::domain::clock::now_millis()
    }
    /// Finishes every accepted write and releases the backend; later calls fail with `Unavailable`.
    async fn close(&self);
}

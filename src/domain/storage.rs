//! What the domain needs from storage: the traits every backend implements, in
//! domain types, and the error they fail with. No SQL, connection or backend type
//! crosses them, so every backend (the `store` module: SQLite, PostgreSQL, Redis)
//! is a drop-in. A write method returns only after its write is durable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::clients::{AccessKeyId, AwsKeyRecord, ClientRecord};
use super::clock::Millis;
use super::delivery::DeliverySettings;
use super::log::{AppendOutcome, CreateLog, CreateOutcome, LogAppend, LogRead, LogState, Position};
use super::messages::{
    Message, MessageId, PushOutcome, PushRequest, Receipt, Received, Settled, Settlement,
};
use super::queues::{QueueInfo, Upsert};
use super::streams::{
    Appended, EventId, NewEvent, ReadFrom, StoredEvent, StreamInfo, StreamRetention,
};
use super::tasks::{NewTask, TaskCreated, TaskFinish, TaskFinished, TaskId, TaskRecord};
use super::{ClientId, Grant, QueueName, QueueSettings, SettingsPatch, StreamName, Wakeups};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue was never created (or was deleted).
    #[error("queue {0} not found")]
    QueueNotFound(String),
    /// The stream has no events yet (or never existed).
    #[error("stream {0} not found")]
    StreamNotFound(String),
    /// The stream was deleted while forks still branch off it: its name stays
    /// taken, and it answers nothing, until they are gone.
    #[error("stream {0} is deleted")]
    StreamGone(String),
    /// A client with this id exists already.
    #[error("client {0} exists")]
    ClientExists(String),
    /// No client has this id.
    #[error("client {0} not found")]
    ClientNotFound(String),
    /// No AWS access key has this id (for this client).
    #[error("AWS access key {0} not found")]
    AwsKeyNotFound(String),
    /// An AWS access key with this id exists already.
    #[error("AWS access key {0} exists")]
    AwsKeyExists(String),
    /// The store cannot take requests now (closed, unreachable, out of space); retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write may or may not have been stored (e.g. committed but the fsync failed,
    /// or the connection dropped during the commit); retrying may duplicate it.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// This backend does not do this yet; the text names what.
    #[error("{0} is not available on this store")]
    Unsupported(&'static str),
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

/// What a 2xx write means on a backend: the strongest loss it survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to a local file and fsynced before the answer (SQLite).
    Fsync,
    /// Committed by a database server, which keeps it as its own settings say (PostgreSQL).
    Commit,
    /// Logged and fsynced by Redis before it answers (`appendfsync always`).
    FsyncAlways,
    /// Logged by Redis and fsynced within a second (`appendfsync everysec`): a crash of
    /// the Redis host may lose the last second of writes.
    FsyncEverysec,
    /// Kept in memory only (no append-only file): a Redis restart loses every write
    /// since its last snapshot, if any.
    None,
}

impl Durability {
    /// The name `/health` and the logs give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Commit => "commit",
            Durability::FsyncAlways => "fsync-always",
            Durability::FsyncEverysec => "fsync-everysec",
            Durability::None => "none",
        }
    }

    /// Whether a write that was answered 2xx can be lost without a disk failing.
    pub fn may_lose_writes(self) -> bool {
        matches!(self, Durability::FsyncEverysec | Durability::None)
    }
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
    /// Up to `limit` of the oldest ready messages, oldest first, as a receive would
    /// take them, but read only: nothing is leased, no attempt is counted, no expired
    /// lease is released.
    async fn peek(&self, queue: &QueueName, limit: u32) -> StoreResult<Vec<Message>>;
    /// A queue with its counts.
    async fn queue_info(&self, queue: &QueueName) -> StoreResult<QueueInfo>;
    /// Every queue with its counts, by name.
    async fn list_queues(&self) -> StoreResult<Vec<QueueInfo>>;
    /// Creates the queue with `patch` over `defaults`, or applies `patch` over its
    /// current settings, read and written in one atomic step so concurrent changes
    /// compose. The caller has [validated](super::SettingsPatch::validate) the patch.
    async fn update_settings(
        &self,
        queue: &QueueName,
        patch: &SettingsPatch,
        defaults: &QueueSettings,
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
    /// Deletes the dead letters among `ids` (moved to another queue); returns how many went.
    async fn remove_dead(&self, queue: &QueueName, ids: &[MessageId]) -> StoreResult<u64>;
    /// Every queue's settings, by name; cheap (no counts), for periodic looks.
    async fn all_settings(&self) -> StoreResult<Vec<(QueueName, QueueSettings)>>;
    /// Drops messages past their queue's retention (expiring their unfinished tasks)
    /// and dead-letters expired leases out of attempts (failing their tasks), so tasks
    /// end even when nobody receives; returns how many messages were dropped.
    async fn sweep_messages(&self) -> StoreResult<u64>;
    /// Forgets idempotency keys past their window; returns how many.
    async fn sweep_idempotency_keys(&self) -> StoreResult<u64>;
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
    /// Sets how long the stream keeps events; [`StreamStore::sweep_events`] drops the rest.
    async fn set_stream_retention(
        &self,
        stream: &StreamName,
        retention: StreamRetention,
    ) -> StoreResult<()>;
    /// Drops events past their stream's retention; returns how many.
    async fn sweep_events(&self) -> StoreResult<u64>;
    /// The first event of the stream appended at or after `at`; `None` when every
    /// event is older. `StreamNotFound` for a stream that has none.
    async fn event_at(&self, stream: &StreamName, at: Millis) -> StoreResult<Option<EventId>>;
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
    /// Drops finished tasks past their `keep_finished`; returns how many.
    async fn sweep_tasks(&self) -> StoreResult<u64>;
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
    /// Deletes a client with its AWS access keys, in one atomic step;
    /// `ClientNotFound` if there is none.
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

/// AWS access keys: each belongs to one client and dies with it. A change announces
/// a [`super::Revocation`] of its client, so every node forgets what it cached.
#[async_trait]
pub trait AwsKeyStore: Send + Sync {
    /// Stores a new key of an existing client, checked in the same atomic step;
    /// `ClientNotFound` if the client is not there, `AwsKeyExists` if the id is taken.
    async fn create_aws_key(&self, key: &AwsKeyRecord) -> StoreResult<()>;
    /// One key, if it exists.
    async fn aws_key(&self, id: &AccessKeyId) -> StoreResult<Option<AwsKeyRecord>>;
    /// The keys of one client, oldest first; none for a client that does not exist.
    async fn list_aws_keys(&self, client: &ClientId) -> StoreResult<Vec<AwsKeyRecord>>;
    /// Deletes key `id` of `client`; `AwsKeyNotFound` if that client has no such key.
    async fn delete_aws_key(&self, client: &ClientId, id: &AccessKeyId) -> StoreResult<()>;
}

/// The byte log under every stream, as the Durable Streams protocol reaches it.
/// What a create, a fork or an append decides is `domain::log`'s; a backend reads
/// the state it needs, calls it and writes the outcome atomically. A stream whose
/// expiry has passed is gone: not found, and made anew by a create.
///
/// A fork copies what it takes of its source when it is made, so it reads on its own
/// from then on. A stream deleted while forks name it as their source stays as a
/// tombstone that holds its name (`StreamGone` to every call, `Conflict` to a
/// create or a fork) until the last of them is deleted; a tombstone that loses its
/// last fork goes, and so, in turn, may the tombstone of its own source.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Creates the stream with its first entries, or finds it as it is. With a
    /// `fork`, first copies what [`super::log::plan_fork`] says of the source.
    async fn create_log(
        &self,
        stream: &StreamName,
        request: CreateLog,
    ) -> StoreResult<CreateOutcome>;
    /// Appends as [`super::log::plan_append`] decides, with the producer's new state in the same write.
    async fn append_log(
        &self,
        stream: &StreamName,
        request: LogAppend,
    ) -> StoreResult<AppendOutcome>;
    /// The entries after `after`, up to `max_bytes` (at least one, if any); restarts an idle countdown.
    async fn read_log(
        &self,
        stream: &StreamName,
        after: Position,
        max_bytes: usize,
    ) -> StoreResult<LogRead>;
    /// The stream's state, without reading entries or touching it.
    async fn log_state(&self, stream: &StreamName) -> StoreResult<LogState>;
    /// Deletes the stream with its entries, offsets and producers, leaving a
    /// tombstone if forks branch off it; releases the tombstones it was the last
    /// fork of. `StreamGone` for a tombstone.
    async fn delete_log(&self, stream: &StreamName) -> StoreResult<()>;
}

/// What a [`RecordStore`] record or cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A stream subscription's definition; its cursor is the last event taken from the stream.
    Subscription,
    /// A schedule's definition; its cursor is the fire time of the last tick pushed.
    Schedule,
    /// No record; the cursor is an upstream's rate-limit bucket (its theoretical arrival time).
    RateLimit,
}

impl RecordKind {
    /// The name a backend files it under.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Subscription => "subscription",
            RecordKind::Schedule => "schedule",
            RecordKind::RateLimit => "rate",
        }
    }
}

/// Small named documents the domain keeps (subscriptions, schedules), each with an
/// optional cursor that every node moves by compare-and-swap. The body is the
/// domain's own JSON: a backend stores it, never reads it.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Stores `body` as record `name` of `kind`, replacing one there; `true` when it is new.
    async fn put_record(&self, kind: RecordKind, name: &str, body: &str) -> StoreResult<bool>;
    /// Record `name` of `kind`, if there is one.
    async fn record(&self, kind: RecordKind, name: &str) -> StoreResult<Option<String>>;
    /// Every record of `kind`, by name.
    async fn records(&self, kind: RecordKind) -> StoreResult<Vec<(String, String)>>;
    /// Deletes record `name` of `kind` with its cursor, in one atomic step; `false` when there was no record.
    async fn delete_record(&self, kind: RecordKind, name: &str) -> StoreResult<bool>;
    /// Cursor `name` of `kind`, if it was ever set (and not deleted).
    async fn cursor(&self, kind: RecordKind, name: &str) -> StoreResult<Option<i64>>;
    /// Sets cursor `name` of `kind` to `new` if it is `expected` now (`None`: not
    /// set), atomically for every node of the store; `true` when it did.
    async fn swap_cursor(
        &self,
        kind: RecordKind,
        name: &str,
        expected: Option<i64>,
        new: i64,
    ) -> StoreResult<bool>;
}

/// A complete backend.
#[async_trait]
pub trait Store:
    QueueStore + ClientStore + AwsKeyStore + StreamStore + TaskStore + LogStore + RecordStore
{
    /// The backend's name as `/health` shows it, e.g. `sqlite`.
    fn backend(&self) -> &'static str;
    /// What a 2xx write means on this backend, as `/health` reports it.
    fn durability(&self) -> Durability;
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

/// Runs every sweep of `store` once, each on its own: one that fails does not keep
/// the others from running. Returns what was dropped in all, and the first error.
pub async fn sweep(store: &dyn Store) -> (u64, Option<StoreError>) {
    let results = [
        store.sweep_messages().await,
        store.sweep_idempotency_keys().await,
        store.sweep_events().await,
        store.sweep_tasks().await,
    ];
    let mut swept = 0;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(n) => swept += n,
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    (swept, first_error)
}

//! The embedded store: SQLite in WAL mode, every answered write fsynced.
//!
//! Writes go through [`writer::GroupCommitWriter`] (one thread, one transaction per
//! batch, fsync before any answer); reads run on a small pool of read-only
//! connections on the blocking thread pool, never on the async runtime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use crate::domain::clock::{now_millis, Millis};
use crate::domain::delivery::DeliverySettings;
use crate::domain::log::{
    AppendOutcome, CreateLog, CreateOutcome, Expiry, LogAppend, LogRead, LogState, Position,
};
use crate::domain::streams::StreamRetention;
use crate::domain::wakeups::{is_queue_key, stream_key};
use crate::domain::{
    AccessKeyId, AwsKeyRecord, AwsKeyStore, ClientId, Grant, QueueName, QueueSettings, Revocation,
    StreamName, TaskId, Wakeups,
};
use crate::domain::{
    Appended, ClientRecord, ClientStore, EventId, Message, MessageId, NewEvent, NewTask,
    PushOutcome, PushRequest, QueueInfo, QueueStore, ReadFrom, Receipt, Received, Settled,
    Settlement, Store, StoreError, StoreResult, StoredEvent, StreamInfo, StreamStore, TaskCreated,
    TaskFinish, TaskFinished, TaskRecord, TaskStore, Upsert,
};
use crate::domain::{Durability, LogStore, RecordKind, RecordStore, SettingsPatch};

mod aws_keys;
mod checkpoint;
mod clients;
mod log;
mod queues;
mod records;
mod schema;
mod streams;
mod tasks;
mod writer;

use checkpoint::Checkpointer;
use writer::GroupCommitWriter;

/// Bytes the WAL file keeps after a restart (64 MiB).
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Read connections, and so reads running at once; more reads wait for one. Opening
/// a connection parses the schema, so they are kept, never opened per read.
const READERS: usize = 8;

/// The SQLite backend.
pub struct SqliteStore {
    path: PathBuf,
    writer: GroupCommitWriter,
    /// Dropped at close, after the writer's last commit.
    checkpointer: Mutex<Option<Checkpointer>>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per read connection, held while a read runs.
    reading: tokio::sync::Semaphore,
    wakeups: Arc<Wakeups>,
}

fn open_connection(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens the database at `path` as [`Self::open`] does, if the file exists and
    /// holds a Hopper schema; never creates one.
    pub fn open_existing(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = path.as_ref();
        anyhow::ensure!(
            path.is_file(),
            "no SQLite store at {}: the file does not exist (`hopper serve` creates it; \
             check --store, HOPPER_STORE or the configuration file's store)",
            path.display()
        );
        let version: i64 = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|conn| conn.query_row("PRAGMA user_version", [], |row| row.get(0)))
            .with_context(|| format!("cannot read the SQLite store {}", path.display()))?;
        anyhow::ensure!(
            version > 0,
            "{} is not a Hopper store: it holds no Hopper schema",
            path.display()
        );
        Self::open(path)
    }

    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the store directory {}", parent.display())
            })?;
        }
        let mut conn = open_connection(&path, OpenFlags::default())
            .with_context(|| format!("cannot open the SQLite store {}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "the SQLite store cannot use WAL mode (got {mode})"
        );
        schema::migrate(&mut conn)
            .with_context(|| format!("cannot migrate the SQLite store {}", path.display()))?;
        // The writer's commits skip SQLite's own WAL fsync; the writer's syncer thread
        // fsyncs this file before any answer (see `writer`).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints run on their own thread (see `checkpoint`), never in a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A WAL grown by a burst is cut back to this once it restarts.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let checkpointer = Checkpointer::start(
            open_connection(&path, OpenFlags::default())
                .context("cannot open the SQLite checkpoint connection")?,
            &path,
        )
        .context("cannot start the SQLite checkpoint thread")?;
        let mut wal_path = path.clone().into_os_string();
        wal_path.push("-wal");
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&wal_path)
            .with_context(|| format!("cannot open the WAL {}", Path::new(&wal_path).display()))?;
        let writer = GroupCommitWriter::start(conn, wal)
            .context("cannot start the SQLite writer threads")?;
        Ok(SqliteStore {
            path,
            writer,
            checkpointer: Mutex::new(Some(checkpointer)),
            readers: Mutex::new(Vec::new()),
            reading: tokio::sync::Semaphore::new(READERS),
            wakeups: Arc::new(Wakeups::default()),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.writer.write(op, || {}).await
    }

    /// A write that names the wake-up keys its changes concern (queues that may have
    /// ready messages, tasks that ended). Queue keys are signalled as soon as it
    /// commits: a receive looks only through the writer, whose answers wait until
    /// this write is durable. Every other key (a task's finish) wakes requests that
    /// read from the read pool, which sees a commit before its fsync: those are
    /// signalled once it is durable.
    /// `for_caller`: skipped if the caller is gone first (see the writer's `write_waking`).
    async fn write_waking<T: Send + 'static>(
        &self,
        for_caller: bool,
        op: impl FnOnce(&Connection, &mut Vec<String>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let keys: Arc<Mutex<Vec<String>>> = Arc::default();
        let collected = keys.clone();
        let op = move |conn: &Connection| {
            let mut wake = Vec::new();
            let result = op(conn, &mut wake);
            *collected.lock().unwrap_or_else(|e| e.into_inner()) = wake;
            result
        };
        let (committed_keys, wakeups) = (keys.clone(), self.wakeups.clone());
        let on_commit = move || {
            let mut keys = committed_keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.retain(|key| {
                let queue = is_queue_key(key);
                if queue {
                    wakeups.signal(key);
                }
                !queue
            });
        };
        let wakeups = self.wakeups.clone();
        let once_durable = move || {
            for key in keys.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                wakeups.signal(&key);
            }
        };
        self.writer
            .write_waking(for_caller, op, on_commit, once_durable)
            .await
    }

    /// A write that, once durable, wakes the requests waiting on `key` (a stream's readers).
    async fn write_signaling<T: Send + 'static>(
        &self,
        key: String,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let wakeups = self.wakeups.clone();
        self.writer.write(op, move || wakeups.signal(&key)).await
    }

    /// A write that changes client `client`: once durable, what the node has cached
    /// of that client is dropped.
    async fn write_revoking<T: Send + 'static>(
        &self,
        client: String,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let wakeups = self.wakeups.clone();
        self.writer
            .write(op, move || wakeups.revoke(Revocation::Client(client)))
            .await
    }

    async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let _permit = self
            .reading
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        // With a permit, a connection is free in the pool or may be opened.
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| StoreError::backend("open a read connection", e))?,
            };
            let result = op(&conn);
            Ok::<_, StoreError>((conn, result))
        })
        .await
        .map_err(|_| StoreError::Unavailable("a read was cancelled".into()))??;
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        result
    }
}

/// A random lease token per receive; receipts carry it, so an old lease's receipt never matches.
fn new_lease_token() -> i64 {
    rand::random()
}

/// What an argument of a forwarded method becomes for the writer thread or a read
/// thread, where the work runs: a borrowed value is copied, an owned one moved.
trait Owned {
    type Value: Send + 'static;
    fn owned(self) -> Self::Value;
}

impl<T: ToOwned + ?Sized> Owned for &T
where
    T::Owned: Send + 'static,
{
    type Value = T::Owned;
    fn owned(self) -> T::Owned {
        self.to_owned()
    }
}

macro_rules! moved {
    ($($value:ty),*) => {
        $(impl Owned for $value {
            type Value = $value;
            fn owned(self) -> $value {
                self
            }
        })*
    };
}

moved!(
    u32,
    Option<i64>,
    RecordKind,
    EventId,
    Duration,
    Option<Duration>,
    String,
    PushRequest,
    Receipt,
    Settlement,
    NewEvent,
    ReadFrom,
    StreamRetention,
    NewTask,
    TaskFinish
);

/// Writes a trait's methods that only forward to a function of `queues`, `streams`,
/// `tasks` or `clients`: each `fn NAME(&self, ARGS) -> T = VIA(FLAG), OP;` takes its
/// arguments as owned values ([`Owned`]) and runs `OP` through `self.VIA` (`read`,
/// `write`, `write_waking`, ...). Methods that do more follow in a block of their own.
macro_rules! forward {
    (impl $trait:ident for $store:ty {
        $(fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $out:ty
            = $via:ident $(($flag:expr))?, $op:expr;)*
    } $({ $($more:tt)* })?) => {
        #[async_trait]
        impl $trait for $store {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$out> {
                    $(let $arg = Owned::owned($arg);)*
                    self.$via($($flag,)? $op).await
                }
            )*
            $($($more)*)?
        }
    };
}

forward! {
    impl QueueStore for SqliteStore {
        fn push(&self, request: PushRequest) -> PushOutcome = write_waking(false),
            move |conn, wake| queues::push(conn, &request, now_millis(), wake);
        fn pop(&self, queue: &QueueName, count: u32) -> Vec<Message> = write_waking(true),
            move |conn, wake| queues::pop(conn, &queue, count, now_millis(), wake);
        fn receive(&self, queue: &QueueName, count: u32, lease: Option<Duration>) -> Received
            = write_waking(true), {
                let token = new_lease_token();
                move |conn, wake| {
                    queues::receive(conn, &queue, count, lease, token, now_millis(), wake)
                }
            };
        fn settle(&self, queue: &QueueName, receipts: &[Receipt], settlement: Settlement) -> Settled
            = write_waking(false), move |conn, wake| {
                queues::settle(conn, &queue, &receipts, settlement, now_millis(), wake)
            };
        fn peek(&self, queue: &QueueName, limit: u32) -> Vec<Message> = read,
            move |conn| queues::peek(conn, &queue, limit, now_millis());
        fn queue_info(&self, queue: &QueueName) -> QueueInfo = read,
            move |conn| queues::queue_info(conn, &queue, now_millis());
        fn list_queues(&self) -> Vec<QueueInfo> = read,
            |conn| queues::list_queues(conn, now_millis());
        fn update_settings(
            &self,
            queue: &QueueName,
            patch: &SettingsPatch,
            defaults: &QueueSettings,
        ) -> Upsert = write_waking(false), move |conn, wake| {
                queues::update_settings(conn, &queue, &patch, &defaults, now_millis(), wake)
            };
        fn settings(&self, queue: &QueueName) -> QueueSettings = read,
            move |conn| queues::settings(conn, &queue);
        fn delivering_queues(&self) -> Vec<(QueueName, DeliverySettings)> = read,
            queues::delivering_queues;
        fn delete_queue(&self, queue: &QueueName) -> u64 = write_waking(false),
            move |conn, wake| queues::clear(conn, &queue, true, now_millis(), wake);
        fn purge(&self, queue: &QueueName) -> u64 = write_waking(false),
            move |conn, wake| queues::clear(conn, &queue, false, now_millis(), wake);
        fn dead_letters(&self, queue: &QueueName, limit: u32) -> Vec<Message> = write_waking(false),
            move |conn, wake| queues::dead_letters(conn, &queue, limit, now_millis(), wake);
        fn retry_later(&self, queue: &QueueName, receipt: Receipt, delay: Duration, error: String)
            -> bool = write_waking(false), move |conn, wake| {
                queues::retry_later(conn, &queue, receipt, delay, &error, now_millis(), wake)
            };
        fn redrive(&self, queue: &QueueName, limit: u32) -> u64 = write_waking(false),
            move |conn, wake| queues::redrive(conn, &queue, limit, now_millis(), wake);
        fn remove_dead(&self, queue: &QueueName, ids: &[MessageId]) -> u64 = write,
            move |conn| queues::remove_dead(conn, &queue, &ids);
        fn all_settings(&self) -> Vec<(QueueName, QueueSettings)> = read, queues::all_settings;
        fn sweep_messages(&self) -> u64 = write_waking(false),
            |conn, wake| queues::sweep(conn, now_millis(), wake);
        fn sweep_idempotency_keys(&self) -> u64 = write,
            |conn| queues::sweep_idempotency_keys(conn, now_millis());
    }
}

forward! {
    impl StreamStore for SqliteStore {
        fn append(&self, event: NewEvent) -> Appended = write_signaling(stream_key(&event.stream)),
            move |conn| streams::append(conn, &event, now_millis());
        fn read_events(
            &self,
            stream: &StreamName,
            consumer: &str,
            event_name: &str,
            from: ReadFrom,
            limit: u32,
        ) -> Vec<StoredEvent> = read, move |conn| {
            streams::read(conn, &stream, &consumer, &event_name, from, limit)
        };
        fn ack_event(&self, stream: &StreamName, consumer: &str, event: EventId) -> bool = write,
            move |conn| streams::ack(conn, &stream, &consumer, event);
        fn stream_info(&self, stream: &StreamName) -> StreamInfo = read,
            move |conn| streams::info(conn, &stream);
        fn list_streams(&self) -> Vec<StreamInfo> = read, streams::list;
        fn set_stream_owner(&self, stream: &StreamName, owner: &str) -> () = write,
            move |conn| streams::set_owner(conn, &stream, &owner);
        fn set_stream_retention(&self, stream: &StreamName, retention: StreamRetention) -> ()
            = write, move |conn| streams::set_retention(conn, &stream, retention);
        fn sweep_events(&self) -> u64 = write, |conn| {
            let now = now_millis();
            Ok(streams::sweep(conn, now)? + log::sweep(conn, now)?)
        };
        fn event_at(&self, stream: &StreamName, at: Millis) -> Option<EventId> = read,
            move |conn| streams::event_at(conn, &stream, at);
    }
}

forward! {
    impl RecordStore for SqliteStore {
        fn put_record(&self, kind: RecordKind, name: &str, body: &str) -> bool = write,
            move |conn| records::put(conn, kind, &name, &body);
        fn record(&self, kind: RecordKind, name: &str) -> Option<String> = read,
            move |conn| records::get(conn, kind, &name);
        fn records(&self, kind: RecordKind) -> Vec<(String, String)> = read,
            move |conn| records::list(conn, kind);
        fn delete_record(&self, kind: RecordKind, name: &str) -> bool = write,
            move |conn| records::delete(conn, kind, &name);
        fn cursor(&self, kind: RecordKind, name: &str) -> Option<i64> = read,
            move |conn| records::cursor(conn, kind, &name);
        fn swap_cursor(&self, kind: RecordKind, name: &str, expected: Option<i64>, new: i64)
            -> bool = write, move |conn| records::swap(conn, kind, &name, expected, new);
    }
}

forward! {
    impl TaskStore for SqliteStore {
        fn create_task(&self, task: NewTask) -> TaskCreated = write_waking(false),
            move |conn, wake| tasks::create(conn, &task, now_millis(), wake);
        fn task(&self, id: &TaskId) -> Option<TaskRecord> = read,
            move |conn| tasks::get(conn, &id, now_millis());
        fn finish_task(&self, id: &TaskId, receipt: Receipt, finish: TaskFinish) -> TaskFinished
            = write_waking(false), move |conn, wake| {
                tasks::finish(conn, &id, receipt, &finish, now_millis(), wake)
            };
        fn sweep_tasks(&self) -> u64 = write, |conn| tasks::sweep(conn, now_millis());
    }
}

forward! {
    impl ClientStore for SqliteStore {
        fn create_client(&self, client: &ClientRecord) -> () = write,
            move |conn| clients::create(conn, &client);
        fn list_clients(&self) -> Vec<ClientRecord> = read, clients::list;
        fn client(&self, id: &ClientId) -> Option<ClientRecord> = read,
            move |conn| clients::get(conn, &id);
        fn delete_client(&self, id: &ClientId) -> () = write_revoking(id.to_string()),
            move |conn| clients::delete(conn, &id);
        fn set_client_grants(&self, id: &ClientId, grants: &[Grant]) -> ()
            = write_revoking(id.to_string()), move |conn| clients::set_grants(conn, &id, &grants);
        fn set_client_secret(&self, id: &ClientId, secret_hash: &str) -> ()
            = write_revoking(id.to_string()),
            move |conn| clients::set_secret(conn, &id, &secret_hash);
        fn signing_key(&self, candidate: &[u8]) -> Vec<u8> = write,
            move |conn| clients::signing_key(conn, TOKEN_KEY, &candidate);
    }
}

forward! {
    impl AwsKeyStore for SqliteStore {
        fn create_aws_key(&self, key: &AwsKeyRecord) -> () = write,
            move |conn| aws_keys::create(conn, &key);
        fn aws_key(&self, id: &AccessKeyId) -> Option<AwsKeyRecord> = read,
            move |conn| aws_keys::get(conn, &id);
        fn list_aws_keys(&self, client: &ClientId) -> Vec<AwsKeyRecord> = read,
            move |conn| aws_keys::list(conn, &client);
        fn delete_aws_key(&self, client: &ClientId, id: &AccessKeyId) -> ()
            = write_revoking(client.to_string()),
            move |conn| aws_keys::delete(conn, &client, &id);
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn create_log(
        &self,
        stream: &StreamName,
        request: CreateLog,
    ) -> StoreResult<CreateOutcome> {
        let stream = stream.clone();
        self.write_signaling(stream_key(&stream), move |conn| {
            log::create(conn, &stream, &request, now_millis())
        })
        .await
    }

    async fn append_log(
        &self,
        stream: &StreamName,
        request: LogAppend,
    ) -> StoreResult<AppendOutcome> {
        let stream = stream.clone();
        self.write_signaling(stream_key(&stream), move |conn| {
            log::append(conn, &stream, &request, now_millis())
        })
        .await
    }

    async fn read_log(
        &self,
        stream: &StreamName,
        after: Position,
        max_bytes: usize,
    ) -> StoreResult<LogRead> {
        let name = stream.clone();
        let read = self
            .read(move |conn| log::read(conn, &name, after, max_bytes, now_millis()))
            .await?;
        // Only a stream that expires when idle needs the write a touch is; the read
        // stands if the touch fails (the countdown then runs from the last one).
        if matches!(read.state.config.expiry, Expiry::Idle(_)) {
            let name = stream.clone();
            if let Err(error) = self
                .write(move |conn| log::touch(conn, &name, now_millis()))
                .await
            {
                tracing::warn!(%error, %stream, "cannot restart a stream's idle countdown");
            }
        }
        Ok(read)
    }

    async fn log_state(&self, stream: &StreamName) -> StoreResult<LogState> {
        let stream = stream.clone();
        self.read(move |conn| log::state(conn, &stream, now_millis()))
            .await
    }

    async fn delete_log(&self, stream: &StreamName) -> StoreResult<()> {
        let stream = stream.clone();
        self.write_signaling(stream_key(&stream), move |conn| {
            log::delete(conn, &stream, now_millis())
        })
        .await
    }
}

/// The name of the key login tokens are signed with.
const TOKEN_KEY: &str = "token";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn durability(&self) -> Durability {
        // Every commit is fsynced (the WAL, by the writer's second thread) before it is answered.
        Durability::Fsync
    }

    async fn ping(&self) -> StoreResult<()> {
        self.write(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| StoreError::backend("ping", e))
        })
        .await
    }

    fn wakeups(&self) -> Arc<Wakeups> {
        self.wakeups.clone()
    }

    async fn close(&self) {
        self.reading.close();
        self.writer.close().await;
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Joining waits for at most one checkpoint: off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(checkpointer)).await;
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

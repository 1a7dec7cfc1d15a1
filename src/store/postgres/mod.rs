//! The PostgreSQL store: many Hopper nodes share one database and behave as one
//! server. Every operation is one transaction on a pooled connection; leases are
//! claimed with `FOR UPDATE SKIP LOCKED`; wake-ups and client revocations cross
//! nodes with `LISTEN/NOTIFY` (see [`listener`]). A commit acknowledged by
//! PostgreSQL (`synchronous_commit` on) is what a 2xx stands for.
//!
//! URL: `postgres://user[:password]@host[:port]/db[?schema=NAME]`; `schema` keeps
//! Hopper's tables in their own schema (created if missing).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::batcher;
use crate::domain::clock::{now_millis, Millis};
use crate::domain::delivery::DeliverySettings;
use crate::domain::log::{
    AppendOutcome, CreateLog, CreateOutcome, Expiry, LogAppend, LogRead, LogState, Position,
};
use crate::domain::streams::StreamRetention;
use crate::domain::wakeups::stream_key;
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
use crate::domain::{Durability, LogStore, SettingsPatch};

mod aws_keys;
mod clients;
mod listener;
mod log;
mod queues;
mod records;
mod schema;
mod streams;
mod tasks;

/// Channel of queue wake-ups; the payload is the queue name.
const NOTIFY_CHANNEL: &str = "hopper_queues";
/// Channel of client deletions and changes (grants, secret); the payload is the client id.
const REVOKE_CHANNEL: &str = "hopper_clients";
/// Pooled connections per node; PostgreSQL's default `max_connections` (100) fits a few nodes.
const POOL_SIZE: usize = 32;
/// How long a request waits for a connection (or for a new one to open) before a 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Maps a PostgreSQL error: a lost or refused connection is `Unavailable` (503,
/// retry later); anything else, a bug or a constraint, a backend failure (500).
fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| {
        let connection_lost = error.is_closed()
            || std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>())
            || error.as_db_error().is_some_and(|db| {
                let code = db.code().code();
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            });
        if connection_lost {
            StoreError::Unavailable(format!("{context}: {error}"))
        } else {
            StoreError::backend(context, error)
        }
    }
}

/// Column `index` of `row`, read for `context`: a column whose type or name drifted
/// from what the code expects is a backend error, where `Row::get` would panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
    context: &'static str,
) -> StoreResult<T> {
    row.try_get(index).map_err(pg(context))
}

/// Maps the failure of a statement that commits: a connection lost then leaves the
/// outcome unknown (the commit may have happened), which a retry could duplicate.
fn pg_commit(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| match pg(context)(error) {
        StoreError::Unavailable(cause) => StoreError::OutcomeUnknown(cause),
        other => other,
    }
}

/// Splits Hopper's own `schema` parameter off a PostgreSQL URL.
fn parse_url(url: &str) -> anyhow::Result<(tokio_postgres::Config, Option<String>)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", value)) => schema = Some(value.to_owned()),
            _ => rest.push(pair),
        }
    }
    if let Some(schema) = &schema {
        anyhow::ensure!(
            !schema.is_empty()
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "invalid schema {schema:?} in the store URL: use lowercase letters, digits and _"
        );
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid PostgreSQL store URL: {e}"))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    // A silently dead connection (the LISTEN one above all) is noticed in seconds, not hours.
    config.keepalives_idle(Duration::from_secs(10));
    // Queue tables change size faster than statistics follow: right after a bulk
    // push the planner, still believing the table small, picks a bitmap scan plus a
    // sort of every waiting row (measured: 2 s per receive at 4.5M messages instead of
    // 1 ms). Every Hopper query has an index that yields its order, so these plans
    // are never needed.
    let mut options = String::from("-c enable_bitmapscan=off -c enable_sort=off");
    if let Some(schema) = &schema {
        options.push_str(&format!(" -c search_path={schema}"));
    }
    config.options(options);
    config.application_name("hopper");
    Ok((config, schema))
}

/// How often each node re-measures its clock against the database's.
const CLOCK_SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// The database's clock, read locally: the node's clock plus a measured offset.
/// Leases, delays and windows are compared across nodes, so every node must use one
/// clock; asking the database on every operation would cost a round trip each.
#[derive(Clone, Default)]
struct DbClock {
    offset_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl DbClock {
    fn now(&self) -> Millis {
        now_millis() + self.offset_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Measures the offset with one query, halving the round trip.
    async fn sync(&self, client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        let sent = now_millis();
        let row = client
            .query_one(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
                &[],
            )
            .await?;
        let received = now_millis();
        let database: i64 = row.try_get(0)?;
        let offset = database - (sent + received) / 2;
        self.offset_ms
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

async fn keep_clock_in_sync(pool: Pool, clock: DbClock, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CLOCK_SYNC_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        if let Ok(client) = pool.get().await {
            if let Err(error) = clock.sync(&client).await {
                tracing::warn!(%error, "postgres: cannot read the database clock");
            }
        }
    }
}

/// The PostgreSQL backend.
pub struct PostgresStore {
    clock: DbClock,
    pool: Pool,
    wakeups: Arc<Wakeups>,
    /// Pushes without idempotency keys, gathered into shared statements.
    pushes: batcher::Batcher<PushRequest, Vec<MessageId>>,
    /// Stream appends, gathered into shared transactions.
    appends: batcher::Batcher<NewEvent, Appended>,
    announcer: Announcer,
    stop_listening: CancellationToken,
}

/// Wakes waiters after a commit that may make messages of a queue ready: here at
/// once, and on other nodes through `NOTIFY` (see [`announce_loop`]).
#[derive(Clone)]
struct Announcer {
    wakeups: Arc<Wakeups>,
    names: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Announcer {
    fn announce(&self, queue: &QueueName) {
        self.announce_key(queue.to_string());
    }

    /// Announces any wake-up key (a queue name, or a stream's [`stream_key`]).
    fn announce_key(&self, key: String) {
        self.wakeups.signal(&key);
        let _ = self.names.send(key);
    }
}

/// Sends other nodes the wake-ups of committed changes, coalesced: names gathered
/// while one `NOTIFY` runs go out together in the next. A `NOTIFY` inside each
/// write transaction would serialize every commit on PostgreSQL's global notify
/// lock (measured: 1.6k pushes/s instead of tens of thousands).
async fn announce_loop(pool: Pool, mut names: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut pending = std::collections::BTreeSet::new();
    while let Some(name) = names.recv().await {
        pending.insert(name);
        while let Ok(name) = names.try_recv() {
            pending.insert(name);
        }
        let queues: Vec<String> = std::mem::take(&mut pending).into_iter().collect();
        let sent = match pool.get().await {
            Ok(client) => client
                .execute(
                    "SELECT pg_notify($1, q) FROM UNNEST($2::TEXT[]) AS q",
                    &[&NOTIFY_CHANNEL, &queues],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = sent {
            // Waiters elsewhere still wake at their deadline or their next readiness time.
            tracing::warn!(%error, "postgres: cannot announce wake-ups to other nodes");
        }
    }
}

impl PostgresStore {
    /// Opens the store as [`Self::open`] does, if the database is reachable and holds
    /// a Hopper schema (in the URL's `schema`, or on the search path); never creates one.
    pub async fn open_existing(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let (config, schema) = parse_url(url)?;
        let place = format!(
            "database {}{}",
            config.get_dbname().unwrap_or("(default)"),
            schema
                .as_deref()
                .map(|schema| format!(", schema {schema}"))
                .unwrap_or_default()
        );
        let (client, connection) = config
            .connect(NoTls)
            .await
            .with_context(|| format!("cannot connect to the PostgreSQL store ({place})"))?;
        let driver = tokio::spawn(connection);
        let found = client
            .query_one("SELECT to_regclass('hopper_schema') IS NOT NULL", &[])
            .await
            .with_context(|| format!("cannot read the PostgreSQL store ({place})"));
        drop(client);
        let _ = driver.await;
        let found: bool = found?
            .try_get(0)
            .with_context(|| format!("cannot read the PostgreSQL store ({place})"))?;
        anyhow::ensure!(
            found,
            "no Hopper store in the PostgreSQL {place}: it holds no Hopper schema \
             (`hopper serve` creates it; check --store, HOPPER_STORE or the configuration file's store)"
        );
        Self::open(url).await
    }

    /// Connects, migrates the schema (once across nodes) and starts listening for wake-ups.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let (config, schema) = parse_url(url)?;
        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .context("cannot connect to the PostgreSQL store")?;
        let driver = tokio::spawn(connection);
        schema::migrate(&mut client, schema.as_deref())
            .await
            .context("cannot migrate the PostgreSQL store")?;
        let clock = DbClock::default();
        clock
            .sync(&client)
            .await
            .context("cannot read the PostgreSQL clock")?;
        drop(client);
        let _ = driver.await;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .context("cannot build the PostgreSQL pool")?;
        let wakeups = Arc::new(Wakeups::default());
        let stop_listening = CancellationToken::new();
        tokio::spawn(listener::listen(
            config,
            wakeups.clone(),
            stop_listening.clone(),
        ));
        let (names_sender, names) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(announce_loop(pool.clone(), names));
        let announcer = Announcer {
            wakeups: wakeups.clone(),
            names: names_sender,
        };
        tokio::spawn(keep_clock_in_sync(
            pool.clone(),
            clock.clone(),
            stop_listening.clone(),
        ));
        Ok(PostgresStore {
            pushes: push_batcher(pool.clone(), announcer.clone(), clock.clone()),
            appends: append_batcher(pool.clone(), announcer.clone(), clock.clone()),
            clock,
            pool,
            wakeups,
            announcer,
            stop_listening,
        })
    }

    /// Announces the wake-up keys a write named (queues, tasks) when it committed,
    /// and passes its result on.
    fn waking<T>(&self, wake: Vec<String>, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_ok() {
            for key in wake {
                self.announcer.announce_key(key);
            }
        }
        result
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no PostgreSQL connection: {e}")))
    }
}

async fn pooled(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no PostgreSQL connection: {e}")))
}

/// Batched pushes: one self-committing statement per batch; wake-ups announced
/// after the commit, even if the callers are gone.
fn push_batcher(
    pool: Pool,
    announcer: Announcer,
    clock: DbClock,
) -> batcher::Batcher<PushRequest, Vec<MessageId>> {
    let known: Arc<queues::KnownQueues> = Arc::default();
    // Pushes to different queues, or even one queue, commit independently: several
    // batches in flight overlap their round trips and fsyncs.
    batcher::Batcher::start(8, move |requests: Arc<Vec<PushRequest>>| {
        let (pool, announcer, clock, known) = (
            pool.clone(),
            announcer.clone(),
            clock.clone(),
            known.clone(),
        );
        async move {
            let client = pooled(&pool).await?;
            let refs: Vec<&PushRequest> = requests.iter().collect();
            let outcomes = queues::push_many(&client, &refs, &known, clock.now()).await?;
            let mut announced = std::collections::HashSet::new();
            for (request, outcome) in requests.iter().zip(&outcomes) {
                if outcome.is_ok() && announced.insert(&request.queue) {
                    announcer.announce(&request.queue);
                }
            }
            Ok(outcomes)
        }
    })
}

/// Batched stream appends: one transaction per batch, each stream locked once.
fn append_batcher(
    pool: Pool,
    announcer: Announcer,
    clock: DbClock,
) -> batcher::Batcher<NewEvent, Appended> {
    // Appends to one stream serialize on its row lock, so few batches in flight
    // (each larger) beat many small ones waiting on each other.
    batcher::Batcher::start(2, move |events: Arc<Vec<NewEvent>>| {
        let (pool, announcer, clock) = (pool.clone(), announcer.clone(), clock.clone());
        async move {
            let mut client = pooled(&pool).await?;
            let tx = client.transaction().await.map_err(pg("begin"))?;
            let refs: Vec<&NewEvent> = events.iter().collect();
            let outcomes = streams::append_many(&tx, &refs, clock.now()).await?;
            tx.commit().await.map_err(pg_commit("commit"))?;
            let mut announced = std::collections::HashSet::new();
            for (event, outcome) in events.iter().zip(&outcomes) {
                if matches!(outcome, Appended::Event(_)) && announced.insert(&event.stream) {
                    announcer.announce_key(stream_key(&event.stream));
                }
            }
            Ok(outcomes.into_iter().map(Ok).collect())
        }
    })
}

/// Runs `$body` (an expression using `$tx`) in one transaction and commits it.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await.map_err(pg("begin"))?;
        let value = $body.await?;
        $tx.commit().await.map_err(pg_commit("commit"))?;
        Ok(value)
    }};
}

/// Writes a trait's methods that only run one function of `queues`, `streams`,
/// `tasks` or `clients` in a transaction: each `fn NAME(&self, ARGS) -> T = VIA |tx,
/// now, wake| OP;` runs `OP` in one transaction `tx`, with `now` the database's clock.
/// `transaction` commits it and answers what it did; `waking` collects the wake-up
/// keys it names in `wake` and signals them once it has committed; `revoking(ID)`
/// announces that client `ID` changed once it has. Methods that do more follow in a
/// block of their own.
macro_rules! forward {
    (impl $trait:ident for $store:ty {
        $(fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $out:ty
            = $via:ident $(($revoked:ident))? |$tx:ident $(, $now:ident $(, $wake:ident)?)?|
            $op:expr;)*
    } $({ $($more:tt)* })?) => {
        #[async_trait]
        impl $trait for $store {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$out> {
                    forward!(@run self, $via $(($revoked))?, $tx, [$($now)?], [$($($wake)?)?], $op)
                }
            )*
            $($($more)*)?
        }
    };
    (@run $store:expr, transaction, $tx:ident, [$($now:ident)?], [], $op:expr) => {{
        $(let $now = $store.clock.now();)?
        transaction!($store, |$tx| $op)
    }};
    (@run $store:expr, waking, $tx:ident, [$now:ident], [$wake:ident], $op:expr) => {{
        let (mut $wake, $now) = (Vec::new(), $store.clock.now());
        let result = transaction!($store, |$tx| $op);
        $store.waking($wake, result)
    }};
    (@run $store:expr, revoking($id:ident), $tx:ident, [], [], $op:expr) => {{
        let changed: StoreResult<()> = transaction!($store, |$tx| $op);
        changed?;
        $store.wakeups.revoke(Revocation::Client($id.to_string()));
        Ok(())
    }};
}

forward! {
    impl QueueStore for PostgresStore {
        fn pop(&self, queue: &QueueName, count: u32) -> Vec<Message>
            = waking |tx, now, wake| queues::pop(&tx, queue, count, now, &mut wake);
        fn settle(&self, queue: &QueueName, receipts: &[Receipt], settlement: Settlement)
            -> Settled = waking |tx, now, wake| {
                queues::settle(&tx, queue, receipts, settlement, now, &mut wake)
            };
        fn peek(&self, queue: &QueueName, limit: u32) -> Vec<Message>
            = transaction |tx, now| queues::peek(&tx, queue, limit, now);
        fn queue_info(&self, queue: &QueueName) -> QueueInfo
            = transaction |tx, now| queues::queue_info(&tx, queue, now);
        fn list_queues(&self) -> Vec<QueueInfo>
            = transaction |tx, now| queues::list_queues(&tx, now);
        fn update_settings(
            &self,
            queue: &QueueName,
            patch: &SettingsPatch,
            defaults: &QueueSettings,
        ) -> Upsert = waking |tx, now, wake| {
            queues::update_settings(&tx, queue, patch, defaults, now, &mut wake)
        };
        fn settings(&self, queue: &QueueName) -> QueueSettings
            = transaction |tx| queues::settings(&tx, queue);
        fn delivering_queues(&self) -> Vec<(QueueName, DeliverySettings)>
            = transaction |tx| queues::delivering_queues(&tx);
        fn delete_queue(&self, queue: &QueueName) -> u64
            = waking |tx, now, wake| queues::clear(&tx, queue, true, now, &mut wake);
        fn purge(&self, queue: &QueueName) -> u64
            = waking |tx, now, wake| queues::clear(&tx, queue, false, now, &mut wake);
        fn dead_letters(&self, queue: &QueueName, limit: u32) -> Vec<Message>
            = waking |tx, now, wake| queues::dead_letters(&tx, queue, limit, now, &mut wake);
        fn retry_later(&self, queue: &QueueName, receipt: Receipt, delay: Duration, error: String)
            -> bool = waking |tx, now, wake| {
                queues::retry_later(&tx, queue, receipt, delay, &error, now, &mut wake)
            };
        fn redrive(&self, queue: &QueueName, limit: u32) -> u64
            = waking |tx, now, wake| queues::redrive(&tx, queue, limit, now, &mut wake);
        fn remove_dead(&self, queue: &QueueName, ids: &[MessageId]) -> u64
            = transaction |tx| queues::remove_dead(&tx, queue, ids);
        fn all_settings(&self) -> Vec<(QueueName, QueueSettings)>
            = transaction |tx| queues::all_settings(&tx);
        fn sweep_messages(&self) -> u64 = waking |tx, now, wake| queues::sweep(&tx, now, &mut wake);
        fn sweep_idempotency_keys(&self) -> u64
            = transaction |tx, now| queues::sweep_idempotency_keys(&tx, now);
    } {
        async fn push(&self, request: PushRequest) -> StoreResult<PushOutcome> {
            if request.idempotency_key.is_none() {
                // The batcher announces after its commit, even if this caller has gone.
                return self.pushes.submit(request).await.map(PushOutcome::Created);
            }
            let mut wake = Vec::new();
            let now = self.clock.now();
            let outcome = transaction!(self, |tx| queues::push(&tx, &request, now, &mut wake));
            self.waking(wake, outcome)
        }

        async fn receive(
            &self,
            queue: &QueueName,
            count: u32,
            lease: Option<Duration>,
        ) -> StoreResult<Received> {
            let token: i64 = rand::random();
            let (mut wake, now) = (Vec::new(), self.clock.now());
            let received = transaction!(self, |tx| queues::receive(
                &tx, queue, count, lease, token, now, &mut wake
            ));
            self.waking(wake, received)
        }
    }
}

forward! {
    impl StreamStore for PostgresStore {
        fn read_events(
            &self,
            stream: &StreamName,
            consumer: &str,
            event_name: &str,
            from: ReadFrom,
            limit: u32,
        ) -> Vec<StoredEvent> = transaction |tx| {
            streams::read(&tx, stream, consumer, event_name, from, limit)
        };
        fn ack_event(&self, stream: &StreamName, consumer: &str, event: EventId) -> bool
            = transaction |tx| streams::ack(&tx, stream, consumer, event);
        fn stream_info(&self, stream: &StreamName) -> StreamInfo
            = transaction |tx| streams::info(&tx, stream);
        fn list_streams(&self) -> Vec<StreamInfo> = transaction |tx| streams::list(&tx);
        fn set_stream_owner(&self, stream: &StreamName, owner: &str) -> ()
            = transaction |tx| streams::set_owner(&tx, stream, owner);
        fn set_stream_retention(&self, stream: &StreamName, retention: StreamRetention) -> ()
            = transaction |tx| streams::set_retention(&tx, stream, retention);
        fn sweep_events(&self) -> u64 = transaction |tx, now| async {
            let swept = streams::sweep(&tx, now).await?;
            Ok::<_, StoreError>(swept + log::sweep(&tx, now).await?)
        };
    } {
        async fn event_at(&self, stream: &StreamName, at: crate::domain::clock::Millis) -> StoreResult<Option<EventId>> {
            records::event_at(self, stream, at).await
        }
        async fn append(&self, event: NewEvent) -> StoreResult<Appended> {
            // The batcher announces after its commit, even if this caller has gone.
            self.appends.submit(event).await
        }
    }
}

forward! {
    impl TaskStore for PostgresStore {
        fn create_task(&self, task: NewTask) -> TaskCreated
            = waking |tx, now, wake| tasks::create(&tx, &task, now, &mut wake);
        fn task(&self, id: &TaskId) -> Option<TaskRecord>
            = transaction |tx, now| tasks::get(&tx, id, now);
        fn finish_task(&self, id: &TaskId, receipt: Receipt, finish: TaskFinish) -> TaskFinished
            = waking |tx, now, wake| tasks::finish(&tx, id, receipt, &finish, now, &mut wake);
        fn sweep_tasks(&self) -> u64 = transaction |tx, now| tasks::sweep(&tx, now);
    }
}

forward! {
    impl ClientStore for PostgresStore {
        fn create_client(&self, client: &ClientRecord) -> ()
            = transaction |tx| clients::create(&tx, client);
        fn list_clients(&self) -> Vec<ClientRecord> = transaction |tx| clients::list(&tx);
        fn client(&self, id: &ClientId) -> Option<ClientRecord>
            = transaction |tx| clients::get(&tx, id);
        fn delete_client(&self, id: &ClientId) -> () = revoking(id) |tx| clients::delete(&tx, id);
        fn set_client_grants(&self, id: &ClientId, grants: &[Grant]) -> ()
            = revoking(id) |tx| clients::set_grants(&tx, id, grants);
        fn set_client_secret(&self, id: &ClientId, secret_hash: &str) -> ()
            = revoking(id) |tx| clients::set_secret(&tx, id, secret_hash);
        fn signing_key(&self, candidate: &[u8]) -> Vec<u8>
            = transaction |tx| clients::signing_key(&tx, TOKEN_KEY, candidate);
    }
}

forward! {
    impl AwsKeyStore for PostgresStore {
        fn create_aws_key(&self, key: &AwsKeyRecord) -> ()
            = transaction |tx| aws_keys::create(&tx, key);
        fn aws_key(&self, id: &AccessKeyId) -> Option<AwsKeyRecord>
            = transaction |tx| aws_keys::get(&tx, id);
        fn list_aws_keys(&self, client: &ClientId) -> Vec<AwsKeyRecord>
            = transaction |tx| aws_keys::list(&tx, client);
        fn delete_aws_key(&self, client: &ClientId, id: &AccessKeyId) -> ()
            = revoking(client) |tx| aws_keys::delete(&tx, client, id);
    }
}

/// The name of the key login tokens are signed with.
const TOKEN_KEY: &str = "token";

/// The byte log: each call one transaction; a write wakes the stream's readers on
/// every node once it has committed.
#[async_trait]
impl LogStore for PostgresStore {
    async fn create_log(
        &self,
        stream: &StreamName,
        request: CreateLog,
    ) -> StoreResult<CreateOutcome> {
        let now = self.clock.now();
        let created = transaction!(self, |tx| log::create(&tx, stream, &request, now));
        self.waking(vec![stream_key(stream)], created)
    }

    async fn append_log(
        &self,
        stream: &StreamName,
        request: LogAppend,
    ) -> StoreResult<AppendOutcome> {
        let now = self.clock.now();
        let appended = transaction!(self, |tx| log::append(&tx, stream, &request, now));
        match appended {
            Ok(outcome @ AppendOutcome::Appended { .. }) => {
                self.waking(vec![stream_key(stream)], Ok(outcome))
            }
            other => other,
        }
    }

    async fn read_log(
        &self,
        stream: &StreamName,
        after: Position,
        max_bytes: usize,
    ) -> StoreResult<LogRead> {
        let now = self.clock.now();
        let read: LogRead = transaction!(self, |tx| log::read(&tx, stream, after, max_bytes, now))?;
        // Only a stream that expires when idle needs the write a touch is; the read
        // stands if the touch fails (the countdown then runs from the last one).
        if matches!(read.state.config.expiry, Expiry::Idle(_)) {
            let touched: StoreResult<()> = transaction!(self, |tx| log::touch(&tx, stream, now));
            if let Err(error) = touched {
                tracing::warn!(%error, %stream, "cannot restart a stream's idle countdown");
            }
        }
        Ok(read)
    }

    async fn log_state(&self, stream: &StreamName) -> StoreResult<LogState> {
        let now = self.clock.now();
        transaction!(self, |tx| log::state(&tx, stream, now))
    }

    async fn delete_log(&self, stream: &StreamName) -> StoreResult<()> {
        let now = self.clock.now();
        let deleted = transaction!(self, |tx| log::delete(&tx, stream, now));
        self.waking(vec![stream_key(stream)], deleted)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn durability(&self) -> Durability {
        // A write is answered once its transaction commits; what a commit survives
        // (`synchronous_commit`, replicas) is the database's own setting.
        Durability::Commit
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg("ping"))?;
        Ok(())
    }

    fn wakeups(&self) -> Arc<Wakeups> {
        self.wakeups.clone()
    }

    fn now(&self) -> Millis {
        self.clock.now()
    }

    async fn close(&self) {
        self.stop_listening.cancel();
        self.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_taken_off_the_url() {
        let (config, schema) = parse_url("postgres://u@127.0.0.1:5432/test?schema=t_1").unwrap();
        assert_eq!(schema.as_deref(), Some("t_1"));
        assert_eq!(config.get_dbname(), Some("test"));
        assert!(parse_url("postgres://u@h/db?schema=x;drop").is_err());
        assert_eq!(parse_url("postgres://u@h/db").unwrap().1, None);
    }
}

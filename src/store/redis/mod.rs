//! The Redis store, on one Redis server or a Redis Cluster: any number of Hopper
//! nodes share it and behave as one server. Every operation that reads and changes
//! state is one Lua script (`lua/`), so it is atomic (the byte log decides in Rust
//! between a read and a write guarded by it: see [`log`]); every key of one queue or
//! stream shares one hash tag (`{q:orders}`), so each script touches one cluster
//! slot, and no push, receive or append goes through a store-wide key. Scripts
//! take their time from Redis (`TIME`), so nodes need not agree on the clock, and
//! publish wake-ups that every node subscribes to (see [`listener`]).
//!
//! A 2xx means what the server's persistence promises: read at start from
//! `appendonly` and `appendfsync` ([`Durability`]), and with `wait_replicas=N` each
//! write also waits for `WAIT N` before it answers.
//!
//! URLs: `redis://[user:pass@]host:port[/db]`, `rediss://...` for TLS, and
//! `redis+cluster://[user:pass@]host:port[,host:port...]` (`rediss+cluster://` for
//! TLS). Options after `?`: `prefix=P` puts every key under `P` (several Hopper
//! installations on one Redis, or tests), `wait_replicas=N`, and with TLS
//! `ca_file=PATH`: the PEM file of the CA that signed the server's certificate,
//! trusted instead of the system's roots (a private CA).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use tokio_util::sync::CancellationToken;

use super::batcher::Batcher;
use crate::domain::clients::ClientRecord;
use crate::domain::{
    ClientId, ClientStore, Durability, Grant, MessageId, PushRequest, Revocation, Store,
    StoreError, StoreResult, Wakeups,
};

/// A script of `lua/`: the shared part for its kind (`queue.lua`, `stream.lua`, and
/// for the byte log `stream.lua` then `log.lua`) and its own.
macro_rules! lua {
    ($prelude:literal, $second:literal, $file:literal) => {
        std::sync::LazyLock::new(|| {
            redis::Script::new(concat!(
                include_str!(concat!("lua/", $prelude)),
                "\n",
                include_str!(concat!("lua/", $second)),
                "\n",
                include_str!(concat!("lua/", $file))
            ))
        })
    };
    ($prelude:literal, $file:literal) => {
        std::sync::LazyLock::new(|| {
            redis::Script::new(concat!(
                include_str!(concat!("lua/", $prelude)),
                "\n",
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

mod aws_keys;
mod listener;
mod log;
mod queues;
mod records;
mod reply;
mod streams;

use reply::Fields;

/// How long a command may take before the store counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Names read per `SSCAN` of a registry.
const REGISTRY_PAGE: u32 = 1000;
/// How long a write waits for its replicas with `wait_replicas`.
const WAIT_TIMEOUT_MS: u64 = 2000;

/// One connection to a server or a cluster, multiplexed: cheap to clone, reconnecting by itself.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A store URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `redis://` or `rediss://` URLs of the server, or of each cluster seed node.
    nodes: Vec<String>,
    /// Whether the nodes are a cluster's.
    cluster: bool,
    /// Put before every key.
    prefix: String,
    /// Replicas each write waits for.
    wait_replicas: u32,
    /// The PEM file of the CA to trust instead of the system's roots.
    ca_file: Option<String>,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let (url, query) = url.split_once('?').unwrap_or((url, ""));
        let mut target = Target {
            nodes: Vec::new(),
            cluster: false,
            prefix: String::new(),
            wait_replicas: 0,
            ca_file: None,
        };
        let mut rest = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "prefix" => {
                    if value.contains(['{', '}']) {
                        anyhow::bail!("the Redis key prefix {value:?} must not contain {{ or }}: they choose a key's cluster slot");
                    }
                    target.prefix = value.into_owned();
                }
                "wait_replicas" => {
                    target.wait_replicas = value.parse().map_err(|_| {
                        anyhow::anyhow!("wait_replicas must be a whole number, not {value:?}")
                    })?;
                }
                "ca_file" => target.ca_file = Some(value.into_owned()),
                _ => rest.push(format!("{key}={value}")),
            }
        }
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!("?{}", rest.join("&"))
        };
        let cluster = url
            .strip_prefix("redis+cluster://")
            .map(|hosts| ("redis", hosts))
            .or_else(|| {
                url.strip_prefix("rediss+cluster://")
                    .map(|hosts| ("rediss", hosts))
            });
        if let Some((scheme, hosts)) = cluster {
            let hosts = hosts.trim_end_matches('/');
            let (credentials, hosts) = match hosts.rsplit_once('@') {
                Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
                None => (String::new(), hosts),
            };
            target.cluster = true;
            for host in hosts.split(',').filter(|h| !h.is_empty()) {
                target
                    .nodes
                    .push(format!("{scheme}://{credentials}{host}{rest}"));
            }
            if target.nodes.is_empty() {
                anyhow::bail!("a redis+cluster:// URL names at least one host:port");
            }
        } else {
            target.nodes.push(format!("{url}{rest}"));
        }
        if target.ca_file.is_some() && !target.nodes[0].starts_with("rediss://") {
            anyhow::bail!("ca_file is for a TLS store (rediss:// or rediss+cluster://), and the store is {url:?}");
        }
        Ok(target)
    }

    /// The CA certificate of `ca_file`, read now, so a missing file stops the start.
    fn root_cert(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read ca_file {path:?}: {e}"))
            })
            .transpose()
    }
}

/// A client for `url`; with `root_cert` (PEM), the server's certificate must be
/// signed by that CA.
fn client(url: &str, root_cert: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match root_cert {
        Some(pem) => redis::Client::build_with_tls(url, certificates(pem)),
        None => redis::Client::open(url),
    }
}

fn certificates(root_cert: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert.to_vec()),
    }
}

/// The Redis store: its state, shared with the push batcher's workers.
pub struct RedisStore {
    core: Arc<Core>,
    /// Plain pushes (no idempotency key, no task), one script per queue and batch.
    pushes: Batcher<PushRequest, Vec<MessageId>>,
}

impl std::ops::Deref for RedisStore {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// What every operation needs: the connection, the key names, this node's wake-ups.
pub struct Core {
    connection: Connection,
    keys: Keys,
    /// This node's id in published wake-ups, so the node skips its own.
    node: String,
    wakeups: Arc<Wakeups>,
    durability: Durability,
    wait_replicas: u32,
    /// Names this node has put in the registries of queues, streams and task queues:
    /// a registry is one key, written only the first time a name is seen.
    registered: Mutex<HashSet<String>>,
    stop: CancellationToken,
}

/// Key names. Per queue and per stream, every key shares one hash tag.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn queue_base(&self, queue: &str) -> String {
        format!("{}{{q:{queue}}}", self.prefix)
    }

    /// A queue's keys, in the order `lua/queue.lua` lists them.
    fn queue(&self, queue: &str) -> Vec<String> {
        let base = self.queue_base(queue);
        [
            "cfg",
            "body",
            "att",
            "enq",
            "tok",
            "task",
            "err",
            "ready",
            "delayed",
            "leased",
            "dead",
            "idem",
            "idemx",
            "tasks",
            "topen",
            "done:succeeded",
            "done:failed",
            "done:expired",
            "grp",
            "meta",
            "first",
            "gidx",
        ]
        .iter()
        .map(|part| format!("{base}:{part}"))
        .collect()
    }

    /// A stream's keys, in the order `lua/stream.lua` lists them; with `event_name`,
    /// that name's index last.
    fn stream(&self, stream: &str, event_name: Option<&str>) -> Vec<String> {
        let base = format!("{}{{s:{stream}}}", self.prefix);
        let mut keys: Vec<String> = ["meta", "ev", "names", "all", "times", "offsets"]
            .iter()
            .map(|part| format!("{base}:{part}"))
            .collect();
        if let Some(name) = event_name {
            keys.push(format!("{base}:by:{name}"));
        }
        keys
    }

    /// A stream's keys as the byte log's scripts take them (`lua/log.lua`): the
    /// first six of [`Keys::stream`], then its producers, forks and tombstone.
    fn log(&self, stream: &str) -> Vec<String> {
        let mut keys = self.stream(stream, None);
        let base = format!("{}{{s:{stream}}}", self.prefix);
        keys.extend(
            ["prod", "forks", "gone"]
                .iter()
                .map(|part| format!("{base}:{part}")),
        );
        keys
    }

    fn global(&self, name: &str) -> String {
        format!("{}hopper:{name}", self.prefix)
    }

    fn queues(&self) -> String {
        self.global("queues")
    }

    fn streams(&self) -> String {
        self.global("streams")
    }

    /// Queues that ever held a task; a deleted queue's tasks stay until their time is up.
    fn task_queues(&self) -> String {
        self.global("task-queues")
    }

    /// Which queue a task is on: the one lookup by task id alone.
    fn task_index(&self, task: &str) -> String {
        self.global(&format!("task:{task}"))
    }

    fn clients(&self) -> String {
        self.global("clients")
    }

    /// Set when the store is first opened: when, in milliseconds.
    fn marker(&self) -> String {
        self.global("store")
    }

    fn signing_key(&self) -> String {
        self.global("signing-key")
    }

    fn wake_channel(&self) -> String {
        self.global("wake")
    }

    fn revoke_channel(&self) -> String {
        self.global("revoke")
    }
}

/// Maps a Redis error: no connection is `Unavailable` (503, retry later); a write
/// whose connection broke before the answer may or may not have happened.
fn redis_error(context: &'static str, write: bool) -> impl Fn(redis::RedisError) -> StoreError {
    move |error| {
        if error.is_connection_refusal() {
            StoreError::Unavailable(format!("{context}: {error}"))
        } else if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
            if write {
                StoreError::OutcomeUnknown(format!("{context}: {error}"))
            } else {
                StoreError::Unavailable(format!("{context}: {error}"))
            }
        } else {
            StoreError::backend(context, error)
        }
    }
}

impl RedisStore {
    /// Connects to the server or cluster of `url`, reads its persistence settings,
    /// starts the node's subscription to wake-ups and revocations, and marks the
    /// store as Hopper's (see [`open_existing`](Self::open_existing)).
    pub async fn open(url: &str) -> anyhow::Result<RedisStore> {
        let store = RedisStore::connect(url).await?;
        store
            // Not waited for: the mark only tells `open_existing` that Hopper was here.
            .command::<()>(
                "mark the store",
                false,
                redis::cmd("SET")
                    .arg(store.keys.marker())
                    .arg(crate::domain::clock::now_millis())
                    .arg("NX"),
            )
            .await?;
        Ok(store)
    }

    async fn connect(url: &str) -> anyhow::Result<RedisStore> {
        let target = Target::parse(url)?;
        let root_cert = target.root_cert()?;
        let connection = if target.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(target.nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT);
            if let Some(pem) = &root_cert {
                builder = builder.certs(certificates(pem));
            }
            let client = builder.build()?;
            Connection::Cluster(client.get_async_connection().await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to the Redis Cluster at {:?}: {e}",
                    target.nodes
                )
            })?)
        } else {
            let client = client(&target.nodes[0], root_cert.as_deref())?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            Connection::Single(
                client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?,
            )
        };
        let durability = read_durability(&target, root_cert.as_deref()).await;
        if durability.may_lose_writes() {
            tracing::warn!(
                durability = durability.as_str(),
                "redis: acknowledged writes can be lost: {}",
                match durability {
                    Durability::None => "the server keeps no append-only file (appendonly no)",
                    _ => "the append-only file is fsynced once a second (appendfsync everysec)",
                }
            );
        }
        let keys = Keys {
            prefix: target.prefix.clone(),
        };
        let wakeups = Arc::new(Wakeups::default());
        let stop = CancellationToken::new();
        let node = format!("{:016x}", rand::random::<u64>());
        tokio::spawn(listener::listen(
            target.nodes.clone(),
            root_cert,
            [keys.wake_channel(), keys.revoke_channel()],
            node.clone(),
            wakeups.clone(),
            stop.clone(),
        ));
        let core = Arc::new(Core {
            connection,
            keys,
            node,
            wakeups,
            durability,
            wait_replicas: target.wait_replicas,
            registered: Mutex::default(),
            stop,
        });
        Ok(RedisStore {
            pushes: queues::push_batcher(core.clone()),
            core,
        })
    }

    /// Connects as [`open`](Self::open) does, but only to a store Hopper has opened
    /// before (it holds Hopper's mark): a mistyped prefix or database number is
    /// refused, naming it, instead of starting an empty store.
    pub async fn open_existing(url: &str) -> anyhow::Result<RedisStore> {
        let store = RedisStore::connect(url).await?;
        let exists: i64 = store
            .command(
                "look for Hopper's keys",
                false,
                redis::cmd("EXISTS").arg(store.keys.marker()),
            )
            .await?;
        if exists == 0 {
            store.stop.cancel();
            anyhow::bail!(
                "no Hopper store at {url}: it holds no key {:?} (start `hopper serve` on it first, or check the database number and prefix)",
                store.keys.marker()
            );
        }
        Ok(store)
    }
}

impl Core {
    fn connection(&self) -> StoreResult<Connection> {
        if self.stop.is_cancelled() {
            return Err(StoreError::Unavailable("store closed".into()));
        }
        Ok(self.connection.clone())
    }

    /// Runs one command.
    async fn command<T: redis::FromRedisValue>(
        &self,
        context: &'static str,
        write: bool,
        cmd: &Cmd,
    ) -> StoreResult<T> {
        let mut connection = self.connection()?;
        let value = cmd
            .query_async(&mut connection)
            .await
            .map_err(redis_error(context, write))?;
        if write {
            // The command's key (its first argument) says which node has the write.
            let key = match cmd.args_iter().nth(1) {
                Some(redis::Arg::Simple(key)) => key.to_vec(),
                _ => Vec::new(),
            };
            self.replicated(&mut connection, &key).await?;
        }
        Ok(value)
    }

    /// Runs a script on `keys` with the common arguments (see `lua/queue.lua`) and
    /// `args`; signals this node's waiters of the keys it woke, and answers the rest
    /// of its reply. A script that `writes` waits for `wait_replicas` replicas.
    async fn script(
        &self,
        context: &'static str,
        script: &Script,
        writes: bool,
        keys: &[String],
        wake_key: &str,
        args: &[&[u8]],
    ) -> StoreResult<Fields> {
        let started = std::time::Instant::now();
        let fields = self
            .run_script(context, script, writes, keys, wake_key, args)
            .await?;
        if writes {
            // Each write is its own atomic step: a batch of one.
            crate::telemetry::committed_batch(1);
            crate::telemetry::committed_in(started.elapsed());
        }
        Ok(fields)
    }

    /// [`script`](Self::script) without counting its write as a batch: the batcher
    /// counts the batches it writes this way.
    async fn run_script(
        &self,
        context: &'static str,
        script: &Script,
        writes: bool,
        keys: &[String],
        wake_key: &str,
        args: &[&[u8]],
    ) -> StoreResult<Fields> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(0)
            .arg(self.keys.wake_channel())
            .arg(&self.node)
            .arg(wake_key);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut connection = self.connection()?;
        let reply: Vec<Value> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error(context, writes))?;
        if writes {
            self.replicated(&mut connection, keys[0].as_bytes()).await?;
        }
        let mut fields = Fields::new(context, reply);
        for key in fields.array()? {
            if let Ok(key) = reply::text(context, key) {
                self.wakeups.signal(&key);
            }
        }
        Ok(fields)
    }

    /// With `wait_replicas`, waits until that many replicas have the writes this
    /// connection sent to the node of `key` (on a cluster, the master of its slot).
    async fn replicated(&self, connection: &mut Connection, key: &[u8]) -> StoreResult<()> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.wait_replicas).arg(WAIT_TIMEOUT_MS);
        let answer = match connection {
            Connection::Single(single) => wait.query_async(single).await,
            Connection::Cluster(cluster) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let node =
                    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
                cluster
                    .route_command(wait, RoutingInfo::SingleNode(node))
                    .await
                    .and_then(|value| redis::from_redis_value(value).map_err(Into::into))
            }
        };
        let acknowledged: u32 = answer.map_err(redis_error("wait for replicas", true))?;
        if acknowledged < self.wait_replicas {
            return Err(StoreError::OutcomeUnknown(format!(
                "written, but only {acknowledged} of {} replicas confirmed it within {WAIT_TIMEOUT_MS} ms",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    /// Adds `name` to the registry `registry` unless this node did already.
    /// Answers whether this node had registered it before (nothing was written then).
    async fn register(&self, registry: String, name: &str) -> StoreResult<bool> {
        let entry = format!("{registry}\n{name}");
        if self.registered_contains(&entry) {
            return Ok(true);
        }
        self.command::<i64>(
            "register",
            true,
            redis::cmd("SADD").arg(&registry).arg(name),
        )
        .await?;
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry);
        Ok(false)
    }

    fn registered_contains(&self, entry: &str) -> bool {
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(entry)
    }

    /// Forgets that `name` is registered in `registry`, here and in Redis.
    async fn unregister(&self, registry: String, name: &str) -> StoreResult<()> {
        let entry = format!("{registry}\n{name}");
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&entry);
        self.command::<i64>(
            "unregister",
            true,
            redis::cmd("SREM").arg(&registry).arg(name),
        )
        .await?;
        Ok(())
    }

    /// The names of a registry, sorted: read a page at a time (`SSCAN`), so a
    /// registry of many names never holds Redis for long in one command.
    async fn registry(&self, registry: String) -> StoreResult<Vec<String>> {
        let mut names = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<String>) = self
                .command(
                    "read a registry",
                    false,
                    redis::cmd("SSCAN")
                        .arg(&registry)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(REGISTRY_PAGE),
                )
                .await?;
            names.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // A name may come twice when the set grew or shrank during the scan.
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Announces a client change to every node (this one at once).
    async fn revoke(&self, id: &ClientId) -> StoreResult<()> {
        self.wakeups.revoke(Revocation::Client(id.to_string()));
        self.command::<i64>(
            "announce a client change",
            true,
            redis::cmd("PUBLISH")
                .arg(self.keys.revoke_channel())
                .arg(format!("{}|{id}", self.node)),
        )
        .await?;
        Ok(())
    }
}

/// What a 2xx means on the server (the weakest of a cluster's seed nodes): read from
/// `appendonly` and `appendfsync`. A server that does not say (`CONFIG` renamed or
/// refused, as some hosted Redis do) promises nothing Hopper can tell.
async fn read_durability(target: &Target, root_cert: Option<&[u8]>) -> Durability {
    let mut weakest = Durability::FsyncAlways;
    for node in &target.nodes {
        let read = async {
            let client = client(node, root_cert)?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            let config: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("append*")
                .query_async(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>(config)
        };
        let durability = match tokio::time::timeout(CONNECT_TIMEOUT, read).await {
            Ok(Ok(config)) => {
                let setting = |name: &str| {
                    config
                        .chunks(2)
                        .find(|pair| pair[0] == name)
                        .and_then(|pair| pair.get(1).cloned())
                        .unwrap_or_default()
                };
                match (
                    setting("appendonly").as_str(),
                    setting("appendfsync").as_str(),
                ) {
                    ("yes", "always") => Durability::FsyncAlways,
                    ("yes", "everysec") => Durability::FsyncEverysec,
                    _ => Durability::None,
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, node, "redis: cannot read the persistence settings");
                Durability::None
            }
            Err(_) => Durability::None,
        };
        weakest = weaker(weakest, durability);
    }
    weakest
}

fn weaker(a: Durability, b: Durability) -> Durability {
    let rank = |d: Durability| match d {
        Durability::FsyncAlways => 2,
        Durability::FsyncEverysec => 1,
        _ => 0,
    };
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}

/// A client as stored in the clients hash: secret hash, creation time, then one grant per line.
fn encode_client(client: &ClientRecord) -> String {
    let mut text = format!("{}\n{}", client.secret_hash, client.created_at);
    for grant in &client.grants {
        text.push('\n');
        text.push_str(&grant.to_string());
    }
    text
}

/// A client from its stored form; `None` when it cannot be read (edited by hand), as on SQL.
fn decode_client(id: &str, text: &str) -> Option<ClientRecord> {
    let id = ClientId::parse(id).ok()?;
    let mut lines = text.lines();
    let secret_hash = lines.next()?.to_owned();
    let created_at = lines.next()?.parse().ok()?;
    let grants = lines.filter_map(|g| g.parse::<Grant>().ok()).collect();
    Some(ClientRecord {
        id,
        secret_hash,
        grants,
        created_at,
    })
}

#[async_trait]
impl ClientStore for RedisStore {
    async fn create_client(&self, client: &ClientRecord) -> StoreResult<()> {
        let created: i64 = self
            .command(
                "create client",
                true,
                redis::cmd("HSETNX")
                    .arg(self.keys.clients())
                    .arg(client.id.as_str())
                    .arg(encode_client(client)),
            )
            .await?;
        if created == 0 {
            return Err(StoreError::ClientExists(client.id.to_string()));
        }
        Ok(())
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let all: Vec<(String, String)> = self
            .command(
                "list clients",
                false,
                redis::cmd("HGETALL").arg(self.keys.clients()),
            )
            .await?;
        let mut clients: Vec<ClientRecord> = all
            .iter()
            .filter_map(|(id, text)| decode_client(id, text))
            .collect();
        clients.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(clients)
    }

    async fn client(&self, id: &ClientId) -> StoreResult<Option<ClientRecord>> {
        let text: Option<String> = self
            .command(
                "read client",
                false,
                redis::cmd("HGET").arg(self.keys.clients()).arg(id.as_str()),
            )
            .await?;
        Ok(text.and_then(|text| decode_client(id.as_str(), &text)))
    }

    async fn delete_client(&self, id: &ClientId) -> StoreResult<()> {
        if !self.delete_client_and_keys(id).await? {
            return Err(StoreError::ClientNotFound(id.to_string()));
        }
        self.revoke(id).await
    }

    async fn set_client_grants(&self, id: &ClientId, grants: &[Grant]) -> StoreResult<()> {
        self.change_client(id, |client| client.grants = grants.to_vec())
            .await
    }

    async fn set_client_secret(&self, id: &ClientId, secret_hash: &str) -> StoreResult<()> {
        self.change_client(id, |client| client.secret_hash = secret_hash.to_owned())
            .await
    }

    async fn signing_key(&self, candidate: &[u8]) -> StoreResult<Vec<u8>> {
        let key = self.keys.signing_key();
        self.command::<bool>(
            "store the signing key",
            true,
            redis::cmd("SET").arg(&key).arg(candidate).arg("NX"),
        )
        .await?;
        let stored: Option<Vec<u8>> = self
            .command("read the signing key", false, redis::cmd("GET").arg(&key))
            .await?;
        stored.ok_or_else(|| StoreError::Unavailable("the signing key vanished".into()))
    }
}

/// Replaces a client's stored form only if it is still what was read: one atomic step.
static CHANGE_CLIENT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
         redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1",
    )
});

impl Core {
    /// Changes a client by `change`, retrying if another node changed it meanwhile.
    async fn change_client(
        &self,
        id: &ClientId,
        change: impl Fn(&mut ClientRecord),
    ) -> StoreResult<()> {
        loop {
            let text: Option<String> = self
                .command(
                    "read client",
                    false,
                    redis::cmd("HGET").arg(self.keys.clients()).arg(id.as_str()),
                )
                .await?;
            let Some(text) = text else {
                return Err(StoreError::ClientNotFound(id.to_string()));
            };
            let mut client = decode_client(id.as_str(), &text).ok_or_else(|| {
                StoreError::backend(
                    "read client",
                    std::io::Error::other(format!("the stored client {id} is unreadable")),
                )
            })?;
            change(&mut client);
            let mut connection = self.connection()?;
            let replaced: i64 = CHANGE_CLIENT
                .key(self.keys.clients())
                .arg(id.as_str())
                .arg(&text)
                .arg(encode_client(&client))
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error("change client", true))?;
            if replaced == 1 {
                self.replicated(&mut connection, self.keys.clients().as_bytes())
                    .await?;
                return self.revoke(id).await;
            }
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    async fn ping(&self) -> StoreResult<()> {
        let _: String = self.command("ping", false, &redis::cmd("PING")).await?;
        Ok(())
    }

    fn wakeups(&self) -> Arc<Wakeups> {
        self.wakeups.clone()
    }

    async fn close(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_server_or_a_cluster_with_options() {
        let single = Target::parse("redis://127.0.0.1:6379/2?prefix=t1:&wait_replicas=1").unwrap();
        assert_eq!(single.nodes, ["redis://127.0.0.1:6379/2"]);
        assert!(!single.cluster);
        assert_eq!((single.prefix.as_str(), single.wait_replicas), ("t1:", 1));
        let cluster =
            Target::parse("redis+cluster://u:p@10.0.0.1:7001,10.0.0.2:7002/?prefix=x").unwrap();
        assert!(cluster.cluster);
        assert_eq!(
            cluster.nodes,
            ["redis://u:p@10.0.0.1:7001", "redis://u:p@10.0.0.2:7002"]
        );
        assert!(Target::parse("redis://h?prefix={x}").is_err());
        assert!(Target::parse("redis://h?wait_replicas=some").is_err());
        assert!(Target::parse("redis+cluster://").is_err());
        let tls = Target::parse("rediss+cluster://h:7001?ca_file=/etc/ca.pem").unwrap();
        assert_eq!(tls.nodes, ["rediss://h:7001"]);
        assert_eq!(tls.ca_file.as_deref(), Some("/etc/ca.pem"));
        assert!(Target::parse("redis://h?ca_file=/etc/ca.pem").is_err());
    }

    #[test]
    fn clients_round_trip_through_their_stored_form() {
        let client = ClientRecord {
            id: ClientId::parse("worker").unwrap(),
            secret_hash: "sha256$00".into(),
            grants: vec!["queue:jobs:consume".parse().unwrap()],
            created_at: 42,
        };
        let back = decode_client("worker", &encode_client(&client)).unwrap();
        assert_eq!(back.secret_hash, client.secret_hash);
        assert_eq!(back.grants, client.grants);
        assert_eq!(back.created_at, 42);
        assert!(decode_client("worker", "only a hash").is_none());
    }
}

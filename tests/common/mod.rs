//! Test fixtures shared by the integration tests, and the harness that runs each test
//! binary's tests: once per storage backend, or once.
//!
//! - [`trials!`]: the `main` of every test binary that uses this module. Those binaries
//!   are `harness = false` (their `[[test]]` entries in `Cargo.toml`): libtest has no
//!   way to report a test as skipped at run time, and a test that returns early when
//!   its backend is missing reports "ok" (rust-lang/rust#68007). So the tests are
//!   `libtest_mimic` trials instead, and the trials of a backend that is not configured
//!   carry the ignored flag: `cargo test` counts them as ignored, and running them
//!   anyway (`-- --include-ignored`) fails them, saying what is missing.
//! - [`Backend`]: SQLite always; PostgreSQL when `HOPPER_TEST_POSTGRES` holds a base URL
//!   such as `postgres://postgres@127.0.0.1:5432/test`.
//! - [`Fixture`]: what a test receives, started on the backend of its trial: a
//!   [`TestApp`], the [`Backend`] itself, or a fixture of the test file.
//! - [`IsolatedStore`]: a store nobody else uses: a temporary SQLite file, or a fresh
//!   PostgreSQL schema `t_<random hex>` dropped when the test ends, panics included.
//! - [`spawn_app`]: the real server, in-process, on an ephemeral port and its own
//!   isolated store, so tests run in parallel without sharing anything. Helpers speak
//!   the public HTTP API only; they never reach into the store.
//! - [`serve::ServeProcess`]: the compiled binary as a child process, for what only
//!   a process shows (a SIGKILL, its CPU time and memory, clients in other languages).
//! - [`sigv4::AwsRequest`]: requests signed with AWS Signature Version 4 by the AWS
//!   SDK's own signer, for the verifier's tests.
//!
//! Each trial runs on a thread named after it (as libtest does, so a panic message
//! says which test panicked) with a tokio runtime of its own, built as `#[tokio::test]`
//! builds it; a panic fails that trial only, and the failure report gives the panic's
//! message and location. libtest-mimic runs the trials on `--test-threads` threads and
//! takes libtest's filters (`sqlite::pop`, `--exact`, `--skip`, `--ignored`, `--list`),
//! so `cargo test` and `cargo nextest` run these binaries as they run standard ones.
//! Unlike libtest it captures no output: what a test prints is shown even when it
//! passes.
//!
//! Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod redis_cluster;
pub mod serve;
pub mod sigv4;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hopper::config::Config;
use hopper::domain::ClientId;
use libtest_mimic::{Arguments, Failed, Trial};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Secret of the admin when the server bootstraps it itself ([`spawn_app_bootstrapped`]).
pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789";

/// The content type every response must carry.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The variable naming the PostgreSQL server the tests may use (a base URL, no schema).
pub const POSTGRES_ENV: &str = "HOPPER_TEST_POSTGRES";

/// The variable naming the Redis server the tests may use (a base URL such as
/// `redis://127.0.0.1:6379/0`); each test puts its keys under a prefix of its own.
pub const REDIS_ENV: &str = "HOPPER_TEST_REDIS";

/// The variable naming a Redis Cluster for the tests: `start` has each test binary
/// start a three-master cluster of its own on free ports (with `redis-server` and
/// `redis-cli`), or a `redis+cluster://` URL names one that runs already.
pub const REDIS_CLUSTER_ENV: &str = "HOPPER_TEST_REDIS_CLUSTER";

/// The `main` of a test binary: registers the test functions of the file, in sections,
/// and runs them as `libtest_mimic` trials ([`run_trials`]).
///
/// ```text
/// trials! {
///     each_backend { push_is_201, competing_consumers_differ: multi_thread(4) }
///     postgres { two_nodes_share_a_queue: multi_thread(2) }
///     plain { a_valid_file_loads }
/// }
/// ```
///
/// - `each_backend`: `async fn name(fixture: F)` ([`Fixture`]) becomes the trials
///   `sqlite::name`, `postgres::name`, `redis::name` and `redis_cluster::name`, each
///   with a fresh `F` started on its backend.
/// - `shared_backend`: likewise, on the backends several nodes can share (all but SQLite).
/// - `sql_backend`, `redis_backend`: likewise, on SQLite and PostgreSQL, or on Redis
///   and the Redis Cluster, for what a test reaches below the store (rows, keys).
/// - `redis_server`: on Redis alone, for what a test sets up as a Redis server of
///   its own (TLS, persistence settings) beside the one under test.
/// - `postgres`: `async fn name(fixture: F)` becomes the trial `name`, on PostgreSQL.
/// - `once`: `async fn name()`, which starts what it needs itself (a server on the
///   embedded store, say), becomes the trial `name`.
/// - `plain`: `fn name()`, which needs no backend, becomes the trial `name`.
///
/// The trials of a backend are ignored when its variable ([`POSTGRES_ENV`],
/// [`REDIS_ENV`], [`REDIS_CLUSTER_ENV`]) is unset. An async test
/// runs on a current-thread runtime, or after `: multi_thread(N)` on a multi-thread
/// runtime with `N` workers (`#[tokio::test(flavor = "multi_thread", worker_threads =
/// N)]`). A function left out of the lists is never called, which the compiler reports
/// as dead code.
macro_rules! trials {
    ($($section:ident { $($tests:tt)* })*) => {
        fn main() {
            $crate::common::run_trials(
                ::std::iter::empty()
                    $(.chain($crate::common::trials!(@ $section $($tests)*)))*
                    .collect(),
            )
        }
    };
    (@ each_backend $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::on_backends(
            $crate::common::EACH_BACKEND,
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
        .into_iter()
        .flatten()
    };
    (@ shared_backend $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::on_backends(
            $crate::common::SHARED_BACKEND,
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
        .into_iter()
        .flatten()
    };
    (@ sql_backend $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::on_backends(
            $crate::common::SQL_BACKEND,
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
        .into_iter()
        .flatten()
    };
    (@ redis_backend $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::on_backends(
            $crate::common::REDIS_BACKEND,
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
        .into_iter()
        .flatten()
    };
    (@ redis_server $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::on_backends(
            &[$crate::common::BackendKind::Redis],
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
        .into_iter()
        .flatten()
    };
    (@ postgres $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::postgres_only(
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
    };
    (@ plain $($name:ident),* $(,)?) => {
        [$($crate::common::plain(stringify!($name), $name)),*]
    };
    (@ once $($name:ident $(: multi_thread($threads:literal))?),* $(,)?) => {
        [$($crate::common::once(
            stringify!($name),
            $crate::common::trials!(@runtime $($threads)?),
            $name,
        )),*]
    };
    (@runtime) => {
        $crate::common::Runtime::CurrentThread
    };
    (@runtime $threads:literal) => {
        $crate::common::Runtime::MultiThread($threads)
    };
    (@ each_backend $($unexpected:tt)*) => {
        compile_error!("trials!: `each_backend` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ sql_backend $($unexpected:tt)*) => {
        compile_error!("trials!: `sql_backend` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ redis_server $($unexpected:tt)*) => {
        compile_error!("trials!: `redis_server` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ redis_backend $($unexpected:tt)*) => {
        compile_error!("trials!: `redis_backend` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ shared_backend $($unexpected:tt)*) => {
        compile_error!("trials!: `shared_backend` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ postgres $($unexpected:tt)*) => {
        compile_error!("trials!: `postgres` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ plain $($unexpected:tt)*) => {
        compile_error!("trials!: `plain` lists test functions by name, separated by commas")
    };
    (@ once $($unexpected:tt)*) => {
        compile_error!("trials!: `once` lists test functions: `name` or `name: multi_thread(N)`, separated by commas")
    };
    (@ $section:ident $($unexpected:tt)*) => {
        compile_error!(concat!(
            "trials!: unknown section `", stringify!($section),
            "`: expected `each_backend`, `shared_backend`, `sql_backend`, `redis_backend`, `redis_server`, `postgres`, `once` or `plain` sections"
        ))
    };
    ($($unexpected:tt)*) => {
        compile_error!("trials!: expected sections `each_backend { .. }`, `postgres { .. }`, `once { .. }`, `plain { .. }`")
    };
}
pub(crate) use trials;

/// Runs `trials` as the command line says (filters, `--list`, `--include-ignored`,
/// `--test-threads`) and exits with libtest's exit code.
pub fn run_trials(trials: Vec<Trial>) -> ! {
    record_panic_locations();
    let conclusion = libtest_mimic::run(&Arguments::from_args(), trials);
    redis_cluster::stop();
    conclusion.exit()
}

/// The tokio runtime an async test runs on, as `#[tokio::test]` would build it.
#[derive(Debug, Clone, Copy)]
pub enum Runtime {
    /// `#[tokio::test]`: the test's own thread drives every task.
    CurrentThread,
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = N)]`, for tests whose
    /// tasks must truly run at the same time (races, concurrent clients).
    MultiThread(usize),
}

impl Runtime {
    /// Builds the runtime, with time and I/O enabled, and runs `test` to its end on it.
    fn block_on(self, test: impl Future<Output = ()>) {
        let mut builder = match self {
            Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Runtime::MultiThread(worker_threads) => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(worker_threads);
                builder
            }
        };
        builder
            .enable_all()
            .build()
            .expect("cannot build the test's tokio runtime")
            .block_on(test)
    }
}

/// A backend a trial may run on, before it is known whether it is configured.
#[derive(Debug, Clone, Copy)]
pub enum BackendKind {
    /// [`Backend::Sqlite`], always there.
    Sqlite,
    /// [`Backend::postgres`].
    Postgres,
    /// [`Backend::redis`].
    Redis,
    /// [`Backend::redis_cluster`].
    RedisCluster,
}

impl BackendKind {
    /// The prefix of its trials' names.
    pub fn label(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
            BackendKind::Redis => "redis",
            BackendKind::RedisCluster => "redis_cluster",
        }
    }

    /// The backend, or why it is not configured.
    pub fn backend(self) -> Result<Backend, String> {
        match self {
            BackendKind::Sqlite => Ok(Backend::Sqlite),
            BackendKind::Postgres => Backend::postgres(),
            BackendKind::Redis => Backend::redis(),
            BackendKind::RedisCluster => Backend::redis_cluster(),
        }
    }
}

/// [`trials!`]'s `each_backend`: every backend.
pub const EACH_BACKEND: &[BackendKind] = &[
    BackendKind::Sqlite,
    BackendKind::Postgres,
    BackendKind::Redis,
    BackendKind::RedisCluster,
];
/// [`trials!`]'s `shared_backend`: the backends several nodes can share.
pub const SHARED_BACKEND: &[BackendKind] = &[
    BackendKind::Postgres,
    BackendKind::Redis,
    BackendKind::RedisCluster,
];
/// [`trials!`]'s `sql_backend`: for what only the SQL backends have (rows).
pub const SQL_BACKEND: &[BackendKind] = &[BackendKind::Sqlite, BackendKind::Postgres];
/// [`trials!`]'s `redis_backend`: Redis and the Redis Cluster.
pub const REDIS_BACKEND: &[BackendKind] = &[BackendKind::Redis, BackendKind::RedisCluster];

/// The trials `<label>::<name>` of `test`, one per backend of `kinds`.
pub fn on_backends<F, T, Fut>(
    kinds: &[BackendKind],
    name: &str,
    runtime: Runtime,
    test: T,
) -> Vec<Trial>
where
    F: Fixture,
    T: FnOnce(F) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()>,
{
    kinds
        .iter()
        .map(|kind| {
            backend_trial(
                format!("{}::{name}", kind.label()),
                kind.backend(),
                runtime,
                test,
            )
        })
        .collect()
}

/// The trial `<name>` of `test` on PostgreSQL ([`trials!`]'s `postgres`).
pub fn postgres_only<F, T, Fut>(name: &str, runtime: Runtime, test: T) -> Trial
where
    F: Fixture,
    T: FnOnce(F) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    backend_trial(name.to_owned(), Backend::postgres(), runtime, test)
}

/// The trial `<name>` of an async test that starts what it needs ([`trials!`]'s `once`).
pub fn once<T, Fut>(name: &str, runtime: Runtime, test: T) -> Trial
where
    T: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread_name = name.to_owned();
    Trial::test(name, move || {
        on_named_thread(thread_name, move || runtime.block_on(test()))
    })
}

/// The trial `<name>` of a test that needs no backend ([`trials!`]'s `plain`).
pub fn plain(name: &str, test: fn()) -> Trial {
    let thread_name = name.to_owned();
    Trial::test(name, move || on_named_thread(thread_name, test))
}

/// A trial running `test` with a fixture started on `backend`; when the backend is not
/// configured, an ignored trial that fails, saying why, if it is run anyway.
fn backend_trial<F, T, Fut>(
    name: String,
    backend: Result<Backend, String>,
    runtime: Runtime,
    test: T,
) -> Trial
where
    F: Fixture,
    T: FnOnce(F) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    match backend {
        Ok(backend) => {
            let thread_name = name.clone();
            Trial::test(name, move || {
                on_named_thread(thread_name, move || {
                    runtime.block_on(async move { test(F::start(backend).await).await })
                })
            })
        }
        Err(missing) => {
            Trial::test(name, move || Err(Failed::from(missing))).with_ignored_flag(true)
        }
    }
}

/// Runs `test` on a new thread named `name`, so that the panic hook's message names the
/// test, as under libtest; its panic is the trial's failure, with where it happened.
fn on_named_thread(name: String, test: impl FnOnce() + Send + 'static) -> Result<(), Failed> {
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                match PANIC_LOCATION.take() {
                    Some(location) => format!("test panicked at {location}:\n{message}"),
                    None => format!("test panicked: {message}"),
                }
            })
        })
        .map_err(|e| format!("cannot start the test's thread: {e}"))?;
    match thread.join() {
        Ok(outcome) => outcome.map_err(Failed::from),
        Err(_) => Err("the test's thread panicked while reporting a panic".into()),
    }
}

thread_local! {
    /// Where the last panic of this thread happened, for the trial's failure message:
    /// libtest-mimic captures no output, so the hook's own message is lost among those
    /// of the other trials running meanwhile.
    static PANIC_LOCATION: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

/// Puts a hook before the panic hook (which still prints its message) that keeps each
/// panic's location in [`PANIC_LOCATION`].
fn record_panic_locations() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANIC_LOCATION.set(info.location().map(ToString::to_string));
        print(info)
    }));
}

/// What a test of a backend receives, started on the backend of its trial.
pub trait Fixture: Sized {
    /// Starts the fixture on `backend`.
    fn start(backend: Backend) -> impl Future<Output = Self>;
}

impl Fixture for Backend {
    async fn start(backend: Backend) -> Self {
        backend
    }
}

impl Fixture for TestApp {
    async fn start(backend: Backend) -> Self {
        spawn_app(&backend).await
    }
}

/// A storage backend under test.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `sqlite://<temp dir>/hopper.db`.
    Sqlite,
    /// `<base_url>?schema=t_<random hex>`.
    Postgres {
        /// The server and database, from [`POSTGRES_ENV`].
        base_url: String,
    },
    /// `<base_url>?prefix=t_<random hex>:`.
    Redis {
        /// The server, from [`REDIS_ENV`].
        base_url: String,
    },
    /// `redis+cluster://...?prefix=t_<random hex>:`.
    RedisCluster {
        /// The cluster's nodes, from [`REDIS_CLUSTER_ENV`] or started by this binary.
        base_url: String,
    },
}

impl Backend {
    /// PostgreSQL on the server of [`POSTGRES_ENV`]; when it is unset, why the tests
    /// of PostgreSQL cannot run.
    pub fn postgres() -> Result<Backend, String> {
        match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.trim().is_empty() => Ok(Backend::Postgres {
                base_url: url.trim().to_owned(),
            }),
            _ => Err(format!(
                "{POSTGRES_ENV} is not set: this test needs a PostgreSQL server \
                 (e.g. {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test)"
            )),
        }
    }

    /// Redis on the server of [`REDIS_ENV`]; when it is unset, why not.
    pub fn redis() -> Result<Backend, String> {
        match std::env::var(REDIS_ENV) {
            Ok(url) if !url.trim().is_empty() => Ok(Backend::Redis {
                base_url: url.trim().to_owned(),
            }),
            _ => Err(format!(
                "{REDIS_ENV} is not set: this test needs a Redis server \
                 (e.g. {REDIS_ENV}=redis://127.0.0.1:6379/0)"
            )),
        }
    }

    /// A Redis Cluster as [`REDIS_CLUSTER_ENV`] says; when it is unset, why not.
    pub fn redis_cluster() -> Result<Backend, String> {
        match std::env::var(REDIS_CLUSTER_ENV) {
            Ok(value) if value.trim() == "start" => Ok(Backend::RedisCluster {
                base_url: redis_cluster::started()?,
            }),
            Ok(url) if !url.trim().is_empty() => Ok(Backend::RedisCluster {
                base_url: url.trim().to_owned(),
            }),
            _ => Err(format!(
                "{REDIS_CLUSTER_ENV} is not set: this test needs a Redis Cluster \
                 ({REDIS_CLUSTER_ENV}=start starts one with redis-server and redis-cli)"
            )),
        }
    }

    /// The backend's name in trial names, unique per backend (`redis_cluster` too).
    pub fn label(&self) -> &'static str {
        match self {
            Backend::RedisCluster { .. } => "redis_cluster",
            other => other.name(),
        }
    }

    /// The backend's name as `/health` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
            Backend::Redis { .. } | Backend::RedisCluster { .. } => "redis",
        }
    }

    /// A new store of this backend that no other test uses.
    pub fn isolated_store(&self) -> IsolatedStore {
        let dir = tempfile::tempdir().expect("cannot create a temp dir");
        let (url, schema, prefix) = match self {
            Backend::Sqlite => (
                format!("sqlite://{}/hopper.db", dir.path().display()),
                None,
                None,
            ),
            Backend::Postgres { base_url } => {
                let schema = PgSchema::new(base_url);
                (schema.store_url(), Some(schema), None)
            }
            Backend::Redis { base_url } | Backend::RedisCluster { base_url } => {
                let prefix = redis_cluster::KeyPrefix::new(base_url);
                (prefix.store_url(), None, Some(prefix))
            }
        };
        IsolatedStore {
            url,
            backend: self.name(),
            dir,
            _schema: schema,
            _prefix: prefix,
        }
    }
}

/// A store URL of its own, and what keeps it alive: removed when dropped.
pub struct IsolatedStore {
    /// The URL for `--store` or `hopper::store::open`.
    pub url: String,
    /// [`Backend::name`].
    pub backend: &'static str,
    /// A temporary directory, for the SQLite file and for logs.
    pub dir: TempDir,
    _schema: Option<PgSchema>,
    _prefix: Option<redis_cluster::KeyPrefix>,
}

/// A PostgreSQL schema of one test, named `t_<16 random hex digits>`. Hopper creates it
/// when it opens the store URL; dropping this value drops it with everything in it.
pub struct PgSchema {
    base_url: String,
    name: String,
}

impl PgSchema {
    /// A fresh name on the server and database of `base_url`; nothing is created yet.
    pub fn new(base_url: &str) -> PgSchema {
        PgSchema {
            base_url: base_url.to_owned(),
            name: format!("t_{:016x}", rand::random::<u64>()),
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `base_url` with Hopper's own `schema` parameter.
    pub fn store_url(&self) -> String {
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}schema={}", self.base_url, self.name)
    }
}

impl Drop for PgSchema {
    /// Drops the schema synchronously, on a thread with its own runtime, because this
    /// may run while a test's runtime unwinds a panic. The test's server may still hold
    /// connections: idle ones do not matter, but one inside a transaction (the sweep
    /// that starts with every server, a request cut short by a panic) stays so while
    /// this blocks the test's runtime, and would block `DROP SCHEMA` forever. So the
    /// sessions holding locks in the schema are terminated first; the drop waits a
    /// short lock timeout and retries if the server took new locks meanwhile.
    fn drop(&mut self) {
        let base_url = self.base_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || drop_schema(&base_url, &name))
            .join()
            .unwrap_or_else(|_| Err("the thread dropping it panicked".to_owned()));
        if let Err(error) = dropped {
            if std::thread::panicking() {
                eprintln!("cannot drop the test schema {}: {error}", self.name);
            } else {
                panic!("cannot drop the test schema {}: {error}", self.name);
            }
        }
    }
}

fn drop_schema(base_url: &str, name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(base_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to {base_url}: {e}"))?;
        tokio::spawn(connection);
        client
            .batch_execute("SET lock_timeout = '1s'")
            .await
            .map_err(|e| e.to_string())?;
        let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
        let mut attempts = 0;
        loop {
            attempts += 1;
            client
                .execute(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                     JOIN pg_class c ON c.oid = l.relation
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(|e| e.to_string())?;
            let error = match client.batch_execute(&drop).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let lock_timeout =
                error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
            if !lock_timeout || attempts == 5 {
                return Err(error.to_string());
            }
        }
    })
}

/// A running server and the client that talks to it.
pub struct TestApp {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// A plain HTTP client; requests carry no credentials unless a helper adds them.
    pub client: reqwest::Client,
    /// The secret of client `admin`.
    pub admin_secret: String,
    /// The backend's name as `/health` must report it: `sqlite`, `postgres` or `redis`.
    pub backend: &'static str,
    server: hopper::server::Server,
    /// Keeps the store alive as long as the server uses it; removes it afterwards.
    _store: IsolatedStore,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stops accepting requests and the background sweep before the store goes.
        self.server.shutdown();
    }
}

/// Starts a server on `127.0.0.1:0` with a fresh store of `backend` whose `admin` has a
/// generated secret ([`TestApp::admin_secret`]).
///
/// The admin is created before the server starts, through the same code as the admin
/// API, because a chosen secret is hashed with argon2, which takes about a second per
/// hash and per first verification in a debug build: paid by every test, that alone
/// would make the suite several times slower. Generated secrets verify in microseconds.
/// The server still gets `admin_secret: Some(..)`, which it ignores on a store with
/// clients; [`spawn_app_bootstrapped`] covers the bootstrap itself.
pub async fn spawn_app(backend: &Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// As [`spawn_app`], with the configuration changed by `configure` first (e.g. a
/// short sweep interval or task retention).
pub async fn spawn_app_with(backend: &Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let isolated = backend.isolated_store();
    let store = hopper::store::open(&isolated.url)
        .await
        .expect("cannot open the test store");
    let admin = hopper::auth::clients::create(
        &hopper::auth::Principal::node(),
        store.as_ref(),
        ClientId::parse("admin").unwrap(),
        None,
        &["admin".to_owned()],
    )
    .await
    .expect("cannot create the admin");
    store.close().await;
    start(isolated, admin.secret, configure).await
}

/// Starts a server on a fresh, empty store, so it bootstraps `admin` with [`ADMIN_SECRET`].
pub async fn spawn_app_bootstrapped(backend: &Backend) -> TestApp {
    start(backend.isolated_store(), ADMIN_SECRET.to_owned(), |_| {}).await
}

async fn start(
    isolated: IsolatedStore,
    admin_secret: String,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: isolated.url.clone(),
        admin_secret: Some(admin_secret.clone()),
        ..Config::default()
    };
    configure(&mut config);
    let server = hopper::server::start(config)
        .await
        .expect("the server did not start");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        addr: server.addr,
        client,
        admin_secret,
        backend: isolated.backend,
        server,
        _store: isolated,
    }
}

impl TestApp {
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's credential checks, for what is verified beside the HTTP API
    /// (SigV4 signatures, say).
    pub fn auth(&self) -> &hopper::auth::Authenticator {
        &self.server.auth
    }

    /// The URL of the server's store, for a `hopper clients` run on the same store.
    pub fn store_url(&self) -> &str {
        &self._store.url
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A request without credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the admin's Basic credentials.
    pub fn as_admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .basic_auth("admin", Some(&self.admin_secret))
    }

    /// A request with `id:secret` Basic credentials.
    pub fn as_client(&self, id: &str, secret: &str, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).basic_auth(id, Some(secret))
    }

    /// Creates a client through the admin API; returns its generated secret.
    pub async fn create_client(&self, id: &str, grants: &[&str]) -> String {
        let response = self
            .as_admin(Method::POST, "/api/v1/admin/clients")
            .json(&json!({ "id": id, "grants": grants }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "creating client {id}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], id);
        body["secret"]
            .as_str()
            .expect("a created client comes with its secret")
            .to_owned()
    }

    /// Pushes `body` to `queue` as the admin; asserts 201 and returns the id.
    pub async fn push(&self, queue: &str, body: Value) -> String {
        let response = self
            .as_admin(Method::POST, &format!("/api/v1/queues/{queue}/messages"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "push to {queue}");
        let answer: Value = response.json().await.unwrap();
        answer["id"]
            .as_str()
            .expect("a push answers with the id")
            .to_owned()
    }

    /// `POST /api/v1/queues/{queue}/pop?count=N` as the admin; asserts 200, returns the messages.
    pub async fn pop(&self, queue: &str, count: u32) -> Vec<Value> {
        let response = self
            .as_admin(
                Method::POST,
                &format!("/api/v1/queues/{queue}/pop?count={count}"),
            )
            .send()
            .await
            .unwrap();
        messages_of(response).await
    }

    /// `POST /api/v1/queues/{queue}/receive?<query>` as the admin; asserts 200, returns the messages.
    pub async fn receive(&self, queue: &str, query: &str) -> Vec<Value> {
        let response = self
            .as_admin(
                Method::POST,
                &format!("/api/v1/queues/{queue}/receive?{query}"),
            )
            .send()
            .await
            .unwrap();
        messages_of(response).await
    }

    /// `POST /api/v1/queues/{queue}/{verb}` (ack, nack, extend) as the admin; asserts 200.
    pub async fn settle(&self, queue: &str, verb: &str, body: Value) -> Value {
        let response = self
            .as_admin(Method::POST, &format!("/api/v1/queues/{queue}/{verb}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{verb} on {queue}");
        response.json().await.unwrap()
    }

    /// `GET /api/v1/queues/{queue}` as the admin; asserts 200.
    pub async fn queue_info(&self, queue: &str) -> Value {
        let response = self
            .as_admin(Method::GET, &format!("/api/v1/queues/{queue}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET queue {queue}");
        response.json().await.unwrap()
    }

    /// `(ready, leased, delayed, dead)` of a queue.
    pub async fn counts(&self, queue: &str) -> (u64, u64, u64, u64) {
        let info = self.queue_info(queue).await;
        let count = |name: &str| {
            info[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} missing in {info}"))
        };
        (
            count("ready"),
            count("leased"),
            count("delayed"),
            count("dead"),
        )
    }

    /// `PUT /api/v1/queues/{queue}` as the admin; returns the status and the answer.
    pub async fn configure(&self, queue: &str, settings: Value) -> (StatusCode, Value) {
        let response = self
            .as_admin(Method::PUT, &format!("/api/v1/queues/{queue}"))
            .json(&settings)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// The `messages` of a 200 pop or receive answer.
pub async fn messages_of(response: Response) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK, "{}", response.url());
    let body: Value = response.json().await.unwrap();
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {body}"))
        .clone()
}

/// The `id` of each message.
pub fn ids_of(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().expect("a message has an id").to_owned())
        .collect()
}

/// Asserts the conventions every answer follows (JSON content type, a request id),
/// then the status and the exact seed-004 error text; returns the response headers.
pub async fn assert_error(
    response: Response,
    status: StatusCode,
    text: &str,
) -> reqwest::header::HeaderMap {
    let (headers, actual) = error_of(response, status).await;
    assert_eq!(actual, text);
    headers
}

/// As [`assert_error`], for errors whose detail varies: the text must start with `prefix`.
pub async fn assert_error_prefix(
    response: Response,
    status: StatusCode,
    prefix: &str,
) -> reqwest::header::HeaderMap {
    let (headers, actual) = error_of(response, status).await;
    assert!(
        actual.starts_with(prefix),
        "expected an error starting with {prefix:?}, got {actual:?}"
    );
    headers
}

async fn error_of(response: Response, status: StatusCode) -> (reqwest::header::HeaderMap, String) {
    let url = response.url().clone();
    let headers = response.headers().clone();
    let actual_status = response.status();
    let raw = response.text().await.unwrap();
    assert_eq!(actual_status, status, "{url}: body {raw}");
    assert_json_conventions(&headers);
    let text = match serde_json::from_str::<Value>(&raw) {
        Ok(Value::String(text)) => text,
        _ => panic!("{url}: the error body is not a JSON string: {raw:?}"),
    };
    (headers, text)
}

/// Every answer is `application/json; charset=utf-8` and carries `x-request-id`.
pub fn assert_json_conventions(headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some(JSON_CONTENT_TYPE),
        "content-type"
    );
    assert!(
        headers.get("x-request-id").is_some_and(|v| !v.is_empty()),
        "x-request-id missing"
    );
}

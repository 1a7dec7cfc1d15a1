//! Configuration: defaults, then the TOML file, then environment and flags (which
//! win). Validated whole before any socket opens; a bad file fails with its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::domain::settings::opt_duration;
use crate::domain::{QueueName, QueueSettings, SettingsPatch, TaskSettings};

/// Default listen address: loopback only, so a fresh start exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store: the embedded SQLite database under `./data`.
pub const DEFAULT_STORE: &str = "sqlite://data/hopper.db";
/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// How often expired messages and idempotency keys are dropped.
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Longest `tasks.max_wait`: an HTTP request held longer meets proxy and client timeouts.
const MAX_TASK_WAIT: Duration = Duration::from_secs(300);

/// Longest timeout of `[limits]`: past an hour a "limit" no longer protects anything.
const MAX_LIMIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Smallest `max_header_bytes`: below it, ordinary requests with credentials get 431.
const MIN_HEADER_BYTES: usize = 1024;
/// Largest `max_header_bytes`: hyper buffers the whole head of every request.
const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Largest `max_waiters`.
const MAX_WAITERS_LIMIT: usize = 10_000_000;
/// Largest `max_connections`; also the most the derived default gives.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// `[limits]`: what one client, or a crowd of them, can hold of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request head must arrive within this of its first byte (or of the accept).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request unanswered after this gets 503, beyond the wait it asked for.
    pub request_timeout: Duration,
    /// At shutdown, connections still busy after this are closed.
    pub drain_timeout: Duration,
    /// Largest request head (request line and headers); 431 beyond.
    pub max_header_bytes: usize,
    /// Most long-polls and task waits at once; 503 beyond.
    pub max_waiters: usize,
    /// Longest long-poll of a receive or a stream read; a longer `wait` is cut to it.
    pub max_poll: Duration,
    /// Most open client connections; `None`: derived from the open-file limit.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_waiters: crate::domain::waiters::DEFAULT_MAX_WAITERS,
            max_poll: crate::domain::waiters::DEFAULT_MAX_POLL,
            max_connections: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `hopper serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Store URL, e.g. `sqlite://data/hopper.db`.
    pub store: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest request body accepted, and of an upstream's answer to a forward, in
    /// bytes (`[limits] max_body_bytes` in the file).
    pub max_body_bytes: usize,
    /// `[limits]`: timeouts and caps of the HTTP edge.
    pub limits: Limits,
    /// Secret of the bootstrap admin, when the store has no clients yet.
    pub admin_secret: Option<String>,
    /// Settings of queues created without explicit ones.
    pub queue_defaults: QueueSettings,
    /// Interval of the retention sweep.
    pub sweep_interval: Duration,
    /// Waits of task requests and retention of finished tasks.
    pub tasks: TaskSettings,
    /// `[queues.NAME]`: settings applied at start, creating the queues if needed.
    pub queues: Vec<(QueueName, SettingsPatch)>,
    /// `[[routes]]`: HTTP endpoints mapped onto queues and tasks, validated.
    pub routes: Vec<crate::routes::Route>,
    /// `[auth]`: login tokens.
    pub auth: AuthSettings,
    /// `[metrics] require_auth`: whether `GET /metrics` needs admin credentials.
    pub metrics_require_auth: bool,
    /// `[durable_streams]`: the Durable Streams endpoint.
    pub durable_streams: DurableStreamsSettings,
}

/// `[durable_streams]`: how the protocol's endpoint behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableStreamsSettings {
    /// How long a long-poll read waits for an append before it answers 204.
    pub long_poll_timeout: Duration,
    /// Anonymous requests get every action on every stream (for deployments
    /// that authenticate in front of Hopper).
    pub public: bool,
}

impl Default for DurableStreamsSettings {
    fn default() -> Self {
        DurableStreamsSettings {
            long_poll_timeout: Duration::from_secs(20),
            public: false,
        }
    }
}

/// `[auth]`: how login tokens are signed and how long they last.
#[derive(Clone)]
pub struct AuthSettings {
    /// Lifetime of a login token.
    pub token_ttl: Duration,
    /// The key tokens are signed with; `None`: one generated once and kept in the
    /// store, shared by every node on it.
    pub jwt_secret: Option<String>,
    /// Failed credential checks per client id or address before a lock-out.
    pub max_failures: u32,
    /// The window those failures are counted in, and the longest lock-out.
    pub failure_window: Duration,
    /// The key AWS secret access keys are sealed under (`auth.secret_key` or
    /// `HOPPER_SECRET_KEY`); `None`: on SQLite a key file beside the database, on
    /// PostgreSQL and Redis no AWS keys.
    pub secret_key: Option<crate::auth::SecretKey>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            token_ttl: Duration::from_secs(3600),
            jwt_secret: None,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            secret_key: None,
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("token_ttl", &self.token_ttl)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Shortest `auth.jwt_secret`: an HS256 key should hold at least 256 bits.
const MIN_JWT_SECRET_LEN: usize = 32;
/// Most `auth.max_failures`.
const MAX_FAILURES_LIMIT: u32 = 1_000_000;
/// Longest `auth.token_ttl`.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid"),
            store: DEFAULT_STORE.into(),
            log_format: LogFormat::Text,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            limits: Limits::default(),
            admin_secret: None,
            queue_defaults: QueueSettings::default(),
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            tasks: TaskSettings::default(),
            queues: Vec::new(),
            routes: Vec::new(),
            auth: AuthSettings::default(),
            metrics_require_auth: false,
            durable_streams: DurableStreamsSettings::default(),
        }
    }
}

/// Values given on the command line or in the environment; each beats the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config` / `HOPPER_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--listen` / `HOPPER_LISTEN`.
    pub listen: Option<String>,
    /// `--store` / `HOPPER_STORE`.
    pub store: Option<String>,
    /// `--log-format` / `HOPPER_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `HOPPER_ADMIN_SECRET`.
    pub admin_secret: Option<String>,
    /// `HOPPER_SECRET_KEY`: beats `[auth] secret_key`.
    pub secret_key: Option<String>,
}

/// `store` with `[redis] wait_replicas` as its URL option, unless the URL sets it itself.
fn with_wait_replicas(store: &str, replicas: u32) -> anyhow::Result<String> {
    anyhow::ensure!(
        matches!(
            crate::store::backend_of(store),
            Ok(crate::store::Backend::Redis)
        ),
        "[redis] wait_replicas is for a Redis store, and the store is {store:?}"
    );
    if store.contains("wait_replicas=") {
        return Ok(store.to_owned());
    }
    let separator = if store.contains('?') { '&' } else { '?' };
    Ok(format!("{store}{separator}wait_replicas={replicas}"))
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    store: Option<String>,
    log_format: Option<LogFormat>,
    /// Where `[limits] max_body_bytes` used to be; still read.
    max_body_bytes: Option<usize>,
    limits: Option<LimitsFile>,
    #[serde(default, with = "opt_duration")]
    sweep_interval: Option<Duration>,
    queue_defaults: Option<SettingsPatch>,
    tasks: Option<TasksFile>,
    auth: Option<AuthFile>,
    metrics: Option<MetricsFile>,
    durable_streams: Option<DurableStreamsFile>,
    redis: Option<RedisFile>,
    #[serde(default)]
    queues: std::collections::BTreeMap<String, SettingsPatch>,
    #[serde(default)]
    routes: Vec<toml::Spanned<crate::routes::RouteSpec>>,
}

/// `[tasks]`: how long task requests wait, and how long finished tasks are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksFile {
    #[serde(default, with = "opt_duration")]
    default_wait: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    max_wait: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    retention: Option<Duration>,
}

/// `[redis]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisFile {
    wait_replicas: Option<u32>,
}

/// `[durable_streams]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DurableStreamsFile {
    #[serde(default, with = "opt_duration")]
    long_poll_timeout: Option<Duration>,
    public: Option<bool>,
}

/// `[metrics]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    require_auth: Option<bool>,
}

/// `[auth]` of the file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default, with = "opt_duration")]
    token_ttl: Option<Duration>,
    jwt_secret: Option<String>,
    max_failures: Option<u32>,
    #[serde(default, with = "opt_duration")]
    failure_window: Option<Duration>,
    secret_key: Option<String>,
}

impl std::fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFile")
            .field("token_ttl", &self.token_ttl)
            .field("max_failures", &self.max_failures)
            .field("failure_window", &self.failure_window)
            .finish_non_exhaustive()
    }
}

/// `[limits]` of the file. Each value is checked as it is read, so that a bad one
/// fails with its line like a syntax error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default, deserialize_with = "header_timeout")]
    header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "idle_timeout")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "request_timeout")]
    request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "drain_timeout")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "max_header_bytes")]
    max_header_bytes: Option<usize>,
    #[serde(default, deserialize_with = "max_waiters")]
    max_waiters: Option<usize>,
    #[serde(default, deserialize_with = "max_poll")]
    max_poll: Option<Duration>,
    #[serde(default, deserialize_with = "max_connections")]
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "max_body_bytes")]
    max_body_bytes: Option<usize>,
}

/// A `[limits]` timeout: more than zero, at most [`MAX_LIMIT_TIMEOUT`].
fn limit_timeout<'de, D: serde::Deserializer<'de>>(
    d: D,
    name: &str,
) -> Result<Option<Duration>, D::Error> {
    let value = opt_duration::deserialize(d)?;
    match value {
        Some(timeout) if timeout.is_zero() || timeout > MAX_LIMIT_TIMEOUT => {
            Err(serde::de::Error::custom(format!(
                "limits.{name} must be more than 0 and at most {} seconds",
                MAX_LIMIT_TIMEOUT.as_secs()
            )))
        }
        value => Ok(value),
    }
}

/// A `[limits]` count within `min..=max`.
fn limit_count<'de, D: serde::Deserializer<'de>>(
    d: D,
    name: &str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, D::Error> {
    let value = Option::<u64>::deserialize(d)?;
    match value {
        Some(n) if n < min as u64 || n > max as u64 => Err(serde::de::Error::custom(format!(
            "limits.{name} must be between {min} and {max}"
        ))),
        value => Ok(value.map(|n| n as usize)),
    }
}

fn header_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    limit_timeout(d, "header_timeout")
}

fn idle_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    limit_timeout(d, "idle_timeout")
}

fn request_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    limit_timeout(d, "request_timeout")
}

fn max_poll<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    limit_timeout(d, "max_poll")
}

fn drain_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    limit_timeout(d, "drain_timeout")
}

fn max_header_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    limit_count(d, "max_header_bytes", MIN_HEADER_BYTES, MAX_HEADER_BYTES)
}

fn max_waiters<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    limit_count(d, "max_waiters", 1, MAX_WAITERS_LIMIT)
}

fn max_connections<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    limit_count(d, "max_connections", 1, MAX_CONNECTIONS_LIMIT)
}

fn max_body_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    limit_count(d, "max_body_bytes", 1024, usize::MAX)
}

impl Config {
    /// Builds the configuration from the file named in `overrides` (if any) and the overrides.
    pub fn load(overrides: Overrides) -> anyhow::Result<Config> {
        let (file, text) = match &overrides.config {
            Some(path) => read_file(path)?,
            None => (FileConfig::default(), String::new()),
        };
        let source = overrides
            .config
            .as_ref()
            .map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
        Self::resolve(file, &text, overrides).with_context(|| format!("invalid {source}"))
    }

    /// `text` is the file's, so errors found after parsing can name their line.
    fn resolve(file: FileConfig, text: &str, overrides: Overrides) -> anyhow::Result<Config> {
        let mut config = Config::default();
        if let Some(listen) = overrides.listen.or(file.listen) {
            config.listen = listen.parse().with_context(|| {
                format!("invalid listen address {listen:?}: use HOST:PORT, e.g. {DEFAULT_LISTEN}")
            })?;
        }
        if let Some(store) = overrides.store.or(file.store) {
            config.store = store;
        }
        if let Some(replicas) = file.redis.and_then(|redis| redis.wait_replicas) {
            config.store = with_wait_replicas(&config.store, replicas)?;
        }
        if let Some(format) = overrides.log_format.or(file.log_format) {
            config.log_format = format;
        }
        let limits = file.limits.unwrap_or_default();
        if let Some(limit) = file.max_body_bytes {
            anyhow::ensure!(
                limits.max_body_bytes.is_none(),
                "max_body_bytes is set twice: at the top and in [limits]; keep the one in [limits]"
            );
            anyhow::ensure!(limit >= 1024, "max_body_bytes must be at least 1024");
            config.max_body_bytes = limit;
        }
        if let Some(limit) = limits.max_body_bytes {
            config.max_body_bytes = limit;
        }
        let defaults = Limits::default();
        config.limits = Limits {
            header_timeout: limits.header_timeout.unwrap_or(defaults.header_timeout),
            idle_timeout: limits.idle_timeout.unwrap_or(defaults.idle_timeout),
            request_timeout: limits.request_timeout.unwrap_or(defaults.request_timeout),
            drain_timeout: limits.drain_timeout.unwrap_or(defaults.drain_timeout),
            max_header_bytes: limits.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            max_waiters: limits.max_waiters.unwrap_or(defaults.max_waiters),
            max_poll: limits.max_poll.unwrap_or(defaults.max_poll),
            max_connections: limits.max_connections.or(defaults.max_connections),
        };
        if let Some(interval) = file.sweep_interval {
            anyhow::ensure!(
                interval >= Duration::from_secs(1),
                "sweep_interval must be at least 1s"
            );
            config.sweep_interval = interval;
        }
        if let Some(patch) = file.queue_defaults {
            config.queue_defaults = patch
                .apply(&config.queue_defaults)
                .map_err(|e| anyhow::anyhow!("queue_defaults: {e}"))?;
        }
        if let Some(tasks) = file.tasks {
            let settings = &mut config.tasks;
            settings.default_wait = tasks.default_wait.unwrap_or(settings.default_wait);
            settings.max_wait = tasks.max_wait.unwrap_or(settings.max_wait);
            settings.retention = tasks.retention.unwrap_or(settings.retention);
            anyhow::ensure!(
                settings.max_wait <= MAX_TASK_WAIT,
                "tasks.max_wait must be at most {} seconds",
                MAX_TASK_WAIT.as_secs()
            );
            anyhow::ensure!(
                settings.default_wait <= settings.max_wait,
                "tasks.default_wait must not exceed tasks.max_wait"
            );
            anyhow::ensure!(
                settings.retention >= Duration::from_secs(1),
                "tasks.retention must be at least 1s"
            );
        }
        let file_secret_key = file.auth.as_ref().and_then(|auth| auth.secret_key.clone());
        if let Some(auth) = file.auth {
            if let Some(ttl) = auth.token_ttl {
                anyhow::ensure!(
                    ttl >= Duration::from_secs(1) && ttl <= MAX_TOKEN_TTL,
                    "auth.token_ttl must be between 1 second and {} days",
                    MAX_TOKEN_TTL.as_secs() / 86_400
                );
                config.auth.token_ttl = ttl;
            }
            if let Some(secret) = auth.jwt_secret {
                anyhow::ensure!(
                    secret.len() >= MIN_JWT_SECRET_LEN,
                    "auth.jwt_secret must be at least {MIN_JWT_SECRET_LEN} bytes"
                );
                config.auth.jwt_secret = Some(secret);
            }
            if let Some(max) = auth.max_failures {
                anyhow::ensure!(
                    (1..=MAX_FAILURES_LIMIT).contains(&max),
                    "auth.max_failures must be between 1 and {MAX_FAILURES_LIMIT}"
                );
                config.auth.max_failures = max;
            }
            if let Some(window) = auth.failure_window {
                anyhow::ensure!(
                    window >= Duration::from_secs(1) && window <= MAX_LIMIT_TIMEOUT,
                    "auth.failure_window must be between 1 second and {} seconds",
                    MAX_LIMIT_TIMEOUT.as_secs()
                );
                config.auth.failure_window = window;
            }
        }
        // The environment's key beats the file's, and is checked alone: a bad key in
        // the file does not matter while the environment sets a good one.
        let (secret_key, setting) = match overrides.secret_key.filter(|k| !k.trim().is_empty()) {
            Some(key) => (Some(key), "HOPPER_SECRET_KEY"),
            None => (file_secret_key, "auth.secret_key"),
        };
        if let Some(key) = secret_key {
            let key = crate::auth::SecretKey::from_base64(&key)
                .map_err(|error| anyhow::anyhow!("{setting} {error}"))?;
            config.auth.secret_key = Some(key);
        }
        if let Some(require_auth) = file.metrics.and_then(|m| m.require_auth) {
            config.metrics_require_auth = require_auth;
        }
        for (name, patch) in file.queues {
            let queue =
                QueueName::parse(&name).map_err(|e| anyhow::anyhow!("[queues.{name}]: {e}"))?;
            patch
                .apply(&config.queue_defaults)
                .map_err(|e| anyhow::anyhow!("[queues.{name}]: {e}"))?;
            config.queues.push((queue, patch));
        }
        if let Some(streams) = file.durable_streams {
            if let Some(timeout) = streams.long_poll_timeout {
                anyhow::ensure!(
                    timeout >= Duration::from_millis(1) && timeout <= config.limits.max_poll,
                    "durable_streams.long_poll_timeout must be between 1 ms and limits.max_poll ({} s)",
                    config.limits.max_poll.as_secs_f64()
                );
                config.durable_streams.long_poll_timeout = timeout;
            }
            if let Some(public) = streams.public {
                config.durable_streams.public = public;
            }
        }
        config.routes = crate::routes::parse(file.routes, text)?;
        config.admin_secret = overrides.admin_secret.filter(|s| !s.is_empty());
        Ok(config)
    }
}

fn read_file(path: &Path) -> anyhow::Result<(FileConfig, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let file = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((file, text))
}

/// The line (from 1) of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_wait_replicas_joins_a_redis_store_url_and_refuses_another() {
        assert_eq!(
            with_wait_replicas("redis://h:6379/0", 1).unwrap(),
            "redis://h:6379/0?wait_replicas=1"
        );
        assert_eq!(
            with_wait_replicas("redis://h?prefix=p", 2).unwrap(),
            "redis://h?prefix=p&wait_replicas=2"
        );
        assert_eq!(
            with_wait_replicas("redis://h?wait_replicas=3", 2).unwrap(),
            "redis://h?wait_replicas=3"
        );
        assert!(with_wait_replicas("sqlite://x.db", 1).is_err());
    }

    #[test]
    fn flags_beat_the_file_and_bad_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hopper.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nstore = \"sqlite://x.db\"\n[queue_defaults]\nlease = \"10s\"\n").unwrap();
        let config = Config::load(Overrides {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9001".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.store, "sqlite://x.db");
        assert_eq!(config.queue_defaults.lease, Duration::from_secs(10));

        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nlisten_typo = 1\n").unwrap();
        let error = Config::load(Overrides {
            config: Some(path),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("line 2"), "{error}");
    }

    fn load(text: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hopper.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Overrides {
            config: Some(path),
            ..Overrides::default()
        })
    }

    #[test]
    fn limits_have_defaults_take_both_duration_forms_and_name_the_line_of_a_bad_value() {
        let config = load("").unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.limits.request_timeout, Duration::from_secs(30));
        assert_eq!(config.limits.max_header_bytes, 65536);
        assert_eq!(config.limits.max_waiters, 10_000);
        assert_eq!(config.limits.max_connections, None);

        let config = load(
            "[limits]\nheader_timeout = 5\nidle_timeout = \"2m\"\nrequest_timeout = \"1.5s\"\n\
             drain_timeout = 0.5\nmax_header_bytes = 8192\nmax_waiters = 3\nmax_connections = 100\n\
             max_body_bytes = 2048\n",
        )
        .unwrap();
        let limits = &config.limits;
        assert_eq!(limits.header_timeout, Duration::from_secs(5));
        assert_eq!(limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(limits.request_timeout, Duration::from_millis(1500));
        assert_eq!(limits.drain_timeout, Duration::from_millis(500));
        assert_eq!(limits.max_header_bytes, 8192);
        assert_eq!(limits.max_waiters, 3);
        assert_eq!(limits.max_connections, Some(100));
        assert_eq!(config.max_body_bytes, 2048);

        for (text, line, reason) in [
            (
                "[limits]\nheader_timeout = 0\n",
                2,
                "limits.header_timeout must be more than 0",
            ),
            (
                "[limits]\n\nidle_timeout = \"2h\"\n",
                3,
                "limits.idle_timeout must be more than 0 and at most 3600 seconds",
            ),
            (
                "[limits]\nrequest_timeout = \"soon\"\n",
                2,
                "must be a number of seconds",
            ),
            (
                "[limits]\nmax_header_bytes = 100\n",
                2,
                "limits.max_header_bytes must be between 1024 and 16777216",
            ),
            (
                "[limits]\nmax_waiters = 0\n",
                2,
                "limits.max_waiters must be between 1",
            ),
            ("[limits]\nmax_connections = -1\n", 2, ""),
            (
                "[limits]\nmax_conections = 5\n",
                2,
                "unknown field `max_conections`",
            ),
        ] {
            let error = format!("{:#}", load(text).unwrap_err());
            assert!(error.contains(&format!("line {line}")), "{text:?}: {error}");
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_secret_key_is_32_bytes_of_base64_and_the_environment_beats_the_file() {
        use base64::Engine;
        let key = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        assert!(load("").unwrap().auth.secret_key.is_none());
        let config = load(&format!("[auth]\nsecret_key = \"{}\"\n", key(1))).unwrap();
        assert!(config.auth.secret_key.is_some());
        assert!(!format!("{config:?}").contains(&key(1)), "redacted");

        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let error = format!(
            "{:#}",
            load(&format!("[auth]\nsecret_key = \"{short}\"\n")).unwrap_err()
        );
        assert!(
            error.contains("auth.secret_key must be the base64 of 32 bytes")
                && error.contains("16 bytes"),
            "{error}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hopper.toml");
        std::fs::write(&path, format!("[auth]\nsecret_key = \"{short}\"\n")).unwrap();
        let with_env = |secret_key: &str| {
            Config::load(Overrides {
                config: Some(path.clone()),
                secret_key: Some(secret_key.to_owned()),
                ..Overrides::default()
            })
        };
        assert!(with_env(&key(2)).unwrap().auth.secret_key.is_some());
        let error = format!("{:#}", with_env("not base64!").unwrap_err());
        assert!(error.contains("HOPPER_SECRET_KEY is not base64"), "{error}");
    }

    #[test]
    fn max_body_bytes_moved_into_limits_and_the_old_key_still_works_alone() {
        assert_eq!(
            load("max_body_bytes = 4096\n").unwrap().max_body_bytes,
            4096
        );
        let error = format!(
            "{:#}",
            load("max_body_bytes = 4096\n[limits]\nmax_body_bytes = 8192\n").unwrap_err()
        );
        assert!(error.contains("set twice"), "{error}");
    }
}

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
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid"),
            store: DEFAULT_STORE.into(),
            log_format: LogFormat::Text,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            admin_secret: None,
            queue_defaults: QueueSettings::default(),
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            tasks: TaskSettings::default(),
            queues: Vec::new(),
            routes: Vec::new(),
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
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    store: Option<String>,
    log_format: Option<LogFormat>,
    max_body_bytes: Option<usize>,
    #[serde(default, with = "opt_duration")]
    sweep_interval: Option<Duration>,
    queue_defaults: Option<SettingsPatch>,
    tasks: Option<TasksFile>,
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
        if let Some(format) = overrides.log_format.or(file.log_format) {
            config.log_format = format;
        }
        if let Some(limit) = file.max_body_bytes {
            anyhow::ensure!(limit >= 1024, "max_body_bytes must be at least 1024");
            config.max_body_bytes = limit;
        }
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
        for (name, patch) in file.queues {
            let queue =
                QueueName::parse(&name).map_err(|e| anyhow::anyhow!("[queues.{name}]: {e}"))?;
            patch
                .apply(&config.queue_defaults)
                .map_err(|e| anyhow::anyhow!("[queues.{name}]: {e}"))?;
            config.queues.push((queue, patch));
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
}

//! The storage backends: SQLite (embedded, group commit), PostgreSQL (many
//! nodes on one database) and Redis (a server or a cluster, many nodes). Each implements the traits of
//! [`crate::domain::storage`] in the domain's own types, so the rest of Hopper
//! never knows which one runs. Backends hold their statements and transactions;
//! the rules they apply are the domain's.

use std::sync::Arc;

pub use crate::domain::storage::{
    AwsKeyStore, ClientStore, QueueStore, RecordKind, RecordStore, Store, StoreError, StoreResult,
    StreamStore, TaskStore,
};

mod batcher;
pub mod postgres;
pub mod redis;
mod sql;
pub mod sqlite;

/// The backends a store URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH`
    Sqlite,
    /// `postgres://...` or `postgresql://...`
    Postgres,
    /// `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://`
    Redis,
}

/// Which backend `url` names, by its scheme; an error saying which URLs work otherwise.
pub fn backend_of(url: &str) -> anyhow::Result<Backend> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Ok(Backend::Postgres),
        Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => Ok(Backend::Redis),
        _ => anyhow::bail!(
            "unsupported store URL {url:?}: use sqlite://PATH, postgres://USER@HOST:PORT/DB, \
             redis://HOST:PORT[/DB] or redis+cluster://HOST:PORT[,HOST:PORT...]"
        ),
    }
}

/// The database file a `sqlite://PATH` URL names; `None` for another backend.
pub fn sqlite_path(url: &str) -> Option<&std::path::Path> {
    url.strip_prefix("sqlite://").map(std::path::Path::new)
}

/// Opens the backend named by a store URL (see [`backend_of`]), creating the store if
/// it is new.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match backend_of(url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open(&url["sqlite://".len()..])?),
        Backend::Postgres => Arc::new(postgres::PostgresStore::open(url).await?),
        Backend::Redis => Arc::new(self::redis::RedisStore::open(url).await?),
    })
}

/// Opens the backend of a store URL as [`open`] does, but only a store that exists
/// already and holds Hopper's schema: for commands that manage a store (`hopper
/// clients`), where a mistyped URL must fail, naming what it points at, rather than
/// leave a new empty store behind. `serve` uses [`open`], which creates the store.
pub async fn open_existing(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match backend_of(url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::open_existing(
            &url["sqlite://".len()..],
        )?),
        Backend::Postgres => Arc::new(postgres::PostgresStore::open_existing(url).await?),
        Backend::Redis => Arc::new(self::redis::RedisStore::open_existing(url).await?),
    })
}

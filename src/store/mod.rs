//! The storage backends: SQLite (embedded, group commit), PostgreSQL (many
//! nodes on one database) and Redis (a server or a cluster, many nodes). Each implements the traits of
//! [`crate::domain::storage`] in the domain's own types, so the rest of Hopper
//! never knows which one runs. Backends hold their statements and transactions;
//! the rules they apply are the domain's.

use std::sync::Arc;

pub use crate::domain::storage::{
    ClientStore, QueueStore, Store, StoreError, StoreResult, StreamStore, TaskStore,
};

mod batcher;
pub mod postgres;
pub mod redis;
pub mod sqlite;

/// Opens the backend named by a store URL: `sqlite://PATH` or `postgres://...`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open(url).await?));
    }
    if [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
    {
        return Ok(Arc::new(self::redis::RedisStore::open(url).await?));
    }
    anyhow::bail!(
        "unsupported store URL {url:?}: use sqlite://PATH, postgres://USER@HOST:PORT/DB, \
         redis://HOST:PORT[/DB] or redis+cluster://HOST:PORT[,HOST:PORT...]"
    )
}

/// Opens the backend of a store URL as [`open`] does, but only a store that exists
/// already and holds Hopper's schema: for commands that manage a store (`hopper
/// clients`), where a mistyped URL must fail, naming what it points at, rather than
/// leave a new empty store behind. `serve` uses [`open`], which creates the store.
pub async fn open_existing(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::SqliteStore::open_existing(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open_existing(url).await?));
    }
    if url.starts_with("redis") {
        return Ok(Arc::new(self::redis::RedisStore::open_existing(url).await?));
    }
    open(url).await
}

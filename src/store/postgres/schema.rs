//! The PostgreSQL schema and its migrations, applied in order at start-up under an
//! advisory lock, so several nodes starting at once migrate exactly once.

use tokio_postgres::Client;

/// Migrations in order; never edit one that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: queues, messages, idempotency keys, clients (the same model as SQLite's).
    r#"
    CREATE TABLE queues (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        lease_ms BIGINT NOT NULL,
        max_attempts INTEGER NOT NULL,
        retention_ms BIGINT,
        idempotency_window_ms BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    -- state: 0 waiting (ready once visible_at has passed), 1 leased until visible_at, 2 dead.
    CREATE TABLE messages (
        id BIGSERIAL PRIMARY KEY,
        queue_id BIGINT NOT NULL,
        state SMALLINT NOT NULL,
        visible_at BIGINT NOT NULL,
        attempts INTEGER NOT NULL,
        lease_token BIGINT,
        enqueued_at BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX messages_fifo ON messages (queue_id, state, id) INCLUDE (visible_at);
    CREATE INDEX messages_leases ON messages (queue_id, visible_at) WHERE state = 1;
    CREATE TABLE idempotency_keys (
        queue_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        message_id BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (queue_id, key)
    );
    CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
    CREATE TABLE clients (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        grants TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    "#,
    // 2: streams, their events and consumer offsets (as SQLite's).
    r#"
    CREATE TABLE streams (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        last_event BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        -- Retention: events older than this, or more than this many, are dropped.
        max_age_ms BIGINT,
        max_events BIGINT
    );
    CREATE TABLE events (
        stream_id BIGINT NOT NULL,
        id BIGINT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        appended_at BIGINT NOT NULL,
        PRIMARY KEY (stream_id, id)
    );
    CREATE INDEX events_by_name ON events (stream_id, name, id);
    CREATE TABLE stream_offsets (
        stream_id BIGINT NOT NULL,
        consumer TEXT NOT NULL,
        event_name TEXT NOT NULL,
        offset_id BIGINT NOT NULL,
        PRIMARY KEY (stream_id, consumer, event_name)
    );
    "#,
    // 3: tasks, each beside its queue message (as SQLite's).
    r#"
    -- status: 0 unfinished (pending, running or failed, as its message says; expired
    -- when the message is gone), 1 succeeded, 2 failed, 3 expired.
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        message_id BIGINT NOT NULL,
        status SMALLINT NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        finished_at BIGINT,
        keep_ms BIGINT NOT NULL,
        expires_at BIGINT
    );
    CREATE INDEX tasks_by_queue ON tasks (queue, status);
    CREATE INDEX tasks_by_message ON tasks (message_id);
    CREATE INDEX tasks_unfinished ON tasks (message_id) WHERE status = 0;
    CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
    "#,
    // 4: delivery to upstreams (as SQLite's).
    r#"
    ALTER TABLE queues ADD COLUMN delivery TEXT;
    ALTER TABLE messages ADD COLUMN last_error TEXT;
    ALTER TABLE tasks ADD COLUMN upstream_status INTEGER;
    "#,
    // 5: a task's message names its task (as SQLite's).
    r#"
    ALTER TABLE messages ADD COLUMN task_id TEXT;
    UPDATE messages m SET task_id = t.id FROM tasks t WHERE t.message_id = m.id;
    "#,
    // 6: the key login tokens are signed with, made once and shared by every node.
    r#"
    CREATE TABLE signing_keys (
        name TEXT PRIMARY KEY,
        key BYTEA NOT NULL
    );
    "#,
    // 7: the byte log under every stream (the Durable Streams protocol), as SQLite's
    // migrations 7 and 8: a stream's content type, closure, expiry, producers, the
    // writer's last Stream-Seq and, for a fork, where it branched; a stream deleted
    // while forks name it stays a tombstone. Entries that are not JSON keep their
    // bytes in `data`, with no `body`.
    r#"
    ALTER TABLE streams ADD COLUMN content_type TEXT NOT NULL DEFAULT 'application/json';
    ALTER TABLE streams ADD COLUMN ttl_s BIGINT;
    ALTER TABLE streams ADD COLUMN expires_at BIGINT;
    ALTER TABLE streams ADD COLUMN touched_at BIGINT;
    ALTER TABLE streams ADD COLUMN closed BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE streams ADD COLUMN closed_by_producer TEXT;
    ALTER TABLE streams ADD COLUMN closed_by_epoch BIGINT;
    ALTER TABLE streams ADD COLUMN closed_by_seq BIGINT;
    ALTER TABLE streams ADD COLUMN stream_seq TEXT;
    ALTER TABLE streams ADD COLUMN forked_from TEXT;
    ALTER TABLE streams ADD COLUMN fork_position BIGINT;
    ALTER TABLE streams ADD COLUMN fork_sub BIGINT;
    CREATE INDEX streams_forked_from ON streams (forked_from) WHERE forked_from IS NOT NULL;
    CREATE INDEX streams_expiring ON streams (id) WHERE ttl_s IS NOT NULL OR expires_at IS NOT NULL;
    ALTER TABLE events ALTER COLUMN body DROP NOT NULL;
    ALTER TABLE events ADD COLUMN data BYTEA;
    CREATE TABLE stream_producers (
        stream_id BIGINT NOT NULL,
        producer TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (stream_id, producer)
    );
    CREATE TABLE stream_tombstones (
        name TEXT PRIMARY KEY,
        forked_from TEXT
    );
    CREATE INDEX stream_tombstones_forked_from ON stream_tombstones (forked_from)
        WHERE forked_from IS NOT NULL;
    "#,
    // 8: message groups, the edge's per-message metadata, the first receive's time;
    // the queue settings newer than their own columns, as one JSON object (SQLite's 9).
    r#"
    ALTER TABLE queues ADD COLUMN options TEXT;
    ALTER TABLE messages ADD COLUMN grp TEXT;
    ALTER TABLE messages ADD COLUMN meta TEXT;
    ALTER TABLE messages ADD COLUMN first_received_at BIGINT;
    CREATE INDEX messages_groups ON messages (queue_id, grp, id) WHERE grp IS NOT NULL;
    "#,
    // 9: AWS access keys for SigV4 (as SQLite's migration 10); deleted with their
    // client by a foreign key.
    r#"
    CREATE TABLE aws_keys (
        access_key_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        sealed_secret BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX aws_keys_by_client ON aws_keys (client_id, created_at);
    "#,
];

/// Any constant works: it names the lock every node takes to migrate.
const MIGRATION_LOCK: i64 = 0x686f_7070_6572; // "hopper"

/// Creates the schema if needed and applies pending migrations in one transaction.
pub async fn migrate(client: &mut Client, schema: Option<&str>) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(schema) = schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await?;
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS hopper_schema (version INTEGER NOT NULL)")
        .await?;
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM hopper_schema",
            &[],
        )
        .await?
        .try_get(0)?;
    anyhow::ensure!(
        version as usize <= MIGRATIONS.len(),
        "database schema version {version} is newer than this hopper ({}); upgrade hopper",
        MIGRATIONS.len()
    );
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(migration).await?;
        tx.execute(
            "INSERT INTO hopper_schema (version) VALUES ($1)",
            &[&(index as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

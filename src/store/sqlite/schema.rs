//! The SQLite schema and its migrations, applied in order by `PRAGMA user_version`.

use rusqlite::Connection;

/// Migrations in order; the schema version is the number applied. Never edit one
/// that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: queues, messages, idempotency keys, clients.
    r#"
    CREATE TABLE queues (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        lease_ms INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        retention_ms INTEGER,
        idempotency_window_ms INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    -- state: 0 waiting (ready once visible_at has passed), 1 leased until visible_at, 2 dead.
    -- AUTOINCREMENT so an id is never reused after the newest message is deleted:
    -- receipts and idempotency keys refer to ids.
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id INTEGER NOT NULL,
        state INTEGER NOT NULL,
        visible_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        lease_token INTEGER,
        enqueued_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    -- FIFO scans by state; visible_at is included so skipping delayed rows needs no table read.
    CREATE INDEX messages_fifo ON messages (queue_id, state, id, visible_at);
    -- Only leased rows, so finding expired leases costs nothing while none expire.
    CREATE INDEX messages_leases ON messages (queue_id, visible_at) WHERE state = 1;
    CREATE TABLE idempotency_keys (
        queue_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
    CREATE TABLE clients (
        id TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        grants TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: streams, their events and consumer offsets.
    r#"
    CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        last_event INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        -- Retention: events older than this, or more than this many, are dropped.
        max_age_ms INTEGER,
        max_events INTEGER
    );
    CREATE TABLE events (
        stream_id INTEGER NOT NULL,
        id INTEGER NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        appended_at INTEGER NOT NULL,
        PRIMARY KEY (stream_id, id)
    ) WITHOUT ROWID;
    -- Reads are by event name after an offset.
    CREATE INDEX events_by_name ON events (stream_id, name, id);
    CREATE TABLE stream_offsets (
        stream_id INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        event_name TEXT NOT NULL,
        offset_id INTEGER NOT NULL,
        PRIMARY KEY (stream_id, consumer, event_name)
    ) WITHOUT ROWID;
    "#,
    // 3: tasks, each beside its queue message.
    r#"
    -- status: 0 unfinished (pending, running or failed, as its message says; expired
    -- when the message is gone), 1 succeeded, 2 failed, 3 expired.
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        status INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        keep_ms INTEGER NOT NULL,
        expires_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX tasks_by_queue ON tasks (queue, status);
    -- Idempotent creates find a task by the message its first push made.
    CREATE INDEX tasks_by_message ON tasks (message_id);
    -- The sweep looks only at unfinished tasks, and at finished ones past their time.
    CREATE INDEX tasks_unfinished ON tasks (message_id) WHERE status = 0;
    CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
    "#,
    // 4: delivery to upstreams: the queue's setting (JSON), a message's last failed
    // attempt, the upstream status that finished a task.
    r#"
    ALTER TABLE queues ADD COLUMN delivery TEXT;
    ALTER TABLE messages ADD COLUMN last_error TEXT;
    ALTER TABLE tasks ADD COLUMN upstream_status INTEGER;
    "#,
    // 5: a task's message names its task, so consumers of the message (the delivery
    // engine) know it is one without guessing from the body.
    r#"
    ALTER TABLE messages ADD COLUMN task_id TEXT;
    UPDATE messages SET task_id = (SELECT t.id FROM tasks t WHERE t.message_id = messages.id)
    WHERE id IN (SELECT message_id FROM tasks);
    "#,
    // 6: the key login tokens are signed with, made once and shared by every node.
    r#"
    CREATE TABLE signing_keys (
        name TEXT PRIMARY KEY,
        key BLOB NOT NULL
    );
    "#,
    // 7: a stream is a byte log (the Durable Streams protocol's view of it): a
    // content type, closure, expiry, the idempotent producers, the writer's last
    // Stream-Seq. An entry that is no seed-004 event has the empty name; a stream
    // no seed-004 producer wrote yet has the empty owner. Bodies of streams other
    // than JSON are BLOBs.
    r#"
    ALTER TABLE streams ADD COLUMN content_type TEXT NOT NULL DEFAULT 'application/json';
    ALTER TABLE streams ADD COLUMN ttl_s INTEGER;
    ALTER TABLE streams ADD COLUMN expires_at INTEGER;
    ALTER TABLE streams ADD COLUMN touched_at INTEGER;
    ALTER TABLE streams ADD COLUMN closed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE streams ADD COLUMN closed_by_producer TEXT;
    ALTER TABLE streams ADD COLUMN closed_by_epoch INTEGER;
    ALTER TABLE streams ADD COLUMN closed_by_seq INTEGER;
    ALTER TABLE streams ADD COLUMN stream_seq TEXT;
    CREATE TABLE stream_producers (
        stream_id INTEGER NOT NULL,
        producer TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (stream_id, producer)
    ) WITHOUT ROWID;
    "#,
    // 8: forks. A fork names its source and where it branched (what a repeated
    // create must match); a stream deleted while forks name it stays a tombstone.
    r#"
    ALTER TABLE streams ADD COLUMN forked_from TEXT;
    ALTER TABLE streams ADD COLUMN fork_position INTEGER;
    ALTER TABLE streams ADD COLUMN fork_sub INTEGER;
    CREATE INDEX streams_forked_from ON streams (forked_from) WHERE forked_from IS NOT NULL;
    CREATE TABLE stream_tombstones (
        name TEXT PRIMARY KEY,
        forked_from TEXT
    ) WITHOUT ROWID;
    CREATE INDEX stream_tombstones_forked_from ON stream_tombstones (forked_from)
        WHERE forked_from IS NOT NULL;
    "#,
    // 9: message groups, the edge's per-message metadata, the first receive's time;
    // the queue settings newer than their own columns, as one JSON object.
    r#"
    ALTER TABLE queues ADD COLUMN options TEXT;
    ALTER TABLE messages ADD COLUMN grp TEXT;
    ALTER TABLE messages ADD COLUMN meta TEXT;
    ALTER TABLE messages ADD COLUMN first_received_at INTEGER;
    -- A group's head is its oldest message that is not dead.
    CREATE INDEX messages_groups ON messages (queue_id, grp, id) WHERE grp IS NOT NULL;
    "#,
    // 10: AWS access keys for SigV4: the secret sealed under a key kept outside the
    // store; a client's keys are deleted with it (by the code, not a foreign key,
    // since foreign keys are off).
    r#"
    CREATE TABLE aws_keys (
        access_key_id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        sealed_secret BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX aws_keys_by_client ON aws_keys (client_id, created_at);
    "#,
    // 11: the domain's small documents (subscriptions, schedules) and the cursors
    // nodes move by compare-and-swap (a subscription's position, a schedule's last
    // tick, an upstream's rate-limit bucket).
    r#"
    CREATE TABLE records (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE cursors (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_time ON events (stream_id, appended_at, id);
    "#,
];

/// Brings the schema up to date in one transaction; refuses a database newer than this binary.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this hopper ({}); upgrade hopper",
            MIGRATIONS.len()
        )));
    }
    for migration in &MIGRATIONS[version..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()
}

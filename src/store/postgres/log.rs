//! The byte log on PostgreSQL, as SQLite's (see `store::sqlite::log`): a stream's
//! entries are its `events` rows (JSON messages as `body` text, so seed 004's reads
//! see them; other bytes as `data`), its settings columns of `streams`, its producers
//! rows of `stream_producers`. A write locks the stream's row, so two nodes that
//! append to one stream take turns and positions stay gapless. Decisions are
//! `domain::log`'s.

use deadpool_postgres::Transaction;
use tokio_postgres::Row as PgRow;

use super::{column, pg};
use crate::domain::clock::Millis;
use crate::domain::log::{
    create_matches, expired, fork_anchor, is_json, plan_append, plan_fork, AppendOutcome,
    AppendPlan, CreateLog, CreateOutcome, Entry, Expiry, ForkOrigin, LogAppend, LogConfig, LogRead,
    LogState, Position, ProducerClaim, ProducerState,
};
use crate::domain::{StoreError, StoreResult, StreamName};

/// Rows a read fetches at most; its byte budget usually stops it first.
const READ_ROWS: i64 = 4096;

/// A stream row: its id, its state, and when it was last read or written.
struct Row {
    id: i64,
    state: LogState,
    touched_at: Millis,
}

const COLUMNS: &str = "id, content_type, ttl_s, expires_at, last_event, closed,
    closed_by_producer, closed_by_epoch, closed_by_seq, stream_seq, touched_at, created_at,
    forked_from, fork_position, fork_sub";

fn row_of(row: &PgRow) -> StoreResult<Row> {
    let read = "find stream";
    let closed_by = match (
        column::<Option<String>>(row, 6, read)?,
        column::<Option<i64>>(row, 7, read)?,
        column::<Option<i64>>(row, 8, read)?,
    ) {
        (Some(id), Some(epoch), Some(seq)) => Some(ProducerClaim {
            id,
            epoch: epoch.max(0) as u64,
            seq: seq.max(0) as u64,
        }),
        _ => None,
    };
    let fork = match column::<Option<String>>(row, 12, read)? {
        Some(source) => Some(ForkOrigin {
            source,
            position: column::<Option<i64>>(row, 13, read)?.unwrap_or(0),
            sub: column::<Option<i64>>(row, 14, read)?.unwrap_or(0).max(0) as u64,
        }),
        None => None,
    };
    let created_at: Millis = column(row, 11, read)?;
    Ok(Row {
        id: column(row, 0, read)?,
        state: LogState {
            config: LogConfig {
                content_type: column(row, 1, read)?,
                expiry: Expiry::from_columns(column(row, 2, read)?, column(row, 3, read)?),
                fork,
            },
            tail: column(row, 4, read)?,
            closed: column(row, 5, read)?,
            closed_by,
            stream_seq: column(row, 9, read)?,
        },
        touched_at: column::<Option<Millis>>(row, 10, read)?.unwrap_or(created_at),
    })
}

/// How a lookup holds the stream's row until the transaction ends.
#[derive(Clone, Copy)]
enum Hold {
    /// Not at all (a read).
    Nothing,
    /// Against deletion (a fork's source).
    Share,
    /// Against every other write (an append, a delete).
    Update,
}

/// The stream's row, whether or not it has expired.
async fn find_any(tx: &Transaction<'_>, name: &str, hold: Hold) -> StoreResult<Option<Row>> {
    let lock = match hold {
        Hold::Nothing => "",
        Hold::Share => " FOR SHARE",
        Hold::Update => " FOR UPDATE",
    };
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM streams WHERE name = $1{lock}"
        ))
        .await
        .map_err(pg("find stream"))?;
    tx.query_opt(&stmt, &[&name])
        .await
        .map_err(pg("find stream"))?
        .map(|row| row_of(&row))
        .transpose()
}

/// The stream's row, if it exists and has not expired.
async fn find(
    tx: &Transaction<'_>,
    name: &str,
    hold: Hold,
    now: Millis,
) -> StoreResult<Option<Row>> {
    Ok(find_any(tx, name, hold)
        .await?
        .filter(|row| !expired(row.state.config.expiry, row.touched_at, now)))
}

/// The stream's row; `StreamGone` for a tombstone, else `StreamNotFound`.
async fn existing(
    tx: &Transaction<'_>,
    name: &StreamName,
    hold: Hold,
    now: Millis,
) -> StoreResult<Row> {
    match find(tx, name.as_str(), hold, now).await? {
        Some(row) => Ok(row),
        None if tombstone(tx, name.as_str(), false).await?.is_some() => {
            Err(StoreError::StreamGone(name.to_string()))
        }
        None => Err(StoreError::StreamNotFound(name.to_string())),
    }
}

/// The tombstone holding this name, if one does: the source it was a fork of, if any.
async fn tombstone(
    tx: &Transaction<'_>,
    name: &str,
    lock: bool,
) -> StoreResult<Option<Option<String>>> {
    let stmt = tx
        .prepare_cached(if lock {
            "SELECT forked_from FROM stream_tombstones WHERE name = $1 FOR UPDATE"
        } else {
            "SELECT forked_from FROM stream_tombstones WHERE name = $1"
        })
        .await
        .map_err(pg("find tombstone"))?;
    tx.query_opt(&stmt, &[&name])
        .await
        .map_err(pg("find tombstone"))?
        .map(|row| column(&row, 0, "find tombstone"))
        .transpose()
}

/// How many streams and tombstones name this one as their source.
async fn forks_of(tx: &Transaction<'_>, name: &str) -> StoreResult<i64> {
    let stmt = tx
        .prepare_cached(
            "SELECT (SELECT count(*) FROM streams WHERE forked_from = $1)
                  + (SELECT count(*) FROM stream_tombstones WHERE forked_from = $1)",
        )
        .await
        .map_err(pg("count forks"))?;
    let row = tx
        .query_one(&stmt, &[&name])
        .await
        .map_err(pg("count forks"))?;
    column(&row, 0, "count forks")
}

/// Removes the tombstones that no fork names any more, from `source` up its chain.
/// Each is locked before its forks are counted, so of two forks deleted at once the
/// later one sees the other gone.
async fn release(tx: &Transaction<'_>, mut source: Option<String>) -> StoreResult<()> {
    while let Some(name) = source.take() {
        // A delete of the source that counted this fork before it went holds the
        // source's row until its tombstone is in: wait for it, then look.
        tx.execute("SELECT 1 FROM streams WHERE name = $1 FOR UPDATE", &[&name])
            .await
            .map_err(pg("lock source"))?;
        let Some(parent) = tombstone(tx, &name, true).await? else {
            break;
        };
        if forks_of(tx, &name).await? > 0 {
            break;
        }
        tx.execute("DELETE FROM stream_tombstones WHERE name = $1", &[&name])
            .await
            .map_err(pg("remove tombstone"))?;
        source = parent;
    }
    Ok(())
}

/// Removes a stream and all it holds.
async fn remove(tx: &Transaction<'_>, stream: i64) -> StoreResult<()> {
    for statement in [
        "DELETE FROM events WHERE stream_id = $1",
        "DELETE FROM stream_offsets WHERE stream_id = $1",
        "DELETE FROM stream_producers WHERE stream_id = $1",
        "DELETE FROM streams WHERE id = $1",
    ] {
        let stmt = tx
            .prepare_cached(statement)
            .await
            .map_err(pg("delete stream"))?;
        tx.execute(&stmt, &[&stream])
            .await
            .map_err(pg("delete stream"))?;
    }
    Ok(())
}

/// Stores `entries` after `tail` in one statement; returns the new tail.
async fn store_entries(
    tx: &Transaction<'_>,
    stream: i64,
    tail: Position,
    content_type: &str,
    entries: &[Entry],
    now: Millis,
) -> StoreResult<Position> {
    if entries.is_empty() {
        return Ok(tail);
    }
    let as_text = is_json(content_type);
    let ids: Vec<i64> = (tail + 1..=tail + entries.len() as i64).collect();
    let names: Vec<&str> = entries
        .iter()
        .map(|entry| entry.name.as_deref().unwrap_or(""))
        .collect();
    // JSON messages are stored as text, so seed 004's reads see them as it stores events.
    let (bodies, data): (Vec<Option<&str>>, Vec<Option<&[u8]>>) = entries
        .iter()
        .map(|entry| match std::str::from_utf8(&entry.data) {
            Ok(text) if as_text => (Some(text), None),
            _ => (None, Some(entry.data.as_slice())),
        })
        .unzip();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (stream_id, id, name, body, data, appended_at)
             SELECT $1, id, name, body, data, $6
             FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[]) AS u(id, name, body, data)",
        )
        .await
        .map_err(pg("append entries"))?;
    tx.execute(&stmt, &[&stream, &ids, &names, &bodies, &data, &now])
        .await
        .map_err(pg("append entries"))?;
    Ok(tail + entries.len() as i64)
}

/// Creates a stream, or a fork; see [`crate::domain::LogStore::create_log`].
pub async fn create(
    tx: &Transaction<'_>,
    name: &StreamName,
    request: &CreateLog,
    now: Millis,
) -> StoreResult<CreateOutcome> {
    let found = find_any(tx, name.as_str(), Hold::Update).await?;
    if let Some(row) = &found {
        if !expired(row.state.config.expiry, row.touched_at, now) {
            return Ok(if create_matches(&row.state, request) {
                CreateOutcome::Exists(row.state.clone())
            } else {
                CreateOutcome::Conflict
            });
        }
    }
    if tombstone(tx, name.as_str(), false).await?.is_some() {
        return Ok(CreateOutcome::Conflict);
    }
    let (config, inherit) = match &request.fork {
        None => (request.config.clone(), None),
        Some(fork) => {
            let Some(source) = find(tx, fork.source.as_str(), Hold::Share, now).await? else {
                return Ok(
                    if tombstone(tx, fork.source.as_str(), false).await?.is_some() {
                        CreateOutcome::Conflict
                    } else {
                        CreateOutcome::SourceNotFound
                    },
                );
            };
            let next_len = entry_len(tx, source.id, fork_anchor(&source.state, fork) + 1).await?;
            match plan_fork(&source.state, next_len, request) {
                Ok(plan) => (plan.config.clone(), Some((source.id, plan))),
                Err(refusal) => return Ok(refusal.into()),
            }
        }
    };
    // An expired stream is gone: its row makes way for the new one.
    if let Some(row) = found {
        remove(tx, row.id).await?;
        release(tx, row.state.config.fork.map(|origin| origin.source)).await?;
    }
    let (ttl_s, expires_at) = config.expiry.columns();
    let fork = config.fork.as_ref();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO streams (name, owner, last_event, created_at, content_type, ttl_s,
                 expires_at, closed, touched_at, forked_from, fork_position, fork_sub)
             VALUES ($1, '', 0, $2, $3, $4, $5, $6, $2, $7, $8, $9)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .await
        .map_err(pg("create stream"))?;
    let inserted = tx
        .query_opt(
            &stmt,
            &[
                &name.as_str(),
                &now,
                &config.content_type,
                &ttl_s,
                &expires_at,
                &request.closed,
                &fork.map(|origin| origin.source.as_str()),
                &fork.map(|origin| origin.position),
                &fork.map(|origin| i64::try_from(origin.sub).unwrap_or(i64::MAX)),
            ],
        )
        .await
        .map_err(pg("create stream"))?;
    let Some(inserted) = inserted else {
        // Another node created it since the lookup: answer as a repeat would.
        return Ok(match find(tx, name.as_str(), Hold::Nothing, now).await? {
            Some(row) if create_matches(&row.state, request) => CreateOutcome::Exists(row.state),
            _ => CreateOutcome::Conflict,
        });
    };
    let stream: i64 = column(&inserted, 0, "create stream")?;
    let mut tail = 0;
    if let Some((source, plan)) = inherit {
        tail = copy_entries(tx, source, stream, plan.upto, plan.partial).await?;
    }
    let tail = store_entries(
        tx,
        stream,
        tail,
        &config.content_type,
        &request.entries,
        now,
    )
    .await?;
    tx.execute(
        "UPDATE streams SET last_event = $2 WHERE id = $1",
        &[&stream, &tail],
    )
    .await
    .map_err(pg("create stream"))?;
    Ok(CreateOutcome::Created(LogState {
        config,
        tail,
        closed: request.closed,
        closed_by: None,
        stream_seq: None,
    }))
}

/// The length in bytes of entry `position` of a stream, if it has one.
async fn entry_len(
    tx: &Transaction<'_>,
    stream: i64,
    position: Position,
) -> StoreResult<Option<usize>> {
    let stmt = tx
        .prepare_cached(
            "SELECT COALESCE(octet_length(data), octet_length(body))::BIGINT FROM events
             WHERE stream_id = $1 AND id = $2",
        )
        .await
        .map_err(pg("read entry"))?;
    tx.query_opt(&stmt, &[&stream, &position])
        .await
        .map_err(pg("read entry"))?
        .map(|row| column::<Option<i64>>(&row, 0, "read entry"))
        .transpose()
        .map(|len| len.flatten().map(|len| len.max(0) as usize))
}

/// Copies a source's entries through `upto`, and the first `partial` bytes of the
/// next one, into a fork; returns the fork's tail.
async fn copy_entries(
    tx: &Transaction<'_>,
    source: i64,
    fork: i64,
    upto: Position,
    partial: Option<usize>,
) -> StoreResult<Position> {
    tx.execute(
        "INSERT INTO events (stream_id, id, name, body, data, appended_at)
         SELECT $2, id, name, body, data, appended_at FROM events WHERE stream_id = $1 AND id <= $3",
        &[&source, &fork, &upto],
    )
    .await
    .map_err(pg("copy entries"))?;
    let Some(bytes) = partial else {
        return Ok(upto);
    };
    // A part of an entry is no whole seed-004 event: it keeps no name.
    tx.execute(
        "INSERT INTO events (stream_id, id, name, body, data, appended_at)
         SELECT $2, id, '', NULL, substring(COALESCE(data, convert_to(body, 'UTF8')) FROM 1 FOR $4::INTEGER), appended_at
         FROM events WHERE stream_id = $1 AND id = $3::BIGINT + 1",
        &[
            &source,
            &fork,
            &upto,
            &i32::try_from(bytes).unwrap_or(i32::MAX),
        ],
    )
    .await
    .map_err(pg("copy entries"))?;
    Ok(upto + 1)
}

/// Appends as [`plan_append`] decides; see [`crate::domain::LogStore::append_log`].
pub async fn append(
    tx: &Transaction<'_>,
    name: &StreamName,
    request: &LogAppend,
    now: Millis,
) -> StoreResult<AppendOutcome> {
    let row = existing(tx, name, Hold::Update, now).await?;
    let known = match &request.producer {
        None => None,
        Some(claim) => {
            let stmt = tx
                .prepare_cached(
                    "SELECT epoch, seq FROM stream_producers WHERE stream_id = $1 AND producer = $2",
                )
                .await
                .map_err(pg("find producer"))?;
            match tx
                .query_opt(&stmt, &[&row.id, &claim.id])
                .await
                .map_err(pg("find producer"))?
            {
                Some(found) => Some(ProducerState {
                    epoch: column::<i64>(&found, 0, "find producer")?.max(0) as u64,
                    seq: column::<i64>(&found, 1, "find producer")?.max(0) as u64,
                }),
                None => None,
            }
        }
    };
    let (producer, close, stream_seq) = match plan_append(&row.state, known, request) {
        AppendPlan::Answer(outcome) => return Ok(outcome),
        AppendPlan::Write {
            producer,
            close,
            stream_seq,
        } => (producer, close, stream_seq),
    };
    let tail = store_entries(
        tx,
        row.id,
        row.state.tail,
        &row.state.config.content_type,
        &request.entries,
        now,
    )
    .await?;
    if let Some((id, state)) = &producer {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO stream_producers (stream_id, producer, epoch, seq) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (stream_id, producer) DO UPDATE SET epoch = EXCLUDED.epoch, seq = EXCLUDED.seq",
            )
            .await
            .map_err(pg("store producer"))?;
        tx.execute(
            &stmt,
            &[
                &row.id,
                id,
                &i64::try_from(state.epoch).unwrap_or(i64::MAX),
                &i64::try_from(state.seq).unwrap_or(i64::MAX),
            ],
        )
        .await
        .map_err(pg("store producer"))?;
    }
    let closer = request.producer.as_ref().filter(|_| close);
    let stmt = tx
        .prepare_cached(
            "UPDATE streams SET last_event = $2, touched_at = $3,
                 stream_seq = COALESCE($4, stream_seq),
                 closed = closed OR $5,
                 closed_by_producer = CASE WHEN $5 THEN $6 ELSE closed_by_producer END,
                 closed_by_epoch = CASE WHEN $5 THEN $7 ELSE closed_by_epoch END,
                 closed_by_seq = CASE WHEN $5 THEN $8 ELSE closed_by_seq END
             WHERE id = $1",
        )
        .await
        .map_err(pg("append entries"))?;
    tx.execute(
        &stmt,
        &[
            &row.id,
            &tail,
            &now,
            &stream_seq,
            &close,
            &closer.map(|claim| claim.id.as_str()),
            &closer.map(|claim| i64::try_from(claim.epoch).unwrap_or(i64::MAX)),
            &closer.map(|claim| i64::try_from(claim.seq).unwrap_or(i64::MAX)),
        ],
    )
    .await
    .map_err(pg("append entries"))?;
    Ok(AppendOutcome::Appended {
        tail,
        closed: close,
        producer: producer.map(|(_, state)| state),
    })
}

/// Entries after `after`, at most `max_bytes` of them but at least one.
pub async fn read(
    tx: &Transaction<'_>,
    name: &StreamName,
    after: Position,
    max_bytes: usize,
    now: Millis,
) -> StoreResult<LogRead> {
    let row = existing(tx, name, Hold::Nothing, now).await?;
    let stmt = tx
        .prepare_cached(
            // The budget is counted in the database, from the entries' lengths, so
            // that no more entries than fit leave it: the first one always does.
            "SELECT id, COALESCE(data, convert_to(body, 'UTF8')) FROM (
                 SELECT id, data, body,
                        sum(COALESCE(octet_length(data), octet_length(body))) OVER (ORDER BY id) AS upto,
                        row_number() OVER (ORDER BY id) AS n
                 FROM (SELECT id, data, body FROM events
                       WHERE stream_id = $1 AND id > $2 ORDER BY id LIMIT $3) AS page
             ) AS counted
             WHERE n = 1 OR upto <= $4 ORDER BY id",
        )
        .await
        .map_err(pg("read entries"))?;
    let budget = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    let rows = tx
        .query(&stmt, &[&row.id, &after, &READ_ROWS, &budget])
        .await
        .map_err(pg("read entries"))?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut bytes = 0;
    for entry in &rows {
        let data: Vec<u8> = column(entry, 1, "read entries")?;
        if !entries.is_empty() && bytes + data.len() > max_bytes {
            break;
        }
        bytes += data.len();
        entries.push((column(entry, 0, "read entries")?, data));
    }
    Ok(LogRead {
        entries,
        state: row.state,
    })
}

/// The stream's state; see [`crate::domain::LogStore::log_state`].
pub async fn state(tx: &Transaction<'_>, name: &StreamName, now: Millis) -> StoreResult<LogState> {
    Ok(existing(tx, name, Hold::Nothing, now).await?.state)
}

/// Restarts an idle-expiry stream's countdown.
pub async fn touch(tx: &Transaction<'_>, name: &StreamName, now: Millis) -> StoreResult<()> {
    tx.execute(
        "UPDATE streams SET touched_at = GREATEST(COALESCE(touched_at, 0), $2)
         WHERE name = $1 AND ttl_s IS NOT NULL",
        &[&name.as_str(), &now],
    )
    .await
    .map_err(pg("touch stream"))?;
    Ok(())
}

/// Deletes a stream, leaving a tombstone if forks name it; see
/// [`crate::domain::LogStore::delete_log`].
pub async fn delete(tx: &Transaction<'_>, name: &StreamName, now: Millis) -> StoreResult<()> {
    // The row lock keeps a fork from being made of it while the forks are counted.
    let row = existing(tx, name, Hold::Update, now).await?;
    let fork = row.state.config.fork;
    remove(tx, row.id).await?;
    if forks_of(tx, name.as_str()).await? > 0 {
        tx.execute(
            "INSERT INTO stream_tombstones (name, forked_from) VALUES ($1, $2)",
            &[
                &name.as_str(),
                &fork.as_ref().map(|origin| origin.source.as_str()),
            ],
        )
        .await
        .map_err(pg("leave tombstone"))?;
        return Ok(());
    }
    release(tx, fork.map(|origin| origin.source)).await
}

/// Drops the streams whose expiry has passed, with the tombstones they kept.
pub async fn sweep(tx: &Transaction<'_>, now: Millis) -> StoreResult<u64> {
    // `domain::log::expired` as a predicate the database can use on every row at
    // once; the division keeps a huge TTL from overflowing.
    let expired = tx
        .query(
            "SELECT id, forked_from FROM streams WHERE (expires_at IS NOT NULL AND expires_at <= $1)
                OR (ttl_s IS NOT NULL AND ttl_s <= ($1 - COALESCE(touched_at, created_at)) / 1000)
             FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await
        .map_err(pg("find expired streams"))?;
    for row in &expired {
        remove(tx, column(row, 0, "find expired streams")?).await?;
        release(tx, column(row, 1, "find expired streams")?).await?;
    }
    Ok(expired.len() as u64)
}

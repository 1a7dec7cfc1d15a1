//! The byte log as SQL: a stream's entries are its `events` rows (an entry that is
//! not a seed-004 event has the empty name), its settings are columns of `streams`,
//! its producers rows of `stream_producers`. Decisions are `domain::log`'s.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::clock::Millis;
use crate::domain::log::{
    create_matches, expired, fork_anchor, is_json, plan_append, plan_fork, AppendOutcome,
    AppendPlan, CreateLog, CreateOutcome, Entry, Expiry, ForkOrigin, LogAppend, LogConfig, LogRead,
    LogState, Position, ProducerClaim, ProducerState,
};
use crate::domain::{StoreError, StoreResult, StreamName};

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

/// A stream row: its id, its state, and when it was last read or written.
struct Row {
    id: i64,
    state: LogState,
    touched_at: Millis,
}

const ROW: &str = "SELECT id, content_type, ttl_s, expires_at, last_event, closed,
        closed_by_producer, closed_by_epoch, closed_by_seq, stream_seq, touched_at, created_at,
        forked_from, fork_position, fork_sub
    FROM streams WHERE name = ?1";

/// The stream's row, if it exists and has not expired.
fn find(conn: &Connection, name: &StreamName, now: Millis) -> StoreResult<Option<Row>> {
    let row = conn
        .prepare_cached(ROW)
        .and_then(|mut stmt| {
            stmt.query_row([name.as_str()], |row| {
                let producer: Option<String> = row.get(6)?;
                let closed_by = match (
                    producer,
                    row.get::<_, Option<i64>>(7)?,
                    row.get::<_, Option<i64>>(8)?,
                ) {
                    (Some(id), Some(epoch), Some(seq)) => Some(ProducerClaim {
                        id,
                        epoch: epoch as u64,
                        seq: seq as u64,
                    }),
                    _ => None,
                };
                let created_at: Millis = row.get(11)?;
                let fork = match row.get::<_, Option<String>>(12)? {
                    Some(source) => Some(ForkOrigin {
                        source,
                        position: row.get::<_, Option<i64>>(13)?.unwrap_or(0),
                        sub: row.get::<_, Option<i64>>(14)?.unwrap_or(0).max(0) as u64,
                    }),
                    None => None,
                };
                Ok(Row {
                    id: row.get(0)?,
                    state: LogState {
                        config: LogConfig {
                            content_type: row.get(1)?,
                            expiry: Expiry::from_columns(row.get(2)?, row.get(3)?),
                            fork,
                        },
                        tail: row.get(4)?,
                        closed: row.get(5)?,
                        closed_by,
                        stream_seq: row.get(9)?,
                    },
                    touched_at: row.get::<_, Option<Millis>>(10)?.unwrap_or(created_at),
                })
            })
            .optional()
        })
        .map_err(sql("find stream"))?;
    Ok(row.filter(|row| !expired(row.state.config.expiry, row.touched_at, now)))
}

/// The stream's row; `StreamGone` for a tombstone, else `StreamNotFound`.
fn existing(conn: &Connection, name: &StreamName, now: Millis) -> StoreResult<Row> {
    match find(conn, name, now)? {
        Some(row) => Ok(row),
        None if tombstone(conn, name.as_str())?.is_some() => {
            Err(StoreError::StreamGone(name.to_string()))
        }
        None => Err(StoreError::StreamNotFound(name.to_string())),
    }
}

/// The tombstone holding this name, if one does: the source it was a fork of, if any.
fn tombstone(conn: &Connection, name: &str) -> StoreResult<Option<Option<String>>> {
    conn.prepare_cached("SELECT forked_from FROM stream_tombstones WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)).optional())
        .map_err(sql("find tombstone"))
}

/// How many streams and tombstones name this one as their source.
fn forks_of(conn: &Connection, name: &str) -> StoreResult<i64> {
    conn.prepare_cached(
        "SELECT (SELECT count(*) FROM streams WHERE forked_from = ?1)
              + (SELECT count(*) FROM stream_tombstones WHERE forked_from = ?1)",
    )
    .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)))
    .map_err(sql("count forks"))
}

/// Removes the tombstones that no fork names any more, from `source` up its chain.
fn release(conn: &Connection, mut source: Option<String>) -> StoreResult<()> {
    while let Some(name) = source.take() {
        let Some(parent) = tombstone(conn, &name)? else {
            break;
        };
        if forks_of(conn, &name)? > 0 {
            break;
        }
        conn.prepare_cached("DELETE FROM stream_tombstones WHERE name = ?1")
            .and_then(|mut stmt| stmt.execute([name.as_str()]))
            .map_err(sql("remove tombstone"))?;
        source = parent;
    }
    Ok(())
}

/// Removes a stream and all it holds.
fn remove(conn: &Connection, stream: i64) -> StoreResult<()> {
    for statement in [
        "DELETE FROM events WHERE stream_id = ?1",
        "DELETE FROM stream_offsets WHERE stream_id = ?1",
        "DELETE FROM stream_producers WHERE stream_id = ?1",
        "DELETE FROM streams WHERE id = ?1",
    ] {
        conn.prepare_cached(statement)
            .and_then(|mut stmt| stmt.execute([stream]))
            .map_err(sql("delete stream"))?;
    }
    Ok(())
}

/// Stores `entries` after `tail`; returns the new tail.
fn store_entries(
    conn: &Connection,
    stream: i64,
    tail: Position,
    content_type: &str,
    entries: &[Entry],
    now: Millis,
) -> StoreResult<Position> {
    let as_text = is_json(content_type);
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (stream_id, id, name, body, appended_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql("append entries"))?;
    let mut position = tail;
    for entry in entries {
        position += 1;
        let name = entry.name.as_deref().unwrap_or("");
        // JSON messages are stored as text, so seed 004's reads see them as it stores events.
        let result = match std::str::from_utf8(&entry.data) {
            Ok(text) if as_text => insert.execute(params![stream, position, name, text, now]),
            _ => insert.execute(params![stream, position, name, entry.data, now]),
        };
        result.map_err(sql("append entries"))?;
    }
    Ok(position)
}

/// Creates a stream, or a fork; see [`crate::domain::LogStore::create_log`].
pub fn create(
    conn: &Connection,
    name: &StreamName,
    request: &CreateLog,
    now: Millis,
) -> StoreResult<CreateOutcome> {
    if let Some(row) = find(conn, name, now)? {
        return Ok(if create_matches(&row.state, request) {
            CreateOutcome::Exists(row.state)
        } else {
            CreateOutcome::Conflict
        });
    }
    if tombstone(conn, name.as_str())?.is_some() {
        return Ok(CreateOutcome::Conflict);
    }
    let (config, inherit) = match &request.fork {
        None => (request.config.clone(), None),
        Some(fork) => {
            let Some(source) = find(conn, &fork.source, now)? else {
                return Ok(if tombstone(conn, fork.source.as_str())?.is_some() {
                    CreateOutcome::Conflict
                } else {
                    CreateOutcome::SourceNotFound
                });
            };
            let next_len = entry_len(conn, source.id, fork_anchor(&source.state, fork) + 1)?;
            match plan_fork(&source.state, next_len, request) {
                Ok(plan) => (plan.config.clone(), Some((source.id, plan))),
                Err(refusal) => return Ok(refusal.into()),
            }
        }
    };
    // An expired stream is gone: its row makes way for the new one.
    if let Some((id, forked_from)) = conn
        .prepare_cached("SELECT id, forked_from FROM streams WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([name.as_str()], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
            })
            .optional()
        })
        .map_err(sql("find stream"))?
    {
        remove(conn, id)?;
        release(conn, forked_from)?;
    }
    let (ttl_s, expires_at) = config.expiry.columns();
    let fork = config.fork.as_ref();
    conn.prepare_cached(
        "INSERT INTO streams (name, owner, last_event, created_at, content_type, ttl_s, expires_at,
             closed, touched_at, forked_from, fork_position, fork_sub)
         VALUES (?1, '', 0, ?2, ?3, ?4, ?5, ?6, ?2, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            name.as_str(),
            now,
            config.content_type,
            ttl_s,
            expires_at,
            request.closed,
            fork.map(|origin| origin.source.as_str()),
            fork.map(|origin| origin.position),
            fork.map(|origin| i64::try_from(origin.sub).unwrap_or(i64::MAX)),
        ])
    })
    .map_err(sql("create stream"))?;
    let stream = conn.last_insert_rowid();
    let mut tail = 0;
    if let Some((source, plan)) = inherit {
        tail = copy_entries(conn, source, stream, plan.upto, plan.partial)?;
    }
    let tail = store_entries(
        conn,
        stream,
        tail,
        &config.content_type,
        &request.entries,
        now,
    )?;
    set_tail(conn, stream, tail)?;
    Ok(CreateOutcome::Created(LogState {
        config,
        tail,
        closed: request.closed,
        closed_by: None,
        stream_seq: None,
    }))
}

/// The length in bytes of entry `position` of a stream, if it has one.
fn entry_len(conn: &Connection, stream: i64, position: Position) -> StoreResult<Option<usize>> {
    conn.prepare_cached(
        "SELECT length(CAST(body AS BLOB)) FROM events WHERE stream_id = ?1 AND id = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![stream, position], |row| row.get::<_, i64>(0))
            .optional()
    })
    .map(|len| len.map(|len| len.max(0) as usize))
    .map_err(sql("read entry"))
}

/// Copies a source's entries through `upto`, and the first `partial` bytes of the
/// next one, into a fork; returns the fork's tail.
fn copy_entries(
    conn: &Connection,
    source: i64,
    fork: i64,
    upto: Position,
    partial: Option<usize>,
) -> StoreResult<Position> {
    conn.prepare_cached(
        "INSERT INTO events (stream_id, id, name, body, appended_at)
         SELECT ?2, id, name, body, appended_at FROM events WHERE stream_id = ?1 AND id <= ?3",
    )
    .and_then(|mut stmt| stmt.execute(params![source, fork, upto]))
    .map_err(sql("copy entries"))?;
    let Some(bytes) = partial else {
        return Ok(upto);
    };
    // A part of an entry is no whole seed-004 event: it keeps no name.
    conn.prepare_cached(
        "INSERT INTO events (stream_id, id, name, body, appended_at)
         SELECT ?2, id, '', substr(CAST(body AS BLOB), 1, ?4), appended_at
         FROM events WHERE stream_id = ?1 AND id = ?3 + 1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            source,
            fork,
            upto,
            i64::try_from(bytes).unwrap_or(i64::MAX)
        ])
    })
    .map_err(sql("copy entries"))?;
    Ok(upto + 1)
}

fn set_tail(conn: &Connection, stream: i64, tail: Position) -> StoreResult<()> {
    conn.prepare_cached("UPDATE streams SET last_event = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![stream, tail]))
        .map_err(sql("append entries"))?;
    Ok(())
}

/// Appends as [`plan_append`] decides; see [`crate::domain::LogStore::append_log`].
pub fn append(
    conn: &Connection,
    name: &StreamName,
    request: &LogAppend,
    now: Millis,
) -> StoreResult<AppendOutcome> {
    let row = existing(conn, name, now)?;
    let known = match &request.producer {
        None => None,
        Some(claim) => conn
            .prepare_cached(
                "SELECT epoch, seq FROM stream_producers WHERE stream_id = ?1 AND producer = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![row.id, claim.id], |r| {
                    Ok(ProducerState {
                        epoch: r.get::<_, i64>(0)? as u64,
                        seq: r.get::<_, i64>(1)? as u64,
                    })
                })
                .optional()
            })
            .map_err(sql("find producer"))?,
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
        conn,
        row.id,
        row.state.tail,
        &row.state.config.content_type,
        &request.entries,
        now,
    )?;
    if let Some((id, state)) = &producer {
        conn.prepare_cached(
            "INSERT INTO stream_producers (stream_id, producer, epoch, seq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream_id, producer) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq",
        )
        .and_then(|mut stmt| stmt.execute(params![row.id, id, state.epoch as i64, state.seq as i64]))
        .map_err(sql("store producer"))?;
    }
    let closer = request.producer.as_ref().filter(|_| close);
    conn.prepare_cached(
        "UPDATE streams SET last_event = ?2, touched_at = ?3,
             stream_seq = COALESCE(?4, stream_seq),
             closed = closed OR ?5,
             closed_by_producer = CASE WHEN ?5 THEN ?6 ELSE closed_by_producer END,
             closed_by_epoch = CASE WHEN ?5 THEN ?7 ELSE closed_by_epoch END,
             closed_by_seq = CASE WHEN ?5 THEN ?8 ELSE closed_by_seq END
         WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.id,
            tail,
            now,
            stream_seq,
            close,
            closer.map(|claim| claim.id.as_str()),
            closer.map(|claim| claim.epoch as i64),
            closer.map(|claim| claim.seq as i64),
        ])
    })
    .map_err(sql("append entries"))?;
    Ok(AppendOutcome::Appended {
        tail,
        closed: close,
        producer: producer.map(|(_, state)| state),
    })
}

/// Entries after `after`, at most `max_bytes` of them but at least one.
pub fn read(
    conn: &Connection,
    name: &StreamName,
    after: Position,
    max_bytes: usize,
    now: Millis,
) -> StoreResult<LogRead> {
    let row = existing(conn, name, now)?;
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut stmt = conn
        .prepare_cached("SELECT id, body FROM events WHERE stream_id = ?1 AND id > ?2 ORDER BY id")
        .map_err(sql("read entries"))?;
    let mut rows = stmt
        .query(params![row.id, after])
        .map_err(sql("read entries"))?;
    while let Some(entry) = rows.next().map_err(sql("read entries"))? {
        let data = match entry.get_ref(1).map_err(sql("read entries"))? {
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.to_vec(),
            other => {
                return Err(StoreError::backend(
                    "read entries",
                    rusqlite::Error::InvalidColumnType(1, "body".into(), other.data_type()),
                ))
            }
        };
        if !entries.is_empty() && bytes + data.len() > max_bytes {
            break;
        }
        bytes += data.len();
        entries.push((entry.get(0).map_err(sql("read entries"))?, data));
    }
    Ok(LogRead {
        entries,
        state: row.state,
    })
}

/// The stream's state; see [`crate::domain::LogStore::log_state`].
pub fn state(conn: &Connection, name: &StreamName, now: Millis) -> StoreResult<LogState> {
    Ok(existing(conn, name, now)?.state)
}

/// Restarts an idle-expiry stream's countdown.
pub fn touch(conn: &Connection, name: &StreamName, now: Millis) -> StoreResult<()> {
    conn.prepare_cached("UPDATE streams SET touched_at = ?2 WHERE name = ?1 AND ttl_s IS NOT NULL")
        .and_then(|mut stmt| stmt.execute(params![name.as_str(), now]))
        .map_err(sql("touch stream"))?;
    Ok(())
}

/// Deletes a stream, leaving a tombstone if forks name it; see
/// [`crate::domain::LogStore::delete_log`].
pub fn delete(conn: &Connection, name: &StreamName, now: Millis) -> StoreResult<()> {
    let row = existing(conn, name, now)?;
    let fork = row.state.config.fork.as_ref();
    if forks_of(conn, name.as_str())? > 0 {
        remove(conn, row.id)?;
        conn.prepare_cached("INSERT INTO stream_tombstones (name, forked_from) VALUES (?1, ?2)")
            .and_then(|mut stmt| {
                stmt.execute(params![
                    name.as_str(),
                    fork.map(|origin| origin.source.as_str())
                ])
            })
            .map_err(sql("leave tombstone"))?;
        return Ok(());
    }
    remove(conn, row.id)?;
    release(conn, fork.map(|origin| origin.source.clone()))
}

/// Drops the streams whose expiry has passed.
pub fn sweep(conn: &Connection, now: Millis) -> StoreResult<u64> {
    // `domain::log::expired` as a predicate the database can use on every row at
    // once; the division keeps a huge TTL from overflowing.
    let expired: Vec<(i64, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, forked_from FROM streams WHERE (expires_at IS NOT NULL AND expires_at <= ?1)
                OR (ttl_s IS NOT NULL AND ttl_s <= (?1 - COALESCE(touched_at, created_at)) / 1000)",
        )
        .and_then(|mut stmt| {
            stmt.query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("find expired streams"))?;
    for (id, forked_from) in &expired {
        remove(conn, *id)?;
        release(conn, forked_from.clone())?;
    }
    Ok(expired.len() as u64)
}

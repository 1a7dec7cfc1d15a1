//! Stream operations as SQL: events numbered per stream without gaps (the stream
//! row holds the last id), offsets per (consumer, event name), moved only forward.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::clock::Millis;
use crate::domain::log::{expired, Expiry};
use std::time::Duration;

use crate::domain::clock::millis_of;
use crate::domain::streams::{seed_append_verdict, StreamRetention};
use crate::domain::StreamName;
use crate::domain::{
    Appended, ConsumerOffset, EventId, NewEvent, ReadFrom, StoreError, StoreResult, StoredEvent,
    StreamInfo,
};

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

fn stream_id(conn: &Connection, name: &StreamName) -> StoreResult<i64> {
    conn.prepare_cached("SELECT id FROM streams WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name.as_str()], |row| row.get(0)).optional())
        .map_err(sql("find stream"))?
        .ok_or_else(|| StoreError::StreamNotFound(name.to_string()))
}

/// Whether a stream deleted while forks of it remain holds this name.
fn is_tombstone(conn: &Connection, name: &StreamName) -> StoreResult<bool> {
    conn.prepare_cached("SELECT 1 FROM stream_tombstones WHERE name = ?1")
        .and_then(|mut stmt| stmt.exists([name.as_str()]))
        .map_err(sql("find tombstone"))
}

/// Appends an event; see [`crate::store::StreamStore::append`].
pub fn append(conn: &Connection, event: &NewEvent, now: Millis) -> StoreResult<Appended> {
    let found = conn
        .prepare_cached(
            "SELECT id, owner, last_event, closed, content_type, ttl_s, expires_at,
                 COALESCE(touched_at, created_at)
             FROM streams WHERE name = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([event.stream.as_str()], |row| {
                let expiry = Expiry::from_columns(row.get(5)?, row.get(6)?);
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, String>(4)?,
                    expired(expiry, row.get(7)?, now),
                ))
            })
            .optional()
        })
        .map_err(sql("find stream"))?;
    let (stream, last) = match found {
        Some((id, owner, last, closed, content_type, expired)) => {
            match seed_append_verdict(&owner, &event.producer, closed, &content_type, expired) {
                Err(refused) => return Ok(refused),
                Ok(false) => {}
                Ok(true) => {
                    conn.prepare_cached("UPDATE streams SET owner = ?2 WHERE id = ?1")
                        .and_then(|mut stmt| stmt.execute(params![id, event.producer]))
                        .map_err(sql("claim stream"))?;
                }
            }
            (id, last)
        }
        None if is_tombstone(conn, &event.stream)? => return Ok(Appended::Closed),
        None => {
            conn.prepare_cached(
                "INSERT INTO streams (name, owner, last_event, created_at) VALUES (?1, ?2, 0, ?3)",
            )
            .and_then(|mut stmt| stmt.execute(params![event.stream.as_str(), event.producer, now]))
            .map_err(sql("create stream"))?;
            (conn.last_insert_rowid(), 0)
        }
    };
    let id = last + 1;
    // A write restarts an idle countdown, as the protocol's own appends do.
    conn.prepare_cached("UPDATE streams SET last_event = ?2, touched_at = ?3 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![stream, id, now]))
        .map_err(sql("append event"))?;
    conn.prepare_cached(
        "INSERT INTO events (stream_id, id, name, body, appended_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| stmt.execute(params![stream, id, event.name, event.body, now]))
    .map_err(sql("append event"))?;
    Ok(Appended::Event(id))
}

/// Reads events; see [`crate::store::StreamStore::read_events`].
pub fn read(
    conn: &Connection,
    name: &StreamName,
    consumer: &str,
    event_name: &str,
    from: ReadFrom,
    limit: u32,
) -> StoreResult<Vec<StoredEvent>> {
    let stream = stream_id(conn, name)?;
    // One statement reads the offset and the events, so an ack committing between
    // the two cannot show acked events next to newer ones.
    let (after, use_offset) = match from {
        ReadFrom::After(id) => (id, false),
        ReadFrom::Offset => (0, true),
    };
    conn.prepare_cached(
        "SELECT id, body FROM events
         WHERE stream_id = ?1 AND name = ?2
           AND id > CASE WHEN ?5 THEN COALESCE((SELECT offset_id FROM stream_offsets
                        WHERE stream_id = ?1 AND consumer = ?3 AND event_name = ?2), 0) ELSE ?4 END
         ORDER BY id LIMIT ?6",
    )
    .and_then(|mut stmt| {
        stmt.query_map(
            params![stream, event_name, consumer, after, use_offset, limit],
            |row| {
                Ok(StoredEvent {
                    id: row.get(0)?,
                    body: row.get(1)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(sql("read events"))
}

/// Acks an event; see [`crate::store::StreamStore::ack_event`].
pub fn ack(
    conn: &Connection,
    name: &StreamName,
    consumer: &str,
    event: EventId,
) -> StoreResult<bool> {
    let stream = stream_id(conn, name)?;
    let event_name: Option<String> = conn
        .prepare_cached("SELECT name FROM events WHERE stream_id = ?1 AND id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![stream, event], |row| row.get(0))
                .optional()
        })
        .map_err(sql("find event"))?;
    let Some(event_name) = event_name else {
        return Ok(false);
    };
    conn.prepare_cached(
        "INSERT INTO stream_offsets (stream_id, consumer, event_name, offset_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream_id, consumer, event_name) DO UPDATE SET offset_id = MAX(offset_id, excluded.offset_id)",
    )
    .and_then(|mut stmt| stmt.execute(params![stream, consumer, event_name, event]))
    .map_err(sql("commit offset"))?;
    Ok(true)
}

/// A stream row as the info queries need it.
struct StreamRow {
    id: i64,
    owner: String,
    retention: StreamRetention,
}

fn retention_from(max_age_ms: Option<i64>, max_events: Option<i64>) -> StreamRetention {
    StreamRetention {
        max_age: max_age_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        max_events: max_events.map(|n| n.max(0) as u64),
    }
}

fn info_of(
    conn: &Connection,
    row: StreamRow,
    name: StreamName,
    with_consumers: bool,
) -> StoreResult<StreamInfo> {
    let stream = row.id;
    let (length, first_event, last_event): (u64, Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT COUNT(*), MIN(id), MAX(id) FROM events WHERE stream_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([stream], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        })
        .map_err(sql("measure stream"))?;
    let mut consumers = Vec::new();
    if with_consumers {
        consumers = conn
            .prepare_cached(
                "SELECT o.consumer, o.event_name, o.offset_id,
                        (SELECT COUNT(*) FROM events e WHERE e.stream_id = o.stream_id AND e.name = o.event_name AND e.id > o.offset_id)
                 FROM stream_offsets o WHERE o.stream_id = ?1 ORDER BY o.consumer, o.event_name",
            )
            .and_then(|mut stmt| {
                stmt.query_map([stream], |row| {
                    Ok(ConsumerOffset {
                        consumer: row.get(0)?,
                        event_name: row.get(1)?,
                        offset: row.get(2)?,
                        lag: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(sql("read offsets"))?;
    }
    Ok(StreamInfo {
        name,
        owner: row.owner,
        length,
        first_event,
        last_event,
        consumers,
        retention: row.retention,
    })
}

fn stream_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StreamRow> {
    Ok(StreamRow {
        id: row.get(0)?,
        owner: row.get(1)?,
        retention: retention_from(row.get(2)?, row.get(3)?),
    })
}

/// One stream with its consumers.
pub fn info(conn: &Connection, name: &StreamName) -> StoreResult<StreamInfo> {
    let row = conn
        .prepare_cached("SELECT id, owner, max_age_ms, max_events FROM streams WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name.as_str()], stream_row).optional())
        .map_err(sql("find stream"))?
        .ok_or_else(|| StoreError::StreamNotFound(name.to_string()))?;
    info_of(conn, row, name.clone(), true)
}

/// Every stream, by name.
pub fn list(conn: &Connection) -> StoreResult<Vec<StreamInfo>> {
    let rows: Vec<(StreamRow, String)> = conn
        .prepare_cached("SELECT id, owner, max_age_ms, max_events, name FROM streams ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((stream_row(row)?, row.get(4)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list streams"))?;
    rows.into_iter()
        .filter_map(|(row, name)| StreamName::parse(&name).ok().map(|name| (row, name)))
        .map(|(row, name)| info_of(conn, row, name, false))
        .collect()
}

/// Sets a stream's retention.
pub fn set_retention(
    conn: &Connection,
    name: &StreamName,
    retention: StreamRetention,
) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("UPDATE streams SET max_age_ms = ?2, max_events = ?3 WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.execute(params![
                name.as_str(),
                retention.max_age.map(millis_of),
                retention
                    .max_events
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            ])
        })
        .map_err(sql("set stream retention"))?;
    if changed == 0 {
        return Err(StoreError::StreamNotFound(name.to_string()));
    }
    Ok(())
}

/// Drops events past their stream's retention.
pub fn sweep(conn: &Connection, now: Millis) -> StoreResult<u64> {
    let dropped = conn
        .prepare_cached(
            "DELETE FROM events WHERE EXISTS (
                 SELECT 1 FROM streams s WHERE s.id = events.stream_id AND (
                     (s.max_age_ms IS NOT NULL AND events.appended_at <= ?1 - s.max_age_ms)
                     OR (s.max_events IS NOT NULL AND events.id <= s.last_event - s.max_events)))",
        )
        .and_then(|mut stmt| stmt.execute([now]))
        .map_err(sql("drop expired events"))?;
    Ok(dropped as u64)
}

/// Gives a stream to another producer.
pub fn set_owner(conn: &Connection, name: &StreamName, owner: &str) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("UPDATE streams SET owner = ?2 WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute(params![name.as_str(), owner]))
        .map_err(sql("set stream owner"))?;
    if changed == 0 {
        return Err(StoreError::StreamNotFound(name.to_string()));
    }
    Ok(())
}

/// The first event appended at or after `at`.
pub fn event_at(conn: &Connection, name: &StreamName, at: Millis) -> StoreResult<Option<EventId>> {
    let stream_id: i64 = conn
        .prepare_cached("SELECT id FROM streams WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name.as_str()], |row| row.get(0)).optional())
        .map_err(sql("find stream"))?
        .ok_or_else(|| StoreError::StreamNotFound(name.to_string()))?;
    conn.prepare_cached("SELECT MIN(id) FROM events WHERE stream_id = ?1 AND appended_at >= ?2")
        .and_then(|mut stmt| stmt.query_row(params![stream_id, at], |row| row.get(0)))
        .map_err(sql("find an event by time"))
}

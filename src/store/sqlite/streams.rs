//! Stream operations as SQL: events numbered per stream without gaps (the stream
//! row holds the last id), offsets per (consumer, event name), moved only forward.

use rusqlite::{params, Connection, OptionalExtension};

use crate::domain::clock::Millis;
use crate::domain::StreamName;
use crate::store::{
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

/// Appends an event; see [`crate::store::StreamStore::append`].
pub fn append(conn: &Connection, event: &NewEvent, now: Millis) -> StoreResult<Appended> {
    let found: Option<(i64, String, i64)> = conn
        .prepare_cached("SELECT id, owner, last_event FROM streams WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([event.stream.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(sql("find stream"))?;
    let (stream, last) = match found {
        Some((_, owner, _)) if owner != event.producer => return Ok(Appended::Locked),
        Some((id, _, last)) => (id, last),
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
    conn.prepare_cached("UPDATE streams SET last_event = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![stream, id]))
        .map_err(sql("append event"))?;
    conn.prepare_cached(
        "INSERT INTO events (stream_id, id, name, body, appended_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| stmt.execute(params![stream, id, event.name, event.body, now]))
    .map_err(sql("append event"))?;
    Ok(Appended::Event(id))
}

fn committed_offset(
    conn: &Connection,
    stream: i64,
    consumer: &str,
    event_name: &str,
) -> StoreResult<EventId> {
    Ok(conn
        .prepare_cached(
            "SELECT offset_id FROM stream_offsets WHERE stream_id = ?1 AND consumer = ?2 AND event_name = ?3",
        )
        .and_then(|mut stmt| stmt.query_row(params![stream, consumer, event_name], |row| row.get(0)).optional())
        .map_err(sql("read offset"))?
        .unwrap_or(0))
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
    let after = match from {
        ReadFrom::After(id) => id,
        ReadFrom::Offset => committed_offset(conn, stream, consumer, event_name)?,
    };
    conn.prepare_cached(
        "SELECT id, body FROM events WHERE stream_id = ?1 AND name = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![stream, event_name, after, limit], |row| {
            Ok(StoredEvent {
                id: row.get(0)?,
                body: row.get(1)?,
            })
        })?
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

fn info_of(
    conn: &Connection,
    stream: i64,
    name: StreamName,
    owner: String,
    with_consumers: bool,
) -> StoreResult<StreamInfo> {
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
        owner,
        length,
        first_event,
        last_event,
        consumers,
    })
}

/// One stream with its consumers.
pub fn info(conn: &Connection, name: &StreamName) -> StoreResult<StreamInfo> {
    let (stream, owner): (i64, String) = conn
        .prepare_cached("SELECT id, owner FROM streams WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([name.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(sql("find stream"))?
        .ok_or_else(|| StoreError::StreamNotFound(name.to_string()))?;
    info_of(conn, stream, name.clone(), owner, true)
}

/// Every stream, by name.
pub fn list(conn: &Connection) -> StoreResult<Vec<StreamInfo>> {
    let rows: Vec<(i64, String, String)> = conn
        .prepare_cached("SELECT id, name, owner FROM streams ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list streams"))?;
    rows.into_iter()
        .filter_map(|(id, name, owner)| StreamName::parse(&name).ok().map(|name| (id, name, owner)))
        .map(|(id, name, owner)| info_of(conn, id, name, owner, false))
        .collect()
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

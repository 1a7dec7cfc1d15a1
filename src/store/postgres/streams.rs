//! Stream operations on PostgreSQL, as SQLite's (see `store::sqlite::streams`).
//! Appends lock the stream row, so ids stay gapless and one owner wins a race to
//! create a stream, whichever nodes the producers talk to.

use deadpool_postgres::Transaction;

use super::{column, pg};
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

async fn stream_id(tx: &Transaction<'_>, name: &StreamName) -> StoreResult<i64> {
    let stmt = tx
        .prepare_cached("SELECT id FROM streams WHERE name = $1")
        .await
        .map_err(pg("find stream"))?;
    let row = tx
        .query_opt(&stmt, &[&name.as_str()])
        .await
        .map_err(pg("find stream"))?
        .ok_or_else(|| StoreError::StreamNotFound(name.to_string()))?;
    column(&row, 0, "find stream")
}

/// Appends events from many requests, one stream at a time, in one transaction:
/// each stream's row is locked once (ids stay gapless, the owner is checked under
/// the lock) and its events go in with one statement. Returns each request's
/// outcome in request order. The first producer of a new stream, in request order,
/// owns it.
pub async fn append_many(
    tx: &Transaction<'_>,
    events: &[&NewEvent],
    now: Millis,
) -> StoreResult<Vec<Appended>> {
    let mut outcomes = vec![Appended::Locked; events.len()];
    let mut streams: Vec<&StreamName> = events.iter().map(|e| &e.stream).collect();
    streams.sort();
    streams.dedup();
    let create = tx
        .prepare_cached(
            // A tombstone's name takes no new stream: the lock below then finds none.
            "INSERT INTO streams (name, owner, last_event, created_at)
             SELECT $1, $2, 0, $3 WHERE NOT EXISTS (SELECT 1 FROM stream_tombstones WHERE name = $1)
             ON CONFLICT (name) DO NOTHING",
        )
        .await
        .map_err(pg("create stream"))?;
    let lock = tx
        .prepare_cached(
            "SELECT id, owner, closed, content_type, ttl_s, expires_at,
                 COALESCE(touched_at, created_at)
             FROM streams WHERE name = $1 FOR UPDATE",
        )
        .await
        .map_err(pg("lock stream"))?;
    let reserve = tx
        .prepare_cached(
            // A write restarts an idle countdown, as the protocol's own appends do.
            "UPDATE streams SET last_event = last_event + $2, touched_at = $3 WHERE id = $1
             RETURNING last_event",
        )
        .await
        .map_err(pg("append events"))?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO events (stream_id, id, name, body, appended_at)
             SELECT $1, id, name, body, $5 FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS u(id, name, body)",
        )
        .await
        .map_err(pg("append events"))?;
    // Streams in name order, so two batches lock them in the same order.
    for stream in streams {
        let mine: Vec<usize> = (0..events.len())
            .filter(|&i| &events[i].stream == stream)
            .collect();
        let first_producer = &events[mine[0]].producer;
        tx.execute(&create, &[&stream.as_str(), first_producer, &now])
            .await
            .map_err(pg("create stream"))?;
        let Some(row) = tx
            .query_opt(&lock, &[&stream.as_str()])
            .await
            .map_err(pg("lock stream"))?
        else {
            for i in mine {
                outcomes[i] = Appended::Closed;
            }
            continue;
        };
        let stream_id: i64 = column(&row, 0, "lock stream")?;
        let mut owner: &str = column(&row, 1, "lock stream")?;
        let closed: bool = column(&row, 2, "lock stream")?;
        let content_type: &str = column(&row, 3, "lock stream")?;
        let expired = expired(
            Expiry::from_columns(
                column(&row, 4, "lock stream")?,
                column(&row, 5, "lock stream")?,
            ),
            column(&row, 6, "lock stream")?,
            now,
        );
        // Asked for the owner (or the claimant), the verdict says what holds for all
        // of the batch's producers; those who do not own it are refused below.
        let claimant = if owner.is_empty() {
            first_producer.as_str()
        } else {
            owner
        };
        match seed_append_verdict(owner, claimant, closed, content_type, expired) {
            Err(Appended::Closed) => {
                for i in mine {
                    outcomes[i] = Appended::Closed;
                }
                continue;
            }
            Ok(true) => {
                tx.execute(
                    "UPDATE streams SET owner = $2 WHERE id = $1",
                    &[&stream_id, first_producer],
                )
                .await
                .map_err(pg("claim stream"))?;
                owner = first_producer;
            }
            _ => {}
        }
        let accepted: Vec<usize> = mine
            .into_iter()
            .filter(|&i| events[i].producer == owner)
            .collect();
        if accepted.is_empty() {
            continue;
        }
        let reserved = tx
            .query_one(&reserve, &[&stream_id, &(accepted.len() as i64), &now])
            .await
            .map_err(pg("append events"))?;
        let last: i64 = column(&reserved, 0, "append events")?;
        let first = last - accepted.len() as i64 + 1;
        let ids: Vec<i64> = (first..=last).collect();
        let names: Vec<&str> = accepted.iter().map(|&i| events[i].name.as_str()).collect();
        let bodies: Vec<&str> = accepted.iter().map(|&i| events[i].body.as_str()).collect();
        tx.execute(&insert, &[&stream_id, &ids, &names, &bodies, &now])
            .await
            .map_err(pg("append events"))?;
        for (index, id) in accepted.into_iter().zip(ids) {
            outcomes[index] = Appended::Event(id);
        }
    }
    Ok(outcomes)
}

/// Reads events; see [`crate::store::StreamStore::read_events`].
pub async fn read(
    tx: &Transaction<'_>,
    name: &StreamName,
    consumer: &str,
    event_name: &str,
    from: ReadFrom,
    limit: u32,
) -> StoreResult<Vec<StoredEvent>> {
    let stream = stream_id(tx, name).await?;
    // One statement reads the offset and the events, so an ack committing between
    // the two cannot show acked events next to newer ones.
    let (after, use_offset) = match from {
        ReadFrom::After(id) => (id, false),
        ReadFrom::Offset => (0, true),
    };
    let stmt = tx
        .prepare_cached(
            "SELECT id, body FROM events
             WHERE stream_id = $1 AND name = $2
               AND id > CASE WHEN $5 THEN COALESCE((SELECT offset_id FROM stream_offsets
                            WHERE stream_id = $1 AND consumer = $3 AND event_name = $2), 0) ELSE $4 END
             ORDER BY id LIMIT $6",
        )
        .await
        .map_err(pg("read events"))?;
    let rows = tx
        .query(
            &stmt,
            &[
                &stream,
                &event_name,
                &consumer,
                &after,
                &use_offset,
                &i64::from(limit),
            ],
        )
        .await
        .map_err(pg("read events"))?;
    rows.iter()
        .map(|row| {
            Ok(StoredEvent {
                id: column(row, 0, "read events")?,
                body: column(row, 1, "read events")?,
            })
        })
        .collect()
}

/// Acks an event; see [`crate::store::StreamStore::ack_event`].
pub async fn ack(
    tx: &Transaction<'_>,
    name: &StreamName,
    consumer: &str,
    event: EventId,
) -> StoreResult<bool> {
    let stream = stream_id(tx, name).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO stream_offsets (stream_id, consumer, event_name, offset_id)
             SELECT $1, $2, name, id FROM events WHERE stream_id = $1 AND id = $3
             ON CONFLICT (stream_id, consumer, event_name)
             DO UPDATE SET offset_id = GREATEST(stream_offsets.offset_id, EXCLUDED.offset_id)",
        )
        .await
        .map_err(pg("commit offset"))?;
    let changed = tx
        .execute(&stmt, &[&stream, &consumer, &event])
        .await
        .map_err(pg("commit offset"))?;
    Ok(changed == 1)
}

/// A stream row as the info queries need it.
struct StreamRow {
    id: i64,
    owner: String,
    retention: StreamRetention,
}

fn stream_row(row: &tokio_postgres::Row) -> StoreResult<StreamRow> {
    let read = "read stream";
    Ok(StreamRow {
        id: column(row, 0, read)?,
        owner: column(row, 1, read)?,
        retention: StreamRetention {
            max_age: column::<Option<i64>>(row, 2, read)?
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            max_events: column::<Option<i64>>(row, 3, read)?.map(|n| n.max(0) as u64),
        },
    })
}

async fn info_of(
    tx: &Transaction<'_>,
    stream_row: StreamRow,
    name: StreamName,
    with_consumers: bool,
) -> StoreResult<StreamInfo> {
    let stream = stream_row.id;
    let row = tx
        .query_one(
            "SELECT COUNT(*), MIN(id), MAX(id) FROM events WHERE stream_id = $1",
            &[&stream],
        )
        .await
        .map_err(pg("measure stream"))?;
    let mut consumers = Vec::new();
    if with_consumers {
        let rows = tx
            .query(
                "SELECT o.consumer, o.event_name, o.offset_id,
                        (SELECT COUNT(*) FROM events e WHERE e.stream_id = o.stream_id AND e.name = o.event_name AND e.id > o.offset_id)
                 FROM stream_offsets o WHERE o.stream_id = $1 ORDER BY o.consumer COLLATE \"C\", o.event_name COLLATE \"C\"",
                &[&stream],
            )
            .await
            .map_err(pg("read offsets"))?;
        let read = "read offsets";
        consumers = rows
            .iter()
            .map(|row| {
                Ok(ConsumerOffset {
                    consumer: column(row, 0, read)?,
                    event_name: column(row, 1, read)?,
                    offset: column(row, 2, read)?,
                    lag: column::<i64>(row, 3, read)?.max(0) as u64,
                })
            })
            .collect::<StoreResult<_>>()?;
    }
    Ok(StreamInfo {
        name,
        owner: stream_row.owner,
        retention: stream_row.retention,
        length: column::<i64>(&row, 0, "measure stream")?.max(0) as u64,
        first_event: column(&row, 1, "measure stream")?,
        last_event: column(&row, 2, "measure stream")?,
        consumers,
    })
}

/// One stream with its consumers.
pub async fn info(tx: &Transaction<'_>, name: &StreamName) -> StoreResult<StreamInfo> {
    let row = tx
        .query_opt(
            "SELECT id, owner, max_age_ms, max_events FROM streams WHERE name = $1",
            &[&name.as_str()],
        )
        .await
        .map_err(pg("find stream"))?
        .ok_or_else(|| StoreError::StreamNotFound(name.to_string()))?;
    info_of(tx, stream_row(&row)?, name.clone(), true).await
}

/// Every stream, by name.
pub async fn list(tx: &Transaction<'_>) -> StoreResult<Vec<StreamInfo>> {
    let rows = tx
        .query(
            "SELECT id, owner, max_age_ms, max_events, name FROM streams ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg("list streams"))?;
    let mut streams = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(name) = StreamName::parse(column(&row, 4, "list streams")?) else {
            continue;
        };
        streams.push(info_of(tx, stream_row(&row)?, name, false).await?);
    }
    Ok(streams)
}

/// Sets a stream's retention.
pub async fn set_retention(
    tx: &Transaction<'_>,
    name: &StreamName,
    retention: StreamRetention,
) -> StoreResult<()> {
    let changed = tx
        .execute(
            "UPDATE streams SET max_age_ms = $2, max_events = $3 WHERE name = $1",
            &[
                &name.as_str(),
                &retention.max_age.map(millis_of),
                &retention
                    .max_events
                    .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            ],
        )
        .await
        .map_err(pg("set stream retention"))?;
    if changed == 0 {
        return Err(StoreError::StreamNotFound(name.to_string()));
    }
    Ok(())
}

/// Drops events past their stream's retention.
pub async fn sweep(tx: &Transaction<'_>, now: Millis) -> StoreResult<u64> {
    tx.execute(
        "DELETE FROM events e USING streams s
         WHERE s.id = e.stream_id AND (
             (s.max_age_ms IS NOT NULL AND e.appended_at <= $1 - s.max_age_ms)
             OR (s.max_events IS NOT NULL AND e.id <= s.last_event - s.max_events))",
        &[&now],
    )
    .await
    .map_err(pg("drop expired events"))
}

/// Gives a stream to another producer.
pub async fn set_owner(tx: &Transaction<'_>, name: &StreamName, owner: &str) -> StoreResult<()> {
    let changed = tx
        .execute(
            "UPDATE streams SET owner = $2 WHERE name = $1",
            &[&name.as_str(), &owner],
        )
        .await
        .map_err(pg("set stream owner"))?;
    if changed == 0 {
        return Err(StoreError::StreamNotFound(name.to_string()));
    }
    Ok(())
}

//! Queue operations as SQL over one connection; the writer thread runs the writes,
//! reader connections the reads. Every function takes `now` from its caller so one
//! operation sees one instant.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::tasks;
use crate::domain::clock::{millis_of, Millis};
use crate::domain::delivery::DeliverySettings;
use crate::domain::messages::exhausted;
use crate::domain::settings::Ordering;
use crate::domain::TaskId;
use crate::domain::{
    Message, MessageId, MessageState, PushOutcome, PushRequest, QueueCounts, QueueInfo, Receipt,
    Received, Settled, Settlement, StoreError, StoreResult, Upsert,
};
use crate::domain::{QueueName, QueueSettings};
use crate::domain::{SettingsPatch, TaskEnding};
use crate::store::sql::{group_head, message_columns};

const WAITING: i64 = MessageState::Waiting.code() as i64;
const LEASED: i64 = MessageState::Leased.code() as i64;
const DEAD: i64 = MessageState::Dead.code() as i64;

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

/// A queue row: its id and settings.
pub struct QueueRow {
    id: i64,
    settings: QueueSettings,
}

fn settings_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<QueueSettings> {
    let millis = |ms: i64| Duration::from_millis(ms.max(0) as u64);
    let options: Option<String> = row.get(first + 5)?;
    QueueSettings {
        lease: millis(row.get(first)?),
        max_attempts: row.get(first + 1)?,
        retention: row.get::<_, Option<i64>>(first + 2)?.map(millis),
        idempotency_window: millis(row.get(first + 3)?),
        delivery: row
            .get::<_, Option<String>>(first + 4)?
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    first + 4,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
        ..QueueSettings::default()
    }
    .with_options_json(options.as_deref())
    .map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            first + 5,
            rusqlite::types::Type::Text,
            Box::new(e),
        )
    })
}

/// A queue's delivery setting as stored: JSON, or NULL.
fn delivery_json(settings: &QueueSettings) -> StoreResult<Option<String>> {
    settings
        .delivery
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::backend("encode a delivery setting", e))
}

fn find_queue(conn: &Connection, name: &QueueName) -> StoreResult<Option<QueueRow>> {
    conn.prepare_cached(
        "SELECT id, lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options FROM queues WHERE name = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([name.as_str()], |row| {
            Ok(QueueRow {
                id: row.get(0)?,
                settings: settings_from_row(row, 1)?,
            })
        })
        .optional()
    })
    .map_err(sql("find queue"))
}

fn require_queue(conn: &Connection, name: &QueueName) -> StoreResult<QueueRow> {
    find_queue(conn, name)?.ok_or_else(|| StoreError::QueueNotFound(name.to_string()))
}

fn insert_queue(
    conn: &Connection,
    name: &QueueName,
    settings: &QueueSettings,
    now: Millis,
) -> StoreResult<i64> {
    let delivery = delivery_json(settings)?;
    conn.prepare_cached(
        "INSERT INTO queues (name, lease_ms, max_attempts, retention_ms, idempotency_window_ms, created_at, delivery, options)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            name.as_str(),
            millis_of(settings.lease),
            settings.max_attempts,
            settings.retention.map(millis_of),
            millis_of(settings.idempotency_window),
            now,
            delivery,
            settings.options_json()
        ])
    })
    .map_err(sql("create queue"))?;
    Ok(conn.last_insert_rowid())
}

/// Pushes messages; see [`crate::store::QueueStore::push`].
pub fn push(
    conn: &Connection,
    request: &PushRequest,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<PushOutcome> {
    // Delayed pushes wake waiters too, so they re-arm their timers for the new message.
    wake.push(request.queue.to_string());
    let queue = match find_queue(conn, &request.queue)? {
        Some(queue) => queue,
        None => QueueRow {
            id: insert_queue(conn, &request.queue, &request.defaults, now)?,
            settings: request.defaults.clone(),
        },
    };
    if let Some(key) = &request.idempotency_key {
        let seen: Option<MessageId> = conn
            .prepare_cached(
                "SELECT message_id FROM idempotency_keys WHERE queue_id = ?1 AND key = ?2 AND expires_at > ?3",
            )
            .and_then(|mut stmt| stmt.query_row(params![queue.id, key, now], |row| row.get(0)).optional())
            .map_err(sql("check idempotency key"))?;
        if let Some(id) = seen {
            return Ok(PushOutcome::Duplicate(id));
        }
    }
    let delay = request.delay.unwrap_or(queue.settings.delay);
    let visible_at = now.saturating_add(millis_of(delay));
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO messages (queue_id, state, visible_at, attempts, enqueued_at, body, grp, meta)
             VALUES (?1, 0, ?2, 0, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql("push"))?;
    let mut ids = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        insert
            .execute(params![
                queue.id,
                visible_at,
                now,
                message.body,
                message.group,
                message.meta
            ])
            .map_err(sql("push"))?;
        ids.push(conn.last_insert_rowid());
    }
    if let (Some(key), Some(first)) = (&request.idempotency_key, ids.first()) {
        let expires_at = now.saturating_add(millis_of(queue.settings.idempotency_window));
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (queue_id, key, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| stmt.execute(params![queue.id, key, first, expires_at]))
        .map_err(sql("store idempotency key"))?;
    }
    Ok(PushOutcome::Created(ids))
}

/// Returns expired leases to waiting, or to the dead letters when out of attempts
/// (failing their tasks).
fn release_expired_leases(
    conn: &Connection,
    name: &QueueName,
    queue: &QueueRow,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    let released = conn
        .prepare_cached(
            "UPDATE messages SET state = ?3
             WHERE queue_id = ?1 AND state = 1 AND visible_at <= ?2
             RETURNING id, attempts",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![queue.id, now, WAITING], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("release expired leases"))?;
    let dead = exhausted(&released, queue.settings.max_attempts);
    bury(conn, &dead)?;
    end_tasks(conn, name, &dead, TaskEnding::OutOfAttempts, now, wake)
}

/// Moves messages, given as `(id, attempts)`, to the dead letters.
pub(super) fn bury(conn: &Connection, dead: &[(i64, u32)]) -> StoreResult<()> {
    if dead.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("UPDATE messages SET state = ?2 WHERE id = ?1")
        .map_err(sql("move to the dead letters"))?;
    for (id, _) in dead {
        stmt.execute(params![id, DEAD])
            .map_err(sql("move to the dead letters"))?;
    }
    Ok(())
}

/// [`tasks::end`] for messages of one queue, skipped (one index probe instead of
/// one per message) when the queue has no unfinished task: acks and pops of plain
/// queues stay as cheap as before tasks existed.
fn end_tasks(
    conn: &Connection,
    name: &QueueName,
    messages: &[(i64, u32)],
    ending: TaskEnding,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    if messages.is_empty() || !tasks::has_unfinished(conn, name)? {
        return Ok(());
    }
    tasks::end(conn, messages, ending, now, wake)
}

/// A message from a row of [`message_columns`].
fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let task = row
        .get::<_, Option<String>>(4)?
        .map(|id| {
            TaskId::parse(&id).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
            })
        })
        .transpose()?;
    Ok(Message {
        task,
        group: row.get(5)?,
        meta: row.get(6)?,
        first_received_at: row.get(7)?,
        ..Message::stored(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)
    })
}

/// Pops messages; see [`crate::store::QueueStore::pop`].
pub fn pop(
    conn: &Connection,
    name: &QueueName,
    count: u32,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Vec<Message>> {
    let queue = require_queue(conn, name)?;
    release_expired_leases(conn, name, &queue, now, wake)?;
    let statement = if queue.settings.ordering == Ordering::Group {
        concat!(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM messages m WHERE queue_id = ?1 AND state = 0 AND visible_at <= ?2
                 AND ",
            group_head!(),
            " ORDER BY id LIMIT ?3)
             RETURNING id, body, attempts + 1, enqueued_at, task_id, grp, meta, first_received_at"
        )
    } else {
        "DELETE FROM messages WHERE id IN (
             SELECT id FROM messages WHERE queue_id = ?1 AND state = 0 AND visible_at <= ?2
             ORDER BY id LIMIT ?3)
         RETURNING id, body, attempts + 1, enqueued_at, task_id, grp, meta, first_received_at"
    };
    let mut messages = conn
        .prepare_cached(statement)
        .and_then(|mut stmt| {
            stmt.query_map(params![queue.id, now, count], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("pop"))?;
    messages.sort_unstable_by_key(|m| m.id);
    let popped: Vec<(i64, u32)> = messages.iter().map(|m| (m.id, m.attempts)).collect();
    end_tasks(conn, name, &popped, TaskEnding::Dropped, now, wake)?;
    Ok(messages)
}

/// Leases messages; see [`crate::store::QueueStore::receive`].
pub fn receive(
    conn: &Connection,
    name: &QueueName,
    count: u32,
    lease: Option<Duration>,
    lease_token: i64,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Received> {
    let queue = require_queue(conn, name)?;
    release_expired_leases(conn, name, &queue, now, wake)?;
    let lease_until = now.saturating_add(millis_of(lease.unwrap_or(queue.settings.lease)));
    let grouped = queue.settings.ordering == Ordering::Group;
    let statement = if grouped {
        concat!(
            "UPDATE messages SET state = 1, visible_at = ?4, attempts = attempts + 1, lease_token = ?5,
                 first_received_at = COALESCE(first_received_at, ?2)
             WHERE id IN (
                 SELECT id FROM messages m WHERE queue_id = ?1 AND state = 0 AND visible_at <= ?2
                 AND ", group_head!(), " ORDER BY id LIMIT ?3)
             RETURNING ", message_columns!()
        )
    } else {
        concat!(
            "UPDATE messages SET state = 1, visible_at = ?4, attempts = attempts + 1, lease_token = ?5,
                 first_received_at = COALESCE(first_received_at, ?2)
             WHERE id IN (
                 SELECT id FROM messages WHERE queue_id = ?1 AND state = 0 AND visible_at <= ?2
                 ORDER BY id LIMIT ?3)
             RETURNING ", message_columns!()
        )
    };
    let mut messages = conn
        .prepare_cached(statement)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![queue.id, now, count, lease_until, lease_token],
                message_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("receive"))?;
    if messages.is_empty() {
        // Of a grouped queue, only heads: a message behind a leased head is visible
        // but not ready, and waking for it would spin.
        let statement = if grouped {
            concat!(
                "SELECT MIN(visible_at) FROM messages m WHERE queue_id = ?1 AND state IN (0, 1) AND ",
                group_head!()
            )
        } else {
            "SELECT MIN(visible_at) FROM messages WHERE queue_id = ?1 AND state IN (0, 1)"
        };
        let next_ready_at: Option<Millis> = conn
            .prepare_cached(statement)
            .and_then(|mut stmt| stmt.query_row([queue.id], |row| row.get(0)))
            .map_err(sql("find next ready message"))?;
        return Ok(Received {
            messages,
            next_ready_in: next_ready_at
                .map(|at: Millis| Duration::from_millis((at - now).max(0) as u64)),
            queue_wait: queue.settings.wait,
        });
    }
    messages.sort_unstable_by_key(|m| m.id);
    for message in &mut messages {
        message.receipt = Some(Receipt {
            message_id: message.id,
            lease_token,
        });
    }
    Ok(Received {
        messages,
        next_ready_in: None,
        queue_wait: queue.settings.wait,
    })
}

/// The oldest ready messages, read only; see [`crate::store::QueueStore::peek`].
/// Ready is what [`counts`] counts as ready: waiting and visible, or leased with the
/// lease expired and attempts left (a receive would release it first). The two are
/// read apart, each in index order, so a long queue is never sorted whole.
pub fn peek(
    conn: &Connection,
    name: &QueueName,
    limit: u32,
    now: Millis,
) -> StoreResult<Vec<Message>> {
    let queue = require_queue(conn, name)?;
    let statement = if queue.settings.ordering == Ordering::Group {
        concat!(
            "SELECT * FROM (
                 SELECT ",
            message_columns!(),
            " FROM messages m
                 WHERE queue_id = ?1 AND state = 0 AND visible_at <= ?2 AND ",
            group_head!(),
            "
                 ORDER BY id LIMIT ?4)
             UNION ALL
             SELECT * FROM (
                 SELECT ",
            message_columns!(),
            " FROM messages m
                 WHERE queue_id = ?1 AND state = 1 AND visible_at <= ?2 AND attempts < ?3
                 ORDER BY id LIMIT ?4)
             ORDER BY id LIMIT ?4"
        )
    } else {
        concat!(
            "SELECT * FROM (
                 SELECT ",
            message_columns!(),
            " FROM messages
                 WHERE queue_id = ?1 AND state = 0 AND visible_at <= ?2 ORDER BY id LIMIT ?4)
             UNION ALL
             SELECT * FROM (
                 SELECT ",
            message_columns!(),
            " FROM messages
                 WHERE queue_id = ?1 AND state = 1 AND visible_at <= ?2 AND attempts < ?3
                 ORDER BY id LIMIT ?4)
             ORDER BY id LIMIT ?4"
        )
    };
    conn.prepare_cached(statement)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![queue.id, now, queue.settings.max_attempts, limit],
                message_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("peek"))
}

/// Acks, nacks or extends; see [`crate::store::QueueStore::settle`].
pub fn settle(
    conn: &Connection,
    name: &QueueName,
    receipts: &[Receipt],
    settlement: Settlement,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Settled> {
    let queue = require_queue(conn, name)?;
    // A receipt matches while its token is on the message: expiry alone does not take
    // it away, only a new lease (new token), a nack (no token) or deletion.
    let mut stmt = match settlement {
        Settlement::Ack => conn.prepare_cached(
            "DELETE FROM messages WHERE id = ?1 AND queue_id = ?2 AND lease_token = ?3
             RETURNING id, attempts",
        ),
        Settlement::Nack { .. } => conn.prepare_cached(
            "UPDATE messages SET state = ?5, visible_at = ?4, lease_token = NULL
             WHERE id = ?1 AND queue_id = ?2 AND lease_token = ?3 AND state != 2
             RETURNING id, attempts",
        ),
        Settlement::Extend { .. } => conn.prepare_cached(
            "UPDATE messages SET state = 1, visible_at = ?4
             WHERE id = ?1 AND queue_id = ?2 AND lease_token = ?3 AND state != 2
             RETURNING id, attempts",
        ),
    }
    .map_err(sql("settle"))?;
    let mut settled = Settled::default();
    // `(id, attempts)` of the messages whose receipts held.
    let mut matched = Vec::new();
    let settled_row = |row: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, u32)> {
        Ok((row.get(0)?, row.get(1)?))
    };
    for receipt in receipts {
        let row = match settlement {
            Settlement::Ack => stmt.query_row(
                params![receipt.message_id, queue.id, receipt.lease_token],
                settled_row,
            ),
            Settlement::Nack { delay } => stmt.query_row(
                params![
                    receipt.message_id,
                    queue.id,
                    receipt.lease_token,
                    now.saturating_add(millis_of(delay)),
                    WAITING
                ],
                settled_row,
            ),
            Settlement::Extend { lease } => stmt.query_row(
                params![
                    receipt.message_id,
                    queue.id,
                    receipt.lease_token,
                    now.saturating_add(millis_of(lease))
                ],
                settled_row,
            ),
        }
        .optional()
        .map_err(sql("settle"))?;
        let Some(message) = row else {
            settled.stale.push(*receipt);
            continue;
        };
        settled.applied.push(*receipt);
        matched.push(message);
    }
    drop(stmt);
    let effects = settlement.effects(matched, queue.settings.max_attempts);
    bury(conn, &effects.dead)?;
    if let Some((ending, messages)) = &effects.tasks_end {
        end_tasks(conn, name, messages, *ending, now, wake)?;
    }
    if settlement.wakes_waiters(queue.settings.ordering) {
        wake.push(name.to_string());
    }
    Ok(settled)
}

/// The queue's counts, as seen at `now`.
fn counts(conn: &Connection, queue: &QueueRow, now: Millis) -> StoreResult<QueueCounts> {
    let mut counts = QueueCounts::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, visible_at <= ?2, COUNT(*) FROM messages WHERE queue_id = ?1 GROUP BY 1, 2",
        )
        .map_err(sql("count messages"))?;
    let mut rows = stmt
        .query(params![queue.id, now])
        .map_err(sql("count messages"))?;
    while let Some(row) = rows.next().map_err(sql("count messages"))? {
        let (state, visible, n): (i64, bool, u64) = (
            row.get(0).map_err(sql("count messages"))?,
            row.get(1).map_err(sql("count messages"))?,
            row.get(2).map_err(sql("count messages"))?,
        );
        match (state, visible) {
            (WAITING, true) | (LEASED, true) => counts.ready += n,
            (WAITING, false) => counts.delayed += n,
            (LEASED, false) => counts.leased += n,
            (DEAD, _) => counts.dead += n,
            _ => {}
        }
    }
    // Expired leases out of attempts are dead letters already, though not yet moved.
    let expired_dead: u64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM messages WHERE queue_id = ?1 AND state = 1 AND visible_at <= ?2 AND attempts >= ?3",
        )
        .and_then(|mut stmt| stmt.query_row(params![queue.id, now, queue.settings.max_attempts], |row| row.get(0)))
        .map_err(sql("count messages"))?;
    counts.ready = counts.ready.saturating_sub(expired_dead);
    counts.dead += expired_dead;
    Ok(counts)
}

/// One queue with counts; see [`crate::store::QueueStore::queue_info`].
pub fn queue_info(conn: &Connection, name: &QueueName, now: Millis) -> StoreResult<QueueInfo> {
    let queue = require_queue(conn, name)?;
    Ok(QueueInfo {
        name: name.clone(),
        counts: counts(conn, &queue, now)?,
        tasks: super::tasks::counts(conn, name, queue.settings.max_attempts, now)?,
        settings: queue.settings,
    })
}

/// Every queue with counts, by name.
pub fn list_queues(conn: &Connection, now: Millis) -> StoreResult<Vec<QueueInfo>> {
    let rows = conn
        .prepare_cached(
            "SELECT id, lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options, name FROM queues ORDER BY name",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                Ok((
                    QueueRow {
                        id: row.get(0)?,
                        settings: settings_from_row(row, 1)?,
                    },
                    row.get::<_, String>(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list queues"))?;
    rows.into_iter()
        .filter_map(|(queue, name)| QueueName::parse(&name).ok().map(|name| (queue, name)))
        .map(|(queue, name)| {
            Ok(QueueInfo {
                counts: counts(conn, &queue, now)?,
                tasks: super::tasks::counts(conn, &name, queue.settings.max_attempts, now)?,
                name,
                settings: queue.settings,
            })
        })
        .collect()
}

/// Queues with a delivery setting, by name.
pub fn delivering_queues(conn: &Connection) -> StoreResult<Vec<(QueueName, DeliverySettings)>> {
    let rows = conn
        .prepare_cached(
            "SELECT name, delivery FROM queues WHERE delivery IS NOT NULL ORDER BY name",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list delivering queues"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, json)| {
            let delivery = serde_json::from_str(&json)
                .map_err(|error| tracing::error!(%error, queue = name, "sqlite: a stored delivery setting is unreadable"))
                .ok()?;
            Some((QueueName::parse(&name).ok()?, delivery))
        })
        .collect())
}

/// The settings of an existing queue.
pub fn settings(conn: &Connection, name: &QueueName) -> StoreResult<QueueSettings> {
    Ok(require_queue(conn, name)?.settings)
}

/// Creates or updates a queue's settings, reading and writing in the same transaction.
pub fn update_settings(
    conn: &Connection,
    name: &QueueName,
    patch: &SettingsPatch,
    defaults: &QueueSettings,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Upsert> {
    // A changed lease or attempt limit can make messages ready: waiters re-check.
    wake.push(name.to_string());
    let Some(current) = find_queue(conn, name)? else {
        insert_queue(conn, name, &patch.over(defaults), now)?;
        return Ok(Upsert::Created);
    };
    let settings = patch.over(&current.settings);
    let delivery = delivery_json(&settings)?;
    conn.prepare_cached(
        "UPDATE queues SET lease_ms = ?2, max_attempts = ?3, retention_ms = ?4, idempotency_window_ms = ?5,
             delivery = ?6, options = ?7
         WHERE name = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            name.as_str(),
            millis_of(settings.lease),
            settings.max_attempts,
            settings.retention.map(millis_of),
            millis_of(settings.idempotency_window),
            delivery,
            settings.options_json()
        ])
    })
    .map_err(sql("update queue settings"))?;
    Ok(Upsert::Updated)
}

/// Deletes every message of a queue (ending their tasks); with `drop_queue`, the
/// queue and its keys too.
pub fn clear(
    conn: &Connection,
    name: &QueueName,
    drop_queue: bool,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<u64> {
    let queue = require_queue(conn, name)?;
    tasks::end_all_of_queue(conn, name, now, wake)?;
    // Waiters wake to find the queue gone (404) instead of waiting out their time.
    wake.push(name.to_string());
    let removed = conn
        .prepare_cached("DELETE FROM messages WHERE queue_id = ?1")
        .and_then(|mut stmt| stmt.execute([queue.id]))
        .map_err(sql("delete messages"))?;
    if drop_queue {
        conn.prepare_cached("DELETE FROM idempotency_keys WHERE queue_id = ?1")
            .and_then(|mut stmt| stmt.execute([queue.id]))
            .and_then(|_| conn.prepare_cached("DELETE FROM queues WHERE id = ?1"))
            .and_then(|mut stmt| stmt.execute([queue.id]))
            .map_err(sql("delete queue"))?;
    }
    Ok(removed as u64)
}

/// Dead letters, oldest first.
pub fn dead_letters(
    conn: &Connection,
    name: &QueueName,
    limit: u32,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Vec<Message>> {
    let queue = require_queue(conn, name)?;
    release_expired_leases(conn, name, &queue, now, wake)?;
    conn.prepare_cached(concat!(
        "SELECT ",
        message_columns!(),
        ", last_error FROM messages WHERE queue_id = ?1 AND state = 2 ORDER BY id LIMIT ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![queue.id, limit], |row| {
            Ok(Message {
                last_error: row.get(8)?,
                ..message_from_row(row)?
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(sql("list dead letters"))
}

/// Nacks one leased message after a failed delivery, keeping its last error.
pub fn retry_later(
    conn: &Connection,
    name: &QueueName,
    receipt: Receipt,
    delay: Duration,
    error: &str,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<bool> {
    let settled = settle(
        conn,
        name,
        &[receipt],
        Settlement::Nack { delay },
        now,
        wake,
    )?;
    if settled.applied.is_empty() {
        return Ok(false);
    }
    conn.prepare_cached("UPDATE messages SET last_error = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![receipt.message_id, error]))
        .map_err(sql("keep the delivery error"))?;
    Ok(true)
}

/// Makes dead letters ready again with attempts reset; their tasks wait for a worker again.
pub fn redrive(
    conn: &Connection,
    name: &QueueName,
    limit: u32,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<u64> {
    let queue = require_queue(conn, name)?;
    release_expired_leases(conn, name, &queue, now, wake)?;
    let moved = conn
        .prepare_cached(
            "UPDATE messages SET state = 0, attempts = 0, visible_at = ?2, lease_token = NULL
             WHERE id IN (SELECT id FROM messages WHERE queue_id = ?1 AND state = 2 ORDER BY id LIMIT ?3)
             RETURNING id",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![queue.id, now, limit], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(sql("redrive"))?;
    tasks::revive(conn, &moved)?;
    wake.push(name.to_string());
    Ok(moved.len() as u64)
}

/// Drops messages past retention, and dead-letters expired leases out of attempts in every queue (so their tasks fail even when
/// nobody receives from the queue).
pub fn sweep(conn: &Connection, now: Millis, wake: &mut Vec<String>) -> StoreResult<u64> {
    let dropped = conn
        .prepare_cached(
            "DELETE FROM messages WHERE id IN (
                 SELECT m.id FROM queues q JOIN messages m ON m.queue_id = q.id
                 WHERE q.retention_ms IS NOT NULL AND m.enqueued_at <= ?1 - q.retention_ms)
             RETURNING id, attempts",
        )
        .and_then(|mut stmt| {
            stmt.query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<(i64, u32)>>>()
        })
        .map_err(sql("drop expired messages"))?;
    tasks::end(conn, &dropped, TaskEnding::Dropped, now, wake)?;
    let dead = conn
        .prepare_cached(
            "UPDATE messages SET state = 2
             WHERE state = 1 AND visible_at <= ?1
               AND attempts >= (SELECT max_attempts FROM queues q WHERE q.id = messages.queue_id)
             RETURNING id, attempts",
        )
        .and_then(|mut stmt| {
            stmt.query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<(i64, u32)>>>()
        })
        .map_err(sql("dead-letter expired leases"))?;
    tasks::end(conn, &dead, TaskEnding::OutOfAttempts, now, wake)?;
    Ok(dropped.len() as u64)
}

/// Forgets idempotency keys past their window.
pub fn sweep_idempotency_keys(conn: &Connection, now: Millis) -> StoreResult<u64> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")
        .and_then(|mut stmt| stmt.execute([now]))
        .map(|n| n as u64)
        .map_err(sql("drop expired idempotency keys"))
}

/// Deletes dead letters of a queue by id (once moved elsewhere); returns how many went.
pub fn remove_dead(conn: &Connection, name: &QueueName, ids: &[MessageId]) -> StoreResult<u64> {
    let queue = require_queue(conn, name)?;
    let mut stmt = conn
        .prepare_cached("DELETE FROM messages WHERE id = ?1 AND queue_id = ?2 AND state = ?3")
        .map_err(sql("remove dead letters"))?;
    let mut removed = 0;
    for id in ids {
        removed += stmt
            .execute(params![id, queue.id, DEAD])
            .map_err(sql("remove dead letters"))? as u64;
    }
    Ok(removed)
}

/// Every queue's settings, by name, without counts.
pub fn all_settings(conn: &Connection) -> StoreResult<Vec<(QueueName, QueueSettings)>> {
    let rows = conn
        .prepare_cached(
            "SELECT id, lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options, name FROM queues ORDER BY name",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get::<_, String>(7)?, settings_from_row(row, 1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("list queue settings"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, settings)| Some((QueueName::parse(&name).ok()?, settings)))
        .collect())
}

//! Queue operations as SQL on one PostgreSQL transaction. The model and the rules
//! are SQLite's (see `store::sqlite::queues`); what differs is concurrency: many
//! nodes run these at once, so rows are claimed with `FOR UPDATE SKIP LOCKED`
//! (pgmq's `read()`). Wake-ups are announced by the caller after the commit.

use std::time::Duration;

use deadpool_postgres::Transaction;

use super::tasks;
use super::{column, pg, pg_commit};
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

/// A queue row: its id and settings.
pub struct QueueRow {
    id: i64,
    settings: QueueSettings,
}

/// A queue's settings from the columns `lease_ms, max_attempts, retention_ms,
/// idempotency_window_ms, delivery` starting at `first`. An unreadable column is an
/// error, as on SQLite: read as "no delivery", the next `PUT` would store that.
fn settings_from_row(row: &tokio_postgres::Row, first: usize) -> StoreResult<QueueSettings> {
    let millis = |ms: i64| Duration::from_millis(ms.max(0) as u64);
    let column = pg("read queue settings");
    let options: Option<&str> = row.try_get(first + 5).map_err(&column)?;
    QueueSettings {
        lease: millis(row.try_get(first).map_err(&column)?),
        max_attempts: row.try_get::<_, i32>(first + 1).map_err(&column)?.max(1) as u32,
        retention: row
            .try_get::<_, Option<i64>>(first + 2)
            .map_err(&column)?
            .map(millis),
        idempotency_window: millis(row.try_get(first + 3).map_err(&column)?),
        delivery: row
            .try_get::<_, Option<&str>>(first + 4)
            .map_err(&column)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::backend("read a stored delivery setting", e))?,
        ..QueueSettings::default()
    }
    .with_options_json(options)
    .map_err(|e| StoreError::backend("read stored queue options", e))
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

async fn find_queue(tx: &Transaction<'_>, name: &QueueName) -> StoreResult<Option<QueueRow>> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options FROM queues WHERE name = $1",
        )
        .await
        .map_err(pg("find queue"))?;
    let row = tx
        .query_opt(&stmt, &[&name.as_str()])
        .await
        .map_err(pg("find queue"))?;
    row.map(|row| {
        Ok(QueueRow {
            id: row.try_get(0).map_err(pg("find queue"))?,
            settings: settings_from_row(&row, 1)?,
        })
    })
    .transpose()
}

async fn require_queue(tx: &Transaction<'_>, name: &QueueName) -> StoreResult<QueueRow> {
    find_queue(tx, name)
        .await?
        .ok_or_else(|| StoreError::QueueNotFound(name.to_string()))
}

/// Creates the queue with `defaults` unless it exists (made by any node).
async fn create_queue_if_absent(
    client: &impl deadpool_postgres::GenericClient,
    name: &QueueName,
    defaults: &QueueSettings,
    now: Millis,
) -> StoreResult<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO queues (name, lease_ms, max_attempts, retention_ms, idempotency_window_ms, created_at, delivery, options)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
        )
        .await
        .map_err(pg("create queue"))?;
    client
        .execute(
            &stmt,
            &[
                &name.as_str(),
                &millis_of(defaults.lease),
                &(defaults.max_attempts as i32),
                &defaults.retention.map(millis_of),
                &millis_of(defaults.idempotency_window),
                &now,
                &delivery_json(defaults)?,
                &defaults.options_json(),
            ],
        )
        .await
        .map_err(pg("create queue"))?;
    Ok(())
}

/// Creates the queue unless another request (on any node) just did; returns its row.
async fn ensure_queue(
    tx: &Transaction<'_>,
    name: &QueueName,
    defaults: &QueueSettings,
    now: Millis,
) -> StoreResult<QueueRow> {
    if let Some(queue) = find_queue(tx, name).await? {
        return Ok(queue);
    }
    create_queue_if_absent(tx, name, defaults, now).await?;
    require_queue(tx, name).await
}

/// Pushes messages; see [`crate::store::QueueStore::push`].
pub async fn push(
    tx: &Transaction<'_>,
    request: &PushRequest,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<PushOutcome> {
    wake.push(request.queue.to_string());
    let queue = ensure_queue(tx, &request.queue, &request.defaults, now).await?;
    // Held to commit, so a concurrent delete of the queue waits and then takes these rows.
    tx.execute(
        "SELECT 1 FROM queues WHERE id = $1 FOR KEY SHARE",
        &[&queue.id],
    )
    .await
    .map_err(pg("lock queue"))?;
    if let Some(key) = &request.idempotency_key {
        // Serializes pushes with the same key across nodes until this transaction ends.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
            &[key, &queue.id],
        )
        .await
        .map_err(pg("lock idempotency key"))?;
        let stmt = tx
            .prepare_cached(
                "SELECT message_id FROM idempotency_keys WHERE queue_id = $1 AND key = $2 AND expires_at > $3",
            )
            .await
            .map_err(pg("check idempotency key"))?;
        if let Some(row) = tx
            .query_opt(&stmt, &[&queue.id, key, &now])
            .await
            .map_err(pg("check idempotency key"))?
        {
            let first: MessageId = column(&row, 0, "check idempotency key")?;
            return Ok(PushOutcome::Duplicate(first));
        }
    }
    let delay = request.delay.unwrap_or(queue.settings.delay);
    let visible_at = now.saturating_add(millis_of(delay));
    let (bodies, groups, metas) = columns_of(request);
    // One statement for the whole batch; ids come from the sequence in array order.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (queue_id, state, visible_at, attempts, enqueued_at, body, grp, meta)
             SELECT $1, 0, $2, 0, $3, body, grp, meta
             FROM UNNEST($4::TEXT[], $5::TEXT[], $6::TEXT[]) WITH ORDINALITY AS u(body, grp, meta, n) ORDER BY n
             RETURNING id",
        )
        .await
        .map_err(pg("push"))?;
    let rows = tx
        .query(
            &stmt,
            &[&queue.id, &visible_at, &now, &bodies, &groups, &metas],
        )
        .await
        .map_err(pg("push"))?;
    let mut ids = rows
        .iter()
        .map(|row| column(row, 0, "push"))
        .collect::<StoreResult<Vec<MessageId>>>()?;
    ids.sort_unstable();
    if let (Some(key), Some(first)) = (&request.idempotency_key, ids.first()) {
        let expires_at = now.saturating_add(millis_of(queue.settings.idempotency_window));
        let stmt = tx
            .prepare_cached(
                "INSERT INTO idempotency_keys (queue_id, key, message_id, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (queue_id, key) DO UPDATE SET message_id = EXCLUDED.message_id, expires_at = EXCLUDED.expires_at",
            )
            .await
            .map_err(pg("store idempotency key"))?;
        tx.execute(&stmt, &[&queue.id, key, first, &expires_at])
            .await
            .map_err(pg("store idempotency key"))?;
    }
    Ok(PushOutcome::Created(ids))
}

/// A push's bodies, groups and metadata, as the array parameters of an insert.
#[allow(clippy::type_complexity)]
fn columns_of(request: &PushRequest) -> (Vec<&str>, Vec<Option<&str>>, Vec<Option<&str>>) {
    (
        request.messages.iter().map(|m| m.body.as_str()).collect(),
        request
            .messages
            .iter()
            .map(|m| m.group.as_deref())
            .collect(),
        request.messages.iter().map(|m| m.meta.as_deref()).collect(),
    )
}

/// Returns expired leases to waiting, or to the dead letters when out of attempts
/// (failing their tasks).
async fn release_expired_leases(
    tx: &Transaction<'_>,
    queue: &QueueRow,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE messages SET state = $3
             WHERE id IN (SELECT id FROM messages WHERE queue_id = $1 AND state = 1 AND visible_at <= $2
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, attempts",
        )
        .await
        .map_err(pg("release expired leases"))?;
    let rows = tx
        .query(&stmt, &[&queue.id, &now, &MessageState::Waiting.code()])
        .await
        .map_err(pg("release expired leases"))?;
    let released = rows
        .iter()
        .map(id_and_attempts)
        .collect::<StoreResult<Vec<_>>>()?;
    let dead = exhausted(&released, queue.settings.max_attempts);
    bury(tx, &dead).await?;
    tasks::end(tx, &dead, TaskEnding::OutOfAttempts, now, wake).await
}

/// Moves messages, given as `(id, attempts)`, to the dead letters; they were put
/// back to waiting in this transaction, so no one else has seen them there.
pub(super) async fn bury(tx: &Transaction<'_>, dead: &[(i64, u32)]) -> StoreResult<()> {
    if dead.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = dead.iter().map(|(id, _)| *id).collect();
    let stmt = tx
        .prepare_cached("UPDATE messages SET state = $2 WHERE id = ANY($1)")
        .await
        .map_err(pg("move to the dead letters"))?;
    tx.execute(&stmt, &[&ids, &MessageState::Dead.code()])
        .await
        .map_err(pg("move to the dead letters"))?;
    Ok(())
}

/// `(id, attempts)` from the first two columns of a row.
fn id_and_attempts(row: &tokio_postgres::Row) -> StoreResult<(i64, u32)> {
    let read = "read a message's attempts";
    Ok((
        column(row, 0, read)?,
        column::<i32>(row, 1, read)?.max(0) as u32,
    ))
}

/// A message from a row of [`message_columns`].
fn message_from_row(row: &tokio_postgres::Row) -> StoreResult<Message> {
    let read = "read a message";
    let task = column::<Option<&str>>(row, 4, read)?
        .map(TaskId::parse)
        .transpose()
        .map_err(|e| StoreError::backend("a stored message names an invalid task", e))?;
    Ok(Message {
        task,
        group: column(row, 5, read)?,
        meta: column(row, 6, read)?,
        first_received_at: column(row, 7, read)?,
        ..Message::stored(
            column(row, 0, read)?,
            column(row, 1, read)?,
            column::<i32>(row, 2, read)?.max(0) as u32,
            column(row, 3, read)?,
        )
    })
}

/// Pops messages; see [`crate::store::QueueStore::pop`].
pub async fn pop(
    tx: &Transaction<'_>,
    name: &QueueName,
    count: u32,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Vec<Message>> {
    let queue = require_queue(tx, name).await?;
    release_expired_leases(tx, &queue, now, wake).await?;
    let statement = if queue.settings.ordering == Ordering::Group {
        concat!(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM messages m WHERE queue_id = $1 AND state = 0 AND visible_at <= $2
                 AND ",
            group_head!(),
            " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, body, attempts + 1, enqueued_at, task_id, grp, meta, first_received_at"
        )
    } else {
        "DELETE FROM messages WHERE id IN (
             SELECT id FROM messages WHERE queue_id = $1 AND state = 0 AND visible_at <= $2
             ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
         RETURNING id, body, attempts + 1, enqueued_at, task_id, grp, meta, first_received_at"
    };
    let stmt = tx.prepare_cached(statement).await.map_err(pg("pop"))?;
    let rows = tx
        .query(&stmt, &[&queue.id, &now, &i64::from(count)])
        .await
        .map_err(pg("pop"))?;
    let mut messages = rows
        .iter()
        .map(message_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    messages.sort_unstable_by_key(|m| m.id);
    let popped: Vec<(i64, u32)> = messages.iter().map(|m| (m.id, m.attempts)).collect();
    tasks::end(tx, &popped, TaskEnding::Dropped, now, wake).await?;
    Ok(messages)
}

/// Leases messages; see [`crate::store::QueueStore::receive`].
pub async fn receive(
    tx: &Transaction<'_>,
    name: &QueueName,
    count: u32,
    lease: Option<Duration>,
    lease_token: i64,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Received> {
    let queue = require_queue(tx, name).await?;
    release_expired_leases(tx, &queue, now, wake).await?;
    let lease_until = now.saturating_add(millis_of(lease.unwrap_or(queue.settings.lease)));
    let grouped = queue.settings.ordering == Ordering::Group;
    let statement = if grouped {
        concat!(
            "UPDATE messages SET state = 1, visible_at = $4, attempts = attempts + 1, lease_token = $5,
                 first_received_at = COALESCE(first_received_at, $2)
             WHERE id IN (
                 SELECT id FROM messages m WHERE queue_id = $1 AND state = 0 AND visible_at <= $2
                 AND ", group_head!(), " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING ", message_columns!()
        )
    } else {
        concat!(
            "UPDATE messages SET state = 1, visible_at = $4, attempts = attempts + 1, lease_token = $5,
                 first_received_at = COALESCE(first_received_at, $2)
             WHERE id IN (
                 SELECT id FROM messages WHERE queue_id = $1 AND state = 0 AND visible_at <= $2
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING ", message_columns!()
        )
    };
    let stmt = tx.prepare_cached(statement).await.map_err(pg("receive"))?;
    let rows = tx
        .query(
            &stmt,
            &[
                &queue.id,
                &now,
                &i64::from(count),
                &lease_until,
                &lease_token,
            ],
        )
        .await
        .map_err(pg("receive"))?;
    let mut messages = rows
        .iter()
        .map(message_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    if messages.is_empty() {
        // Of a grouped queue, only heads (SQLite's `receive` says why).
        let statement = if grouped {
            concat!(
                "SELECT MIN(visible_at) FROM messages m WHERE queue_id = $1 AND state IN (0, 1) AND ",
                group_head!()
            )
        } else {
            "SELECT MIN(visible_at) FROM messages WHERE queue_id = $1 AND state IN (0, 1)"
        };
        let stmt = tx
            .prepare_cached(statement)
            .await
            .map_err(pg("find next ready message"))?;
        let next_ready = tx
            .query_one(&stmt, &[&queue.id])
            .await
            .map_err(pg("find next ready message"))?;
        let next_ready_at: Option<i64> = column(&next_ready, 0, "find next ready message")?;
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
/// Ready as [`counts`] counts it (SQLite's `peek` says why the two parts are read
/// apart). Rows other transactions hold are read as committed, never waited for.
pub async fn peek(
    tx: &Transaction<'_>,
    name: &QueueName,
    limit: u32,
    now: Millis,
) -> StoreResult<Vec<Message>> {
    let queue = require_queue(tx, name).await?;
    let statement = if queue.settings.ordering == Ordering::Group {
        concat!(
            "(SELECT ",
            message_columns!(),
            " FROM messages m
              WHERE queue_id = $1 AND state = 0 AND visible_at <= $2 AND ",
            group_head!(),
            "
              ORDER BY id LIMIT $4)
             UNION ALL
             (SELECT ",
            message_columns!(),
            " FROM messages
              WHERE queue_id = $1 AND state = 1 AND visible_at <= $2 AND attempts < $3
              ORDER BY id LIMIT $4)
             ORDER BY id LIMIT $4"
        )
    } else {
        concat!(
            "(SELECT ",
            message_columns!(),
            " FROM messages
              WHERE queue_id = $1 AND state = 0 AND visible_at <= $2 ORDER BY id LIMIT $4)
             UNION ALL
             (SELECT ",
            message_columns!(),
            " FROM messages
              WHERE queue_id = $1 AND state = 1 AND visible_at <= $2 AND attempts < $3
              ORDER BY id LIMIT $4)
             ORDER BY id LIMIT $4"
        )
    };
    let stmt = tx.prepare_cached(statement).await.map_err(pg("peek"))?;
    let rows = tx
        .query(
            &stmt,
            &[
                &queue.id,
                &now,
                &(queue.settings.max_attempts as i32),
                &i64::from(limit),
            ],
        )
        .await
        .map_err(pg("peek"))?;
    rows.iter().map(message_from_row).collect()
}

/// Acks, nacks or extends; see [`crate::store::QueueStore::settle`].
pub async fn settle(
    tx: &Transaction<'_>,
    name: &QueueName,
    receipts: &[Receipt],
    settlement: Settlement,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Settled> {
    let queue = require_queue(tx, name).await?;
    // Rows are locked in id order, so two settles over overlapping receipts cannot deadlock.
    let mut ordered = receipts.to_vec();
    ordered.sort_unstable_by_key(|r| r.message_id);
    let ids: Vec<i64> = ordered.iter().map(|r| r.message_id).collect();
    let tokens: Vec<i64> = ordered.iter().map(|r| r.lease_token).collect();
    let rows = match settlement {
        Settlement::Ack => {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM messages m USING UNNEST($1::BIGINT[], $2::BIGINT[]) AS r(id, token)
                     WHERE m.id = r.id AND m.lease_token = r.token AND m.queue_id = $3
                     RETURNING r.id, r.token, m.attempts, m.state",
                )
                .await
                .map_err(pg("ack"))?;
            tx.query(&stmt, &[&ids, &tokens, &queue.id])
                .await
                .map_err(pg("ack"))?
        }
        Settlement::Nack { delay } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE messages m SET state = $5, visible_at = $4, lease_token = NULL
                     FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS r(id, token)
                     WHERE m.id = r.id AND m.lease_token = r.token AND m.queue_id = $3 AND m.state <> 2
                     RETURNING r.id, r.token, m.attempts, m.state",
                )
                .await
                .map_err(pg("nack"))?;
            let visible_at = now.saturating_add(millis_of(delay));
            let waiting = MessageState::Waiting.code();
            tx.query(&stmt, &[&ids, &tokens, &queue.id, &visible_at, &waiting])
                .await
                .map_err(pg("nack"))?
        }
        Settlement::Extend { lease } => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE messages m SET state = 1, visible_at = $4
                     FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS r(id, token)
                     WHERE m.id = r.id AND m.lease_token = r.token AND m.queue_id = $3 AND m.state <> 2
                     RETURNING r.id, r.token, m.attempts, m.state",
                )
                .await
                .map_err(pg("extend"))?;
            let lease_until = now.saturating_add(millis_of(lease));
            tx.query(&stmt, &[&ids, &tokens, &queue.id, &lease_until])
                .await
                .map_err(pg("extend"))?
        }
    };
    // Matched by (id, token) and consumed once: a stale receipt given next to the
    // current one of the same message, or a receipt given twice, is reported stale.
    let read = "read a settled message";
    let mut applied = rows
        .iter()
        .map(|row| Ok((column(row, 0, read)?, column(row, 1, read)?)))
        .collect::<StoreResult<std::collections::HashSet<(i64, i64)>>>()?;
    let mut settled = Settled::default();
    for receipt in receipts {
        if applied.remove(&(receipt.message_id, receipt.lease_token)) {
            settled.applied.push(*receipt);
        } else {
            settled.stale.push(*receipt);
        }
    }
    let settled_messages = rows
        .iter()
        .map(|row| {
            Ok((
                column(row, 0, read)?,
                column::<i32>(row, 2, read)?.max(0) as u32,
            ))
        })
        .collect::<StoreResult<Vec<(i64, u32)>>>()?;
    let effects = settlement.effects(settled_messages, queue.settings.max_attempts);
    bury(tx, &effects.dead).await?;
    if let Some((ending, messages)) = &effects.tasks_end {
        tasks::end(tx, messages, *ending, now, wake).await?;
    }
    if settlement.wakes_waiters(queue.settings.ordering) {
        wake.push(name.to_string());
    }
    Ok(settled)
}

async fn counts(tx: &Transaction<'_>, queue: &QueueRow, now: Millis) -> StoreResult<QueueCounts> {
    let stmt = tx
        .prepare_cached(
            "SELECT
                 COUNT(*) FILTER (WHERE state = 0 AND visible_at <= $2)
                   + COUNT(*) FILTER (WHERE state = 1 AND visible_at <= $2 AND attempts < $3),
                 COUNT(*) FILTER (WHERE state = 1 AND visible_at > $2),
                 COUNT(*) FILTER (WHERE state = 0 AND visible_at > $2),
                 COUNT(*) FILTER (WHERE state = 2 OR (state = 1 AND visible_at <= $2 AND attempts >= $3))
             FROM messages WHERE queue_id = $1",
        )
        .await
        .map_err(pg("count messages"))?;
    let row = tx
        .query_one(
            &stmt,
            &[&queue.id, &now, &(queue.settings.max_attempts as i32)],
        )
        .await
        .map_err(pg("count messages"))?;
    let count = |i: usize| column::<i64>(&row, i, "count messages").map(|n| n.max(0) as u64);
    Ok(QueueCounts {
        ready: count(0)?,
        leased: count(1)?,
        delayed: count(2)?,
        dead: count(3)?,
    })
}

/// One queue with counts.
pub async fn queue_info(
    tx: &Transaction<'_>,
    name: &QueueName,
    now: Millis,
) -> StoreResult<QueueInfo> {
    let queue = require_queue(tx, name).await?;
    Ok(QueueInfo {
        name: name.clone(),
        counts: counts(tx, &queue, now).await?,
        tasks: super::tasks::counts(tx, name, queue.settings.max_attempts, now).await?,
        settings: queue.settings,
    })
}

/// Every queue with counts, by name.
pub async fn list_queues(tx: &Transaction<'_>, now: Millis) -> StoreResult<Vec<QueueInfo>> {
    let rows = tx
        .query(
            "SELECT id, lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options, name FROM queues ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg("list queues"))?;
    let mut queues = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(name) = QueueName::parse(column(&row, 7, "list queues")?) else {
            continue;
        };
        let queue = QueueRow {
            id: row.try_get(0).map_err(pg("list queues"))?,
            settings: settings_from_row(&row, 1)?,
        };
        queues.push(QueueInfo {
            counts: counts(tx, &queue, now).await?,
            tasks: super::tasks::counts(tx, &name, queue.settings.max_attempts, now).await?,
            name,
            settings: queue.settings,
        });
    }
    Ok(queues)
}

/// Queues with a delivery setting, by name.
pub async fn delivering_queues(
    tx: &Transaction<'_>,
) -> StoreResult<Vec<(QueueName, DeliverySettings)>> {
    let rows = tx
        .query(
            "SELECT name, delivery FROM queues WHERE delivery IS NOT NULL ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg("list delivering queues"))?;
    let mut queues = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: &str = column(row, 0, "list delivering queues")?;
        let json: &str = column(row, 1, "list delivering queues")?;
        let Ok(delivery) = serde_json::from_str(json).map_err(|error| {
            tracing::error!(%error, queue = name, "postgres: a stored delivery setting is unreadable")
        }) else {
            continue;
        };
        if let Ok(name) = QueueName::parse(name) {
            queues.push((name, delivery));
        }
    }
    Ok(queues)
}

/// The settings of an existing queue.
pub async fn settings(tx: &Transaction<'_>, name: &QueueName) -> StoreResult<QueueSettings> {
    Ok(require_queue(tx, name).await?.settings)
}

/// Creates or updates a queue's settings; the row lock makes concurrent changes compose.
pub async fn update_settings(
    tx: &Transaction<'_>,
    name: &QueueName,
    patch: &SettingsPatch,
    defaults: &QueueSettings,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Upsert> {
    // A changed lease or attempt limit can make messages ready: waiters re-check.
    wake.push(name.to_string());
    let stmt = tx
        .prepare_cached(
            "SELECT lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options FROM queues WHERE name = $1 FOR UPDATE",
        )
        .await
        .map_err(pg("read queue settings"))?;
    let current = tx
        .query_opt(&stmt, &[&name.as_str()])
        .await
        .map_err(pg("read queue settings"))?
        .map(|row| settings_from_row(&row, 0))
        .transpose()?;
    let Some(current) = current else {
        let settings = patch.over(defaults);
        create_queue_if_absent(tx, name, &settings, now).await?;
        // Another node may have created it first; its row wins, as if it came just before.
        return Ok(Upsert::Created);
    };
    let settings = patch.over(&current);
    let stmt = tx
        .prepare_cached(
            "UPDATE queues SET lease_ms = $2, max_attempts = $3, retention_ms = $4, idempotency_window_ms = $5,
                 delivery = $6, options = $7
             WHERE name = $1",
        )
        .await
        .map_err(pg("update queue settings"))?;
    tx.execute(
        &stmt,
        &[
            &name.as_str(),
            &millis_of(settings.lease),
            &(settings.max_attempts as i32),
            &settings.retention.map(millis_of),
            &millis_of(settings.idempotency_window),
            &delivery_json(&settings)?,
            &settings.options_json(),
        ],
    )
    .await
    .map_err(pg("update queue settings"))?;
    Ok(Upsert::Updated)
}

/// Deletes every message of a queue (ending their tasks); with `drop_queue`, the
/// queue and its keys too.
pub async fn clear(
    tx: &Transaction<'_>,
    name: &QueueName,
    drop_queue: bool,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<u64> {
    let queue = require_queue(tx, name).await?;
    // Waits for pushes holding the queue row (key share) to commit, so the delete
    // below, with a fresh snapshot, takes their messages too.
    tx.execute(
        "SELECT 1 FROM queues WHERE id = $1 FOR UPDATE",
        &[&queue.id],
    )
    .await
    .map_err(pg("lock queue"))?;
    tasks::end_all_of_queue(tx, name, now, wake).await?;
    // Waiters wake to find the queue gone (404) instead of waiting out their time.
    wake.push(name.to_string());
    let removed = tx
        .execute("DELETE FROM messages WHERE queue_id = $1", &[&queue.id])
        .await
        .map_err(pg("delete messages"))?;
    if drop_queue {
        tx.execute(
            "DELETE FROM idempotency_keys WHERE queue_id = $1",
            &[&queue.id],
        )
        .await
        .map_err(pg("delete queue"))?;
        tx.execute("DELETE FROM queues WHERE id = $1", &[&queue.id])
            .await
            .map_err(pg("delete queue"))?;
    }
    Ok(removed)
}

/// Dead letters, oldest first.
pub async fn dead_letters(
    tx: &Transaction<'_>,
    name: &QueueName,
    limit: u32,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<Vec<Message>> {
    let queue = require_queue(tx, name).await?;
    release_expired_leases(tx, &queue, now, wake).await?;
    let rows = tx
        .query(
            concat!(
                "SELECT ",
                message_columns!(),
                ", last_error FROM messages WHERE queue_id = $1 AND state = 2 ORDER BY id LIMIT $2"
            ),
            &[&queue.id, &i64::from(limit)],
        )
        .await
        .map_err(pg("list dead letters"))?;
    rows.iter()
        .map(|row| {
            Ok(Message {
                last_error: column(row, 8, "list dead letters")?,
                ..message_from_row(row)?
            })
        })
        .collect()
}

/// Nacks one leased message after a failed delivery, keeping its last error.
pub async fn retry_later(
    tx: &Transaction<'_>,
    name: &QueueName,
    receipt: Receipt,
    delay: Duration,
    error: &str,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<bool> {
    let settled = settle(tx, name, &[receipt], Settlement::Nack { delay }, now, wake).await?;
    if settled.applied.is_empty() {
        return Ok(false);
    }
    tx.execute(
        "UPDATE messages SET last_error = $2 WHERE id = $1",
        &[&receipt.message_id, &error],
    )
    .await
    .map_err(pg("keep the delivery error"))?;
    Ok(true)
}

/// Makes dead letters ready again with attempts reset; their tasks wait for a worker again.
pub async fn redrive(
    tx: &Transaction<'_>,
    name: &QueueName,
    limit: u32,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<u64> {
    let queue = require_queue(tx, name).await?;
    release_expired_leases(tx, &queue, now, wake).await?;
    let moved = tx
        .query(
            "UPDATE messages SET state = 0, attempts = 0, visible_at = $2, lease_token = NULL
             WHERE id IN (SELECT id FROM messages WHERE queue_id = $1 AND state = 2 ORDER BY id LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING id",
            &[&queue.id, &now, &i64::from(limit)],
        )
        .await
        .map_err(pg("redrive"))?
        .iter()
        .map(|row| column(row, 0, "redrive"))
        .collect::<StoreResult<Vec<i64>>>()?;
    tasks::revive(tx, &moved).await?;
    wake.push(name.to_string());
    Ok(moved.len() as u64)
}

/// Drops messages past retention and expired idempotency keys, and dead-letters
/// expired leases out of attempts in every queue (so their tasks fail even when
/// nobody receives from the queue).
pub async fn sweep(tx: &Transaction<'_>, now: Millis, wake: &mut Vec<String>) -> StoreResult<u64> {
    let dropped: Vec<(i64, u32)> = tx
        .query(
            "DELETE FROM messages m USING queues q
             WHERE m.queue_id = q.id AND q.retention_ms IS NOT NULL AND m.enqueued_at <= $1 - q.retention_ms
             RETURNING m.id, m.attempts",
            &[&now],
        )
        .await
        .map_err(pg("drop expired messages"))?
        .iter()
        .map(id_and_attempts)
        .collect::<StoreResult<_>>()?;
    tasks::end(tx, &dropped, TaskEnding::Dropped, now, wake).await?;
    let dead: Vec<(i64, u32)> = tx
        .query(
            "UPDATE messages m SET state = 2 FROM queues q
             WHERE m.queue_id = q.id AND m.state = 1 AND m.visible_at <= $1 AND m.attempts >= q.max_attempts
             RETURNING m.id, m.attempts",
            &[&now],
        )
        .await
        .map_err(pg("dead-letter expired leases"))?
        .iter()
        .map(id_and_attempts)
        .collect::<StoreResult<_>>()?;
    tasks::end(tx, &dead, TaskEnding::OutOfAttempts, now, wake).await?;
    Ok(dropped.len() as u64)
}

/// Forgets idempotency keys past their window.
pub async fn sweep_idempotency_keys(tx: &Transaction<'_>, now: Millis) -> StoreResult<u64> {
    tx.execute(
        "DELETE FROM idempotency_keys WHERE expires_at <= $1",
        &[&now],
    )
    .await
    .map_err(pg("drop expired idempotency keys"))
}

/// Pushes without idempotency keys, from many requests, in one statement that
/// commits on its own: the batching that keeps PostgreSQL from doing one commit
/// (and several round trips) per message. `known` holds queues seen to exist, so
/// the steady state is one round trip per batch. Returns each request's outcome,
/// in request order.
pub async fn push_many(
    client: &deadpool_postgres::Client,
    requests: &[&PushRequest],
    known: &KnownQueues,
    now: Millis,
) -> StoreResult<Vec<StoreResult<Vec<MessageId>>>> {
    let mut outcomes = insert_into_known_queues(client, requests, known, now).await?;
    // A queue deleted (here or on another node) since it was last seen: a push
    // creates its queue, so these go once more, now creating it.
    let vanished: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    if !vanished.is_empty() {
        let again: Vec<&PushRequest> = vanished.iter().map(|&i| requests[i]).collect();
        let retried = insert_into_known_queues(client, &again, known, now).await?;
        for (index, outcome) in vanished.into_iter().zip(retried) {
            outcomes[index] = outcome;
        }
    }
    Ok(outcomes
        .into_iter()
        .zip(requests)
        .map(|(outcome, request)| {
            outcome.ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "queue {} was deleted during the push",
                    request.queue
                ))
            })
        })
        .collect())
}

/// Queues seen to exist, so a batch need not create them first.
pub type KnownQueues = std::sync::Mutex<std::collections::HashSet<QueueName>>;

/// One attempt of [`push_many`]: `None` for a request whose queue vanished.
async fn insert_into_known_queues(
    client: &deadpool_postgres::Client,
    requests: &[&PushRequest],
    known: &KnownQueues,
    now: Millis,
) -> StoreResult<Vec<Option<Vec<MessageId>>>> {
    let unknown: Vec<&PushRequest> = {
        let known = known.lock().unwrap_or_else(|e| e.into_inner());
        requests
            .iter()
            .copied()
            .filter(|r| !known.contains(&r.queue))
            .collect()
    };
    for request in unknown {
        create_queue_if_absent(client, &request.queue, &request.defaults, now).await?;
        known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request.queue.clone());
    }
    let total: usize = requests.iter().map(|r| r.messages.len()).sum();
    let (mut names, mut visible, mut bodies, mut groups, mut metas) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    for request in requests {
        // Without a delay of its own, the queue's, read in the statement.
        let visible_at = request
            .delay
            .map(|delay| now.saturating_add(millis_of(delay)));
        for message in &request.messages {
            names.push(request.queue.as_str());
            visible.push(visible_at);
            bodies.push(message.body.as_str());
            groups.push(message.group.as_deref());
            metas.push(message.meta.as_deref());
        }
    }
    // Joined by name, not by a cached id, and under a key-share lock on each queue
    // row: a queue deleted before gets no rows (its requests are told so), and a
    // delete after waits for this commit, then removes these rows too.
    let stmt = client
        .prepare_cached(
            "WITH q AS (SELECT id, name, options FROM queues WHERE name = ANY($1) FOR KEY SHARE),
             inserted AS (
                 INSERT INTO messages (queue_id, state, visible_at, attempts, enqueued_at, body, grp, meta)
                 SELECT q.id, 0,
                     COALESCE(u.v, $4 + COALESCE((q.options::jsonb ->> 'delay_ms')::BIGINT, 0)),
                     0, $4, u.b, u.g, u.m
                 FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $5::TEXT[], $6::TEXT[])
                     WITH ORDINALITY AS u(name, v, b, g, m, n)
                 JOIN q ON q.name = u.name
                 ORDER BY u.n
                 RETURNING id, queue_id)
             SELECT inserted.id, q.name FROM inserted JOIN q ON q.id = inserted.queue_id",
        )
        .await
        .map_err(pg("push"))?;
    let rows = client
        .query(&stmt, &[&names, &visible, &bodies, &now, &groups, &metas])
        .await
        .map_err(pg_commit("push"))?;
    // The sequence hands out ids in row order, so each queue's sorted ids line up
    // with its requests' bodies in request order.
    let mut by_queue: std::collections::HashMap<String, Vec<MessageId>> =
        std::collections::HashMap::new();
    for row in &rows {
        // The statement has committed: failing now leaves the caller unsure of what a
        // retry would do, as a commit whose answer was lost does.
        let unreadable = |e: tokio_postgres::Error| {
            StoreError::OutcomeUnknown(format!("push committed, but its ids are unreadable: {e}"))
        };
        let id: MessageId = row.try_get(0).map_err(unreadable)?;
        let name: String = row.try_get(1).map_err(unreadable)?;
        by_queue.entry(name).or_default().push(id);
    }
    let mut by_queue: std::collections::HashMap<String, std::vec::IntoIter<MessageId>> = by_queue
        .into_iter()
        .map(|(name, mut ids)| {
            ids.sort_unstable();
            (name, ids.into_iter())
        })
        .collect();
    let vanished: Vec<&QueueName> = requests
        .iter()
        .map(|r| &r.queue)
        .filter(|q| !by_queue.contains_key(q.as_str()))
        .collect();
    if !vanished.is_empty() {
        let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
        for queue in vanished {
            known.remove(queue);
        }
    }
    Ok(requests
        .iter()
        .map(|r| {
            by_queue
                .get_mut(r.queue.as_str())
                .map(|ids| ids.by_ref().take(r.messages.len()).collect())
        })
        .collect())
}

/// Deletes dead letters of a queue by id (once moved elsewhere); returns how many went.
pub async fn remove_dead(
    tx: &Transaction<'_>,
    name: &QueueName,
    ids: &[MessageId],
) -> StoreResult<u64> {
    let queue = require_queue(tx, name).await?;
    tx.execute(
        "DELETE FROM messages WHERE id = ANY($1) AND queue_id = $2 AND state = $3",
        &[&ids, &queue.id, &MessageState::Dead.code()],
    )
    .await
    .map_err(pg("remove dead letters"))
}

/// Every queue's settings, by name, without counts.
pub async fn all_settings(tx: &Transaction<'_>) -> StoreResult<Vec<(QueueName, QueueSettings)>> {
    let rows = tx
        .query(
            "SELECT id, lease_ms, max_attempts, retention_ms, idempotency_window_ms, delivery, options, name FROM queues ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(pg("list queue settings"))?;
    let mut queues = Vec::with_capacity(rows.len());
    for row in rows {
        if let Ok(name) = QueueName::parse(column(&row, 7, "list queue settings")?) {
            queues.push((name, settings_from_row(&row, 1)?));
        }
    }
    Ok(queues)
}

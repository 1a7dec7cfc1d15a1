//! Task operations as SQL. A task row sits beside its queue message: creating one
//! pushes the message, finishing one settles it, in the same transaction. While
//! unfinished, a task's status is read off its message, so every queue operation
//! (lease, expiry, dead-lettering, redrive) moves it without touching the task.

use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use super::queues;
use crate::domain::clock::{millis_of, Millis};
use crate::domain::messages::{exhausted, out_of_attempts};
use crate::domain::tasks::OUT_OF_ATTEMPTS;
use crate::domain::wakeups::task_key;
use crate::domain::{
    MessageState, NewTask, PushOutcome, QueueName, Receipt, StoreError, StoreResult, TaskCounts,
    TaskCreated, TaskEnding, TaskFinish, TaskFinished, TaskId, TaskMessage, TaskRecord, TaskState,
    TaskStatus,
};

impl ToSql for TaskState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(i64::from(self.code())))
    }
}

impl FromSql for TaskState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let code = value.as_i64()?;
        TaskState::from_code(code).ok_or(FromSqlError::OutOfRange(code))
    }
}

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |error| StoreError::backend(context, error)
}

fn stored_id(raw: &str) -> StoreResult<TaskId> {
    TaskId::parse(raw).map_err(|e| StoreError::backend("a stored task id is invalid", e))
}

/// Creates a task; see [`crate::store::TaskStore::create_task`].
pub fn create(
    conn: &Connection,
    task: &NewTask,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<TaskCreated> {
    let message_id = match queues::push(conn, &task.message, now, wake)? {
        PushOutcome::Created(ids) => ids
            .first()
            .copied()
            .ok_or_else(|| StoreError::Unavailable("the task message was not stored".into()))?,
        PushOutcome::Duplicate(message_id) => {
            let existing: Option<String> = conn
                .prepare_cached("SELECT id FROM tasks WHERE message_id = ?1")
                .and_then(|mut stmt| stmt.query_row([message_id], |row| row.get(0)).optional())
                .map_err(sql("find task by message"))?;
            return Ok(match existing {
                Some(id) => TaskCreated::Existing(stored_id(&id)?),
                None => TaskCreated::KeyTaken,
            });
        }
    };
    conn.prepare_cached(
        "INSERT INTO tasks (id, queue, message_id, status, attempts, created_at, keep_ms)
         VALUES (?1, ?2, ?3, ?6, 0, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            task.id.as_str(),
            task.message.queue.as_str(),
            message_id,
            now,
            millis_of(task.keep_finished),
            TaskState::Unfinished,
        ])
    })
    .map_err(sql("create task"))?;
    conn.prepare_cached("UPDATE messages SET task_id = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![message_id, task.id.as_str()]))
        .map_err(sql("mark the task's message"))?;
    Ok(TaskCreated::New(task.id.clone()))
}

/// A task with its status; see [`crate::store::TaskStore::task`].
pub fn get(conn: &Connection, id: &TaskId, now: Millis) -> StoreResult<Option<TaskRecord>> {
    conn.prepare_cached(
        "SELECT t.queue, t.status, t.result, t.error, t.attempts, t.created_at, t.finished_at,
                m.state, m.visible_at, m.attempts, q.max_attempts, t.upstream_status
         FROM tasks t
         LEFT JOIN messages m ON m.id = t.message_id AND t.status = ?3
         LEFT JOIN queues q ON q.id = m.queue_id
         WHERE t.id = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![id.as_str(), now, TaskState::Unfinished], |row| {
            let state: Option<i64> = row.get(7)?;
            let visible_at: Millis = row.get::<_, Option<i64>>(8)?.unwrap_or(0);
            let message_attempts: u32 = row.get::<_, Option<u32>>(9)?.unwrap_or(0);
            let max_attempts: u32 = row.get::<_, Option<u32>>(10)?.unwrap_or(u32::MAX);
            let message = state.map(|state| {
                TaskMessage::new(
                    state,
                    visible_at > now,
                    out_of_attempts(message_attempts, max_attempts),
                )
            });
            let status = row.get::<_, TaskState>(1)?.status(message);
            Ok(TaskRecord {
                id: id.clone(),
                queue: row.get(0)?,
                status,
                result: row.get(2)?,
                error: row.get(3)?,
                attempts: if state.is_some() {
                    message_attempts
                } else {
                    row.get(4)?
                },
                created_at: row.get(5)?,
                finished_at: row.get(6)?,
                upstream_status: row.get(11)?,
                lease_ends_in: message
                    .filter(|m| m.leased)
                    .map(|_| Duration::from_millis((visible_at - now).max(0) as u64)),
            })
        })
        .optional()
    })
    .map_err(sql("read task"))
}

/// Finishes a task; see [`crate::store::TaskStore::finish_task`].
pub fn finish(
    conn: &Connection,
    id: &TaskId,
    receipt: Receipt,
    finish: &TaskFinish,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<TaskFinished> {
    let task: Option<(TaskState, i64, Option<u32>, String)> = conn
        .prepare_cached(
            "SELECT t.status, t.message_id, q.max_attempts, t.queue FROM tasks t
             LEFT JOIN queues q ON q.name = t.queue
             WHERE t.id = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![id.as_str(), now], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()
        })
        .map_err(sql("read task"))?;
    let Some((status, message_id, max_attempts, queue)) = task else {
        return Ok(TaskFinished::NotFound);
    };
    if receipt.message_id != message_id {
        return Ok(TaskFinished::WrongMessage);
    }
    let Some(max_attempts) = max_attempts.filter(|_| status == TaskState::Unfinished) else {
        return Ok(TaskFinished::Stale);
    };
    // The receipt must hold a lease the message still counts: not a dead letter, and
    // not a lease that ended with no attempts left (the task reads as failed then).
    const HELD: &str = "id = ?1 AND lease_token = ?2 AND state != 2
         AND NOT (state = 1 AND visible_at <= ?3 AND attempts >= ?4)";
    let (state, result, error) = match finish {
        TaskFinish::Retry { error, delay } => {
            let nacked: Option<u32> = conn
                .prepare_cached(&format!(
                    "UPDATE messages SET state = ?6, visible_at = ?5, lease_token = NULL
                     WHERE {HELD}
                     RETURNING attempts"
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            message_id,
                            receipt.lease_token,
                            now,
                            max_attempts,
                            now.saturating_add(millis_of(*delay)),
                            MessageState::Waiting.code()
                        ],
                        |row| row.get(0),
                    )
                    .optional()
                })
                .map_err(sql("retry task"))?;
            let Some(attempts) = nacked else {
                return Ok(TaskFinished::Stale);
            };
            conn.prepare_cached("UPDATE tasks SET error = ?2 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![id.as_str(), error]))
                .map_err(sql("retry task"))?;
            let dead = exhausted(&[(message_id, attempts)], max_attempts);
            queues::bury(conn, &dead)?;
            if !dead.is_empty() {
                // Out of attempts: failed now, though its dead letter stays for a redrive.
                end(conn, &dead, TaskEnding::OutOfAttempts, now, wake)?;
            } else {
                wake.push(queue);
            }
            return applied(conn, id, now);
        }
        TaskFinish::Succeeded { result, .. } => (TaskState::Succeeded, Some(result), None),
        TaskFinish::Failed { error } => (TaskState::Failed, None, Some(error)),
    };
    let attempts: Option<u32> = conn
        .prepare_cached(&format!(
            "DELETE FROM messages WHERE {HELD} RETURNING attempts"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(
                params![message_id, receipt.lease_token, now, max_attempts],
                |row| row.get(0),
            )
            .optional()
        })
        .map_err(sql("finish task"))?;
    let Some(attempts) = attempts else {
        return Ok(TaskFinished::Stale);
    };
    conn.prepare_cached(
        "UPDATE tasks SET status = ?2, result = ?3, error = ?4, attempts = ?5,
             finished_at = ?6, expires_at = ?6 + keep_ms, upstream_status = ?7
         WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id.as_str(),
            state,
            result,
            error,
            attempts,
            now,
            finish.upstream_status()
        ])
    })
    .map_err(sql("finish task"))?;
    wake.push(task_key(id));
    applied(conn, id, now)
}

/// The answer to a finish that was applied: the task as it is now.
fn applied(conn: &Connection, id: &TaskId, now: Millis) -> StoreResult<TaskFinished> {
    get(conn, id, now)?
        .map(TaskFinished::Applied)
        .ok_or_else(|| StoreError::Unavailable("the finished task vanished".into()))
}

/// Ends the unfinished tasks of messages that ended without a worker's answer,
/// given as `(message id, attempts)`; adds the ended tasks' wake-up keys to `wake`.
pub fn end(
    conn: &Connection,
    messages: &[(i64, u32)],
    ending: TaskEnding,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE tasks SET status = ?2, attempts = ?3, finished_at = ?4, expires_at = ?4 + keep_ms,
                 error = CASE WHEN ?2 = ?7 THEN COALESCE(error, ?5) ELSE error END
             WHERE message_id = ?1 AND status = ?6
             RETURNING id",
        )
        .map_err(sql("end tasks"))?;
    for (message_id, attempts) in messages {
        let ended: Option<String> = stmt
            .query_row(
                params![
                    message_id,
                    ending.state(),
                    attempts,
                    now,
                    OUT_OF_ATTEMPTS,
                    TaskState::Unfinished,
                    TaskState::Failed,
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql("end tasks"))?;
        if let Some(id) = ended {
            wake.push(task_key(id));
        }
    }
    Ok(())
}

/// Whether `queue` has a task not finished yet.
pub fn has_unfinished(conn: &Connection, queue: &QueueName) -> StoreResult<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE queue = ?1 AND status = ?2)")
        .and_then(|mut stmt| {
            stmt.query_row(params![queue.as_str(), TaskState::Unfinished], |row| {
                row.get(0)
            })
        })
        .map_err(sql("look for unfinished tasks"))
}

/// Ends the unfinished tasks of a queue whose messages are all being dropped.
pub fn end_all_of_queue(
    conn: &Connection,
    queue: &QueueName,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    let ended = conn
        .prepare_cached(
            "UPDATE tasks SET status = ?3, finished_at = ?2, expires_at = ?2 + keep_ms,
                 attempts = COALESCE((SELECT attempts FROM messages m WHERE m.id = tasks.message_id), attempts)
             WHERE queue = ?1 AND status = ?4
             RETURNING id",
        )
        .and_then(|mut stmt| {
            let states = (TaskState::Expired, TaskState::Unfinished);
            stmt.query_map(params![queue.as_str(), now, states.0, states.1], |row| {
                row.get::<_, String>(0)
            })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("end tasks of a queue"))?;
    wake.extend(ended.into_iter().map(task_key));
    Ok(())
}

/// Reopens the tasks of redriven dead letters: they wait for a worker again.
pub fn revive(conn: &Connection, message_ids: &[i64]) -> StoreResult<()> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE tasks SET status = ?2, finished_at = NULL, expires_at = NULL
             WHERE message_id = ?1 AND status = ?3",
        )
        .map_err(sql("revive tasks"))?;
    for id in message_ids {
        stmt.execute(params![id, TaskState::Unfinished, TaskState::Failed])
            .map_err(sql("revive tasks"))?;
    }
    Ok(())
}

/// Drops tasks past their time; returns how many.
pub fn sweep(conn: &Connection, now: Millis) -> StoreResult<u64> {
    let dropped = conn
        .prepare_cached("DELETE FROM tasks WHERE expires_at <= ?1")
        .and_then(|mut stmt| stmt.execute([now]))
        .map_err(sql("drop finished tasks"))?;
    Ok(dropped as u64)
}

/// Counts of a queue's tasks by status, as seen at `now`.
pub fn counts(
    conn: &Connection,
    queue: &QueueName,
    max_attempts: u32,
    now: Millis,
) -> StoreResult<TaskCounts> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT t.status, m.state, m.visible_at > ?2, m.attempts >= ?3, COUNT(*)
             FROM tasks t LEFT JOIN messages m ON m.id = t.message_id AND t.status = ?4
             WHERE t.queue = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)
             GROUP BY 1, 2, 3, 4",
        )
        .map_err(sql("count tasks"))?;
    let mut rows = stmt
        .query(params![
            queue.as_str(),
            now,
            max_attempts,
            TaskState::Unfinished
        ])
        .map_err(sql("count tasks"))?;
    let mut counts = TaskCounts::default();
    while let Some(row) = rows.next().map_err(sql("count tasks"))? {
        let read = || -> rusqlite::Result<(TaskStatus, u64)> {
            let state: Option<i64> = row.get(1)?;
            let lease_live: bool = row.get::<_, Option<bool>>(2)?.unwrap_or(false);
            let exhausted: bool = row.get::<_, Option<bool>>(3)?.unwrap_or(false);
            let message = state.map(|state| TaskMessage::new(state, lease_live, exhausted));
            Ok((row.get::<_, TaskState>(0)?.status(message), row.get(4)?))
        };
        let (status, n) = read().map_err(sql("count tasks"))?;
        counts.add(status, n);
    }
    Ok(counts)
}

//! Task operations as SQL on one PostgreSQL transaction; the model and the rules
//! are SQLite's (see `store::sqlite::tasks`). Wake-ups are announced by the caller
//! after the commit, so a task finished on one node wakes its waiters on every node.

use std::time::Duration;

use deadpool_postgres::Transaction;

use super::{column, pg, queues};
use crate::domain::clock::{millis_of, Millis};
use crate::domain::messages::{exhausted, out_of_attempts};
use crate::domain::tasks::OUT_OF_ATTEMPTS;
use crate::domain::wakeups::task_key;
use crate::domain::{
    MessageState, NewTask, PushOutcome, QueueName, Receipt, StoreError, StoreResult, TaskCounts,
    TaskCreated, TaskEnding, TaskFinish, TaskFinished, TaskId, TaskMessage, TaskRecord, TaskState,
};

const UNFINISHED: i16 = TaskState::Unfinished.code();

/// A stored task state; a code this binary never writes is a backend error, not a guess.
fn task_state(code: i16) -> StoreResult<TaskState> {
    TaskState::from_code(i64::from(code)).ok_or_else(|| {
        StoreError::backend(
            "a stored task has an unknown state",
            std::io::Error::other(format!("state code {code}")),
        )
    })
}

fn stored_id(raw: &str) -> StoreResult<TaskId> {
    TaskId::parse(raw).map_err(|e| StoreError::backend("a stored task id is invalid", e))
}

/// Creates a task; see [`crate::store::TaskStore::create_task`].
pub async fn create(
    tx: &Transaction<'_>,
    task: &NewTask,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<TaskCreated> {
    let message_id = match queues::push(tx, &task.message, now, wake).await? {
        PushOutcome::Created(ids) => ids
            .first()
            .copied()
            .ok_or_else(|| StoreError::Unavailable("the task message was not stored".into()))?,
        PushOutcome::Duplicate(message_id) => {
            let stmt = tx
                .prepare_cached("SELECT id FROM tasks WHERE message_id = $1")
                .await
                .map_err(pg("find task by message"))?;
            let existing = tx
                .query_opt(&stmt, &[&message_id])
                .await
                .map_err(pg("find task by message"))?;
            return Ok(match existing {
                Some(row) => {
                    TaskCreated::Existing(stored_id(column(&row, 0, "find task by message")?)?)
                }
                None => TaskCreated::KeyTaken,
            });
        }
    };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tasks (id, queue, message_id, status, attempts, created_at, keep_ms)
             VALUES ($1, $2, $3, $6, 0, $4, $5)",
        )
        .await
        .map_err(pg("create task"))?;
    tx.execute(
        &stmt,
        &[
            &task.id.as_str(),
            &task.message.queue.as_str(),
            &message_id,
            &now,
            &millis_of(task.keep_finished),
            &UNFINISHED,
        ],
    )
    .await
    .map_err(pg("create task"))?;
    let stmt = tx
        .prepare_cached("UPDATE messages SET task_id = $2 WHERE id = $1")
        .await
        .map_err(pg("mark the task's message"))?;
    tx.execute(&stmt, &[&message_id, &task.id.as_str()])
        .await
        .map_err(pg("mark the task's message"))?;
    Ok(TaskCreated::New(task.id.clone()))
}

/// A task with its status; see [`crate::store::TaskStore::task`].
pub async fn get(
    tx: &Transaction<'_>,
    id: &TaskId,
    now: Millis,
) -> StoreResult<Option<TaskRecord>> {
    let stmt = tx
        .prepare_cached(
            "SELECT t.queue, t.status, t.result, t.error, t.attempts, t.created_at, t.finished_at,
                    m.state, m.visible_at, m.attempts, q.max_attempts, t.upstream_status
             FROM tasks t
             LEFT JOIN messages m ON m.id = t.message_id AND t.status = $3
             LEFT JOIN queues q ON q.id = m.queue_id
             WHERE t.id = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .await
        .map_err(pg("read task"))?;
    let Some(row) = tx
        .query_opt(&stmt, &[&id.as_str(), &now, &UNFINISHED])
        .await
        .map_err(pg("read task"))?
    else {
        return Ok(None);
    };
    let read = "read task";
    let state: Option<i16> = column(&row, 7, read)?;
    let visible_at: Millis = column::<Option<i64>>(&row, 8, read)?.unwrap_or(0);
    let message_attempts = column::<Option<i32>>(&row, 9, read)?.unwrap_or(0).max(0) as u32;
    let max_attempts = column::<Option<i32>>(&row, 10, read)?.map_or(u32::MAX, |n| n.max(1) as u32);
    let message = state.map(|state| {
        TaskMessage::new(
            i64::from(state),
            visible_at > now,
            out_of_attempts(message_attempts, max_attempts),
        )
    });
    Ok(Some(TaskRecord {
        id: id.clone(),
        queue: column(&row, 0, read)?,
        status: task_state(column(&row, 1, read)?)?.status(message),
        result: column(&row, 2, read)?,
        error: column(&row, 3, read)?,
        attempts: if state.is_some() {
            message_attempts
        } else {
            column::<i32>(&row, 4, read)?.max(0) as u32
        },
        created_at: column(&row, 5, read)?,
        finished_at: column(&row, 6, read)?,
        upstream_status: column::<Option<i32>>(&row, 11, read)?.and_then(|s| u16::try_from(s).ok()),
        lease_ends_in: message
            .filter(|m| m.leased)
            .map(|_| Duration::from_millis((visible_at - now).max(0) as u64)),
    }))
}

/// Finishes a task; see [`crate::store::TaskStore::finish_task`].
pub async fn finish(
    tx: &Transaction<'_>,
    id: &TaskId,
    receipt: Receipt,
    finish: &TaskFinish,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<TaskFinished> {
    // The task row is locked first, so finishes of one task (from any node) queue up.
    let stmt = tx
        .prepare_cached(
            "SELECT t.status, t.message_id, q.max_attempts, t.queue FROM tasks t
             LEFT JOIN queues q ON q.name = t.queue
             WHERE t.id = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)
             FOR UPDATE OF t",
        )
        .await
        .map_err(pg("read task"))?;
    let Some(row) = tx
        .query_opt(&stmt, &[&id.as_str(), &now])
        .await
        .map_err(pg("read task"))?
    else {
        return Ok(TaskFinished::NotFound);
    };
    let status: i16 = column(&row, 0, "read task")?;
    let message_id: i64 = column(&row, 1, "read task")?;
    if receipt.message_id != message_id {
        return Ok(TaskFinished::WrongMessage);
    }
    let Some(max_attempts) =
        column::<Option<i32>>(&row, 2, "read task")?.filter(|_| status == UNFINISHED)
    else {
        return Ok(TaskFinished::Stale);
    };
    // The receipt must hold a lease the message still counts: not a dead letter, and
    // not a lease that ended with no attempts left (the task reads as failed then).
    const HELD: &str = "id = $1 AND lease_token = $2 AND state <> 2
         AND NOT (state = 1 AND visible_at <= $3 AND attempts >= $4)";
    let (state, result, error) = match finish {
        TaskFinish::Retry { error, delay } => {
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE messages SET state = $6, visible_at = $5, lease_token = NULL
                     WHERE {HELD}
                     RETURNING attempts"
                ))
                .await
                .map_err(pg("retry task"))?;
            let visible_at = now.saturating_add(millis_of(*delay));
            let nacked = tx
                .query_opt(
                    &stmt,
                    &[
                        &message_id,
                        &receipt.lease_token,
                        &now,
                        &max_attempts,
                        &visible_at,
                        &MessageState::Waiting.code(),
                    ],
                )
                .await
                .map_err(pg("retry task"))?;
            let Some(nacked) = nacked else {
                return Ok(TaskFinished::Stale);
            };
            tx.execute(
                "UPDATE tasks SET error = $2 WHERE id = $1",
                &[&id.as_str(), error],
            )
            .await
            .map_err(pg("retry task"))?;
            let attempts = column::<i32>(&nacked, 0, "retry task")?.max(0) as u32;
            let max_attempts = max_attempts.max(0) as u32;
            let dead = exhausted(&[(message_id, attempts)], max_attempts);
            queues::bury(tx, &dead).await?;
            if !dead.is_empty() {
                // Out of attempts: failed now, though its dead letter stays for a redrive.
                end(tx, &dead, TaskEnding::OutOfAttempts, now, wake).await?;
            } else {
                wake.push(column(&row, 3, "read task")?);
            }
            return applied(tx, id, now).await;
        }
        TaskFinish::Succeeded { result, .. } => (TaskState::Succeeded, Some(result), None),
        TaskFinish::Failed { error } => (TaskState::Failed, None, Some(error)),
    };
    let stmt = tx
        .prepare_cached(&format!(
            "DELETE FROM messages WHERE {HELD} RETURNING attempts"
        ))
        .await
        .map_err(pg("finish task"))?;
    let Some(deleted) = tx
        .query_opt(
            &stmt,
            &[&message_id, &receipt.lease_token, &now, &max_attempts],
        )
        .await
        .map_err(pg("finish task"))?
    else {
        return Ok(TaskFinished::Stale);
    };
    let attempts: i32 = column(&deleted, 0, "finish task")?;
    let stmt = tx
        .prepare_cached(
            "UPDATE tasks SET status = $2, result = $3, error = $4, attempts = $5,
                 finished_at = $6, expires_at = $6 + keep_ms, upstream_status = $7
             WHERE id = $1",
        )
        .await
        .map_err(pg("finish task"))?;
    tx.execute(
        &stmt,
        &[
            &id.as_str(),
            &state.code(),
            &result,
            &error,
            &attempts,
            &now,
            &finish.upstream_status().map(i32::from),
        ],
    )
    .await
    .map_err(pg("finish task"))?;
    wake.push(task_key(id));
    applied(tx, id, now).await
}

/// The answer to a finish that was applied: the task as it is now.
async fn applied(tx: &Transaction<'_>, id: &TaskId, now: Millis) -> StoreResult<TaskFinished> {
    get(tx, id, now)
        .await?
        .map(TaskFinished::Applied)
        .ok_or_else(|| StoreError::Unavailable("the finished task vanished".into()))
}

/// Ends the unfinished tasks of messages that ended without a worker's answer,
/// given as `(message id, attempts)`; adds the ended tasks' wake-up keys to `wake`.
pub async fn end(
    tx: &Transaction<'_>,
    messages: &[(i64, u32)],
    ending: TaskEnding,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = messages.iter().map(|(id, _)| *id).collect();
    let attempts: Vec<i32> = messages
        .iter()
        .map(|(_, attempts)| (*attempts).min(i32::MAX as u32) as i32)
        .collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE tasks t SET status = $3::SMALLINT, attempts = u.attempts, finished_at = $4,
                 expires_at = $4 + t.keep_ms,
                 error = CASE WHEN $3::SMALLINT = $7::SMALLINT THEN COALESCE(t.error, $5) ELSE t.error END
             FROM UNNEST($1::BIGINT[], $2::INTEGER[]) AS u(id, attempts)
             WHERE t.message_id = u.id AND t.status = $6
             RETURNING t.id",
        )
        .await
        .map_err(pg("end tasks"))?;
    let rows = tx
        .query(
            &stmt,
            &[
                &ids,
                &attempts,
                &ending.state().code(),
                &now,
                &OUT_OF_ATTEMPTS,
                &UNFINISHED,
                &TaskState::Failed.code(),
            ],
        )
        .await
        .map_err(pg("end tasks"))?;
    for row in &rows {
        wake.push(task_key(column::<&str>(row, 0, "end tasks")?));
    }
    Ok(())
}

/// Ends the unfinished tasks of a queue whose messages are all being dropped.
pub async fn end_all_of_queue(
    tx: &Transaction<'_>,
    queue: &QueueName,
    now: Millis,
    wake: &mut Vec<String>,
) -> StoreResult<()> {
    let rows = tx
        .query(
            "UPDATE tasks t SET status = $3, finished_at = $2, expires_at = $2 + t.keep_ms,
                 attempts = COALESCE((SELECT m.attempts FROM messages m WHERE m.id = t.message_id), t.attempts)
             WHERE t.queue = $1 AND t.status = $4
             RETURNING t.id",
            &[
                &queue.as_str(),
                &now,
                &TaskState::Expired.code(),
                &UNFINISHED,
            ],
        )
        .await
        .map_err(pg("end tasks of a queue"))?;
    for row in &rows {
        wake.push(task_key(column::<&str>(row, 0, "end tasks of a queue")?));
    }
    Ok(())
}

/// Reopens the tasks of redriven dead letters: they wait for a worker again.
pub async fn revive(tx: &Transaction<'_>, message_ids: &[i64]) -> StoreResult<()> {
    if message_ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "UPDATE tasks SET status = $2, finished_at = NULL, expires_at = NULL
         WHERE message_id = ANY($1) AND status = $3",
        &[&message_ids, &UNFINISHED, &TaskState::Failed.code()],
    )
    .await
    .map_err(pg("revive tasks"))?;
    Ok(())
}

/// Drops tasks past their time; returns how many.
pub async fn sweep(tx: &Transaction<'_>, now: Millis) -> StoreResult<u64> {
    tx.execute("DELETE FROM tasks WHERE expires_at <= $1", &[&now])
        .await
        .map_err(pg("drop finished tasks"))
}

/// Counts of a queue's tasks by status, as seen at `now`.
pub async fn counts(
    tx: &Transaction<'_>,
    queue: &QueueName,
    max_attempts: u32,
    now: Millis,
) -> StoreResult<TaskCounts> {
    let stmt = tx
        .prepare_cached(
            "SELECT t.status, m.state, m.visible_at > $2, m.attempts >= $3, COUNT(*)
             FROM tasks t LEFT JOIN messages m ON m.id = t.message_id AND t.status = $4
             WHERE t.queue = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)
             GROUP BY 1, 2, 3, 4",
        )
        .await
        .map_err(pg("count tasks"))?;
    let rows = tx
        .query(
            &stmt,
            &[&queue.as_str(), &now, &(max_attempts as i32), &UNFINISHED],
        )
        .await
        .map_err(pg("count tasks"))?;
    let mut counts = TaskCounts::default();
    for row in rows {
        let read = "count tasks";
        let state: Option<i16> = column(&row, 1, read)?;
        let lease_live = column::<Option<bool>>(&row, 2, read)?.unwrap_or(false);
        let exhausted = column::<Option<bool>>(&row, 3, read)?.unwrap_or(false);
        let message = state.map(|state| TaskMessage::new(i64::from(state), lease_live, exhausted));
        let status = task_state(column(&row, 0, read)?)?.status(message);
        counts.add(status, column::<i64>(&row, 4, read)?.max(0) as u64);
    }
    Ok(counts)
}

//! Gathers concurrent writes into shared statements: group commit at Hopper's
//! level. A few workers take every request waiting at that moment, write them
//! together, commit once, and answer each request after the commit. On
//! PostgreSQL, pushes (without idempotency keys) and stream appends go through
//! it; on Redis, those pushes do (one script per queue and batch).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::domain::{NewEvent, PushRequest, StoreError, StoreResult};

/// Requests in one batch at most.
const MAX_BATCH: usize = 512;
/// Bytes of bodies in one batch at most (one request always goes, whatever its
/// size): keeps a statement's array parameters far below PostgreSQL's 1 GB limit.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Requests waiting for a worker before callers wait too.
const QUEUE_DEPTH: usize = 8192;

struct Pending<R, T> {
    request: R,
    reply: oneshot::Sender<StoreResult<T>>,
}

/// Handle to the batching workers of one kind of request `R` answered with `T`.
pub struct Batcher<R, T> {
    sender: mpsc::Sender<Pending<R, T>>,
}

/// A request's size, for the batch byte budget.
pub trait Weigh {
    /// Bytes this request adds to a statement.
    fn weight(&self) -> usize;
}

impl Weigh for PushRequest {
    fn weight(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.body.len() + m.meta.as_ref().map_or(0, String::len))
            .sum()
    }
}

impl Weigh for NewEvent {
    fn weight(&self) -> usize {
        self.body.len() + self.name.len()
    }
}

impl<R: Weigh + Send + 'static, T: Send + 'static> Batcher<R, T> {
    /// Starts `workers` workers (concurrent batches: one gathers while others wait
    /// on their commit); `write` stores one batch and returns each request's outcome
    /// in order, or one error for the whole batch.
    pub fn start<F, Fut>(workers: usize, write: F) -> Self
    where
        F: Fn(Arc<Vec<R>>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<StoreResult<T>>>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(receiver.clone(), write.clone()));
        }
        Batcher { sender }
    }

    /// Writes `request` in the next batch; answers once that batch has committed.
    pub async fn submit(&self, request: R) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("batch writer stopped".into()))?
    }
}

async fn work<R: Weigh, T, F, Fut>(receiver: Arc<Mutex<mpsc::Receiver<Pending<R, T>>>>, write: F)
where
    F: Fn(Arc<Vec<R>>) -> Fut,
    Fut: Future<Output = StoreResult<Vec<StoreResult<T>>>>,
{
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut bytes = first.request.weight();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match receiver.try_recv() {
                    Ok(pending) => {
                        bytes += pending.request.weight();
                        batch.push(pending);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let (requests, replies): (Vec<R>, Vec<_>) =
            batch.into_iter().map(|p| (p.request, p.reply)).unzip();
        let (started, writes) = (std::time::Instant::now(), requests.len());
        let written = write(Arc::new(requests)).await;
        if written.is_ok() {
            crate::telemetry::committed_batch(writes);
            crate::telemetry::committed_in(started.elapsed());
        }
        match written {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(replicate(&error)));
                }
            }
        }
    }
}

/// One batch's failure, told to each of its requests.
pub fn replicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(cause) => StoreError::Unavailable(cause.clone()),
        StoreError::OutcomeUnknown(cause) => StoreError::OutcomeUnknown(cause.clone()),
        StoreError::QueueNotFound(name) => StoreError::QueueNotFound(name.clone()),
        other => StoreError::Backend {
            context: "batch write",
            source: other.to_string().into(),
        },
    }
}

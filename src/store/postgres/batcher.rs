//! Gathers concurrent pushes (those without idempotency keys) into shared
//! statements: group commit at Hopper's level. A few workers take every push
//! waiting at that moment, insert them with one self-committing statement, and
//! answer each request after the commit.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{queues, Announcer, DbClock};
use crate::domain::clock::Millis;
use crate::store::{MessageId, PushRequest, StoreError, StoreResult};

/// Pushes in one transaction at most; bounds one statement's size.
const MAX_BATCH: usize = 512;
/// Concurrent batches: one gathers while others wait on their commit.
const WORKERS: usize = 8;
/// Pushes waiting for a worker before callers wait too.
const QUEUE_DEPTH: usize = 8192;

struct PendingPush {
    request: PushRequest,
    reply: oneshot::Sender<StoreResult<Vec<MessageId>>>,
}

/// Handle to the batching workers.
pub struct PushBatcher {
    sender: mpsc::Sender<PendingPush>,
}

impl PushBatcher {
    /// Starts the workers on `pool`.
    pub fn start(pool: Pool, announcer: Announcer, clock: DbClock) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        let known = Arc::new(std::sync::Mutex::default());
        for _ in 0..WORKERS {
            tokio::spawn(work(
                pool.clone(),
                receiver.clone(),
                known.clone(),
                announcer.clone(),
                clock.clone(),
            ));
        }
        PushBatcher { sender }
    }

    /// Pushes `request` in the next batch; answers once that batch has committed.
    pub async fn push(&self, request: PushRequest) -> StoreResult<Vec<MessageId>> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(PendingPush { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("push batcher stopped".into()))?
    }
}

/// Queues known to exist, shared by the workers.
type KnownQueues = Arc<queues::KnownQueues>;

async fn work(
    pool: Pool,
    receiver: Arc<Mutex<mpsc::Receiver<PendingPush>>>,
    known: KnownQueues,
    announcer: Announcer,
    clock: DbClock,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(push) => batch.push(push),
                    Err(_) => break,
                }
            }
            batch
        };
        let requests: Vec<&PushRequest> = batch.iter().map(|p| &p.request).collect();
        match insert(&pool, &requests, &known, clock.now()).await {
            Ok(outcomes) => {
                let mut announced = std::collections::HashSet::new();
                for (push, outcome) in batch.into_iter().zip(outcomes) {
                    if outcome.is_ok() && announced.insert(push.request.queue.clone()) {
                        announcer.announce(&push.request.queue);
                    }
                    let _ = push.reply.send(outcome);
                }
            }
            Err(error) => {
                for push in batch {
                    let _ = push.reply.send(Err(replicate(&error)));
                }
            }
        }
    }
}

async fn insert(
    pool: &Pool,
    requests: &[&PushRequest],
    known: &KnownQueues,
    now: Millis,
) -> StoreResult<Vec<StoreResult<Vec<MessageId>>>> {
    let client = pool
        .get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no PostgreSQL connection: {e}")))?;
    queues::push_many(&client, requests, known, now).await
}

/// One batch's failure, told to each of its requests.
fn replicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(cause) => StoreError::Unavailable(cause.clone()),
        StoreError::QueueNotFound(name) => StoreError::QueueNotFound(name.clone()),
        other => StoreError::Backend {
            context: "push",
            source: other.to_string().into(),
        },
    }
}

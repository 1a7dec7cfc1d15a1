//! The queue service: validates requests, applies defaults, and runs the long-poll
//! of `receive` (woken by commits through [`super::Wakeups`], never by polling).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::access::Principal;
use super::messages::{
    Message, NewMessage, PushOutcome, PushRequest, Receipt, Settled, Settlement,
};
use super::settings::{check_delay, check_lease};
use super::storage::{Store, StoreError};
use super::tasks::TaskCounts;
use super::{Action, DomainError, QueueName, QueueSettings, ResourceKind, SettingsPatch, Waiters};

/// Most messages one pop, receive, batch or settle may carry.
pub const MAX_COUNT: u32 = 1000;
/// Most messages one peek shows: a look for a person or a script, not a way to drain
/// a queue without leases.
pub const MAX_PEEK: u32 = 100;
/// Longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Checks a message count against 1..=[`MAX_COUNT`].
pub fn check_count(what: &str, count: u32) -> Result<u32, DomainError> {
    check_up_to(what, count, MAX_COUNT)
}

/// Checks a message count against 1..=`max`.
fn check_up_to(what: &str, count: u32, max: u32) -> Result<u32, DomainError> {
    if !(1..=max).contains(&count) {
        return Err(DomainError::invalid(format!(
            "{what} must be between 1 and {max}"
        )));
    }
    Ok(count)
}

/// Longest message group name, as SQS's `MessageGroupId`.
pub const MAX_GROUP_LEN: usize = 128;

/// Checks a message group: 1 to [`MAX_GROUP_LEN`] printable ASCII characters
/// (SQS's alphabet for `MessageGroupId`).
pub fn check_group(group: &str) -> Result<(), DomainError> {
    if group.is_empty()
        || group.len() > MAX_GROUP_LEN
        || !group.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(DomainError::invalid(format!(
            "a message group must be 1 to {MAX_GROUP_LEN} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// Checks an `Idempotency-Key` against 1..=[`MAX_IDEMPOTENCY_KEY`] bytes.
pub fn check_idempotency_key(key: Option<String>) -> Result<Option<String>, DomainError> {
    match key {
        Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY => {
            Err(DomainError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
            )))
        }
        key => Ok(key),
    }
}

/// Message counts of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready to be handed out now.
    pub ready: u64,
    /// Handed out under a lease that has not expired.
    pub leased: u64,
    /// Pushed with a delay, or nacked with one, not yet ready.
    pub delayed: u64,
    /// Out of attempts.
    pub dead: u64,
}

/// A queue with its settings and counts.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    /// The queue.
    pub name: QueueName,
    /// Its settings.
    pub settings: QueueSettings,
    /// Its message counts.
    pub counts: QueueCounts,
    /// Its tasks' counts.
    pub tasks: TaskCounts,
}

/// What a settings write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The queue was created.
    Created,
    /// The queue existed and was updated.
    Updated,
}

/// What a receive asks for, before defaults.
#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    /// At most this many messages.
    pub count: u32,
    /// Lease length; the queue's setting when `None`.
    pub lease: Option<Duration>,
    /// How long to wait for a message when none is ready; the queue's `wait` when `None`.
    pub wait: Option<Duration>,
}

/// Queue operations with their rules; cheap to clone.
#[derive(Clone)]
pub struct QueueService {
    store: Arc<dyn Store>,
    defaults: QueueSettings,
    shutdown: CancellationToken,
    waiters: Waiters,
}

impl QueueService {
    /// A service over `store`; queues created implicitly get `defaults`; waits end at `shutdown`.
    pub fn new(
        store: Arc<dyn Store>,
        defaults: QueueSettings,
        shutdown: CancellationToken,
    ) -> Self {
        QueueService {
            store,
            defaults,
            shutdown,
            waiters: Waiters::default(),
        }
    }

    /// The same service, counting its long-polls in `waiters` (shared with other services).
    pub fn with_waiters(self, waiters: Waiters) -> Self {
        QueueService { waiters, ..self }
    }

    /// Pushes messages (all or nothing), after `delay` (the queue's when `None`),
    /// deduplicated by `idempotency_key`.
    pub async fn push(
        &self,
        caller: &Principal,
        queue: QueueName,
        messages: Vec<NewMessage>,
        delay: Option<Duration>,
        idempotency_key: Option<String>,
    ) -> Result<PushOutcome, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Produce)?;
        let bodies = messages;
        if bodies.is_empty() {
            return Err(DomainError::invalid(
                "messages must hold at least one message",
            ));
        }
        if bodies.len() > MAX_COUNT as usize {
            return Err(DomainError::invalid(format!(
                "messages must hold at most {MAX_COUNT} messages"
            )));
        }
        for group in bodies.iter().filter_map(|m| m.group.as_deref()) {
            check_group(group)?;
        }
        let request = PushRequest {
            queue,
            messages: bodies,
            delay: delay.map(check_delay).transpose()?,
            idempotency_key: check_idempotency_key(idempotency_key)?,
            defaults: self.defaults.clone(),
        };
        let queue_name = request.queue.clone();
        let outcome = self.store.push(request).await?;
        if let PushOutcome::Created(ids) = &outcome {
            crate::telemetry::pushed(queue_name.as_str(), ids.len());
        }
        Ok(outcome)
    }

    /// Removes and returns up to `count` of the oldest ready messages.
    pub async fn pop(
        &self,
        caller: &Principal,
        queue: &QueueName,
        count: u32,
    ) -> Result<Vec<Message>, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Consume)?;
        let count = check_count("count", count)?;
        Ok(self.store.pop(queue, count).await?)
    }

    /// Leases up to `count` messages, waiting up to `wait` (capped at the waiters'
    /// longest poll) while none is ready.
    pub async fn receive(
        &self,
        caller: &Principal,
        queue: &QueueName,
        request: ReceiveRequest,
    ) -> Result<Vec<Message>, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Consume)?;
        let count = check_count("count", request.count)?;
        let lease = request.lease.map(check_lease).transpose()?;
        let started = Instant::now();
        let mut deadline = started
            + request
                .wait
                .unwrap_or_default()
                .min(self.waiters.max_poll());
        let watch = self.store.wakeups().watch(queue.as_str());
        let mut slot = None;
        loop {
            // Armed before the attempt, so a push that commits between the attempt and
            // the wait still wakes this request.
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let received = match self.store.receive(queue, count, lease).await {
                Ok(received) => received,
                Err(error) => {
                    // E.g. the queue was deleted: the next waiter learns it too.
                    watch.hand_on();
                    return Err(error.into());
                }
            };
            if !received.messages.is_empty() {
                watch.hand_on();
                return Ok(received.messages);
            }
            if request.wait.is_none() && slot.is_none() {
                deadline = started + received.queue_wait.min(self.waiters.max_poll());
            }
            let now = Instant::now();
            if now >= deadline || self.shutdown.is_cancelled() {
                return Ok(received.messages);
            }
            if slot.is_none() {
                slot = Some(self.waiters.try_wait(deadline - now)?);
            }
            let wake_at = received
                .next_ready_in
                // One extra millisecond: readiness is `visible_at <= now` in whole milliseconds.
                .map(|ahead| now + ahead + Duration::from_millis(1))
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Acks, nacks or extends the leases of `receipts`.
    pub async fn settle(
        &self,
        caller: &Principal,
        queue: &QueueName,
        receipts: &[String],
        settlement: Settlement,
    ) -> Result<Settled, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Consume)?;
        if receipts.is_empty() || receipts.len() > MAX_COUNT as usize {
            return Err(DomainError::invalid(format!(
                "receipts must hold 1 to {MAX_COUNT} receipts"
            )));
        }
        let settlement = match settlement {
            Settlement::Nack { delay } => Settlement::Nack {
                delay: check_delay(delay)?,
            },
            Settlement::Extend { lease } => Settlement::Extend {
                lease: check_lease(lease)?,
            },
            Settlement::Ack => Settlement::Ack,
        };
        let receipts = receipts
            .iter()
            .map(|r| Receipt::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let settled = self.store.settle(queue, &receipts, settlement).await?;
        if matches!(settlement, Settlement::Ack) {
            crate::telemetry::acked(queue.as_str(), settled.applied.len() as u64);
        }
        Ok(settled)
    }

    /// A queue with its counts; any grant on it shows it.
    pub async fn info(
        &self,
        caller: &Principal,
        queue: &QueueName,
    ) -> Result<QueueInfo, DomainError> {
        caller.authorize_any(ResourceKind::Queue, queue.as_str())?;
        Ok(self.store.queue_info(queue).await?)
    }

    /// Up to `limit` (1..=[`MAX_PEEK`]) of the oldest ready messages, as a receive
    /// would hand them out next, but left as they are: not leased, attempts unchanged.
    /// Needs `consume`, as a receive does: it shows the bodies.
    pub async fn peek(
        &self,
        caller: &Principal,
        queue: &QueueName,
        limit: u32,
    ) -> Result<Vec<Message>, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Consume)?;
        let limit = check_up_to("limit", limit, MAX_PEEK)?;
        Ok(self.store.peek(queue, limit).await?)
    }

    /// A queue's settings; any grant on it shows them.
    pub async fn settings(
        &self,
        caller: &Principal,
        queue: &QueueName,
    ) -> Result<QueueSettings, DomainError> {
        caller.authorize_any(ResourceKind::Queue, queue.as_str())?;
        Ok(self.store.settings(queue).await?)
    }

    /// Every queue the caller holds a grant on, with its settings but no counts.
    pub async fn list_settings(
        &self,
        caller: &Principal,
    ) -> Result<Vec<(QueueName, QueueSettings)>, DomainError> {
        let mut queues = self.store.all_settings().await?;
        queues.retain(|(name, _)| {
            caller
                .authorize_any(ResourceKind::Queue, name.as_str())
                .is_ok()
        });
        Ok(queues)
    }

    /// Every queue the caller holds a grant on, with its counts.
    pub async fn list(&self, caller: &Principal) -> Result<Vec<QueueInfo>, DomainError> {
        let mut queues = self.store.list_queues().await?;
        queues.retain(|info| {
            caller
                .authorize_any(ResourceKind::Queue, info.name.as_str())
                .is_ok()
        });
        Ok(queues)
    }

    /// Applies a settings change, creating the queue with defaults plus the change if needed.
    pub async fn configure(
        &self,
        caller: &Principal,
        queue: &QueueName,
        patch: &SettingsPatch,
    ) -> Result<(Upsert, QueueInfo), DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Manage)?;
        patch.validate()?;
        let upsert = self
            .store
            .update_settings(queue, patch, &self.defaults)
            .await?;
        Ok((upsert, self.store.queue_info(queue).await?))
    }

    /// Deletes the queue and its messages; returns how many messages went.
    pub async fn delete(&self, caller: &Principal, queue: &QueueName) -> Result<u64, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Manage)?;
        Ok(self.store.delete_queue(queue).await?)
    }

    /// Deletes every message of the queue; returns how many.
    pub async fn purge(&self, caller: &Principal, queue: &QueueName) -> Result<u64, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Manage)?;
        Ok(self.store.purge(queue).await?)
    }

    /// Up to `limit` dead letters, oldest first.
    pub async fn dead_letters(
        &self,
        caller: &Principal,
        queue: &QueueName,
        limit: u32,
    ) -> Result<Vec<Message>, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Consume)?;
        let limit = check_count("limit", limit)?;
        Ok(self.store.dead_letters(queue, limit).await?)
    }

    /// Makes up to `limit` dead letters ready again.
    pub async fn redrive(
        &self,
        caller: &Principal,
        queue: &QueueName,
        limit: u32,
    ) -> Result<u64, DomainError> {
        caller.authorize(ResourceKind::Queue, queue.as_str(), Action::Manage)?;
        let limit = check_count("count", limit)?;
        Ok(self.store.redrive(queue, limit).await?)
    }
}

/// Dead letters moved by one look at one queue, at most: the rest wait for the next.
const DEAD_LETTERS_PER_MOVE: u32 = 100;

/// Moves the dead letters of every queue that names a `dead_letter_queue` into that
/// queue, where they are ready again with no attempts counted; returns how many
/// moved. Each is pushed with an idempotency key naming its source and id before it
/// is removed from the source, so a crash between the two moves it once (within the
/// target's idempotency window) and loses nothing. A target that does not exist
/// leaves them where they are.
pub async fn move_dead_letters(store: &dyn Store) -> Result<u64, StoreError> {
    let mut moved = 0;
    for (source, settings) in store.all_settings().await? {
        let Some(target) = settings.dead_letter_queue.filter(|t| *t != source) else {
            continue;
        };
        let dead = store.dead_letters(&source, DEAD_LETTERS_PER_MOVE).await?;
        if dead.is_empty() {
            continue;
        }
        let target_settings = match store.settings(&target).await {
            Ok(settings) => settings,
            Err(StoreError::QueueNotFound(_)) => {
                tracing::warn!(queue = %source, dead_letter_queue = %target, "the dead-letter queue does not exist; dead letters stay");
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut ids = Vec::with_capacity(dead.len());
        for message in dead {
            let request = PushRequest {
                queue: target.clone(),
                messages: vec![NewMessage {
                    body: message.body,
                    group: message.group,
                    meta: message.meta,
                }],
                delay: Some(Duration::ZERO),
                idempotency_key: Some(format!("dead-letter:{source}:{}", message.id)),
                defaults: target_settings.clone(),
            };
            store.push(request).await?;
            ids.push(message.id);
        }
        moved += store.remove_dead(&source, &ids).await?;
    }
    Ok(moved)
}

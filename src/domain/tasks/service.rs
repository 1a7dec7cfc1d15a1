//! The task service: creates tasks, waits for their results (woken by the commit
//! that finishes them, here or on another node through the store, never by
//! polling) and finishes them for workers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{NewTask, TaskCreated, TaskFinish, TaskFinished, TaskId, TaskRecord};
use crate::domain::access::Principal;
use crate::domain::messages::{PushRequest, Receipt};
use crate::domain::settings::check_delay;
use crate::domain::storage::Store;
use crate::domain::waiters::WaitSlot;
use crate::domain::wakeups::{task_key, Watch};
use crate::domain::{Action, DomainError, QueueName, QueueSettings, ResourceKind, Waiters};

/// How long callers wait for tasks and how long finished ones are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSettings {
    /// Wait when the request names none.
    pub default_wait: Duration,
    /// Longest wait; a longer `Prefer: wait` is capped to it.
    pub max_wait: Duration,
    /// How long a finished task is kept before its id gives 404.
    pub retention: Duration,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings {
            default_wait: Duration::from_secs(5),
            max_wait: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Task operations with their rules; cheap to clone.
#[derive(Clone)]
pub struct TaskService {
    store: Arc<dyn Store>,
    queue_defaults: QueueSettings,
    settings: TaskSettings,
    shutdown: CancellationToken,
    waiters: Waiters,
}

fn not_found(id: &TaskId) -> DomainError {
    DomainError::NotFound(format!("task {id}"))
}

impl TaskService {
    /// A service over `store`; task queues created implicitly get `queue_defaults`;
    /// waits end at `shutdown`.
    pub fn new(
        store: Arc<dyn Store>,
        queue_defaults: QueueSettings,
        settings: TaskSettings,
        shutdown: CancellationToken,
    ) -> Self {
        TaskService {
            store,
            queue_defaults,
            settings,
            shutdown,
            waiters: Waiters::default(),
        }
    }

    /// The same service, counting its waits in `waiters` (shared with other services).
    pub fn with_waiters(self, waiters: Waiters) -> Self {
        TaskService { waiters, ..self }
    }

    /// The wait a request gets: its own capped at the maximum, else the default.
    pub fn wait_for(&self, requested: Option<Duration>) -> Duration {
        requested
            .unwrap_or(self.settings.default_wait)
            .min(self.settings.max_wait)
    }

    /// Creates a task with `payload` (JSON text) on `queue`, creating the queue if
    /// needed; with an idempotency key seen in the queue's window, the first task
    /// instead. Then waits up to `wait` for it to finish.
    pub async fn create(
        &self,
        caller: &Principal,
        queue: QueueName,
        payload: &str,
        idempotency_key: Option<String>,
        wait: Duration,
    ) -> Result<TaskRecord, DomainError> {
        caller.authorize(ResourceKind::Task, queue.as_str(), Action::Produce)?;
        // Taken before the task exists: refused after its commit, the caller's retry
        // would create it twice.
        let slot = match wait.min(self.settings.max_wait) {
            wait if wait.is_zero() => None,
            wait => Some(self.waiters.try_wait(wait)?),
        };
        let id = TaskId::generate();
        // Armed before the create commits: a worker may finish the task before this
        // request is polled again.
        let watch = self.store.wakeups().watch(&task_key(&id));
        let finished = watch.notify().notified();
        tokio::pin!(finished);
        finished.as_mut().enable();
        // The id is a UUID and the payload validated JSON, so this is JSON too.
        let body = format!(r#"{{"task_id":"{id}","payload":{payload}}}"#);
        let message = PushRequest {
            queue,
            messages: vec![body.into()],
            delay: Some(Duration::ZERO),
            idempotency_key: crate::domain::queues::check_idempotency_key(idempotency_key)?,
            defaults: self.queue_defaults.clone(),
        };
        let queue_name = message.queue.clone();
        let created = self
            .store
            .create_task(NewTask {
                id,
                message,
                keep_finished: self.settings.retention,
            })
            .await?;
        match created {
            TaskCreated::New(id) => {
                crate::telemetry::pushed(queue_name.as_str(), 1);
                self.wait_watching(&id, wait, &watch, Some(finished), slot)
                    .await
            }
            TaskCreated::Existing(id) => {
                let watch = self.store.wakeups().watch(&task_key(&id));
                self.wait_watching(&id, wait, &watch, None, slot).await
            }
            TaskCreated::KeyTaken => Err(DomainError::Conflict(
                "Idempotency-Key was used by a message that is not a task".into(),
            )),
        }
    }

    /// The task now; any grant on its queue shows it.
    pub async fn get(&self, caller: &Principal, id: &TaskId) -> Result<TaskRecord, DomainError> {
        let task = self.task(id).await?;
        caller.authorize_any(ResourceKind::Task, &task.queue)?;
        Ok(task)
    }

    /// The task once it is finished, or after `wait` (capped), whichever comes
    /// first; any grant on its queue shows it.
    pub async fn wait(
        &self,
        caller: &Principal,
        id: &TaskId,
        wait: Duration,
    ) -> Result<TaskRecord, DomainError> {
        let task = self.get(caller, id).await?;
        if task.status.is_final() || wait.is_zero() {
            return Ok(task);
        }
        let watch = self.store.wakeups().watch(&task_key(id));
        self.wait_watching(id, wait, &watch, None, None).await
    }

    async fn task(&self, id: &TaskId) -> Result<TaskRecord, DomainError> {
        self.store.task(id).await?.ok_or_else(|| not_found(id))
    }

    /// [`Self::wait`] on a registered `watch`; with `armed`, a notification enabled
    /// before the task was created, the first read is skipped: the task was unfinished.
    /// `slot`: the waiter's place when the caller took it already (as `armed` implies).
    async fn wait_watching(
        &self,
        id: &TaskId,
        wait: Duration,
        watch: &Watch,
        mut armed: Option<Pin<&mut Notified<'_>>>,
        mut slot: Option<WaitSlot>,
    ) -> Result<TaskRecord, DomainError> {
        let deadline = Instant::now() + wait.min(self.settings.max_wait);
        loop {
            if let Some(finished) = armed.take() {
                tokio::select! {
                    _ = finished => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = self.shutdown.cancelled() => {}
                }
                continue;
            }
            // Armed before the read, so a finish committed between the read and the
            // wait still wakes this request.
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let task = self.task(id).await?;
            let now = Instant::now();
            if task.status.is_final() || now >= deadline || self.shutdown.is_cancelled() {
                return Ok(task);
            }
            if slot.is_none() {
                slot = Some(self.waiters.try_wait(deadline - now)?);
            }
            // A lease that ends may fail the task (out of attempts) with no commit to
            // signal it: look again then.
            let wake_at = task
                .lease_ends_in
                .map(|ahead| now + ahead + Duration::from_millis(1))
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Finishes the task if `receipt` holds its message's lease; returns the task after.
    pub async fn finish(
        &self,
        caller: &Principal,
        id: &TaskId,
        receipt: &str,
        finish: TaskFinish,
    ) -> Result<TaskRecord, DomainError> {
        // A worker allowed on every task queue needs no lookup of this task's queue.
        if !caller.may_on_every(ResourceKind::Task, Action::Consume) {
            let task = self.task(id).await?;
            caller.authorize(ResourceKind::Task, &task.queue, Action::Consume)?;
        }
        let receipt = Receipt::parse(receipt)?;
        if let TaskFinish::Retry { delay, .. } = &finish {
            check_delay(*delay)?;
        }
        let acks = !matches!(finish, TaskFinish::Retry { .. });
        match self.store.finish_task(id, receipt, finish).await? {
            TaskFinished::Applied(task) => {
                if acks {
                    crate::telemetry::acked(&task.queue, 1);
                }
                Ok(task)
            }
            TaskFinished::NotFound => Err(not_found(id)),
            // A well-formed receipt that does not go with this task: a conflict with
            // the task's state, as a stale one is, not a malformed request.
            TaskFinished::WrongMessage => Err(DomainError::Conflict(format!(
                "the receipt is not for task {id}'s message"
            ))),
            TaskFinished::Stale => Err(DomainError::Conflict(format!(
                "the receipt no longer holds the lease of task {id}, or the task is finished"
            ))),
        }
    }
}

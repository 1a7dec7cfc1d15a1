//! Queues and tasks on Redis: each operation one script of `lua/` over the queue's
//! keys. A task lives in its queue's keys, so creating or finishing it settles its
//! message in the same step; the one key outside them says which queue a task id is on.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use serde::Deserialize;

use super::super::batcher::{self, Batcher};
use super::reply::{Fields, Status};
use super::{Core, RedisStore};
use crate::domain::clock::millis_of;
use crate::domain::delivery::DeliverySettings;
use crate::domain::{
    Message, MessageId, NewMessage, NewTask, PushOutcome, PushRequest, QueueCounts, QueueInfo,
    QueueName, QueueSettings, QueueStore, Receipt, Received, SettingsPatch, Settled, Settlement,
    StoreError, StoreResult, TaskCounts, TaskCreated, TaskFinish, TaskFinished, TaskId,
    TaskMessage, TaskRecord, TaskState, TaskStatus, TaskStore, Upsert,
};

static PUSH: LazyLock<Script> = lua!("queue.lua", "push.lua");
static PUSH_MANY: LazyLock<Script> = lua!("queue.lua", "push_many.lua");
static RECEIVE: LazyLock<Script> = lua!("queue.lua", "receive.lua");
static POP: LazyLock<Script> = lua!("queue.lua", "pop.lua");
static SETTLE: LazyLock<Script> = lua!("queue.lua", "settle.lua");
static PEEK: LazyLock<Script> = lua!("queue.lua", "peek.lua");
static INFO: LazyLock<Script> = lua!("queue.lua", "info.lua");
static CONFIGURE: LazyLock<Script> = lua!("queue.lua", "configure.lua");
static CLEAR: LazyLock<Script> = lua!("queue.lua", "clear.lua");
static DEAD: LazyLock<Script> = lua!("queue.lua", "dead.lua");
static REDRIVE: LazyLock<Script> = lua!("queue.lua", "redrive.lua");
static REMOVE_DEAD: LazyLock<Script> = lua!("queue.lua", "remove_dead.lua");
static SWEEP_MESSAGES: LazyLock<Script> = lua!("queue.lua", "sweep_messages.lua");
static SWEEP_IDEMPOTENCY: LazyLock<Script> = lua!("queue.lua", "sweep_idempotency.lua");
static SWEEP_TASKS: LazyLock<Script> = lua!("queue.lua", "sweep_tasks.lua");
static TASK_GET: LazyLock<Script> = lua!("queue.lua", "task_get.lua");
static TASK_FINISH: LazyLock<Script> = lua!("queue.lua", "task_finish.lua");

/// Plain pushes, gathered into batches: a script per queue and batch spares Redis
/// and the connection most of the cost of one script per push.
pub(super) fn push_batcher(core: Arc<Core>) -> Batcher<PushRequest, Vec<MessageId>> {
    // A few batches in flight: one gathers while others wait on Redis.
    Batcher::start(4, move |requests: Arc<Vec<PushRequest>>| {
        let core = core.clone();
        async move { core.push_batch(&requests).await }
    })
}

/// A duration as the scripts take it: whole milliseconds, as text.
fn ms(duration: Duration) -> String {
    millis_of(duration).to_string()
}

/// A push's delay as the scripts take it: '' for the queue's delay setting, which
/// only the script knows (the push may create the queue).
fn delay_arg(delay: Option<Duration>) -> String {
    delay.map(ms).unwrap_or_default()
}

/// The settings a queue is created with, as the scripts take them (see `lua/push.lua`).
fn defaults_args(settings: &QueueSettings) -> StoreResult<[String; 6]> {
    Ok([
        ms(settings.lease),
        settings.max_attempts.to_string(),
        settings.retention.map(ms).unwrap_or_default(),
        ms(settings.idempotency_window),
        delivery_text(settings.delivery.as_ref())?,
        settings.options_json().unwrap_or_default(),
    ])
}

/// A push's messages as the scripts take them (see `add_pushed` in `lua/queue.lua`):
/// their shape, then their fields. Plain messages, the most pushed, pass their
/// bodies alone.
fn pushed_messages(messages: &[NewMessage]) -> (&'static str, Vec<Cow<'_, [u8]>>) {
    if messages
        .iter()
        .all(|m| m.group.is_none() && m.meta.is_none())
    {
        let bodies = messages
            .iter()
            .map(|m| Cow::Borrowed(m.body.as_bytes()))
            .collect();
        return ("p", bodies);
    }
    let mut fields = Vec::with_capacity(messages.len() * 3);
    for message in messages {
        fields.push(Cow::Borrowed(message.body.as_bytes()));
        fields.push(Cow::Borrowed(
            message.group.as_deref().unwrap_or_default().as_bytes(),
        ));
        // A leading '.' marks metadata that is there, so an empty one is kept.
        fields.push(match &message.meta {
            Some(meta) => Cow::Owned(format!(".{meta}").into_bytes()),
            None => Cow::Borrowed(&b""[..]),
        });
    }
    ("x", fields)
}

fn delivery_text(delivery: Option<&DeliverySettings>) -> StoreResult<String> {
    delivery
        .map(serde_json::to_string)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| StoreError::backend("encode a delivery setting", e))
}

/// A stored setting that cannot be read: an error, never a default, so that the
/// next change does not write the default over it.
fn unreadable(what: &str) -> StoreError {
    StoreError::backend(
        "read queue settings",
        std::io::Error::other(format!("the stored {what} is unreadable")),
    )
}

/// Settings from the queue's `cfg` hash, as `HGETALL` lists it.
fn settings_from(fields: Vec<redis::Value>) -> StoreResult<QueueSettings> {
    let mut settings = QueueSettings::default();
    let (mut lease, mut max) = (false, false);
    let mut options = None;
    let mut pairs = Fields::new("read queue settings", fields);
    while !pairs.is_empty() {
        let (name, value) = (pairs.text()?, pairs.text()?);
        let millis = || {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| unreadable(&name))
        };
        match name.as_str() {
            "lease" => (settings.lease, lease) = (millis()?, true),
            "max" => {
                settings.max_attempts = value.parse().map_err(|_| unreadable("max_attempts"))?;
                max = true;
            }
            "ret" => settings.retention = Some(millis()?),
            "idem" => settings.idempotency_window = millis()?,
            "delivery" => {
                settings.delivery = Some(
                    serde_json::from_str(&value)
                        .map_err(|e| StoreError::backend("read a stored delivery setting", e))?,
                )
            }
            "opts" => options = Some(value),
            _ => {}
        }
    }
    if !(lease && max) {
        return Err(unreadable("lease or max_attempts"));
    }
    settings
        .with_options_json(options.as_deref())
        .map_err(|e| StoreError::backend("read stored queue options", e))
}

/// `count` messages, each as `message()` in `lua/queue.lua` gives it; their last
/// delivery errors are kept only for `LastErrors::Shown` (dead letters).
fn messages(fields: &mut Fields, count: u64, errors: LastErrors) -> StoreResult<Vec<Message>> {
    (0..count)
        .map(|_| {
            let id = fields.int()?;
            let body = fields.text()?;
            let attempts = u32::try_from(fields.int()?).unwrap_or(u32::MAX);
            let enqueued_at = fields.int()?;
            // The script has committed by now: failing here would lose a popped
            // message, so an unreadable label is reported and the message handed out plain.
            let task = fields.optional_text()?.and_then(|raw| {
                TaskId::parse(&raw)
                    .inspect_err(|error| {
                        tracing::error!(%error, message = id, "redis: a message's task id is unreadable")
                    })
                    .ok()
            });
            let last_error = fields
                .optional_text()?
                .filter(|_| errors == LastErrors::Shown);
            Ok(Message {
                last_error,
                task,
                group: fields.nullable_text()?,
                meta: fields.nullable_text()?,
                first_received_at: fields.nullable_int()?,
                ..Message::stored(id, body, attempts, enqueued_at)
            })
        })
        .collect()
}

/// Whether the messages read show their last delivery error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LastErrors {
    /// Dead letters show why their delivery failed.
    Shown,
    /// Messages handed out or peeked at do not.
    Hidden,
}

/// A task as the scripts store it (JSON in the queue's `tasks` hash). Numbers are
/// read as floats: Lua's JSON writes whole numbers either way.
#[derive(Deserialize)]
struct StoredTask {
    queue: String,
    state: String,
    created_at: f64,
    result: Option<String>,
    error: Option<String>,
    attempts: Option<f64>,
    finished_at: Option<f64>,
    upstream: Option<f64>,
}

/// A task from `task_view()` in `lua/queue.lua`; its status by the shared rule.
fn task_record(id: &TaskId, fields: &mut Fields) -> StoreResult<TaskRecord> {
    let json = fields.text()?;
    let (code, running, exhausted) = (fields.int()?, fields.int()?, fields.int()?);
    let (message_attempts, lease_left) = (fields.int()?, fields.int()?);
    let stored: StoredTask =
        serde_json::from_str(&json).map_err(|e| StoreError::backend("read a stored task", e))?;
    let state = match stored.state.as_str() {
        "open" => TaskState::Unfinished,
        "succeeded" => TaskState::Succeeded,
        "failed" => TaskState::Failed,
        "expired" => TaskState::Expired,
        _ => return Err(unreadable("task state")),
    };
    let message = (code >= 0).then(|| TaskMessage::new(code, running == 1, exhausted == 1));
    let attempts = if message.is_some() {
        message_attempts as f64
    } else {
        stored.attempts.unwrap_or(0.0)
    };
    Ok(TaskRecord {
        id: id.clone(),
        queue: stored.queue,
        status: state.status(message),
        result: stored.result,
        error: stored.error,
        attempts: attempts as u32,
        created_at: stored.created_at as i64,
        finished_at: stored.finished_at.map(|at| at as i64),
        upstream_status: stored.upstream.map(|s| s as u16),
        lease_ends_in: message
            .filter(|m| m.leased)
            .map(|_| Duration::from_millis(lease_left.max(0) as u64)),
    })
}

impl Core {
    /// Runs a queue script (see `lua/queue.lua`).
    async fn queue_script(
        &self,
        context: &'static str,
        script: &Script,
        writes: bool,
        queue: &str,
        args: &[&str],
    ) -> StoreResult<Fields> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.script(
            context,
            script,
            writes,
            &self.keys.queue(queue),
            queue,
            &args,
        )
        .await
    }

    /// Makes sure the queue is in the registry before a script may create it, so a
    /// queue that exists is always listed.
    async fn register_queue(&self, queue: &QueueName) -> StoreResult<bool> {
        self.register(self.keys.queues(), queue.as_str()).await
    }

    /// After a script created a queue that this node had registered before: another
    /// node may have deleted it meanwhile, taking it out of the registry.
    async fn created(&self, queue: &QueueName, known: bool, created: bool) -> StoreResult<()> {
        if known && created {
            self.command::<i64>(
                "register",
                true,
                redis::cmd("SADD")
                    .arg(self.keys.queues())
                    .arg(queue.as_str()),
            )
            .await?;
        }
        Ok(())
    }

    /// A push, with the task its first message carries. Answers the outcome and,
    /// for a duplicate, the task of the first push if it made one.
    async fn push_task(
        &self,
        request: PushRequest,
        task: Option<(&TaskId, String)>,
    ) -> StoreResult<(PushOutcome, Option<String>)> {
        let known = self.register_queue(&request.queue).await?;
        let (task_id, task_json) = task
            .map(|(id, json)| (id.to_string(), json))
            .unwrap_or_default();
        let defaults = defaults_args(&request.defaults)?;
        let delay = delay_arg(request.delay);
        let key = request.idempotency_key.clone().unwrap_or_default();
        let (shape, messages) = pushed_messages(&request.messages);
        let mut args: Vec<&[u8]> = [&delay, &key, &task_id, &task_json]
            .into_iter()
            .chain(&defaults)
            .map(|arg| arg.as_bytes())
            .collect();
        args.push(shape.as_bytes());
        args.extend(messages.iter().map(|field| field.as_ref()));
        let queue = request.queue.as_str();
        let mut fields = self
            .script("push", &PUSH, true, &self.keys.queue(queue), queue, &args)
            .await?;
        let status = fields.status(request.queue.as_str())?;
        let created = fields.int()? == 1;
        self.created(&request.queue, known, created).await?;
        if status == Status::Duplicate {
            let id = fields.int()?;
            return Ok((PushOutcome::Duplicate(id), fields.optional_text()?));
        }
        let mut ids = Vec::with_capacity(request.messages.len());
        while !fields.is_empty() {
            ids.push(fields.int()?);
        }
        Ok((PushOutcome::Created(ids), None))
    }

    /// One batch of plain pushes: those to each queue in one script, the queues'
    /// scripts side by side. Answers each push's ids, in the batch's order.
    async fn push_batch(
        &self,
        requests: &[PushRequest],
    ) -> StoreResult<Vec<StoreResult<Vec<MessageId>>>> {
        let mut groups: Vec<(&QueueName, Vec<usize>)> = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|(queue, _)| *queue == &request.queue)
            {
                Some((_, members)) => members.push(index),
                None => groups.push((&request.queue, vec![index])),
            }
        }
        let written = futures_util::future::join_all(groups.iter().map(|(queue, members)| {
            let pushes: Vec<&PushRequest> = members.iter().map(|&i| &requests[i]).collect();
            async move { self.push_to_queue(queue, &pushes).await }
        }))
        .await;
        let mut answers: Vec<StoreResult<Vec<MessageId>>> =
            requests.iter().map(|_| Ok(Vec::new())).collect();
        for ((_, members), result) in groups.iter().zip(written) {
            match result {
                Ok(ids) => {
                    for (&index, ids) in members.iter().zip(ids) {
                        answers[index] = Ok(ids);
                    }
                }
                Err(error) => {
                    for &index in members {
                        answers[index] = Err(batcher::replicate(&error));
                    }
                }
            }
        }
        Ok(answers)
    }

    /// The plain pushes of one batch to `queue`, in one script: each push's ids.
    async fn push_to_queue(
        &self,
        queue: &QueueName,
        pushes: &[&PushRequest],
    ) -> StoreResult<Vec<Vec<MessageId>>> {
        let known = self.register_queue(queue).await?;
        let defaults = defaults_args(&pushes[0].defaults)?;
        let shapes: Vec<(String, String, _)> = pushes
            .iter()
            .map(|push| {
                (
                    delay_arg(push.delay),
                    push.messages.len().to_string(),
                    pushed_messages(&push.messages),
                )
            })
            .collect();
        let mut args: Vec<&[u8]> = defaults.iter().map(|arg| arg.as_bytes()).collect();
        for (delay, count, (shape, messages)) in &shapes {
            args.push(delay.as_bytes());
            args.push(shape.as_bytes());
            args.push(count.as_bytes());
            args.extend(messages.iter().map(|field| field.as_ref()));
        }
        let mut fields = self
            .run_script(
                "push",
                &PUSH_MANY,
                true,
                &self.keys.queue(queue.as_str()),
                queue.as_str(),
                &args,
            )
            .await?;
        fields.status(queue.as_str())?;
        let created = fields.int()? == 1;
        self.created(queue, known, created).await?;
        pushes
            .iter()
            .map(|push| {
                (0..push.messages.len())
                    .map(|_| fields.int())
                    .collect::<StoreResult<Vec<MessageId>>>()
            })
            .collect()
    }

    /// The queues of the registry; with `task_queues`, also those that only keep tasks.
    async fn queue_names(&self, task_queues: bool) -> StoreResult<Vec<String>> {
        let mut names = self.registry(self.keys.queues()).await?;
        if task_queues {
            names.extend(self.registry(self.keys.task_queues()).await?);
            names.sort();
            names.dedup();
        }
        Ok(names)
    }

    /// Runs a sweep script on every queue and adds up its counts.
    async fn sweep_each(&self, script: &Script, context: &'static str) -> StoreResult<u64> {
        let mut total = 0;
        for queue in self.queue_names(false).await? {
            let mut fields = match self.queue_script(context, script, true, &queue, &[]).await {
                Ok(fields) => fields,
                Err(StoreError::QueueNotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            if fields.status(&queue).is_ok() {
                total += fields.count()?;
            }
        }
        Ok(total)
    }

    /// What a patch does to the queue's options, as `lua/configure.lua` takes it: the
    /// stored text it was computed from (after '=') and the text after it; `None`
    /// when the patch changes no option. A queue not yet there counts with the
    /// options of `defaults`, which the script creates it with.
    async fn options_change(
        &self,
        queue: &QueueName,
        patch: &SettingsPatch,
        defaults: &QueueSettings,
    ) -> StoreResult<Option<(String, String)>> {
        let changes_options = patch.ordering.is_some()
            || patch.dead_letter_queue.is_some()
            || patch.delay.is_some()
            || patch.wait.is_some()
            || patch.content_deduplication.is_some();
        if !changes_options {
            return Ok(None);
        }
        let (lease, stored): (Option<String>, Option<String>) = self
            .command(
                "read queue options",
                false,
                redis::cmd("HMGET")
                    .arg(&self.keys.queue(queue.as_str())[0])
                    .arg("lease")
                    .arg("opts"),
            )
            .await?;
        let current = match lease {
            Some(_) => stored,
            None => defaults.options_json(),
        };
        // Unreadable options fail the change rather than being written over.
        let next = QueueSettings::default()
            .with_options_json(current.as_deref())
            .map_err(|e| StoreError::backend("read stored queue options", e))?;
        let next = patch.over(&next).options_json().unwrap_or_default();
        Ok(Some((format!("={}", current.unwrap_or_default()), next)))
    }

    /// Which queue a task is on.
    async fn task_queue(&self, id: &TaskId) -> StoreResult<Option<String>> {
        self.command(
            "find a task's queue",
            false,
            redis::cmd("GET").arg(self.keys.task_index(id.as_str())),
        )
        .await
    }
}

#[async_trait]
impl QueueStore for RedisStore {
    async fn push(&self, request: PushRequest) -> StoreResult<PushOutcome> {
        if request.idempotency_key.is_none() {
            // Written by the batcher, even if this caller has gone meanwhile.
            return self.pushes.submit(request).await.map(PushOutcome::Created);
        }
        Ok(self.push_task(request, None).await?.0)
    }

    async fn pop(&self, queue: &QueueName, count: u32) -> StoreResult<Vec<Message>> {
        let count_text = count.to_string();
        let mut fields = self
            .queue_script("pop", &POP, true, queue.as_str(), &[&count_text])
            .await?;
        fields.status(queue.as_str())?;
        let n = fields.count()?;
        messages(&mut fields, n, LastErrors::Hidden)
    }

    async fn receive(
        &self,
        queue: &QueueName,
        count: u32,
        lease: Option<Duration>,
    ) -> StoreResult<Received> {
        let lease_token: i64 = rand::random();
        let (count_text, lease_text, token) = (
            count.to_string(),
            lease.map(ms).unwrap_or_default(),
            lease_token.to_string(),
        );
        let mut fields = self
            .queue_script(
                "receive",
                &RECEIVE,
                true,
                queue.as_str(),
                &[&count_text, &lease_text, &token],
            )
            .await?;
        fields.status(queue.as_str())?;
        let queue_wait = Duration::from_millis(fields.count()?);
        let n = fields.count()?;
        if n == 0 {
            let next = fields.int()?;
            return Ok(Received {
                messages: Vec::new(),
                next_ready_in: u64::try_from(next).ok().map(Duration::from_millis),
                queue_wait,
            });
        }
        let mut messages = messages(&mut fields, n, LastErrors::Hidden)?;
        for message in &mut messages {
            message.receipt = Some(Receipt {
                message_id: message.id,
                lease_token,
            });
        }
        Ok(Received {
            messages,
            next_ready_in: None,
            queue_wait,
        })
    }

    async fn settle(
        &self,
        queue: &QueueName,
        receipts: &[Receipt],
        settlement: Settlement,
    ) -> StoreResult<Settled> {
        let (kind, duration) = match settlement {
            Settlement::Ack => ("ack", Duration::ZERO),
            Settlement::Nack { delay } => ("nack", delay),
            Settlement::Extend { lease } => ("extend", lease),
        };
        self.settle_receipts(queue, receipts, kind, duration, "")
            .await
    }

    async fn peek(&self, queue: &QueueName, limit: u32) -> StoreResult<Vec<Message>> {
        let limit = limit.to_string();
        let mut fields = self
            .queue_script("peek", &PEEK, false, queue.as_str(), &[&limit])
            .await?;
        fields.status(queue.as_str())?;
        let n = fields.count()?;
        messages(&mut fields, n, LastErrors::Hidden)
    }

    async fn queue_info(&self, queue: &QueueName) -> StoreResult<QueueInfo> {
        let mut fields = self
            .queue_script("read a queue", &INFO, false, queue.as_str(), &[])
            .await?;
        fields.status(queue.as_str())?;
        let settings = settings_from(fields.array()?)?;
        let counts = QueueCounts {
            ready: fields.count()?,
            leased: fields.count()?,
            delayed: fields.count()?,
            dead: fields.count()?,
        };
        let mut tasks = TaskCounts::default();
        for status in [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Expired,
        ] {
            tasks.add(status, fields.count()?);
        }
        while !fields.is_empty() {
            let group = fields.text()?;
            let n = fields.count()?;
            let mut parts = group.split(':').map(|p| p.parse::<i64>().unwrap_or(-1));
            let (code, running, exhausted) = (
                parts.next().unwrap_or(-1),
                parts.next().unwrap_or(0),
                parts.next().unwrap_or(0),
            );
            let message = (code >= 0).then(|| TaskMessage::new(code, running == 1, exhausted == 1));
            tasks.add(TaskState::Unfinished.status(message), n);
        }
        Ok(QueueInfo {
            name: queue.clone(),
            settings,
            counts,
            tasks,
        })
    }

    async fn list_queues(&self) -> StoreResult<Vec<QueueInfo>> {
        let mut queues = Vec::new();
        for name in self.queue_names(false).await? {
            let Ok(queue) = QueueName::parse(&name) else {
                continue;
            };
            match self.queue_info(&queue).await {
                Ok(info) => queues.push(info),
                // Registered first, created next: a queue being created, or deleted.
                Err(StoreError::QueueNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(queues)
    }

    async fn update_settings(
        &self,
        queue: &QueueName,
        patch: &SettingsPatch,
        defaults: &QueueSettings,
    ) -> StoreResult<Upsert> {
        let known = self.register_queue(queue).await?;
        let defaults_args: Vec<String> = defaults_args(defaults)?.into();
        let mut args = Vec::new();
        let mut set = |name: &str, value: String| {
            args.push(name.to_owned());
            args.push(value);
        };
        if let Some(lease) = patch.lease {
            set("lease", ms(lease));
        }
        if let Some(max) = patch.max_attempts {
            set("max", max.to_string());
        }
        if let Some(retention) = patch.retention {
            set(
                "ret",
                retention
                    .filter(|r| !r.is_zero())
                    .map(ms)
                    .unwrap_or_default(),
            );
        }
        if let Some(window) = patch.idempotency_window {
            set("idem", ms(window));
        }
        if let Some(delivery) = &patch.delivery {
            set("delivery", delivery_text(delivery.as_ref())?);
        }
        let created = loop {
            let options = self.options_change(queue, patch, defaults).await?;
            let mut all: Vec<&str> = defaults_args.iter().map(String::as_str).collect();
            let (from, to) = options
                .as_ref()
                .map(|(from, to)| (from.as_str(), to.as_str()))
                .unwrap_or_default();
            all.extend([from, to]);
            all.extend(args.iter().map(String::as_str));
            let mut fields = self
                .queue_script("configure a queue", &CONFIGURE, true, queue.as_str(), &all)
                .await?;
            // Another change of the options came between the read and the write.
            if fields.status(queue.as_str())? == Status::Changed {
                continue;
            }
            break fields.int()? == 1;
        };
        self.created(queue, known, created).await?;
        Ok(if created {
            Upsert::Created
        } else {
            Upsert::Updated
        })
    }

    async fn settings(&self, queue: &QueueName) -> StoreResult<QueueSettings> {
        let fields: Vec<redis::Value> = self
            .command(
                "read queue settings",
                false,
                redis::cmd("HGETALL").arg(&self.keys.queue(queue.as_str())[0]),
            )
            .await?;
        if fields.is_empty() {
            return Err(StoreError::QueueNotFound(queue.to_string()));
        }
        settings_from(fields)
    }

    async fn delivering_queues(&self) -> StoreResult<Vec<(QueueName, DeliverySettings)>> {
        let mut delivering = Vec::new();
        for name in self.queue_names(false).await? {
            let Ok(queue) = QueueName::parse(&name) else {
                continue;
            };
            match self.settings(&queue).await {
                Ok(QueueSettings {
                    delivery: Some(delivery),
                    ..
                }) => delivering.push((queue, delivery)),
                Ok(_) | Err(StoreError::QueueNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(delivering)
    }

    async fn delete_queue(&self, queue: &QueueName) -> StoreResult<u64> {
        let mut fields = self
            .queue_script("delete a queue", &CLEAR, true, queue.as_str(), &["drop"])
            .await?;
        fields.status(queue.as_str())?;
        let removed = fields.count()?;
        self.unregister(self.keys.queues(), queue.as_str()).await?;
        Ok(removed)
    }

    async fn purge(&self, queue: &QueueName) -> StoreResult<u64> {
        let mut fields = self
            .queue_script("purge a queue", &CLEAR, true, queue.as_str(), &[""])
            .await?;
        fields.status(queue.as_str())?;
        fields.count()
    }

    async fn dead_letters(&self, queue: &QueueName, limit: u32) -> StoreResult<Vec<Message>> {
        let limit = limit.to_string();
        let mut fields = self
            .queue_script("list dead letters", &DEAD, true, queue.as_str(), &[&limit])
            .await?;
        fields.status(queue.as_str())?;
        let n = fields.count()?;
        messages(&mut fields, n, LastErrors::Shown)
    }

    async fn retry_later(
        &self,
        queue: &QueueName,
        receipt: Receipt,
        delay: Duration,
        error: String,
    ) -> StoreResult<bool> {
        let settled = self
            .settle_receipts(queue, &[receipt], "nack", delay, &error)
            .await?;
        Ok(!settled.applied.is_empty())
    }

    async fn redrive(&self, queue: &QueueName, limit: u32) -> StoreResult<u64> {
        let limit = limit.to_string();
        let mut fields = self
            .queue_script("redrive", &REDRIVE, true, queue.as_str(), &[&limit])
            .await?;
        fields.status(queue.as_str())?;
        fields.count()
    }

    async fn remove_dead(&self, queue: &QueueName, ids: &[MessageId]) -> StoreResult<u64> {
        let ids: Vec<String> = ids.iter().map(MessageId::to_string).collect();
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut fields = self
            .queue_script(
                "remove dead letters",
                &REMOVE_DEAD,
                true,
                queue.as_str(),
                &args,
            )
            .await?;
        fields.status(queue.as_str())?;
        fields.count()
    }

    async fn all_settings(&self) -> StoreResult<Vec<(QueueName, QueueSettings)>> {
        let mut all = Vec::new();
        for name in self.queue_names(false).await? {
            let Ok(queue) = QueueName::parse(&name) else {
                continue;
            };
            match self.settings(&queue).await {
                Ok(settings) => all.push((queue, settings)),
                Err(StoreError::QueueNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(all)
    }

    async fn sweep_messages(&self) -> StoreResult<u64> {
        self.sweep_each(&SWEEP_MESSAGES, "drop expired messages")
            .await
    }

    async fn sweep_idempotency_keys(&self) -> StoreResult<u64> {
        self.sweep_each(&SWEEP_IDEMPOTENCY, "drop expired idempotency keys")
            .await
    }
}

impl Core {
    /// Acks, nacks (keeping `error` when not empty) or extends by receipt.
    async fn settle_receipts(
        &self,
        queue: &QueueName,
        receipts: &[Receipt],
        kind: &str,
        duration: Duration,
        error: &str,
    ) -> StoreResult<Settled> {
        let duration = ms(duration);
        let pairs: Vec<String> = receipts
            .iter()
            .flat_map(|r| [r.message_id.to_string(), r.lease_token.to_string()])
            .collect();
        let mut args: Vec<&str> = vec![kind, &duration, error];
        args.extend(pairs.iter().map(String::as_str));
        let mut fields = self
            .queue_script("settle", &SETTLE, true, queue.as_str(), &args)
            .await?;
        fields.status(queue.as_str())?;
        let mut settled = Settled::default();
        for receipt in receipts {
            if fields.int()? == 1 {
                settled.applied.push(*receipt);
            } else {
                settled.stale.push(*receipt);
            }
        }
        Ok(settled)
    }
}

#[async_trait]
impl TaskStore for RedisStore {
    async fn create_task(&self, task: NewTask) -> StoreResult<TaskCreated> {
        let queue = task.message.queue.clone();
        // The index first: a task that exists can always be found by its id.
        self.command::<()>(
            "index a task",
            true,
            redis::cmd("SET")
                .arg(self.keys.task_index(task.id.as_str()))
                .arg(queue.as_str()),
        )
        .await?;
        self.register(self.keys.task_queues(), queue.as_str())
            .await?;
        let json = serde_json::json!({
            "queue": queue.as_str(),
            "keep": millis_of(task.keep_finished),
        })
        .to_string();
        let (outcome, seen) = self.push_task(task.message, Some((&task.id, json))).await?;
        match outcome {
            PushOutcome::Created(_) => Ok(TaskCreated::New(task.id)),
            PushOutcome::Duplicate(_) => {
                self.command::<i64>(
                    "drop an unused task index",
                    true,
                    redis::cmd("DEL").arg(self.keys.task_index(task.id.as_str())),
                )
                .await?;
                match seen {
                    Some(raw) => TaskId::parse(&raw)
                        .map(TaskCreated::Existing)
                        .map_err(|e| StoreError::backend("a stored task id is invalid", e)),
                    None => Ok(TaskCreated::KeyTaken),
                }
            }
        }
    }

    async fn task(&self, id: &TaskId) -> StoreResult<Option<TaskRecord>> {
        let Some(queue) = self.task_queue(id).await? else {
            return Ok(None);
        };
        let mut fields = self
            .queue_script("read a task", &TASK_GET, false, &queue, &[id.as_str()])
            .await?;
        match fields.status(&queue)? {
            Status::Ok => Ok(Some(task_record(id, &mut fields)?)),
            _ => Ok(None),
        }
    }

    async fn finish_task(
        &self,
        id: &TaskId,
        receipt: Receipt,
        finish: TaskFinish,
    ) -> StoreResult<TaskFinished> {
        let Some(queue) = self.task_queue(id).await? else {
            return Ok(TaskFinished::NotFound);
        };
        let upstream = finish
            .upstream_status()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let (kind, payload, delay) = match &finish {
            TaskFinish::Succeeded { result, .. } => ("succeeded", result.as_str(), Duration::ZERO),
            TaskFinish::Failed { error } => ("failed", error.as_str(), Duration::ZERO),
            TaskFinish::Retry { error, delay } => ("retry", error.as_str(), *delay),
        };
        let (message_id, token, delay) = (
            receipt.message_id.to_string(),
            receipt.lease_token.to_string(),
            ms(delay),
        );
        let mut fields = self
            .queue_script(
                "finish a task",
                &TASK_FINISH,
                true,
                &queue,
                &[
                    id.as_str(),
                    &message_id,
                    &token,
                    kind,
                    payload,
                    &upstream,
                    &delay,
                ],
            )
            .await?;
        Ok(match fields.status(&queue)? {
            Status::Ok => TaskFinished::Applied(task_record(id, &mut fields)?),
            Status::WrongMessage => TaskFinished::WrongMessage,
            Status::Stale => TaskFinished::Stale,
            _ => TaskFinished::NotFound,
        })
    }

    async fn sweep_tasks(&self) -> StoreResult<u64> {
        let mut dropped = 0;
        for queue in self.queue_names(true).await? {
            let mut fields = self
                .queue_script("drop finished tasks", &SWEEP_TASKS, true, &queue, &[])
                .await?;
            fields.status(&queue)?;
            while !fields.is_empty() {
                let task = fields.text()?;
                self.command::<i64>(
                    "drop a task index",
                    true,
                    redis::cmd("DEL").arg(self.keys.task_index(&task)),
                )
                .await?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}

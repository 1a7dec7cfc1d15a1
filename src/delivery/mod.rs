//! The delivery engine: for every queue with a `delivery` setting, workers lease
//! its messages and call the upstream, retrying with backoff behind a circuit
//! breaker per upstream host (seeds 001 and 003).
//!
//! A delivery is a lease like any consumer's: a node that dies mid-call leaves a
//! lease that expires, and the message goes out again (at least once). On
//! PostgreSQL every node runs workers and `SKIP LOCKED` spreads messages over them.
//! A task's message (marked by the store with its task id) is seed 001's
//! executor: the upstream gets the task's payload, and its answer finishes the task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::access::Principal;
use crate::domain::clock::{now_millis, rfc3339, Millis};
use crate::domain::delivery::{fill_template, signing_key, DeliverySettings, URL_VALUE};
use crate::domain::{Message, Receipt, Store, TaskFinish, TaskFinished};
use crate::domain::{QueueName, QueueService, ReceiveRequest, TaskId};

mod breaker;
pub mod signing;

use breaker::{Breaker, Gate};

/// How often settings are re-read, for changes made on other nodes.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a worker's receive waits for a message.
const RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// A lease outlives the upstream's timeout by this much, so a slow answer is still ours.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// Largest upstream answer kept as a task's result.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Most messages one worker leases and calls at once: fewer store round trips per
/// delivery (one receive and one ack per batch) while calls still overlap.
const BATCH: u32 = 8;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Delivery state of every delivering queue on this node, for `GET /queues/{q}`.
#[derive(Default)]
pub struct Deliveries {
    queues: Mutex<HashMap<String, Arc<QueueStatus>>>,
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Poked when settings change on this node, so workers follow at once.
    changed: tokio::sync::Notify,
}

/// What a queue's deliveries are doing, as `GET /queues/{q}` shows it.
#[derive(Default)]
struct QueueStatus {
    in_flight: AtomicU64,
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    last_error: Mutex<Option<(Millis, String)>>,
    hosts: Mutex<Vec<String>>,
}

/// A queue's delivery state on this node.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Calls waiting for the upstream now.
    pub in_flight: u64,
    /// Messages delivered since this node started.
    pub delivered: u64,
    /// Failed attempts since this node started (each retried or dead-lettered).
    pub failed_attempts: u64,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// The circuit breaker of each upstream `host:port`: `closed`, `open` or `half-open`.
    #[schema(value_type = HashMap<String, String>)]
    pub breakers: HashMap<String, &'static str>,
}

/// A delivery's last failure.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastError {
    /// When it happened (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub at: String,
    /// What happened, e.g. `upstream answered 503`.
    pub error: String,
}

impl Deliveries {
    /// Tells the workers that settings changed on this node.
    pub fn settings_changed(&self) {
        self.changed.notify_one();
    }

    /// The delivery state of `queue`, if it delivers.
    pub fn view(&self, queue: &QueueName) -> Option<DeliveryView> {
        let status = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue.as_str())?
            .clone();
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let hosts = status.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let last_error = status
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(at, error)| LastError {
                at: rfc3339(*at),
                error: error.clone(),
            });
        Some(DeliveryView {
            in_flight: status.in_flight.load(Ordering::Relaxed),
            delivered: status.delivered.load(Ordering::Relaxed),
            failed_attempts: status.failed_attempts.load(Ordering::Relaxed),
            last_error,
            breakers: hosts
                .iter()
                .filter_map(|host| Some((host.clone(), breakers.get(host)?.state_name())))
                .collect(),
        })
    }

    /// The delivery state of every queue that delivered on this node, by queue name.
    pub fn views(&self) -> Vec<(String, DeliveryView)> {
        let names: Vec<String> = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let queue = QueueName::parse(&name).ok()?;
                Some((name, self.view(&queue)?))
            })
            .collect()
    }

    /// The state of each upstream's breaker: `closed`, `open` or `half-open`.
    pub fn breaker_states(&self) -> Vec<(String, &'static str)> {
        self.breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(host, breaker)| (host.clone(), breaker.state_name()))
            .collect()
    }

    fn breaker(&self, host: &str) -> Arc<Breaker> {
        self.breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_owned())
            .or_default()
            .clone()
    }
}

/// Runs delivery for every queue that has a `delivery` setting until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    queues: QueueService,
    http: reqwest::Client,
    deliveries: Arc<Deliveries>,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<QueueName, (DeliverySettings, CancellationToken, JoinSet<()>)> =
        HashMap::new();
    loop {
        match store.delivering_queues().await {
            Ok(delivering) => {
                let wanted: HashMap<QueueName, DeliverySettings> = delivering.into_iter().collect();
                running.retain(|queue, (settings, stop, _)| {
                    let keep = wanted.get(queue) == Some(settings);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for (queue, settings) in wanted {
                    if running.contains_key(&queue) {
                        continue;
                    }
                    let stop = shutdown.child_token();
                    let status = deliveries
                        .queues
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(queue.to_string())
                        .or_default()
                        .clone();
                    let workers_count = settings.concurrency.div_ceil(BATCH);
                    let worker = Worker {
                        batch: settings.concurrency.div_ceil(workers_count),
                        queue: queue.clone(),
                        settings: Arc::new(settings.clone()),
                        store: store.clone(),
                        queues: queues.clone(),
                        http: http.clone(),
                        deliveries: deliveries.clone(),
                        status,
                        stop: stop.clone(),
                    };
                    let mut workers = JoinSet::new();
                    for _ in 0..workers_count {
                        workers.spawn(worker.clone().run());
                    }
                    tracing::info!(%queue, url = %settings.url, "delivering");
                    running.insert(queue, (settings, stop, workers));
                }
                let names: Vec<String> = running.keys().map(ToString::to_string).collect();
                deliveries
                    .queues
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|queue, _| names.contains(queue));
            }
            Err(error) => tracing::warn!(%error, "delivery: cannot read the queues' settings"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            _ = deliveries.changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One of a queue's workers; together they make `concurrency` calls at most.
#[derive(Clone)]
struct Worker {
    /// Messages leased and called at once.
    batch: u32,
    queue: QueueName,
    settings: Arc<DeliverySettings>,
    store: Arc<dyn Store>,
    queues: QueueService,
    http: reqwest::Client,
    deliveries: Arc<Deliveries>,
    status: Arc<QueueStatus>,
    stop: CancellationToken,
}

/// How one attempt ended.
enum Outcome {
    /// Delivered: the upstream's status and answer.
    Delivered { status: u16, answer: Vec<u8> },
    /// Not delivered; `host_failing` when it says the host is unwell (trips the breaker).
    Failed {
        error: String,
        retry_after: Option<Duration>,
        host_failing: bool,
    },
}

impl Worker {
    async fn run(self) {
        // The host is known before a message is when the URL's authority has no field.
        let fixed_host = authority(&self.settings.url).filter(|host| !host.contains('{'));
        while !self.stop.is_cancelled() {
            let mut count = self.batch;
            if let Some(host) = &fixed_host {
                if !self.pass_breaker(host).await {
                    continue;
                }
                // A probe goes alone.
                if !self.deliveries.breaker(host).is_closed() {
                    count = 1;
                }
            }
            let request = ReceiveRequest {
                count,
                lease: Some(self.settings.timeout + LEASE_MARGIN),
                wait: Some(RECEIVE_WAIT),
            };
            let node = Principal::node();
            let received = tokio::select! {
                received = self.queues.receive(&node, &self.queue, request) => received,
                _ = self.stop.cancelled() => return,
            };
            let messages = match received {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(queue = %self.queue, %error, "delivery: cannot receive");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                if let Some(host) = &fixed_host {
                    // A probe with nothing to send: let another worker probe later.
                    self.deliveries.breaker(host).release_probe();
                }
                continue;
            }
            let gated = fixed_host.is_some();
            let delivered: Vec<Receipt> = futures_util::future::join_all(
                messages
                    .into_iter()
                    .map(|message| self.deliver(message, gated)),
            )
            .await
            .into_iter()
            .flatten()
            .collect();
            if !delivered.is_empty() {
                if let Err(error) = self.ack(&delivered).await {
                    tracing::warn!(queue = %self.queue, %error, "delivery: delivered, but cannot ack; the messages will go out again");
                }
            }
        }
    }

    /// Waits while the breaker of `host` is open; `true` when a call may go.
    async fn pass_breaker(&self, host: &str) -> bool {
        match self.deliveries.breaker(host).gate(&self.settings.breaker) {
            Gate::Pass => true,
            Gate::WaitUntil(until) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = self.stop.cancelled() => {}
                }
                false
            }
        }
    }

    async fn pause(&self, duration: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Delivers one leased message; `gated`: the breaker already let this call through.
    /// Returns the receipt to ack when it was delivered and is not a task's (a task
    /// is finished, its message acked with it, here).
    async fn deliver(&self, message: Message, gated: bool) -> Option<Receipt> {
        let receipt = message.receipt?;
        let mut body: serde_json::Value = serde_json::from_str(&message.body).unwrap_or_default();
        // The store marks a task's message; its body is the envelope, and the
        // upstream gets what the task's caller sent.
        let task = message.task.clone();
        if task.is_some() {
            body = body
                .get_mut("payload")
                .map(serde_json::Value::take)
                .unwrap_or_default();
        }
        let payload = &body;
        let Some(url) = resolve_url(&self.settings.url, payload) else {
            let error = format!(
                "url {:?} names a field the message does not have",
                self.settings.url
            );
            self.failed(&message, receipt, task, error, None).await;
            return None;
        };
        let host = authority(&url).unwrap_or_default();
        {
            let mut hosts = self.status.hosts.lock().unwrap_or_else(|e| e.into_inner());
            if !hosts.contains(&host) {
                hosts.push(host.clone());
            }
        }
        let breaker = self.deliveries.breaker(&host);
        let gate = if gated {
            Gate::Pass
        } else {
            breaker.gate(&self.settings.breaker)
        };
        if let Gate::WaitUntil(until) = gate {
            // A host named by the message itself, found open only now.
            let error = format!("circuit breaker open for {host}");
            let delay = until.saturating_duration_since(Instant::now());
            self.failed(&message, receipt, task, error, Some(delay))
                .await;
            return None;
        }
        self.status.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = self.call(&url, &message, payload, task.as_ref()).await;
        self.status.in_flight.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Outcome::Delivered { status, answer } => {
                breaker.succeeded();
                self.status.delivered.fetch_add(1, Ordering::Relaxed);
                match task {
                    Some(task) => self.delivered_task(receipt, task, status, answer).await,
                    None => Some(receipt),
                }
            }
            Outcome::Failed {
                error,
                retry_after,
                host_failing,
            } => {
                if host_failing {
                    breaker.failed(&self.settings.breaker);
                } else {
                    breaker.succeeded();
                }
                self.failed(&message, receipt, task, error, retry_after)
                    .await;
                None
            }
        }
    }

    async fn call(
        &self,
        url: &str,
        message: &Message,
        payload: &serde_json::Value,
        task: Option<&TaskId>,
    ) -> Outcome {
        let settings = &self.settings;
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let method = reqwest::Method::from_bytes(settings.method.as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut request = self
            .http
            .request(method, url)
            .timeout(settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("hopper-message-id", message.id.to_string());
        for (name, value) in &settings.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(task) = task {
            request = request.header("hopper-task-id", task.as_str());
        }
        if let Some(key) = settings.signing_secret.as_deref().and_then(signing_key) {
            let signed = signing::sign(&key, &message.id.to_string(), now_millis() / 1000, &body);
            request = request
                .header("webhook-id", signed.id)
                .header("webhook-timestamp", signed.timestamp)
                .header("webhook-signature", signed.signature);
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                let what = if error.is_timeout() {
                    format!("no answer within {:?}", settings.timeout)
                } else if error.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "request failed".to_owned()
                };
                return Outcome::Failed {
                    error: format!("{what}: {}", error_chain(&error)),
                    retry_after: None,
                    host_failing: true,
                };
            }
        };
        let status = response.status().as_u16();
        if settings.is_done(status) {
            let answer = read_answer(response).await;
            return Outcome::Delivered { status, answer };
        }
        let retry_after = matches!(status, 429 | 503)
            .then(|| retry_after(response.headers()))
            .flatten();
        Outcome::Failed {
            error: format!("upstream answered {status}"),
            retry_after,
            host_failing: status >= 500 || status == 429,
        }
    }

    /// Finishes a delivered task with the upstream's answer; returns the receipt to
    /// ack when the task is gone (dropped after its retention) but its message is not.
    async fn delivered_task(
        &self,
        receipt: Receipt,
        task: TaskId,
        status: u16,
        answer: Vec<u8>,
    ) -> Option<Receipt> {
        let finish = TaskFinish::Succeeded {
            result: answer_json(&answer),
            upstream_status: Some(status),
        };
        match self.store.finish_task(&task, receipt, finish).await {
            Ok(TaskFinished::NotFound) => Some(receipt),
            Ok(TaskFinished::Applied(_)) => {
                crate::telemetry::acked(self.queue.as_str(), 1);
                None
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(queue = %self.queue, %error, "delivery: delivered, but cannot finish the task; it will go out again");
                None
            }
        }
    }

    async fn ack(&self, receipts: &[Receipt]) -> crate::domain::StoreResult<()> {
        let settled = self
            .store
            .settle(&self.queue, receipts, crate::domain::Settlement::Ack)
            .await?;
        crate::telemetry::acked(self.queue.as_str(), settled.applied.len() as u64);
        Ok(())
    }

    async fn failed(
        &self,
        message: &Message,
        receipt: Receipt,
        task: Option<TaskId>,
        error: String,
        retry_after: Option<Duration>,
    ) {
        self.status.failed_attempts.fetch_add(1, Ordering::Relaxed);
        *self
            .status
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((now_millis(), error.clone()));
        let delay = retry_after
            .map(|d| d.min(MAX_RETRY_AFTER))
            .unwrap_or_else(|| full_jitter(self.settings.backoff.ceiling(message.attempts)));
        tracing::debug!(queue = %self.queue, message = message.id, attempts = message.attempts, %error, ?delay, "delivery failed");
        let retried = match task {
            Some(task) => {
                let finish = TaskFinish::Retry {
                    error: serde_json::Value::String(error.clone()).to_string(),
                    delay,
                };
                match self.store.finish_task(&task, receipt, finish).await {
                    Ok(TaskFinished::NotFound) => self.retry_later(receipt, delay, error).await,
                    other => other.map(|_| ()),
                }
            }
            None => self.retry_later(receipt, delay, error).await,
        };
        if let Err(error) = retried {
            tracing::warn!(queue = %self.queue, %error, "delivery: cannot put a failed message back; its lease will expire");
        }
    }

    async fn retry_later(
        &self,
        receipt: Receipt,
        delay: Duration,
        error: String,
    ) -> crate::domain::StoreResult<()> {
        self.store
            .retry_later(&self.queue, receipt, delay, error)
            .await
            .map(|_| ())
    }
}

/// The URL with each `{field}` replaced by that top-level field of `body`, URL-encoded.
fn resolve_url(template: &str, body: &serde_json::Value) -> Option<String> {
    fill_template(template, |name| {
        let value = body.get(name)?;
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => return None,
            other => other.to_string(),
        };
        Some(percent_encoding::utf8_percent_encode(&text, URL_VALUE).to_string())
    })
}

/// `host:port` of a URL (or template), for the breaker.
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.contains(':') || authority.contains('{') {
        return Some(authority.to_owned());
    }
    let port = if url.starts_with("https") { 443 } else { 80 };
    Some(format!("{authority}:{port}"))
}

/// A random delay up to `ceiling` ("full jitter"): retries of many messages spread out.
fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(rand::random::<f64>())
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The upstream's answer, up to [`MAX_ANSWER_BYTES`].
async fn read_answer(mut response: reqwest::Response) -> Vec<u8> {
    let mut answer = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        answer.extend_from_slice(&chunk);
        if answer.len() >= MAX_ANSWER_BYTES {
            answer.truncate(MAX_ANSWER_BYTES);
            break;
        }
    }
    answer
}

/// An answer as a task result: its JSON, or its text as a JSON string, or null.
fn answer_json(answer: &[u8]) -> String {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return "null".into();
    }
    match serde_json::from_slice::<&serde_json::value::RawValue>(answer) {
        Ok(raw) => raw.get().to_owned(),
        Err(_) => {
            serde_json::Value::String(String::from_utf8_lossy(answer).into_owned()).to_string()
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_fields_encoded_and_authorities_have_ports() {
        let body = serde_json::json!({"group_id": "a b/c", "n": 7});
        assert_eq!(
            resolve_url("http://cluster/groups/{group_id}?n={n}", &body).as_deref(),
            Some("http://cluster/groups/a%20b%2Fc?n=7")
        );
        assert_eq!(
            resolve_url("http://c/{id}", &serde_json::json!({"id": "g-1.x_y~"})).as_deref(),
            Some("http://c/g-1.x_y~")
        );
        assert_eq!(resolve_url("http://c/{missing}", &body), None);
        assert_eq!(authority("http://cluster/x").as_deref(), Some("cluster:80"));
        assert_eq!(authority("https://u@h:8443/x").as_deref(), Some("h:8443"));
    }

    #[test]
    fn upstream_answers_become_results() {
        assert_eq!(answer_json(br#" {"id": 1} "#), r#"{"id": 1}"#);
        assert_eq!(answer_json(b"created"), r#""created""#);
        assert_eq!(answer_json(b""), "null");
    }
}

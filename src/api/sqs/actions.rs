//! The SQS actions over Hopper's queues, each taking the JSON protocol's request
//! object and answering its result object. Every call goes through the queue
//! service, so grants apply as on every other edge: `produce` sends, `consume`
//! receives, deletes and changes visibility, `manage` creates, configures, purges
//! and deletes, and any grant on a queue shows its URL and attributes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::error::*;
use super::message::{self, Attributes};
use super::queue::{self, QueueAttributes};
use crate::auth::Principal;
use crate::domain::queues::check_group;
use crate::domain::settings::{Ordering, MIN_LEASE};
use crate::domain::{
    Message, NewMessage, PushOutcome, QueueName, QueueService, Receipt, ReceiveRequest, Settlement,
};

/// Most entries in one batch request.
const MAX_BATCH_ENTRIES: usize = 10;
/// Most messages one `ReceiveMessage` takes.
const MAX_RECEIVE: u32 = 10;
/// Longest `WaitTimeSeconds`.
const MAX_WAIT_SECONDS: u64 = 20;
/// Longest visibility timeout.
const MAX_VISIBILITY_SECONDS: u64 = 12 * 3600;
/// Longest per-message delay.
const MAX_DELAY_SECONDS: u64 = 900;
/// Most queue URLs one `ListQueues` answers.
const MAX_LIST: usize = 1000;

/// One SQS call: who makes it, and the URLs and ARNs it answers with.
pub struct Call<'a> {
    /// The queue rules and storage.
    pub queues: &'a QueueService,
    /// The authenticated caller.
    pub caller: &'a Principal,
    /// `http://HOST:PORT/sqs/<account>`: a queue's URL is this and its name.
    pub base_url: String,
    /// The region the request was signed for, as given; ARNs name it.
    pub region: String,
    /// A queue URL the request's path names (query requests sent to the queue's URL).
    pub path_queue: Option<String>,
}

/// The account every queue URL and ARN names.
pub const ACCOUNT: &str = "000000000000";

impl Call<'_> {
    /// Runs `action` with the request object `params`.
    pub async fn run(
        &self,
        action: &str,
        params: Map<String, Value>,
    ) -> SqsResult<Map<String, Value>> {
        let params = Value::Object(params);
        let answer = match action {
            "CreateQueue" => self.create_queue(parse(params)?).await?,
            "GetQueueUrl" => self.get_queue_url(parse(params)?).await?,
            "ListQueues" => self.list_queues(parse(params)?).await?,
            "GetQueueAttributes" => self.get_queue_attributes(parse(params)?).await?,
            "SetQueueAttributes" => self.set_queue_attributes(parse(params)?).await?,
            "DeleteQueue" => self.delete_queue(parse(params)?).await?,
            "PurgeQueue" => self.purge_queue(parse(params)?).await?,
            "SendMessage" => self.send_message(parse(params)?).await?,
            "SendMessageBatch" => self.send_message_batch(parse(params)?).await?,
            "ReceiveMessage" => self.receive_message(parse(params)?).await?,
            "DeleteMessage" => self.delete_message(parse(params)?).await?,
            "DeleteMessageBatch" => self.delete_message_batch(parse(params)?).await?,
            "ChangeMessageVisibility" => self.change_visibility(parse(params)?).await?,
            "ChangeMessageVisibilityBatch" => self.change_visibility_batch(parse(params)?).await?,
            "ListDeadLetterSourceQueues" => self.dead_letter_sources(parse(params)?).await?,
            "ListQueueTags" => {
                self.queue_of(&parse::<QueueUrlOnly>(params)?.queue_url)?;
                json!({})
            }
            "TagQueue"
            | "UntagQueue"
            | "AddPermission"
            | "RemovePermission"
            | "StartMessageMoveTask"
            | "CancelMessageMoveTask"
            | "ListMessageMoveTasks" => {
                return Err(SqsError::new(
                    UNSUPPORTED_OPERATION,
                    format!(
                    "{action} is not supported by Hopper; grants are managed with Hopper's clients"
                ),
                ))
            }
            "" => {
                return Err(SqsError::new(
                    MISSING_PARAMETER,
                    "The request must name an Action.",
                ))
            }
            other => {
                return Err(SqsError::new(
                    INVALID_ACTION,
                    format!("The action {other} is not valid for this endpoint."),
                ))
            }
        };
        match answer {
            Value::Object(map) => Ok(map),
            _ => Ok(Map::new()),
        }
    }

    fn url_of(&self, queue: &QueueName) -> String {
        format!("{}/{}", self.base_url, queue)
    }

    fn arn_of(&self, queue: &QueueName) -> String {
        format!("arn:aws:sqs:{}:{ACCOUNT}:{queue}", self.region)
    }

    /// The queue a `QueueUrl` names: its last path segment (any host or account).
    fn queue_of(&self, url: &Option<String>) -> SqsResult<QueueName> {
        let url = url
            .as_deref()
            .filter(|u| !u.is_empty())
            .or(self.path_queue.as_deref())
            .ok_or_else(|| {
                SqsError::new(
                    MISSING_PARAMETER,
                    "The request must contain the parameter QueueUrl.",
                )
            })?;
        let name = url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        QueueName::parse(name)
            .map_err(|_| SqsError::new(QUEUE_DOES_NOT_EXIST, "The specified queue does not exist."))
    }

    async fn create_queue(&self, request: CreateQueue) -> SqsResult<Value> {
        let name = queue::check_name(&request.queue_name)?;
        let wanted = QueueAttributes::parse(&request.attributes, self, true)?;
        let fifo = name.as_str().ends_with(".fifo");
        if wanted.fifo.is_some_and(|f| f != fifo) || (fifo && wanted.fifo.is_none()) {
            return Err(SqsError::new(
                INVALID_PARAMETER_VALUE,
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix; FifoQueue=true is required for it, and only for it.",
            ));
        }
        match self.queues.settings(self.caller, &name).await {
            Ok(current) => {
                if !wanted.matches(&current) {
                    return Err(SqsError::new(
                        QUEUE_NAME_EXISTS,
                        format!("A queue already exists with the same name and a different value for attribute(s) {}", wanted.names().join(", ")),
                    ));
                }
            }
            Err(crate::domain::DomainError::NotFound(_)) => {
                self.check_dead_letter_target(&wanted).await?;
                let patch = wanted.patch_for_new(fifo);
                self.queues.configure(self.caller, &name, &patch).await?;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(json!({ "QueueUrl": self.url_of(&name) }))
    }

    async fn check_dead_letter_target(&self, wanted: &QueueAttributes) -> SqsResult<()> {
        if let Some(Some((target, _))) = &wanted.redrive {
            if let Err(error) = self.queues.settings(self.caller, target).await {
                return Err(match error {
                    crate::domain::DomainError::NotFound(_) => SqsError::new(
                        INVALID_PARAMETER_VALUE,
                        "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.",
                    ),
                    other => other.into(),
                });
            }
        }
        Ok(())
    }

    async fn get_queue_url(&self, request: GetQueueUrl) -> SqsResult<Value> {
        let name = QueueName::parse(&request.queue_name).map_err(|_| not_found())?;
        self.queues.settings(self.caller, &name).await?;
        Ok(json!({ "QueueUrl": self.url_of(&name) }))
    }

    async fn list_queues(&self, request: ListQueues) -> SqsResult<Value> {
        let max = request.max_results.map(|n| n as usize).unwrap_or(MAX_LIST);
        if !(1..=MAX_LIST).contains(&max) {
            return Err(SqsError::new(
                INVALID_PARAMETER_VALUE,
                format!("MaxResults must be between 1 and {MAX_LIST}."),
            ));
        }
        let prefix = request.queue_name_prefix.unwrap_or_default();
        let after = request.next_token.unwrap_or_default();
        let names: Vec<QueueName> = self
            .queues
            .list_settings(self.caller)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.as_str().starts_with(&prefix) && name.as_str() > after.as_str())
            .collect();
        Ok(self.page(names, max, request.max_results.is_some(), "QueueUrls"))
    }

    /// A page of queue URLs; with paging asked for, a `NextToken` when more follow.
    fn page(&self, names: Vec<QueueName>, max: usize, paged: bool, key: &str) -> Value {
        let mut answer = Map::new();
        if paged && names.len() > max {
            answer.insert("NextToken".into(), json!(names[max - 1].as_str()));
        }
        let urls: Vec<String> = names.iter().take(max).map(|n| self.url_of(n)).collect();
        if !urls.is_empty() || key == "queueUrls" {
            answer.insert(key.into(), json!(urls));
        }
        Value::Object(answer)
    }

    async fn dead_letter_sources(&self, request: DeadLetterSources) -> SqsResult<Value> {
        let target = self.queue_of(&request.queue_url)?;
        self.queues.settings(self.caller, &target).await?;
        let max = request.max_results.map(|n| n as usize).unwrap_or(MAX_LIST);
        let after = request.next_token.unwrap_or_default();
        let names: Vec<QueueName> = self
            .queues
            .list_settings(self.caller)
            .await?
            .into_iter()
            .filter(|(name, settings)| {
                settings.dead_letter_queue.as_ref() == Some(&target)
                    && name.as_str() > after.as_str()
            })
            .map(|(name, _)| name)
            .collect();
        Ok(self.page(
            names,
            max.clamp(1, MAX_LIST),
            request.max_results.is_some(),
            "queueUrls",
        ))
    }

    async fn get_queue_attributes(&self, request: GetQueueAttributes) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        let info = self.queues.info(self.caller, &name).await?;
        let attributes =
            queue::describe(&info, &self.arn_of(&name), self, &request.attribute_names)?;
        if attributes.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "Attributes": attributes }))
    }

    async fn set_queue_attributes(&self, request: SetQueueAttributes) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        let current = self.queues.settings(self.caller, &name).await?;
        let wanted = QueueAttributes::parse(&request.attributes, self, false)?;
        if wanted.fifo.is_some_and(|f| {
            f != (current.ordering == Ordering::Group && name.as_str().ends_with(".fifo"))
        }) {
            return Err(SqsError::new(
                INVALID_ATTRIBUTE_VALUE,
                "Invalid value for the parameter FifoQueue: a queue's type cannot be changed.",
            ));
        }
        self.check_dead_letter_target(&wanted).await?;
        self.queues
            .configure(self.caller, &name, &wanted.patch())
            .await?;
        Ok(json!({}))
    }

    async fn delete_queue(&self, request: QueueUrlOnly) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        self.queues.delete(self.caller, &name).await?;
        Ok(json!({}))
    }

    async fn purge_queue(&self, request: QueueUrlOnly) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        self.queues.purge(self.caller, &name).await?;
        Ok(json!({}))
    }

    async fn send_message(&self, request: SendMessage) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        let settings = self.queues.settings(self.caller, &name).await?;
        let sent = self.send(&name, &settings, request.entry).await?;
        Ok(Value::Object(sent))
    }

    /// Sends one message; answers the fields of `SendMessage`'s result.
    async fn send(
        &self,
        queue: &QueueName,
        settings: &crate::domain::QueueSettings,
        entry: SendEntry,
    ) -> SqsResult<Map<String, Value>> {
        let fifo = is_fifo(queue, settings);
        let body = entry.message_body.ok_or_else(|| {
            SqsError::new(
                MISSING_PARAMETER,
                "The request must contain the parameter MessageBody.",
            )
        })?;
        let delay = match entry.delay_seconds {
            Some(_) if fifo => {
                return Err(SqsError::new(
                    INVALID_PARAMETER_VALUE,
                    "Value for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
                ))
            }
            Some(seconds) if seconds > MAX_DELAY_SECONDS => {
                return Err(SqsError::new(
                    INVALID_PARAMETER_VALUE,
                    format!("Value {seconds} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= {MAX_DELAY_SECONDS}."),
                ))
            }
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => None,
        };
        if let Some(group) = &entry.message_group_id {
            check_group(group).map_err(|e| {
                SqsError::new(INVALID_PARAMETER_VALUE, format!("MessageGroupId: {e}"))
            })?;
        }
        let key = if fifo {
            if entry.message_group_id.is_none() {
                return Err(SqsError::new(
                    MISSING_PARAMETER,
                    "The request must contain the parameter MessageGroupId.",
                ));
            }
            match entry.message_deduplication_id {
                Some(id) => {
                    check_deduplication_id(&id)?;
                    Some(format!("sqs:{id}"))
                }
                None if settings.content_deduplication => {
                    Some(format!("sqs:{}", hex(&Sha256::digest(body.as_bytes()))))
                }
                None => {
                    return Err(SqsError::new(
                        INVALID_PARAMETER_VALUE,
                        "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                    ))
                }
            }
        } else {
            if entry.message_deduplication_id.is_some() {
                return Err(SqsError::new(
                    INVALID_PARAMETER_VALUE,
                    "Value for parameter MessageDeduplicationId is invalid. Reason: The request include parameter that is not valid for this queue type.",
                ));
            }
            None
        };
        let attributes = entry.message_attributes;
        let md5_attributes = message::md5_of_attributes(&attributes);
        let stored = message::store(&body, attributes)?;
        let new = NewMessage {
            body: stored.body,
            group: entry.message_group_id,
            meta: stored.meta,
        };
        let id = match self
            .queues
            .push(self.caller, queue.clone(), vec![new], delay, key)
            .await?
        {
            PushOutcome::Created(ids) => ids.first().copied().unwrap_or_default(),
            PushOutcome::Duplicate(id) => id,
        };
        let mut sent = Map::new();
        sent.insert("MessageId".into(), json!(id.to_string()));
        sent.insert(
            "MD5OfMessageBody".into(),
            json!(message::md5_of_body(&body)),
        );
        if let Some(md5) = md5_attributes {
            sent.insert("MD5OfMessageAttributes".into(), json!(md5));
        }
        if fifo {
            sent.insert("SequenceNumber".into(), json!(format!("{id:020}")));
        }
        Ok(sent)
    }

    async fn send_message_batch(&self, request: SendMessageBatch) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        check_batch(request.entries.iter().map(|e| e.id.as_str()))?;
        let size: usize = request
            .entries
            .iter()
            .map(|e| e.entry.message_body.as_ref().map_or(0, String::len))
            .sum();
        if size > message::MAX_MESSAGE_BYTES {
            return Err(SqsError::new(
                BATCH_REQUEST_TOO_LONG,
                format!(
                    "Batch requests cannot be longer than {} bytes.",
                    message::MAX_MESSAGE_BYTES
                ),
            ));
        }
        let settings = self.queues.settings(self.caller, &name).await?;
        let (mut successful, mut failed) = (Vec::new(), Vec::new());
        for entry in request.entries {
            match self.send(&name, &settings, entry.entry).await {
                Ok(mut sent) => {
                    sent.insert("Id".into(), json!(entry.id));
                    successful.push(Value::Object(sent));
                }
                Err(error) => failed.push(failure(&entry.id, &error)),
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn receive_message(&self, request: ReceiveMessage) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        let count = request.max_number_of_messages.unwrap_or(1);
        if !(1..=MAX_RECEIVE).contains(&count) {
            return Err(SqsError::new(
                INVALID_PARAMETER_VALUE,
                format!("Value {count} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and {MAX_RECEIVE}, if provided."),
            ));
        }
        let wait = match request.wait_time_seconds {
            Some(seconds) if seconds > MAX_WAIT_SECONDS => {
                return Err(SqsError::new(
                    INVALID_PARAMETER_VALUE,
                    format!("Value {seconds} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= {MAX_WAIT_SECONDS}, if provided."),
                ))
            }
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => None,
        };
        let lease = request.visibility_timeout.map(visibility).transpose()?;
        let messages = self
            .queues
            .receive(self.caller, &name, ReceiveRequest { count, lease, wait })
            .await?;
        if messages.is_empty() {
            return Ok(json!({}));
        }
        let system: Vec<String> = request
            .attribute_names
            .into_iter()
            .chain(request.message_system_attribute_names)
            .collect();
        let shown: Vec<Value> = messages
            .into_iter()
            .map(|m| shown_message(m, &system, &request.message_attribute_names))
            .collect();
        Ok(json!({ "Messages": shown }))
    }

    async fn delete_message(&self, request: ReceiptRequest) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        let receipt = receipt(request.receipt_handle.as_deref())?;
        // As SQS: deleting with an old receipt handle is not an error.
        self.queues
            .settle(self.caller, &name, &[receipt.to_string()], Settlement::Ack)
            .await?;
        Ok(json!({}))
    }

    async fn delete_message_batch(&self, request: ReceiptBatch) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        check_batch(request.entries.iter().map(|e| e.id.as_str()))?;
        let (mut successful, mut failed) = (Vec::new(), Vec::new());
        let mut receipts = Vec::new();
        for entry in &request.entries {
            match receipt(entry.receipt_handle.as_deref()) {
                Ok(receipt) => receipts.push((entry.id.clone(), receipt)),
                Err(error) => failed.push(failure(&entry.id, &error)),
            }
        }
        if !receipts.is_empty() {
            let all: Vec<String> = receipts.iter().map(|(_, r)| r.to_string()).collect();
            self.queues
                .settle(self.caller, &name, &all, Settlement::Ack)
                .await?;
            successful.extend(receipts.into_iter().map(|(id, _)| json!({ "Id": id })));
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn change_visibility(&self, request: VisibilityRequest) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        self.set_visibility(
            &name,
            request.receipt_handle.as_deref(),
            request.visibility_timeout,
        )
        .await?;
        Ok(json!({}))
    }

    async fn set_visibility(
        &self,
        queue: &QueueName,
        handle: Option<&str>,
        seconds: Option<u64>,
    ) -> SqsResult<()> {
        let receipt = receipt(handle)?;
        let seconds = seconds.ok_or_else(|| {
            SqsError::new(
                MISSING_PARAMETER,
                "The request must contain the parameter VisibilityTimeout.",
            )
        })?;
        let settlement = if seconds == 0 {
            Settlement::Nack {
                delay: Duration::ZERO,
            }
        } else {
            Settlement::Extend {
                lease: visibility(seconds)?,
            }
        };
        let settled = self
            .queues
            .settle(self.caller, queue, &[receipt.to_string()], settlement)
            .await?;
        if settled.applied.is_empty() {
            return Err(SqsError::new(
                MESSAGE_NOT_INFLIGHT,
                format!("Value {receipt} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."),
            ));
        }
        Ok(())
    }

    async fn change_visibility_batch(&self, request: VisibilityBatch) -> SqsResult<Value> {
        let name = self.queue_of(&request.queue_url)?;
        check_batch(request.entries.iter().map(|e| e.id.as_str()))?;
        let (mut successful, mut failed) = (Vec::new(), Vec::new());
        for entry in request.entries {
            match self
                .set_visibility(
                    &name,
                    entry.receipt_handle.as_deref(),
                    entry.visibility_timeout,
                )
                .await
            {
                Ok(()) => successful.push(json!({ "Id": entry.id })),
                Err(error) if error.code.status.is_client_error() => {
                    failed.push(failure(&entry.id, &error))
                }
                Err(error) => return Err(error),
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }
}

/// Whether a queue is an SQS FIFO queue: its name says so and it orders by group.
pub fn is_fifo(queue: &QueueName, settings: &crate::domain::QueueSettings) -> bool {
    queue.as_str().ends_with(".fifo") && settings.ordering == Ordering::Group
}

fn not_found() -> SqsError {
    SqsError::new(QUEUE_DOES_NOT_EXIST, "The specified queue does not exist.")
}

/// A visibility timeout in seconds as a lease: 0 is the shortest lease Hopper takes.
fn visibility(seconds: u64) -> SqsResult<Duration> {
    if seconds > MAX_VISIBILITY_SECONDS {
        return Err(SqsError::new(
            INVALID_PARAMETER_VALUE,
            format!("Value {seconds} for parameter VisibilityTimeout is invalid. Reason: Must be >= 0 and <= {MAX_VISIBILITY_SECONDS}."),
        ));
    }
    Ok(Duration::from_secs(seconds).max(MIN_LEASE))
}

fn receipt(handle: Option<&str>) -> SqsResult<Receipt> {
    let handle = handle.filter(|h| !h.is_empty()).ok_or_else(|| {
        SqsError::new(
            MISSING_PARAMETER,
            "The request must contain the parameter ReceiptHandle.",
        )
    })?;
    Receipt::parse(handle).map_err(|_| {
        SqsError::new(
            RECEIPT_HANDLE_IS_INVALID,
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    })
}

fn check_deduplication_id(id: &str) -> SqsResult<()> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SqsError::new(
            INVALID_PARAMETER_VALUE,
            "MessageDeduplicationId must be 1 to 128 printable ASCII characters.",
        ));
    }
    Ok(())
}

/// Refuses an empty batch, one too long, and ids that repeat or are malformed.
fn check_batch<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> SqsResult<()> {
    if ids.len() == 0 {
        return Err(SqsError::new(
            EMPTY_BATCH_REQUEST,
            "There should be at least one entry in the request.",
        ));
    }
    if ids.len() > MAX_BATCH_ENTRIES {
        return Err(SqsError::new(
            TOO_MANY_ENTRIES,
            format!(
                "Maximum number of entries per request are {MAX_BATCH_ENTRIES}. You have sent {}.",
                ids.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for id in ids {
        let valid = !id.is_empty()
            && id.len() <= 80
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(SqsError::new(
                INVALID_BATCH_ENTRY_ID,
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::new(
                BATCH_IDS_NOT_DISTINCT,
                format!("Id {id} repeated."),
            ));
        }
    }
    Ok(())
}

fn failure(id: &str, error: &SqsError) -> Value {
    json!({
        "Id": id,
        "SenderFault": error.code.sender,
        "Code": error.code.json,
        "Message": error.message,
    })
}

/// A received message as `ReceiveMessage` shows it, with the system attributes in
/// `system` and the message attributes `wanted` names (`All`, `.*`, `prefix.*` or names).
fn shown_message(message: Message, system: &[String], wanted: &[String]) -> Value {
    let (body, attributes) = message::load(message.body, message.meta.as_deref());
    let mut shown = Map::new();
    shown.insert("MessageId".into(), json!(message.id.to_string()));
    if let Some(receipt) = message.receipt {
        shown.insert("ReceiptHandle".into(), json!(receipt.to_string()));
    }
    shown.insert("MD5OfBody".into(), json!(message::md5_of_body(&body)));
    shown.insert("Body".into(), json!(body));
    let all = system.iter().any(|n| n == "All");
    let asked = |name: &str| all || system.iter().any(|n| n == name);
    let mut system_attributes = BTreeMap::new();
    if asked("ApproximateReceiveCount") {
        system_attributes.insert("ApproximateReceiveCount", message.attempts.to_string());
    }
    if asked("SentTimestamp") {
        system_attributes.insert("SentTimestamp", message.enqueued_at.to_string());
    }
    if asked("ApproximateFirstReceiveTimestamp") {
        let first = message.first_received_at.unwrap_or(message.enqueued_at);
        system_attributes.insert("ApproximateFirstReceiveTimestamp", first.to_string());
    }
    if asked("SenderId") {
        system_attributes.insert("SenderId", ACCOUNT.to_owned());
    }
    if let Some(group) = &message.group {
        if asked("MessageGroupId") {
            system_attributes.insert("MessageGroupId", group.clone());
        }
        if asked("SequenceNumber") {
            system_attributes.insert("SequenceNumber", format!("{:020}", message.id));
        }
    }
    if !system_attributes.is_empty() {
        shown.insert("Attributes".into(), json!(system_attributes));
    }
    let chosen: Attributes = attributes
        .into_iter()
        .filter(|(name, _)| {
            wanted.iter().any(|w| {
                w == "All"
                    || w == ".*"
                    || w == name
                    || w.strip_suffix(".*")
                        .is_some_and(|prefix| name.starts_with(&format!("{prefix}.")))
            })
        })
        .collect();
    if let Some(md5) = message::md5_of_attributes(&chosen) {
        shown.insert("MD5OfMessageAttributes".into(), json!(md5));
        shown.insert("MessageAttributes".into(), json!(chosen));
    }
    Value::Object(shown)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request object as the action's parameters; a wrong shape is the caller's error.
fn parse<T: DeserializeOwned>(params: Value) -> SqsResult<T> {
    serde_path_to_error::deserialize(params).map_err(|error| {
        let path = error.path().to_string();
        SqsError::new(
            INVALID_PARAMETER_VALUE,
            if path == "." {
                error.inner().to_string()
            } else {
                format!("{path}: {}", error.inner())
            },
        )
    })
}

/// A number as JSON writes it or as the query protocol's text does.
fn lenient_number<'de, D: serde::Deserializer<'de>, T: std::str::FromStr + TryFrom<u64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    let invalid = || serde::de::Error::custom("must be a whole number");
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(invalid),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

/// A list, or one value the query protocol sent without a number.
fn lenient_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(serde::de::Error::custom("must be a list of strings")),
            })
            .collect(),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(_) => Err(serde::de::Error::custom("must be a list of strings")),
    }
}

/// Attribute values: text, or numbers and booleans some clients send unquoted.
fn lenient_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            _ => Err(serde::de::Error::custom(format!(
                "attribute {k} must be text"
            ))),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueue {
    #[serde(default)]
    queue_name: String,
    #[serde(default, deserialize_with = "lenient_map")]
    attributes: BTreeMap<String, String>,
    #[serde(default, rename = "tags")]
    _tags: Option<Value>,
    #[serde(default, rename = "Tags")]
    _tags_query: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueUrl {
    #[serde(default)]
    queue_name: String,
    #[serde(default, rename = "QueueOwnerAWSAccountId")]
    _owner: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQueues {
    queue_name_prefix: Option<String>,
    next_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    max_results: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeadLetterSources {
    queue_url: Option<String>,
    next_token: Option<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    max_results: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueUrlOnly {
    queue_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueAttributes {
    queue_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_list")]
    attribute_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetQueueAttributes {
    queue_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_map")]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEntry {
    message_body: Option<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    delay_seconds: Option<u64>,
    #[serde(default)]
    message_attributes: Attributes,
    #[serde(default, rename = "MessageSystemAttributes")]
    _system: Option<Value>,
    message_deduplication_id: Option<String>,
    message_group_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessage {
    queue_url: Option<String>,
    #[serde(flatten)]
    entry: SendEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendBatchEntry {
    #[serde(default)]
    id: String,
    #[serde(flatten)]
    entry: SendEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageBatch {
    queue_url: Option<String>,
    #[serde(default)]
    entries: Vec<SendBatchEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveMessage {
    queue_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_list")]
    attribute_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient_list")]
    message_system_attribute_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient_list")]
    message_attribute_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    max_number_of_messages: Option<u32>,
    #[serde(default, deserialize_with = "lenient_number")]
    visibility_timeout: Option<u64>,
    #[serde(default, deserialize_with = "lenient_number")]
    wait_time_seconds: Option<u64>,
    #[serde(default, rename = "ReceiveRequestAttemptId")]
    _attempt: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptRequest {
    queue_url: Option<String>,
    receipt_handle: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptEntry {
    #[serde(default)]
    id: String,
    receipt_handle: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptBatch {
    queue_url: Option<String>,
    #[serde(default)]
    entries: Vec<ReceiptEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VisibilityRequest {
    queue_url: Option<String>,
    receipt_handle: Option<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    visibility_timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VisibilityEntry {
    #[serde(default)]
    id: String,
    receipt_handle: Option<String>,
    #[serde(default, deserialize_with = "lenient_number")]
    visibility_timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VisibilityBatch {
    queue_url: Option<String>,
    #[serde(default)]
    entries: Vec<VisibilityEntry>,
}

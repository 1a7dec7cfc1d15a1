//! `/api/v1/queues`: push, pop, receive, settle, counts, settings, dead letters.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::PartialSchema;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::docs::{
    group_schema, header_param, party_schema, receipt_schema, receipts_schema,
    seconds_param_schema, NotFound,
};
use super::extract::{header_text, OptionalJson};
use super::params::{DeadQuery, PeekQuery, PopQuery, QueuePath, ReceiveQuery, RedriveQuery};
use super::{ApiError, AppJson, AppState, JsonBody, Path, Query, Reply};
use crate::auth::Principal;
use crate::delivery::DeliveryView;
use crate::domain::clock::rfc3339;
use crate::domain::delivery::DeliverySettings;
use crate::domain::queues::MAX_COUNT;
use crate::domain::settings::{
    optional_within, parse_duration_within, seconds_schema, within, Ordering, MAX_DELAY, MAX_LEASE,
    MIN_LEASE,
};
use crate::domain::{
    Message, NewMessage, PushOutcome, QueueInfo, QueueSettings, ReceiveRequest, SettingsPatch,
    Settled, Settlement, TaskCounts, Upsert,
};

/// Default `limit` when listing dead letters.
const DEAD_LETTER_PAGE: u32 = 100;
/// Default `limit` of a peek: a screenful.
const PEEK_PAGE: u32 = 10;

/// The queue routes, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(info, configure, delete))
        .routes(routes!(push, peek))
        .routes(routes!(push_batch))
        .routes(routes!(pop))
        .routes(routes!(receive))
        .routes(routes!(ack))
        .routes(routes!(nack))
        .routes(routes!(extend))
        .routes(routes!(purge))
        .routes(routes!(dead_letters))
        .routes(routes!(redrive))
}

/// A message as `pop`, `receive`, a peek and the dead letters hand it out.
#[derive(Serialize, ToSchema)]
pub struct MessageView {
    /// The message id (digits), unique in the store.
    #[schema(example = "42")]
    id: String,
    /// Proof of the lease (`receive` only): settles the message with ack, nack or extend.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = receipt_schema)]
    receipt: Option<String>,
    /// The JSON that was pushed, unchanged.
    #[schema(value_type = Value)]
    body: Box<RawValue>,
    /// Times handed out, this time included.
    attempts: u32,
    /// When it was pushed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    enqueued_at: String,
    /// Why its last delivery to an upstream failed (dead letters of delivering queues).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Its group, when it was pushed with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

impl MessageView {
    fn new(message: Message) -> Result<Self, ApiError> {
        Ok(MessageView {
            id: message.id.to_string(),
            receipt: message.receipt.as_ref().map(ToString::to_string),
            body: RawValue::from_string(message.body).map_err(|e| ApiError::Internal {
                context: "a stored message is not valid JSON",
                source: Box::new(e),
            })?,
            attempts: message.attempts,
            enqueued_at: rfc3339(message.enqueued_at),
            last_error: message.last_error,
            group: message.group,
        })
    }
}

/// `{"messages": [...]}`, oldest first.
#[derive(Serialize, ToSchema)]
pub struct MessagesView {
    /// The messages, oldest first; empty when there were none.
    messages: Vec<MessageView>,
}

fn messages_reply(messages: Vec<Message>) -> Result<Reply<MessagesView>, ApiError> {
    let messages = messages
        .into_iter()
        .map(MessageView::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reply::ok(MessagesView { messages }))
}

/// A queue's settings as the API shows them: durations in seconds, the delivery's
/// signing secret hidden.
#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    /// How long a received message stays leased, in seconds.
    lease: f64,
    /// Hand-outs before a message is a dead letter.
    max_attempts: u32,
    /// Age in seconds after which messages are dropped; `null` keeps them.
    retention: Option<f64>,
    /// How long an `Idempotency-Key` is remembered, in seconds.
    idempotency_window: f64,
    /// Hopper's own delivery of the messages to an upstream, if any.
    #[schema(schema_with = delivery_view_schema)]
    delivery: Option<DeliverySettings>,
    /// `group`: one message of each group at a time, in order; `any`: no such limit.
    ordering: Ordering,
    /// The queue that takes this queue's dead letters, if any.
    dead_letter_queue: Option<String>,
    /// Seconds a push without `Hopper-Delay` waits before it is ready.
    delay: f64,
    /// Seconds a receive without `wait` waits for a message.
    wait: f64,
    /// Whether SQS sends without a deduplication id are deduplicated by their body.
    content_deduplication: bool,
}

/// The delivery setting as shown: the settings' own schema, but a signing secret
/// is shown as `whsec_…`, never echoed.
fn delivery_view_schema() -> Schema {
    let mut shown = <DeliverySettings as PartialSchema>::schema();
    if let RefOr::T(Schema::Object(object)) = &mut shown {
        object.properties.insert(
            "signing_secret".to_owned(),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["whsec_…"]))
                .description(Some("Set: deliveries are signed; the secret is not shown"))
                .into(),
        );
    }
    Schema::OneOf(
        OneOfBuilder::new()
            .item(shown)
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

impl From<&QueueSettings> for SettingsView {
    fn from(settings: &QueueSettings) -> Self {
        SettingsView {
            lease: settings.lease.as_secs_f64(),
            max_attempts: settings.max_attempts,
            retention: settings.retention.map(|r| r.as_secs_f64()),
            idempotency_window: settings.idempotency_window.as_secs_f64(),
            delivery: settings.delivery.clone().map(|mut delivery| {
                // Shown as set, never echoed: it signs what receivers trust.
                if delivery.signing_secret.is_some() {
                    delivery.signing_secret = Some("whsec_…".into());
                }
                delivery
            }),
            ordering: settings.ordering,
            dead_letter_queue: settings.dead_letter_queue.as_ref().map(ToString::to_string),
            delay: settings.delay.as_secs_f64(),
            wait: settings.wait.as_secs_f64(),
            content_deduplication: settings.content_deduplication,
        }
    }
}

/// A queue's tasks by status.
#[derive(Serialize, ToSchema)]
pub struct TaskCountsView {
    /// Waiting for a worker.
    pending: u64,
    /// A worker holds the lease of their message.
    running: u64,
    /// Completed.
    succeeded: u64,
    /// Failed by a worker, or out of attempts.
    failed: u64,
    /// Their message was dropped unfinished.
    expired: u64,
}

impl From<&TaskCounts> for TaskCountsView {
    fn from(tasks: &TaskCounts) -> Self {
        TaskCountsView {
            pending: tasks.pending,
            running: tasks.running,
            succeeded: tasks.succeeded,
            failed: tasks.failed,
            expired: tasks.expired,
        }
    }
}

/// A queue with its counts and settings.
#[derive(Serialize, ToSchema)]
pub struct QueueView {
    /// The queue's name.
    name: String,
    /// Messages ready to be handed out.
    ready: u64,
    /// Messages under a lease that has not expired.
    leased: u64,
    /// Messages not ready yet (pushed or nacked with a delay).
    delayed: u64,
    /// Dead letters: messages out of attempts.
    dead: u64,
    /// Its settings.
    settings: SettingsView,
    /// Its tasks by status.
    tasks: TaskCountsView,
    /// This node's deliveries of it, when it delivers to an upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliveryView>,
}

impl QueueView {
    fn new(info: &QueueInfo, state: &AppState) -> Self {
        QueueView {
            delivery: info
                .settings
                .delivery
                .as_ref()
                .map(|_| state.deliveries.view(&info.name).unwrap_or_default()),
            name: info.name.to_string(),
            ready: info.counts.ready,
            leased: info.counts.leased,
            delayed: info.counts.delayed,
            dead: info.counts.dead,
            settings: SettingsView::from(&info.settings),
            tasks: TaskCountsView::from(&info.tasks),
        }
    }
}

/// `{"queues": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct QueuesView {
    /// Every queue the caller holds a grant on, by name.
    queues: Vec<QueueView>,
}

/// The headers a push reads.
#[derive(Debug, Default)]
pub struct PushHeaders {
    idempotency_key: Option<String>,
    delay: Option<Duration>,
    group: Option<String>,
}

fn idempotency_key_param() -> Parameter {
    header_param(
        "Idempotency-Key",
        false,
        "Within the queue's `idempotency_window`, a second push with this key stores nothing and answers the first push's id (200)",
        party_schema(),
    )
}

fn delay_param() -> Parameter {
    header_param(
        "Hopper-Delay",
        false,
        "Seconds before the message is ready (or with a unit: `500ms`, `2m`), at most 7 days",
        seconds_param_schema(MAX_DELAY),
    )
}

fn group_param() -> Parameter {
    header_param(
        "Hopper-Group",
        false,
        "The message's group: on a queue with `\"ordering\": \"group\"`, one message of a group is handed out at a time, in order. 1 to 128 printable ASCII characters",
        group_schema(),
    )
}

impl IntoParams for PushHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![idempotency_key_param(), delay_param(), group_param()]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PushHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let delay = header_text(headers, "hopper-delay")?
            .map(|raw| {
                parse_duration_within("Hopper-Delay", raw, Duration::ZERO, MAX_DELAY).map_err(
                    |_| {
                        ApiError::bad_request(format!(
                            "Hopper-Delay must be a number of seconds from 0 to {}",
                            MAX_DELAY.as_secs()
                        ))
                    },
                )
            })
            .transpose()?;
        Ok(PushHeaders {
            idempotency_key: header_text(headers, "idempotency-key")?.map(str::to_owned),
            delay,
            group: header_text(headers, "hopper-group")?.map(str::to_owned),
        })
    }
}

/// `{"id": "..."}`.
#[derive(Serialize, ToSchema)]
pub struct IdView {
    /// The message's id.
    #[schema(example = "1")]
    id: String,
}

/// `POST /queues/{q}/messages`: push one JSON body.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/messages",
    tag = "queues",
    operation_id = "push",
    summary = "Push one message",
    description = "Stores the JSON body as one message; the queue is created by its first push.",
    params(QueuePath, PushHeaders),
    request_body(content = Value, description = "Any JSON value, stored and handed out as sent", content_type = "application/json"),
    responses(
        (status = 201, description = "Stored", body = IdView),
        (status = 200, description = "The `Idempotency-Key` was seen within the window: nothing stored, the first push's id", body = IdView),
    )
)]
pub async fn push(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    headers: PushHeaders,
    body: JsonBody,
) -> Result<Reply<IdView>, ApiError> {
    let message = NewMessage {
        group: headers.group,
        ..NewMessage::from(body.text().to_owned())
    };
    let outcome = state
        .queues
        .push(
            &principal,
            queue,
            vec![message],
            headers.delay,
            headers.idempotency_key,
        )
        .await?;
    Ok(match outcome {
        PushOutcome::Created(ids) => Reply(
            StatusCode::CREATED,
            IdView {
                id: ids.first().map(ToString::to_string).unwrap_or_default(),
            },
        ),
        PushOutcome::Duplicate(id) => Reply::ok(IdView { id: id.to_string() }),
    })
}

/// `GET /queues/{q}/messages?limit=N`: the oldest ready messages, left as they are.
#[utoipa::path(
    get,
    path = "/api/v1/queues/{queue}/messages",
    tag = "queues",
    operation_id = "peek",
    summary = "Look at the oldest ready messages without taking them",
    description = "Up to `limit` of the oldest ready messages, as a receive would hand them out next, but nothing is written: they are not leased, and `attempts` is the hand-outs so far. Leased and delayed messages are not shown; no `receipt`.",
    params(QueuePath, PeekQuery),
    responses(
        (status = 200, description = "The oldest ready messages, oldest first; empty when none is ready", body = MessagesView),
        (status = 404, response = NotFound),
    )
)]
pub async fn peek(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    Query(query): Query<PeekQuery>,
) -> Result<Reply<MessagesView>, ApiError> {
    let limit = query.limit.map_or(PEEK_PAGE, |l| l.0);
    messages_reply(state.queues.peek(&principal, &queue, limit).await?)
}

/// Body of a batch push.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The messages, each any JSON value; all are stored or none.
    #[schema(value_type = Vec<Value>, min_items = 1, max_items = 1000)]
    messages: Vec<Box<RawValue>>,
    /// Each message's group, in the order of `messages` (`null` for none); without
    /// it, every message takes the `Hopper-Group` header's group, if any.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Option<String>>>)]
    groups: Option<Vec<Option<String>>>,
}

/// `{"ids": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct IdsView {
    /// The new messages' ids, in the order of the batch.
    ids: Vec<String>,
}

/// The headers a batch push reads.
#[derive(Debug)]
pub struct BatchHeaders {
    delay: Option<Duration>,
    group: Option<String>,
}

impl IntoParams for BatchHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![delay_param(), group_param()]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BatchHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.headers.contains_key("idempotency-key") {
            return Err(ApiError::bad_request(
                "Idempotency-Key applies to single pushes, not to batches",
            ));
        }
        let PushHeaders { delay, group, .. } =
            PushHeaders::from_request_parts(parts, state).await?;
        Ok(BatchHeaders { delay, group })
    }
}

/// `POST /queues/{q}/messages/batch`: push many bodies, all or nothing.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/messages/batch",
    tag = "queues",
    operation_id = "pushBatch",
    summary = "Push a batch of messages, all or nothing",
    params(QueuePath, BatchHeaders),
    request_body(content = BatchBody, content_type = "application/json"),
    responses((status = 201, description = "Every message stored", body = IdsView))
)]
pub async fn push_batch(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    headers: BatchHeaders,
    AppJson(batch): AppJson<BatchBody>,
) -> Result<Reply<IdsView>, ApiError> {
    let groups = match batch.groups {
        Some(groups) if groups.len() != batch.messages.len() => {
            return Err(ApiError::bad_request(
                "groups must hold one entry per message",
            ))
        }
        Some(groups) => groups,
        None => vec![headers.group; batch.messages.len()],
    };
    let messages = batch
        .messages
        .iter()
        .zip(groups)
        .map(|(body, group)| NewMessage {
            group,
            ..NewMessage::from(body.get().to_owned())
        })
        .collect();
    match state
        .queues
        .push(&principal, queue, messages, headers.delay, None)
        .await?
    {
        PushOutcome::Created(ids) => Ok(Reply(
            StatusCode::CREATED,
            IdsView {
                ids: ids.iter().map(ToString::to_string).collect(),
            },
        )),
        PushOutcome::Duplicate(_) => Err(ApiError::Internal {
            context: "a batch push was deduplicated",
            source: "unexpected duplicate outcome".into(),
        }),
    }
}

/// `POST /queues/{q}/pop?count=N`: remove and return the oldest ready messages.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/pop",
    tag = "queues",
    operation_id = "pop",
    summary = "Take the oldest ready messages away",
    description = "Removes and returns up to `count` of the oldest ready messages; an empty list when none is ready.",
    params(QueuePath, PopQuery),
    responses(
        (status = 200, description = "The messages taken, oldest first", body = MessagesView),
        (status = 404, response = NotFound),
    )
)]
pub async fn pop(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    Query(query): Query<PopQuery>,
) -> Result<Reply<MessagesView>, ApiError> {
    let count = query.count.map_or(1, |c| c.0);
    messages_reply(state.queues.pop(&principal, &queue, count).await?)
}

/// `POST /queues/{q}/receive?count=N&lease=S&wait=S`: lease messages, long-polling while empty.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/receive",
    tag = "queues",
    operation_id = "receive",
    summary = "Lease messages, waiting for one if none is ready",
    description = "Leases up to `count` of the oldest ready messages for `lease` seconds; each comes with a `receipt` that acks, nacks or extends it. While none is ready, waits up to `wait` seconds, woken at once by a push.",
    params(QueuePath, ReceiveQuery),
    responses(
        (status = 200, description = "The messages leased, oldest first; empty when the wait ended without one", body = MessagesView),
        (status = 404, response = NotFound),
    )
)]
pub async fn receive(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    Query(query): Query<ReceiveQuery>,
) -> Result<Reply<MessagesView>, ApiError> {
    let request = ReceiveRequest {
        count: query.count.map_or(1, |c| c.0),
        lease: query.lease.map(|l| l.0),
        wait: query.wait.map(|w| w.0),
    };
    messages_reply(state.queues.receive(&principal, &queue, request).await?)
}

/// Receipts, as `receive` handed them out.
type Receipts = Vec<String>;

/// Body of an ack.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The receipts of the messages done with.
    #[schema(schema_with = receipts_schema)]
    receipts: Receipts,
}

/// Body of a nack.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackBody {
    /// The receipts of the messages to give back.
    #[schema(schema_with = receipts_schema)]
    receipts: Receipts,
    /// Seconds before they are ready again (or with a unit); 0 when absent, at most 7 days.
    #[serde(default, deserialize_with = "delay_value")]
    #[schema(schema_with = delay_schema)]
    delay: Option<Duration>,
}

/// Body of an extend.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// The receipts of the leases to extend.
    #[schema(schema_with = receipts_schema)]
    receipts: Receipts,
    /// The new lease, counted from now, in seconds (or with a unit).
    #[serde(deserialize_with = "lease_value")]
    #[schema(schema_with = extend_lease_schema)]
    lease: Duration,
}

/// The schema of [`delay_value`].
pub(crate) fn delay_schema() -> utoipa::openapi::Schema {
    seconds_schema(
        "Before the message is ready again; `null` or absent is none.",
        Duration::ZERO,
        Some(MAX_DELAY),
        true,
    )
}

fn extend_lease_schema() -> utoipa::openapi::Schema {
    seconds_schema(
        "The new lease, counted from now.",
        MIN_LEASE,
        Some(MAX_LEASE),
        false,
    )
}

/// A nack's or a task retry's delay: up to [`MAX_DELAY`], `null` for none.
pub(crate) fn delay_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    optional_within(d, Duration::ZERO, MAX_DELAY)
}

fn lease_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    within(d, MIN_LEASE, MAX_LEASE)
}

/// What an ack did.
#[derive(Serialize, ToSchema)]
pub struct AckedView {
    /// Messages acked.
    acked: usize,
    /// Receipts that no longer held their lease (or named no message); nothing changed for them.
    stale: Vec<String>,
}

/// What a nack did.
#[derive(Serialize, ToSchema)]
pub struct NackedView {
    /// Messages given back.
    nacked: usize,
    /// Receipts that no longer held their lease; nothing changed for them.
    stale: Vec<String>,
}

/// What an extend did.
#[derive(Serialize, ToSchema)]
pub struct ExtendedView {
    /// Leases extended.
    extended: usize,
    /// Receipts that no longer held their lease; nothing changed for them.
    stale: Vec<String>,
}

fn stale(settled: &Settled) -> Vec<String> {
    settled.stale.iter().map(ToString::to_string).collect()
}

/// `POST /queues/{q}/ack` `{"receipts": [...]}`.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/ack",
    tag = "queues",
    operation_id = "ack",
    summary = "Done with leased messages: delete them",
    params(QueuePath),
    request_body(content = AckBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Acked; stale receipts listed, not applied", body = AckedView),
        (status = 404, response = NotFound),
    )
)]
pub async fn ack(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    AppJson(body): AppJson<AckBody>,
) -> Result<Reply<AckedView>, ApiError> {
    let settled = state
        .queues
        .settle(&principal, &queue, &body.receipts, Settlement::Ack)
        .await?;
    Ok(Reply::ok(AckedView {
        acked: settled.applied.len(),
        stale: stale(&settled),
    }))
}

/// `POST /queues/{q}/nack` `{"receipts": [...], "delay": S}`.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/nack",
    tag = "queues",
    operation_id = "nack",
    summary = "Give leased messages back, now or after a delay",
    description = "Each message is ready again after `delay`, or a dead letter when it is out of attempts.",
    params(QueuePath),
    request_body(content = NackBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Given back; stale receipts listed, not applied", body = NackedView),
        (status = 404, response = NotFound),
    )
)]
pub async fn nack(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    AppJson(body): AppJson<NackBody>,
) -> Result<Reply<NackedView>, ApiError> {
    let settlement = Settlement::Nack {
        delay: body.delay.unwrap_or(Duration::ZERO),
    };
    let settled = state
        .queues
        .settle(&principal, &queue, &body.receipts, settlement)
        .await?;
    Ok(Reply::ok(NackedView {
        nacked: settled.applied.len(),
        stale: stale(&settled),
    }))
}

/// `POST /queues/{q}/extend` `{"receipts": [...], "lease": S}`.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/extend",
    tag = "queues",
    operation_id = "extend",
    summary = "Keep leased messages longer",
    params(QueuePath),
    request_body(content = ExtendBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Extended; stale receipts listed, not applied", body = ExtendedView),
        (status = 404, response = NotFound),
    )
)]
pub async fn extend(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    AppJson(body): AppJson<ExtendBody>,
) -> Result<Reply<ExtendedView>, ApiError> {
    let settlement = Settlement::Extend { lease: body.lease };
    let settled = state
        .queues
        .settle(&principal, &queue, &body.receipts, settlement)
        .await?;
    Ok(Reply::ok(ExtendedView {
        extended: settled.applied.len(),
        stale: stale(&settled),
    }))
}

/// `GET /queues/{q}`: counts and settings.
#[utoipa::path(
    get,
    path = "/api/v1/queues/{queue}",
    tag = "queues",
    operation_id = "getQueue",
    summary = "A queue's counts and settings",
    params(QueuePath),
    responses(
        (status = 200, description = "The queue", body = QueueView),
        (status = 404, response = NotFound),
    )
)]
pub async fn info(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Reply<QueueView>, ApiError> {
    let info = state.queues.info(&principal, &queue).await?;
    Ok(Reply::ok(QueueView::new(&info, &state)))
}

/// `GET /queues`: every queue the caller holds a grant on, with counts.
#[utoipa::path(
    get,
    path = "/api/v1/queues",
    tag = "queues",
    operation_id = "listQueues",
    summary = "Every queue the caller holds a grant on",
    responses((status = 200, description = "The queues, by name", body = QueuesView))
)]
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Reply<QueuesView>, ApiError> {
    let queues = state
        .queues
        .list(&principal)
        .await?
        .iter()
        .map(|info| QueueView::new(info, &state))
        .collect();
    Ok(Reply::ok(QueuesView { queues }))
}

/// `PUT /queues/{q}`: create the queue or change its settings; absent fields keep their value.
#[utoipa::path(
    put,
    path = "/api/v1/queues/{queue}",
    tag = "queues",
    operation_id = "configureQueue",
    summary = "Create a queue or change its settings",
    description = "Fields left out keep their value (a new queue's are the defaults); no body at all creates the queue with the defaults.",
    params(QueuePath),
    request_body(content = Option<SettingsPatch>, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = QueueView),
        (status = 200, description = "Updated", body = QueueView),
    )
)]
pub async fn configure(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    OptionalJson(patch): OptionalJson<SettingsPatch>,
) -> Result<Reply<QueueView>, ApiError> {
    let (upsert, info) = state.queues.configure(&principal, &queue, &patch).await?;
    if patch.delivery.is_some() {
        state.deliveries.settings_changed();
    }
    let status = match upsert {
        Upsert::Created => StatusCode::CREATED,
        Upsert::Updated => StatusCode::OK,
    };
    Ok(Reply(status, QueueView::new(&info, &state)))
}

/// What a delete removed.
#[derive(Serialize, ToSchema)]
pub struct DeletedView {
    /// The queue.
    name: String,
    /// Messages deleted with it, dead letters included.
    deleted_messages: u64,
}

/// `DELETE /queues/{q}`: the queue and its messages.
#[utoipa::path(
    delete,
    path = "/api/v1/queues/{queue}",
    tag = "queues",
    operation_id = "deleteQueue",
    summary = "Delete a queue and its messages",
    description = "Its long-polls end with 404; its unfinished tasks expire.",
    params(QueuePath),
    responses(
        (status = 200, description = "Deleted", body = DeletedView),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Reply<DeletedView>, ApiError> {
    let removed = state.queues.delete(&principal, &queue).await?;
    Ok(Reply::ok(DeletedView {
        name: queue.to_string(),
        deleted_messages: removed,
    }))
}

/// What a purge removed.
#[derive(Serialize, ToSchema)]
pub struct PurgedView {
    /// Messages deleted, dead letters included.
    purged: u64,
}

/// `POST /queues/{q}/purge`: every message, dead letters included.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/purge",
    tag = "queues",
    operation_id = "purgeQueue",
    summary = "Delete every message of a queue, keeping the queue",
    params(QueuePath),
    responses(
        (status = 200, description = "Purged", body = PurgedView),
        (status = 404, response = NotFound),
    )
)]
pub async fn purge(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Reply<PurgedView>, ApiError> {
    let purged = state.queues.purge(&principal, &queue).await?;
    Ok(Reply::ok(PurgedView { purged }))
}

/// `GET /queues/{q}/dead?limit=N`: the oldest dead letters.
#[utoipa::path(
    get,
    path = "/api/v1/queues/{queue}/dead",
    tag = "queues",
    operation_id = "deadLetters",
    summary = "The oldest dead letters (messages out of attempts)",
    params(QueuePath, DeadQuery),
    responses(
        (status = 200, description = "Dead letters, oldest first, with `last_error` on delivering queues", body = MessagesView),
        (status = 404, response = NotFound),
    )
)]
pub async fn dead_letters(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    Query(query): Query<DeadQuery>,
) -> Result<Reply<MessagesView>, ApiError> {
    let limit = query.limit.map_or(DEAD_LETTER_PAGE, |l| l.0);
    messages_reply(state.queues.dead_letters(&principal, &queue, limit).await?)
}

/// What a redrive did.
#[derive(Serialize, ToSchema)]
pub struct RedrivenView {
    /// Dead letters made ready again, attempts reset to 0.
    redriven: u64,
}

/// `POST /queues/{q}/dead/redrive?count=N`: dead letters back to ready, attempts reset.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/dead/redrive",
    tag = "queues",
    operation_id = "redrive",
    summary = "Make dead letters ready again",
    description = "The oldest `count` dead letters are ready again with attempts reset to 0; their tasks wait for a worker again.",
    params(QueuePath, RedriveQuery),
    responses(
        (status = 200, description = "Redriven", body = RedrivenView),
        (status = 404, response = NotFound),
    )
)]
pub async fn redrive(
    principal: Principal,
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    Query(query): Query<RedriveQuery>,
) -> Result<Reply<RedrivenView>, ApiError> {
    let count = query.count.map_or(MAX_COUNT, |c| c.0);
    let redriven = state.queues.redrive(&principal, &queue, count).await?;
    Ok(Reply::ok(RedrivenView { redriven }))
}

//! `/api/v1/queues`: push, pop, receive, settle, stats, settings, dead letters.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    header_text, parse_json, reply, ApiError, AppJson, AppState, JsonBytes, Params, QueuePath,
};
use crate::auth::Principal;
use crate::domain::clock::rfc3339;
use crate::domain::queues::MAX_COUNT;
use crate::domain::settings::{parse_duration, SettingsView};
use crate::domain::{Action, QueueName, ReceiveRequest, ResourceKind, SettingsPatch};
use crate::domain::{Message, PushOutcome, QueueInfo, Settled, Settlement};

/// Default and cap of `limit` when listing dead letters.
const DEAD_LETTER_PAGE: u32 = 100;

fn authorize(principal: &Principal, queue: &QueueName, action: Action) -> Result<(), ApiError> {
    Ok(principal.authorize(ResourceKind::Queue, queue.as_str(), action)?)
}

fn authorize_any(principal: &Principal, queue: &QueueName) -> Result<(), ApiError> {
    Ok(principal.authorize_any(ResourceKind::Queue, queue.as_str())?)
}

#[derive(Serialize)]
struct MessageView<'a> {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<String>,
    body: &'a RawValue,
    attempts: u32,
    enqueued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

#[derive(Serialize)]
struct MessagesView<'a> {
    messages: Vec<MessageView<'a>>,
}

fn messages_reply(messages: &[Message]) -> Response {
    let views = messages
        .iter()
        .map(|m| {
            Ok(MessageView {
                id: m.id.to_string(),
                receipt: m.receipt.as_ref().map(ToString::to_string),
                body: serde_json::from_str(&m.body).map_err(|e| ApiError::Internal {
                    context: "a stored message is not valid JSON",
                    source: Box::new(e),
                })?,
                attempts: m.attempts,
                enqueued_at: rfc3339(m.enqueued_at),
                last_error: m.last_error.as_deref(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>();
    match views {
        Ok(messages) => reply(StatusCode::OK, &MessagesView { messages }),
        Err(error) => axum::response::IntoResponse::into_response(error),
    }
}

#[derive(Serialize)]
struct QueueView {
    name: String,
    ready: u64,
    leased: u64,
    delayed: u64,
    dead: u64,
    settings: SettingsView,
    tasks: TaskCountsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<crate::delivery::DeliveryView>,
}

#[derive(Serialize)]
struct TaskCountsView {
    pending: u64,
    running: u64,
    succeeded: u64,
    failed: u64,
    expired: u64,
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
            tasks: TaskCountsView {
                pending: info.tasks.pending,
                running: info.tasks.running,
                succeeded: info.tasks.succeeded,
                failed: info.tasks.failed,
                expired: info.tasks.expired,
            },
        }
    }
}

fn delay_header(headers: &HeaderMap) -> Result<Duration, ApiError> {
    match header_text(headers, "hopper-delay")? {
        None => Ok(Duration::ZERO),
        Some(raw) => parse_duration(raw)
            .map_err(|_| ApiError::bad_request("Hopper-Delay must be a number of seconds")),
    }
}

/// Validates a JSON body and returns it as compact-as-sent text.
fn json_text(bytes: &[u8]) -> Result<String, ApiError> {
    let raw: &RawValue = parse_json(bytes)?;
    Ok(raw.get().to_owned())
}

#[derive(Serialize)]
struct IdView {
    id: String,
}

/// `POST /queues/{q}/messages`: push one JSON body.
pub async fn push(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Produce)?;
    let delay = delay_header(&headers)?;
    let key = header_text(&headers, "idempotency-key")?.map(str::to_owned);
    let body = json_text(&body)?;
    let outcome = state.queues.push(queue, vec![body], delay, key).await?;
    Ok(match outcome {
        PushOutcome::Created(ids) => reply(
            StatusCode::CREATED,
            &IdView {
                id: ids.first().map(ToString::to_string).unwrap_or_default(),
            },
        ),
        PushOutcome::Duplicate(id) => reply(StatusCode::OK, &IdView { id: id.to_string() }),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

#[derive(Serialize)]
struct IdsView {
    ids: Vec<String>,
}

/// `POST /queues/{q}/messages/batch`: push many bodies, all or nothing.
pub async fn push_batch(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Produce)?;
    if headers.contains_key("idempotency-key") {
        return Err(ApiError::bad_request(
            "Idempotency-Key applies to single pushes, not to batches",
        ));
    }
    let delay = delay_header(&headers)?;
    let batch: BatchBody = parse_json(&body)?;
    let bodies = batch.messages.iter().map(|m| m.get().to_owned()).collect();
    match state.queues.push(queue, bodies, delay, None).await? {
        PushOutcome::Created(ids) => Ok(reply(
            StatusCode::CREATED,
            &IdsView {
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
pub async fn pop(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    params: Params,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Consume)?;
    let count = params.count("count", 1, MAX_COUNT)?;
    Ok(messages_reply(&state.queues.pop(&queue, count).await?))
}

/// `POST /queues/{q}/receive?count=N&lease=S&wait=S`: lease messages, long-polling while empty.
pub async fn receive(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    params: Params,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Consume)?;
    let request = ReceiveRequest {
        count: params.count("count", 1, MAX_COUNT)?,
        lease: params.duration("lease")?,
        wait: params.duration("wait")?.unwrap_or(Duration::ZERO),
    };
    Ok(messages_reply(
        &state.queues.receive(&queue, request).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// Body of ack, nack and extend.
pub struct SettleBody {
    receipts: Vec<String>,
    #[serde(default, with = "crate::domain::settings::opt_duration")]
    delay: Option<Duration>,
    #[serde(default, with = "crate::domain::settings::opt_duration")]
    lease: Option<Duration>,
}

fn settled_reply(verb: &str, settled: &Settled) -> Response {
    let stale: Vec<String> = settled.stale.iter().map(ToString::to_string).collect();
    reply(
        StatusCode::OK,
        &serde_json::json!({ verb: settled.applied.len(), "stale": stale }),
    )
}

/// `POST /queues/{q}/ack` `{"receipts": [...]}`.
pub async fn ack(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    AppJson(body): AppJson<SettleBody>,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Consume)?;
    if body.delay.is_some() || body.lease.is_some() {
        return Err(ApiError::bad_request("ack takes only receipts"));
    }
    let settled = state
        .queues
        .settle(&queue, &body.receipts, Settlement::Ack)
        .await?;
    Ok(settled_reply("acked", &settled))
}

/// `POST /queues/{q}/nack` `{"receipts": [...], "delay": S}`.
pub async fn nack(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    AppJson(body): AppJson<SettleBody>,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Consume)?;
    if body.lease.is_some() {
        return Err(ApiError::bad_request(
            "nack takes receipts and delay, not lease",
        ));
    }
    let settlement = Settlement::Nack {
        delay: body.delay.unwrap_or(Duration::ZERO),
    };
    let settled = state
        .queues
        .settle(&queue, &body.receipts, settlement)
        .await?;
    Ok(settled_reply("nacked", &settled))
}

/// `POST /queues/{q}/extend` `{"receipts": [...], "lease": S}`.
pub async fn extend(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    AppJson(body): AppJson<SettleBody>,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Consume)?;
    if body.delay.is_some() {
        return Err(ApiError::bad_request(
            "extend takes receipts and lease, not delay",
        ));
    }
    let lease = body
        .lease
        .ok_or_else(|| ApiError::bad_request("lease is required"))?;
    let settled = state
        .queues
        .settle(&queue, &body.receipts, Settlement::Extend { lease })
        .await?;
    Ok(settled_reply("extended", &settled))
}

/// `GET /queues/{q}`: counts and settings.
pub async fn info(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Response, ApiError> {
    authorize_any(&principal, &queue)?;
    let info = state.queues.info(&queue).await?;
    Ok(reply(StatusCode::OK, &QueueView::new(&info, &state)))
}

/// `GET /queues`: every queue the caller holds a grant on, with counts.
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let queues: Vec<QueueView> = state
        .queues
        .list()
        .await?
        .iter()
        .filter(|info| authorize_any(&principal, &info.name).is_ok())
        .map(|info| QueueView::new(info, &state))
        .collect();
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "queues": queues }),
    ))
}

/// `PUT /queues/{q}`: create the queue or change its settings; absent fields keep their value.
pub async fn configure(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Manage)?;
    let patch: SettingsPatch = if body.iter().all(u8::is_ascii_whitespace) {
        SettingsPatch::default()
    } else {
        parse_json(&body)?
    };
    let (upsert, info) = state.queues.configure(&queue, &patch).await?;
    if patch.delivery.is_some() {
        state.deliveries.settings_changed();
    }
    let status = match upsert {
        crate::domain::Upsert::Created => StatusCode::CREATED,
        crate::domain::Upsert::Updated => StatusCode::OK,
    };
    Ok(reply(status, &QueueView::new(&info, &state)))
}

/// `DELETE /queues/{q}`: the queue and its messages.
pub async fn delete(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Manage)?;
    let removed = state.queues.delete(&queue).await?;
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "name": queue.as_str(), "deleted_messages": removed }),
    ))
}

/// `POST /queues/{q}/purge`: every message, dead letters included.
pub async fn purge(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Manage)?;
    let purged = state.queues.purge(&queue).await?;
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "purged": purged }),
    ))
}

/// `GET /queues/{q}/dead?limit=N`: the oldest dead letters.
pub async fn dead_letters(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    params: Params,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Consume)?;
    let limit = params.count("limit", DEAD_LETTER_PAGE, MAX_COUNT)?;
    Ok(messages_reply(
        &state.queues.dead_letters(&queue, limit).await?,
    ))
}

/// `POST /queues/{q}/dead/redrive?count=N`: dead letters back to ready, attempts reset.
pub async fn redrive(
    principal: Principal,
    State(state): State<AppState>,
    QueuePath(queue): QueuePath,
    params: Params,
) -> Result<Response, ApiError> {
    authorize(&principal, &queue, Action::Manage)?;
    let count = params.count("count", MAX_COUNT, MAX_COUNT)?;
    let redriven = state.queues.redrive(&queue, count).await?;
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "redriven": redriven }),
    ))
}

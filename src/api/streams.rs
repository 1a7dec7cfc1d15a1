//! `/api/v1/streams`: seed 004's event server (produce, consume, ACK) with its exact
//! answers, plus stream listing, details, retention and owner transfer.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::parse_checked;
use super::docs::{header_param, owner_schema, party_schema, Locked, NotFound};
use super::extract::header_text;
use super::params::{EventPath, ReadQuery, StreamPath};
use super::{ApiError, AppJson, AppState, Form, JsonBody, Path, Query, Reply};
use crate::auth::Principal;
use crate::domain::streams::{check_party, ReadRequest, StreamRetention};
use crate::domain::{StoredEvent, StreamInfo};

/// Seed 004's answer when a second producer writes a stream.
const SECOND_WRITER: &str = "Second writers not allowed";

/// The stream routes, described.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(info, configure))
        .routes(routes!(append, read))
        .routes(routes!(ack))
        .routes(routes!(set_owner))
}

/// `X-Producer-ID`: who writes.
#[derive(Debug)]
pub struct ProducerHeader {
    producer: String,
}

impl IntoParams for ProducerHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "X-Producer-ID",
            true,
            "The producer; the first one to write a stream owns it",
            party_schema(),
        )]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ProducerHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = header_text(&parts.headers, "x-producer-id")?;
        Ok(ProducerHeader {
            producer: check_party("X-Producer-ID header", value)?,
        })
    }
}

/// `X-Consumer-ID`: whose offsets apply.
#[derive(Debug)]
pub struct ConsumerHeader {
    consumer: String,
}

impl IntoParams for ConsumerHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_param(
            "X-Consumer-ID",
            true,
            "The consumer; it has an offset per event name",
            party_schema(),
        )]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ConsumerHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = header_text(&parts.headers, "x-consumer-id")?;
        Ok(ConsumerHeader {
            consumer: check_party("X-Consumer-ID header", value)?,
        })
    }
}

/// An event in the event server's format; other fields are kept as sent.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventBody {
    /// What happened.
    event: EventHead,
    /// Where it happened.
    system: EventSystem,
    /// What caused it.
    trigger: EventTrigger,
    /// Its data.
    #[schema(value_type = Object)]
    payload: Value,
}

/// `event` of an event.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventHead {
    /// The event's name: consumers read and acknowledge by it.
    #[schema(min_length = 1, pattern = r"^[^\x00]+$")]
    name: String,
    /// The event's version.
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    version: i64,
}

/// `system` of an event: where it happened.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventSystem {
    /// The system's id.
    id: String,
    /// The system's name.
    name: String,
    /// When, as the system writes it.
    time: String,
    /// The system's time zone.
    timezone: String,
}

/// `trigger` of an event: what caused it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventTrigger {
    /// The trigger's type.
    #[schema(rename = "type")]
    kind: String,
    /// The trigger's name.
    name: String,
}

/// An event id: the event's position in its stream, as a JSON string.
#[derive(Serialize, ToSchema)]
#[schema(example = "1", pattern = r"^[0-9]+$")]
pub struct EventIdView(String);

/// `POST /streams/{s}/events` with `X-Producer-ID` → 200 `"<eventID>"`, or 423.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{stream}/events",
    tag = "streams",
    operation_id = "produceEvent",
    summary = "Append an event",
    description = "The first producer to write a stream owns it (the stream is created by its first event); another producer gets 423. A stream closed through the Durable Streams protocol, or made there with a content type other than JSON, takes no events (409).",
    params(StreamPath, ProducerHeader),
    request_body(content = EventBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored: the event's id", body = EventIdView),
        (status = 409, description = "The stream is closed, or holds no JSON"),
        (status = 423, response = Locked),
    )
)]
pub async fn append(
    principal: Principal,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    ProducerHeader { producer }: ProducerHeader,
    body: JsonBody,
) -> Result<Reply<EventIdView>, ApiError> {
    let parsed: Value = parse_checked(body.text())?;
    match state
        .streams
        .append(
            &principal,
            stream,
            producer,
            body.text().to_owned(),
            &parsed,
        )
        .await?
    {
        Some(id) => Ok(Reply::ok(EventIdView(id.to_string()))),
        None => Err(ApiError::Locked(SECOND_WRITER.into())),
    }
}

/// An event as consumers get it: the stored body with `"id"` added. The body is
/// spliced as text, not re-encoded, so it comes back byte for byte as posted.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct EventView(Box<RawValue>);

impl EventView {
    fn new(event: &StoredEvent) -> Result<EventView, ApiError> {
        let id = Value::String(event.id.to_string()).to_string();
        let map = || serde_json::from_str::<serde_json::Map<String, Value>>(&event.body);
        let has_own_id = map().map(|map| map.contains_key("id")).unwrap_or(true);
        let text = match event.body.strip_prefix('{') {
            Some(rest) if !has_own_id && rest.trim_start() != "}" => {
                format!("{{\"id\":{id},{rest}")
            }
            _ => {
                // A body with an `id` of its own (or not an object): Hopper's id wins.
                let mut map = map().unwrap_or_default();
                map.insert("id".into(), Value::String(event.id.to_string()));
                Value::Object(map).to_string()
            }
        };
        RawValue::from_string(text)
            .map(EventView)
            .map_err(|e| ApiError::Internal {
                context: "a stored event is not valid JSON",
                source: Box::new(e),
            })
    }
}

/// `GET /streams/{s}/events?eventName=E&limit=N[&after=ID][&wait=S]` with `X-Consumer-ID`.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{stream}/events",
    tag = "streams",
    operation_id = "consumeEvents",
    summary = "Read events after the consumer's offset",
    description = "The events named `eventName` after this consumer's acknowledged offset for that name, oldest first. Unacknowledged events come back on the next read.",
    params(StreamPath, ReadQuery, ConsumerHeader),
    responses(
        (status = 200, description = "Events, oldest first, each the body as appended with its `id` added", body = Vec<EventView>),
        (status = 404, response = NotFound),
    )
)]
pub async fn read(
    principal: Principal,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    Query(query): Query<ReadQuery>,
    ConsumerHeader { consumer }: ConsumerHeader,
) -> Result<Reply<Vec<EventView>>, ApiError> {
    let request = ReadRequest {
        consumer,
        event_name: query.event_name,
        limit: query.limit.0,
        after: query.after.map(|a| a.0),
        wait: query.wait.map_or(Duration::ZERO, |w| w.0),
    };
    let events = state.streams.read(&principal, &stream, request).await?;
    let events = events
        .iter()
        .map(EventView::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reply::ok(events))
}

/// The form body of an ACK.
#[derive(Deserialize, ToSchema)]
pub struct AckForm {
    /// Always `ACK`.
    #[schema(value_type = String, pattern = "^ACK$")]
    action: String,
}

/// `"OK"`.
#[derive(Serialize, ToSchema)]
#[schema(example = "OK", pattern = "^OK$")]
pub struct OkView(&'static str);

/// `POST /streams/{s}/events/{eventID}`, form body `action=ACK`, `X-Consumer-ID` → 200 `"OK"`.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{stream}/events/{event}",
    tag = "streams",
    operation_id = "acknowledgeEvent",
    summary = "Acknowledge events up to this one",
    description = "Moves this consumer's offset for the event's name up to the event (never back).",
    params(EventPath, ConsumerHeader),
    request_body(content = AckForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Acknowledged", body = OkView),
        (status = 404, response = NotFound),
    )
)]
pub async fn ack(
    principal: Principal,
    State(state): State<AppState>,
    Path(EventPath { stream, event }): Path<EventPath>,
    ConsumerHeader { consumer }: ConsumerHeader,
    Form(form): Form<AckForm>,
) -> Result<Reply<OkView>, ApiError> {
    if form.action != "ACK" {
        return Err(ApiError::bad_request(format!(
            "action must be ACK, got {:?}",
            form.action
        )));
    }
    // Seed 004 answers a plain "Not Found" for an unknown stream or event.
    let not_found = || ApiError::NotFound(String::new());
    // Digits only: `+5` or `05` name no event, as they name no event in seed 004.
    let event = match event.parse::<i64>() {
        Ok(id) if id.to_string() == event => id,
        _ => return Err(not_found()),
    };
    match state
        .streams
        .ack(&principal, &stream, &consumer, event)
        .await
    {
        Ok(true) => Ok(Reply::ok(OkView("OK"))),
        Ok(false) | Err(crate::domain::DomainError::NotFound(_)) => Err(not_found()),
        Err(error) => Err(error.into()),
    }
}

/// One consumer's offset for one event name.
#[derive(Serialize, ToSchema)]
pub struct ConsumerView {
    /// The consumer.
    consumer: String,
    /// The event name.
    event_name: String,
    /// The last acknowledged event id.
    offset: Option<String>,
    /// Events of that name after the offset.
    lag: u64,
}

/// How long a stream keeps its events.
#[derive(Serialize, ToSchema)]
pub struct RetentionView {
    /// Age in seconds past which events are dropped; `null` keeps them.
    max_age: Option<f64>,
    /// How many of the newest events are kept; `null` keeps them all.
    max_events: Option<u64>,
}

/// A stream with its owner and extent, and (alone) its consumers.
#[derive(Serialize, ToSchema)]
pub struct StreamView {
    /// The stream's name.
    name: String,
    /// The producer allowed to write it.
    owner: String,
    /// Events stored.
    length: u64,
    /// The oldest stored event's id.
    first_event_id: Option<String>,
    /// The newest event's id.
    last_event_id: Option<String>,
    /// How long it keeps events.
    retention: RetentionView,
    /// Every consumer's offsets (not in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    consumers: Option<Vec<ConsumerView>>,
}

impl StreamView {
    fn new(info: &StreamInfo, with_consumers: bool) -> Self {
        StreamView {
            name: info.name.to_string(),
            owner: info.owner.clone(),
            length: info.length,
            first_event_id: info.first_event.map(|id| id.to_string()),
            last_event_id: info.last_event.map(|id| id.to_string()),
            retention: RetentionView {
                max_age: info.retention.max_age.map(|age| age.as_secs_f64()),
                max_events: info.retention.max_events,
            },
            consumers: with_consumers.then(|| {
                info.consumers
                    .iter()
                    .map(|c| ConsumerView {
                        consumer: c.consumer.clone(),
                        event_name: c.event_name.clone(),
                        offset: Some(c.offset.to_string()),
                        lag: c.lag,
                    })
                    .collect()
            }),
        }
    }
}

/// `{"streams": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct StreamsView {
    /// Every stream the caller holds a grant on, by name.
    streams: Vec<StreamView>,
}

/// `GET /streams/{s}`: owner, extent, consumers with their offsets and lag.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{stream}",
    tag = "streams",
    operation_id = "getStream",
    summary = "A stream's owner, extent and consumers",
    params(StreamPath),
    responses(
        (status = 200, description = "The stream", body = StreamView),
        (status = 404, response = NotFound),
    )
)]
pub async fn info(
    principal: Principal,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
) -> Result<Reply<StreamView>, ApiError> {
    let info = state.streams.info(&principal, &stream).await?;
    Ok(Reply::ok(StreamView::new(&info, true)))
}

/// `GET /streams`: every stream the caller holds a grant on.
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    tag = "streams",
    operation_id = "listStreams",
    summary = "Every stream the caller holds a grant on",
    responses((status = 200, description = "The streams, by name", body = StreamsView))
)]
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Reply<StreamsView>, ApiError> {
    let streams = state
        .streams
        .list(&principal)
        .await?
        .iter()
        .map(|info| StreamView::new(info, false))
        .collect();
    Ok(Reply::ok(StreamsView { streams }))
}

/// Body of `PUT /streams/{s}`: the whole retention; an absent or `null` limit is none.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Drop events older than this many seconds (or with a unit: `30d`); `null` or 0 keeps them.
    #[serde(default, with = "crate::domain::settings::opt_duration")]
    #[schema(schema_with = max_age_schema)]
    max_age: Option<Duration>,
    /// Keep only this many of the newest events; `null` keeps them all.
    #[serde(default, deserialize_with = "crate::domain::settings::whole::option")]
    #[schema(minimum = 1)]
    max_events: Option<u64>,
}

fn max_age_schema() -> utoipa::openapi::Schema {
    crate::domain::settings::seconds_schema(
        "Drop events older than this; `null` or 0 keeps them.",
        Duration::ZERO,
        None,
        true,
    )
}

/// `PUT /streams/{s}` `{"max_age", "max_events"}`: how long the stream keeps events.
#[utoipa::path(
    put,
    path = "/api/v1/streams/{stream}",
    tag = "streams",
    operation_id = "configureStream",
    summary = "Set how long a stream keeps its events",
    description = "Events past either limit are dropped by the periodic sweep; ids are never reused.",
    params(StreamPath),
    request_body(content = RetentionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Set: the stream after", body = StreamView),
        (status = 404, response = NotFound),
    )
)]
pub async fn configure(
    principal: Principal,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    AppJson(body): AppJson<RetentionBody>,
) -> Result<Reply<StreamView>, ApiError> {
    let retention = StreamRetention {
        max_age: body.max_age.filter(|age| !age.is_zero()),
        max_events: body.max_events,
    };
    state
        .streams
        .set_retention(&principal, &stream, retention)
        .await?;
    let info = state.streams.info(&principal, &stream).await?;
    Ok(Reply::ok(StreamView::new(&info, true)))
}

/// Body of an owner transfer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOwner {
    /// The producer that may write the stream from now on.
    #[schema(schema_with = owner_schema)]
    owner: String,
}

/// The stream and its new owner.
#[derive(Serialize, ToSchema)]
pub struct OwnerView {
    /// The stream.
    name: String,
    /// Its owner now.
    owner: String,
}

/// `PUT /admin/streams/{s}/owner` `{"owner"}`: admins only.
#[utoipa::path(
    put,
    path = "/api/v1/admin/streams/{stream}/owner",
    tag = "admin",
    operation_id = "setStreamOwner",
    summary = "Give a stream to another producer (admins)",
    params(StreamPath),
    request_body(content = NewOwner, content_type = "application/json"),
    responses(
        (status = 200, description = "Transferred", body = OwnerView),
        (status = 404, response = NotFound),
    )
)]
pub async fn set_owner(
    principal: Principal,
    State(state): State<AppState>,
    Path(StreamPath { stream }): Path<StreamPath>,
    AppJson(body): AppJson<NewOwner>,
) -> Result<Reply<OwnerView>, ApiError> {
    let owner = state
        .streams
        .set_owner(&principal, &stream, &body.owner)
        .await?;
    Ok(Reply(
        StatusCode::OK,
        OwnerView {
            name: stream.to_string(),
            owner,
        },
    ))
}

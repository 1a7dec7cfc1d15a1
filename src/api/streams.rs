//! `/api/v1/streams`: seed 004's event server (produce, consume, ACK) with its exact
//! answers, plus stream listing, details and owner transfer.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::json_response;
use super::{
    header_text, parse_json, reply, ApiError, AppState, JsonBytes, Params, SecondSegment,
    StreamPath,
};
use crate::auth::Principal;
use crate::domain::queues::MAX_COUNT;
use crate::domain::streams::{check_party, ReadRequest, StreamRetention};
use crate::domain::{Action, ResourceKind, StreamName};
use crate::domain::{StoredEvent, StreamInfo};

/// Seed 004's answer when a second producer writes a stream.
const SECOND_WRITER: &str = "Second writers not allowed";

fn authorize(principal: &Principal, stream: &StreamName, action: Action) -> Result<(), ApiError> {
    Ok(principal.authorize(ResourceKind::Stream, stream.as_str(), action)?)
}

/// `POST /streams/{s}/events` with `X-Producer-ID` → 200 `"<eventID>"`, or 423.
pub async fn append(
    principal: Principal,
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    authorize(&principal, &stream, Action::Produce)?;
    let producer = check_party(
        "X-Producer-ID header",
        header_text(&headers, "x-producer-id")?,
    )?;
    let parsed: Value = parse_json(&body)?;
    // Parsed above, so the bytes are valid UTF-8 JSON: stored as sent, less outer whitespace.
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    match state
        .streams
        .append(stream, producer, text, &parsed)
        .await?
    {
        Some(id) => Ok(reply(StatusCode::OK, &id.to_string())),
        None => Err(ApiError::Locked(SECOND_WRITER.into())),
    }
}

/// An event as consumers get it: the stored body with `"id"` added. The body is
/// spliced as text, not re-encoded, so it comes back byte for byte as posted.
fn event_json(event: &StoredEvent) -> String {
    let id = serde_json::to_string(&event.id.to_string()).unwrap_or_default();
    let has_own_id = serde_json::from_str::<serde_json::Map<String, Value>>(&event.body)
        .map(|map| map.contains_key("id"))
        .unwrap_or(true);
    match event.body.strip_prefix('{') {
        Some(rest) if !has_own_id && rest.trim_start() != "}" => format!("{{\"id\":{id},{rest}"),
        _ => {
            // A body with an `id` of its own (or not an object): Hopper's id wins.
            let mut map: serde_json::Map<String, Value> =
                serde_json::from_str(&event.body).unwrap_or_default();
            map.insert("id".into(), Value::String(event.id.to_string()));
            Value::Object(map).to_string()
        }
    }
}

/// `GET /streams/{s}/events?eventName=E&limit=N[&after=ID][&wait=S]` with `X-Consumer-ID`.
pub async fn read(
    principal: Principal,
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    authorize(&principal, &stream, Action::Consume)?;
    let event_name = params
        .text("eventName")
        .filter(|name| !name.is_empty())
        .ok_or_else(|| ApiError::bad_request("eventName is required"))?;
    let limit = params
        .text("limit")
        .and_then(|raw| raw.trim().parse::<u32>().ok())
        .filter(|n| (1..=MAX_COUNT).contains(n))
        .ok_or_else(|| ApiError::bad_request(format!("limit must be between 1 and {MAX_COUNT}")))?;
    let after = params
        .text("after")
        .map(|raw| {
            raw.trim()
                .parse::<i64>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| ApiError::bad_request("after must be an event id"))
        })
        .transpose()?;
    let consumer = check_party(
        "X-Consumer-ID header",
        header_text(&headers, "x-consumer-id")?,
    )?;
    let request = ReadRequest {
        consumer,
        event_name: event_name.to_owned(),
        limit,
        after,
        wait: params.duration("wait")?.unwrap_or(Duration::ZERO),
    };
    let events = state.streams.read(&stream, request).await?;
    let mut body =
        String::with_capacity(events.iter().map(|e| e.body.len() + 16).sum::<usize>() + 2);
    body.push('[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&event_json(event));
    }
    body.push(']');
    Ok(json_response(StatusCode::OK, body))
}

/// `POST /streams/{s}/events/{eventID}`, form body `action=ACK`, `X-Consumer-ID` → 200 `"OK"`.
pub async fn ack(
    principal: Principal,
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    SecondSegment(event): SecondSegment,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&principal, &stream, Action::Consume)?;
    if let Some(content_type) = header_text(&headers, header::CONTENT_TYPE.as_str())? {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type: application/x-www-form-urlencoded, got {essence:?}"
            )));
        }
    }
    let consumer = check_party(
        "X-Consumer-ID header",
        header_text(&headers, "x-consumer-id")?,
    )?;
    let form = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the form body must be UTF-8"))?;
    let action = form
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "action")
        .map(|(_, value)| value.trim());
    match action {
        Some("ACK") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "action must be ACK, got {other:?}"
            )))
        }
        None => return Err(ApiError::bad_request("action is required (action=ACK)")),
    }
    // Seed 004 answers a plain "Not Found" for an unknown stream or event.
    let not_found = || ApiError::NotFound(String::new());
    // Digits only: `+5` or `05` name no event, as they name no event in seed 004.
    let event = match event.parse::<i64>() {
        Ok(id) if id.to_string() == event => id,
        _ => return Err(not_found()),
    };
    match state.streams.ack(&stream, &consumer, event).await {
        Ok(true) => Ok(reply(StatusCode::OK, &"OK")),
        Ok(false) | Err(crate::domain::DomainError::NotFound(_)) => Err(not_found()),
        Err(error) => Err(error.into()),
    }
}

#[derive(Serialize)]
struct ConsumerView {
    consumer: String,
    event_name: String,
    offset: Option<String>,
    lag: u64,
}

#[derive(Serialize)]
struct StreamView {
    name: String,
    owner: String,
    length: u64,
    first_event_id: Option<String>,
    last_event_id: Option<String>,
    retention: RetentionView,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumers: Option<Vec<ConsumerView>>,
}

#[derive(Serialize)]
struct RetentionView {
    max_age: Option<f64>,
    max_events: Option<u64>,
}

fn stream_view(info: &StreamInfo, with_consumers: bool) -> StreamView {
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

fn authorize_any(principal: &Principal, stream: &StreamName) -> Result<(), ApiError> {
    Ok(principal.authorize_any(ResourceKind::Stream, stream.as_str())?)
}

/// `GET /streams/{s}`: owner, extent, consumers with their offsets and lag.
pub async fn info(
    principal: Principal,
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
) -> Result<Response, ApiError> {
    authorize_any(&principal, &stream)?;
    let info = state.streams.info(&stream).await?;
    Ok(reply(StatusCode::OK, &stream_view(&info, true)))
}

/// `GET /streams`: every stream the caller holds a grant on.
pub async fn list(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let streams: Vec<StreamView> = state
        .streams
        .list()
        .await?
        .iter()
        .filter(|info| authorize_any(&principal, &info.name).is_ok())
        .map(|info| stream_view(info, false))
        .collect();
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "streams": streams }),
    ))
}

/// Body of `PUT /streams/{s}`: the whole retention; an absent or `null` limit is none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionBody {
    #[serde(default, with = "crate::domain::settings::opt_duration")]
    max_age: Option<Duration>,
    #[serde(default)]
    max_events: Option<u64>,
}

/// `PUT /streams/{s}` `{"max_age", "max_events"}`: how long the stream keeps events.
pub async fn configure(
    principal: Principal,
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    authorize(&principal, &stream, Action::Manage)?;
    let object: serde_json::Map<String, Value> = parse_json(&body)?;
    let body: RetentionBody = serde_json::from_value(Value::Object(object))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let retention = StreamRetention {
        max_age: body.max_age.filter(|age| !age.is_zero()),
        max_events: body.max_events,
    };
    state.streams.set_retention(&stream, retention).await?;
    let info = state.streams.info(&stream).await?;
    Ok(reply(StatusCode::OK, &stream_view(&info, true)))
}

/// Body of an owner transfer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOwner {
    owner: String,
}

/// `PUT /admin/streams/{s}/owner` `{"owner"}`: admins only.
pub async fn set_owner(
    principal: Principal,
    State(state): State<AppState>,
    StreamPath(stream): StreamPath,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    // An object, not any shape serde would map onto the struct (an array, say).
    let object: serde_json::Map<String, Value> = parse_json(&body)?;
    let body: NewOwner = serde_json::from_value(Value::Object(object))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    state.streams.set_owner(&stream, &body.owner).await?;
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "name": stream.as_str(), "owner": body.owner.trim() }),
    ))
}

//! The stream service: seed 004's event rules (validation, one writer per stream,
//! offsets per consumer and event name) and the long-poll of reads.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::access::Principal;
use super::log::{
    AppendOutcome, CreateLog, CreateOutcome, LogAppend, LogRead, LogState, Position, ReadStart,
};
use super::queues::MAX_COUNT;
use super::storage::Store;
use super::wakeups::stream_key;
use super::{Action, DomainError, ResourceKind, StreamName, Waiters};

/// An event id: the event's position in its stream, from 1, without gaps.
pub type EventId = i64;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The stream; created, owned by `producer`, by its first event.
    pub stream: StreamName,
    /// The producer writing it.
    pub producer: String,
    /// The event's name (`event.name`), by which consumers read and ack.
    pub name: String,
    /// The JSON body exactly as posted.
    pub body: String,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this id.
    Event(EventId),
    /// The stream belongs to another producer; nothing was stored.
    Locked,
    /// The stream takes no more events: it was closed, made with a content type
    /// other than JSON, deleted while forks of it remain, or it expired, through
    /// the Durable Streams protocol; nothing was stored.
    Closed,
}

/// Whether seed 004's append goes onto a stream that exists, as its owner, its
/// closure, its expiry and its content type say (a tombstone's name takes none): `Ok(true)` when the producer claims it (the
/// protocol made it, so no producer owns it yet), `Ok(false)` when it owns it.
pub fn seed_append_verdict(
    owner: &str,
    producer: &str,
    closed: bool,
    content_type: &str,
    expired: bool,
) -> Result<bool, Appended> {
    if !owner.is_empty() && owner != producer {
        return Err(Appended::Locked);
    }
    // An expired stream's events would go with it at the next sweep.
    if closed || expired || !super::log::is_json(content_type) {
        return Err(Appended::Closed);
    }
    Ok(owner.is_empty())
}

/// An event as read back.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its id.
    pub id: EventId,
    /// The JSON body exactly as posted.
    pub body: String,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom {
    /// After the consumer's committed offset for the event name.
    Offset,
    /// After this event id (replay); offsets are untouched.
    After(EventId),
}

/// One consumer's committed offset for one event name.
#[derive(Debug, Clone)]
pub struct ConsumerOffset {
    /// The consumer.
    pub consumer: String,
    /// The event name.
    pub event_name: String,
    /// The last acked event id.
    pub offset: EventId,
    /// Events of that name after the offset.
    pub lag: u64,
}

/// A stream with its owner, extent and consumers.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream.
    pub name: StreamName,
    /// The producer allowed to write it.
    pub owner: String,
    /// Events stored.
    pub length: u64,
    /// Oldest stored event.
    pub first_event: Option<EventId>,
    /// Newest event.
    pub last_event: Option<EventId>,
    /// Committed offsets (empty in listings).
    pub consumers: Vec<ConsumerOffset>,
    /// How long it keeps events.
    pub retention: StreamRetention,
}

/// How long a stream keeps its events; `None` fields keep them forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamRetention {
    /// Events older than this are dropped.
    pub max_age: Option<Duration>,
    /// Only this many of the newest events are kept.
    pub max_events: Option<u64>,
}

/// Longest producer or consumer id, in characters.
const MAX_PARTY_ID: usize = 256;

/// Checks a seed-004 event body; returns its `event.name`. Each missing or mistyped
/// field is named, with its path, in the error.
pub fn validate_event(body: &Value) -> Result<String, DomainError> {
    let object = |value: Option<&Value>,
                  path: &str|
     -> Result<serde_json::Map<String, Value>, DomainError> {
        match value {
            None | Some(Value::Null) => Err(DomainError::invalid(format!("{path} is required"))),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(_) => Err(DomainError::invalid(format!("{path} must be an object"))),
        }
    };
    let string = |map: &serde_json::Map<String, Value>,
                  parent: &str,
                  field: &str|
     -> Result<String, DomainError> {
        match map.get(field) {
            None | Some(Value::Null) => Err(DomainError::invalid(format!(
                "{parent}.{field} is required"
            ))),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(DomainError::invalid(format!(
                "{parent}.{field} must be a string"
            ))),
        }
    };
    if !body.is_object() {
        return Err(DomainError::invalid("the event must be a JSON object"));
    }
    let event = object(body.get("event"), "event")?;
    let name = string(&event, "event", "name")?;
    check_event_name("event.name", &name)?;
    match event.get("version") {
        None | Some(Value::Null) => return Err(DomainError::invalid("event.version is required")),
        // A 64-bit integer, counted as JSON Schema counts integers: `1.0` is one too.
        Some(Value::Number(n))
            if n.is_i64()
                || (!n.is_u64()
                    && n.as_f64().is_some_and(|f| {
                        f.fract() == 0.0
                            && (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&f)
                    })) => {}
        Some(_) => return Err(DomainError::invalid("event.version must be an integer")),
    }
    let system = object(body.get("system"), "system")?;
    for field in ["id", "name", "time", "timezone"] {
        string(&system, "system", field)?;
    }
    let trigger = object(body.get("trigger"), "trigger")?;
    for field in ["type", "name"] {
        string(&trigger, "trigger", field)?;
    }
    object(body.get("payload"), "payload")?;
    Ok(name)
}

/// Checks an event name: not empty, and no NUL, which PostgreSQL text cannot hold.
pub fn check_event_name(what: &str, name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::invalid(format!("{what} must not be empty")));
    }
    if name.contains('\0') {
        return Err(DomainError::invalid(format!("{what} must not contain NUL")));
    }
    Ok(())
}

/// Checks a producer or consumer id; `what` names it in errors (e.g. `X-Producer-ID
/// header`). 1 to 256 characters, not all of them whitespace, no NUL (PostgreSQL
/// text cannot hold it); kept without the whitespace around it.
pub fn check_party(what: &str, value: Option<&str>) -> Result<String, DomainError> {
    let Some(id) = value.filter(|id| !id.chars().all(char::is_whitespace)) else {
        return Err(DomainError::invalid(format!("{what} is required")));
    };
    if id.chars().count() > MAX_PARTY_ID {
        return Err(DomainError::invalid(format!(
            "{what} must be at most {MAX_PARTY_ID} characters"
        )));
    }
    if id.contains('\0') {
        return Err(DomainError::invalid(format!("{what} must not contain NUL")));
    }
    Ok(id.trim().to_owned())
}

/// What a read asks for.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// The consumer whose offset applies.
    pub consumer: String,
    /// Only events of this name.
    pub event_name: String,
    /// At most this many (1..=1000).
    pub limit: u32,
    /// Replay after this id instead of after the offset.
    pub after: Option<EventId>,
    /// Long-poll this long while nothing matches.
    pub wait: Duration,
}

/// Most bytes of entries one read of a byte log answers (at least one entry, if any).
pub const MAX_LOG_READ_BYTES: usize = 4 * 1024 * 1024;

/// A read of a byte log as the edge answers it.
#[derive(Debug, Clone)]
pub struct LogAnswer {
    /// The entries, oldest first, each with the position it ends at.
    pub entries: Vec<(Position, Vec<u8>)>,
    /// Where the next read starts.
    pub next: Position,
    /// The stream as the read saw it.
    pub state: LogState,
    /// The read reached the tail.
    pub up_to_date: bool,
    /// A long-poll ended without an append.
    pub timed_out: bool,
}

impl LogAnswer {
    /// The next read starts after the last entry read, or at the tail when none was.
    fn of(read: LogRead, timed_out: bool) -> Self {
        let next = read
            .entries
            .last()
            .map_or(read.state.tail, |(position, _)| *position);
        LogAnswer {
            up_to_date: next >= read.state.tail,
            next,
            entries: read.entries,
            state: read.state,
            timed_out,
        }
    }
}

/// Stream operations with their rules; cheap to clone.
#[derive(Clone)]
pub struct StreamService {
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    waiters: Waiters,
}

impl StreamService {
    /// A service over `store`; waits end at `shutdown`.
    pub fn new(store: Arc<dyn Store>, shutdown: CancellationToken) -> Self {
        StreamService {
            store,
            shutdown,
            waiters: Waiters::default(),
        }
    }

    /// The same service, counting its long-polls in `waiters` (shared with other services).
    pub fn with_waiters(self, waiters: Waiters) -> Self {
        StreamService { waiters, ..self }
    }

    /// Refuses, as a wait over `limits.max_waiters` is refused, when no reader could
    /// wait now: a live read checks it before it answers, so that a full node says
    /// so with a status rather than with a response that ends at once.
    pub fn check_room_to_wait(&self) -> Result<(), DomainError> {
        self.waiters.try_wait(Duration::ZERO).map(drop)
    }

    /// The longest a read waits (`limits.max_poll`), which also bounds a live read's response.
    pub fn max_poll(&self) -> Duration {
        self.waiters.max_poll()
    }

    /// Appends a validated event as `producer`; `None` when another producer owns the stream.
    pub async fn append(
        &self,
        caller: &Principal,
        stream: StreamName,
        producer: String,
        body: String,
        parsed: &Value,
    ) -> Result<Option<EventId>, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Produce)?;
        let name = validate_event(parsed)?;
        let event = NewEvent {
            stream,
            producer,
            name,
            body,
        };
        let stream = event.stream.clone();
        match self.store.append(event).await? {
            Appended::Event(id) => Ok(Some(id)),
            Appended::Locked => Ok(None),
            Appended::Closed => Err(DomainError::Conflict(format!(
                "stream {stream} takes no more events: it is closed, expired or deleted, or holds no JSON"
            ))),
        }
    }

    /// Events for a consumer, long-polling up to `wait` (capped at the longest poll) while none match.
    pub async fn read(
        &self,
        caller: &Principal,
        stream: &StreamName,
        request: ReadRequest,
    ) -> Result<Vec<StoredEvent>, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Consume)?;
        if !(1..=MAX_COUNT).contains(&request.limit) {
            return Err(DomainError::invalid(format!(
                "limit must be between 1 and {MAX_COUNT}"
            )));
        }
        check_event_name("eventName", &request.event_name)?;
        let from = request.after.map_or(ReadFrom::Offset, ReadFrom::After);
        let store = &self.store;
        let (consumer, name, limit) = (
            request.consumer.as_str(),
            request.event_name.as_str(),
            request.limit,
        );
        let (events, _) = self
            .poll(stream, request.wait, || async move {
                let events = store
                    .read_events(stream, consumer, name, from, limit)
                    .await?;
                let found = !events.is_empty();
                Ok((events, found))
            })
            .await?;
        Ok(events)
    }

    /// Runs `attempt` until it finds something (its `bool`), `wait` (cut to the
    /// longest poll) passes or the node stops; between attempts it sleeps until a
    /// write to `stream` wakes it. The waiter is registered before each attempt, so
    /// a write between the attempt and the sleep is not missed. Answers the last
    /// attempt's value and whether the wait ran out.
    async fn poll<T, Attempt, Fut>(
        &self,
        stream: &StreamName,
        wait: Duration,
        mut attempt: Attempt,
    ) -> Result<(T, bool), DomainError>
    where
        Attempt: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(T, bool), DomainError>>,
    {
        let deadline = Instant::now() + wait.min(self.waiters.max_poll());
        let watch = self.store.wakeups().watch(&stream_key(stream));
        let mut slot = None;
        loop {
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (value, found) = attempt().await?;
            let now = Instant::now();
            if found || self.shutdown.is_cancelled() {
                return Ok((value, false));
            }
            if now >= deadline {
                return Ok((value, true));
            }
            if slot.is_none() {
                slot = Some(self.waiters.try_wait(deadline - now)?);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// Commits `consumer`'s offset for the event's name up to `event`; `false` if no such event.
    pub async fn ack(
        &self,
        caller: &Principal,
        stream: &StreamName,
        consumer: &str,
        event: EventId,
    ) -> Result<bool, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Consume)?;
        Ok(self.store.ack_event(stream, consumer, event).await?)
    }

    /// A stream with its consumers; any grant on it shows it.
    pub async fn info(
        &self,
        caller: &Principal,
        stream: &StreamName,
    ) -> Result<StreamInfo, DomainError> {
        caller.authorize_any(ResourceKind::Stream, stream.as_str())?;
        Ok(self.store.stream_info(stream).await?)
    }

    /// Every stream the caller holds a grant on.
    pub async fn list(&self, caller: &Principal) -> Result<Vec<StreamInfo>, DomainError> {
        let mut streams = self.store.list_streams().await?;
        streams.retain(|info| {
            caller
                .authorize_any(ResourceKind::Stream, info.name.as_str())
                .is_ok()
        });
        Ok(streams)
    }

    /// Sets how long the stream keeps its events (enforced by the periodic sweep).
    pub async fn set_retention(
        &self,
        caller: &Principal,
        stream: &StreamName,
        retention: StreamRetention,
    ) -> Result<(), DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Manage)?;
        // Stores count events in signed 64 bits.
        if retention
            .max_events
            .is_some_and(|n| n == 0 || n > i64::MAX as u64)
        {
            return Err(DomainError::invalid(format!(
                "max_events must be between 1 and {}",
                i64::MAX
            )));
        }
        Ok(self.store.set_stream_retention(stream, retention).await?)
    }

    /// Creates a byte log (the Durable Streams protocol's PUT), or finds it as it is.
    pub async fn create_log(
        &self,
        caller: &Principal,
        stream: &StreamName,
        request: CreateLog,
    ) -> Result<CreateOutcome, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Manage)?;
        // A fork reads its source.
        if let Some(fork) = &request.fork {
            caller.authorize(ResourceKind::Stream, fork.source.as_str(), Action::Consume)?;
        }
        Ok(self.store.create_log(stream, request).await?)
    }

    /// Appends to a byte log (the protocol's POST) as [`super::log::plan_append`] decides.
    pub async fn append_log(
        &self,
        caller: &Principal,
        stream: &StreamName,
        request: LogAppend,
    ) -> Result<AppendOutcome, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Produce)?;
        Ok(self.store.append_log(stream, request).await?)
    }

    /// Reads a byte log from `start`. With a `wait`, a reader at the tail of an open
    /// stream long-polls until an append or the wait's end (then `timed_out`).
    pub async fn read_log(
        &self,
        caller: &Principal,
        stream: &StreamName,
        start: ReadStart,
        wait: Option<Duration>,
    ) -> Result<LogAnswer, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Consume)?;
        let from = match start {
            ReadStart::Beginning => 0,
            ReadStart::At(position) => position,
            ReadStart::Now => self.store.log_state(stream).await?.tail,
        };
        let Some(wait) = wait else {
            let read = self
                .store
                .read_log(stream, from, MAX_LOG_READ_BYTES)
                .await?;
            return Ok(LogAnswer::of(read, false));
        };
        let store = &self.store;
        let (read, timed_out) = self
            .poll(stream, wait, || async move {
                let read = store.read_log(stream, from, MAX_LOG_READ_BYTES).await?;
                // Only a reader already at the tail waits; one behind gets what is there.
                let waits =
                    read.entries.is_empty() && from >= read.state.tail && !read.state.closed;
                Ok((read, !waits))
            })
            .await?;
        Ok(LogAnswer::of(read, timed_out))
    }

    /// A byte log's state (the protocol's HEAD).
    pub async fn log_state(
        &self,
        caller: &Principal,
        stream: &StreamName,
    ) -> Result<LogState, DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Consume)?;
        Ok(self.store.log_state(stream).await?)
    }

    /// Deletes a stream with all it holds (the protocol's DELETE).
    pub async fn delete_log(
        &self,
        caller: &Principal,
        stream: &StreamName,
    ) -> Result<(), DomainError> {
        caller.authorize(ResourceKind::Stream, stream.as_str(), Action::Manage)?;
        Ok(self.store.delete_log(stream).await?)
    }

    /// Gives a stream to another producer; returns the owner as kept.
    pub async fn set_owner(
        &self,
        caller: &Principal,
        stream: &StreamName,
        owner: &str,
    ) -> Result<String, DomainError> {
        caller.require_admin()?;
        let owner = check_party("owner", Some(owner))?;
        self.store.set_stream_owner(stream, &owner).await?;
        Ok(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_event() -> Value {
        json!({
            "event": {"name": "OrderPlaced", "version": 1},
            "system": {"id": "alv123", "name": "codello alvine", "time": "2017-09-06 13:58:12", "timezone": "Europe/Berlin"},
            "trigger": {"type": "system", "name": "/path/to/script.php"},
            "payload": {}
        })
    }

    #[test]
    fn seed_event_is_valid_and_each_field_is_named_when_wrong() {
        assert_eq!(validate_event(&seed_event()).unwrap(), "OrderPlaced");
        let cases = [
            (
                "/event/version",
                json!("1"),
                "event.version must be an integer",
            ),
            ("/event/name", json!(5), "event.name must be a string"),
            (
                "/system/timezone",
                Value::Null,
                "system.timezone is required",
            ),
            ("/trigger", json!([]), "trigger must be an object"),
            ("/payload", json!("x"), "payload must be an object"),
        ];
        for (pointer, value, message) in cases {
            let mut body = seed_event();
            *body.pointer_mut(pointer).unwrap() = value;
            assert_eq!(validate_event(&body).unwrap_err().to_string(), message);
        }
        let mut body = seed_event();
        body["event"]["name"] = json!("a\u{0}b");
        assert_eq!(
            validate_event(&body).unwrap_err().to_string(),
            "event.name must not contain NUL",
            "PostgreSQL text cannot hold NUL: refused up front, not as a failed batch"
        );
        assert!(check_party("owner", Some("p\u{0}")).is_err());
        let mut body = seed_event();
        body.as_object_mut().unwrap().remove("system");
        assert_eq!(
            validate_event(&body).unwrap_err().to_string(),
            "system is required"
        );
    }
}

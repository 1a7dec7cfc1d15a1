//! The byte log under every stream: entries numbered from 1 without gaps, each a
//! run of bytes, with a content type, closure, expiry and the idempotent producers
//! of the Durable Streams protocol. Seed 004's events are entries that carry their
//! event name; an event ID and a protocol offset are two spellings of one
//! [`Position`]. What a create or an append decides is written here, once, as pure
//! functions of the stream's state: a backend reads the state, calls them and writes
//! what they say, inside one transaction or one guarded script.

use serde_json::value::RawValue;

use super::clock::Millis;
use super::streams::{validate_event, EventId};
use super::{DomainError, StreamName};

/// A place in a log: the number of entries before it. Entry `n` ends at position `n`.
pub type Position = EventId;

/// The content type of a stream whose entries are JSON messages (JSON mode).
pub const JSON: &str = "application/json";

/// The content type a stream is created with when the request names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Digits of each half of an offset: enough for any `i64`, so offsets sort as text.
const OFFSET_DIGITS: usize = 16;

/// An offset as the protocol spells a position: `<entries>_<sub>`, each half 16
/// digits, so that text order is log order. The second half is always 0: it keeps
/// room for positions inside an entry.
pub fn offset_of(position: Position) -> String {
    format!("{position:0width$}_{:0width$}", 0, width = OFFSET_DIGITS)
}

/// Where a read starts, as a client names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    /// `-1` or no offset: the beginning.
    Beginning,
    /// `now`: the tail at the time of the read.
    Now,
    /// After this position.
    At(Position),
}

/// Reads a client's offset: `-1`, `now`, or one this server minted.
pub fn parse_offset(text: &str) -> Result<ReadStart, DomainError> {
    match text {
        "-1" => Ok(ReadStart::Beginning),
        "now" => Ok(ReadStart::Now),
        _ => parse_position(text).map(ReadStart::At),
    }
}

/// Reads an offset this server minted into its position.
pub fn parse_position(text: &str) -> Result<Position, DomainError> {
    let invalid =
        || DomainError::invalid(format!("offset {text:?} is not an offset of this server"));
    let (entries, sub) = text.split_once('_').ok_or_else(invalid)?;
    let digits =
        |half: &str| half.len() == OFFSET_DIGITS && half.bytes().all(|b| b.is_ascii_digit());
    if !digits(entries) || !digits(sub) || sub.bytes().any(|b| b != b'0') {
        return Err(invalid());
    }
    entries.parse().map_err(|_| invalid())
}

/// A content type without its parameters, in lower case, as streams are compared.
pub fn normalize_content_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a stream of this content type is in JSON mode (an array of messages).
pub fn is_json(content_type: &str) -> bool {
    normalize_content_type(content_type) == JSON
}

/// Whether an SSE read of this content type carries its bytes as text (else base64).
pub fn is_text(content_type: &str) -> bool {
    let normalized = normalize_content_type(content_type);
    normalized.starts_with("text/") || normalized == JSON
}

/// One entry to append: its bytes and, for a seed-004 event, its event name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The event name, when the entry is a seed-004 event.
    pub name: Option<String>,
    /// The bytes, exactly as stored and read back.
    pub data: Vec<u8>,
}

/// The entries a JSON-mode body holds: an array's elements (one level flattened)
/// or the one value. Each keeps its text as sent; one with the shape of a seed-004
/// event carries its event name, so seed 004's reads see it. An empty array is
/// refused unless `empty_ok` (a create may start a stream empty).
pub fn json_entries(body: &RawValue, empty_ok: bool) -> Result<Vec<Entry>, DomainError> {
    let text = body.get();
    let values: Vec<&RawValue> = if text.starts_with('[') {
        serde_json::from_str(text)
            .map_err(|e| DomainError::invalid(format!("invalid JSON: {e}")))?
    } else {
        vec![body]
    };
    if values.is_empty() && !empty_ok {
        return Err(DomainError::invalid(
            "an empty JSON array appends nothing; send at least one message",
        ));
    }
    Ok(values
        .into_iter()
        .map(|value| Entry {
            name: event_name(value),
            data: value.get().as_bytes().to_vec(),
        })
        .collect())
}

/// The seed-004 event name of a JSON message, when it has that shape.
fn event_name(value: &RawValue) -> Option<String> {
    if !value.get().starts_with('{') {
        return None;
    }
    let parsed: serde_json::Value = serde_json::from_str(value.get()).ok()?;
    validate_event(&parsed).ok()
}

/// How a stream expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expiry {
    /// It lives until deleted.
    #[default]
    Never,
    /// This many seconds after its last read or write.
    Idle(u64),
    /// At this time.
    At(Millis),
}

impl Expiry {
    /// The expiry kept as a store's two columns: idle seconds, or a time.
    pub fn from_columns(ttl_s: Option<i64>, expires_at: Option<Millis>) -> Self {
        match (ttl_s, expires_at) {
            (Some(seconds), _) => Expiry::Idle(seconds.max(0) as u64),
            (None, Some(at)) => Expiry::At(at),
            (None, None) => Expiry::Never,
        }
    }

    /// The two columns a store keeps this expiry as; see [`Expiry::from_columns`].
    pub fn columns(self) -> (Option<i64>, Option<Millis>) {
        match self {
            Expiry::Never => (None, None),
            Expiry::Idle(seconds) => (Some(i64::try_from(seconds).unwrap_or(i64::MAX)), None),
            Expiry::At(at) => (None, Some(at)),
        }
    }
}

/// A stream's fixed settings: what a repeated create must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Its content type, as given at creation.
    pub content_type: String,
    /// When it expires.
    pub expiry: Expiry,
    /// Where it branched off, for a fork.
    pub fork: Option<ForkOrigin>,
}

impl LogConfig {
    /// The settings of a stream that is not a fork.
    pub fn new(content_type: impl Into<String>, expiry: Expiry) -> Self {
        LogConfig {
            content_type: content_type.into(),
            expiry,
            fork: None,
        }
    }
}

/// Where a fork branched off its source, as its create named it; a repeated
/// create must name the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkOrigin {
    /// The source stream's name.
    pub source: String,
    /// The source's position it branched at (`Stream-Fork-Offset`).
    pub position: Position,
    /// How far past `position` it took the source's data too
    /// (`Stream-Fork-Sub-Offset`): messages in JSON mode, else bytes.
    pub sub: u64,
}

/// A create's request to branch off a source stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRequest {
    /// The source stream.
    pub source: StreamName,
    /// Where in the source; its tail when `None`.
    pub offset: Option<Position>,
    /// How far past `offset`: messages in JSON mode, else bytes.
    pub sub: u64,
}

/// An idempotent producer's claim on one append: `(id, epoch, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerClaim {
    /// The producer's stable id.
    pub id: String,
    /// Its session; a newer one fences the older.
    pub epoch: u64,
    /// The request's number within the epoch, from 0.
    pub seq: u64,
}

/// What a stream remembers of one producer: its epoch and last accepted seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// The newest epoch seen.
    pub epoch: u64,
    /// The last seq accepted in it.
    pub seq: u64,
}

/// A stream as an append or a read sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// Its fixed settings.
    pub config: LogConfig,
    /// The position after its last entry.
    pub tail: Position,
    /// No more appends.
    pub closed: bool,
    /// The claim that closed it, so that a retry of that request succeeds again.
    pub closed_by: Option<ProducerClaim>,
    /// The last `Stream-Seq` accepted (compared as bytes).
    pub stream_seq: Option<String>,
}

/// An append as the protocol asks it.
#[derive(Debug, Clone)]
pub struct LogAppend {
    /// The request's content type; `None` when it sent no body.
    pub content_type: Option<String>,
    /// What to append; empty for a close without data.
    pub entries: Vec<Entry>,
    /// Close the stream with this append.
    pub close: bool,
    /// The idempotent producer's claim, if it sent one.
    pub producer: Option<ProducerClaim>,
    /// The writer's `Stream-Seq`, if it sent one.
    pub stream_seq: Option<String>,
}

/// What an append did, as the protocol answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored (or closed); the stream now ends at `tail`.
    Appended {
        /// The new tail.
        tail: Position,
        /// The stream is closed now.
        closed: bool,
        /// The producer's state after it, to echo.
        producer: Option<ProducerState>,
    },
    /// A retry of a request already applied: nothing new stored.
    Duplicate {
        /// The tail.
        tail: Position,
        /// The stream is closed.
        closed: bool,
        /// The producer's state, to echo.
        producer: Option<ProducerState>,
    },
    /// The stream is closed: nothing stored.
    Closed {
        /// Its final tail.
        tail: Position,
    },
    /// The body's content type is not the stream's.
    ContentTypeMismatch,
    /// `Stream-Seq` is not above the last one accepted.
    SeqRegression,
    /// The producer's epoch is older than the one the stream knows: a zombie.
    StaleEpoch {
        /// The epoch the stream knows.
        current: u64,
    },
    /// A new epoch must start at seq 0.
    EpochStartsAtZero,
    /// The producer skipped seqs: one is missing.
    SeqGap {
        /// The seq the stream waits for.
        expected: u64,
        /// The seq it got.
        received: u64,
    },
}

/// What a backend does for an append: write it, or answer without writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// Store the entries after `state.tail`, then set these.
    Write {
        /// The producer's state to store with the entries.
        producer: Option<(String, ProducerState)>,
        /// Close the stream, remembering the claim that did.
        close: bool,
        /// The new `Stream-Seq`, when the request set one.
        stream_seq: Option<String>,
    },
    /// Store nothing; answer this.
    Answer(AppendOutcome),
}

/// Decides an append from the stream's state and the producer's stored state, in
/// the protocol's order: closure first, then content type, then the producer's
/// claim (a retry is a success even when its `Stream-Seq` would conflict), then
/// `Stream-Seq`.
pub fn plan_append(
    state: &LogState,
    producer: Option<ProducerState>,
    request: &LogAppend,
) -> AppendPlan {
    if state.closed {
        let retry_of_close = request.producer.is_some() && request.producer == state.closed_by;
        return AppendPlan::Answer(
            if retry_of_close
                || (request.close && request.entries.is_empty() && request.producer.is_none())
            {
                AppendOutcome::Duplicate {
                    tail: state.tail,
                    closed: true,
                    producer: request.producer.as_ref().map(|claim| ProducerState {
                        epoch: claim.epoch,
                        seq: claim.seq,
                    }),
                }
            } else {
                AppendOutcome::Closed { tail: state.tail }
            },
        );
    }
    if let Some(content_type) = &request.content_type {
        if !request.entries.is_empty()
            && normalize_content_type(content_type)
                != normalize_content_type(&state.config.content_type)
        {
            return AppendPlan::Answer(AppendOutcome::ContentTypeMismatch);
        }
    }
    let mut next_producer = None;
    if let Some(claim) = &request.producer {
        match check_producer(producer, claim) {
            Ok(next) => next_producer = Some((claim.id.clone(), next)),
            Err(outcome) => {
                return AppendPlan::Answer(match outcome {
                    ProducerVerdict::Duplicate(known) => AppendOutcome::Duplicate {
                        tail: state.tail,
                        closed: state.closed,
                        producer: Some(known),
                    },
                    ProducerVerdict::Refused(outcome) => outcome,
                })
            }
        }
    }
    if let Some(seq) = &request.stream_seq {
        if state
            .stream_seq
            .as_ref()
            .is_some_and(|last| seq.as_bytes() <= last.as_bytes())
        {
            return AppendPlan::Answer(AppendOutcome::SeqRegression);
        }
    }
    AppendPlan::Write {
        producer: next_producer,
        close: request.close,
        stream_seq: request.stream_seq.clone(),
    }
}

/// Why a producer's claim is not a new append.
enum ProducerVerdict {
    /// Already applied: the stored state, to echo.
    Duplicate(ProducerState),
    /// Refused.
    Refused(AppendOutcome),
}

/// The producer rule: a new epoch starts at seq 0 and fences the older ones; within
/// an epoch seqs follow one another, a repeat is a retry and a skip is a gap.
fn check_producer(
    known: Option<ProducerState>,
    claim: &ProducerClaim,
) -> Result<ProducerState, ProducerVerdict> {
    let accepted = ProducerState {
        epoch: claim.epoch,
        seq: claim.seq,
    };
    let Some(known) = known else {
        return if claim.seq == 0 {
            Ok(accepted)
        } else {
            Err(ProducerVerdict::Refused(AppendOutcome::SeqGap {
                expected: 0,
                received: claim.seq,
            }))
        };
    };
    if claim.epoch < known.epoch {
        return Err(ProducerVerdict::Refused(AppendOutcome::StaleEpoch {
            current: known.epoch,
        }));
    }
    if claim.epoch > known.epoch {
        return if claim.seq == 0 {
            Ok(accepted)
        } else {
            Err(ProducerVerdict::Refused(AppendOutcome::EpochStartsAtZero))
        };
    }
    if claim.seq <= known.seq {
        return Err(ProducerVerdict::Duplicate(known));
    }
    if claim.seq == known.seq + 1 {
        return Ok(accepted);
    }
    Err(ProducerVerdict::Refused(AppendOutcome::SeqGap {
        expected: known.seq + 1,
        received: claim.seq,
    }))
}

/// A create as the protocol asks it.
#[derive(Debug, Clone)]
pub struct CreateLog {
    /// Its settings. A fork's expiry is its source's when this says `Never`, and
    /// its `fork` is set by [`plan_fork`].
    pub config: LogConfig,
    /// Create it closed.
    pub closed: bool,
    /// Its first entries (after what a fork takes from its source).
    pub entries: Vec<Entry>,
    /// Branch off a source stream.
    pub fork: Option<ForkRequest>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Made now (201).
    Created(LogState),
    /// It existed with these same settings (200).
    Exists(LogState),
    /// It exists with other settings or another closure, or its name is held by a
    /// deleted stream that forks still branch off, or a fork's source is such a
    /// stream or has another content type (409).
    Conflict,
    /// A fork's source does not exist (404).
    SourceNotFound,
    /// A fork's offset or sub-offset is past its source's data (400); the text says which.
    BadFork(String),
}

/// Whether a repeated create matches the stream it finds: the same content type,
/// expiry, closure and fork origin (a repeat's body is not compared: it was stored
/// the first time). A fork's repeat that names no offset or expiry matches the
/// ones the first create resolved.
pub fn create_matches(existing: &LogState, request: &CreateLog) -> bool {
    let fork_matches = match (&existing.config.fork, &request.fork) {
        (None, None) => true,
        (Some(origin), Some(fork)) => {
            origin.source == fork.source.as_str()
                && fork.offset.is_none_or(|offset| offset == origin.position)
                && origin.sub == fork.sub
        }
        _ => false,
    };
    let expiry_matches = existing.config.expiry == request.config.expiry
        || (request.fork.is_some() && request.config.expiry == Expiry::Never);
    normalize_content_type(&existing.config.content_type)
        == normalize_content_type(&request.config.content_type)
        && expiry_matches
        && existing.closed == request.closed
        && fork_matches
}

/// Where a fork's request anchors in its source: its offset, or the source's tail.
pub fn fork_anchor(source: &LogState, fork: &ForkRequest) -> Position {
    fork.offset.unwrap_or(source.tail)
}

/// What a backend copies from a fork's source: entries through `upto`, then the
/// first `partial` bytes of the entry after it, if any; the fork is then a stream of
/// its own with `config`, sharing the source's positions up to where it branched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkPlan {
    /// The fork's settings, its origin included.
    pub config: LogConfig,
    /// The last whole entry taken from the source.
    pub upto: Position,
    /// The bytes taken from the next entry, when a sub-offset falls inside it.
    pub partial: Option<usize>,
}

/// Why a fork is not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkRefusal {
    /// The request's content type is not the source's (409).
    Conflict,
    /// Its offset or sub-offset is past the source's data (400).
    BadFork(String),
}

impl From<ForkRefusal> for CreateOutcome {
    fn from(refusal: ForkRefusal) -> Self {
        match refusal {
            ForkRefusal::Conflict => CreateOutcome::Conflict,
            ForkRefusal::BadFork(detail) => CreateOutcome::BadFork(detail),
        }
    }
}

/// Decides a fork from its source's state and the length of the source's entry at
/// the anchor (the one after [`fork_anchor`]), if there is one. The fork takes the
/// content type (which must be the source's), and takes the source's expiry when
/// it names none. A sub-offset counts messages in JSON mode, else bytes of the one
/// entry after the anchor, and may not reach past it. Producer and `Stream-Seq`
/// state are never taken: the fork starts fresh, and open.
pub fn plan_fork(
    source: &LogState,
    next_entry_len: Option<usize>,
    request: &CreateLog,
) -> Result<ForkPlan, ForkRefusal> {
    let Some(fork) = &request.fork else {
        return Err(ForkRefusal::BadFork("not a fork".into()));
    };
    let anchor = fork_anchor(source, fork);
    if anchor > source.tail {
        return Err(ForkRefusal::BadFork(
            "Stream-Fork-Offset is past the source's tail".into(),
        ));
    }
    if normalize_content_type(&request.config.content_type)
        != normalize_content_type(&source.config.content_type)
    {
        return Err(ForkRefusal::Conflict);
    }
    let overshoot = || {
        ForkRefusal::BadFork(
            "Stream-Fork-Sub-Offset reaches past the source's next data boundary".into(),
        )
    };
    let (upto, partial) = if fork.sub == 0 {
        (anchor, None)
    } else if is_json(&source.config.content_type) {
        let upto = anchor
            .checked_add(i64::try_from(fork.sub).map_err(|_| overshoot())?)
            .filter(|upto| *upto <= source.tail)
            .ok_or_else(overshoot)?;
        (upto, None)
    } else {
        let len = next_entry_len.ok_or_else(overshoot)?;
        match usize::try_from(fork.sub) {
            Ok(sub) if sub < len => (anchor, Some(sub)),
            Ok(sub) if sub == len => (anchor + 1, None),
            _ => return Err(overshoot()),
        }
    };
    let expiry = match request.config.expiry {
        Expiry::Never => source.config.expiry,
        own => own,
    };
    Ok(ForkPlan {
        config: LogConfig {
            content_type: request.config.content_type.clone(),
            expiry,
            fork: Some(ForkOrigin {
                source: fork.source.to_string(),
                position: anchor,
                sub: fork.sub,
            }),
        },
        upto,
        partial,
    })
}

/// Whether a stream with this expiry, last touched at `touched_at`, has expired at `now`.
pub fn expired(expiry: Expiry, touched_at: Millis, now: Millis) -> bool {
    match expiry {
        Expiry::Never => false,
        Expiry::Idle(seconds) => {
            now >= touched_at
                .saturating_add(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
        }
        Expiry::At(at) => now >= at,
    }
}

/// A plain read of a log: entries after a position, up to a byte budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The entries read, each with the position it ends at, oldest first.
    pub entries: Vec<(Position, Vec<u8>)>,
    /// The stream as the read saw it.
    pub state: LogState,
}

/// Where cursor intervals are counted from (the protocol's choice, so caches of
/// several servers agree): 2024-10-09T00:00:00Z.
const CURSOR_EPOCH: Millis = 1_728_432_000_000;
/// Length of one cursor interval.
const CURSOR_INTERVAL_MS: i64 = 20_000;
/// Longest jitter a cursor moves ahead by, in intervals (an hour).
const CURSOR_MAX_JITTER: u64 = 3600 / 20;

/// The `Stream-Cursor` of a long-poll answer: the current interval, or, when the
/// client's cursor is not behind it, the client's moved ahead by a jitter of 1 to
/// an hour's intervals, so that a CDN collapsing requests by URL never serves a
/// reader its own previous answer again. `random` picks the jitter.
pub fn response_cursor(client: Option<&str>, now: Millis, random: u64) -> String {
    let current = (now - CURSOR_EPOCH).div_euclid(CURSOR_INTERVAL_MS);
    match client.and_then(|cursor| cursor.parse::<i64>().ok()) {
        Some(theirs) if theirs >= current => {
            let jitter = 1 + random % CURSOR_MAX_JITTER;
            theirs.saturating_add(jitter as i64).to_string()
        }
        _ => current.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(tail: Position) -> LogState {
        LogState {
            config: LogConfig::new("text/plain", Expiry::Never),
            tail,
            closed: false,
            closed_by: None,
            stream_seq: None,
        }
    }

    fn append(producer: Option<(u64, u64)>) -> LogAppend {
        LogAppend {
            content_type: Some("text/plain; charset=utf-8".into()),
            entries: vec![Entry {
                name: None,
                data: b"x".to_vec(),
            }],
            close: false,
            producer: producer.map(|(epoch, seq)| ProducerClaim {
                id: "p".into(),
                epoch,
                seq,
            }),
            stream_seq: None,
        }
    }

    fn known(epoch: u64, seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, seq })
    }

    #[test]
    fn cursors_move_ahead_of_a_client_that_is_not_behind() {
        let now = CURSOR_EPOCH + 100 * CURSOR_INTERVAL_MS + 5;
        assert_eq!(response_cursor(None, now, 7), "100");
        assert_eq!(response_cursor(Some("99"), now, 7), "100");
        assert_eq!(response_cursor(Some("junk"), now, 7), "100");
        assert_eq!(response_cursor(Some("100"), now, 0), "101");
        assert_eq!(response_cursor(Some("150"), now, 7), "158");
    }

    #[test]
    fn offsets_sort_as_text_and_read_back() {
        assert_eq!(offset_of(0), "0000000000000000_0000000000000000");
        assert!(offset_of(9) < offset_of(10));
        assert_eq!(parse_position(&offset_of(42)).unwrap(), 42);
        assert_eq!(parse_offset("-1").unwrap(), ReadStart::Beginning);
        assert_eq!(parse_offset("now").unwrap(), ReadStart::Now);
        for bad in [
            "",
            "0",
            "42",
            "0000000000000001",
            "0_0",
            "000000000000000a_0000000000000000",
            "0000000000000001_0000000000000001",
            "0,1",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_producer_rule() {
        let write = |plan: AppendPlan| matches!(plan, AppendPlan::Write { .. });
        let state = open(3);
        assert!(write(plan_append(&state, None, &append(Some((0, 0))))));
        assert_eq!(
            plan_append(&state, None, &append(Some((0, 2)))),
            AppendPlan::Answer(AppendOutcome::SeqGap {
                expected: 0,
                received: 2
            })
        );
        assert!(write(plan_append(
            &state,
            known(0, 4),
            &append(Some((0, 5)))
        )));
        assert_eq!(
            plan_append(&state, known(0, 4), &append(Some((0, 4)))),
            AppendPlan::Answer(AppendOutcome::Duplicate {
                tail: 3,
                closed: false,
                producer: known(0, 4)
            })
        );
        assert_eq!(
            plan_append(&state, known(2, 4), &append(Some((1, 0)))),
            AppendPlan::Answer(AppendOutcome::StaleEpoch { current: 2 })
        );
        assert_eq!(
            plan_append(&state, known(2, 4), &append(Some((3, 1)))),
            AppendPlan::Answer(AppendOutcome::EpochStartsAtZero)
        );
        assert!(write(plan_append(
            &state,
            known(2, 4),
            &append(Some((3, 0)))
        )));
        assert_eq!(
            plan_append(&state, known(0, 4), &append(Some((0, 7)))),
            AppendPlan::Answer(AppendOutcome::SeqGap {
                expected: 5,
                received: 7
            })
        );
    }

    #[test]
    fn closure_then_content_type_then_seq() {
        let mut closed = open(5);
        closed.closed = true;
        closed.closed_by = Some(ProducerClaim {
            id: "p".into(),
            epoch: 0,
            seq: 3,
        });
        assert_eq!(
            plan_append(&closed, known(0, 3), &append(None)),
            AppendPlan::Answer(AppendOutcome::Closed { tail: 5 })
        );
        assert!(matches!(
            plan_append(&closed, known(0, 3), &append(Some((0, 3)))),
            AppendPlan::Answer(AppendOutcome::Duplicate { closed: true, .. })
        ));
        let mut other = append(None);
        other.content_type = Some("application/json".into());
        assert_eq!(
            plan_append(&open(0), None, &other),
            AppendPlan::Answer(AppendOutcome::ContentTypeMismatch)
        );
        let mut seq = append(None);
        seq.stream_seq = Some("b".into());
        let mut state = open(0);
        state.stream_seq = Some("b".into());
        assert_eq!(
            plan_append(&state, None, &seq),
            AppendPlan::Answer(AppendOutcome::SeqRegression)
        );
        seq.stream_seq = Some("c".into());
        assert!(matches!(
            plan_append(&state, None, &seq),
            AppendPlan::Write { .. }
        ));
    }

    #[test]
    fn json_bodies_flatten_one_level_and_name_seed_events() {
        let raw = |text: &str| serde_json::from_str::<Box<RawValue>>(text).unwrap();
        let entries = json_entries(&raw(r#"[[1,2], {"a":1}]"#), false).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].data, b"[1,2]");
        assert_eq!(
            json_entries(&raw(r#"{"a": 1}"#), false).unwrap()[0].data,
            br#"{"a": 1}"#
        );
        assert!(json_entries(&raw("[]"), false).is_err());
        assert!(json_entries(&raw("[]"), true).unwrap().is_empty());
        let event = r#"{"event":{"name":"OrderPlaced","version":1},"system":{"id":"a","name":"b","time":"t","timezone":"z"},"trigger":{"type":"t","name":"n"},"payload":{}}"#;
        assert_eq!(
            json_entries(&raw(event), false).unwrap()[0].name.as_deref(),
            Some("OrderPlaced")
        );
    }

    #[test]
    fn forks_take_whole_entries_or_a_prefix_of_the_next() {
        let fork = |offset, sub, content_type: &str| CreateLog {
            config: LogConfig::new(content_type, Expiry::Never),
            closed: false,
            entries: vec![],
            fork: Some(ForkRequest {
                source: StreamName::parse("src").unwrap(),
                offset,
                sub,
            }),
        };
        let mut source = open(3);
        source.config.expiry = Expiry::Idle(60);
        let plan = plan_fork(&source, None, &fork(None, 0, "text/plain")).unwrap();
        assert_eq!((plan.upto, plan.partial), (3, None));
        assert_eq!(plan.config.expiry, Expiry::Idle(60));
        assert_eq!(plan.config.fork.unwrap().position, 3);
        let plan = plan_fork(&source, Some(5), &fork(Some(1), 2, "text/plain")).unwrap();
        assert_eq!((plan.upto, plan.partial), (1, Some(2)));
        let plan = plan_fork(&source, Some(5), &fork(Some(1), 5, "text/plain")).unwrap();
        assert_eq!((plan.upto, plan.partial), (2, None));
        for (offset, sub, next) in [(Some(1), 6, Some(5)), (None, 1, None), (Some(4), 0, None)] {
            assert!(matches!(
                plan_fork(&source, next, &fork(offset, sub, "text/plain")),
                Err(ForkRefusal::BadFork(_))
            ));
        }
        assert_eq!(
            plan_fork(&source, None, &fork(None, 0, "application/json")),
            Err(ForkRefusal::Conflict)
        );
        source.config.content_type = JSON.into();
        let plan = plan_fork(&source, Some(9), &fork(Some(1), 2, JSON)).unwrap();
        assert_eq!((plan.upto, plan.partial), (3, None));
        assert!(plan_fork(&source, Some(9), &fork(Some(1), 3, JSON)).is_err());
    }
}

//! The byte log on Redis (the Durable Streams protocol's view of a stream): its
//! entries are the seed-004 stream's events, on the same keys, and its settings
//! are fields of the stream's meta hash (`lua/log.lua` lists them). Every rule is
//! `domain::log`'s: a call reads the state in one script, decides in Rust, then
//! writes with a script that checks the stream is still as read (its `ver` and
//! `last`) and reads again when another write came first.
//!
//! A fork and its source hash to different cluster slots, so no script sees both:
//! the fork's entries are taken from the source in the step that records the
//! fork's reference there (a token of its own, so a create that loses a race gives
//! back exactly what it took), then the fork is made in its own slot. Releasing the
//! tombstones up a chain of forks is one step per stream, each atomic on its own:
//! a node that stops in between leaves a tombstone standing, never one missing.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use redis::{Script, Value};

use super::reply::{self, malformed, Fields, Status};
use super::{Core, RedisStore};
use crate::domain::clock::Millis;
use crate::domain::log::{
    create_matches, expired, fork_anchor, plan_append, plan_fork, AppendOutcome, AppendPlan,
    CreateLog, CreateOutcome, Entry, Expiry, ForkOrigin, LogAppend, LogConfig, LogRead, LogState,
    Position, ProducerClaim, ProducerState, JSON,
};
use crate::domain::wakeups::stream_key;
use crate::domain::{LogStore, StoreError, StoreResult, StreamName};

static LOG_STATE: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_state.lua");
static LOG_READ: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_read.lua");
static LOG_TOUCH: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_touch.lua");
static LOG_CREATE: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_create.lua");
static LOG_APPEND: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_append.lua");
static LOG_DELETE: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_delete.lua");
static LOG_TAKE: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_take.lua");
static LOG_RELEASE: LazyLock<Script> = lua!("stream.lua", "log.lua", "log_release.lua");

/// Whether a stream or its tombstone holds a name: the check after a name leaves
/// the registry, so a create racing the removal puts it back.
static HOLDS_NAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "return (redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1) and 1 or 0",
    )
});

/// Reads and guarded writes one call makes before it gives up: each retry means
/// another write to the same stream came between its read and its write, so this
/// many in a row is a storm of writers, answered as a store too busy to take it.
const ATTEMPTS: usize = 100;

/// Most entries one read answers: a log of many small entries would otherwise hold
/// Redis for one long script per read (the reader reads on from where it stopped).
const READ_ENTRIES: usize = 10_000;

/// What a guarded write compares: `ver` and `last` as read (empty when missing).
#[derive(Debug, Clone, Default)]
struct Guard {
    ver: String,
    last: String,
}

/// A stream's meta hash as read.
struct Stored {
    state: LogState,
    /// Its last read or write, for an idle expiry.
    touched_at: Millis,
    guard: Guard,
}

/// What a read of a stream's keys found, at Redis's time.
struct Found {
    /// Redis's clock when it read: every node decides expiry by the same one.
    now: Millis,
    /// The meta hash, expired or not.
    stream: Option<Stored>,
    /// A tombstone holds the name.
    tombstone: bool,
}

impl Found {
    /// Reads the fields of `lua/log.lua`'s `state_reply`.
    fn read(fields: &mut Fields, context: &'static str) -> StoreResult<Found> {
        fields.status("")?;
        let now = fields.int()?;
        let meta = fields.array()?;
        let tombstone = fields.int()? == 1;
        let stream = if meta.is_empty() {
            None
        } else {
            Some(stored(context, meta)?)
        };
        Ok(Found {
            now,
            stream,
            tombstone,
        })
    }

    /// The stream, unless it is missing or expired.
    fn live(&self) -> Option<&Stored> {
        self.stream
            .as_ref()
            .filter(|stream| !expired(stream.state.config.expiry, stream.touched_at, self.now))
    }

    /// What a write must find to replace what this read found: the expired stream's
    /// fields, or none.
    fn guard(&self) -> Guard {
        self.stream
            .as_ref()
            .map(|stream| stream.guard.clone())
            .unwrap_or_default()
    }

    /// The live stream; `StreamGone` for a tombstone, else `StreamNotFound`.
    fn existing(self, name: &StreamName) -> StoreResult<Stored> {
        let live = self.live().is_some();
        match self.stream {
            Some(stream) if live => Ok(stream),
            _ if self.tombstone => Err(StoreError::StreamGone(name.to_string())),
            _ => Err(StoreError::StreamNotFound(name.to_string())),
        }
    }
}

/// A stream's state from its meta hash (`HGETALL`, name and value in turn).
fn stored(context: &'static str, meta: Vec<Value>) -> StoreResult<Stored> {
    let mut fields = HashMap::new();
    let mut values = meta.into_iter();
    while let (Some(name), Some(value)) = (values.next(), values.next()) {
        fields.insert(reply::text(context, name)?, reply::text(context, value)?);
    }
    let text = |name: &str| fields.get(name).cloned();
    let number = |name: &str| -> StoreResult<Option<i64>> {
        fields
            .get(name)
            .map(|value| {
                value
                    .parse::<i64>()
                    .map_err(|_| malformed(context, &format!("meta field {name} {value:?}")))
            })
            .transpose()
    };
    let unsigned = |name: &str| -> StoreResult<Option<u64>> {
        number(name)?
            .map(|n| u64::try_from(n).map_err(|_| malformed(context, &format!("negative {name}"))))
            .transpose()
    };
    let expiry = Expiry::from_columns(number("ttl")?, number("exp")?);
    let fork = match text("fork") {
        Some(source) => Some(ForkOrigin {
            source,
            position: number("fork_pos")?.unwrap_or(0),
            sub: unsigned("fork_sub")?.unwrap_or(0),
        }),
        None => None,
    };
    let closed_by = match (text("cb_id"), unsigned("cb_epoch")?, unsigned("cb_seq")?) {
        (Some(id), Some(epoch), Some(seq)) => Some(ProducerClaim { id, epoch, seq }),
        _ => None,
    };
    Ok(Stored {
        state: LogState {
            config: LogConfig {
                // Seed 004 makes streams of JSON events and names no type.
                content_type: text("ctype").unwrap_or_else(|| JSON.to_owned()),
                expiry,
                fork,
            },
            tail: number("last")?.unwrap_or(0),
            closed: fields.get("closed").is_some_and(|v| v == "1"),
            closed_by,
            stream_seq: text("sseq"),
        },
        touched_at: number("touched")?.or(number("created")?).unwrap_or(0),
        guard: Guard {
            ver: text("ver").unwrap_or_default(),
            last: text("last").unwrap_or_default(),
        },
    })
}

/// A producer's stored `"<epoch> <seq>"`.
fn producer_state(context: &'static str, text: &str) -> StoreResult<Option<ProducerState>> {
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = text
        .split_once(' ')
        .and_then(|(epoch, seq)| Some((epoch.parse().ok()?, seq.parse().ok()?)));
    match parsed {
        Some((epoch, seq)) => Ok(Some(ProducerState { epoch, seq })),
        None => Err(malformed(context, &format!("producer state {text:?}"))),
    }
}

/// A fresh token: a new `ver` of a stream, or a fork's reference.
fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The member of a source's forks set that stands for one fork.
fn reference(fork: &str, token: &str) -> String {
    format!("{fork} {token}")
}

/// One entry as the scripts take it: id, event name, time appended ('' for now), data.
fn push_entry(args: &mut Vec<Vec<u8>>, id: Position, name: &str, at: &str, data: &[u8]) {
    args.push(id.to_string().into_bytes());
    args.push(name.as_bytes().to_vec());
    args.push(at.as_bytes().to_vec());
    args.push(data.to_vec());
}

/// Appends `entries`, numbered after `tail`, as the scripts take them; returns the new tail.
fn push_entries(args: &mut Vec<Vec<u8>>, tail: Position, entries: &[Entry]) -> Position {
    let mut position = tail;
    for entry in entries {
        position += 1;
        push_entry(
            args,
            position,
            entry.name.as_deref().unwrap_or(""),
            "",
            &entry.data,
        );
    }
    position
}

/// A stream to make, as `lua/log_create.lua` writes it.
struct NewLog<'a> {
    config: &'a LogConfig,
    closed: bool,
    /// The token of a fork's reference in its source; empty for no fork.
    fork_token: &'a str,
    tail: Position,
    /// Its entries, copied ones first, as the scripts take them.
    entries: Vec<Vec<u8>>,
}

/// How a guarded removal went.
enum Removal {
    /// The stream changed since it was read: nothing was done.
    Changed,
    /// Forks still name it: it stays as a tombstone.
    Tombstone,
    /// It is gone; it held this reference in its source, if it was a fork.
    Removed(Option<(StreamName, String)>),
}

/// A fork's reference read from a script: its source's name and its token, '' when none.
fn origin_of(
    context: &'static str,
    fork: &StreamName,
    source: String,
    token: String,
) -> StoreResult<Option<(StreamName, String)>> {
    if source.is_empty() {
        return Ok(None);
    }
    let source = StreamName::parse(&source)
        .map_err(|_| malformed(context, &format!("fork source {source:?}")))?;
    Ok(Some((source, reference(fork.as_str(), &token))))
}

impl Core {
    /// Runs a byte-log script over `stream`'s keys, waking its readers.
    async fn log_script(
        &self,
        context: &'static str,
        script: &Script,
        writes: bool,
        stream: &StreamName,
        args: &[Vec<u8>],
    ) -> StoreResult<Fields> {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let keys = self.keys.log(stream.as_str());
        self.script(context, script, writes, &keys, &stream_key(stream), &args)
            .await
    }

    /// The stream's keys as they are, with a producer's state when `producer` names one.
    async fn find_log(
        &self,
        stream: &StreamName,
        producer: Option<&str>,
    ) -> StoreResult<(Found, Option<ProducerState>)> {
        const CONTEXT: &str = "read a stream";
        let mut fields = self
            .log_script(
                CONTEXT,
                &LOG_STATE,
                false,
                stream,
                &[producer.unwrap_or("").as_bytes().to_vec()],
            )
            .await?;
        let found = Found::read(&mut fields, CONTEXT)?;
        let producer = producer_state(CONTEXT, &fields.text()?)?;
        Ok((found, producer))
    }

    /// The length of entry `position`, if the stream has it.
    async fn entry_len(
        &self,
        stream: &StreamName,
        position: Position,
    ) -> StoreResult<Option<usize>> {
        let keys = self.keys.log(stream.as_str());
        let len: usize = self
            .command(
                "read an entry",
                false,
                redis::cmd("HSTRLEN").arg(&keys[1]).arg(position),
            )
            .await?;
        // 0 for a missing entry; an empty one would refuse every sub-offset all the same.
        Ok((len > 0).then_some(len))
    }

    /// Removes the stream if it is still as read (`mode` as `lua/log_delete.lua` says).
    async fn remove_log(
        &self,
        stream: &StreamName,
        guard: &Guard,
        mode: &str,
        touched_at: Millis,
    ) -> StoreResult<Removal> {
        const CONTEXT: &str = "delete a stream";
        let args = [
            guard.ver.clone(),
            guard.last.clone(),
            mode.to_owned(),
            touched_at.to_string(),
        ]
        .map(String::into_bytes);
        let mut fields = self
            .log_script(CONTEXT, &LOG_DELETE, true, stream, &args)
            .await?;
        if fields.status(stream.as_str())? == Status::Changed {
            return Ok(Removal::Changed);
        }
        if fields.text()? == "tombstone" {
            return Ok(Removal::Tombstone);
        }
        let (source, token) = (fields.text()?, fields.text()?);
        let origin = origin_of(CONTEXT, stream, source, token)?;
        self.forget_stream(stream).await?;
        Ok(Removal::Removed(origin))
    }

    /// Gives a fork's reference back to its source, and releases each tombstone up
    /// the chain that this leaves without forks.
    async fn release(&self, mut next: Option<(StreamName, String)>) -> StoreResult<()> {
        const CONTEXT: &str = "release a fork's source";
        while let Some((source, member)) = next.take() {
            let mut fields = self
                .log_script(CONTEXT, &LOG_RELEASE, true, &source, &[member.into_bytes()])
                .await?;
            fields.status(source.as_str())?;
            if fields.text()? == "released" {
                let (parent, token) = (fields.text()?, fields.text()?);
                next = origin_of(CONTEXT, &source, parent, token)?;
                self.forget_stream(&source).await?;
            }
        }
        Ok(())
    }

    /// Takes a name that no stream or tombstone holds out of the streams registry.
    /// A create that races this registers after its script, and this checks after
    /// it unregisters, so one of the two sees the other.
    async fn forget_stream(&self, stream: &StreamName) -> StoreResult<()> {
        self.unregister(self.keys.streams(), stream.as_str())
            .await?;
        let keys = self.keys.log(stream.as_str());
        let mut connection = self.connection()?;
        let held: i64 = HOLDS_NAME
            .key(&keys[0])
            .key(&keys[8])
            .invoke_async(&mut connection)
            .await
            .map_err(super::redis_error("find a stream", false))?;
        if held == 1 {
            self.register_stream(stream).await?;
        }
        Ok(())
    }

    /// Puts a stream made now in the registry, whatever this node thought it knew.
    async fn register_stream(&self, stream: &StreamName) -> StoreResult<()> {
        self.command::<i64>(
            "register",
            true,
            redis::cmd("SADD")
                .arg(self.keys.streams())
                .arg(stream.as_str()),
        )
        .await?;
        Ok(())
    }

    /// Removes the stream if its expiry has passed (the sweep's part for the log);
    /// answers how many streams went (0 or 1).
    pub(super) async fn sweep_log(&self, stream: &StreamName) -> StoreResult<u64> {
        let (found, _) = self.find_log(stream, None).await?;
        let Some(stored) = &found.stream else {
            if !found.tombstone {
                // A name left behind by a node that stopped before forgetting it.
                self.forget_stream(stream).await?;
            }
            return Ok(0);
        };
        if !expired(stored.state.config.expiry, stored.touched_at, found.now) {
            return Ok(0);
        }
        // A stream that changed meanwhile was touched or made anew: the next sweep looks again.
        match self
            .remove_log(stream, &stored.guard, "expire", stored.touched_at)
            .await?
        {
            Removal::Removed(origin) => {
                self.release(origin).await?;
                Ok(1)
            }
            Removal::Changed | Removal::Tombstone => Ok(0),
        }
    }

    /// Takes what `plan` copies of the source and records the fork's reference there,
    /// if the source is still as read; `None` when it changed.
    async fn take(
        &self,
        source: &StreamName,
        guard: &Guard,
        member: &str,
        upto: Position,
        partial: Option<usize>,
    ) -> StoreResult<Option<Vec<Vec<u8>>>> {
        const CONTEXT: &str = "copy a fork's source";
        let args = [
            guard.ver.clone(),
            guard.last.clone(),
            member.to_owned(),
            upto.to_string(),
            partial.map(|n| n.to_string()).unwrap_or_default(),
        ]
        .map(String::into_bytes);
        let mut fields = self
            .log_script(CONTEXT, &LOG_TAKE, true, source, &args)
            .await?;
        if fields.status(source.as_str())? == Status::Changed {
            return Ok(None);
        }
        let mut entries = Vec::new();
        while !fields.is_empty() {
            let id = fields.int()?;
            let name = fields.text()?;
            let at = fields.text()?;
            let data = fields.bytes()?;
            push_entry(&mut entries, id, &name, &at, &data);
        }
        Ok(Some(entries))
    }

    /// Creates the stream if it is still as `found` saw it; `None` when it changed.
    /// Answers the reference the expired stream it replaced held, if any.
    async fn write_create(
        &self,
        stream: &StreamName,
        found: &Found,
        new: NewLog<'_>,
    ) -> StoreResult<Option<Option<(StreamName, String)>>> {
        const CONTEXT: &str = "create a stream";
        let guard = found.guard();
        let (ttl, exp) = new.config.expiry.columns();
        let text = |field: Option<i64>| field.map(|n| n.to_string()).unwrap_or_default();
        let (ttl, exp) = (text(ttl), text(exp));
        let fork = new.config.fork.as_ref();
        let mut args: Vec<Vec<u8>> = [
            guard.ver,
            guard.last,
            token(),
            new.config.content_type.clone(),
            ttl,
            exp,
            if new.closed { "1" } else { "" }.to_owned(),
            fork.map(|o| o.source.clone()).unwrap_or_default(),
            fork.map(|o| o.position.to_string()).unwrap_or_default(),
            fork.map(|o| o.sub.to_string()).unwrap_or_default(),
            new.fork_token.to_owned(),
            new.tail.to_string(),
        ]
        .map(String::into_bytes)
        .into();
        args.extend(new.entries);
        // Registered first, so that a crash after the create cannot leave a stream
        // the sweep never visits; the sweep forgets a name with nothing behind it.
        self.register_stream(stream).await?;
        let mut fields = self
            .log_script(CONTEXT, &LOG_CREATE, true, stream, &args)
            .await?;
        if fields.status(stream.as_str())? == Status::Changed {
            return Ok(None);
        }
        let (source, token) = (fields.text()?, fields.text()?);
        Ok(Some(origin_of(CONTEXT, stream, source, token)?))
    }

    /// One attempt at a create; `None` when a write came between its reads and its own.
    async fn try_create(
        &self,
        stream: &StreamName,
        request: &CreateLog,
    ) -> StoreResult<Option<CreateOutcome>> {
        let (target, _) = self.find_log(stream, None).await?;
        if let Some(existing) = target.live() {
            return Ok(Some(if create_matches(&existing.state, request) {
                CreateOutcome::Exists(existing.state.clone())
            } else {
                CreateOutcome::Conflict
            }));
        }
        if target.tombstone {
            return Ok(Some(CreateOutcome::Conflict));
        }
        let (config, tail, mut entries, taken) = match &request.fork {
            None => (request.config.clone(), 0, Vec::new(), None),
            Some(fork) => {
                let (found, _) = self.find_log(&fork.source, None).await?;
                let Some(source) = found.live() else {
                    return Ok(Some(if found.tombstone {
                        CreateOutcome::Conflict
                    } else {
                        CreateOutcome::SourceNotFound
                    }));
                };
                let anchor = fork_anchor(&source.state, fork);
                // No entry follows the tail: a fork at the head (the usual one) needs no look.
                let next_len = if anchor < source.state.tail {
                    self.entry_len(&fork.source, anchor + 1).await?
                } else {
                    None
                };
                let plan = match plan_fork(&source.state, next_len, request) {
                    Ok(plan) => plan,
                    Err(refusal) => return Ok(Some(refusal.into())),
                };
                let fork_token = token();
                let member = reference(stream.as_str(), &fork_token);
                let Some(copied) = self
                    .take(
                        &fork.source,
                        &source.guard,
                        &member,
                        plan.upto,
                        plan.partial,
                    )
                    .await?
                else {
                    return Ok(None);
                };
                let tail = plan.upto + Position::from(plan.partial.is_some());
                (
                    plan.config,
                    tail,
                    copied,
                    Some((fork.source.clone(), member, fork_token)),
                )
            }
        };
        let tail = push_entries(&mut entries, tail, &request.entries);
        let fork_token = taken.as_ref().map(|(_, _, t)| t.as_str()).unwrap_or("");
        let new = NewLog {
            config: &config,
            closed: request.closed,
            fork_token,
            tail,
            entries,
        };
        let written = self.write_create(stream, &target, new).await?;
        match written {
            Some(replaced) => {
                self.release(replaced).await?;
                Ok(Some(CreateOutcome::Created(LogState {
                    config,
                    tail,
                    closed: request.closed,
                    closed_by: None,
                    stream_seq: None,
                })))
            }
            None => {
                // Not made: the reference it took must not keep the source standing.
                self.release(taken.map(|(source, member, _)| (source, member)))
                    .await?;
                Ok(None)
            }
        }
    }

    /// One attempt at an append; `None` when a write came between its read and its own.
    async fn try_append(
        &self,
        stream: &StreamName,
        request: &LogAppend,
    ) -> StoreResult<Option<AppendOutcome>> {
        const CONTEXT: &str = "append to a stream";
        let claim = request.producer.as_ref();
        let (found, known) = self.find_log(stream, claim.map(|c| c.id.as_str())).await?;
        let stored = found.existing(stream)?;
        let (producer, close, stream_seq) = match plan_append(&stored.state, known, request) {
            AppendPlan::Answer(outcome) => return Ok(Some(outcome)),
            AppendPlan::Write {
                producer,
                close,
                stream_seq,
            } => (producer, close, stream_seq),
        };
        let closer = claim.filter(|_| close);
        let mut args: Vec<Vec<u8>> = [
            stored.guard.ver,
            stored.guard.last,
            token(),
            String::new(),
            producer
                .as_ref()
                .map(|(id, _)| id.clone())
                .unwrap_or_default(),
            producer
                .as_ref()
                .map(|(_, s)| format!("{} {}", s.epoch, s.seq))
                .unwrap_or_default(),
            match (close, closer) {
                (false, _) => "",
                (true, None) => "1",
                (true, Some(_)) => "2",
            }
            .to_owned(),
            closer.map(|c| c.id.clone()).unwrap_or_default(),
            closer.map(|c| c.epoch.to_string()).unwrap_or_default(),
            closer.map(|c| c.seq.to_string()).unwrap_or_default(),
            if stream_seq.is_some() { "1" } else { "" }.to_owned(),
            stream_seq.unwrap_or_default(),
        ]
        .map(String::into_bytes)
        .into();
        let tail = push_entries(&mut args, stored.state.tail, &request.entries);
        args[3] = tail.to_string().into_bytes();
        let mut fields = self
            .log_script(CONTEXT, &LOG_APPEND, true, stream, &args)
            .await?;
        if fields.status(stream.as_str())? == Status::Changed {
            return Ok(None);
        }
        Ok(Some(AppendOutcome::Appended {
            tail,
            closed: close,
            producer: producer.map(|(_, state)| state),
        }))
    }
}

/// The error of a call whose every attempt met another write to the same stream.
fn contended(stream: &StreamName) -> StoreError {
    StoreError::Unavailable(format!(
        "stream {stream} changed under {ATTEMPTS} attempts in a row; retry"
    ))
}

#[async_trait]
impl LogStore for RedisStore {
    async fn create_log(
        &self,
        stream: &StreamName,
        request: CreateLog,
    ) -> StoreResult<CreateOutcome> {
        for _ in 0..ATTEMPTS {
            if let Some(outcome) = self.try_create(stream, &request).await? {
                return Ok(outcome);
            }
        }
        Err(contended(stream))
    }

    async fn append_log(
        &self,
        stream: &StreamName,
        request: LogAppend,
    ) -> StoreResult<AppendOutcome> {
        for _ in 0..ATTEMPTS {
            if let Some(outcome) = self.try_append(stream, &request).await? {
                return Ok(outcome);
            }
        }
        Err(contended(stream))
    }

    async fn read_log(
        &self,
        stream: &StreamName,
        after: Position,
        max_bytes: usize,
    ) -> StoreResult<LogRead> {
        const CONTEXT: &str = "read a stream";
        let args = [
            after.to_string(),
            max_bytes.to_string(),
            READ_ENTRIES.to_string(),
        ]
        .map(String::into_bytes);
        let mut fields = self
            .log_script(CONTEXT, &LOG_READ, false, stream, &args)
            .await?;
        let stored = Found::read(&mut fields, CONTEXT)?.existing(stream)?;
        let mut entries = Vec::new();
        while !fields.is_empty() {
            entries.push((fields.int()?, fields.bytes()?));
        }
        // Only a stream that expires when idle needs the write a touch is; the read
        // stands if the touch fails (the countdown then runs from the last one).
        if matches!(stored.state.config.expiry, Expiry::Idle(_)) {
            if let Err(error) = self
                .log_script(
                    "touch a stream",
                    &LOG_TOUCH,
                    true,
                    stream,
                    &[stored.guard.ver.into_bytes()],
                )
                .await
            {
                tracing::warn!(%error, %stream, "cannot restart a stream's idle countdown");
            }
        }
        Ok(LogRead {
            entries,
            state: stored.state,
        })
    }

    async fn log_state(&self, stream: &StreamName) -> StoreResult<LogState> {
        let (found, _) = self.find_log(stream, None).await?;
        Ok(found.existing(stream)?.state)
    }

    async fn delete_log(&self, stream: &StreamName) -> StoreResult<()> {
        for _ in 0..ATTEMPTS {
            let (found, _) = self.find_log(stream, None).await?;
            let stored = found.existing(stream)?;
            match self
                .remove_log(stream, &stored.guard, "delete", stored.touched_at)
                .await?
            {
                Removal::Changed => continue,
                Removal::Tombstone => return Ok(()),
                Removal::Removed(origin) => return self.release(origin).await,
            }
        }
        Err(contended(stream))
    }
}

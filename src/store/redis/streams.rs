//! Streams on Redis: each operation one script of `lua/` over the stream's keys.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::reply::{Fields, Status};
use super::{Core, RedisStore};
use crate::domain::clock::millis_of;
use crate::domain::streams::StreamRetention;
use crate::domain::wakeups::stream_key;
use crate::domain::{
    Appended, ConsumerOffset, EventId, NewEvent, ReadFrom, StoreError, StoreResult, StoredEvent,
    StreamInfo, StreamName, StreamStore,
};

static APPEND: LazyLock<Script> = lua!("stream.lua", "append.lua");
static READ_EVENTS: LazyLock<Script> = lua!("stream.lua", "read_events.lua");
static ACK_EVENT: LazyLock<Script> = lua!("stream.lua", "ack_event.lua");
static STREAM_INFO: LazyLock<Script> = lua!("stream.lua", "stream_info.lua");
static STREAM_SET: LazyLock<Script> = lua!("stream.lua", "stream_set.lua");
static SWEEP_EVENTS: LazyLock<Script> = lua!("stream.lua", "sweep_events.lua");

impl Core {
    /// Runs a stream script (see `lua/stream.lua`).
    async fn stream_script(
        &self,
        context: &'static str,
        script: &Script,
        writes: bool,
        stream: &StreamName,
        event_name: Option<&str>,
        args: &[&str],
    ) -> StoreResult<Fields> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let keys = self.keys.stream(stream.as_str(), event_name);
        self.script(context, script, writes, &keys, &stream_key(stream), &args)
            .await
    }

    /// A stream's details from `lua/stream_info.lua`.
    async fn info(&self, stream: &StreamName, with_consumers: bool) -> StoreResult<StreamInfo> {
        let mode = if with_consumers { "consumers" } else { "" };
        let mut fields = self
            .stream_script("read a stream", &STREAM_INFO, false, stream, None, &[mode])
            .await?;
        fields.status(stream.as_str())?;
        let mut meta = Fields::new("read a stream", fields.array()?);
        let (mut owner, mut retention) = (String::new(), StreamRetention::default());
        while !meta.is_empty() {
            let (name, value) = (meta.text()?, meta.text()?);
            match name.as_str() {
                "owner" => owner = value,
                "max_age" => retention.max_age = value.parse().ok().map(Duration::from_millis),
                "max_events" => retention.max_events = value.parse().ok(),
                _ => {}
            }
        }
        let length = fields.count()?;
        let position = |id: i64| (id >= 0).then_some(id);
        let first_event = position(fields.int()?);
        let last_event = position(fields.int()?);
        let mut consumers = Vec::new();
        while !fields.is_empty() {
            consumers.push(ConsumerOffset {
                consumer: fields.text()?,
                event_name: fields.text()?,
                offset: fields.int()?,
                lag: fields.count()?,
            });
        }
        consumers.sort_by(|a, b| (&a.consumer, &a.event_name).cmp(&(&b.consumer, &b.event_name)));
        Ok(StreamInfo {
            name: stream.clone(),
            owner,
            length,
            first_event,
            last_event,
            consumers,
            retention,
        })
    }
}

#[async_trait]
impl StreamStore for RedisStore {
    async fn append(&self, event: NewEvent) -> StoreResult<Appended> {
        self.register(self.keys.streams(), event.stream.as_str())
            .await?;
        let mut fields = self
            .stream_script(
                "append an event",
                &APPEND,
                true,
                &event.stream,
                Some(&event.name),
                &[&event.producer, &event.name, &event.body],
            )
            .await?;
        match fields.status(event.stream.as_str())? {
            Status::Locked => Ok(Appended::Locked),
            Status::Closed => Ok(Appended::Closed),
            _ => {
                let id = fields.int()?;
                if fields.int()? == 1 {
                    // Created here: make sure the registry has it, whatever this node thought.
                    self.command::<i64>(
                        "register",
                        true,
                        redis::cmd("SADD")
                            .arg(self.keys.streams())
                            .arg(event.stream.as_str()),
                    )
                    .await?;
                }
                Ok(Appended::Event(id))
            }
        }
    }

    async fn read_events(
        &self,
        stream: &StreamName,
        consumer: &str,
        event_name: &str,
        from: ReadFrom,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let (mode, after) = match from {
            ReadFrom::Offset => ("offset", 0),
            ReadFrom::After(id) => ("after", id),
        };
        let (after, limit) = (after.to_string(), limit.to_string());
        let mut fields = self
            .stream_script(
                "read events",
                &READ_EVENTS,
                false,
                stream,
                Some(event_name),
                &[consumer, event_name, mode, &after, &limit],
            )
            .await?;
        fields.status(stream.as_str())?;
        let mut events = Vec::new();
        while !fields.is_empty() {
            events.push(StoredEvent {
                id: fields.int()?,
                body: fields.text()?,
            });
        }
        Ok(events)
    }

    async fn ack_event(
        &self,
        stream: &StreamName,
        consumer: &str,
        event: EventId,
    ) -> StoreResult<bool> {
        let event = event.to_string();
        let mut fields = self
            .stream_script(
                "commit an offset",
                &ACK_EVENT,
                true,
                stream,
                None,
                &[consumer, &event],
            )
            .await?;
        Ok(fields.status(stream.as_str())? == Status::Ok)
    }

    async fn stream_info(&self, stream: &StreamName) -> StoreResult<StreamInfo> {
        self.info(stream, true).await
    }

    async fn list_streams(&self) -> StoreResult<Vec<StreamInfo>> {
        let mut streams = Vec::new();
        for name in self.registry(self.keys.streams()).await? {
            let Ok(stream) = StreamName::parse(&name) else {
                continue;
            };
            match self.info(&stream, false).await {
                Ok(info) => streams.push(info),
                Err(StoreError::StreamNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(streams)
    }

    async fn set_stream_owner(&self, stream: &StreamName, owner: &str) -> StoreResult<()> {
        let mut fields = self
            .stream_script(
                "set a stream's owner",
                &STREAM_SET,
                true,
                stream,
                None,
                &["owner", owner],
            )
            .await?;
        fields.status(stream.as_str()).map(drop)
    }

    async fn set_stream_retention(
        &self,
        stream: &StreamName,
        retention: StreamRetention,
    ) -> StoreResult<()> {
        let max_age = retention
            .max_age
            .map(|age| millis_of(age).to_string())
            .unwrap_or_default();
        let max_events = retention
            .max_events
            .map(|n| n.to_string())
            .unwrap_or_default();
        let mut fields = self
            .stream_script(
                "set a stream's retention",
                &STREAM_SET,
                true,
                stream,
                None,
                &["max_age", &max_age, "max_events", &max_events],
            )
            .await?;
        fields.status(stream.as_str()).map(drop)
    }

    async fn event_at(
        &self,
        stream: &StreamName,
        at: crate::domain::clock::Millis,
    ) -> StoreResult<Option<EventId>> {
        super::records::event_at(self, stream, at).await
    }

    async fn sweep_events(&self) -> StoreResult<u64> {
        let mut dropped = 0;
        for name in self.registry(self.keys.streams()).await? {
            let Ok(stream) = StreamName::parse(&name) else {
                continue;
            };
            let mut fields = self
                .stream_script(
                    "drop expired events",
                    &SWEEP_EVENTS,
                    true,
                    &stream,
                    None,
                    &[],
                )
                .await?;
            fields.status(stream.as_str())?;
            dropped += fields.count()?;
            dropped += self.sweep_log(&stream).await?;
        }
        Ok(dropped)
    }
}

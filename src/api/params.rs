//! Typed path and query parameters: each value type checks its bounds while it is
//! parsed and says, in the caller's terms, what it expected. The structs here are
//! what handlers extract and what the API description lists, so the two cannot
//! disagree.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use utoipa::IntoParams;

use super::docs::{access_key_id_schema, name_schema};
use crate::domain::queues::{MAX_COUNT, MAX_PEEK};
use crate::domain::settings::{
    parse_duration, parse_duration_within, DURATION_EXPECTED, MAX_LEASE, MIN_LEASE,
};
use crate::domain::{AccessKeyId, ClientId, EventId, QueueName, StreamName};

/// A number of messages or events: an integer from 1 to [`MAX_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(UpToVisitor(MAX_COUNT))
            .map(Count)
    }
}

/// How many messages a peek shows: an integer from 1 to [`MAX_PEEK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekLimit(pub u32);

impl<'de> Deserialize<'de> for PeekLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(UpToVisitor(MAX_PEEK))
            .map(PeekLimit)
    }
}

/// An integer from 1 to its bound, as text.
struct UpToVisitor(u32);

impl Visitor<'_> for UpToVisitor {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer between 1 and {}", self.0)
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<u32, E> {
        text.parse::<u32>()
            .ok()
            .filter(|n| (1..=self.0).contains(n))
            .ok_or_else(|| E::custom(format!("must be between 1 and {}", self.0)))
    }
}

/// A duration in a query string: seconds, or a number with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl Visitor<'_> for SecondsVisitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Seconds, E> {
                parse_duration(text)
                    .map(Seconds)
                    .map_err(|_| E::custom(DURATION_EXPECTED))
            }
        }
        deserializer.deserialize_str(SecondsVisitor)
    }
}

/// A lease in a query string, within the limits of a lease, compared as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSeconds(pub Duration);

impl<'de> Deserialize<'de> for LeaseSeconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LeaseVisitor;
        impl Visitor<'_> for LeaseVisitor {
            type Value = LeaseSeconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<LeaseSeconds, E> {
                parse_duration(text).map_err(|_| E::custom(DURATION_EXPECTED))?;
                parse_duration_within("", text, MIN_LEASE, MAX_LEASE)
                    .map(LeaseSeconds)
                    .map_err(|e| E::custom(e.to_string().trim_start()))
            }
        }
        deserializer.deserialize_str(LeaseVisitor)
    }
}

/// An event id in a query string: an integer from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventIdParam(pub EventId);

impl<'de> Deserialize<'de> for EventIdParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = EventIdParam;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event id")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<EventIdParam, E> {
                text.parse::<EventId>()
                    .ok()
                    .filter(|id| *id >= 0)
                    .map(EventIdParam)
                    .ok_or_else(|| E::custom("must be an event id"))
            }
        }
        deserializer.deserialize_str(IdVisitor)
    }
}

/// `{queue}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueuePath {
    /// The queue's name.
    #[param(value_type = String, schema_with = name_schema, required = true)]
    pub queue: QueueName,
}

/// `{stream}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StreamPath {
    /// The stream's name.
    #[param(value_type = String, schema_with = name_schema, required = true)]
    pub stream: StreamName,
}

/// `{stream}` and `{event}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventPath {
    /// The stream's name.
    #[param(value_type = String, schema_with = name_schema, required = true)]
    pub stream: StreamName,
    /// The event's id, as its append answered it (digits only).
    #[param(value_type = String, pattern = r"^[0-9]+$", max_length = 19)]
    pub event: String,
}

/// `{id}` of a client.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ClientPath {
    /// The client's id.
    #[param(value_type = String, schema_with = name_schema, required = true)]
    pub id: ClientId,
}

/// `{id}` of a client and `{key_id}` of one of its AWS access keys.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AwsKeyPath {
    /// The client's id.
    #[param(value_type = String, schema_with = name_schema, required = true)]
    pub id: ClientId,
    /// The access key id.
    #[param(value_type = String, schema_with = access_key_id_schema, required = true)]
    pub key_id: AccessKeyId,
}

/// `?count=N` of a pop.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PopQuery {
    /// How many messages to take at most.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 1)]
    pub count: Option<Count>,
}

/// `?count=N&lease=S&wait=S` of a receive.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReceiveQuery {
    /// How many messages to lease at most.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 1)]
    pub count: Option<Count>,
    /// How long the messages stay leased, in seconds (or with a unit: `500ms`,
    /// `2m`); the queue's `lease` setting when absent.
    #[param(value_type = Option<f64>, minimum = 0.1, maximum = 43200)]
    pub lease: Option<LeaseSeconds>,
    /// How long to wait for a message while none is ready, in seconds (or with a
    /// unit); 0 when absent; longer waits than the server's `limits.max_poll` (60 s by
    /// default) are cut to it.
    #[param(value_type = Option<f64>, minimum = 0)]
    pub wait: Option<Seconds>,
}

/// `?limit=N` of the dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadQuery {
    /// How many dead letters to show at most.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<Count>,
}

/// `?limit=N` of a peek.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeekQuery {
    /// How many of the oldest ready messages to show at most.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 10)]
    pub limit: Option<PeekLimit>,
}

/// `?count=N` of a redrive.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RedriveQuery {
    /// How many dead letters to make ready again at most.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 1000)]
    pub count: Option<Count>,
}

/// `?eventName=E&limit=N[&after=ID][&wait=S]` of a stream read (seed 004's, plus
/// `after` and `wait`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Only events of this name (`event.name`); each name has its own offset.
    #[serde(rename = "eventName")]
    #[param(min_length = 1, pattern = r"^[^\x00]+$")]
    pub event_name: String,
    /// How many events to return at most.
    #[param(value_type = u32, minimum = 1, maximum = 1000)]
    pub limit: Count,
    /// Replay the events after this id instead of after the consumer's offset
    /// (the offset does not move).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<EventIdParam>,
    /// How long to wait for an event while none matches, in seconds (or with a
    /// unit); 0 when absent; cut to `limits.max_poll` (60 s by default).
    #[param(value_type = Option<f64>, minimum = 0)]
    pub wait: Option<Seconds>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::body::parse_form;

    #[test]
    fn bounds_are_checked_while_parsing() {
        let query: ReceiveQuery = parse_form("count=10&lease=1.5&wait=2m").unwrap();
        assert_eq!(query.count, Some(Count(10)));
        assert_eq!(query.lease, Some(LeaseSeconds(Duration::from_millis(1500))));
        assert_eq!(query.wait, Some(Seconds(Duration::from_secs(120))));
        let error = |q: &str| parse_form::<ReceiveQuery>(q).unwrap_err().to_string();
        assert_eq!(error("count=0"), "count must be between 1 and 1000");
        assert_eq!(error("count=x"), "count must be between 1 and 1000");
        assert_eq!(error("wait=soon"), format!("wait {DURATION_EXPECTED}"));
        let error = |q: &str| parse_form::<PeekQuery>(q).unwrap_err().to_string();
        assert_eq!(error("limit=0"), "limit must be between 1 and 100");
        assert_eq!(error("limit=101"), "limit must be between 1 and 100");
        let error = parse_form::<ReadQuery>("limit=5").unwrap_err().to_string();
        assert_eq!(error, "eventName is required");
    }
}

//! Queue settings: their defaults, their limits, and how a change is applied.
//!
//! A change is also the body of `PUT /api/v1/queues/{q}`; its JSON Schema is
//! derived here, from the same limits the checks use, so the API description
//! cannot promise what the checks refuse.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AnyOfBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::ToSchema;

use super::delivery::DeliverySettings;
use super::{DomainError, QueueName};

/// Shortest lease a receive may take; shorter ones would expire in flight.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Longest lease, as SQS's visibility timeout: half a day.
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 3600);
/// Longest `Hopper-Delay` or nack delay: a week; longer waits belong to a scheduler.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest default wait of a receive, as a receive's own `wait` is capped.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Upper bound of `max_attempts`, so a typo cannot make a poison message immortal.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Longest idempotency window: a day of remembered keys.
pub const MAX_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How a queue treats its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// How long a received message stays invisible before it is handed out again.
    pub lease: Duration,
    /// Hand-outs allowed before a message becomes a dead letter.
    pub max_attempts: u32,
    /// Age after which a message is dropped, or `None` to keep it until consumed.
    pub retention: Option<Duration>,
    /// How long an `Idempotency-Key` maps to the message it first created.
    pub idempotency_window: Duration,
    /// Hopper delivers the messages to an upstream itself.
    pub delivery: Option<DeliverySettings>,
    /// Whether messages of one group are handed out one at a time, in order.
    pub ordering: Ordering,
    /// Where dead letters go: another queue, where they are ready again; `None`
    /// keeps them in this queue's dead letters.
    pub dead_letter_queue: Option<QueueName>,
    /// Delay of a push that names none.
    pub delay: Duration,
    /// How long a receive that names no wait waits for a message.
    pub wait: Duration,
    /// A push without an idempotency key is deduplicated by its body (SQS's
    /// content-based deduplication; the SQS endpoint applies it).
    pub content_deduplication: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease: Duration::from_secs(30),
            max_attempts: 10,
            retention: None,
            idempotency_window: Duration::from_secs(300),
            delivery: None,
            ordering: Ordering::Any,
            dead_letter_queue: None,
            delay: Duration::ZERO,
            wait: Duration::ZERO,
            content_deduplication: false,
        }
    }
}

/// How a queue orders what it hands out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Oldest first, any number at a time.
    #[default]
    Any,
    /// Oldest first, and at most one message of each group at a time: a message
    /// with a group is handed out only while it is the oldest message of its group
    /// that is not a dead letter, so the group waits while its head is leased or
    /// delayed, and moves on when the head is acked or dead-lettered.
    Group,
}

/// The settings every backend keeps in one JSON column (or field), beside the
/// ones older than them that have columns of their own.
#[derive(Default, Serialize, Deserialize)]
struct StoredOptions {
    #[serde(default, skip_serializing_if = "is_default")]
    ordering: Ordering,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead_letter_queue: Option<QueueName>,
    #[serde(default, skip_serializing_if = "is_default")]
    delay_ms: u64,
    #[serde(default, skip_serializing_if = "is_default")]
    wait_ms: u64,
    #[serde(default, skip_serializing_if = "is_default")]
    content_deduplication: bool,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl QueueSettings {
    /// The settings a backend stores in its options column: `None` when all are defaults.
    pub fn options_json(&self) -> Option<String> {
        let options = StoredOptions {
            ordering: self.ordering,
            dead_letter_queue: self.dead_letter_queue.clone(),
            delay_ms: self.delay.as_millis() as u64,
            wait_ms: self.wait.as_millis() as u64,
            content_deduplication: self.content_deduplication,
        };
        let json = serde_json::to_string(&options).unwrap_or_default();
        (json != "{}").then_some(json)
    }

    /// These settings with the options a backend stored (see [`Self::options_json`]).
    pub fn with_options_json(mut self, json: Option<&str>) -> Result<Self, serde_json::Error> {
        let options: StoredOptions = match json {
            Some(json) => serde_json::from_str(json)?,
            None => StoredOptions::default(),
        };
        self.ordering = options.ordering;
        self.dead_letter_queue = options.dead_letter_queue;
        self.delay = Duration::from_millis(options.delay_ms);
        self.wait = Duration::from_millis(options.wait_ms);
        self.content_deduplication = options.content_deduplication;
        Ok(self)
    }
}

/// A change to some settings, as sent to `PUT /api/v1/queues/{q}`; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// New lease.
    #[serde(default, deserialize_with = "lease_value")]
    #[schema(schema_with = lease_schema)]
    pub lease: Option<Duration>,
    /// New attempt limit.
    #[serde(default, deserialize_with = "present_whole")]
    #[schema(schema_with = max_attempts_schema)]
    pub max_attempts: Option<u32>,
    /// New retention; JSON `null` or `0` keeps messages forever.
    #[serde(default, with = "opt_opt_duration")]
    #[schema(schema_with = retention_schema)]
    pub retention: Option<Option<Duration>>,
    /// New idempotency window.
    #[serde(default, deserialize_with = "idempotency_window_value")]
    #[schema(schema_with = idempotency_window_schema)]
    pub idempotency_window: Option<Duration>,
    /// New delivery (replacing the whole of it); JSON `null` stops delivering.
    #[serde(default, deserialize_with = "some_or_null")]
    #[schema(value_type = Option<DeliverySettings>, nullable)]
    pub delivery: Option<Option<DeliverySettings>>,
    /// New ordering: `"group"` hands out one message per group at a time.
    #[serde(default)]
    pub ordering: Option<Ordering>,
    /// New dead-letter queue; JSON `null` keeps dead letters in this queue.
    #[serde(default, deserialize_with = "some_or_null")]
    #[schema(schema_with = dead_letter_queue_schema)]
    pub dead_letter_queue: Option<Option<QueueName>>,
    /// New default delay of pushes.
    #[serde(default, deserialize_with = "delay_value")]
    #[schema(schema_with = delay_schema)]
    pub delay: Option<Duration>,
    /// New default wait of receives.
    #[serde(default, deserialize_with = "wait_value")]
    #[schema(schema_with = wait_schema)]
    pub wait: Option<Duration>,
    /// Whether SQS pushes without a deduplication id are deduplicated by their body.
    #[serde(default)]
    pub content_deduplication: Option<bool>,
}

fn dead_letter_queue_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .pattern(Some(super::names::NAME_PATTERN))
        .max_length(Some(super::names::MAX_NAME_LEN))
        .description(Some(
            "A queue that receives this queue's dead letters, ready again; null keeps them here.",
        ))
        .build()
}

fn delay_schema() -> Schema {
    seconds_schema(
        "How long a push that names no delay waits before it is ready.",
        Duration::ZERO,
        Some(MAX_DELAY),
        false,
    )
}

fn wait_schema() -> Schema {
    seconds_schema(
        "How long a receive that names no wait waits for a message.",
        Duration::ZERO,
        Some(MAX_WAIT),
        false,
    )
}

fn delay_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    within(d, Duration::ZERO, MAX_DELAY).map(Some)
}

fn wait_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    within(d, Duration::ZERO, MAX_WAIT).map(Some)
}

/// The JSON Schema of a duration from `min` to `max` (`null` allowed when
/// `nullable`): a number of seconds, or a string with a unit. A string's bounds
/// cannot be put in a pattern; the description states them and a 400 says so.
pub fn seconds_schema(
    description: &str,
    min: Duration,
    max: Option<Duration>,
    nullable: bool,
) -> Schema {
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(min.as_secs_f64()))
        .maximum(max.map(|max| max.as_secs_f64()));
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(DURATION_PATTERN));
    let mut shapes = AnyOfBuilder::new().item(seconds).item(text);
    if nullable {
        shapes = shapes.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    let range = match max {
        Some(max) => format!(
            "from {} to {} seconds",
            min.as_secs_f64(),
            max.as_secs_f64()
        ),
        None => format!("at least {} seconds", min.as_secs_f64()),
    };
    Schema::AnyOf(
        shapes
            .description(Some(format!(
                "{description} In seconds, or a string with a unit such as \"500ms\", \"5m\", \"7d\"; {range}."
            )))
            .build(),
    )
}

fn lease_schema() -> Schema {
    seconds_schema(
        "How long a received message stays leased.",
        MIN_LEASE,
        Some(MAX_LEASE),
        false,
    )
}

fn max_attempts_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_ATTEMPTS_LIMIT))
        .description(Some("Hand-outs before a message becomes a dead letter."))
        .build()
}

fn retention_schema() -> Schema {
    seconds_schema(
        "Age after which messages (dead letters too) are dropped; null or 0 keeps them.",
        Duration::ZERO,
        None,
        true,
    )
}

fn idempotency_window_schema() -> Schema {
    seconds_schema(
        "How long an Idempotency-Key is remembered.",
        Duration::ZERO,
        Some(MAX_IDEMPOTENCY_WINDOW),
        false,
    )
}

fn lease_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    within(d, MIN_LEASE, MAX_LEASE).map(Some)
}

fn idempotency_window_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    within(d, Duration::ZERO, MAX_IDEMPOTENCY_WINDOW).map(Some)
}

/// A present whole-number field: `null` is refused, as for [`present_duration`].
fn present_whole<'de, D: serde::Deserializer<'de>, T: Whole>(d: D) -> Result<Option<T>, D::Error> {
    whole::deserialize(d).map(Some)
}

/// Reads a present field as `Some(value)`, `null` included; an absent one stays `None`.
fn some_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl SettingsPatch {
    /// Applies the patch over `current`, refusing values outside the limits.
    pub fn apply(&self, current: &QueueSettings) -> Result<QueueSettings, DomainError> {
        self.validate()?;
        Ok(self.over(current))
    }

    /// Refuses values outside the limits; none of them depends on the current settings,
    /// so a patch checked once can be applied by the store inside its write.
    pub fn validate(&self) -> Result<(), DomainError> {
        if let Some(lease) = self.lease {
            check_lease(lease)?;
        }
        if let Some(max_attempts) = self.max_attempts {
            if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
                return Err(DomainError::invalid(format!(
                    "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"
                )));
            }
        }
        if let Some(window) = self.idempotency_window {
            if window > MAX_IDEMPOTENCY_WINDOW {
                return Err(DomainError::invalid(format!(
                    "idempotency_window must be at most {} seconds",
                    MAX_IDEMPOTENCY_WINDOW.as_secs()
                )));
            }
        }
        if let Some(Some(delivery)) = &self.delivery {
            delivery.validate()?;
        }
        if let Some(delay) = self.delay {
            check_delay(delay)?;
        }
        if let Some(wait) = self.wait {
            if wait > MAX_WAIT {
                return Err(DomainError::invalid(format!(
                    "wait must be between 0 and {} seconds",
                    MAX_WAIT.as_secs()
                )));
            }
        }
        Ok(())
    }

    /// The settings `current` becomes under this patch, unchecked: what a store applies
    /// after the caller has [validated](Self::validate) the patch.
    pub fn over(&self, current: &QueueSettings) -> QueueSettings {
        let mut next = current.clone();
        if let Some(lease) = self.lease {
            next.lease = lease;
        }
        if let Some(max_attempts) = self.max_attempts {
            next.max_attempts = max_attempts;
        }
        if let Some(retention) = self.retention {
            next.retention = retention.filter(|r| !r.is_zero());
        }
        if let Some(window) = self.idempotency_window {
            next.idempotency_window = window;
        }
        if let Some(delivery) = &self.delivery {
            next.delivery = delivery.clone();
        }
        if let Some(ordering) = self.ordering {
            next.ordering = ordering;
        }
        if let Some(queue) = &self.dead_letter_queue {
            next.dead_letter_queue = queue.clone();
        }
        if let Some(delay) = self.delay {
            next.delay = delay;
        }
        if let Some(wait) = self.wait {
            next.wait = wait;
        }
        if let Some(content) = self.content_deduplication {
            next.content_deduplication = content;
        }
        next
    }

    /// A patch that sets every field to `settings`: a whole replacement.
    pub fn replacing(settings: &QueueSettings) -> SettingsPatch {
        SettingsPatch {
            lease: Some(settings.lease),
            max_attempts: Some(settings.max_attempts),
            retention: Some(settings.retention),
            idempotency_window: Some(settings.idempotency_window),
            delivery: Some(settings.delivery.clone()),
            ordering: Some(settings.ordering),
            dead_letter_queue: Some(settings.dead_letter_queue.clone()),
            delay: Some(settings.delay),
            wait: Some(settings.wait),
            content_deduplication: Some(settings.content_deduplication),
        }
    }
}

/// Checks a lease against [`MIN_LEASE`]..=[`MAX_LEASE`].
pub fn check_lease(lease: Duration) -> Result<Duration, DomainError> {
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(DomainError::invalid(format!(
            "lease must be between {} and {} seconds",
            MIN_LEASE.as_secs_f64(),
            MAX_LEASE.as_secs()
        )));
    }
    Ok(lease)
}

/// Checks a delay against [`MAX_DELAY`].
pub fn check_delay(delay: Duration) -> Result<Duration, DomainError> {
    if delay > MAX_DELAY {
        return Err(DomainError::invalid(format!(
            "delay must be between 0 and {} seconds",
            MAX_DELAY.as_secs()
        )));
    }
    Ok(delay)
}

/// What a duration that Hopper cannot read is told. Durations are written as
/// seconds (`1.5`, `30`, or as a JSON number writes them, `1e-3`) or as a whole
/// or decimal number with a unit (`200ms`, `5s`, `2m`, `1h`, `7d`), no spaces.
pub const DURATION_EXPECTED: &str =
    "must be a number of seconds or a duration such as 500ms, 5s, 2m, 1h or 7d";

/// Parses a duration as [`DURATION_EXPECTED`] describes; one too long for
/// `Duration` saturates, so range checks (not overflow) decide what is refused.
pub fn parse_duration(raw: &str) -> Result<Duration, DomainError> {
    let invalid = || DomainError::invalid(format!("{raw:?} {DURATION_EXPECTED}"));
    seconds_to_duration(parse_seconds(raw)?).ok_or_else(invalid)
}

/// Parses a duration that must lie from `min` to `max`, compared as written: a
/// value a hair past a bound (closer than the nanosecond a `Duration` keeps) is
/// outside it, though it would round onto the bound. `what` names it in errors.
pub fn parse_duration_within(
    what: &str,
    raw: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, DomainError> {
    let seconds = parse_seconds(raw)
        .map_err(|_| DomainError::invalid(format!("{what} {DURATION_EXPECTED}")))?;
    duration_within(seconds, min, max).map_err(|e| DomainError::invalid(format!("{what} {e}")))
}

/// `seconds` as a duration if it lies from `min` to `max`, else what to tell.
pub fn duration_within(seconds: f64, min: Duration, max: Duration) -> Result<Duration, String> {
    if seconds < min.as_secs_f64() || seconds > max.as_secs_f64() || seconds.is_nan() {
        return Err(format!(
            "must be between {} and {} seconds",
            min.as_secs_f64(),
            max.as_secs_f64()
        ));
    }
    Ok(saturating_seconds(seconds.abs()))
}

/// A duration's text: a number as JSON writes one (clients render numbers into
/// query strings and headers) and an optional unit. The API description states
/// this same pattern, so what a string may hold is said once.
pub const DURATION_PATTERN: &str = r"^(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)(ms|s|m|h|d)?$";

static DURATION_TEXT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(DURATION_PATTERN).expect("DURATION_PATTERN is a valid regular expression")
});

/// The seconds a duration's text says, as written (before any rounding).
fn parse_seconds(raw: &str) -> Result<f64, DomainError> {
    let invalid = || DomainError::invalid(format!("{raw:?} {DURATION_EXPECTED}"));
    let parts = DURATION_TEXT.captures(raw).ok_or_else(invalid)?;
    let scale = match parts.get(2).map_or("", |unit| unit.as_str()) {
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => 1.0,
    };
    let seconds: f64 = parts[1].parse().map_err(|_| invalid())?;
    Ok(seconds * scale)
}

/// `seconds` as a duration, saturating at `Duration::MAX`; `None` when negative
/// (`-0` is zero) or not a number.
fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    (seconds >= 0.0).then(|| saturating_seconds(seconds.abs()))
}

fn saturating_seconds(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

/// Reads a duration from JSON (a number of seconds, or a string per
/// [`DURATION_PATTERN`]) with an error that says what is expected.
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of seconds or a duration such as \"500ms\"")
    }

    fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(seconds))
    }

    fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Duration, E> {
        u64::try_from(seconds)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(DURATION_EXPECTED))
    }

    fn visit_f64<E: serde::de::Error>(self, seconds: f64) -> Result<Duration, E> {
        seconds_to_duration(seconds).ok_or_else(|| E::custom(DURATION_EXPECTED))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(|_| E::custom(DURATION_EXPECTED))
    }
}

fn deserialize_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// A present duration field, `null` mapped to `None`.
struct OptionalDuration(Option<Duration>);

impl<'de> Deserialize<'de> for OptionalDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NullOr;
        impl<'de> serde::de::Visitor<'de> for NullOr {
            type Value = OptionalDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                DurationVisitor.expecting(f)
            }
            fn visit_unit<E>(self) -> Result<OptionalDuration, E> {
                Ok(OptionalDuration(None))
            }
            fn visit_none<E>(self) -> Result<OptionalDuration, E> {
                Ok(OptionalDuration(None))
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<OptionalDuration, D::Error> {
                deserialize_duration(d).map(|d| OptionalDuration(Some(d)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<OptionalDuration, E> {
                DurationVisitor
                    .visit_u64(v)
                    .map(|d| OptionalDuration(Some(d)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<OptionalDuration, E> {
                DurationVisitor
                    .visit_i64(v)
                    .map(|d| OptionalDuration(Some(d)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<OptionalDuration, E> {
                DurationVisitor
                    .visit_f64(v)
                    .map(|d| OptionalDuration(Some(d)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OptionalDuration, E> {
                DurationVisitor
                    .visit_str(v)
                    .map(|d| OptionalDuration(Some(d)))
            }
        }
        d.deserialize_option(NullOr)
    }
}

/// Reads a duration from `min` to `max` (see [`duration_within`]); `null` is refused.
pub fn within<'de, D: serde::Deserializer<'de>>(
    d: D,
    min: Duration,
    max: Duration,
) -> Result<Duration, D::Error> {
    d.deserialize_any(BoundedVisitor { min, max })
}

/// Reads an optional duration from `min` to `max`; `null` is none.
pub fn optional_within<'de, D: serde::Deserializer<'de>>(
    d: D,
    min: Duration,
    max: Duration,
) -> Result<Option<Duration>, D::Error> {
    struct NullOr(BoundedVisitor);
    impl<'de> serde::de::Visitor<'de> for NullOr {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.expecting(f)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self.0).map(Some)
        }
    }
    d.deserialize_option(NullOr(BoundedVisitor { min, max }))
}

/// Reads a duration as [`DurationVisitor`] does, refusing one outside `min..=max`
/// by the number as written.
struct BoundedVisitor {
    min: Duration,
    max: Duration,
}

impl serde::de::Visitor<'_> for BoundedVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        DurationVisitor.expecting(f)
    }

    fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Duration, E> {
        self.visit_f64(seconds as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Duration, E> {
        self.visit_f64(seconds as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, seconds: f64) -> Result<Duration, E> {
        duration_within(seconds, self.min, self.max).map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        let seconds = parse_seconds(text).map_err(|_| E::custom(DURATION_EXPECTED))?;
        self.visit_f64(seconds)
    }
}

/// Integers as JSON Schema counts them: a number without a fraction (`5`, but also
/// `5.0`, which some JSON writers produce) within the type's range.
pub trait Whole: Sized {
    /// The value of `n`, if it is in range.
    fn from_i128(n: i128) -> Option<Self>;
    /// The range, for the error.
    const RANGE: (i128, i128);
}

macro_rules! whole {
    ($($t:ty),*) => {$(
        impl Whole for $t {
            fn from_i128(n: i128) -> Option<Self> {
                <$t>::try_from(n).ok()
            }
            const RANGE: (i128, i128) = (<$t>::MIN as i128, <$t>::MAX as i128);
        }
    )*};
}
whole!(u16, u32, u64);

struct WholeVisitor<T>(std::marker::PhantomData<T>);

impl<T: Whole> WholeVisitor<T> {
    fn error<E: serde::de::Error>() -> E {
        E::custom(format!(
            "must be a whole number from {} to {}",
            T::RANGE.0,
            T::RANGE.1
        ))
    }
}

impl<T: Whole> serde::de::Visitor<'_> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a whole number from {} to {}", T::RANGE.0, T::RANGE.1)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
        T::from_i128(n.into()).ok_or_else(Self::error)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
        T::from_i128(n.into()).ok_or_else(Self::error)
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<T, E> {
        // Beyond 2^53 a double is no exact integer, and beyond i128 no cast holds it.
        if n.fract() != 0.0 || n.abs() > 9_007_199_254_740_992.0 {
            return Err(Self::error());
        }
        T::from_i128(n as i128).ok_or_else(Self::error)
    }
}

/// A whole number of type `T`, as a value of its own (for sequences and options).
pub struct WholeNumber<T>(pub T);

impl<'de, T: Whole> Deserialize<'de> for WholeNumber<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WholeVisitor(std::marker::PhantomData))
            .map(WholeNumber)
    }
}

/// Serde adapter for integer fields (see [`Whole`]).
pub mod whole {
    use super::*;

    /// Reads a whole number.
    pub fn deserialize<'de, D: serde::Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
        WholeNumber::deserialize(d).map(|n| n.0)
    }

    /// Reads an optional whole number (`null` is none).
    pub fn option<'de, D: serde::Deserializer<'de>, T: Whole>(d: D) -> Result<Option<T>, D::Error> {
        Option::<WholeNumber<T>>::deserialize(d).map(|n| n.map(|n| n.0))
    }

    /// Reads an array of whole numbers.
    pub fn vec<'de, D: serde::Deserializer<'de>, T: Whole>(d: D) -> Result<Vec<T>, D::Error> {
        Vec::<WholeNumber<T>>::deserialize(d).map(|v| v.into_iter().map(|n| n.0).collect())
    }
}

/// Serde adapter for `Duration` fields: written as seconds, read as seconds or a
/// duration string.
pub mod seconds {
    use super::*;

    /// Writes seconds, with a fraction.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads a number of seconds or a duration string.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        deserialize_duration(d)
    }
}

/// Serde adapter for `Option<Duration>` fields.
pub mod opt_duration {
    use super::*;

    /// Reads a number of seconds or a duration string.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        OptionalDuration::deserialize(d).map(|o| o.0)
    }
}

/// Serde adapter for `Option<Option<Duration>>`: absent, `null`, or a duration.
pub mod opt_opt_duration {
    use super::*;

    /// Reads `null` as `Some(None)`; an absent field stays `None` through `#[serde(default)]`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        OptionalDuration::deserialize(d).map(|o| Some(o.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("99999999999999999999d").unwrap(),
            Duration::MAX
        );
        assert_eq!(parse_duration("1e-3").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration("-0.0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("1.2345678901234567e+25").unwrap(),
            Duration::MAX
        );
        for bad in [
            "-1", "soon", "", " 5", "5 s", ".5", "5x", "5S", "inf", "+5", "NaN",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patch_keeps_absent_fields_and_checks_limits() {
        let patch: SettingsPatch =
            serde_json::from_str(r#"{"lease": "5s", "retention": null}"#).unwrap();
        let next = patch.apply(&QueueSettings::default()).unwrap();
        assert_eq!(next.lease, Duration::from_secs(5));
        assert_eq!(next.max_attempts, QueueSettings::default().max_attempts);
        assert_eq!(next.retention, None);
        let patch: SettingsPatch = serde_json::from_str(r#"{"max_attempts": 0}"#).unwrap();
        assert!(patch.apply(&QueueSettings::default()).is_err());
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"leese": 5}"#).is_err());
        let error = serde_json::from_str::<SettingsPatch>(r#"{"lease": true}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a number of seconds or a duration"),
            "{error}"
        );
        let error = serde_json::from_str::<SettingsPatch>(r#"{"lease": "soon"}"#).unwrap_err();
        assert!(error.to_string().starts_with(DURATION_EXPECTED), "{error}");
    }
}

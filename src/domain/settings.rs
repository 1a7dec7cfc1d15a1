//! Queue settings: their defaults, their limits, and how a change is applied.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::delivery::DeliverySettings;
use super::DomainError;

/// Shortest lease a receive may take; shorter ones would expire in flight.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Longest lease, as SQS's visibility timeout: half a day.
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 3600);
/// Longest `Hopper-Delay` or nack delay: a week; longer waits belong to a scheduler.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
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
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease: Duration::from_secs(30),
            max_attempts: 10,
            retention: None,
            idempotency_window: Duration::from_secs(300),
            delivery: None,
        }
    }
}

/// A change to some settings, as sent to `PUT /api/v1/queues/{q}`; absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// New lease.
    #[serde(default, with = "opt_duration")]
    pub lease: Option<Duration>,
    /// New attempt limit.
    pub max_attempts: Option<u32>,
    /// New retention; JSON `null` or `0` keeps messages forever.
    #[serde(default, with = "opt_opt_duration")]
    pub retention: Option<Option<Duration>>,
    /// New idempotency window.
    #[serde(default, with = "opt_duration")]
    pub idempotency_window: Option<Duration>,
    /// New delivery (replacing the whole of it); JSON `null` stops delivering.
    #[serde(default, deserialize_with = "some_or_null")]
    pub delivery: Option<Option<DeliverySettings>>,
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
        let mut next = current.clone();
        if let Some(lease) = self.lease {
            next.lease = check_lease(lease)?;
        }
        if let Some(max_attempts) = self.max_attempts {
            if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
                return Err(DomainError::invalid(format!(
                    "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"
                )));
            }
            next.max_attempts = max_attempts;
        }
        if let Some(retention) = self.retention {
            next.retention = retention.filter(|r| !r.is_zero());
        }
        if let Some(window) = self.idempotency_window {
            if window > MAX_IDEMPOTENCY_WINDOW {
                return Err(DomainError::invalid(format!(
                    "idempotency_window must be at most {} seconds",
                    MAX_IDEMPOTENCY_WINDOW.as_secs()
                )));
            }
            next.idempotency_window = window;
        }
        if let Some(delivery) = &self.delivery {
            if let Some(delivery) = delivery {
                delivery.validate()?;
            }
            next.delivery = delivery.clone();
        }
        Ok(next)
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

/// Settings as the API shows them: durations in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct SettingsView {
    /// Lease in seconds.
    pub lease: f64,
    /// Attempt limit.
    pub max_attempts: u32,
    /// Retention in seconds, `null` for none.
    pub retention: Option<f64>,
    /// Idempotency window in seconds.
    pub idempotency_window: f64,
    /// Delivery, with the signing secret hidden.
    pub delivery: Option<DeliverySettings>,
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
        }
    }
}

/// Parses a duration written as seconds (`1.5`) or with a unit (`"200ms"`, `"5s"`, `"2m"`).
pub fn parse_duration(raw: &str) -> Result<Duration, DomainError> {
    let raw = raw.trim();
    let parsed = match raw.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).ok(),
        Err(_) => humantime::parse_duration(raw).ok(),
    };
    parsed.ok_or_else(|| {
        DomainError::invalid(format!(
            "invalid duration {raw:?}: use seconds or a number with a unit such as 200ms, 5s, 2m"
        ))
    })
}

/// Durations as JSON: a number of seconds or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Seconds(f64),
    Text(String),
}

impl DurationRepr {
    fn into_duration<E: serde::de::Error>(self) -> Result<Duration, E> {
        match self {
            DurationRepr::Seconds(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| {
                E::custom(format!(
                    "invalid duration {seconds}: must be a non-negative number of seconds"
                ))
            }),
            DurationRepr::Text(text) => parse_duration(&text).map_err(E::custom),
        }
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
        DurationRepr::deserialize(d)?.into_duration()
    }
}

/// Serde adapter for `Option<Duration>` fields.
pub mod opt_duration {
    use super::*;

    /// Reads a number of seconds or a duration string.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<DurationRepr>::deserialize(d)? {
            None => Ok(None),
            Some(repr) => repr.into_duration().map(Some),
        }
    }
}

/// Serde adapter for `Option<Option<Duration>>`: absent, `null`, or a duration.
pub mod opt_opt_duration {
    use super::*;

    /// Reads `null` as `Some(None)`; an absent field stays `None` through `#[serde(default)]`.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        match Option::<DurationRepr>::deserialize(d)? {
            None => Ok(Some(None)),
            Some(repr) => repr.into_duration().map(|d| Some(Some(d))),
        }
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
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
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
    }
}

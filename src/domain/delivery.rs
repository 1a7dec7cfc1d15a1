//! A queue's `delivery` setting: Hopper consumes the queue itself and calls an
//! upstream HTTP API with each message, retrying with backoff, behind a circuit
//! breaker per upstream host (seeds 001 and 003). The engine is `crate::delivery`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::settings::seconds;
use super::DomainError;

/// How a queue's messages are delivered to an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Where to send each message; `{field}` is replaced by that top-level field of
    /// the message's JSON body, URL-encoded.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Headers sent with every delivery.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait for the upstream's answer.
    #[serde(default = "default_timeout", with = "seconds")]
    pub timeout: Duration,
    /// Deliveries in flight at once, per node.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Delays between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Statuses that count as delivered besides any 2xx (e.g. 404 for a delete).
    #[serde(default)]
    pub done_statuses: Vec<u16>,
    /// `whsec_<base64>`: deliveries are signed as Standard Webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// When to stop calling an upstream host that keeps failing.
    #[serde(default)]
    pub breaker: Breaker,
}

/// Exponential backoff with full jitter: attempt n waits a random time up to
/// `min(max, initial * factor^(n-1))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    #[serde(default = "default_initial", with = "seconds")]
    pub initial: Duration,
    /// Ceiling of any delay.
    #[serde(default = "default_max", with = "seconds")]
    pub max: Duration,
    /// Growth per attempt.
    #[serde(default = "default_factor")]
    pub factor: f64,
}

/// A circuit breaker per upstream host and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Consecutive failures that open it.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    #[serde(default = "default_open_for", with = "seconds")]
    pub open_for: Duration,
}

fn default_method() -> String {
    "POST".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> u32 {
    8
}
fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_max() -> Duration {
    Duration::from_secs(300)
}
fn default_factor() -> f64 {
    2.0
}
fn default_failures() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(5)
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: default_initial(),
            max: default_max(),
            factor: default_factor(),
        }
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: default_failures(),
            open_for: default_open_for(),
        }
    }
}

/// Longest upstream timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Most deliveries in flight per queue and node.
const MAX_CONCURRENCY: u32 = 1024;

fn invalid(detail: String) -> DomainError {
    DomainError::invalid(format!("delivery.{detail}"))
}

impl Backoff {
    /// The ceiling of the delay before attempt `attempt + 1`, after `attempt` failures.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let grown =
            self.initial.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        Duration::from_secs_f64(grown.min(self.max.as_secs_f64()))
    }
}

impl DeliverySettings {
    /// Checks every field, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), DomainError> {
        let sample = fill_template(&self.url, |_| Some("x".into()))
            .ok_or_else(|| invalid(format!("url has an unclosed {{ in {:?}", self.url)))?;
        let parsed = reqwest::Url::parse(&sample)
            .map_err(|e| invalid(format!("url is not a valid URL ({e}): {:?}", self.url)))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(format!(
                "url must be an http:// or https:// URL with a host: {:?}",
                self.url
            )));
        }
        reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| invalid(format!("method {:?} is not an HTTP method", self.method)))?;
        for (name, value) in &self.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("headers: {name:?} is not a header name")))?;
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("headers: the value of {name} is not valid")))?;
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > MAX_TIMEOUT {
            return Err(invalid(format!(
                "timeout must be between 0.1 and {} seconds",
                MAX_TIMEOUT.as_secs()
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(invalid(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        let backoff = &self.backoff;
        if backoff.initial.is_zero() || backoff.max < backoff.initial {
            return Err(invalid("backoff needs 0 < initial <= max".to_owned()));
        }
        if !(1.0..=10.0).contains(&backoff.factor) {
            return Err(invalid(
                "backoff.factor must be between 1 and 10".to_owned(),
            ));
        }
        if let Some(status) = self
            .done_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(invalid(format!(
                "done_statuses: {status} is not an HTTP status"
            )));
        }
        if let Some(secret) = &self.signing_secret {
            signing_key(secret).ok_or_else(|| {
                invalid("signing_secret must be whsec_ followed by base64".to_owned())
            })?;
        }
        if self.breaker.failures == 0 || self.breaker.open_for < Duration::from_millis(100) {
            return Err(invalid(
                "breaker needs failures >= 1 and open_for >= 0.1 s".to_owned(),
            ));
        }
        Ok(())
    }

    /// Whether `status` counts as delivered.
    pub fn is_done(&self, status: u16) -> bool {
        (200..300).contains(&status) || self.done_statuses.contains(&status)
    }
}

/// What a value put into a URL escapes: all but RFC 3986's unreserved characters,
/// so a `/`, `?` or `#` in it cannot change which resource is called.
pub const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The key bytes of a `whsec_<base64>` secret, as Standard Webhooks define it.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
}

/// Replaces each `{name}` in `template` by `value(name)`; `None` when a brace is
/// unclosed or a value is missing.
pub fn fill_template(template: &str, value: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}')? + open;
        out.push_str(&value(&rest[open + 1..close])?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<DeliverySettings, String> {
        let settings: DeliverySettings = serde_json::from_str(json).map_err(|e| e.to_string())?;
        settings.validate().map_err(|e| e.to_string())?;
        Ok(settings)
    }

    #[test]
    fn defaults_and_limits() {
        let s = settings(r#"{"url": "http://cluster/groups/{group_id}"}"#).unwrap();
        assert_eq!(s.method, "POST");
        assert_eq!(s.breaker.failures, 5);
        assert!(s.is_done(204) && !s.is_done(404));
        assert!(settings(r#"{"url": "ftp://x"}"#).is_err());
        assert!(settings(r#"{"url": "http://x/{a"}"#).is_err());
        assert!(settings(r#"{"url": "http://x", "timeout": 0}"#).is_err());
        assert!(settings(r#"{"url": "http://x", "signing_secret": "nope"}"#).is_err());
        assert!(settings(r#"{"url": "http://x", "done_statuses": [1000]}"#).is_err());
        assert!(settings(r#"{"url": "http://x", "methd": "GET"}"#).is_err());
    }

    #[test]
    fn backoff_grows_to_its_ceiling() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            factor: 2.0,
        };
        assert_eq!(backoff.ceiling(1), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(3), Duration::from_secs(4));
        assert_eq!(backoff.ceiling(30), Duration::from_secs(10));
    }

    #[test]
    fn templates_fill_fields() {
        let filled = fill_template("http://c/groups/{id}/x", |name| {
            (name == "id").then(|| "a b".to_owned())
        });
        assert_eq!(filled.as_deref(), Some("http://c/groups/a b/x"));
        assert_eq!(fill_template("http://c/{missing}", |_| None), None);
    }
}

//! A queue's `delivery` setting: Hopper consumes the queue itself and calls an
//! upstream HTTP API with each message, retrying with backoff, behind a circuit
//! breaker per upstream host (seeds 001 and 003). The engine is `crate::delivery`.
//!
//! The JSON Schema of each field is stated beside its check, from the same limits.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::ToSchema;

use super::settings::{seconds, seconds_schema, whole, within, MAX_DELAY};
use super::DomainError;

/// An upstream URL Hopper accepts: `http` or `https`; a host name (its last label
/// starts with a letter, so it is never taken for an IPv4 address), an IPv4
/// address or a bracketed IPv6 one; an optional port; then a path and query whose
/// `{field}` parts are filled from the message. Checked as written (with the
/// `regex` crate) as well as by the URL parser, so the API description states
/// exactly what is accepted.
pub const URL_PATTERN: &str = concat!(
    r"^https?://(",
    r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
    r"|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    r"|\[(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    r"|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}",
    r"|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}",
    r"|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))\]",
    r")(:[1-5]?[0-9]{1,4})?",
    r"(/([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2}|\{[A-Za-z0-9_]+\})*)?",
    r"(\?([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2}|\{[A-Za-z0-9_]+\})*)?$",
);

/// [`URL_PATTERN`], compiled once.
static URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(URL_PATTERN).expect("URL_PATTERN is a valid regular expression")
});

/// An HTTP method: a token.
pub const METHOD_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// `whsec_` and canonical, non-empty base64 (as the Standard Webhooks libraries write it).
pub const SIGNING_SECRET_PATTERN: &str = r"^whsec_([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/]{4})$";

/// How a queue's messages are delivered to an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Where to send each message; `{field}` is replaced by that top-level field of
    /// the message's JSON body, URL-encoded.
    #[schema(schema_with = url_schema)]
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    #[schema(schema_with = method_schema)]
    pub method: String,
    /// Headers sent with every delivery.
    #[serde(default)]
    #[schema(schema_with = headers_schema)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait for the upstream's answer.
    #[serde(
        default = "default_timeout",
        serialize_with = "seconds::serialize",
        deserialize_with = "timeout_value"
    )]
    #[schema(schema_with = timeout_schema)]
    pub timeout: Duration,
    /// Deliveries in flight at once, per node.
    #[serde(
        default = "default_concurrency",
        deserialize_with = "whole::deserialize"
    )]
    #[schema(minimum = 1, maximum = 1024, default = 8)]
    pub concurrency: u32,
    /// Delays between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Statuses that count as delivered besides any 2xx (e.g. 404 for a delete).
    #[serde(default, deserialize_with = "whole::vec")]
    #[schema(schema_with = done_statuses_schema)]
    pub done_statuses: Vec<u16>,
    /// `whsec_<base64>`: deliveries are signed as Standard Webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = signing_secret_schema)]
    pub signing_secret: Option<String>,
    /// When to stop calling an upstream host that keeps failing.
    #[serde(default)]
    pub breaker: Breaker,
}

fn string_schema(pattern: &str, max_length: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .max_length(Some(max_length))
        .description(Some(description))
        .build()
}

fn url_schema() -> Object {
    string_schema(
        URL_PATTERN,
        MAX_URL_LEN,
        "Where each message goes; `{field}` is replaced by that top-level field of the message, URL-encoded.",
    )
}

fn method_schema() -> Object {
    string_schema(
        METHOD_PATTERN,
        MAX_METHOD_LEN,
        "The HTTP method (POST when absent).",
    )
}

fn signing_secret_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(SIGNING_SECRET_PATTERN))
        .max_length(Some(MAX_SECRET_LEN))
        .description(Some(
            "`whsec_<base64>`: deliveries carry Standard Webhooks signatures; `null` signs nothing.",
        ))
        .build()
}

fn headers_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(METHOD_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[\t\x20-\x7E]*$")),
        ))
        .description(Some(
            "Headers sent with every delivery: names are tokens, values visible ASCII.",
        ))
        .build()
}

fn timeout_schema() -> Schema {
    seconds_schema(
        "Longest wait for the upstream's answer; longer is a failed attempt.",
        MIN_TIMEOUT,
        Some(MAX_TIMEOUT),
        false,
    )
}

fn done_statuses_schema() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(100))
                .maximum(Some(599)),
        )
        .description(Some(
            "Statuses that count as delivered besides any 2xx (e.g. 404 for a DELETE).",
        ))
        .build()
}

fn backoff_initial_schema() -> Schema {
    seconds_schema(
        "Ceiling of the first retry's delay.",
        MIN_BACKOFF,
        Some(MAX_DELAY),
        false,
    )
}

fn backoff_max_schema() -> Schema {
    seconds_schema(
        "Ceiling of any retry's delay.",
        MIN_BACKOFF,
        Some(MAX_DELAY),
        false,
    )
}

fn timeout_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    within(d, MIN_TIMEOUT, MAX_TIMEOUT)
}

fn backoff_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    within(d, MIN_BACKOFF, MAX_DELAY)
}

fn open_for_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    within(d, MIN_OPEN_FOR, MAX_OPEN_FOR)
}

fn failures_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(MAX_BREAKER_FAILURES))
        .default(Some(default_failures().into()))
        .description(Some("Consecutive failures that open the breaker."))
        .build()
}

fn open_for_schema() -> Schema {
    seconds_schema(
        "How long the breaker stays open before one probe is let through.",
        MIN_OPEN_FOR,
        Some(MAX_OPEN_FOR),
        false,
    )
}

/// Exponential backoff with full jitter: attempt n waits a random time up to
/// `min(max, initial * factor^(n-1))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    #[serde(
        default = "default_initial",
        serialize_with = "seconds::serialize",
        deserialize_with = "backoff_value"
    )]
    #[schema(schema_with = backoff_initial_schema)]
    pub initial: Duration,
    /// Ceiling of any delay.
    #[serde(
        default = "default_max",
        serialize_with = "seconds::serialize",
        deserialize_with = "backoff_value"
    )]
    #[schema(schema_with = backoff_max_schema)]
    pub max: Duration,
    /// Growth per attempt.
    #[serde(default = "default_factor")]
    #[schema(minimum = 1, maximum = 10, default = 2)]
    pub factor: f64,
}

/// A circuit breaker per upstream host and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Consecutive failures that open it.
    #[serde(default = "default_failures", deserialize_with = "whole::deserialize")]
    #[schema(schema_with = failures_schema)]
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    #[serde(
        default = "default_open_for",
        serialize_with = "seconds::serialize",
        deserialize_with = "open_for_value"
    )]
    #[schema(schema_with = open_for_schema)]
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

/// Longest upstream URL template: what proxies and servers commonly accept.
const MAX_URL_LEN: usize = 2048;
/// Longest signing secret.
const MAX_SECRET_LEN: usize = 1024;
/// Longest method name: HTTP's are short; this bounds what is stored and echoed.
const MAX_METHOD_LEN: usize = 32;
/// Shortest upstream timeout: shorter ones fail on any network.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest upstream timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Shortest backoff ceiling: retries of a failing upstream never come back to back.
const MIN_BACKOFF: Duration = Duration::from_millis(1);
/// Shortest time a breaker stays open.
const MIN_OPEN_FOR: Duration = Duration::from_millis(100);
/// Most consecutive failures a breaker waits for; past it, a breaker never opens in practice.
const MAX_BREAKER_FAILURES: u32 = 1_000_000;
/// Longest time a breaker stays open: a host back after longer should hear of it.
const MAX_OPEN_FOR: Duration = Duration::from_secs(3600);
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
        Duration::try_from_secs_f64(grown.min(self.max.as_secs_f64())).unwrap_or(self.max)
    }
}

impl DeliverySettings {
    /// Checks every field, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.url.len() > MAX_URL_LEN {
            return Err(invalid(format!(
                "url must be at most {MAX_URL_LEN} characters"
            )));
        }
        if !URL.is_match(&self.url) {
            return Err(invalid(format!(
                "url must be http:// or https://, a host name or IP address, an optional port, then a path and query (no user, no fragment): {:?}",
                self.url
            )));
        }
        if self
            .signing_secret
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SECRET_LEN)
        {
            return Err(invalid(format!(
                "signing_secret must be at most {MAX_SECRET_LEN} characters"
            )));
        }
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
        if self.method.len() > MAX_METHOD_LEN {
            return Err(invalid(format!(
                "method must be at most {MAX_METHOD_LEN} characters"
            )));
        }
        reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| invalid(format!("method {:?} is not an HTTP method", self.method)))?;
        for (name, value) in &self.headers {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("headers: {name:?} is not a header name")))?;
            // Visible ASCII, spaces and tabs: what every HTTP stack passes unchanged
            // (the bytes past ASCII that HTTP tolerates are read differently by each).
            if !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return Err(invalid(format!(
                    "headers: the value of {name} must be visible ASCII"
                )));
            }
        }
        if self.timeout < MIN_TIMEOUT || self.timeout > MAX_TIMEOUT {
            return Err(invalid(format!(
                "timeout must be between {} and {} seconds",
                MIN_TIMEOUT.as_secs_f64(),
                MAX_TIMEOUT.as_secs()
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(invalid(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        let backoff = &self.backoff;
        // A max below initial is no contradiction: every delay is then up to max.
        // Past the longest delay a nack takes, a retry could not be scheduled.
        let in_range = |d: Duration| (MIN_BACKOFF..=MAX_DELAY).contains(&d);
        if !in_range(backoff.initial) || !in_range(backoff.max) {
            return Err(invalid(format!(
                "backoff.initial and backoff.max must be between {} and {} seconds",
                MIN_BACKOFF.as_secs_f64(),
                MAX_DELAY.as_secs()
            )));
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
        if !(1..=MAX_BREAKER_FAILURES).contains(&self.breaker.failures)
            || !(MIN_OPEN_FOR..=MAX_OPEN_FOR).contains(&self.breaker.open_for)
        {
            return Err(invalid(format!(
                "breaker needs failures between 1 and {MAX_BREAKER_FAILURES} and open_for between {} and {} seconds",
                MIN_OPEN_FOR.as_secs_f64(),
                MAX_OPEN_FOR.as_secs()
            )));
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
        for url in [
            "http://127.0.0.1:9000/x?a={id}",
            "https://[::1]:8443/",
            "http://cluster/groups/{group_id}",
        ] {
            assert!(settings(&format!(r#"{{"url": "{url}"}}"#)).is_ok(), "{url}");
        }
        for url in [
            "http://999.1.1.1/",
            "http://u:p@host/",
            "http://host/#frag",
            "http://[::::]/",
            "http://host/{a",
        ] {
            assert!(
                settings(&format!(r#"{{"url": "{url}"}}"#)).is_err(),
                "{url}"
            );
        }
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

//! SQS queue attributes as Hopper's queue settings: `VisibilityTimeout` is the
//! lease, `MessageRetentionPeriod` the retention, `DelaySeconds` and
//! `ReceiveMessageWaitTimeSeconds` the default delay and wait, a `RedrivePolicy`
//! the attempt limit and the dead-letter queue, a FIFO queue one ordered by group
//! with a five-minute deduplication window.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::actions::{is_fifo, Call, ACCOUNT};
use super::error::*;
use crate::domain::settings::{Ordering, MAX_ATTEMPTS_LIMIT, MIN_LEASE};
use crate::domain::{QueueInfo, QueueName, QueueSettings, SettingsPatch};

/// SQS's default retention of a queue it creates: four days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);
/// How long SQS FIFO queues remember a deduplication id.
const FIFO_DEDUPLICATION_WINDOW: Duration = Duration::from_secs(300);
/// The largest message SQS takes, reported as `MaximumMessageSize`.
const MAXIMUM_MESSAGE_SIZE: u64 = super::message::MAX_MESSAGE_BYTES as u64;

/// Checks a queue name as SQS does: 1 to 80 of `A-Za-z0-9_-`, a FIFO queue's
/// with `.fifo` after them.
pub fn check_name(raw: &str) -> SqsResult<QueueName> {
    let stem = raw.strip_suffix(".fifo").unwrap_or(raw);
    let valid = !stem.is_empty()
        && raw.len() <= 80
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(SqsError::new(
            INVALID_PARAMETER_VALUE,
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
        ));
    }
    QueueName::parse(raw).map_err(|e| SqsError::new(INVALID_PARAMETER_VALUE, e.to_string()))
}

/// Queue attributes a request sets, read and checked.
#[derive(Debug, Default)]
pub struct QueueAttributes {
    visibility: Option<Duration>,
    retention: Option<Duration>,
    delay: Option<Duration>,
    wait: Option<Duration>,
    /// A redrive policy set, or (`Some(None)`) removed.
    pub redrive: Option<Option<(QueueName, u32)>>,
    /// `FifoQueue`, when given.
    pub fifo: Option<bool>,
    content_deduplication: Option<bool>,
    names: Vec<String>,
}

/// Attributes that are accepted and reported but change nothing here.
const ACCEPTED_ONLY: &[&str] = &[
    "MaximumMessageSize",
    "Policy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
];

fn seconds(name: &str, raw: &str, max: u64) -> SqsResult<Duration> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n <= max => Ok(Duration::from_secs(n)),
        _ => Err(SqsError::new(
            INVALID_ATTRIBUTE_VALUE,
            format!("Invalid value for the parameter {name}: must be a whole number of seconds from 0 to {max}."),
        )),
    }
}

fn boolean(name: &str, raw: &str) -> SqsResult<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SqsError::new(
            INVALID_ATTRIBUTE_VALUE,
            format!("Invalid value for the parameter {name}: must be true or false."),
        )),
    }
}

impl QueueAttributes {
    /// Reads `attributes`; `creating` allows `FifoQueue`.
    pub fn parse(
        attributes: &BTreeMap<String, String>,
        call: &Call<'_>,
        creating: bool,
    ) -> SqsResult<Self> {
        let mut parsed = QueueAttributes::default();
        for (name, value) in attributes {
            parsed.names.push(name.clone());
            match name.as_str() {
                "VisibilityTimeout" => parsed.visibility = Some(seconds(name, value, 43_200)?),
                "MessageRetentionPeriod" => {
                    let retention = seconds(name, value, 1_209_600)?;
                    if retention < Duration::from_secs(60) {
                        return Err(SqsError::new(
                            INVALID_ATTRIBUTE_VALUE,
                            "Invalid value for the parameter MessageRetentionPeriod: must be from 60 to 1209600 seconds.",
                        ));
                    }
                    parsed.retention = Some(retention);
                }
                "DelaySeconds" => parsed.delay = Some(seconds(name, value, 900)?),
                "ReceiveMessageWaitTimeSeconds" => parsed.wait = Some(seconds(name, value, 20)?),
                "RedrivePolicy" => parsed.redrive = Some(redrive_policy(value, call)?),
                "FifoQueue" if creating => parsed.fifo = Some(boolean(name, value)?),
                "FifoQueue" => parsed.fifo = Some(boolean(name, value)?),
                "ContentBasedDeduplication" => {
                    parsed.content_deduplication = Some(boolean(name, value)?)
                }
                accepted if ACCEPTED_ONLY.contains(&accepted) => {}
                _ => {
                    return Err(SqsError::new(
                        INVALID_ATTRIBUTE_NAME,
                        format!("Unknown Attribute {name}."),
                    ))
                }
            }
        }
        Ok(parsed)
    }

    /// The names given, for an error.
    pub fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The change these attributes make to a queue's settings.
    pub fn patch(&self) -> SettingsPatch {
        SettingsPatch {
            lease: self.visibility.map(|v| v.max(MIN_LEASE)),
            retention: self.retention.map(Some),
            delay: self.delay,
            wait: self.wait,
            content_deduplication: self.content_deduplication,
            max_attempts: self.redrive.as_ref().map(|redrive| match redrive {
                Some((_, max)) => *max,
                None => MAX_ATTEMPTS_LIMIT,
            }),
            dead_letter_queue: self
                .redrive
                .as_ref()
                .map(|redrive| redrive.as_ref().map(|(queue, _)| queue.clone())),
            ..SettingsPatch::default()
        }
    }

    /// The settings of a queue SQS creates: SQS's defaults (four days' retention,
    /// no dead letters without a redrive policy), these attributes over them.
    pub fn patch_for_new(&self, fifo: bool) -> SettingsPatch {
        let mut patch = self.patch();
        patch.retention = Some(Some(self.retention.unwrap_or(DEFAULT_RETENTION)));
        patch.max_attempts = patch.max_attempts.or(Some(MAX_ATTEMPTS_LIMIT));
        if fifo {
            patch.ordering = Some(Ordering::Group);
            patch.idempotency_window = Some(FIFO_DEDUPLICATION_WINDOW);
        }
        patch
    }

    /// Whether an existing queue already has every attribute given.
    pub fn matches(&self, current: &QueueSettings) -> bool {
        let same = |wanted: Option<Duration>, have: Duration| {
            wanted.is_none_or(|w| w.as_secs() == have.as_secs())
        };
        same(self.visibility, current.lease)
            && self
                .retention
                .is_none_or(|r| current.retention.map(|c| c.as_secs()) == Some(r.as_secs()))
            && same(self.delay, current.delay)
            && same(self.wait, current.wait)
            && self
                .content_deduplication
                .is_none_or(|c| c == current.content_deduplication)
            && self.redrive.as_ref().is_none_or(|redrive| match redrive {
                Some((queue, max)) => {
                    current.dead_letter_queue.as_ref() == Some(queue)
                        && current.max_attempts == *max
                }
                None => current.dead_letter_queue.is_none(),
            })
    }
}

/// A `RedrivePolicy`: `{"deadLetterTargetArn", "maxReceiveCount"}` (the count as a
/// number or text), or the empty text that removes it.
fn redrive_policy(raw: &str, _call: &Call<'_>) -> SqsResult<Option<(QueueName, u32)>> {
    if raw.trim().is_empty() || raw.trim() == "{}" {
        return Ok(None);
    }
    let invalid = |reason: &str| {
        SqsError::new(
            INVALID_PARAMETER_VALUE,
            format!("Value {raw} for parameter RedrivePolicy is invalid. Reason: {reason}"),
        )
    };
    let policy: serde_json::Value = serde_json::from_str(raw)
        .map_err(|_| invalid("Redrive policy is not a valid JSON map."))?;
    let arn = policy
        .get("deadLetterTargetArn")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            invalid("Redrive policy does not contain mandatory attribute: deadLetterTargetArn.")
        })?;
    let count = match policy.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        invalid("Redrive policy does not contain mandatory attribute: maxReceiveCount.")
    })?;
    if !(1..=u64::from(MAX_ATTEMPTS_LIMIT)).contains(&count) {
        return Err(invalid(&format!("Invalid value for maxReceiveCount: {count}, valid values are from 1 to {MAX_ATTEMPTS_LIMIT} both inclusive.")));
    }
    let name = arn.rsplit(':').next().unwrap_or_default();
    let queue =
        QueueName::parse(name).map_err(|_| invalid("Invalid value for deadLetterTargetArn."))?;
    Ok(Some((queue, count as u32)))
}

/// The attributes `GetQueueAttributes` answers for `names` (`All` for every one).
pub fn describe(
    info: &QueueInfo,
    arn: &str,
    call: &Call<'_>,
    names: &[String],
) -> SqsResult<BTreeMap<&'static str, String>> {
    let settings = &info.settings;
    let fifo = is_fifo(&info.name, settings);
    let mut all: BTreeMap<&'static str, String> = BTreeMap::new();
    all.insert("QueueArn", arn.to_owned());
    all.insert("ApproximateNumberOfMessages", info.counts.ready.to_string());
    all.insert(
        "ApproximateNumberOfMessagesNotVisible",
        info.counts.leased.to_string(),
    );
    all.insert(
        "ApproximateNumberOfMessagesDelayed",
        info.counts.delayed.to_string(),
    );
    all.insert("VisibilityTimeout", settings.lease.as_secs().to_string());
    all.insert("MaximumMessageSize", MAXIMUM_MESSAGE_SIZE.to_string());
    // A queue made without a retention keeps its messages; SQS's longest is the nearest it can say.
    all.insert(
        "MessageRetentionPeriod",
        settings
            .retention
            .map_or(1_209_600, |r| r.as_secs())
            .to_string(),
    );
    all.insert("DelaySeconds", settings.delay.as_secs().to_string());
    all.insert(
        "ReceiveMessageWaitTimeSeconds",
        settings.wait.as_secs().to_string(),
    );
    all.insert("SqsManagedSseEnabled", "false".into());
    if let Some(target) = &settings.dead_letter_queue {
        let policy = json!({
            "deadLetterTargetArn": format!("arn:aws:sqs:{}:{ACCOUNT}:{target}", call.region),
            "maxReceiveCount": settings.max_attempts,
        });
        all.insert("RedrivePolicy", policy.to_string());
    }
    if fifo {
        all.insert("FifoQueue", "true".into());
        all.insert(
            "ContentBasedDeduplication",
            settings.content_deduplication.to_string(),
        );
        all.insert("DeduplicationScope", "queue".into());
        all.insert("FifoThroughputLimit", "perQueue".into());
    }
    if names.iter().any(|n| n == "All") {
        return Ok(all);
    }
    let mut chosen = BTreeMap::new();
    for name in names {
        const KNOWN: &[&str] = &[
            "QueueArn",
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "VisibilityTimeout",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "SqsManagedSseEnabled",
            "RedrivePolicy",
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
            "CreatedTimestamp",
            "LastModifiedTimestamp",
            "Policy",
            "KmsMasterKeyId",
            "KmsDataKeyReusePeriodSeconds",
            "RedriveAllowPolicy",
        ];
        let Some(known) = KNOWN.iter().find(|k| **k == name) else {
            return Err(SqsError::new(
                INVALID_ATTRIBUTE_NAME,
                format!("Unknown Attribute {name}."),
            ));
        };
        if let Some(value) = all.get(known) {
            chosen.insert(*known, value.clone());
        }
    }
    Ok(chosen)
}

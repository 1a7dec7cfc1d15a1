//! Metrics in the Prometheus text format. Counters and histograms of the hot paths
//! (requests, pushes, acks, store commits) are recorded through the `metrics` facade
//! into one process-wide recorder; gauges read from the store and the delivery
//! engine are written at scrape time by `api::prometheus` with the helpers here.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by method, matched route template and status.
pub const HTTP_REQUESTS: &str = "hopper_http_requests_total";
/// Time to answer a request, by method and route.
pub const HTTP_DURATION: &str = "hopper_http_request_duration_seconds";
/// Messages pushed, by queue.
pub const QUEUE_PUSHED: &str = "hopper_queue_pushed_total";
/// Messages acked (through the queue API, a task's completion or a delivery), by queue.
pub const QUEUE_ACKED: &str = "hopper_queue_acked_total";
/// Writes in one store commit.
pub const COMMIT_BATCH: &str = "hopper_store_commit_batch_size";
/// Time from a batch's start to its durable commit (its fsync included, on SQLite).
pub const COMMIT_SECONDS: &str = "hopper_store_commit_seconds";

/// Seconds: from half a millisecond, the fastest fsync-bound commit, to a minute of long-poll.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Writes per commit, up to the writers' largest batches.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// How often histogram samples are folded into their buckets when nobody scrapes, so
/// they never pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (a process serves one store, and
/// tests that start several servers in one process share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS))
            .unwrap_or_else(|error| {
                tracing::error!(%error, "metrics: bucket settings refused; histograms become summaries");
                PrometheusBuilder::new()
            })
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("metrics: another recorder is installed; /metrics shows only the gauges");
        }
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .map_err(|error| tracing::warn!(%error, "metrics: cannot start the upkeep thread"))
            .ok();
        handle
    })
}

/// The help lines of the recorded families.
fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "Requests answered, by method, matched route template and status."
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer a request (to its response head), by method and route."
    );
    metrics::describe_counter!(
        QUEUE_PUSHED,
        "Messages pushed, by queue (task creations included)."
    );
    metrics::describe_counter!(
        QUEUE_ACKED,
        "Messages acked, by queue: through the API, by a finished task or by a delivery."
    );
    metrics::describe_histogram!(
        COMMIT_BATCH,
        "Writes committed together in one store transaction."
    );
    metrics::describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time from a batch's start to its durable commit (the fsync included, on SQLite)."
    );
}

/// Counts `n` messages pushed on `queue`.
pub fn pushed(queue: &str, n: usize) {
    metrics::counter!(QUEUE_PUSHED, "queue" => queue.to_owned()).increment(n as u64);
}

/// Counts `n` messages acked on `queue`.
pub fn acked(queue: &str, n: u64) {
    if n > 0 {
        metrics::counter!(QUEUE_ACKED, "queue" => queue.to_owned()).increment(n);
    }
}

/// Records one store commit of `writes` writes.
pub fn committed_batch(writes: usize) {
    metrics::histogram!(COMMIT_BATCH).record(writes as f64);
}

/// Records that a commit became durable `elapsed` after its batch began.
pub fn committed_in(elapsed: Duration) {
    metrics::histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
}

/// Writes families in the text exposition format.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Begins the family `name` of `kind` (`gauge`, `counter`) with its help line.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (key, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"");
                escape_label(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value as the text format requires: backslash, quote and newline escaped.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.family("x", "gauge", "help");
        out.sample("x", &[("q", "a\"b\\c\nd"), ("s", "ok")], 2.0);
        assert_eq!(
            out.finish(),
            "# HELP x help\n# TYPE x gauge\nx{q=\"a\\\"b\\\\c\\nd\",s=\"ok\"} 2\n"
        );
    }
}

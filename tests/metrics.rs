//! `GET /metrics`: the families an operator scrapes, read back from a real server on
//! each backend after real traffic, with and without `metrics.require_auth`; and the
//! whole exposition parsed by Prometheus's own Python parser (`prometheus_client`,
//! from the virtualenv named by `HOPPER_TEST_VENV`; reported ignored without it).
//!
//! Counters live in one recorder per process, shared by the servers the trials start
//! in parallel, so each trial names its queues and streams after its backend and
//! asserts on those series only.

// Only the harness and fixtures of `common` are used here, not its `trials!`.
#[allow(unused_macros, unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{spawn_app, spawn_app_with, Backend, Runtime, TestApp};
use libtest_mimic::Trial;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The variable naming the virtualenv with `prometheus_client`.
const VENV_ENV: &str = "HOPPER_TEST_VENV";
/// Sent inside message bodies: a metric must never carry it.
const BODY_MARKER: &str = "a-body-that-no-metric-shows";

fn main() {
    let mut trials: Vec<Trial> = [
        common::on_backends(
            common::EACH_BACKEND,
            "queues_tasks_streams_and_requests_are_counted",
            Runtime::CurrentThread,
            queues_tasks_streams_and_requests_are_counted,
        ),
        common::on_backends(
            common::EACH_BACKEND,
            "deliveries_and_open_breakers_are_shown",
            Runtime::MultiThread(2),
            deliveries_and_open_breakers_are_shown,
        ),
        common::on_backends(
            common::EACH_BACKEND,
            "require_auth_admits_admins_only",
            Runtime::CurrentThread,
            require_auth_admits_admins_only,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let name = "prometheus_client_parses_every_family";
    trials.push(match std::env::var(VENV_ENV) {
        Ok(dir) if !dir.trim().is_empty() => {
            let venv = PathBuf::from(dir.trim());
            common::once(name, Runtime::CurrentThread, move || {
                prometheus_client_parses_every_family(venv)
            })
        }
        _ => Trial::test(name, || {
            Err(format!("{VENV_ENV} is not set: it names a virtualenv with tests/schemathesis/requirements.txt installed (.ci/run makes one)").into())
        })
        .with_ignored_flag(true),
    });
    common::run_trials(trials)
}

/// The scrape's text, asserting the status and the text format's content type.
async fn scrape(app: &TestApp) -> String {
    let response = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            if series_name != name {
                return None;
            }
            let found: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
            let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let all = wanted.iter().all(|w| found.contains(&w.as_str()));
            (all && found.iter().filter(|f| !f.is_empty()).count() == wanted.len())
                .then(|| value.parse().ok())?
        })
}

async fn push(app: &TestApp, queue: &str, n: usize) {
    for i in 0..n {
        let answer = app
            .as_admin(Method::POST, &format!("/api/v1/queues/{queue}/messages"))
            .json(&json!({ "n": i, "marker": BODY_MARKER }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
    }
}

async fn append(app: &TestApp, stream: &str, name: &str) {
    let event = json!({
        "event": { "name": name, "version": 1 },
        "system": { "id": "s1", "name": "shop", "time": "2017-09-06 13:58:12", "timezone": "Europe/Berlin" },
        "trigger": { "type": "system", "name": "test" },
        "payload": { "marker": BODY_MARKER },
    });
    let answer = app
        .as_admin(Method::POST, &format!("/api/v1/streams/{stream}/events"))
        .header("X-Producer-ID", "shop")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "append");
}

async fn queues_tasks_streams_and_requests_are_counted(backend: Backend) {
    let app = spawn_app(&backend).await;
    let (queue, tasks, stream) = (
        format!("depth-{}", backend.label()),
        format!("work-{}", backend.label()),
        format!("events-{}", backend.label()),
    );
    push(&app, &queue, 3).await;
    let received = app.receive(&queue, "count=1").await;
    app.settle(
        &queue,
        "ack",
        json!({ "receipts": [received[0]["receipt"]] }),
    )
    .await;
    let created = app
        .as_admin(Method::POST, &format!("/api/v1/tasks/{tasks}"))
        .header("Prefer", "respond-async")
        .json(&json!({ "marker": BODY_MARKER }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    for name in ["OrderPlaced", "OrderPlaced", "OrderShipped"] {
        append(&app, &stream, name).await;
    }
    let read: Value = app
        .as_admin(
            Method::GET,
            &format!("/api/v1/streams/{stream}/events?eventName=OrderPlaced&limit=1"),
        )
        .header("X-Consumer-ID", "billing")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = read[0]["id"].as_str().unwrap().to_owned();
    let acked = app
        .as_admin(
            Method::POST,
            &format!("/api/v1/streams/{stream}/events/{first}"),
        )
        .header("X-Consumer-ID", "billing")
        .form(&[("action", "ACK")])
        .send()
        .await
        .unwrap();
    assert!(acked.status().is_success(), "event ack: {}", acked.status());

    let text = scrape(&app).await;
    let q = queue.as_str();
    assert_eq!(
        sample(
            &text,
            "hopper_queue_messages",
            &[("queue", q), ("state", "ready")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "hopper_queue_messages",
            &[("queue", q), ("state", "leased")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "hopper_queue_messages",
            &[("queue", q), ("state", "dead")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "hopper_queue_pushed_total", &[("queue", q)]),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "hopper_queue_acked_total", &[("queue", q)]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "hopper_tasks",
            &[("queue", &tasks), ("status", "pending")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "hopper_queue_pushed_total", &[("queue", &tasks)]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "hopper_stream_last_event_id", &[("stream", &stream)]),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "hopper_stream_consumer_lag",
            &[
                ("stream", &stream),
                ("consumer", "billing"),
                ("event", "OrderPlaced")
            ]
        ),
        Some(1.0)
    );
    let pushes = sample(
        &text,
        "hopper_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/v1/queues/{queue}/messages"),
            ("status", "201"),
        ],
    );
    assert!(
        pushes.is_some_and(|n| n >= 3.0),
        "push requests: {pushes:?}"
    );
    assert!(
        text.contains("hopper_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/queues/{queue}/messages\",le=\"0.005\"}"),
        "a histogram by route template"
    );
    assert_eq!(sample(&text, "hopper_store_up", &[]), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "hopper_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("store", app.backend)
            ]
        ),
        Some(1.0)
    );
    assert!(text.contains("hopper_store_commit_seconds_bucket{le="));
    assert!(text.contains("hopper_store_commit_batch_size_bucket{le="));
    assert!(text.contains("# TYPE hopper_queue_messages gauge"));
    assert!(text.contains("# HELP hopper_http_requests_total "));
    // Routes are templates, never the paths clients sent.
    assert!(
        !text.contains(&format!("route=\"/api/v1/queues/{q}")),
        "a raw path as a route"
    );
    assert!(!text.contains(BODY_MARKER), "a message body in a metric");
    assert!(!text.contains(&app.admin_secret), "a secret in a metric");

    // A path no route has counts as unmatched, not as a series of its own.
    let unknown = app
        .request(Method::GET, "/no/such/path-4711")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let text = scrape(&app).await;
    assert!(!text.contains("path-4711"));
    assert!(sample(
        &text,
        "hopper_http_requests_total",
        &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
    )
    .is_some_and(|n| n >= 1.0));
}

async fn deliveries_and_open_breakers_are_shown(backend: Backend) {
    let app = spawn_app(&backend).await;
    let queue = format!("hooks-{}", backend.label());
    // Nothing listens there: every call fails at once, and one failure opens the breaker.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = dead.to_string();
    push(&app, &queue, 2).await;
    let (status, _) = app
        .configure(
            &queue,
            json!({ "max_attempts": 100, "delivery": {
                "url": format!("http://{upstream}/hook"),
                "breaker": { "failures": 1, "open_for": "60s" },
            }}),
        )
        .await;
    assert!(status.is_success());
    let mut text = String::new();
    for _ in 0..100 {
        // Past the gauges' cache, so each look reads the engine anew.
        tokio::time::sleep(Duration::from_millis(300)).await;
        text = scrape(&app).await;
        if sample(
            &text,
            "hopper_delivery_breaker_open",
            &[("upstream", &upstream)],
        ) == Some(1.0)
        {
            break;
        }
    }
    assert_eq!(
        sample(
            &text,
            "hopper_delivery_breaker_open",
            &[("upstream", &upstream)]
        ),
        Some(1.0),
        "{text}"
    );
    let failed = sample(
        &text,
        "hopper_delivery_attempts_total",
        &[("queue", &queue), ("outcome", "failed")],
    );
    assert!(
        failed.is_some_and(|n| n >= 1.0),
        "failed attempts: {failed:?}"
    );
    assert_eq!(
        sample(
            &text,
            "hopper_delivery_attempts_total",
            &[("queue", &queue), ("outcome", "delivered")]
        ),
        Some(0.0)
    );
}

async fn require_auth_admits_admins_only(backend: Backend) {
    let app = spawn_app_with(&backend, |config| config.metrics_require_auth = true).await;
    let anonymous = app.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap(),
        json!("Unauthorized")
    );
    let secret = app.create_client("shop", &["queue:orders:produce"]).await;
    let shop = app
        .as_client("shop", &secret, Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(shop.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        shop.json::<Value>().await.unwrap(),
        json!("Forbidden - needs grant admin")
    );
    let admin = app.as_admin(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(admin.text().await.unwrap().contains("hopper_store_up 1"));
}

/// Parses the exposition with `prometheus_client.parser` and returns each family's type.
fn parse_with_prometheus_client(venv: &std::path::Path, text: &str) -> BTreeMap<String, String> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = family.type
    for sample in family.samples:
        float(sample.value)
print(json.dumps(families))
"#;
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the virtualenv's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn prometheus_client_parses_every_family(venv: PathBuf) {
    let app = spawn_app(&Backend::Sqlite).await;
    push(&app, "parsed", 2).await;
    append(&app, "parsed-events", "OrderPlaced").await;
    let families = parse_with_prometheus_client(&venv, &scrape(&app).await);
    // prometheus_client names a counter's family without its `_total`.
    for (family, kind) in [
        ("hopper_http_requests", "counter"),
        ("hopper_http_request_duration_seconds", "histogram"),
        ("hopper_queue_messages", "gauge"),
        ("hopper_queue_pushed", "counter"),
        ("hopper_stream_last_event_id", "gauge"),
        ("hopper_stream_consumer_lag", "gauge"),
        ("hopper_tasks", "gauge"),
        ("hopper_delivery_attempts", "counter"),
        ("hopper_delivery_breaker_open", "gauge"),
        ("hopper_store_commit_batch_size", "histogram"),
        ("hopper_store_commit_seconds", "histogram"),
        ("hopper_store_up", "gauge"),
        ("hopper_build_info", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family} in {families:?}"
        );
    }
}

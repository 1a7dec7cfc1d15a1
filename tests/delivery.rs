//! Delivery to upstream HTTP APIs: Hopper leases a delivering queue's messages and
//! calls a real upstream HTTP server started inside each test, which can be told to
//! answer, fail or be slow. Every test runs once per storage backend.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::{trials, TestApp};
use serde_json::{json, Value};

trials! {
    each_backend {
        delivered_messages_are_acked_with_the_body_and_headers_sent: multi_thread(2),
        failures_are_retried_until_delivered: multi_thread(2),
        out_of_attempts_is_a_dead_letter_with_the_last_error: multi_thread(2),
        done_statuses_and_url_fields_deliver_deletes: multi_thread(2),
        a_task_queue_with_delivery_is_the_executor: multi_thread(2),
        a_plain_message_shaped_like_a_task_is_delivered_whole: multi_thread(2),
        a_failing_host_opens_the_breaker_and_is_probed_later: multi_thread(2),
        retry_after_is_honoured: multi_thread(2),
        bad_delivery_settings_are_400,
    }
}

/// One request the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
    at: Instant,
}

/// One scripted answer: status, headers, body.
type Scripted = (u16, Vec<(&'static str, String)>, String);

/// A scripted upstream: answers each request with the next scripted answer (the
/// last one repeats), and records what it got.
#[derive(Clone, Default)]
struct Upstream {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Starts it on an ephemeral port with `script` (status, headers, body).
    async fn start(script: Vec<Scripted>) -> (Upstream, SocketAddr) {
        let upstream = Upstream {
            script: Arc::new(Mutex::new(script.into())),
            ..Upstream::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(upstream.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (upstream, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until it has seen `n` requests (or panics after `within`).
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the upstream saw {} requests, expected {n}: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    State(upstream): State<Upstream>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    upstream.seen.lock().unwrap().push(Seen {
        method,
        path: uri.to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    });
    let (status, headers, body) = {
        let mut script = upstream.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script
                .front()
                .cloned()
                .unwrap_or((200, vec![], "{}".into()))
        }
    };
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn ok(body: &str) -> Scripted {
    (
        200,
        vec![("content-type", "application/json".into())],
        body.into(),
    )
}

fn status(code: u16) -> Scripted {
    (code, vec![], String::new())
}

/// Makes `queue` deliver to `url` with `extra` settings merged into the delivery.
async fn deliver_to(app: &TestApp, queue: &str, url: String, extra: Value) -> Value {
    let mut delivery = json!({ "url": url, "backoff": { "initial": 0.05, "max": 0.2 } });
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        delivery[key] = value;
    }
    let (code, info) = app
        .configure(queue, json!({ "delivery": delivery, "max_attempts": 5 }))
        .await;
    assert!(code.is_success(), "{info}");
    info
}

/// Polls `GET /queues/{queue}` until `done` holds (or panics after 10 s).
async fn wait_for_queue(app: &TestApp, queue: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = app.queue_info(queue).await;
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "queue {queue} never got there: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Only the store knows which messages are tasks: a producer's own message that
/// happens to look like a task envelope goes out as sent, with no task id header.
async fn a_plain_message_shaped_like_a_task_is_delivered_whole(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![ok("{}")]).await;
    deliver_to(&app, "lookalike", format!("http://{addr}/in"), json!({})).await;
    let body = json!({
        "task_id": "0b6f1f6e-3c55-4d8e-9a57-5d3b8c1f2a10",
        "payload": { "n": 1 }
    });
    app.push("lookalike", body.clone()).await;
    let seen = upstream.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        seen[0].body, body,
        "the whole message, not its payload field"
    );
    assert!(
        seen[0].headers.get("hopper-task-id").is_none(),
        "not a task"
    );
    wait_for_queue(&app, "lookalike", empty).await;
}

fn empty(info: &Value) -> bool {
    info["ready"] == 0 && info["leased"] == 0 && info["delayed"] == 0
}

/// A message pushed to a delivering queue reaches the upstream as its JSON body
/// (POST, `application/json`, the configured headers, `Hopper-Message-Id`, Standard
/// Webhooks headers when signing) and, answered 2xx, is acked.
async fn delivered_messages_are_acked_with_the_body_and_headers_sent(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![ok("{}")]).await;
    let info = deliver_to(
        &app,
        "hooks",
        format!("http://{addr}/hook"),
        json!({
            "headers": { "x-api-key": "k1" },
            "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }),
    )
    .await;
    assert_eq!(
        info["settings"]["delivery"]["signing_secret"], "whsec_…",
        "never echoed"
    );
    let id = app
        .push("hooks", json!({ "order": 42, "text": "héllo" }))
        .await;
    let seen = upstream.wait_for(1, Duration::from_secs(10)).await;
    let request = &seen[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/hook");
    assert_eq!(request.body, json!({ "order": 42, "text": "héllo" }));
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("x-api-key").as_deref(), Some("k1"));
    assert_eq!(header("hopper-message-id"), Some(id.clone()));
    assert_eq!(header("webhook-id"), Some(id));
    assert!(header("webhook-timestamp").is_some_and(|t| t.parse::<i64>().is_ok()));
    assert!(header("webhook-signature").is_some_and(|s| s.starts_with("v1,")));
    let info = wait_for_queue(&app, "hooks", empty).await;
    assert_eq!(info["delivery"]["delivered"], 1, "{info}");
    assert_eq!(info["dead"], 0);
}

/// An upstream that fails (500, then a connection-level failure is not needed:
/// 502) is called again after a backoff until it answers 2xx; attempts are counted.
async fn failures_are_retried_until_delivered(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![status(500), status(502), ok("{}")]).await;
    deliver_to(&app, "flaky", format!("http://{addr}/x"), json!({})).await;
    app.push("flaky", json!({ "n": 1 })).await;
    let seen = upstream.wait_for(3, Duration::from_secs(10)).await;
    assert!(seen.iter().all(|s| s.body == json!({ "n": 1 })));
    let info = wait_for_queue(&app, "flaky", empty).await;
    assert_eq!(info["delivery"]["delivered"], 1, "{info}");
    assert_eq!(info["delivery"]["failed_attempts"], 2, "{info}");
    assert_eq!(
        info["delivery"]["last_error"]["error"],
        "upstream answered 502"
    );
    assert_eq!(info["dead"], 0);
}

/// A message that fails `max_attempts` times is a dead letter that keeps its last
/// error; the upstream is not called again.
async fn out_of_attempts_is_a_dead_letter_with_the_last_error(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![status(422)]).await;
    let (code, _) = app
        .configure(
            "doomed",
            json!({ "max_attempts": 3, "delivery": {
                "url": format!("http://{addr}/x"),
                "backoff": { "initial": 0.05, "max": 0.1 } } }),
        )
        .await;
    assert!(code.is_success());
    app.push("doomed", json!({ "n": 1 })).await;
    let info = wait_for_queue(&app, "doomed", |info| info["dead"] == 1).await;
    assert!(empty(&info), "{info}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        upstream.seen().len(),
        3,
        "called max_attempts times, no more"
    );
    let dead = app
        .as_admin(reqwest::Method::GET, "/api/v1/queues/doomed/dead")
        .send()
        .await
        .unwrap();
    let dead: Value = dead.json().await.unwrap();
    assert_eq!(dead["messages"][0]["attempts"], 3);
    assert_eq!(
        dead["messages"][0]["last_error"], "upstream answered 422",
        "{dead}"
    );
}

/// `{field}` in the URL takes the message's field (URL-encoded), the method is the
/// setting's, and a listed status (404 for a DELETE of something gone) is delivered.
async fn done_statuses_and_url_fields_deliver_deletes(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![status(404)]).await;
    deliver_to(
        &app,
        "rollback",
        format!("http://{addr}/groups/{{group_id}}"),
        json!({ "method": "DELETE", "done_statuses": [404] }),
    )
    .await;
    app.push("rollback", json!({ "group_id": "g 1/a", "name": "x" }))
        .await;
    let seen = upstream.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(seen[0].method, Method::DELETE);
    assert_eq!(seen[0].path, "/groups/g%201%2Fa");
    let info = wait_for_queue(&app, "rollback", empty).await;
    assert_eq!(info["dead"], 0);
    assert_eq!(info["delivery"]["delivered"], 1);
}

/// Seed 001's executor: a task on a delivering queue sends the payload (not the
/// envelope) with `Hopper-Task-Id`; the upstream's answer is the task's result, its
/// status `upstream_status`; a caller waiting gets it in one call.
async fn a_task_queue_with_delivery_is_the_executor(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![
        status(503),
        ok(r#"{"id": 7, "email": "ada@example.com"}"#),
    ])
    .await;
    deliver_to(&app, "clients", format!("http://{addr}/clients"), json!({})).await;
    let started = Instant::now();
    let response = app
        .as_admin(reqwest::Method::POST, "/api/v1/tasks/clients")
        .header("prefer", "wait=10")
        .json(&json!({ "email": "ada@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(
        task["result"],
        json!({ "id": 7, "email": "ada@example.com" })
    );
    assert_eq!(task["attempts"], 2, "one 503, then delivered");
    let seen = upstream.seen();
    assert_eq!(
        seen.last().unwrap().body,
        json!({ "email": "ada@example.com" })
    );
    assert_eq!(
        seen.last()
            .unwrap()
            .headers
            .get("hopper-task-id")
            .and_then(|v| v.to_str().ok()),
        task["id"].as_str()
    );

    // Out of attempts, the task fails with the upstream's last answer as its error.
    upstream.script.lock().unwrap().clear();
    upstream.script.lock().unwrap().push_back(status(500));
    let (code, _) = app.configure("clients", json!({ "max_attempts": 2 })).await;
    assert!(code.is_success());
    let response = app
        .as_admin(reqwest::Method::POST, "/api/v1/tasks/clients")
        .header("prefer", "wait=10")
        .json(&json!({ "email": "bob@example.com" }))
        .send()
        .await
        .unwrap();
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"], "upstream answered 500");
}

/// An upstream that keeps failing opens its breaker: after `failures` calls it is
/// left alone for `open_for` (the queue keeps its messages), then probed once.
async fn a_failing_host_opens_the_breaker_and_is_probed_later(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![status(500)]).await;
    deliver_to(
        &app,
        "down",
        format!("http://{addr}/x"),
        json!({ "concurrency": 4, "breaker": { "failures": 3, "open_for": 1.5 },
                "backoff": { "initial": 0.01, "max": 0.02 } }),
    )
    .await;
    let (code, _) = app.configure("down", json!({ "max_attempts": 1000 })).await;
    assert!(code.is_success());
    for n in 0..20 {
        app.push("down", json!({ "n": n })).await;
    }
    upstream.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls_when_open = upstream.seen().len();
    let info = app.queue_info("down").await;
    assert_eq!(
        info["delivery"]["breakers"][format!("127.0.0.1:{}", addr.port())],
        "open",
        "{info}"
    );
    assert!(
        calls_when_open <= 3 + 4,
        "calls after the breaker opened: {calls_when_open}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(upstream.seen().len(), calls_when_open, "no call while open");
    // After open_for, one probe; it fails, so the breaker opens again.
    upstream
        .wait_for(calls_when_open + 1, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.seen().len(), calls_when_open + 1, "a single probe");
    // The upstream recovers: the next probe closes the breaker and everything goes out.
    *upstream.script.lock().unwrap() = vec![ok("{}")].into();
    let info = wait_for_queue(&app, "down", empty).await;
    assert_eq!(info["delivery"]["delivered"], 20, "{info}");
}

/// A 429 with `Retry-After: 1` is retried after about a second, not at once.
async fn retry_after_is_honoured(app: TestApp) {
    let (upstream, addr) = Upstream::start(vec![
        (429, vec![("retry-after", "1".into())], String::new()),
        ok("{}"),
    ])
    .await;
    deliver_to(&app, "polite", format!("http://{addr}/x"), json!({})).await;
    app.push("polite", json!({ "n": 1 })).await;
    let seen = upstream.wait_for(2, Duration::from_secs(10)).await;
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    wait_for_queue(&app, "polite", empty).await;
}

/// Delivery settings are checked: each wrong field is a 400 that names it.
async fn bad_delivery_settings_are_400(app: TestApp) {
    for (delivery, detail) in [
        (json!({ "url": "ftp://x/y" }), "delivery.url"),
        (json!({ "url": "http://x/{open" }), "delivery.url"),
        (
            json!({ "url": "http://x", "method": "G T" }),
            "delivery.method",
        ),
        (
            json!({ "url": "http://x", "timeout": 0 }),
            "delivery.timeout",
        ),
        (
            json!({ "url": "http://x", "concurrency": 0 }),
            "delivery.concurrency",
        ),
        (
            json!({ "url": "http://x", "signing_secret": "secret" }),
            "delivery.signing_secret",
        ),
        (
            json!({ "url": "http://x", "done_statuses": [99] }),
            "delivery.done_statuses",
        ),
        (
            json!({ "url": "http://x", "backoff": { "factor": 0.5 } }),
            "delivery.backoff",
        ),
    ] {
        let (code, body) = app.configure("bad", json!({ "delivery": delivery })).await;
        assert_eq!(code, 400, "{delivery}: {body}");
        assert!(
            body.as_str().is_some_and(|text| text.contains(detail)),
            "{delivery}: {body}"
        );
    }
    let (code, body) = app
        .configure("bad", json!({ "delivery": { "urll": "http://x" } }))
        .await;
    assert_eq!(code, 400, "{body}");
}

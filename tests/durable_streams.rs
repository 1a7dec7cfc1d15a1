//! The Durable Streams protocol under `/api/v1/stream/{name}`: real HTTP to a real
//! server on the embedded store (and, where a case says so, on each backend).
//! Hand-written cases for what Hopper adds or must keep (its credentials and
//! grants, one log under both stream APIs, wake-ups by the append itself, on
//! every node), then the protocol's own conformance suite (npm
//! `@durable-streams/server-conformance-tests`) against `hopper serve`, and its
//! TypeScript client (`@durable-streams/client`) across a kill and restart of it,
//! when `HOPPER_TEST_DURABLE_STREAMS` names a directory where `npm ci` ran over
//! `tests/durable-streams/` (`.ci/run` makes `target/durable-streams`), once per
//! backend that holds the log; without it, or without the backend, those trials
//! are reported ignored.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_app_with, Backend, BackendKind, TestApp};
use libtest_mimic::{Failed, Trial};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The variable naming the directory with the suite installed.
const SUITE_ENV: &str = "HOPPER_TEST_DURABLE_STREAMS";

/// The backends that hold the byte log, each of which must pass the whole suite.
const LOG_BACKENDS: &[BackendKind] = &[
    BackendKind::Sqlite,
    BackendKind::Postgres,
    BackendKind::Redis,
    BackendKind::RedisCluster,
];

fn main() {
    let mut trials: Vec<Trial> = common::trials!(@ once
        bytes_round_trip_with_offsets_that_resume,
        json_streams_answer_arrays_and_seed_events_read_through_seed_004,
        a_long_poll_is_answered_by_the_append_itself,
        producer_retries_are_stored_once_and_stale_epochs_fenced,
        a_closed_stream_refuses_appends_and_tells_readers,
        hoppers_credentials_and_grants_apply_unless_the_endpoint_is_public,
        an_sse_read_streams_data_then_control_and_ends_at_the_close
    )
    .into_iter()
    .chain(common::trials!(@ each_backend one_log_serves_both_stream_apis))
    .chain(common::trials!(@ each_backend a_source_and_its_fork_deleted_at_once_leave_nothing))
    .chain(common::trials!(@ once an_sse_reader_over_the_waiters_limit_is_told_to_retry))
    .chain(common::trials!(@ shared_backend a_long_poll_on_one_node_is_answered_by_an_append_on_another))
    .collect();
    let suite = std::env::var(SUITE_ENV)
        .ok()
        .filter(|dir| !dir.trim().is_empty())
        .map(|dir| PathBuf::from(dir.trim()))
        .ok_or_else(|| format!("{SUITE_ENV} is not set: it names a directory where `npm ci` ran over tests/durable-streams/ (.ci/run makes target/durable-streams)"));
    for kind in LOG_BACKENDS {
        let name = format!("{}::the_conformance_suite_passes", kind.label());
        trials.push(match (suite.clone(), kind.backend()) {
            (Ok(dir), Ok(backend)) => Trial::test(name, move || conformance(&dir, &backend)),
            (Err(why), _) | (_, Err(why)) => {
                Trial::test(name, move || Err(why.into())).with_ignored_flag(true)
            }
        });
        let name = format!(
            "{}::the_protocols_client_resumes_across_a_kill_and_restart",
            kind.label()
        );
        trials.push(match (suite.clone(), kind.backend()) {
            (Ok(dir), Ok(backend)) => {
                Trial::test(name, move || client_across_a_restart(&dir, &backend))
            }
            (Err(why), _) | (_, Err(why)) => {
                Trial::test(name, move || Err(why.into())).with_ignored_flag(true)
            }
        });
    }
    common::run_trials(trials)
}

async fn app() -> TestApp {
    spawn_app_with(&Backend::Sqlite, |config| {
        config.durable_streams.long_poll_timeout = Duration::from_secs(30);
    })
    .await
}

fn path(name: &str) -> String {
    format!("/api/v1/stream/{name}")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn bytes_round_trip_with_offsets_that_resume() {
    let app = app().await;
    let created = app
        .as_admin(Method::PUT, &path("log"))
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(header(&created, "location")
        .unwrap()
        .ends_with("/api/v1/stream/log"));
    let first = header(&created, "stream-next-offset").unwrap().to_owned();
    let again = app
        .as_admin(Method::PUT, &path("log"))
        .header("content-type", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a repeat with the same settings"
    );
    let other = app
        .as_admin(Method::PUT, &path("log"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::CONFLICT,
        "a repeat with another type"
    );

    let appended = app
        .as_admin(Method::POST, &path("log"))
        .header("content-type", "application/octet-stream")
        .body(&b"\r\nmore"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), StatusCode::NO_CONTENT);
    let tail = header(&appended, "stream-next-offset").unwrap().to_owned();
    assert!(tail > first, "offsets sort as text: {tail} after {first}");

    let all = app
        .as_admin(Method::GET, &path("log"))
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), StatusCode::OK);
    assert_eq!(header(&all, "stream-next-offset"), Some(tail.as_str()));
    assert_eq!(header(&all, "stream-up-to-date"), Some("true"));
    assert_eq!(
        all.bytes().await.unwrap().as_ref(),
        b"\x00\x9f\x92\x96\r\nmore"
    );
    let rest = app
        .as_admin(Method::GET, &format!("{}?offset={first}", path("log")))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.bytes().await.unwrap().as_ref(), b"\r\nmore");

    let head = app
        .as_admin(Method::HEAD, &path("log"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "stream-next-offset"), Some(tail.as_str()));
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream")
    );

    let bad = app
        .as_admin(Method::GET, &format!("{}?offset=../../etc", path("log")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let deleted = app
        .as_admin(Method::DELETE, &path("log"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app
        .as_admin(Method::GET, &path("log"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

fn seed_event(name: &str) -> Value {
    json!({
        "event": {"name": name, "version": 1},
        "system": {"id": "s", "name": "shop", "time": "2026-12-03 09:00:00", "timezone": "UTC"},
        "trigger": {"type": "system", "name": "checkout"},
        "payload": {"order": 7}
    })
}

async fn json_streams_answer_arrays_and_seed_events_read_through_seed_004() {
    let app = app().await;
    let created = app
        .as_admin(Method::PUT, &path("orders"))
        .header("content-type", "application/json")
        .body(json!([{"plain": 1}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let appended = app
        .as_admin(Method::POST, &path("orders"))
        .header("content-type", "application/json")
        .body(json!([seed_event("OrderPlaced"), [1, 2]]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), StatusCode::NO_CONTENT);
    let read = app
        .as_admin(Method::GET, &path("orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&read, "content-type"), Some("application/json"));
    let messages: Value = read.json().await.unwrap();
    assert_eq!(
        messages,
        json!([{"plain": 1}, seed_event("OrderPlaced"), [1, 2]])
    );

    // The message with an event's shape is an event of seed 004's API, at the
    // position the protocol gave it (the second entry: id 2).
    let events: Value = app
        .as_admin(
            Method::GET,
            "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10",
        )
        .header("x-consumer-id", "billing")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["id"], "2");
    assert_eq!(events[0]["payload"], json!({"order": 7}));

    let invalid = app
        .as_admin(Method::POST, &path("orders"))
        .header("content-type", "application/json")
        .body("[1,")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let empty = app
        .as_admin(Method::POST, &path("orders"))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let mismatch = app
        .as_admin(Method::POST, &path("orders"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(mismatch.status(), StatusCode::CONFLICT);
}

async fn a_long_poll_is_answered_by_the_append_itself() {
    let app = app().await;
    let created = app
        .as_admin(Method::PUT, &path("live"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    let tail = header(&created, "stream-next-offset").unwrap().to_owned();
    let poll = app
        .as_admin(
            Method::GET,
            &format!("{}?offset={tail}&live=long-poll", path("live")),
        )
        .send();
    let append = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.as_admin(Method::POST, &path("live"))
            .header("content-type", "text/plain")
            .body("news")
            .send()
            .await
            .unwrap()
    };
    let started = Instant::now();
    let (polled, appended) = tokio::join!(poll, append);
    assert_eq!(appended.status(), StatusCode::NO_CONTENT);
    let polled = polled.unwrap();
    // A poll that timed out would be a 204 after 30 s.
    assert_eq!(
        polled.status(),
        StatusCode::OK,
        "after {:?}",
        started.elapsed()
    );
    assert!(header(&polled, "stream-cursor").is_some());
    assert_eq!(polled.text().await.unwrap(), "news");
}

async fn producer_retries_are_stored_once_and_stale_epochs_fenced() {
    let app = app().await;
    app.as_admin(Method::PUT, &path("p"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    let send = |epoch: u64, seq: u64, body: &'static str| {
        app.as_admin(Method::POST, &path("p"))
            .header("content-type", "text/plain")
            .header("producer-id", "writer-1")
            .header("producer-epoch", epoch.to_string())
            .header("producer-seq", seq.to_string())
            .body(body)
            .send()
    };
    let first = send(0, 0, "a").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "producer-seq"), Some("0"));
    let retry = send(0, 0, "a").await.unwrap();
    assert_eq!(
        retry.status(),
        StatusCode::NO_CONTENT,
        "a retry is accepted"
    );
    let gap = send(0, 5, "c").await.unwrap();
    assert_eq!(gap.status(), StatusCode::CONFLICT);
    assert_eq!(header(&gap, "producer-expected-seq"), Some("1"));
    assert_eq!(header(&gap, "producer-received-seq"), Some("5"));
    assert_eq!(send(1, 0, "b").await.unwrap().status(), StatusCode::OK);
    let zombie = send(0, 1, "z").await.unwrap();
    assert_eq!(zombie.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&zombie, "producer-epoch"), Some("1"));
    let partial = app
        .as_admin(Method::POST, &path("p"))
        .header("content-type", "text/plain")
        .header("producer-id", "writer-1")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), StatusCode::BAD_REQUEST);
    let read = app.as_admin(Method::GET, &path("p")).send().await.unwrap();
    assert_eq!(
        read.text().await.unwrap(),
        "ab",
        "the retry is not stored twice"
    );
}

async fn a_closed_stream_refuses_appends_and_tells_readers() {
    let app = app().await;
    app.as_admin(Method::PUT, &path("c"))
        .header("content-type", "text/plain")
        .body("last words")
        .send()
        .await
        .unwrap();
    let closed = app
        .as_admin(Method::POST, &path("c"))
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&closed, "stream-closed"), Some("true"));
    let tail = header(&closed, "stream-next-offset").unwrap().to_owned();
    let refused = app
        .as_admin(Method::POST, &path("c"))
        .header("content-type", "text/plain")
        .body("more")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(header(&refused, "stream-closed"), Some("true"));
    // A reader at the tail of a closed stream is answered at once, not held.
    let poll = app
        .as_admin(
            Method::GET,
            &format!("{}?offset={tail}&live=long-poll", path("c")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&poll, "stream-closed"), Some("true"));
    let read = app.as_admin(Method::GET, &path("c")).send().await.unwrap();
    assert_eq!(header(&read, "stream-closed"), Some("true"));
    assert_eq!(read.text().await.unwrap(), "last words");
}

async fn hoppers_credentials_and_grants_apply_unless_the_endpoint_is_public() {
    let app = app().await;
    let anonymous = app
        .request(Method::PUT, &path("guarded"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let secret = app
        .create_client("reader", &["stream:guarded:consume"])
        .await;
    let created = app
        .as_admin(Method::PUT, &path("guarded"))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let read = app
        .as_client("reader", &secret, Method::GET, &path("guarded"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let refused = app
            .as_client("reader", &secret, method.clone(), &path("guarded"))
            .header("content-type", "text/plain")
            .body("y")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{method}");
    }
    let wrong = app
        .as_client("reader", "not-the-secret", Method::GET, &path("guarded"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let public = spawn_app_with(&Backend::Sqlite, |config| {
        config.durable_streams.public = true;
    })
    .await;
    let open = public
        .request(Method::PUT, &path("open"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::CREATED);
    // Credentials sent are still checked, and opening streams opens nothing else.
    let wrong = public
        .as_client("admin", "not-the-secret", Method::GET, &path("open"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let queues = public
        .request(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(queues.status(), StatusCode::UNAUTHORIZED);
}

async fn an_sse_read_streams_data_then_control_and_ends_at_the_close() {
    let app = app().await;
    app.as_admin(Method::PUT, &path("events"))
        .header("content-type", "text/plain")
        .body("line1\nline2")
        .send()
        .await
        .unwrap();
    app.as_admin(Method::POST, &path("events"))
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    let sse = app
        .as_admin(
            Method::GET,
            &format!("{}?offset=-1&live=sse", path("events")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    assert_eq!(header(&sse, "content-type"), Some("text/event-stream"));
    let text = sse.text().await.unwrap();
    assert!(
        text.starts_with("event: data\ndata:line1\ndata:line2\n\nevent: control\ndata:{"),
        "{text}"
    );
    assert!(text.contains("\"streamClosed\":true"), "{text}");
}

/// On every store the log and seed 004's stream API are one log: each reads what the other appended, at
/// the same positions.
async fn one_log_serves_both_stream_apis(app: TestApp) {
    let created = app
        .as_admin(Method::PUT, &path("somewhere"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "on {}", app.backend);

    let created = app
        .as_admin(Method::PUT, &path("orders"))
        .header("content-type", "application/json")
        .body(json!([{"plain": 1}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let appended = app
        .as_admin(Method::POST, &path("orders"))
        .header("content-type", "application/json")
        .body(json!([seed_event("OrderPlaced"), [1, 2]]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), StatusCode::NO_CONTENT);
    let events: Value = app
        .as_admin(
            Method::GET,
            "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10",
        )
        .header("x-consumer-id", "billing")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert_eq!(events[0]["id"], "2", "the second entry is event 2");

    // Seed 004's appends are entries of the log, in order.
    for _ in 0..2 {
        let appended = app
            .as_admin(Method::POST, "/api/v1/streams/legacy/events")
            .header("x-producer-id", "shop")
            .json(&seed_event("OrderShipped"))
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), StatusCode::OK);
    }
    let read = app
        .as_admin(Method::GET, &path("legacy"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(header(&read, "content-type"), Some("application/json"));
    assert_eq!(
        header(&read, "stream-next-offset"),
        Some(hopper::domain::log::offset_of(2).as_str())
    );
    let messages: Value = read.json().await.unwrap();
    assert_eq!(
        messages,
        json!([seed_event("OrderShipped"), seed_event("OrderShipped")])
    );

    // A stream the protocol made is claimed by seed 004's first producer, and
    // takes no seed-004 events once closed, or when it holds no JSON.
    let seed_append = |stream: &'static str, producer: &'static str| {
        app.as_admin(Method::POST, &format!("/api/v1/streams/{stream}/events"))
            .header("x-producer-id", producer)
            .json(&seed_event("OrderPaid"))
            .send()
    };
    assert_eq!(
        seed_append("orders", "billing").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        seed_append("orders", "other").await.unwrap().status(),
        StatusCode::LOCKED
    );
    let closed = app
        .as_admin(Method::POST, &path("orders"))
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        seed_append("orders", "billing").await.unwrap().status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        seed_append("somewhere", "billing").await.unwrap().status(),
        StatusCode::CONFLICT
    );
    let read = app
        .as_admin(Method::GET, &path("orders"))
        .send()
        .await
        .unwrap();
    let messages: Value = read.json().await.unwrap();
    assert_eq!(messages.as_array().map(Vec::len), Some(4), "{messages}");
    assert_eq!(messages[3], seed_event("OrderPaid"));
}

/// A reader long-polling one node is answered by an append made through another
/// node of the same store (here a second store handle: a node of its own, with its
/// own subscription), well before its long-poll would end.
async fn a_long_poll_on_one_node_is_answered_by_an_append_on_another(app: TestApp) {
    use hopper::domain::log::{Entry, LogAppend};
    let created = app
        .as_admin(Method::PUT, &path("shared"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let tail = header(&created, "stream-next-offset").unwrap().to_owned();
    let other = hopper::store::open(app.store_url()).await.unwrap();
    let started = Instant::now();
    let poll = app
        .as_admin(
            Method::GET,
            &format!("{}?offset={tail}&live=long-poll", path("shared")),
        )
        .send();
    let append = async {
        // Long enough for the poll to be waiting, far below its 20 s timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        other
            .append_log(
                &hopper::domain::StreamName::parse("shared").unwrap(),
                LogAppend {
                    content_type: Some("text/plain".into()),
                    entries: vec![Entry {
                        name: None,
                        data: b"from the other node".to_vec(),
                    }],
                    close: false,
                    producer: None,
                    stream_seq: None,
                },
            )
            .await
            .unwrap()
    };
    let (answer, _) = tokio::join!(poll, append);
    let answer = answer.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "from the other node");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered by the append, not the timeout: {:?}",
        started.elapsed()
    );
    other.close().await;
}

/// Runs the suite against `hopper serve` on a fresh store of `backend`, public,
/// with a short long-poll as the suite expects; every case it runs must pass.
fn conformance(suite: &Path, backend: &Backend) -> Result<(), Failed> {
    let store = backend.isolated_store();
    let dir = &store.dir;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let config = dir.path().join("hopper.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstore = \"{}\"\n[durable_streams]\nlong_poll_timeout = \"500ms\"\npublic = true\n",
            store.url
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.path().join("hopper.log")).map_err(|e| e.to_string())?;
    let mut server = Command::new(env!("CARGO_BIN_EXE_hopper"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove("HOPPER_LISTEN")
        .env_remove("HOPPER_STORE")
        .env_remove("HOPPER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run hopper: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            return Err("hopper did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durable-streams/vitest.config.mjs"),
        suite.join("vitest.config.mjs"),
    )
    .map_err(|e| e.to_string())?;
    let report = dir.path().join("report.json");
    let output = Command::new("npx")
        .current_dir(suite)
        .args([
            "vitest",
            "run",
            "--config",
            "vitest.config.mjs",
            "--reporter=json",
        ])
        .arg(format!("--outputFile={}", report.display()))
        .env(
            "CONFORMANCE_TEST_URL",
            format!("http://127.0.0.1:{port}/api"),
        )
        .output();
    let _ = server.kill();
    let _ = server.wait();
    let output = output.map_err(|e| format!("cannot run npx vitest: {e}"))?;
    let report: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .ok_or_else(|| {
            format!(
                "vitest wrote no report:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let mut passed = 0;
    let mut failed = Vec::new();
    for file in report["testResults"].as_array().into_iter().flatten() {
        for case in file["assertionResults"].as_array().into_iter().flatten() {
            let title = format!(
                "{} > {}",
                case["ancestorTitles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" > "),
                case["title"].as_str().unwrap_or_default()
            );
            match case["status"].as_str() {
                Some("passed") => passed += 1,
                Some("failed") => failed.push(title),
                _ => {}
            }
        }
    }
    eprintln!(
        "conformance: {passed} passed of {} ({} pending)",
        report["numTotalTests"], report["numPendingTests"]
    );
    if failed.is_empty() && passed > 0 {
        Ok(())
    } else {
        Err(format!(
            "{} cases failed on {}:\n{}",
            failed.len(),
            backend.label(),
            failed.join("\n")
        )
        .into())
    }
}

/// The protocol's TypeScript client (`@durable-streams/client`) against `hopper
/// serve` on a fresh store of `backend`, in the two runs of
/// `tests/durable-streams/client-e2e.mjs` (which says what each checks), the
/// server killed with SIGKILL and started again on the same store and port between
/// them: a reader resumes from the offset it saved and sees exactly what came after.
fn client_across_a_restart(suite: &Path, backend: &Backend) -> Result<(), Failed> {
    use base64::Engine as _;
    // Copied beside the installed packages, so that its imports resolve.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/durable-streams/client-e2e.mjs"),
        suite.join("client-e2e.mjs"),
    )
    .map_err(|e| e.to_string())?;
    let store = backend.isolated_store();
    let mut server = common::serve::ServeProcess::start(&store.url, store.dir.path(), "");
    let url = format!("{}/api/v1/stream/client-e2e", server.base_url());
    let state = store.dir.path().join("client-e2e.json");
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", common::ADMIN_SECRET))
    );
    let run = |phase: &str, server: &common::serve::ServeProcess| -> Result<(), Failed> {
        let output = Command::new("node")
            .current_dir(suite)
            .arg("client-e2e.mjs")
            .arg(phase)
            .arg(&url)
            .arg(&state)
            .env("HOPPER_AUTHORIZATION", &authorization)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run node: {e}"))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        eprint!("{said}");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "client-e2e.mjs {phase} on {} failed ({}):\n{said}\nserver log:\n{}",
                backend.label(),
                output.status,
                server.log()
            )
            .into())
        }
    };
    run("before", &server)?;
    server.restart();
    run("after", &server)
}

/// A source and its one fork deleted at the same moment, many times over: whichever
/// delete counts the other, neither name stays held by a tombstone, and seed 004's
/// appends to a held name are refused while it is.
async fn a_source_and_its_fork_deleted_at_once_leave_nothing(app: TestApp) {
    let put = |name: String, fork_of: Option<String>| {
        let request = app
            .as_admin(Method::PUT, &path(&name))
            .header("content-type", "application/json");
        match fork_of {
            Some(source) => request.header("stream-forked-from", format!("/v1/stream/{source}")),
            None => request,
        }
        .send()
    };
    const PAIRS: usize = 40;
    for pair in 0..PAIRS {
        assert_eq!(
            put(format!("src-{pair}"), None).await.unwrap().status(),
            StatusCode::CREATED
        );
        let forked = put(format!("fork-{pair}"), Some(format!("src-{pair}")))
            .await
            .unwrap();
        assert_eq!(forked.status(), StatusCode::CREATED);
    }
    let held = app
        .as_admin(Method::DELETE, &path("src-0"))
        .send()
        .await
        .unwrap();
    assert_eq!(held.status(), StatusCode::NO_CONTENT);
    let refused = app
        .as_admin(Method::POST, "/api/v1/streams/src-0/events")
        .header("x-producer-id", "shop")
        .json(&seed_event("OrderPlaced"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::CONFLICT,
        "a tombstone holds src-0"
    );
    let deletes = (1..PAIRS).flat_map(|pair| {
        [format!("src-{pair}"), format!("fork-{pair}")]
            .map(|name| app.as_admin(Method::DELETE, &path(&name)).send())
    });
    for deleted in futures_util::future::join_all(deletes).await {
        assert_eq!(deleted.unwrap().status(), StatusCode::NO_CONTENT);
    }
    app.as_admin(Method::DELETE, &path("fork-0"))
        .send()
        .await
        .unwrap();
    for pair in 0..PAIRS {
        let read = app
            .as_admin(Method::GET, &path(&format!("src-{pair}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            read.status(),
            StatusCode::NOT_FOUND,
            "src-{pair} on {}",
            app.backend
        );
    }
}

/// A live reader past `limits.max_waiters` is answered 503 with `Retry-After`, as a
/// long-poll is, not with an event stream that ends at once.
async fn an_sse_reader_over_the_waiters_limit_is_told_to_retry() {
    let app = spawn_app_with(&Backend::Sqlite, |config| {
        config.limits.max_waiters = 1;
    })
    .await;
    let created = app
        .as_admin(Method::PUT, &path("busy"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let tail = hopper::domain::log::offset_of(0);
    let first = app
        .as_admin(
            Method::GET,
            &format!("{}?offset={tail}&live=sse", path("busy")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // The first reader holds the one slot once it waits at the tail.
    let mut waiting = false;
    for _ in 0..100 {
        let second = app
            .as_admin(
                Method::GET,
                &format!("{}?offset={tail}&live=sse", path("busy")),
            )
            .send()
            .await
            .unwrap();
        if second.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(header(&second, "retry-after"), Some("1"));
            waiting = true;
            break;
        }
        drop(second);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waiting, "a second live reader was never refused");
    drop(first);
}

//! The edge limits of `[limits]` over real sockets: raw bytes written with a tokio
//! `TcpStream` against a real server with small limits, so each test takes a second or
//! two. Tests assert the effect: the socket is closed (a read returns 0 or a reset),
//! the status, headers and exact seed-004 body of the answer.
//!
//! The connection limits do not touch the store, so they run on SQLite only; the
//! waiter cap runs once per backend (`sqlite::…`, `postgres::…`), since each backend
//! wakes long-polls its own way.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{spawn_app_with, trials, Backend, TestApp, JSON_CONTENT_TYPE};
use hopper::config::{Config, Limits};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

trials! {
    each_backend {
        max_waiters_refuses_exactly_the_waits_past_the_cap_and_nothing_else: multi_thread(2),
    }
    once {
        a_slow_header_is_disconnected_after_header_timeout,
        an_idle_keep_alive_connection_closes_after_idle_timeout,
        a_100_kib_header_gets_431_with_the_json_body_and_a_request_id,
        a_malformed_request_line_gets_400_and_a_huge_target_414_with_the_json_body,
        a_stalled_body_is_cut_and_its_connection_closed,
        request_timeout_spares_long_polls_and_task_waits_their_wait,
        at_max_connections_open_ones_are_served_and_new_ones_wait_their_turn,
        x_request_id_is_echoed_only_when_short_and_visible_ascii,
        a_forward_whose_upstream_answers_more_than_max_body_bytes_gets_502,
        shutdown_closes_connections_still_busy_after_drain_timeout,
    }
}

/// Small limits, so that every deadline passes within a test.
fn small_limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(1500),
        request_timeout: Duration::from_millis(600),
        drain_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// A server on SQLite whose limits `configure` sets.
async fn spawn(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(&Backend::Sqlite, configure).await
}

/// `Authorization` of the admin, for raw requests.
fn admin_authorization(app: &TestApp) -> String {
    let pair = format!("admin:{}", app.admin_secret);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A raw connection to the server.
async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.unwrap()
}

/// An answer read off a raw socket.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as the JSON string seed 004 makes of an error.
    fn error_text(&self) -> String {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::String(text)) => text,
            _ => panic!("the error body is not a JSON string: {:?}", self.body),
        }
    }

    /// JSON content type and a request id, as every answer carries.
    fn assert_conventions(&self) {
        assert_eq!(
            self.header("content-type"),
            Some(JSON_CONTENT_TYPE),
            "{self:?}"
        );
        assert!(
            self.header("x-request-id").is_some_and(|id| !id.is_empty()),
            "x-request-id missing: {self:?}"
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one answer (head and `content-length` body) within 5 s.
async fn read_answer(stream: &mut TcpStream) -> RawAnswer {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("no answer within 5 s")
            .expect("the read failed");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while buffer.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("no whole body within 5 s")
            .expect("the read failed");
        assert!(n > 0, "closed before the whole body");
        buffer.extend_from_slice(&chunk[..n]);
    }
    RawAnswer {
        status,
        headers,
        body: String::from_utf8(buffer[head_end..head_end + length].to_vec()).unwrap(),
    }
}

/// Waits up to `within` for the server to close `stream`, sending nothing; returns
/// how long that took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(within, stream.read(&mut chunk)).await {
        Err(_) => panic!("still open after {within:?}"),
        // A reset is a close too: the client cannot use the socket any more.
        Ok(Err(_)) | Ok(Ok(0)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

/// Asserts `stream` stays open (and silent) for `during`.
async fn stays_open(stream: &mut TcpStream, during: Duration) {
    let mut chunk = [0u8; 1024];
    if let Ok(read) = tokio::time::timeout(during, stream.read(&mut chunk)).await {
        panic!("expected the connection to stay open, read {read:?}");
    }
}

fn get_health() -> &'static [u8] {
    b"GET /health HTTP/1.1\r\nhost: hopper\r\n\r\n"
}

/// Sends the start of a head a byte every 100 ms, each well within the header
/// timeout, until the server cuts the connection; returns how long that took.
async fn trickle_until_cut(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    for byte in b"GET /health HTTP/1.1\r\nhost: hopper\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed_within(stream, Duration::from_secs(1)).await;
    started.elapsed()
}

/// A client that starts a head and sends it a byte at a time is cut once
/// header_timeout has passed since the head began, on a new connection and on a
/// keep-alive one after an answer (not after the longer idle_timeout); a connection
/// that never sends a byte is cut after header_timeout too.
async fn a_slow_header_is_disconnected_after_header_timeout() {
    let app = spawn(|config| {
        config.limits = Limits {
            idle_timeout: Duration::from_secs(3),
            ..small_limits()
        }
    })
    .await;
    let expected = Duration::from_millis(300)..Duration::from_millis(1300);
    let mut silent = connect(&app).await;
    let silent_started = Instant::now();
    let mut slow = connect(&app).await;
    let elapsed = trickle_until_cut(&mut slow).await;
    assert!(
        expected.contains(&elapsed),
        "a new connection's slow head was cut after {elapsed:?}, header_timeout is 400 ms"
    );
    closed_within(&mut silent, Duration::from_secs(1)).await;
    let elapsed = silent_started.elapsed();
    assert!(
        expected.contains(&elapsed),
        "a silent connection was cut after {elapsed:?}"
    );

    let mut kept = connect(&app).await;
    kept.write_all(get_health()).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.status, 200);
    let elapsed = trickle_until_cut(&mut kept).await;
    assert!(
        expected.contains(&elapsed),
        "a slow head after an answer was cut after {elapsed:?}, not after header_timeout"
    );
    // The server is unharmed.
    let response = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// An idle keep-alive connection outlives the header timeout (its next request is
/// served) and is closed once idle for idle_timeout.
async fn an_idle_keep_alive_connection_closes_after_idle_timeout() {
    let app = spawn(|config| config.limits = small_limits()).await;
    let mut stream = connect(&app).await;
    stream.write_all(get_health()).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
    stays_open(&mut stream, Duration::from_millis(800)).await;
    stream.write_all(get_health()).await.unwrap();
    assert_eq!(
        read_answer(&mut stream).await.status,
        200,
        "a keep-alive idle for twice header_timeout is still served"
    );
    let idle = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        (Duration::from_millis(1200)..Duration::from_secs(4)).contains(&idle),
        "closed after {idle:?} idle, idle_timeout is 1.5 s"
    );
}

/// A 100 KiB header is over the default 64 KiB: 431 with the JSON body and a request
/// id, then the connection closes; on a keep-alive connection after an answer too.
/// A 60 KiB head is under it and served, so the limit is what refuses, not a buffer.
async fn a_100_kib_header_gets_431_with_the_json_body_and_a_request_id() {
    let app = spawn(|_| {}).await;
    let big = format!(
        "GET /health HTTP/1.1\r\nhost: hopper\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let expected =
        "Request Header Fields Too Large - the request head exceeds 65536 bytes or 100 fields";

    let mut stream = connect(&app).await;
    stream.write_all(big.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 431, "{answer:?}");
    answer.assert_conventions();
    assert_eq!(answer.error_text(), expected);
    assert_eq!(answer.header("connection"), Some("close"));
    closed_within(&mut stream, Duration::from_secs(2)).await;

    let mut stream = connect(&app).await;
    stream.write_all(get_health()).await.unwrap();
    let first = read_answer(&mut stream).await;
    assert_eq!(first.status, 200);
    stream.write_all(big.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 431, "{answer:?}");
    answer.assert_conventions();
    assert_eq!(answer.error_text(), expected);
    assert_ne!(
        answer.header("x-request-id"),
        first.header("x-request-id"),
        "each answer has its own request id"
    );
    closed_within(&mut stream, Duration::from_secs(2)).await;

    let mut stream = connect(&app).await;
    let under = format!(
        "GET /health HTTP/1.1\r\nhost: hopper\r\nx-big: {}\r\n\r\n",
        "a".repeat(60 * 1024)
    );
    stream.write_all(under.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 200);
}

/// A request line hyper cannot parse gets 400 with the JSON body; with a larger
/// `max_header_bytes`, a target over hyper's URI limit gets 414 the same way.
async fn a_malformed_request_line_gets_400_and_a_huge_target_414_with_the_json_body() {
    let app = spawn(|config| config.limits.max_header_bytes = 128 * 1024).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"NOT AN HTTP REQUEST\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    answer.assert_conventions();
    assert_eq!(answer.error_text(), "Bad Request - malformed request head");
    closed_within(&mut stream, Duration::from_secs(2)).await;

    let mut stream = connect(&app).await;
    let long = format!(
        "GET /{} HTTP/1.1\r\nhost: hopper\r\n\r\n",
        "a".repeat(70_000)
    );
    stream.write_all(long.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 414, "{answer:?}");
    answer.assert_conventions();
    assert_eq!(
        answer.error_text(),
        "URI Too Long - the request target is too long"
    );
}

/// A body short of its Content-Length, or a chunked body that never ends, is cut by
/// request_timeout: 503 with Retry-After, then the connection closes. A handler that
/// answers without reading the body (no credentials) does not wait for it either.
async fn a_stalled_body_is_cut_and_its_connection_closed() {
    let app = spawn(|config| config.limits = small_limits()).await;
    let authorization = admin_authorization(&app);
    let heads = [
        format!(
            "POST /api/v1/queues/stalled/messages HTTP/1.1\r\nhost: hopper\r\nauthorization: {authorization}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"body\":"
        ),
        format!(
            "POST /api/v1/queues/stalled/messages HTTP/1.1\r\nhost: hopper\r\nauthorization: {authorization}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n8\r\n{{\"body\":\r\n"
        ),
    ];
    for head in heads {
        let mut stream = connect(&app).await;
        let started = Instant::now();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        let elapsed = started.elapsed();
        assert_eq!(answer.status, 503, "{answer:?}");
        answer.assert_conventions();
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(
            answer.error_text(),
            "Service Unavailable - request timed out"
        );
        assert!(
            (Duration::from_millis(500)..Duration::from_secs(3)).contains(&elapsed),
            "answered after {elapsed:?}, request_timeout is 600 ms"
        );
        closed_within(&mut stream, Duration::from_secs(2)).await;
    }
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/queues/stalled/messages HTTP/1.1\r\nhost: hopper\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    assert_eq!(read_answer(&mut stream).await.status, 401);
    closed_within(&mut stream, Duration::from_secs(2)).await;
    let queue = app
        .as_admin(Method::GET, "/api/v1/queues/stalled")
        .send()
        .await
        .unwrap();
    assert_eq!(
        queue.status(),
        StatusCode::NOT_FOUND,
        "nothing of a cut body was pushed"
    );
}

/// With request_timeout at 600 ms, long-polls and task waits that ask for 1.5 s are
/// answered normally after their wait, not cut.
async fn request_timeout_spares_long_polls_and_task_waits_their_wait() {
    let app = spawn(|config| config.limits = small_limits()).await;
    app.configure("empty", json!({})).await;
    let started = Instant::now();
    let receive = app
        .as_admin(Method::POST, "/api/v1/queues/empty/receive?wait=1.5")
        .send();
    let task = app
        .as_admin(Method::POST, "/api/v1/tasks/slow-tasks")
        .header("prefer", "wait=1.5")
        .json(&json!({"n": 1}))
        .send();
    let (receive, task) = tokio::join!(receive, task);
    let elapsed = started.elapsed();
    let receive = receive.unwrap();
    assert_eq!(receive.status(), StatusCode::OK);
    assert_eq!(
        receive.json::<Value>().await.unwrap()["messages"],
        json!([])
    );
    assert_eq!(task.unwrap().status(), StatusCode::ACCEPTED);
    assert!(
        elapsed >= Duration::from_millis(1400),
        "answered after {elapsed:?}, before the wait"
    );
}

/// `max_connections` = 3: while three connections are open, more wait in the listen
/// backlog (the listener keeps no socket it cannot serve) and the connections in
/// hand are still served; a new request is served once idle ones time out.
async fn at_max_connections_open_ones_are_served_and_new_ones_wait_their_turn() {
    let app = spawn(|config| {
        config.limits = Limits {
            max_connections: Some(3),
            header_timeout: Duration::from_millis(800),
            idle_timeout: Duration::from_secs(5),
            ..small_limits()
        }
    })
    .await;
    let mut served = connect(&app).await;
    served.write_all(get_health()).await.unwrap();
    assert_eq!(read_answer(&mut served).await.status, 200);
    let _idle = [connect(&app).await, connect(&app).await];
    // Give the server the time to accept the two: they hold the last permits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _waiting = connect(&app).await;
    let started = Instant::now();
    let fresh = tokio::spawn({
        let request = app.request(Method::GET, "/health");
        async move { request.send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    served.write_all(get_health()).await.unwrap();
    assert_eq!(
        read_answer(&mut served).await.status,
        200,
        "a connection in hand is served at the cap"
    );
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "not at once"
    );
    assert!(!fresh.is_finished(), "a fourth connection was served");
    let status = fresh.await.unwrap().unwrap();
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(
        waited >= Duration::from_millis(600),
        "served after {waited:?}, before an idle connection timed out"
    );
    let response = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A client's request id is echoed when it is 1 to 128 visible ASCII characters;
/// otherwise (too long, a space, a control or non-ASCII byte, two of them) the
/// answer carries a fresh one.
async fn x_request_id_is_echoed_only_when_short_and_visible_ascii() {
    let app = spawn(|_| {}).await;
    let id_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .expect("x-request-id missing")
            .to_str()
            .unwrap()
            .to_owned()
    };
    let longest = "a".repeat(128);
    for echoed in [
        "trace-me-42",
        "x",
        longest.as_str(),
        "~!#$%&'*+-.^_`|:;<=>?@[]{}",
    ] {
        let response = app
            .request(Method::GET, "/health")
            .header("x-request-id", echoed)
            .send()
            .await
            .unwrap();
        assert_eq!(id_of(&response), echoed);
    }
    let too_long = "a".repeat(129);
    let refused: [&[u8]; 5] = [
        too_long.as_bytes(),
        b"has space",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        b"",
    ];
    for bad in refused {
        let response = app
            .request(Method::GET, "/health")
            .header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(bad).unwrap(),
            )
            .send()
            .await
            .unwrap();
        let id = id_of(&response);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{bad:?} answered with {id:?}, not a fresh id"
        );
    }
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: hopper\r\nx-request-id: one\r\nx-request-id: two\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    let id = answer.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "two ids answered {id:?}");
}

/// A forward route reads at most max_body_bytes of the upstream's answer: over it,
/// with or without Content-Length, the client gets 502; exactly at it, the answer
/// passes. An answer whose body looks like hyper's own error head passes untouched.
async fn a_forward_whose_upstream_answers_more_than_max_body_bytes_gets_502() {
    let upstream = upstream().await;
    let text = format!(
        r#"
[[routes]]
method = "GET"
path = "/f/{{what}}"
public = true
forward = {{ url = "http://{upstream}/{{what}}" }}
"#
    );
    #[derive(serde::Deserialize)]
    struct File {
        routes: Vec<toml::Spanned<hopper::routes::RouteSpec>>,
    }
    let file: File = toml::from_str(&text).unwrap();
    let routes = hopper::routes::parse(file.routes, &text).unwrap();
    let app = spawn(move |config| {
        config.routes = routes;
        config.max_body_bytes = 1024;
    })
    .await;
    for over in ["big", "chunked"] {
        let response = app
            .request(Method::GET, &format!("/f/{over}"))
            .send()
            .await
            .unwrap();
        common::assert_error(
            response,
            StatusCode::BAD_GATEWAY,
            "Bad Gateway - upstream answer exceeds 1024 bytes",
        )
        .await;
    }
    let response = app.request(Method::GET, "/f/exact").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "e".repeat(1024));

    let mut stream = connect(&app).await;
    for _ in 0..2 {
        stream
            .write_all(b"GET /f/lookalike HTTP/1.1\r\nhost: hopper\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, LOOKALIKE);
    }
}

/// A body that is exactly the head hyper writes for a 400.
const LOOKALIKE: &str = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";

/// An upstream answering `/big` (2 KiB, with Content-Length), `/chunked` (3 × 512
/// bytes, chunked), `/exact` (1 KiB) and `/lookalike`.
async fn upstream() -> std::net::SocketAddr {
    use axum::body::{Body, Bytes};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/big", get(|| async { "b".repeat(2048) }))
        .route(
            "/chunked",
            get(|| async {
                let chunks = (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from("c".repeat(512))));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route("/exact", get(|| async { "e".repeat(1024) }))
        .route("/lookalike", get(|| async { LOOKALIKE }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A request on its way, of any kind.
type Sent =
    std::pin::Pin<Box<dyn std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send>>;

/// A seed-004 event named `name`.
fn event(name: &str) -> Value {
    json!({
        "event": {"name": name, "version": 1},
        "system": {"id": "s", "name": "shop", "time": "2017-09-06 13:58:12", "timezone": "Europe/Berlin"},
        "trigger": {"type": "system", "name": "test"},
        "payload": {}
    })
}

/// `max_waiters` = 5: five waits of every kind (queue receive, stream read, task
/// create and task GET with `Prefer: wait`) fill it; one more of each kind gets 503
/// with Retry-After at once, and a refused task create creates nothing. Requests that
/// do not wait (a push, a receive with wait=0) pass. The five complete normally, and
/// their slots come back.
async fn max_waiters_refuses_exactly_the_waits_past_the_cap_and_nothing_else(backend: Backend) {
    let app = spawn_app_with(&backend, |config| {
        config.limits.max_waiters = 5;
    })
    .await;
    let append = app
        .as_admin(Method::POST, "/api/v1/streams/orders/events")
        .header("content-type", "application/json")
        .header("x-producer-id", "shop")
        .body(event("Other").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(append.status(), StatusCode::OK);
    let pending = app
        .as_admin(Method::POST, "/api/v1/tasks/work")
        .header("prefer", "respond-async")
        .json(&json!({"n": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(pending.status(), StatusCode::ACCEPTED);
    app.configure("jobs", json!({})).await;
    let pending_id = pending.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let receive = |wait: &str| -> Sent {
        Box::pin(
            app.as_admin(
                Method::POST,
                &format!("/api/v1/queues/jobs/receive?wait={wait}"),
            )
            .send(),
        )
    };
    let read = |wait: &str| -> Sent {
        Box::pin(
            app.as_admin(
                Method::GET,
                &format!(
                    "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10&wait={wait}"
                ),
            )
            .header("x-consumer-id", "billing")
            .send(),
        )
    };
    let create = |wait: &str| -> Sent {
        Box::pin(
            app.as_admin(Method::POST, "/api/v1/tasks/work")
                .header("prefer", format!("wait={wait}"))
                .json(&json!({"n": 1}))
                .send(),
        )
    };
    let get_task = |wait: &str| -> Sent {
        Box::pin(
            app.as_admin(Method::GET, &format!("/api/v1/tasks/{pending_id}"))
                .header("prefer", format!("wait={wait}"))
                .send(),
        )
    };

    let started = Instant::now();
    let waits = tokio::spawn(futures_util::future::join_all([
        receive("3"),
        receive("3"),
        read("3"),
        create("3"),
        get_task("3"),
    ]));
    // Time for the five to reach their wait.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let refused =
        futures_util::future::join_all([receive("2"), read("2"), create("2"), get_task("2")]).await;
    for response in refused {
        let response = response.unwrap();
        let url = response.url().clone();
        let headers = common::assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable - 5 requests are waiting already, the most this node admits",
        )
        .await;
        assert_eq!(headers.get("retry-after").unwrap(), "1", "{url}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the refusals waited"
    );
    let info = app.queue_info("work").await;
    assert_eq!(info["ready"], 2, "a refused create created a task: {info}");

    let now = receive("0").await.unwrap();
    assert_eq!(now.status(), StatusCode::OK, "a receive that does not wait");
    app.push("jobs", json!("for a waiter")).await;

    let results: Vec<_> = waits
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 202, 200], "the five waits");
    let mut delivered = 0;
    for response in results.into_iter().take(2) {
        let body: Value = response.json().await.unwrap();
        delivered += body["messages"].as_array().unwrap().len();
    }
    assert_eq!(delivered, 1, "the push went to one of the waiting receives");

    let again = receive("0.5").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "the slots came back");
}

/// At shutdown, a request still busy after drain_timeout (a forward to an upstream
/// that never answers, which its route allows a minute) does not hold the server
/// up: its connection is closed and the server stops.
async fn shutdown_closes_connections_still_busy_after_drain_timeout() {
    // Connections to it complete in the kernel's backlog and are never answered.
    let silent_upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = format!(
        r#"
[[routes]]
method = "GET"
path = "/hang"
public = true
forward = {{ url = "http://{}/hang", timeout = "60s" }}
"#,
        silent_upstream.local_addr().unwrap()
    );
    #[derive(serde::Deserialize)]
    struct File {
        routes: Vec<toml::Spanned<hopper::routes::RouteSpec>>,
    }
    let file: File = toml::from_str(&text).unwrap();
    let store = Backend::Sqlite.isolated_store();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store.url.clone(),
        routes: hopper::routes::parse(file.routes, &text).unwrap(),
        limits: Limits {
            drain_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Config::default()
    };
    let server = hopper::server::start(config).await.unwrap();
    let hung = tokio::spawn(
        reqwest::Client::new()
            .get(format!("http://{}/hang", server.addr))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!hung.is_finished(), "the forward did not hang");
    let started = Instant::now();
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("shutdown waited for the hung request")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "stopped after {took:?}, before drain_timeout"
    );
    let answer = hung.await.unwrap();
    assert!(
        answer.is_err(),
        "the hung request's connection was closed: {answer:?}"
    );
}

//! The compiled `hopper` binary under abuse: a SIGKILL in the middle of concurrent
//! pushes (or stream appends and ACKs, or task creates and completions) loses
//! nothing that was acknowledged, and a
//! SIGTERM drains in-flight requests and exits 0. Each test runs the binary on its own isolated store, once
//! per storage backend (`sqlite::…`, `postgres::…`; see `common::trials!`).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{trials, Backend, IsolatedStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

trials! {
    each_backend {
        acknowledged_pushes_survive_sigkill: multi_thread(4),
        sigterm_drains_in_flight_requests_and_exits_zero: multi_thread(4),
        acknowledged_events_owners_and_offsets_survive_sigkill: multi_thread(4),
        accepted_tasks_and_their_results_survive_sigkill: multi_thread(4),
    }
    redis_backend {
        the_start_up_log_warns_when_a_2xx_on_redis_can_be_lost: multi_thread(2),
    }
}

const ADMIN_SECRET: &str = "durability-admin-secret-42";
/// Concurrent producers: enough that some pushes are always in flight when the process dies.
const PRODUCERS: usize = 16;

/// A `hopper serve` child process; killed when dropped so a failing test leaves none behind.
struct HopperProcess {
    child: Child,
    base_url: String,
    log_path: std::path::PathBuf,
}

impl HopperProcess {
    /// Starts the binary on `store` (its log in the store's directory) and waits until
    /// `/health` answers.
    async fn start(store: &IsolatedStore, client: &reqwest::Client) -> HopperProcess {
        HopperProcess::start_on(&store.url, store.dir.path(), client).await
    }

    /// Starts the binary on the store at `url`, its log in `dir`.
    async fn start_on(url: &str, dir: &std::path::Path, client: &reqwest::Client) -> HopperProcess {
        let port = free_port();
        let log_path = dir.join(format!("hopper-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hopper"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(url)
            .env("HOPPER_ADMIN_SECRET", ADMIN_SECRET)
            .env("RUST_LOG", "warn")
            .env_remove("HOPPER_CONFIG")
            .env_remove("HOPPER_LISTEN")
            .env_remove("HOPPER_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot run the hopper binary");
        let mut process = HopperProcess {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
        };
        process.wait_until_healthy(client).await;
        process
    }

    async fn wait_until_healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hopper exited early with {status}: {}", self.log());
            }
            let health = client
                .get(format!("{}/health", self.base_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(health, Ok(ref r) if r.status() == StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hopper not healthy within 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or drain anything.
    fn kill_hard(&mut self) {
        self.child.kill().expect("cannot SIGKILL hopper");
        self.child.wait().expect("cannot reap hopper");
    }

    /// Polls for the exit of the process for up to `timeout`.
    async fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for HopperProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port nothing listens on right now (the OS picks it; the listener is closed at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Pushes to `queue` from [`PRODUCERS`] tasks until `stop` is set or the server goes away.
/// Returns the ids of every push answered with a 2xx, and how many non-2xx answers came.
fn start_producers(
    client: &reqwest::Client,
    base_url: &str,
    queue: &str,
    stop: &Arc<AtomicBool>,
    in_flight: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, usize)>> {
    (0..PRODUCERS)
        .map(|producer| {
            let client = client.clone();
            let url = format!("{base_url}/api/v1/queues/{queue}/messages");
            let stop = stop.clone();
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let sent = client
                        .post(&url)
                        .basic_auth("admin", Some(ADMIN_SECRET))
                        .json(&json!({ "producer": producer, "n": n }))
                        .send()
                        .await;
                    let answer = match sent {
                        Ok(response) if response.status().is_success() => {
                            response.json::<Value>().await.map(Some)
                        }
                        Ok(_) => Ok(None),
                        Err(error) => Err(error),
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match answer {
                        Ok(Some(answer)) => {
                            acknowledged.push(answer["id"].as_str().expect("an id").to_owned())
                        }
                        Ok(None) => refused += 1,
                        Err(_) => break,
                    }
                }
                (acknowledged, refused)
            })
        })
        .collect()
}

async fn join_producers(
    producers: Vec<tokio::task::JoinHandle<(Vec<String>, usize)>>,
) -> (Vec<String>, usize) {
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for producer in producers {
        let (ids, refusals) = producer.await.unwrap();
        acknowledged.extend(ids);
        refused += refusals;
    }
    (acknowledged, refused)
}

/// Pops `queue` empty, 1000 at a time; returns the ids in the order they came.
async fn pop_everything(client: &reqwest::Client, base_url: &str, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let response = client
            .post(format!("{base_url}/api/v1/queues/{queue}/pop?count=1000"))
            .basic_auth("admin", Some(ADMIN_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let messages = body["messages"].as_array().unwrap();
        if messages.is_empty() {
            return ids;
        }
        ids.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
    }
}

/// Every acknowledged id is among `found`, and `found` holds no id twice.
fn assert_nothing_acknowledged_was_lost(acknowledged: &[String], found: &[String]) {
    let distinct: HashSet<&String> = found.iter().collect();
    assert_eq!(
        distinct.len(),
        found.len(),
        "a message was handed out twice by pop"
    );
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !distinct.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged pushes were lost, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}

async fn acknowledged_pushes_survive_sigkill(backend: Backend) {
    let store = backend.isolated_store();
    let client = http_client();
    let mut server = HopperProcess::start(&store, &client).await;
    // The first request verifies the admin's chosen secret with argon2 (slow in a
    // debug build); done once here, so the producers then push at full speed.
    let first = client
        .post(format!("{}/api/v1/queues/crash/messages", server.base_url))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!("first"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_id = first.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let producers = start_producers(&client, &server.base_url, "crash", &stop, &in_flight);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight_at_kill = in_flight.load(Ordering::SeqCst);
    server.kill_hard();
    stop.store(true, Ordering::Relaxed);
    let (mut acknowledged, refused) = join_producers(producers).await;
    acknowledged.push(first_id);
    assert_eq!(refused, 0, "pushes were refused before the crash");
    assert!(
        in_flight_at_kill > 0,
        "no push was in flight at the SIGKILL"
    );
    assert!(
        acknowledged.len() >= PRODUCERS,
        "too few pushes in a second to test anything: {}",
        acknowledged.len()
    );

    let server = HopperProcess::start(&store, &client).await;
    let found = pop_everything(&client, &server.base_url, "crash").await;
    eprintln!(
        "{}: SIGKILL after 1 s with {in_flight_at_kill} pushes in flight: {} acknowledged, {} messages found after restart",
        backend.name(),
        acknowledged.len(),
        found.len()
    );
    assert_nothing_acknowledged_was_lost(&acknowledged, &found);
    assert!(
        found.len() <= acknowledged.len() + PRODUCERS,
        "{} messages found, {} acknowledged: at most one unacknowledged push per producer can have committed",
        found.len(),
        acknowledged.len()
    );
}

async fn sigterm_drains_in_flight_requests_and_exits_zero(backend: Backend) {
    let store = backend.isolated_store();
    let client = http_client();
    let mut server = HopperProcess::start(&store, &client).await;

    let put = client
        .put(format!("{}/api/v1/queues/idle", server.base_url))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let long_poll = tokio::spawn({
        let request = client
            .post(format!(
                "{}/api/v1/queues/idle/receive?wait=30",
                server.base_url
            ))
            .basic_auth("admin", Some(ADMIN_SECRET));
        async move {
            let started = Instant::now();
            let response = request.send().await;
            (response, started.elapsed())
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let producers = start_producers(&client, &server.base_url, "drain", &stop, &in_flight);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        in_flight.load(Ordering::SeqCst) > 0,
        "no push in flight at the SIGTERM"
    );
    let signalled = Command::new("kill")
        .arg("-TERM")
        .arg(server.pid().to_string())
        .status()
        .expect("cannot run kill");
    assert!(signalled.success());
    let signalled_at = Instant::now();

    let status = server.wait_for_exit(Duration::from_secs(15)).await;
    let exit_took = signalled_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let status = status.unwrap_or_else(|| panic!("still running 15 s after SIGTERM"));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM: {}",
        server.log()
    );
    assert!(
        exit_took < Duration::from_secs(10),
        "shutdown took {exit_took:?}"
    );

    let (answer, waited) = long_poll.await.unwrap();
    let answer = answer.expect("the long-poll in flight must get an answer, not a reset");
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body, json!({"messages": []}));
    assert!(
        waited < Duration::from_secs(15),
        "the long-poll held shutdown for {waited:?}"
    );

    let (acknowledged, _) = join_producers(producers).await;
    assert!(!acknowledged.is_empty(), "no push went through");

    let server = HopperProcess::start(&store, &client).await;
    let found = pop_everything(&client, &server.base_url, "drain").await;
    eprintln!(
        "{}: SIGTERM: {} pushes acknowledged, {} messages found after restart, exit after {exit_took:?}",
        backend.name(),
        acknowledged.len(),
        found.len()
    );
    assert_nothing_acknowledged_was_lost(&acknowledged, &found);
}

// ---------------------------------------------------------------------------
// Streams: appends, owner and consumer offsets across a SIGKILL
// ---------------------------------------------------------------------------

/// Concurrent appenders, all as the one producer that owns the stream.
const APPENDERS: usize = 8;
const STREAM: &str = "orders";
const OWNER: &str = "shop";
const CONSUMER: &str = "c1";
const EVENT_NAMES: [&str; 2] = ["OrderPlaced", "OrderShipped"];
const LOCKED: &str = "Locked - Second writers not allowed";

/// A seed-004 event named `name`, told apart by its payload.
fn stream_event(name: &str, appender: usize, n: u64) -> Value {
    json!({
        "event": {"name": name, "version": 1},
        "system": {
            "id": "alv123",
            "name": "codello alvine",
            "time": "2017-09-06 13:58:12",
            "timezone": "Europe/Berlin"
        },
        "trigger": {"type": "system", "name": "/path/to/script.php"},
        "payload": {"appender": appender, "n": n}
    })
}

/// `POST /api/v1/streams/{STREAM}/events` as `producer`.
async fn try_append_event(
    client: &reqwest::Client,
    base_url: &str,
    producer: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base_url}/api/v1/streams/{STREAM}/events"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("content-type", "application/json; charset=utf-8")
        .header("X-Producer-ID", producer)
        .body(body.to_string())
        .send()
        .await
}

/// The numeric id of a 200 append answer (a JSON string such as `"17"`).
async fn event_id_of(response: reqwest::Response) -> u64 {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "append answered {body}");
    body.as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an append answers with the id as a JSON string, got {body}"))
}

/// `POST /api/v1/streams/{STREAM}/events/{id}` with `action=ACK` as [`CONSUMER`].
async fn try_ack_event(
    client: &reqwest::Client,
    base_url: &str,
    id: u64,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base_url}/api/v1/streams/{STREAM}/events/{id}"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Consumer-ID", CONSUMER)
        .body("action=ACK")
        .send()
        .await
}

/// `GET /api/v1/streams/{STREAM}/events?<query>` as `consumer`; asserts 200 and
/// returns the events.
async fn read_events(
    client: &reqwest::Client,
    base_url: &str,
    consumer: &str,
    query: &str,
) -> Vec<Value> {
    let response = client
        .get(format!("{base_url}/api/v1/streams/{STREAM}/events?{query}"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("X-Consumer-ID", consumer)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "read {query}: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("a read answers with a JSON array, got {body}"))
        .clone()
}

/// The numeric `id` of an event as a read returns it.
fn id_in(event: &Value) -> u64 {
    event["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("an event carries its id as a string: {event}"))
}

/// Every event named `name`, replayed with `after=` 1000 at a time (which moves no
/// offset), by id.
async fn replay_all(client: &reqwest::Client, base_url: &str, name: &str) -> BTreeMap<u64, Value> {
    let mut found = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = read_events(
            client,
            base_url,
            "auditor",
            &format!("eventName={name}&limit=1000&after={after}"),
        )
        .await;
        let Some(last) = page.last() else {
            return found;
        };
        after = id_in(last);
        for event in page {
            let id = id_in(&event);
            assert_eq!(
                event["event"]["name"], name,
                "a replay of {name} returned {event}"
            );
            assert!(
                found.insert(id, event).is_none(),
                "event {id} replayed twice"
            );
        }
    }
}

/// What the appenders got: each event answered 200, by id, with its name and body.
type Appended = Vec<(u64, &'static str, Value)>;

/// Appends to [`STREAM`] as [`OWNER`] from [`APPENDERS`] tasks, names alternating,
/// until `stop` is set or the server goes away. Each 200 is also published in
/// `published` (id and name index) for the acker. Returns what each task got 200 for,
/// and how many other answers came.
fn start_appenders(
    client: &reqwest::Client,
    base_url: &str,
    stop: &Arc<AtomicBool>,
    in_flight: &Arc<AtomicUsize>,
    published: &Arc<Mutex<[Vec<u64>; 2]>>,
) -> Vec<tokio::task::JoinHandle<(Appended, usize)>> {
    (0..APPENDERS)
        .map(|appender| {
            let client = client.clone();
            let base_url = base_url.to_owned();
            let stop = stop.clone();
            let in_flight = in_flight.clone();
            let published = published.clone();
            tokio::spawn(async move {
                let mut appended = Vec::new();
                let mut refused = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let which = (appender + n as usize) % 2;
                    let body = stream_event(EVENT_NAMES[which], appender, n);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let answer = match try_append_event(&client, &base_url, OWNER, &body).await {
                        Ok(response) if response.status() == StatusCode::OK => response
                            .json::<Value>()
                            .await
                            .map(|id| Some(id.as_str().and_then(|id| id.parse::<u64>().ok()))),
                        Ok(_) => Ok(None),
                        Err(error) => Err(error),
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match answer {
                        Ok(Some(id)) => {
                            let id = id.expect("a 200 append answers with the id as a string");
                            published.lock().unwrap()[which].push(id);
                            appended.push((id, EVENT_NAMES[which], body));
                        }
                        Ok(None) => refused += 1,
                        Err(_) => break,
                    }
                }
                (appended, refused)
            })
        })
        .collect()
}

/// What the acker did, per event name: the highest id whose ACK got 200 `"OK"`, and
/// the highest id it sent an ACK for (which may have committed without an answer).
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    ok: Option<u64>,
    attempted: Option<u64>,
}

/// Acknowledges, as [`CONSUMER`], names taking turns, the median event appended so far
/// of that name, until `stop` is set or the server goes away. Returns what it did per
/// name, and how many ACKs got another answer than 200 `"OK"`.
fn start_acker(
    client: &reqwest::Client,
    base_url: &str,
    stop: &Arc<AtomicBool>,
    published: &Arc<Mutex<[Vec<u64>; 2]>>,
) -> tokio::task::JoinHandle<([Acked; 2], Vec<String>)> {
    let client = client.clone();
    let base_url = base_url.to_owned();
    let stop = stop.clone();
    let published = published.clone();
    tokio::spawn(async move {
        let mut acked = [Acked::default(); 2];
        let mut failures = Vec::new();
        let mut turn = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            turn += 1;
            let which = turn % 2;
            let id = {
                let published = published.lock().unwrap();
                let ids = &published[which];
                if ids.is_empty() {
                    continue;
                }
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                sorted[sorted.len() / 2]
            };
            acked[which].attempted = acked[which].attempted.max(Some(id));
            let Ok(response) = try_ack_event(&client, &base_url, id).await else {
                break;
            };
            let status = response.status();
            match response.json::<Value>().await {
                Ok(body) if status == StatusCode::OK && body == json!("OK") => {
                    acked[which].ok = acked[which].ok.max(Some(id));
                }
                Ok(body) => failures.push(format!("ACK {id}: {status} {body}")),
                Err(_) => break,
            }
        }
        (acked, failures)
    })
}

async fn acknowledged_events_owners_and_offsets_survive_sigkill(backend: Backend) {
    let store = backend.isolated_store();
    let client = http_client();
    let mut server = HopperProcess::start(&store, &client).await;
    // Creates the stream, owned by OWNER, and pays the argon2 verification of the
    // admin's secret once, so the appenders then run at full speed.
    let first_body = stream_event(EVENT_NAMES[0], usize::MAX, 0);
    let first = try_append_event(&client, &server.base_url, OWNER, &first_body)
        .await
        .unwrap();
    assert_eq!(event_id_of(first).await, 1, "the first event of a stream");

    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let published = Arc::new(Mutex::new([vec![1], Vec::new()]));
    let appenders = start_appenders(&client, &server.base_url, &stop, &in_flight, &published);
    let acker = start_acker(&client, &server.base_url, &stop, &published);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight_at_kill = in_flight.load(Ordering::SeqCst);
    server.kill_hard();
    stop.store(true, Ordering::Relaxed);

    let mut appended: Appended = vec![(1, EVENT_NAMES[0], first_body)];
    let mut refused = 0;
    for appender in appenders {
        let (events, refusals) = appender.await.unwrap();
        appended.extend(events);
        refused += refusals;
    }
    let (acked, ack_failures) = acker.await.unwrap();
    assert_eq!(
        refused, 0,
        "appends of the owner were refused before the crash"
    );
    assert!(
        ack_failures.is_empty(),
        "ACKs of appended events failed before the crash: {ack_failures:?}"
    );
    assert!(
        in_flight_at_kill > 0,
        "no append was in flight at the SIGKILL"
    );
    assert!(
        appended.len() >= 4 * APPENDERS,
        "too few appends in a second to test anything: {}",
        appended.len()
    );
    for (which, name) in EVENT_NAMES.iter().enumerate() {
        assert!(
            acked[which].ok.is_some(),
            "no ACK of {name} got through before the crash: {acked:?}"
        );
    }
    let mut answered: HashMap<u64, (&str, &Value)> = HashMap::new();
    for (id, name, body) in &appended {
        assert!(
            answered.insert(*id, (name, body)).is_none(),
            "two appends were answered with id {id}"
        );
    }

    let server = HopperProcess::start(&store, &client).await;
    let base_url = &server.base_url;

    // Every event answered 200 is there, with its exact body; nothing twice.
    let mut by_name = Vec::new();
    let mut all: BTreeMap<u64, &Value> = BTreeMap::new();
    for name in EVENT_NAMES {
        by_name.push(replay_all(&client, base_url, name).await);
    }
    for events in &by_name {
        for (id, event) in events {
            assert!(
                all.insert(*id, event).is_none(),
                "event {id} replayed under both names"
            );
        }
    }
    let lost: Vec<u64> = answered
        .keys()
        .copied()
        .filter(|id| !all.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged appends were lost, e.g. {:?}",
        lost.len(),
        answered.len(),
        &lost[..lost.len().min(10)]
    );
    for (id, (name, body)) in &answered {
        let mut expected = (*body).clone();
        expected["id"] = json!(id.to_string());
        assert_eq!(all[id], &expected, "event {id} ({name}) after the restart");
    }
    let unanswered = all.len() - answered.len();
    assert!(
        unanswered <= APPENDERS,
        "{} events found, {} acknowledged: at most one unanswered append per appender can have committed",
        all.len(),
        answered.len()
    );
    let last = *all.keys().next_back().unwrap();
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "event ids are consecutive from 1 after the restart"
    );

    // The stream's owner and extent, and c1's offsets: at least the highest ACK that
    // got "OK", at most the highest ACK sent.
    let response = client
        .get(format!("{base_url}/api/v1/streams/{STREAM}"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["owner"], OWNER, "{info}");
    assert_eq!(info["length"], json!(all.len()), "{info}");
    assert_eq!(info["first_event_id"], "1", "{info}");
    assert_eq!(info["last_event_id"], json!(last.to_string()), "{info}");
    for (which, name) in EVENT_NAMES.iter().enumerate() {
        let entry = info["consumers"]
            .as_array()
            .unwrap_or_else(|| panic!("no consumers in {info}"))
            .iter()
            .find(|c| c["consumer"] == CONSUMER && c["event_name"] == *name)
            .unwrap_or_else(|| panic!("the offset of {CONSUMER} for {name} is gone: {info}"));
        let offset: u64 = entry["offset"]
            .as_str()
            .and_then(|o| o.parse().ok())
            .unwrap_or_else(|| panic!("offset of {entry}"));
        let Acked { ok, attempted } = acked[which];
        assert!(
            Some(offset) >= ok && Some(offset) <= attempted,
            "{CONSUMER}'s offset for {name} is {offset}; the highest ACK answered OK was {ok:?}, the highest sent {attempted:?}"
        );
        let tail: Vec<u64> = by_name[which]
            .keys()
            .copied()
            .filter(|id| *id > offset)
            .collect();
        assert_eq!(
            entry["lag"],
            json!(tail.len()),
            "lag of {CONSUMER} for {name}: {entry}"
        );

        // A plain read (no after=) starts past the offset.
        let read = read_events(
            &client,
            base_url,
            CONSUMER,
            &format!("eventName={name}&limit=1000"),
        )
        .await;
        let read_ids: Vec<u64> = read.iter().map(id_in).collect();
        assert!(
            read_ids.iter().all(|id| Some(*id) > ok),
            "{CONSUMER} read {name} events at or before its acknowledged {ok:?}: {:?}",
            &read_ids[..read_ids.len().min(10)]
        );
        assert_eq!(
            read_ids,
            tail[..tail.len().min(1000)],
            "{CONSUMER} reads exactly the {name} events after its offset {offset}"
        );
    }

    // The owner survived: a second producer is locked out and appends nothing, the
    // original one goes on with the next id.
    let intruder = try_append_event(
        &client,
        base_url,
        "intruder",
        &stream_event(EVENT_NAMES[1], 0, 0),
    )
    .await
    .unwrap();
    assert_eq!(intruder.status(), StatusCode::LOCKED);
    assert_eq!(intruder.json::<Value>().await.unwrap(), json!(LOCKED));
    let next = try_append_event(
        &client,
        base_url,
        OWNER,
        &stream_event(EVENT_NAMES[1], 0, 1),
    )
    .await
    .unwrap();
    assert_eq!(
        event_id_of(next).await,
        last + 1,
        "the owner appends after the restart"
    );

    eprintln!(
        "{}: stream SIGKILL after 1 s with {in_flight_at_kill} appends in flight: {} answered, {} events found, offsets {:?}",
        backend.name(),
        answered.len(),
        all.len(),
        acked
    );
}

/// Task creators and workers running at once.
const TASK_CREATORS: usize = 8;
const TASK_WORKERS: usize = 4;

/// Creates tasks on `queue` (answered 202 at once) until `stop`; returns the ids of
/// those answered 2xx, with the `n` each carried.
fn start_task_creators(
    client: &reqwest::Client,
    base_url: &str,
    queue: &str,
    stop: &Arc<AtomicBool>,
    in_flight: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, u64)>>> {
    (0..TASK_CREATORS)
        .map(|creator| {
            let (client, stop, in_flight) = (client.clone(), stop.clone(), in_flight.clone());
            let url = format!("{base_url}/api/v1/tasks/{queue}");
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                let mut n = creator as u64 * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let sent = client
                        .post(&url)
                        .basic_auth("admin", Some(ADMIN_SECRET))
                        .header("prefer", "respond-async")
                        .json(&json!({ "n": n }))
                        .send()
                        .await;
                    let answer = match sent {
                        Ok(response) => {
                            assert!(
                                response.status().is_success(),
                                "a create was refused: {}",
                                response.status()
                            );
                            response.json::<Value>().await
                        }
                        Err(error) => Err(error),
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match answer {
                        Ok(task) => accepted.push((task["id"].as_str().unwrap().to_owned(), n)),
                        Err(_) => break,
                    }
                }
                accepted
            })
        })
        .collect()
}

/// Receives task messages and completes each with `{"double": 2n}`, adding to
/// `completed` the ids whose completion was answered 200; without `stop`, until the
/// queue is empty.
async fn work_tasks(
    client: &reqwest::Client,
    base_url: &str,
    queue: &str,
    stop: Option<&AtomicBool>,
    completed: &mut Vec<String>,
) -> Result<(), reqwest::Error> {
    loop {
        if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let response = client
            // Leases of 1 s: tasks leased when the process died come back soon after;
            // draining waits out one lease before it calls the queue empty.
            .post(format!(
                "{base_url}/api/v1/queues/{queue}/receive?count=10&lease=1&wait={}",
                if stop.is_some() { "0.2" } else { "2" }
            ))
            .basic_auth("admin", Some(ADMIN_SECRET))
            .send()
            .await?;
        let body: Value = response.json().await?;
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() && stop.is_none() {
            return Ok(());
        }
        for message in messages {
            let id = message["body"]["task_id"].as_str().unwrap().to_owned();
            let n = message["body"]["payload"]["n"].as_u64().unwrap();
            let response = client
                .post(format!("{base_url}/api/v1/tasks/{id}/complete"))
                .basic_auth("admin", Some(ADMIN_SECRET))
                .json(&json!({ "receipt": message["receipt"], "result": { "double": 2 * n } }))
                .send()
                .await?;
            assert_eq!(response.status(), StatusCode::OK, "completing {id}");
            completed.push(id);
        }
    }
}

async fn accepted_tasks_and_their_results_survive_sigkill(backend: Backend) {
    let store = backend.isolated_store();
    let client = http_client();
    let mut server = HopperProcess::start(&store, &client).await;
    // Creates the queue and pays the argon2 verification of the admin's secret once.
    let first = client
        .post(format!("{}/api/v1/tasks/work", server.base_url))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("prefer", "respond-async")
        .json(&json!({ "n": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first_id = first.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let creators = start_task_creators(&client, &server.base_url, "work", &stop, &in_flight);
    let workers: Vec<_> = (0..TASK_WORKERS)
        .map(|_| {
            let (client, base_url, stop) = (client.clone(), server.base_url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut completed = Vec::new();
                // Ends at the SIGKILL: a request then fails, and what was completed so far counts.
                let _ = work_tasks(&client, &base_url, "work", Some(&stop), &mut completed).await;
                completed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight_at_kill = in_flight.load(Ordering::SeqCst);
    server.kill_hard();
    stop.store(true, Ordering::Relaxed);
    let mut accepted = vec![(first_id, 0)];
    for creator in creators {
        accepted.extend(creator.await.unwrap());
    }
    let mut completed = HashSet::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            assert!(completed.insert(id.clone()), "task {id} completed twice");
        }
    }
    assert!(
        in_flight_at_kill > 0,
        "no create was in flight at the SIGKILL"
    );
    assert!(
        accepted.len() >= TASK_CREATORS && !completed.is_empty(),
        "too little happened in a second to test anything: {} accepted, {} completed",
        accepted.len(),
        completed.len()
    );

    let server = HopperProcess::start(&store, &client).await;
    let base_url = &server.base_url;
    // Every completion answered 200 kept its result; the rest are still to do, and
    // their messages are still queued: working the queue dry finishes every task.
    let mut pending = 0;
    for (id, n) in &accepted {
        let response = client
            .get(format!("{base_url}/api/v1/tasks/{id}"))
            .basic_auth("admin", Some(ADMIN_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "accepted task {id} is gone"
        );
        let task: Value = response.json().await.unwrap();
        if completed.contains(id) {
            assert_eq!(task["status"], "succeeded", "{task}");
            assert_eq!(task["result"], json!({ "double": 2 * n }), "{task}");
        } else if task["status"] != "succeeded" {
            pending += 1;
        }
    }
    let mut finished_now = Vec::new();
    work_tasks(&client, base_url, "work", None, &mut finished_now)
        .await
        .unwrap();
    let finished_now: HashSet<String> = finished_now.into_iter().collect();
    for (id, n) in &accepted {
        let task: Value = client
            .get(format!("{base_url}/api/v1/tasks/{id}"))
            .basic_auth("admin", Some(ADMIN_SECRET))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"], json!({ "double": 2 * n }), "{task}");
        assert!(
            !(completed.contains(id) && finished_now.contains(id)),
            "task {id} was handed out again after its completion was answered"
        );
    }
    eprintln!(
        "{}: tasks SIGKILL after 1 s with {in_flight_at_kill} creates in flight: {} accepted, {} completed before, {pending} still to do after the restart, {} finished after",
        backend.name(),
        accepted.len(),
        completed.len(),
        finished_now.len()
    );
    assert!(
        finished_now.len() >= pending,
        "{pending} unfinished tasks but only {} messages left to work",
        finished_now.len()
    );
}

/// What Hopper logs at start and `/health` shows, on a Redis that keeps nothing,
/// one that fsyncs once a second, and one that fsyncs every write: a warning in the
/// first two cases, naming the setting, and none in the last. On the cluster (its
/// masters keep no append-only file), the warning too.
async fn the_start_up_log_warns_when_a_2xx_on_redis_can_be_lost(backend: Backend) {
    const WARNING: &str = "acknowledged writes can be lost";
    let client = http_client();
    let started = |url: String, dir: std::path::PathBuf| {
        let client = client.clone();
        async move {
            let mut hopper = HopperProcess::start_on(&url, &dir, &client).await;
            let health: Value = client
                .get(format!("{}/health", hopper.base_url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            hopper.kill_hard();
            (hopper.log(), health["store"]["durability"].clone())
        }
    };
    if let Backend::RedisCluster { .. } = backend {
        let store = backend.isolated_store();
        let (log, durability) = started(store.url.clone(), store.dir.path().into()).await;
        assert_eq!(durability, "none");
        assert!(
            log.contains(WARNING) && log.contains("appendonly no"),
            "{log}"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (settings, durability, warning) in [
        (&["--appendonly", "no"][..], "none", Some("appendonly no")),
        (
            &["--appendonly", "yes", "--appendfsync", "everysec"][..],
            "fsync-everysec",
            Some("appendfsync everysec"),
        ),
        (
            &["--appendonly", "yes", "--appendfsync", "always"][..],
            "fsync-always",
            None,
        ),
    ] {
        let redis = common::redis_cluster::OwnRedis::start(settings);
        let url = format!("redis://127.0.0.1:{}/0", redis.port());
        let (log, shown) = started(url, dir.path().into()).await;
        assert_eq!(shown, durability, "{settings:?}: {log}");
        match warning {
            Some(setting) => assert!(
                log.contains(WARNING) && log.contains(setting),
                "{settings:?}: {log}"
            ),
            None => assert!(!log.contains(WARNING), "{settings:?}: {log}"),
        }
    }
}

//! Several `hopper serve` processes on one shared store (a PostgreSQL database, a
//! Redis server, a Redis Cluster) behave as one server (queues, clients, streams,
//! tasks, deliveries), and a PostgreSQL outage gives 503s that heal without a restart.
//!
//! Runs on each shared backend that is configured (`HOPPER_TEST_POSTGRES`,
//! `HOPPER_TEST_REDIS`, `HOPPER_TEST_REDIS_CLUSTER`; `.ci/run` sets them); the others'
//! tests are reported ignored (see `common::trials!`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{trials, Backend, Fixture, IsolatedStore};
use serde_json::{json, Value};

trials! {
    shared_backend {
        two_nodes_share_queues_and_deliver_each_message_once: multi_thread(2),
        long_poll_on_one_node_wakes_on_a_push_to_the_other: multi_thread(2),
        streams_are_consistent_across_nodes: multi_thread(2),
        a_task_waited_on_at_one_node_is_answered_by_a_worker_on_the_other: multi_thread(2),
        two_nodes_share_a_queue_s_deliveries: multi_thread(2),
        a_token_from_one_node_works_on_the_other_until_its_client_is_deleted: multi_thread(2),
    }
    postgres {
        postgres_outage_gives_503_and_heals_without_restart: multi_thread(2),
    }
}

const ADMIN_SECRET: &str = "nodes-admin-secret-0123456789";

/// What each test receives: a store of its own on a backend several nodes can share
/// (PostgreSQL, Redis, a Redis Cluster), removed when the test ends. The outage test,
/// which starts a PostgreSQL of its own to stop it, takes it only to run when the
/// PostgreSQL tests do.
struct Shared {
    /// [`IsolatedStore::url`].
    url: String,
    _store: IsolatedStore,
}

impl Fixture for Shared {
    async fn start(backend: Backend) -> Self {
        assert!(
            !matches!(backend, Backend::Sqlite),
            "the multi-node tests are registered for shared stores only"
        );
        let store = backend.isolated_store();
        Shared {
            url: store.url.clone(),
            _store: store,
        }
    }
}

/// A `hopper serve` child process; killed when dropped.
struct Node {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_node(store: &str) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_hopper"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
        ])
        .env("HOPPER_ADMIN_SECRET", ADMIN_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the hopper binary starts");
    let node = Node {
        child,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = node.http.get(format!("{}/health", node.base)).send().await {
            if response.status().is_success() {
                return node;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node on port {port} did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Node {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/api/v1{path}", self.base))
            .basic_auth("admin", Some(ADMIN_SECRET))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/api/v1{path}", self.base))
            .basic_auth("admin", Some(ADMIN_SECRET))
    }

    async fn push(&self, queue: &str, body: Value) -> reqwest::Response {
        self.post(&format!("/queues/{queue}/messages"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

async fn two_nodes_share_queues_and_deliver_each_message_once(shared: Shared) {
    let store = shared.url.clone();
    let nodes = Arc::new(vec![start_node(&store).await, start_node(&store).await]);
    let put = nodes[0]
        .http
        .put(format!("{}/api/v1/queues/work", nodes[0].base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!({"lease": 60}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    const MESSAGES: usize = 10_000;
    const PRODUCERS: usize = 8;
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let nodes = nodes.clone();
        producers.push(tokio::spawn(async move {
            let node = &nodes[producer % 2];
            let mut ids = Vec::new();
            for n in (producer..MESSAGES).step_by(PRODUCERS) {
                let response = node.push("work", json!({ "n": n })).await;
                assert_eq!(response.status(), 201);
                let id: Value = response.json().await.unwrap();
                ids.push(id["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }

    // Each receipt handed out, by message id: a second hand-out while the first
    // lease (60 s) is live would mean two consumers hold one message.
    let held: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut consumers = Vec::new();
    for consumer in 0..4 {
        let (nodes, held, acked) = (nodes.clone(), held.clone(), acked.clone());
        consumers.push(tokio::spawn(async move {
            let node = &nodes[consumer % 2];
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if acked.lock().unwrap().len() >= MESSAGES || Instant::now() > deadline {
                    return;
                }
                let response = node
                    .post("/queues/work/receive?count=50&wait=1")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                let messages = body["messages"].as_array().unwrap().clone();
                if messages.is_empty() {
                    continue;
                }
                let mut receipts = Vec::new();
                for message in &messages {
                    let id = message["id"].as_str().unwrap().to_owned();
                    *held.lock().unwrap().entry(id).or_default() += 1;
                    receipts.push(message["receipt"].clone());
                }
                let response = node
                    .post("/queues/work/ack")
                    .json(&json!({ "receipts": receipts }))
                    .send()
                    .await
                    .unwrap();
                let settled: Value = response.json().await.unwrap();
                assert_eq!(
                    settled["acked"],
                    messages.len(),
                    "every receipt of a live lease acks: {settled}"
                );
                acked.lock().unwrap().extend(
                    messages
                        .iter()
                        .map(|m| m["id"].as_str().unwrap().to_owned()),
                );
            }
        }));
    }

    let mut pushed = Vec::new();
    for producer in producers {
        pushed.extend(producer.await.unwrap());
    }
    for consumer in consumers {
        consumer.await.unwrap();
    }
    assert_eq!(pushed.len(), MESSAGES);
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    let mut expected = pushed.clone();
    expected.sort();
    assert_eq!(
        acked, expected,
        "every pushed message is acked exactly once"
    );
    let handed_twice = held.lock().unwrap().values().filter(|&&n| n > 1).count();
    assert_eq!(handed_twice, 0, "no message was handed to two consumers");
    let info: Value = nodes[1]
        .get("/queues/work")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (info["ready"].as_u64(), info["leased"].as_u64()),
        (Some(0), Some(0)),
        "{info}"
    );
}

async fn long_poll_on_one_node_wakes_on_a_push_to_the_other(shared: Shared) {
    let store = shared.url.clone();
    let (a, b) = (start_node(&store).await, start_node(&store).await);
    assert_eq!(a.push("wake", json!({"warm": true})).await.status(), 201);
    let drained = a.post("/queues/wake/pop").send().await.unwrap();
    assert_eq!(drained.status(), 200);

    let started = Instant::now();
    let waiting = tokio::spawn({
        let request = a.post("/queues/wake/receive?wait=20");
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.push("wake", json!({"from": "b"})).await.status(), 201);
    let received = waiting.await.unwrap();
    assert_eq!(received["messages"][0]["body"], json!({"from": "b"}));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the other node's push, not by the 20 s wait: {:?}",
        started.elapsed()
    );

    // A client deleted through one node is refused by the other at once.
    let created: Value = a
        .post("/admin/clients")
        .json(&json!({"id": "short-lived", "grants": ["queue:*:*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let as_client = |node: &Node| {
        node.http
            .get(format!("{}/api/v1/queues/wake", node.base))
            .basic_auth("short-lived", Some(secret.clone()))
    };
    assert_eq!(as_client(&b).send().await.unwrap().status(), 200);
    let deleted = a
        .http
        .delete(format!("{}/api/v1/admin/clients/short-lived", a.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let status = as_client(&b).send().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other node still accepts a deleted client: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Grants changed and a secret rotated through one node apply on the other at once,
    // to the credentials it has cached.
    let created: Value = a
        .post("/admin/clients")
        .json(&json!({"id": "changing", "grants": ["queue:wake:produce"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old_secret = created["secret"].as_str().unwrap().to_owned();
    let peek = |secret: &str| {
        b.http
            .get(format!("{}/api/v1/queues/wake", b.base))
            .basic_auth("changing", Some(secret.to_owned()))
            .send()
    };
    assert_eq!(peek(&old_secret).await.unwrap().status(), 200);
    let changed = a
        .http
        .put(format!("{}/api/v1/admin/clients/changing/grants", a.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!({"grants": ["queue:other:produce"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let deadline = Instant::now() + Duration::from_millis(500);
    while peek(&old_secret).await.unwrap().status() != 403 {
        assert!(
            Instant::now() < deadline,
            "the other node still applies the old grants"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.http
        .put(format!("{}/api/v1/admin/clients/changing/grants", a.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!({"grants": ["queue:wake:produce"]}))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(500);
    while peek(&old_secret).await.unwrap().status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the other node does not apply the new grants"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rotated: Value = a
        .post("/admin/clients/changing/rotate")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_millis(500);
    while peek(&old_secret).await.unwrap().status() != 401 {
        assert!(
            Instant::now() < deadline,
            "the other node still accepts the old secret"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(peek(&new_secret).await.unwrap().status(), 200);
}

/// A PostgreSQL server of the test's own, on its own port, that the test can stop.
struct OwnPostgres {
    bin: PathBuf,
    data: tempfile::TempDir,
    port: u16,
}

fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|bin| bin.join("initdb").exists());
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
}

/// Runs a PostgreSQL tool; as root it runs as the `postgres` user, which initdb requires.
fn pg_tool(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let tool = bin.join(tool);
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let mut command = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&tool);
        c
    } else {
        Command::new(&tool)
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("a PostgreSQL tool runs")
}

impl OwnPostgres {
    fn start_new() -> OwnPostgres {
        let bin = postgres_bin();
        let data = tempfile::tempdir().unwrap();
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(data.path())
            .status();
        let _ = status;
        let port = free_port();
        let dir = data.path().to_str().unwrap().to_owned();
        let init = pg_tool(
            &bin,
            "initdb",
            &["-D", &format!("{dir}/db"), "-A", "trust", "-U", "postgres"],
        );
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let postgres = OwnPostgres { bin, data, port };
        postgres.start();
        postgres
    }

    fn dir(&self) -> String {
        self.data.path().to_str().unwrap().to_owned()
    }

    fn start(&self) {
        let dir = self.dir();
        let options = format!(
            "-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let out = pg_tool(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &format!("{dir}/db"),
                "-o",
                &options,
                "-l",
                &format!("{dir}/log"),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let dir = self.dir();
        let out = pg_tool(
            &self.bin,
            "pg_ctl",
            &["-D", &format!("{dir}/db"), "-m", "immediate", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let dir = self.dir();
        let _ = pg_tool(
            &self.bin,
            "pg_ctl",
            &["-D", &format!("{dir}/db"), "-m", "immediate", "-w", "stop"],
        );
    }
}

async fn postgres_outage_gives_503_and_heals_without_restart(_: Shared) {
    let postgres = tokio::task::spawn_blocking(OwnPostgres::start_new)
        .await
        .unwrap();
    let node = start_node(&postgres.url()).await;
    assert_eq!(
        node.push("outage", json!({"before": true})).await.status(),
        201
    );

    let postgres = tokio::task::spawn_blocking(move || {
        postgres.stop();
        postgres
    })
    .await
    .unwrap();
    let response = node.push("outage", json!({"during": true})).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!("Service Unavailable - store")
    );
    let health = node
        .http
        .get(format!("{}/health", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["store"]["ok"], json!(false));
    assert!(
        health["store"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{health}"
    );

    let postgres = tokio::task::spawn_blocking(move || {
        postgres.start();
        postgres
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = node.push("outage", json!({"after": true})).await;
        if response.status() == 201 {
            break;
        }
        assert_eq!(response.status(), 503, "only 503 while healing");
        assert!(
            Instant::now() < deadline,
            "the node did not heal after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = node
        .http
        .get(format!("{}/health", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let popped: Value = node
        .post("/queues/outage/pop?count=10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bodies: Vec<&Value> = popped["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(
        bodies,
        vec![&json!({"before": true}), &json!({"after": true})]
    );
    drop(node);
    drop(postgres);
}

// ---------------------------------------------------------------------------
// Streams across nodes
// ---------------------------------------------------------------------------

const LOCKED: &str = "Locked - Second writers not allowed";

/// A seed-004 event named `OrderPlaced`, told apart by its payload.
fn order_placed(payload: Value) -> Value {
    json!({
        "event": {"name": "OrderPlaced", "version": 1},
        "system": {
            "id": "alv123",
            "name": "codello alvine",
            "time": "2017-09-06 13:58:12",
            "timezone": "Europe/Berlin"
        },
        "trigger": {"type": "system", "name": "/path/to/script.php"},
        "payload": payload
    })
}

impl Node {
    /// `POST /streams/{stream}/events` as `producer`.
    async fn append_event(&self, stream: &str, producer: &str, body: &Value) -> reqwest::Response {
        self.post(&format!("/streams/{stream}/events"))
            .header("content-type", "application/json; charset=utf-8")
            .header("X-Producer-ID", producer)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Appends as `producer`; asserts 200 and returns the numeric id.
    async fn append_ok(&self, stream: &str, producer: &str, body: &Value) -> u64 {
        let response = self.append_event(stream, producer, body).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "append through {}: {answer}", self.base);
        answer
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("an append answers with the id as a string, got {answer}"))
    }

    /// `GET /streams/{stream}/events?<query>` as `consumer`; asserts 200, returns the events.
    async fn read_events(&self, stream: &str, consumer: &str, query: &str) -> Vec<Value> {
        let response = self
            .get(&format!("/streams/{stream}/events?{query}"))
            .header("X-Consumer-ID", consumer)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "read {query} through {}: {body}", self.base);
        body.as_array()
            .unwrap_or_else(|| panic!("a read answers with a JSON array, got {body}"))
            .clone()
    }

    /// ACKs event `id` as `consumer`; asserts 200 `"OK"`.
    async fn ack_event(&self, stream: &str, consumer: &str, id: u64) {
        let response = self
            .post(&format!("/streams/{stream}/events/{id}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-Consumer-ID", consumer)
            .body("action=ACK")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), body),
            (200, json!("OK")),
            "ACK of {id} through {}",
            self.base
        );
    }

    /// `GET /streams/{stream}`; asserts 200.
    async fn stream_info(&self, stream: &str) -> Value {
        let response = self
            .get(&format!("/streams/{stream}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            status, 200,
            "GET stream {stream} through {}: {body}",
            self.base
        );
        body
    }
}

/// The numeric `id` of each event as a read returns it.
fn event_ids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| {
            event["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("an event carries its id as a string: {event}"))
        })
        .collect()
}

async fn streams_are_consistent_across_nodes(shared: Shared) {
    let store = shared.url.clone();
    let nodes = Arc::new([start_node(&store).await, start_node(&store).await]);
    let (a, b) = (&nodes[0], &nodes[1]);
    // The first request to each node verifies the admin's secret with argon2 (slow in a
    // debug build): paid here, not inside the race.
    for node in nodes.iter() {
        let warm = node.get("/streams").send().await.unwrap();
        assert_eq!(warm.status(), 200);
    }

    // Ten producers race to create the stream, alternating nodes: one wins.
    const RACERS: usize = 10;
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|racer| {
            let (nodes, start) = (nodes.clone(), start.clone());
            tokio::spawn(async move {
                let producer = format!("producer-{racer}");
                let body = order_placed(json!({ "racer": racer }));
                start.wait().await;
                let response = nodes[racer % 2]
                    .append_event("orders", &producer, &body)
                    .await;
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap();
                (producer, body, status, answer)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for racer in racers {
        let (producer, body, status, answer) = racer.await.unwrap();
        match status {
            200 => winners.push((producer, body, answer)),
            423 => {
                assert_eq!(answer, json!(LOCKED), "{producer} lost the race");
                losers.push(producer);
            }
            other => panic!("{producer} racing for the stream got {other} {answer}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing producer owns the stream: {winners:?}"
    );
    let (owner, first_body, first_id) = winners.pop().unwrap();
    assert_eq!(first_id, json!("1"), "the winner's event is the first");
    for loser in &losers {
        for node in nodes.iter() {
            let response = node
                .append_event("orders", loser, &order_placed(json!({"late": loser})))
                .await;
            assert_eq!(response.status(), 423, "{loser} through {}", node.base);
            assert_eq!(response.json::<Value>().await.unwrap(), json!(LOCKED));
        }
    }
    for node in nodes.iter() {
        let info = node.stream_info("orders").await;
        assert_eq!(info["owner"], json!(owner), "through {}: {info}", node.base);
        assert_eq!(info["length"], 1, "the losers appended nothing: {info}");
    }

    // The owner appends 99 more, concurrently, alternating nodes: ids 1..=100, no gap,
    // no duplicate, each with its own body.
    const EVENTS: u64 = 100;
    const APPENDERS: u64 = 8;
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|appender| {
            let (nodes, owner) = (nodes.clone(), owner.clone());
            tokio::spawn(async move {
                let mut appended = Vec::new();
                for n in (2 + appender..=EVENTS).step_by(APPENDERS as usize) {
                    let body = order_placed(json!({ "n": n }));
                    let id = nodes[n as usize % 2]
                        .append_ok("orders", &owner, &body)
                        .await;
                    appended.push((id, body));
                }
                appended
            })
        })
        .collect();
    let mut appended = vec![(1, first_body)];
    for appender in appenders {
        appended.extend(appender.await.unwrap());
    }
    appended.sort_by_key(|(id, _)| *id);
    assert_eq!(
        appended.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        (1..=EVENTS).collect::<Vec<_>>(),
        "appends through two nodes get the ids 1..=100"
    );
    let expected: Vec<Value> = appended
        .iter()
        .map(|(id, body)| {
            let mut event = body.clone();
            event["id"] = json!(id.to_string());
            event
        })
        .collect();
    for node in nodes.iter() {
        let replayed = node
            .read_events(
                "orders",
                "auditor",
                "eventName=OrderPlaced&limit=1000&after=0",
            )
            .await;
        assert_eq!(
            replayed, expected,
            "every node replays the same events, each with the body that got its id"
        );
    }

    // A consumer reads through B, ACKs through A, and B sees the offset at once.
    let page = b
        .read_events("orders", "c1", "eventName=OrderPlaced&limit=60")
        .await;
    assert_eq!(event_ids(&page), (1..=60).collect::<Vec<_>>());
    a.ack_event("orders", "c1", 50).await;
    let page = b
        .read_events("orders", "c1", "eventName=OrderPlaced&limit=1000")
        .await;
    assert_eq!(
        event_ids(&page),
        (51..=EVENTS).collect::<Vec<_>>(),
        "B reads past the offset A committed"
    );
    let info = b.stream_info("orders").await;
    let entry = info["consumers"]
        .as_array()
        .and_then(|consumers| consumers.iter().find(|c| c["consumer"] == "c1"))
        .unwrap_or_else(|| panic!("no c1 in {info}"));
    assert_eq!(
        (&entry["event_name"], &entry["offset"], &entry["lag"]),
        (&json!("OrderPlaced"), &json!("50"), &json!(50)),
        "{info}"
    );

    // A long-poll on B wakes when the owner appends through A.
    a.ack_event("orders", "c1", EVENTS).await;
    let started = Instant::now();
    let waiting = tokio::spawn({
        let nodes = nodes.clone();
        async move {
            let events = nodes[1]
                .read_events("orders", "c1", "eventName=OrderPlaced&limit=10&wait=10")
                .await;
            (events, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the long-poll answered before the append"
    );
    let late = order_placed(json!({"late": true}));
    let id = a.append_ok("orders", &owner, &late).await;
    assert_eq!(id, EVENTS + 1);
    let (events, waited) = waiting.await.unwrap();
    let mut expected = late;
    expected["id"] = json!((EVENTS + 1).to_string());
    assert_eq!(events, vec![expected]);
    assert!(
        waited < Duration::from_secs(3),
        "woken by the append through the other node, not by the 10 s wait: {waited:?}"
    );
}

/// A task created and waited on through node A is answered (200, with the result) as
/// soon as a worker completes it through node B: the wake-up crosses nodes through
/// PostgreSQL, and so does a `GET` waiting with `Prefer: wait` on node B for a task
/// a worker on node A finishes.
async fn a_task_waited_on_at_one_node_is_answered_by_a_worker_on_the_other(shared: Shared) {
    let store = shared.url.clone();
    let (a, b) = (start_node(&store).await, start_node(&store).await);
    // Pays the argon2 verification of the admin's secret on both nodes, outside the timings.
    for node in [&a, &b] {
        let response = node.get("/queues").send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    // A worker on node B long-polls the task queue and completes what it gets there.
    let worker = |node: &Node, result: Value| {
        let (receive, http, base) = (
            node.post("/queues/signup/receive?wait=20"),
            node.http.clone(),
            node.base.clone(),
        );
        async move {
            let received: Value = receive.send().await.unwrap().json().await.unwrap();
            let message = &received["messages"][0];
            let id = message["body"]["task_id"].as_str().unwrap().to_owned();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let completed = http
                .post(format!("{base}/api/v1/tasks/{id}/complete"))
                .basic_auth("admin", Some(ADMIN_SECRET))
                .json(&json!({ "receipt": message["receipt"], "result": result }))
                .send()
                .await
                .unwrap();
            assert_eq!(completed.status(), 200);
            (id, message["body"]["payload"].clone())
        }
    };
    let configured = a
        .http
        .put(format!("{}/api/v1/queues/signup", a.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(configured.status().is_success());
    let working = tokio::spawn(worker(&b, json!({ "customer": 42 })));
    let started = Instant::now();
    let created = a
        .post("/tasks/signup")
        .header("prefer", "wait=20")
        .json(&json!({ "email": "ada@example.com" }))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(created.status(), 200, "finished within the wait");
    let task: Value = created.json().await.unwrap();
    let (id, payload) = working.await.unwrap();
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["result"], json!({ "customer": 42 }));
    assert_eq!(payload, json!({ "email": "ada@example.com" }));
    assert!(
        elapsed < Duration::from_secs(10),
        "woken by node B's completion, not by the 20 s wait: {elapsed:?}"
    );

    // The other way round, and through GET: created without waiting, waited on at B.
    let created = a
        .post("/tasks/signup")
        .header("prefer", "respond-async")
        .json(&json!({ "email": "grace@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let location = created
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let working = tokio::spawn(worker(&a, json!("done")));
    let started = Instant::now();
    let waited = b
        .http
        .get(format!("{}{location}", b.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("prefer", "wait=20")
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(waited.status(), 200);
    let task: Value = waited.json().await.unwrap();
    working.await.unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"], "done");
    assert!(
        elapsed < Duration::from_secs(10),
        "woken by node A's completion, not by the 20 s wait: {elapsed:?}"
    );
}

/// Deliveries spread over nodes: two nodes deliver one queue to an upstream; every
/// message reaches it, and both nodes deliver some (leases with `SKIP LOCKED`).
async fn two_nodes_share_a_queue_s_deliveries(shared: Shared) {
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let recorded = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let recorded = recorded.clone();
        async move {
            if let Some(id) = headers
                .get("hopper-message-id")
                .and_then(|v| v.to_str().ok())
            {
                recorded.lock().unwrap().insert(id.to_owned());
            }
            // Slow enough that one node alone would not take every message.
            tokio::time::sleep(Duration::from_millis(20)).await;
            "{}"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let store = shared.url.clone();
    let (a, b) = (start_node(&store).await, start_node(&store).await);
    let configured = a
        .http
        .put(format!("{}/api/v1/queues/hooks", a.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .json(
            &json!({ "delivery": { "url": format!("http://{upstream}/hook"), "concurrency": 4 } }),
        )
        .send()
        .await
        .unwrap();
    assert!(configured.status().is_success());
    // Node B follows settings changed through A within 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body: Vec<Value> = (0..200).map(|n| json!({ "n": n })).collect();
    let pushed = a
        .post("/queues/hooks/messages/batch")
        .json(&json!({ "messages": body }))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 200 {
        assert!(
            Instant::now() < deadline,
            "{} of 200 delivered",
            seen.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A node counts a delivery once its batch is acked, a moment after the upstream
    // answered: the counts catch up with what the upstream saw.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let mut delivered = Vec::new();
        for node in [&a, &b] {
            let info: Value = node
                .get("/queues/hooks")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            delivered.push(info["delivery"]["delivered"].as_u64().unwrap_or(0));
        }
        if delivered.iter().sum::<u64>() >= 200 || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        delivered.iter().all(|&n| n > 0),
        "both nodes deliver: {delivered:?}"
    );
    assert!(delivered.iter().sum::<u64>() >= 200, "{delivered:?}");
}

/// Both nodes sign with the key kept in the store: a token from node A's login is
/// taken by node B; deleting the client through A voids the token on both at once.
async fn a_token_from_one_node_works_on_the_other_until_its_client_is_deleted(shared: Shared) {
    let store = shared.url.clone();
    let (a, b) = (start_node(&store).await, start_node(&store).await);
    let created: Value = a
        .post("/admin/clients")
        .json(&json!({"id": "shop", "grants": ["queue:orders:produce"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap();
    let login: Value = a
        .http
        .post(format!("{}/api/v1/auth/login", a.base))
        .json(&json!({"username": "shop", "password": secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_owned();
    let push = |node: &Node| {
        node.http
            .post(format!("{}/api/v1/queues/orders/messages", node.base))
            .bearer_auth(&token)
            .json(&json!({"order": 1}))
            .send()
    };
    for node in [&a, &b] {
        assert_eq!(push(node).await.unwrap().status(), 201, "{}", node.base);
    }
    let deleted = a
        .http
        .delete(format!("{}/api/v1/admin/clients/shop", a.base))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    // B learns of the deletion by notification; allow it the time a notification
    // takes, far less than the cache's own one-second recheck.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for node in [&a, &b] {
        assert_eq!(push(node).await.unwrap().status(), 401, "{}", node.base);
    }
}

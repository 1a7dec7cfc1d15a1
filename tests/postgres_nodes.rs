//! Several `hopper serve` processes on one PostgreSQL database behave as one server,
//! and a PostgreSQL outage gives 503s that heal without a restart.
//!
//! Runs when `HOPPER_TEST_POSTGRES` is set (a base URL such as
//! `postgres://postgres@127.0.0.1:5432/test`); `.ci/run` sets it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN_SECRET: &str = "nodes-admin-secret-0123456789";

fn postgres_base() -> Option<String> {
    let url = std::env::var("HOPPER_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("HOPPER_TEST_POSTGRES is not set: skipping the PostgreSQL multi-node tests");
    }
    url
}

fn random_schema() -> String {
    format!("t_nodes_{:016x}", rand::random::<u64>())
}

fn with_schema(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}schema={schema}")
}

/// Drops a test schema when the test ends, even on panic.
struct SchemaGuard {
    base: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&base, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_queues_and_deliver_each_message_once() {
    let Some(base) = postgres_base() else { return };
    let schema = random_schema();
    let _guard = SchemaGuard {
        base: base.clone(),
        schema: schema.clone(),
    };
    let store = with_schema(&base, &schema);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_on_one_node_wakes_on_a_push_to_the_other() {
    let Some(base) = postgres_base() else { return };
    let schema = random_schema();
    let _guard = SchemaGuard {
        base: base.clone(),
        schema: schema.clone(),
    };
    let store = with_schema(&base, &schema);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_503_and_heals_without_restart() {
    if postgres_base().is_none() {
        return;
    }
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

//! The compiled `hopper` binary under abuse: a SIGKILL in the middle of concurrent
//! pushes loses nothing that was acknowledged, and a SIGTERM drains in-flight
//! requests and exits 0. Each test runs the binary on its own isolated store, once
//! per storage backend (`sqlite::…`, `postgres::…`; see `common::conformance!`).

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{conformance, Backend, IsolatedStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

conformance! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    acknowledged_pushes_survive_sigkill,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    sigterm_drains_in_flight_requests_and_exits_zero,
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
        let port = free_port();
        let log_path = store.dir.path().join(format!("hopper-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hopper"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(&store.url)
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

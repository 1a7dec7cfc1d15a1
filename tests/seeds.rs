//! Seed parity: each seed's documented requests, sent as written, get its documented
//! answers from Hopper running the documentation's own config for that seed (read from
//! docs/replacing.md, so the page cannot drift from what is tested). Upstreams (the
//! customer API of seed 001, the cluster API of seed 003) are real HTTP servers
//! started inside the tests, which can be told to fail, hang or be down.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use common::{spawn_app_with, trials, Backend, TestApp};
use hopper::config::{Config, Overrides};
use serde_json::{json, Value};

trials! {
    each_backend {
        seed_000_add_answers_ok_and_queues_the_body,
        seed_002_push_count_pop_and_the_empty_answer,
        seed_001_clients_answered_within_the_wait_or_later: multi_thread(2),
        seed_003_failed_creates_are_rolled_back_until_the_cluster_agrees: multi_thread(2),
        seed_003_rollbacks_survive_a_sigkill_of_hopper: multi_thread(2),
    }
}

const SEED_000_SECRET: &str = "MTI4NTBANjEwMmZjMzhiOTM5YjQyODVhNDAwZmE3";

/// Where the page's configs send the upstream calls: the stand-in it starts.
const PAGE_UPSTREAM: &str = "127.0.0.1:9000";

/// The config for `seed` (e.g. `seed-003`) of docs/replacing.md, the file its recipe
/// writes with a heredoc after `<!-- config: seed-NNN -->`, with the seed's upstream
/// pointed at `upstream`.
fn readme_config(seed: &str, upstream: Option<SocketAddr>) -> String {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/replacing.md"))
        .expect("docs/replacing.md");
    let marker = format!("<!-- config: {seed} -->");
    let after = &page[page.find(&marker).unwrap_or_else(|| panic!("no {marker}"))..];
    let opening = "<<'EOF'\n";
    let start = after.find(opening).expect("a heredoc") + opening.len();
    let end = start + after[start..].find("\nEOF\n").expect("the heredoc's end") + 1;
    let mut toml = after[start..end].to_owned();
    if let Some(addr) = upstream {
        toml = toml.replace(PAGE_UPSTREAM, &addr.to_string());
    }
    toml
}

/// The routes and queues of a config text, as `hopper serve --config` reads them.
fn load(toml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopper.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(Overrides {
        config: Some(path),
        ..Overrides::default()
    })
    .expect("the page's config loads")
}

async fn app_with_seed(backend: &Backend, seed: &str, upstream: Option<SocketAddr>) -> TestApp {
    let file = load(&readme_config(seed, upstream));
    spawn_app_with(backend, move |config| {
        config.routes = file.routes;
        config.queues = file.queues;
    })
    .await
}

/// A fake upstream: answers from a shared plan, records what it got.
#[derive(Clone, Default)]
struct Upstream {
    /// (status, body, delay) for every request; changed by the test as it goes.
    plan: Arc<Mutex<(u16, String, Duration)>>,
    seen: Arc<Mutex<Vec<(Method, String, Value)>>>,
    calls: Arc<AtomicU32>,
}

impl Upstream {
    async fn start(status: u16, body: &str) -> (Upstream, SocketAddr) {
        let upstream = Upstream::default();
        upstream.set(status, body, Duration::ZERO);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(upstream_answer)
            .with_state(upstream.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (upstream, addr)
    }

    fn set(&self, status: u16, body: &str, delay: Duration) {
        *self.plan.lock().unwrap() = (status, body.to_owned(), delay);
    }

    fn seen(&self) -> Vec<(Method, String, Value)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream_answer(
    State(upstream): State<Upstream>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    upstream.calls.fetch_add(1, Ordering::SeqCst);
    upstream.seen.lock().unwrap().push((
        method,
        uri.to_string(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ));
    let (status, body, delay) = upstream.plan.lock().unwrap().clone();
    tokio::time::sleep(delay).await;
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
}

/// Polls `check` every 50 ms until it holds, for up to `within`.
async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seed 000's two curl requests, as written: the first gets `200 {"status":"OK"}` and
/// its body is on queue `add`; the second (unknown client id) gets 401.
async fn seed_000_add_answers_ok_and_queues_the_body(backend: Backend) {
    let app = app_with_seed(&backend, "seed-000", None).await;
    let created = app
        .as_admin(reqwest::Method::POST, "/api/v1/admin/clients")
        .json(&json!({ "id": "12345", "secret": SEED_000_SECRET, "grants": ["queue:add:produce"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body = r#"{"user_id":123,"app_id":222,"item_id":4,"quantity":5}"#;
    let send = |client_id: &'static str| {
        app.request(reqwest::Method::POST, "/api/v1/add")
            .header("API-Client-Id", client_id)
            .header("Authorization", format!("Bearer {SEED_000_SECRET}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let ok = send("12345").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap(), json!({ "status": "OK" }));
    let refused = send("1234567").await.unwrap();
    assert_eq!(refused.status(), 401);
    let messages = app.pop("add", 10).await;
    assert_eq!(messages.len(), 1, "only the accepted request is queued");
    assert_eq!(
        messages[0]["body"],
        serde_json::from_str::<Value>(body).unwrap()
    );
}

/// Seed 002: push answers `{"status":"ok"}`, count `{"count": N}`, pop the oldest
/// message (FIFO), and "No hay Dato" once the queue is empty.
async fn seed_002_push_count_pop_and_the_empty_answer(backend: Backend) {
    let app = app_with_seed(&backend, "seed-002", None).await;
    let call = |method: reqwest::Method, path: &'static str, body: Option<Value>| {
        let request = app.as_admin(method, path);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
    };
    for n in 1..=3 {
        let pushed = call(
            reqwest::Method::POST,
            "/apis/queue/push",
            Some(json!({ "msg": n })),
        )
        .await
        .unwrap();
        assert_eq!(pushed.status(), 200);
        assert_eq!(
            pushed.json::<Value>().await.unwrap(),
            json!({ "status": "ok" })
        );
    }
    let count = call(reqwest::Method::GET, "/apis/queue/count", None)
        .await
        .unwrap();
    assert_eq!(count.json::<Value>().await.unwrap(), json!({ "count": 3 }));
    for n in 1..=3 {
        let popped = call(reqwest::Method::POST, "/apis/queue/pop", None)
            .await
            .unwrap();
        assert_eq!(popped.status(), 200);
        assert_eq!(
            popped.json::<Value>().await.unwrap(),
            json!({ "msg": n }),
            "FIFO"
        );
    }
    let empty = call(reqwest::Method::POST, "/apis/queue/pop", None)
        .await
        .unwrap();
    assert_eq!(
        empty.json::<Value>().await.unwrap(),
        json!({ "message": "No hay Dato" })
    );
    let count = call(reqwest::Method::GET, "/apis/queue/count", None)
        .await
        .unwrap();
    assert_eq!(count.json::<Value>().await.unwrap(), json!({ "count": 0 }));
}

/// Seed 001: a customer API that answers within the wait gives the client its
/// answer in one call; a slow one gives 202 and `Location`, where GET gets the answer.
async fn seed_001_clients_answered_within_the_wait_or_later(backend: Backend) {
    let (customers, addr) = Upstream::start(201, r#"{"id": 7, "email": "ada@example.com"}"#).await;
    let app = app_with_seed(&backend, "seed-001", Some(addr)).await;
    let create = |email: &'static str| {
        app.as_admin(reqwest::Method::POST, "/api/v1/clients")
            .json(&json!({ "email": email, "name": "Ada" }))
            .send()
    };
    let fast = create("ada@example.com").await.unwrap();
    assert_eq!(fast.status(), 201, "the customer API's own status");
    assert_eq!(
        fast.json::<Value>().await.unwrap(),
        json!({ "id": 7, "email": "ada@example.com" })
    );
    assert_eq!(
        customers.seen()[0].2,
        json!({ "email": "ada@example.com", "name": "Ada" })
    );

    customers.set(201, r#"{"id": 8}"#, Duration::from_secs(7));
    let slow = create("bob@example.com").await.unwrap();
    assert_eq!(slow.status(), 202);
    let location = slow.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = app
        .as_admin(reqwest::Method::GET, &location)
        .header("prefer", "wait=10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"], json!({ "id": 8 }));
}

/// Seed 003: a create the cluster fails is answered 502, and the rollback (DELETE
/// of the group) reaches the cluster, retried through its failures until it
/// succeeds; a create that succeeds is passed through and rolls nothing back.
async fn seed_003_failed_creates_are_rolled_back_until_the_cluster_agrees(backend: Backend) {
    let (cluster, addr) = Upstream::start(201, r#"{"created": true}"#).await;
    let app = app_with_seed(&backend, "seed-003", Some(addr)).await;
    let (code, _) = app
        .configure(
            "groups-rollback",
            json!({ "delivery": {
            "url": format!("http://{addr}/groups/{{group_id}}"), "method": "DELETE",
            "done_statuses": [404], "backoff": { "initial": 0.05, "max": 0.2 } } }),
        )
        .await;
    assert!(code.is_success(), "faster retries for the test");
    let create = |group: &'static str| {
        app.as_admin(reqwest::Method::POST, "/groups")
            .json(&json!({ "group_id": group, "name": "admins" }))
            .send()
    };
    let created = create("g-ok").await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.json::<Value>().await.unwrap(),
        json!({ "created": true })
    );

    cluster.set(500, r#"{"error": "unstable"}"#, Duration::ZERO);
    let failed = create("g-1").await.unwrap();
    assert_eq!(failed.status(), 502);
    // The cluster keeps failing the DELETEs for a while, then recovers.
    eventually(Duration::from_secs(10), "retried DELETEs", || async {
        cluster
            .seen()
            .iter()
            .filter(|(m, _, _)| m == Method::DELETE)
            .count()
            >= 3
    })
    .await;
    cluster.set(204, "", Duration::ZERO);
    eventually(Duration::from_secs(10), "the rollback", || async {
        let info = app.queue_info("groups-rollback").await;
        info["ready"] == 0 && info["leased"] == 0 && info["delayed"] == 0
    })
    .await;
    let deletes: Vec<String> = cluster
        .seen()
        .into_iter()
        .filter(|(m, _, _)| m == Method::DELETE)
        .map(|(_, path, _)| path)
        .collect();
    assert!(
        deletes.iter().all(|path| path == "/groups/g-1"),
        "{deletes:?}"
    );

    // A cluster that no longer knows the group (404) ends the rollback as done.
    cluster.set(504, "", Duration::ZERO);
    assert_eq!(create("g-2").await.unwrap().status(), 502);
    cluster.set(404, "", Duration::ZERO);
    eventually(
        Duration::from_secs(10),
        "the rollback ended by a 404",
        || async {
            let info = app.queue_info("groups-rollback").await;
            info["ready"] == 0 && info["leased"] == 0 && info["delayed"] == 0 && info["dead"] == 0
        },
    )
    .await;
}

/// A `hopper serve` process on `store` with `config`; killed when dropped.
struct Hopper {
    child: Child,
    base: String,
}

impl Drop for Hopper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_hopper(store: &str, config: &std::path::Path) -> Hopper {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_hopper"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
        ])
        .arg("--config")
        .arg(config)
        .env("HOPPER_ADMIN_SECRET", "seeds-admin-secret-0123456789")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the hopper binary starts");
    let hopper = Hopper {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    eventually(Duration::from_secs(30), "hopper healthy", || async {
        reqwest::get(format!("{}/health", hopper.base))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    hopper
}

/// Seed 003 across a SIGKILL: creates the cluster fails while Hopper retries their
/// rollbacks; Hopper is killed; restarted, it goes on until every failed create has
/// been deleted on the cluster. No accepted compensation is lost.
async fn seed_003_rollbacks_survive_a_sigkill_of_hopper(backend: Backend) {
    let (cluster, addr) = Upstream::start(500, "").await;
    let store = backend.isolated_store();
    let toml = readme_config("seed-003", Some(addr)).replace(
        r#"backoff = { initial = "1s", max = "30s" }"#,
        "backoff = { initial = \"0.05s\", max = \"0.2s\" }\ntimeout = \"1s\"",
    );
    let config = store.dir.path().join("hopper.toml");
    std::fs::write(&config, toml).unwrap();
    let http = reqwest::Client::new();
    let mut hopper = start_hopper(&store.url, &config).await;
    let mut failed_groups = Vec::new();
    for n in 0..10 {
        let group = format!("g-{n}");
        let answer = http
            .post(format!("{}/groups", hopper.base))
            .basic_auth("admin", Some("seeds-admin-secret-0123456789"))
            .json(&json!({ "group_id": group }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 502);
        failed_groups.push(format!("/groups/{group}"));
    }
    // Enough failed DELETEs to open the cluster's breaker: rollbacks are being retried.
    eventually(
        Duration::from_secs(10),
        "rollbacks being retried",
        || async {
            cluster
                .seen()
                .iter()
                .filter(|(m, _, _)| m == Method::DELETE)
                .count()
                >= 5
        },
    )
    .await;
    hopper.child.kill().unwrap();
    hopper.child.wait().unwrap();
    cluster.set(204, "", Duration::ZERO);
    let before_restart = cluster.seen().len();
    hopper = start_hopper(&store.url, &config).await;
    eventually(
        Duration::from_secs(30),
        "every rollback after the restart",
        || async {
            let deleted: std::collections::HashSet<String> = cluster.seen()[before_restart..]
                .iter()
                .filter(|(m, _, _)| m == Method::DELETE)
                .map(|(_, path, _)| path.clone())
                .collect();
            failed_groups.iter().all(|group| deleted.contains(group))
        },
    )
    .await;
    drop(hopper);
}

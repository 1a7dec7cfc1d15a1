//! `spawn_app()`: the real server, in-process, on an ephemeral port and its own
//! temporary SQLite store, so tests run in parallel without sharing anything.
//! Helpers speak the public HTTP API only; they never reach into the store.
//!
//! Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hopper::config::Config;
use hopper::domain::ClientId;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Secret of the admin when the server bootstraps it itself ([`spawn_app_bootstrapped`]).
pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789";

/// The content type every response must carry.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A running server and the client that talks to it.
pub struct TestApp {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// A plain HTTP client; requests carry no credentials unless a helper adds them.
    pub client: reqwest::Client,
    /// The secret of client `admin`.
    pub admin_secret: String,
    server: hopper::server::Server,
    /// Keeps the store's directory alive as long as the server uses it.
    _store_dir: TempDir,
}

/// Starts a server on `127.0.0.1:0` with a fresh store whose `admin` has a generated
/// secret ([`TestApp::admin_secret`]).
///
/// The admin is created before the server starts, through the same code as the admin
/// API, because a chosen secret is hashed with argon2, which takes about a second per
/// hash and per first verification in a debug build: paid by every test, that alone
/// would make the suite several times slower. Generated secrets verify in microseconds.
/// The server still gets `admin_secret: Some(..)`, which it ignores on a store with
/// clients; [`spawn_app_bootstrapped`] covers the bootstrap itself.
pub async fn spawn_app() -> TestApp {
    let store_dir = tempfile::tempdir().expect("cannot create a temp dir");
    let store_url = store_url(&store_dir);
    let store = hopper::store::open(&store_url)
        .await
        .expect("cannot open the test store");
    let admin = hopper::auth::clients::create(
        store.as_ref(),
        ClientId::parse("admin").unwrap(),
        None,
        &["admin".to_owned()],
    )
    .await
    .expect("cannot create the admin");
    store.close().await;
    start(store_dir, admin.secret).await
}

/// Starts a server on a fresh, empty store, so it bootstraps `admin` with [`ADMIN_SECRET`].
pub async fn spawn_app_bootstrapped() -> TestApp {
    let store_dir = tempfile::tempdir().expect("cannot create a temp dir");
    start(store_dir, ADMIN_SECRET.to_owned()).await
}

fn store_url(store_dir: &TempDir) -> String {
    format!("sqlite://{}/hopper.db", store_dir.path().display())
}

async fn start(store_dir: TempDir, admin_secret: String) -> TestApp {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store: store_url(&store_dir),
        admin_secret: Some(admin_secret.clone()),
        ..Config::default()
    };
    let server = hopper::server::start(config)
        .await
        .expect("the server did not start");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    TestApp {
        addr: server.addr,
        client,
        admin_secret,
        server,
        _store_dir: store_dir,
    }
}

impl TestApp {
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A request without credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with the admin's Basic credentials.
    pub fn as_admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .basic_auth("admin", Some(&self.admin_secret))
    }

    /// A request with `id:secret` Basic credentials.
    pub fn as_client(&self, id: &str, secret: &str, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).basic_auth(id, Some(secret))
    }

    /// Creates a client through the admin API; returns its generated secret.
    pub async fn create_client(&self, id: &str, grants: &[&str]) -> String {
        let response = self
            .as_admin(Method::POST, "/api/v1/admin/clients")
            .json(&json!({ "id": id, "grants": grants }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "creating client {id}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], id);
        body["secret"]
            .as_str()
            .expect("a created client comes with its secret")
            .to_owned()
    }

    /// Pushes `body` to `queue` as the admin; asserts 201 and returns the id.
    pub async fn push(&self, queue: &str, body: Value) -> String {
        let response = self
            .as_admin(Method::POST, &format!("/api/v1/queues/{queue}/messages"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "push to {queue}");
        let answer: Value = response.json().await.unwrap();
        answer["id"]
            .as_str()
            .expect("a push answers with the id")
            .to_owned()
    }

    /// `POST /api/v1/queues/{queue}/pop?count=N` as the admin; asserts 200, returns the messages.
    pub async fn pop(&self, queue: &str, count: u32) -> Vec<Value> {
        let response = self
            .as_admin(
                Method::POST,
                &format!("/api/v1/queues/{queue}/pop?count={count}"),
            )
            .send()
            .await
            .unwrap();
        messages_of(response).await
    }

    /// `POST /api/v1/queues/{queue}/receive?<query>` as the admin; asserts 200, returns the messages.
    pub async fn receive(&self, queue: &str, query: &str) -> Vec<Value> {
        let response = self
            .as_admin(
                Method::POST,
                &format!("/api/v1/queues/{queue}/receive?{query}"),
            )
            .send()
            .await
            .unwrap();
        messages_of(response).await
    }

    /// `POST /api/v1/queues/{queue}/{verb}` (ack, nack, extend) as the admin; asserts 200.
    pub async fn settle(&self, queue: &str, verb: &str, body: Value) -> Value {
        let response = self
            .as_admin(Method::POST, &format!("/api/v1/queues/{queue}/{verb}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{verb} on {queue}");
        response.json().await.unwrap()
    }

    /// `GET /api/v1/queues/{queue}` as the admin; asserts 200.
    pub async fn queue_info(&self, queue: &str) -> Value {
        let response = self
            .as_admin(Method::GET, &format!("/api/v1/queues/{queue}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET queue {queue}");
        response.json().await.unwrap()
    }

    /// `(ready, leased, delayed, dead)` of a queue.
    pub async fn counts(&self, queue: &str) -> (u64, u64, u64, u64) {
        let info = self.queue_info(queue).await;
        let count = |name: &str| {
            info[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} missing in {info}"))
        };
        (
            count("ready"),
            count("leased"),
            count("delayed"),
            count("dead"),
        )
    }

    /// `PUT /api/v1/queues/{queue}` as the admin; returns the status and the answer.
    pub async fn configure(&self, queue: &str, settings: Value) -> (StatusCode, Value) {
        let response = self
            .as_admin(Method::PUT, &format!("/api/v1/queues/{queue}"))
            .json(&settings)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// The `messages` of a 200 pop or receive answer.
pub async fn messages_of(response: Response) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK, "{}", response.url());
    let body: Value = response.json().await.unwrap();
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {body}"))
        .clone()
}

/// The `id` of each message.
pub fn ids_of(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["id"].as_str().expect("a message has an id").to_owned())
        .collect()
}

/// Asserts the conventions every answer follows (JSON content type, a request id),
/// then the status and the exact seed-004 error text; returns the response headers.
pub async fn assert_error(
    response: Response,
    status: StatusCode,
    text: &str,
) -> reqwest::header::HeaderMap {
    let (headers, actual) = error_of(response, status).await;
    assert_eq!(actual, text);
    headers
}

/// As [`assert_error`], for errors whose detail varies: the text must start with `prefix`.
pub async fn assert_error_prefix(
    response: Response,
    status: StatusCode,
    prefix: &str,
) -> reqwest::header::HeaderMap {
    let (headers, actual) = error_of(response, status).await;
    assert!(
        actual.starts_with(prefix),
        "expected an error starting with {prefix:?}, got {actual:?}"
    );
    headers
}

async fn error_of(response: Response, status: StatusCode) -> (reqwest::header::HeaderMap, String) {
    let url = response.url().clone();
    let headers = response.headers().clone();
    let actual_status = response.status();
    let raw = response.text().await.unwrap();
    assert_eq!(actual_status, status, "{url}: body {raw}");
    assert_json_conventions(&headers);
    let text = match serde_json::from_str::<Value>(&raw) {
        Ok(Value::String(text)) => text,
        _ => panic!("{url}: the error body is not a JSON string: {raw:?}"),
    };
    (headers, text)
}

/// Every answer is `application/json; charset=utf-8` and carries `x-request-id`.
pub fn assert_json_conventions(headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some(JSON_CONTENT_TYPE),
        "content-type"
    );
    assert!(
        headers.get("x-request-id").is_some_and(|v| !v.is_empty()),
        "x-request-id missing"
    );
}

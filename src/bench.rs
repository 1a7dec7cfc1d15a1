//! `hopper bench`: drives the real HTTP API of a `hopper serve` child process over
//! N keep-alive connections, and in the same run a bare axum handler that answers
//! 200 without touching storage, so ratios are measured side by side on one machine.
//!
//! `--store` may be given several times: every scenario but `bare` and `peer-push`
//! runs once per store, its line labelled with the store's backend.
//!
//! Scenarios: `bare`, `push` (seed 000's 53-byte body, Basic credentials), `push-token`
//! (the same with a login's JWT), `receive-ack` (count=100),
//! `append` and `read` (seed 004's event), `capacity` (RSS with N messages queued,
//! then restart time), `tasks` (the fast path of seed 001: a create that waits while
//! workers long-poll and complete, paced at `--task-rate` beside pushes at the same
//! pace, then as fast as it goes), `task-waiters` (memory and CPU with
//! `--task-waiters` requests waiting), `deliver` (messages delivered per second to
//! the bare handler as upstream), `breaker` (Hopper's CPU while its upstream
//! fails every call), `peer-push` (the same pushes as `push`, sent with seed 000's
//! headers to `--peer`, the front door Hopper replaces), `ds-append` and `ds-read`
//! (the Durable Streams protocol under `/api/v1/stream/`: appends of one JSON
//! message, catch-up reads of a filled stream), `peer-ds-append` and
//! `peer-ds-read` (the same two against each `--peer-ds`, another server of the
//! protocol, such as its reference server), and the SQS endpoint beside Hopper's
//! own API: `sqs-send` (SendMessage of seed 000's body, as `push`),
//! `receive-ack-1` (a receive of one message then its ack) and `sqs-receive`
//! (ReceiveMessage of one then DeleteMessage), the last two counting a pair as one
//! request, on queues filled first. SQS requests are signed as boto3 signs them,
//! with an access key the bench issues to a client of its own.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::api::sqs::wire::JSON_CONTENT_TYPE;
use crate::auth::sigv4::{client_string_to_sign, ALGORITHM, SERVICE};
use crate::auth::SignedRequest;

/// How long a task create waits for its result in the task scenarios.
const TASK_PREFER: &str = "wait=5";
/// The queue of the task scenarios.
const TASK_QUEUE: &str = "bench-tasks";

/// Seed 000's request body: 53 bytes.
const SEED_BODY: &str = r#"{"user_id":123,"app_id":222,"item_id":4,"quantity":5}"#;
/// Where Hopper serves the Durable Streams protocol's streams.
const DS_BASE: &str = "/api/v1/stream";
/// Messages per append when the `ds-read` scenarios fill their stream.
const DS_FILL_BATCH: usize = 1000;
const ADMIN_SECRET: &str = "bench-admin-secret-0123456789";
/// The key the servers under test seal AWS secrets under (32 bytes, base64): without
/// one, PostgreSQL and Redis stores issue no access key to the SQS scenarios.
const SECRET_KEY: &str = "YmVuY2gtc2VjcmV0LWtleS0wMTIzNDU2Nzg5YWJjZGU=";
/// Where SDKs send SQS's JSON protocol, given Hopper's endpoint URL.
const SQS_PATH: &str = "/sqs";
/// The region the SQS scenarios sign for; any region is accepted.
const SQS_REGION: &str = "us-east-1";
/// The queue `sqs-send` sends to, created with CreateQueue.
const SQS_SEND_QUEUE: &str = "bench-sqs-send";
/// The queue `sqs-receive` empties, created with CreateQueue and filled first.
const SQS_RECEIVE_QUEUE: &str = "bench-sqs-receive";
/// The queue `receive-ack-1` empties, filled first.
const PAIR_QUEUE: &str = "bench-pairs";
/// Messages queued for each second a receive-and-delete scenario runs, warm-up
/// included: well above the pairs per second a 2-core machine reaches (each pair is
/// two commits), so its consumers never run dry.
const PAIRS_PER_SECOND: usize = 30_000;

/// Arguments of `hopper bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Keep-alive connections per scenario.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measured time per scenario.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each scenario.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Store URL for the server under test, repeatable: the server's scenarios run once
    /// per store; a temporary SQLite file when absent.
    #[arg(long)]
    pub store: Vec<String>,
    /// Scenarios to run, comma-separated: bare, push, push-token, sqs-send, receive-ack,
    /// receive-ack-1, sqs-receive, append, read, capacity, tasks, task-waiters, deliver,
    /// breaker, peer-push, ds-append, ds-read, peer-ds-append, peer-ds-read (`read` needs
    /// at least 1000 events, which `append` writes first).
    #[arg(long, value_delimiter = ',', default_value = "bare,push,receive-ack")]
    pub scenarios: Vec<String>,
    /// `hopper serve` processes sharing the store (PostgreSQL); connections are spread over them.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Messages queued by the `capacity` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub capacity_messages: usize,
    /// Tasks per second created by the `tasks` scenario's paced run (and pushes per
    /// second of the paced pushes it is compared with).
    #[arg(long, default_value_t = 1000.0)]
    pub task_rate: f64,
    /// Workers in the `tasks` scenario, each on its own connection taking one task at a time.
    #[arg(long, default_value_t = 16)]
    pub task_workers: usize,
    /// Requests held waiting for a result by the `task-waiters` scenario.
    #[arg(long, default_value_t = 10_000)]
    pub task_waiters: usize,
    /// Messages delivered by the `deliver` scenario.
    #[arg(long, default_value_t = 200_000)]
    pub deliver_messages: usize,
    /// `delivery.concurrency` of the `deliver` scenario's queue.
    #[arg(long, default_value_t = 64)]
    pub deliver_concurrency: u32,
    /// The `peer-push` scenario's endpoint, an `http://` URL such as
    /// `http://127.0.0.1:8080/api/v1/add`.
    #[arg(long)]
    pub peer: Option<String>,
    /// `API-Client-Id` of the `peer-push` scenario's requests.
    #[arg(long)]
    pub peer_client_id: Option<String>,
    /// Token the `peer-push` scenario sends as `Authorization: Bearer`.
    #[arg(long)]
    pub peer_token: Option<String>,
    /// Messages in the stream the `ds-read` and `peer-ds-read` scenarios read, 53
    /// bytes each (appended first, 1000 per request).
    #[arg(long, default_value_t = 100_000)]
    pub ds_read_messages: usize,
    /// A Durable Streams server for the `peer-ds-append` and `peer-ds-read`
    /// scenarios, repeatable: `[LABEL=]URL`, the `http://` URL its streams live under,
    /// such as `memory=http://127.0.0.1:4437/v1/stream` (the label names its lines;
    /// its host and port by default).
    #[arg(long)]
    pub peer_ds: Vec<String>,
}

impl BenchArgs {
    /// Whether `--scenarios` names `scenario`.
    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// Where the `peer-push` scenario sends its pushes, and as whom.
struct Peer {
    addr: SocketAddr,
    path: String,
    client_id: String,
    token: String,
}

impl Peer {
    /// Reads `--peer` and its credentials, and resolves the peer's address.
    async fn from_args(args: &BenchArgs) -> anyhow::Result<Peer> {
        let url = args.peer.as_deref().context("peer-push needs --peer")?;
        let uri: hyper::Uri = url.parse().with_context(|| format!("--peer {url}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--peer {url}: only http:// is supported"
        );
        let host = uri.host().context("--peer has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .with_context(|| format!("--peer {url}: {host} does not resolve"))?;
        Ok(Peer {
            addr,
            path: uri.path().to_owned(),
            client_id: args
                .peer_client_id
                .clone()
                .context("peer-push needs --peer-client-id")?,
            token: args
                .peer_token
                .clone()
                .context("peer-push needs --peer-token")?,
        })
    }
}

/// A server of the Durable Streams protocol measured beside Hopper (`--peer-ds`).
struct DsPeer {
    label: String,
    addr: SocketAddr,
    /// The path its streams live under, without a trailing `/`.
    base: String,
}

impl DsPeer {
    /// Reads one `--peer-ds` value and resolves the server's address.
    async fn parse(spec: &str) -> anyhow::Result<DsPeer> {
        let (label, url) = match spec.split_once('=') {
            Some((label, url)) if !label.contains('/') => (Some(label), url),
            _ => (None, spec),
        };
        let uri: hyper::Uri = url.parse().with_context(|| format!("--peer-ds {spec}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "--peer-ds {spec}: only http:// is supported"
        );
        let host = uri.host().context("--peer-ds has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .with_context(|| format!("--peer-ds {spec}: {host} does not resolve"))?;
        Ok(DsPeer {
            label: label.map_or_else(|| format!("{host}:{port}"), str::to_owned),
            addr,
            base: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// One scenario's figures.
struct Figures {
    name: String,
    requests: u64,
    messages: u64,
    /// Response body bytes read, for the scenarios that measure reads.
    bytes: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Figures {
    fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, baseline: Option<f64>) {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let ratio = baseline
            .map(|b| format!("{:>6.1}%", 100.0 * self.requests_per_second() / b))
            .unwrap_or_else(|| "      -".into());
        let read = if self.bytes > 0 {
            format!(
                "  read {:.1} MB/s",
                self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
            )
        } else {
            String::new()
        };
        println!(
            "{:<24} {:>10.0} req/s {:>10.0} msg/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>8.3} ms  errors {:>5}  vs bare {}{read}",
            self.name,
            self.requests_per_second(),
            self.messages as f64 / self.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency.max() as f64 / 1000.0,
            self.errors,
            ratio
        );
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    auth: Option<String>,
    /// The `Prefer` header of every request.
    prefer: &'static str,
}

impl Connection {
    async fn open(addr: SocketAddr, auth: Option<String>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Connection {
            sender,
            host: addr.to_string(),
            auth,
            prefer: TASK_PREFER,
        })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = self.request(method, path);
        self.send(request, body).await
    }

    /// A request with the headers every call carries.
    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            // Streams need these, tasks the last; every other endpoint ignores them.
            .header("x-producer-id", "bench")
            .header("x-consumer-id", "bench")
            .header("prefer", self.prefer);
        if let Some(auth) = &self.auth {
            request = request.header("authorization", auth);
        }
        request
    }

    async fn send(
        &mut self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let (status, _, body) = self.exchange(request, body).await?;
        Ok((status, body))
    }

    /// As [`Connection::send`], with the response's headers.
    async fn exchange(
        &mut self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let (head, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((head.status, head.headers, body))
    }
}

/// An access key the bench issued to a client of its own.
struct AwsKey {
    access_key_id: String,
    secret_access_key: String,
}

/// A caller of the SQS endpoint as an SDK is one: an access key, the queue it works
/// on, and the day's signing key.
#[derive(Clone)]
struct SqsCaller {
    key: Arc<AwsKey>,
    /// The queue's URL as CreateQueue answered it, written as a JSON string (quoted)
    /// for the request bodies.
    queue_url: Arc<str>,
    /// `(YYYYMMDD, signing key)`: derived once a day, as SDKs cache it; each
    /// connection's copy keeps its own, so no lock is shared.
    signing_key: Option<(String, [u8; 32])>,
}

impl SqsCaller {
    /// Creates the standard queue `queue` with CreateQueue as `key`; a caller working on it.
    async fn create_queue(
        addr: SocketAddr,
        key: Arc<AwsKey>,
        queue: &str,
    ) -> anyhow::Result<SqsCaller> {
        let mut caller = SqsCaller {
            key,
            queue_url: Arc::from(""),
            signing_key: None,
        };
        let mut conn = Connection::open(addr, None).await?;
        let body = format!(r#"{{"QueueName": {}}}"#, json_text(queue));
        let (status, answer) = caller.call(&mut conn, "CreateQueue", body).await?;
        anyhow::ensure!(
            status.is_success(),
            "CreateQueue {queue}: status {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let url = answer["QueueUrl"]
            .as_str()
            .context("CreateQueue answered no QueueUrl")?;
        caller.queue_url = json_text(url).into();
        Ok(caller)
    }

    // The request bodies as boto3 writes them (Python's `json.dumps`: `, ` and `: `).

    /// SendMessage's: seed 000's body, as `push` sends it.
    fn send_message_body(&self) -> String {
        format!(
            r#"{{"QueueUrl": {}, "MessageBody": {}}}"#,
            self.queue_url,
            json_text(SEED_BODY)
        )
    }

    /// ReceiveMessage's: one message, no wait.
    fn receive_message_body(&self) -> String {
        format!(
            r#"{{"QueueUrl": {}, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 0}}"#,
            self.queue_url
        )
    }

    /// DeleteMessage's, of the message received with `receipt_handle`.
    fn delete_message_body(&self, receipt_handle: &str) -> String {
        format!(
            r#"{{"QueueUrl": {}, "ReceiptHandle": {}}}"#,
            self.queue_url,
            json_text(receipt_handle)
        )
    }

    /// One AWS JSON 1.0 call of `action` on `conn`, with the headers boto3 signs,
    /// signed now.
    async fn call(
        &mut self,
        conn: &mut Connection,
        action: &str,
        body: String,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let target = format!("AmazonSQS.{action}");
        // Sorted by name, as the canonical request lists them.
        let headers = [
            ("content-type", JSON_CONTENT_TYPE),
            ("host", conn.host.as_str()),
            ("x-amz-date", amz_date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        let authorization = self.sign(&headers, body.as_bytes(), &amz_date);
        let mut request = Request::builder().method(Method::POST).uri(SQS_PATH);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.header("authorization", authorization);
        conn.send(request, Bytes::from(body)).await
    }

    /// The `Authorization` header of `POST /sqs` with `headers` (lowercase, sorted by
    /// name, each one signed) and `body`, made at `amz_date`: AWS Signature Version 4
    /// over the canonical request the verifier rebuilds.
    fn sign(&mut self, headers: &[(&str, &str)], body: &[u8], amz_date: &str) -> String {
        let hmac = |key: &[u8], data: &str| -> [u8; 32] {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
            mac.update(data.as_bytes());
            mac.finalize().into_bytes().into()
        };
        let date = &amz_date[..8];
        let signing_key = match &self.signing_key {
            Some((day, key)) if day == date => *key,
            _ => {
                let secret = format!("AWS4{}", self.key.secret_access_key);
                let key = [SQS_REGION, SERVICE, "aws4_request"]
                    .into_iter()
                    .fold(hmac(secret.as_bytes(), date), |key, part| hmac(&key, part));
                self.signing_key = Some((date.to_owned(), key));
                key
            }
        };
        let scope = format!("{date}/{SQS_REGION}/{SERVICE}/aws4_request");
        let signed: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
        let request = SignedRequest {
            method: "POST",
            path: SQS_PATH,
            query: "",
            headers,
            body,
        };
        let to_sign = client_string_to_sign(&request, &signed, amz_date, &scope);
        let signature: String = hmac(&signing_key, &to_sign)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            self.key.access_key_id,
            signed.join(";")
        )
    }
}

/// `text` as a JSON string, quoted and escaped.
fn json_text(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Creates the client `client`, allowed everything on `queues`, as the admin, and
/// issues it an access key.
async fn issue_aws_key(
    addr: SocketAddr,
    auth: &str,
    client: &str,
    queues: &[&str],
) -> anyhow::Result<AwsKey> {
    let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
    let grants: Vec<String> = queues
        .iter()
        .map(|queue| format!("queue:{queue}:*"))
        .collect();
    let body = serde_json::json!({ "id": client, "grants": grants });
    let (status, answer) = conn
        .call(
            Method::POST,
            "/api/v1/admin/clients",
            serde_json::to_vec(&body)?.into(),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "creating the client {client}: status {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let (status, answer) = conn
        .call(
            Method::POST,
            &format!("/api/v1/admin/clients/{client}/aws-keys"),
            Bytes::new(),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "issuing an access key to {client}: status {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    let issued: serde_json::Value = serde_json::from_slice(&answer)?;
    let field = |name: &str| {
        issued[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the issued key has no {name}"))
    };
    Ok(AwsKey {
        access_key_id: field("access_key_id")?,
        secret_access_key: field("secret_access_key")?,
    })
}

/// Deletes the queues of the pair and SQS scenarios, and the SQS scenarios' client
/// with its key.
async fn remove_sqs_leftovers(
    addr: SocketAddr,
    auth: &str,
    client: Option<&str>,
) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
    for queue in [SQS_SEND_QUEUE, SQS_RECEIVE_QUEUE, PAIR_QUEUE] {
        let (status, _) = conn
            .call(
                Method::DELETE,
                &format!("/api/v1/queues/{queue}"),
                Bytes::new(),
            )
            .await?;
        // A queue no scenario of this run made does not exist.
        anyhow::ensure!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "deleting {queue}: status {status}"
        );
    }
    if let Some(client) = client {
        let (status, _) = conn
            .call(
                Method::DELETE,
                &format!("/api/v1/admin/clients/{client}"),
                Bytes::new(),
            )
            .await?;
        anyhow::ensure!(status.is_success(), "deleting {client}: status {status}");
    }
    Ok(())
}

/// What a connection does in a loop; returns messages handled, or an error.
#[derive(Clone)]
enum Workload {
    Bare,
    Push,
    /// Pushes to the peer, with its headers.
    PeerPush(Arc<Peer>),
    ReceiveAck,
    /// A receive of one message from this queue, then its ack: one request counted.
    ReceiveAckOne(Arc<str>),
    /// SQS SendMessage of seed 000's body.
    SqsSend(SqsCaller),
    /// SQS ReceiveMessage of one message, then DeleteMessage of it: one request counted.
    SqsReceiveDelete(SqsCaller),
    /// Seed 004 events appended by one producer.
    Append,
    /// Reads of 1000 events (no ack, so every read returns a full page).
    Read,
    /// Task creates that wait for their result (workers run beside).
    Task,
    /// Durable Streams appends of one JSON message to the stream at this path.
    DsAppend(Arc<str>),
    /// Durable Streams catch-up reads of the stream at this path: from its start
    /// (`-1`), then from each answer's next offset until one is up to date, then
    /// from the start again.
    DsRead {
        path: Arc<str>,
        /// Where this connection's next read starts; the start when `None`.
        next: Option<String>,
    },
}

/// Seed 004's example event.
const SEED_EVENT: &str = r#"{"event":{"name":"OrderPlaced","version":1},"system":{"id":"alv123","name":"codello alvine","time":"2017-09-06 13:58:12","timezone":"Europe/Berlin"},"trigger":{"type":"system","name":"/path/to/script.php"},"payload":{}}"#;

/// One request (or two) of `workload`: the requests made, the messages they carried
/// and the response body bytes read.
async fn step(
    conn: &mut Connection,
    workload: &mut Workload,
    latency: &mut Histogram<u64>,
) -> anyhow::Result<(u64, u64, u64)> {
    match workload {
        Workload::Bare | Workload::Push => {
            let path = if matches!(workload, Workload::Bare) {
                "/"
            } else {
                "/api/v1/queues/bench/messages"
            };
            let started = Instant::now();
            let (status, _) = conn
                .call(Method::POST, path, Bytes::from_static(SEED_BODY.as_bytes()))
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "status {status}");
            Ok((1, 1, 0))
        }
        Workload::PeerPush(peer) => {
            let request = conn
                .request(Method::POST, &peer.path)
                .header("api-client-id", &peer.client_id);
            let started = Instant::now();
            let (status, _) = conn
                .send(request, Bytes::from_static(SEED_BODY.as_bytes()))
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "status {status}");
            Ok((1, 1, 0))
        }
        Workload::Task => {
            let started = Instant::now();
            let created = create_task(conn).await;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            created.map(|()| (1, 1, 0))
        }
        Workload::Append => {
            let started = Instant::now();
            let (status, _) = conn
                .call(
                    Method::POST,
                    "/api/v1/streams/bench/events",
                    Bytes::from_static(SEED_EVENT.as_bytes()),
                )
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "status {status}");
            Ok((1, 1, 0))
        }
        Workload::Read => {
            let started = Instant::now();
            let (status, body) = conn
                .call(
                    Method::GET,
                    "/api/v1/streams/bench/events?eventName=OrderPlaced&limit=1000",
                    Bytes::new(),
                )
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "status {status}");
            let events: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
            Ok((1, events.len() as u64, 0))
        }
        Workload::ReceiveAck => {
            let started = Instant::now();
            let (status, body) = conn
                .call(
                    Method::POST,
                    "/api/v1/queues/bench/receive?count=100",
                    Bytes::new(),
                )
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "status {status}");
            let received: serde_json::Value = serde_json::from_slice(&body)?;
            let receipts: Vec<&serde_json::Value> = received["messages"]
                .as_array()
                .map(|m| m.iter().map(|m| &m["receipt"]).collect())
                .unwrap_or_default();
            if receipts.is_empty() {
                anyhow::bail!("queue ran dry");
            }
            let ack = serde_json::to_vec(&serde_json::json!({ "receipts": receipts }))?;
            let started = Instant::now();
            let (status, _) = conn
                .call(Method::POST, "/api/v1/queues/bench/ack", ack.into())
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "ack status {status}");
            Ok((2, receipts.len() as u64, 0))
        }
        Workload::ReceiveAckOne(queue) => {
            let started = Instant::now();
            let (status, body) = conn
                .call(
                    Method::POST,
                    &format!("/api/v1/queues/{queue}/receive?count=1&wait=0"),
                    Bytes::new(),
                )
                .await?;
            anyhow::ensure!(status.is_success(), "status {status}");
            let received: serde_json::Value = serde_json::from_slice(&body)?;
            let receipt = &received["messages"][0]["receipt"];
            anyhow::ensure!(receipt.is_string(), "queue ran dry");
            let ack = serde_json::to_vec(&serde_json::json!({ "receipts": [receipt] }))?;
            let (status, _) = conn
                .call(
                    Method::POST,
                    &format!("/api/v1/queues/{queue}/ack"),
                    ack.into(),
                )
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "ack status {status}");
            Ok((1, 1, 0))
        }
        Workload::SqsSend(sqs) => {
            let started = Instant::now();
            let body = sqs.send_message_body();
            let (status, answer) = sqs.call(conn, "SendMessage", body).await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(
                status.is_success(),
                "status {status}: {}",
                String::from_utf8_lossy(&answer)
            );
            Ok((1, 1, 0))
        }
        Workload::SqsReceiveDelete(sqs) => {
            let started = Instant::now();
            let receive = sqs.receive_message_body();
            let (status, answer) = sqs.call(conn, "ReceiveMessage", receive).await?;
            anyhow::ensure!(status.is_success(), "status {status}");
            let received: serde_json::Value = serde_json::from_slice(&answer)?;
            let handle = received["Messages"][0]["ReceiptHandle"]
                .as_str()
                .context("queue ran dry")?;
            let delete = sqs.delete_message_body(handle);
            let (status, _) = sqs.call(conn, "DeleteMessage", delete).await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "delete status {status}");
            Ok((1, 1, 0))
        }
        Workload::DsAppend(path) => {
            let started = Instant::now();
            let (status, _) = conn
                .call(Method::POST, path, Bytes::from_static(SEED_BODY.as_bytes()))
                .await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status.is_success(), "status {status}");
            Ok((1, 1, 0))
        }
        Workload::DsRead { path, next } => {
            let offset = next.take().unwrap_or_else(|| "-1".to_owned());
            let request = conn.request(Method::GET, &format!("{path}?offset={offset}"));
            let started = Instant::now();
            let (status, headers, body) = conn.exchange(request, Bytes::new()).await?;
            latency.saturating_record(started.elapsed().as_micros() as u64);
            anyhow::ensure!(status == StatusCode::OK, "status {status}");
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            if header("stream-up-to-date") != Some("true") {
                let offset = header("stream-next-offset").context("no Stream-Next-Offset")?;
                *next = Some(offset.to_owned());
            }
            // Each message is seed 000's flat object: one `{` apiece, found without
            // parsing megabytes of JSON on the client's share of the cores.
            let messages = body.iter().filter(|byte| **byte == b'{').count() as u64;
            Ok((1, messages, body.len() as u64))
        }
    }
}

async fn drive(
    name: &str,
    addrs: &[SocketAddr],
    auth: Option<String>,
    workload: Workload,
    args: &BenchArgs,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let measure_from = started + args.warmup;
    let stop_at = measure_from + args.duration;
    let progress = Progress::start(name, None);
    let mut tasks = Vec::new();
    for index in 0..args.connections {
        let mut conn = Connection::open(addrs[index % addrs.len()], auth.clone()).await?;
        let mut workload = workload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = new_histogram();
            let mut scratch = new_histogram();
            let (mut requests, mut messages, mut bytes, mut errors) = (0u64, 0u64, 0u64, 0u64);
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                let measuring = now >= measure_from;
                let hist = if measuring {
                    &mut latency
                } else {
                    &mut scratch
                };
                match step(&mut conn, &mut workload, hist).await {
                    Ok((r, m, b)) if measuring => {
                        requests += r;
                        messages += m;
                        bytes += b;
                    }
                    Ok(_) => {}
                    Err(_) if measuring => errors += 1,
                    Err(_) => {}
                }
            }
            (latency, requests, messages, bytes, errors)
        }));
    }
    let mut figures = Figures {
        name: name.to_owned(),
        requests: 0,
        messages: 0,
        bytes: 0,
        errors: 0,
        elapsed: args.duration,
        latency: new_histogram(),
    };
    for task in tasks {
        let (latency, requests, messages, bytes, errors) = task.await?;
        figures.latency.add(latency)?;
        figures.requests += requests;
        figures.messages += messages;
        figures.bytes += bytes;
        figures.errors += errors;
    }
    progress.finish();
    Ok(figures)
}

/// Latencies in microseconds, 1 µs to 60 s, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds are valid")
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn wait_ready(addr: SocketAddr, path: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(mut conn) = Connection::open(addr, None).await {
            if let Ok((status, _)) = conn.call(Method::GET, path, Bytes::new()).await {
                if status.is_success() {
                    return Ok(started.elapsed());
                }
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "{addr} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_self(args: &[&str]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(args)
        .env("HOPPER_ADMIN_SECRET", ADMIN_SECRET)
        .env("HOPPER_SECRET_KEY", SECRET_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a child hopper")
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn serve_hopper(store: &str) -> anyhow::Result<(Child, SocketAddr)> {
    let addr = free_addr()?;
    let child = spawn_self(&["serve", "--listen", &addr.to_string(), "--store", store])?;
    wait_ready(addr, "/health").await?;
    Ok((child, addr))
}

/// Fills `queue` with `total` seed bodies, 1000 per batch push, over 4 connections.
async fn fill(addr: SocketAddr, auth: &str, queue: &str, total: usize) -> anyhow::Result<()> {
    let batch: Vec<serde_json::Value> = (0..1000)
        .map(|_| serde_json::from_str(SEED_BODY).expect("the seed body is JSON"))
        .collect();
    let body = Bytes::from(serde_json::to_vec(
        &serde_json::json!({ "messages": batch }),
    )?);
    let batches = total.div_ceil(1000);
    let progress = Arc::new(Progress::start(
        &format!("filling {queue}"),
        Some(batches as u64 * 1000),
    ));
    let path: Arc<str> = format!("/api/v1/queues/{queue}/messages/batch").into();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (auth, body, progress, path) = (
            auth.to_owned(),
            body.clone(),
            progress.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr, Some(auth)).await?;
            for _ in (worker..batches).step_by(4) {
                let (status, _) = conn.call(Method::POST, &path, body.clone()).await?;
                anyhow::ensure!(status.is_success(), "batch push: status {status}");
                progress.advance(1000);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    progress.finish();
    Ok(())
}

/// A worker: long-polls the task queue and completes every task it gets, until `stop`.
async fn task_worker(addr: SocketAddr, auth: String, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr, Some(auth)).await?;
    let receive = format!("/api/v1/queues/{TASK_QUEUE}/receive?wait=0.5");
    while !stop.load(Ordering::Relaxed) {
        let (status, body) = conn.call(Method::POST, &receive, Bytes::new()).await?;
        anyhow::ensure!(status.is_success(), "receive: status {status}");
        let received: serde_json::Value = serde_json::from_slice(&body)?;
        for message in received["messages"].as_array().into_iter().flatten() {
            let id = message["body"]["task_id"].as_str().unwrap_or_default();
            let answer =
                serde_json::json!({ "receipt": message["receipt"], "result": { "ok": true } });
            let (status, _) = conn
                .call(
                    Method::POST,
                    &format!("/api/v1/tasks/{id}/complete"),
                    serde_json::to_vec(&answer)?.into(),
                )
                .await?;
            anyhow::ensure!(status.is_success(), "complete: status {status}");
        }
    }
    Ok(())
}

/// One create that waits for its result; an answer other than 200 (finished) is an error.
async fn create_task(conn: &mut Connection) -> anyhow::Result<()> {
    let (status, _) = conn
        .call(
            Method::POST,
            &format!("/api/v1/tasks/{TASK_QUEUE}"),
            Bytes::from_static(SEED_BODY.as_bytes()),
        )
        .await?;
    anyhow::ensure!(status == StatusCode::OK, "create: status {status}");
    Ok(())
}

/// What a paced run sends: task creates, or plain pushes for comparison.
#[derive(Clone, Copy)]
enum Paced {
    /// A create that waits for its result (`create_task`).
    Task,
    /// A push of the seed body to a queue nobody receives from: one durable commit,
    /// the floor a task's latency is measured against.
    Push,
}

/// The queue of the paced pushes; not the task queue, so workers never see them.
const PACED_PUSH_QUEUE: &str = "bench-paced";

/// One paced request; an answer other than the expected one is an error.
async fn paced_request(conn: &mut Connection, what: Paced) -> anyhow::Result<()> {
    match what {
        Paced::Task => create_task(conn).await,
        Paced::Push => {
            let (status, _) = conn
                .call(
                    Method::POST,
                    &format!("/api/v1/queues/{PACED_PUSH_QUEUE}/messages"),
                    Bytes::from_static(SEED_BODY.as_bytes()),
                )
                .await?;
            anyhow::ensure!(status == StatusCode::CREATED, "push: status {status}");
            Ok(())
        }
    }
}

/// Sends `what` at `--task-rate` per second, round-robin over `--connections`
/// connections, timing each from its scheduled start, so a slow answer cannot hide
/// the ones that queue up behind it.
async fn paced(
    addr: SocketAddr,
    auth: &str,
    backend: &str,
    args: &BenchArgs,
    what: Paced,
) -> anyhow::Result<Figures> {
    let period = Duration::from_secs_f64(1.0 / args.task_rate);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let slots = ((args.warmup + args.duration).as_secs_f64() * args.task_rate) as u64;
    let lanes = args.connections as u64;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
        tasks.push(tokio::spawn(async move {
            let (mut latency, mut done, mut errors) = (new_histogram(), 0u64, 0u64);
            for slot in (lane..slots).step_by(lanes as usize) {
                let at = start + period.mul_f64(slot as f64);
                tokio::time::sleep_until(at.into()).await;
                let answered = paced_request(&mut conn, what).await;
                if at < measure_from {
                    continue;
                }
                latency.saturating_record(at.elapsed().as_micros() as u64);
                match answered {
                    Ok(()) => done += 1,
                    Err(_) => errors += 1,
                }
            }
            (latency, done, errors)
        }));
    }
    let kind = match what {
        Paced::Task => "tasks",
        Paced::Push => "push",
    };
    let mut figures = Figures {
        name: format!("{kind}@{}/s {backend}", args.task_rate),
        requests: 0,
        messages: 0,
        bytes: 0,
        errors: 0,
        elapsed: args.duration,
        latency: new_histogram(),
    };
    for task in tasks {
        let (latency, done, errors) = task.await?;
        figures.latency.add(latency)?;
        figures.requests += done;
        figures.messages += done;
        figures.errors += errors;
    }
    Ok(figures)
}

/// The `tasks` scenario: workers on, then paced pushes and paced tasks at `--task-rate`,
/// then tasks as fast as they go.
async fn bench_tasks(
    addr: SocketAddr,
    auth: &str,
    backend: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
    let (status, _) = conn
        .call(
            Method::PUT,
            &format!("/api/v1/queues/{TASK_QUEUE}"),
            Bytes::from_static(b"{}"),
        )
        .await?;
    anyhow::ensure!(
        status.is_success(),
        "creating the task queue: status {status}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.task_workers)
        .map(|_| tokio::spawn(task_worker(addr, auth.to_owned(), stop.clone())))
        .collect();
    // Pushes first, at the same pace and with the workers polling: the same load on the
    // store but for the task path itself.
    paced(addr, auth, backend, args, Paced::Push)
        .await?
        .print(None);
    paced(addr, auth, backend, args, Paced::Task)
        .await?
        .print(None);
    let mut most = drive(
        &format!("tasks-max {backend}"),
        &[addr],
        Some(auth.to_owned()),
        Workload::Task,
        args,
    )
    .await?;
    most.messages = most.requests;
    most.print(None);
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

/// CPU time (user + system) of a process so far, from `/proc` (Linux's 100 ticks a second).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The `task-waiters` scenario: `--task-waiters` creates each waiting for a result no
/// worker gives; the server's memory per waiter, and its CPU while they all wait.
async fn bench_task_waiters(
    addr: SocketAddr,
    pid: u32,
    auth: &str,
    backend: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let queue = "bench-waiters";
    let mut control = Connection::open(addr, Some(auth.to_owned())).await?;
    control
        .call(
            Method::PUT,
            &format!("/api/v1/queues/{queue}"),
            Bytes::from_static(b"{}"),
        )
        .await?;
    let rss_before = rss_mb(pid).unwrap_or(f64::NAN);
    let opened_at = Instant::now();
    // Connections open a few hundred at a time, within the listen backlog.
    let opening = Arc::new(tokio::sync::Semaphore::new(256));
    let mut waiters = Vec::with_capacity(args.task_waiters);
    for _ in 0..args.task_waiters {
        let (auth, opening) = (auth.to_owned(), opening.clone());
        waiters.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await?;
            let mut conn = Connection::open(addr, Some(auth))
                .await
                .context("opening a waiter's connection (raise `ulimit -n`?)")?;
            drop(permit);
            // Longer than the whole scenario: every waiter is still waiting when it ends.
            conn.prefer = "wait=60";
            conn.call(
                Method::POST,
                &format!("/api/v1/tasks/{queue}"),
                Bytes::from_static(SEED_BODY.as_bytes()),
            )
            .await
        }));
    }
    let started = Instant::now();
    loop {
        let (_, info) = control
            .call(
                Method::GET,
                &format!("/api/v1/queues/{queue}"),
                Bytes::new(),
            )
            .await?;
        let info: serde_json::Value = serde_json::from_slice(&info)?;
        if info["tasks"]["pending"].as_u64() == Some(args.task_waiters as u64) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(50),
            "the waiters' tasks were not all created: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created_in = opened_at.elapsed();
    // The store settles (WAL checkpoint, sweep) before the idle window is timed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_waiting = rss_mb(pid).unwrap_or(f64::NAN);
    let window = Duration::from_secs(5);
    let cpu_before = cpu_time(pid).context("cannot read the server's CPU time")?;
    tokio::time::sleep(window).await;
    let cpu_after = cpu_time(pid).context("cannot read the server's CPU time")?;
    let still_waiting = waiters.iter().filter(|w| !w.is_finished()).count();
    println!(
        "task-waiters {backend} {} requests waiting (created in {:.1} s, {} still waiting at the end): RSS {:.1} MB -> {:.1} MB ({:.1} KB per waiter); CPU while they wait {:.2}% of one core",
        args.task_waiters,
        created_in.as_secs_f64(),
        still_waiting,
        rss_before,
        rss_waiting,
        (rss_waiting - rss_before) * 1024.0 / args.task_waiters as f64,
        100.0 * (cpu_after - cpu_before).as_secs_f64() / window.as_secs_f64()
    );
    for waiter in waiters {
        waiter.abort();
    }
    Ok(())
}

/// A queue's counts and delivery state.
async fn queue_info(conn: &mut Connection, queue: &str) -> anyhow::Result<serde_json::Value> {
    let (_, info) = conn
        .call(
            Method::GET,
            &format!("/api/v1/queues/{queue}"),
            Bytes::new(),
        )
        .await?;
    Ok(serde_json::from_slice(&info)?)
}

/// The `deliver` scenario: `--deliver-messages` queued, then delivery turned on to
/// the bare handler; deliveries per second until the queue is empty.
async fn bench_deliver(
    addr: SocketAddr,
    upstream: SocketAddr,
    pid: u32,
    auth: &str,
    backend: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let queue = "bench-deliver";
    fill(addr, auth, queue, args.deliver_messages).await?;
    let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
    let settings = serde_json::json!({ "delivery": {
        "url": format!("http://{upstream}/hook"), "concurrency": args.deliver_concurrency } });
    let cpu_before = cpu_time(pid).context("cannot read the server's CPU time")?;
    let started = Instant::now();
    conn.call(
        Method::PUT,
        &format!("/api/v1/queues/{queue}"),
        serde_json::to_vec(&settings)?.into(),
    )
    .await?;
    loop {
        let info = queue_info(&mut conn, queue).await?;
        let left = ["ready", "leased", "delayed"]
            .iter()
            .map(|k| info[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "delivery stalled: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid).context("cannot read the server's CPU time")? - cpu_before;
    println!(
        "deliver {backend} {} messages delivered to a local upstream in {:.1} s: {:.0} deliveries/s (concurrency {}); server CPU {:.0}% of one core",
        args.deliver_messages,
        elapsed.as_secs_f64(),
        args.deliver_messages as f64 / elapsed.as_secs_f64(),
        args.deliver_concurrency,
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
    Ok(())
}

/// The `breaker` scenario: an upstream that refuses every call; Hopper's CPU once
/// the breaker is open, with messages waiting.
async fn bench_breaker(
    addr: SocketAddr,
    pid: u32,
    auth: &str,
    backend: &str,
) -> anyhow::Result<()> {
    let queue = "bench-breaker";
    fill(addr, auth, queue, 10_000).await?;
    // Nothing listens there: every call fails at once.
    let dead = free_addr()?;
    let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
    let settings = serde_json::json!({ "max_attempts": 1000, "delivery": {
        "url": format!("http://{dead}/hook"), "concurrency": 64 } });
    conn.call(
        Method::PUT,
        &format!("/api/v1/queues/{queue}"),
        serde_json::to_vec(&settings)?.into(),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(10);
    let cpu_before = cpu_time(pid).context("cannot read the server's CPU time")?;
    tokio::time::sleep(window).await;
    let cpu = cpu_time(pid).context("cannot read the server's CPU time")? - cpu_before;
    let info = queue_info(&mut conn, queue).await?;
    println!(
        "breaker {backend} upstream down, 10000 messages waiting: server CPU {:.2}% of one core over {} s; {} failed attempts; breaker {}",
        100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
        window.as_secs(),
        info["delivery"]["failed_attempts"],
        info["delivery"]["breakers"]
    );
    Ok(())
}

/// Creates the JSON stream `bench-<pid>-<role>` under `base` on the server at
/// `addr` and appends `fill` messages to it, [`DS_FILL_BATCH`] per request; returns
/// its path. The process id in the name keeps a run clear of what an earlier one
/// left on a server that persists its streams.
async fn ds_stream(
    addr: SocketAddr,
    auth: Option<&str>,
    base: &str,
    role: &str,
    fill: usize,
) -> anyhow::Result<String> {
    let path = format!("{base}/bench-{}-{role}", std::process::id());
    let mut conn = Connection::open(addr, auth.map(str::to_owned)).await?;
    let (status, answer) = conn.call(Method::PUT, &path, Bytes::new()).await?;
    anyhow::ensure!(
        status.is_success(),
        "creating {path}: status {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    if fill == 0 {
        return Ok(path);
    }
    let batch = Bytes::from(format!("[{}]", vec![SEED_BODY; DS_FILL_BATCH].join(",")));
    let batches = fill.div_ceil(DS_FILL_BATCH);
    let progress = Progress::start(
        &format!("filling {path}"),
        Some((batches * DS_FILL_BATCH) as u64),
    );
    for _ in 0..batches {
        let (status, _) = conn.call(Method::POST, &path, batch.clone()).await?;
        anyhow::ensure!(status.is_success(), "appending to {path}: status {status}");
        progress.advance(DS_FILL_BATCH as u64);
    }
    progress.finish();
    Ok(path)
}

/// Deletes what [`ds_stream`] made, so that a server keeping its streams is not left
/// holding them; failing that costs no figures.
async fn ds_remove(addr: SocketAddr, auth: Option<&str>, paths: &[String]) {
    let removed = async {
        let mut conn = Connection::open(addr, auth.map(str::to_owned)).await?;
        for path in paths {
            conn.call(Method::DELETE, path, Bytes::new()).await?;
        }
        anyhow::Ok(())
    };
    if let Err(error) = removed.await {
        eprintln!("{addr}: the bench streams are left behind: {error:#}");
    }
}

/// The `ds-append` and `ds-read` scenarios against the server at `addrs` (Hopper's
/// nodes, or a `--peer-ds`), whose streams live under `base`; the lines are named
/// `<prefix>ds-append <label>` and `<prefix>ds-read <label>`.
async fn bench_ds(
    addrs: &[SocketAddr],
    auth: Option<&str>,
    base: &str,
    prefix: &str,
    label: &str,
    baseline: Option<f64>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let mut made = Vec::new();
    if args.wants(&format!("{prefix}ds-append")) {
        let path = ds_stream(addrs[0], auth, base, "append", 0).await?;
        made.push(path.clone());
        drive(
            &format!("{prefix}ds-append {label}"),
            addrs,
            auth.map(str::to_owned),
            Workload::DsAppend(path.into()),
            args,
        )
        .await?
        .print(baseline);
    }
    if args.wants(&format!("{prefix}ds-read")) {
        let path = ds_stream(addrs[0], auth, base, "read", args.ds_read_messages).await?;
        made.push(path.clone());
        drive(
            &format!("{prefix}ds-read {label}"),
            addrs,
            auth.map(str::to_owned),
            Workload::DsRead {
                path: path.into(),
                next: None,
            },
            args,
        )
        .await?
        .print(baseline);
    }
    ds_remove(addrs[0], auth, &made).await;
    Ok(())
}

/// Runs the benchmark and prints one line per scenario.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stores = if args.store.is_empty() {
        vec![format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        )]
    } else {
        args.store.clone()
    };
    // A mistyped URL is told here, not as a server that never comes up.
    for store in &stores {
        crate::store::backend_of(store)?;
    }
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_SECRET}"))
    );
    println!(
        "hopper bench: {} connections, {:?} per scenario after {:?} warm-up, {} node(s), store {}",
        args.connections,
        args.duration,
        args.warmup,
        args.nodes,
        stores.join(", ")
    );
    let bare_addr = free_addr()?;
    let _bare = spawn_self(&["bare", "--listen", &bare_addr.to_string()])?;
    wait_ready(bare_addr, "/").await?;
    let mut baseline = None;
    if args.wants("bare") {
        let figures = drive("bare", &[bare_addr], None, Workload::Bare, &args).await?;
        baseline = Some(figures.requests_per_second());
        figures.print(None);
    }
    if args.wants("peer-push") {
        let peer = Peer::from_args(&args).await?;
        let auth = Some(format!("Bearer {}", peer.token));
        let addrs = [peer.addr];
        drive(
            "peer-push",
            &addrs,
            auth,
            Workload::PeerPush(Arc::new(peer)),
            &args,
        )
        .await?
        .print(baseline);
    }
    if args.wants("peer-ds-append") || args.wants("peer-ds-read") {
        anyhow::ensure!(
            !args.peer_ds.is_empty(),
            "peer-ds-append and peer-ds-read need --peer-ds"
        );
        for spec in &args.peer_ds {
            let peer = DsPeer::parse(spec).await?;
            bench_ds(
                &[peer.addr],
                None,
                &peer.base,
                "peer-",
                &peer.label,
                baseline,
                &args,
            )
            .await?;
        }
    }
    // None of those needs a server.
    if args
        .scenarios
        .iter()
        .all(|s| ["bare", "peer-push", "peer-ds-append", "peer-ds-read"].contains(&s.as_str()))
    {
        return Ok(());
    }
    for store in &stores {
        bench_store(store, bare_addr, &auth, baseline, &args).await?;
    }
    Ok(())
}

/// Runs the server's scenarios on one store, each line labelled with its backend.
async fn bench_store(
    store: &str,
    bare_addr: SocketAddr,
    auth: &str,
    baseline: Option<f64>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let backend = store.split_once("://").map_or(store, |(scheme, _)| scheme);
    let label = |scenario: &str| format!("{scenario} {backend}");
    let auth = auth.to_owned();
    let (mut server, mut addr) = serve_hopper(store).await?;
    // Further nodes share the store; connections are spread over every node.
    let mut others = Vec::new();
    for _ in 1..args.nodes.max(1) {
        others.push(serve_hopper(store).await?);
    }
    let nodes: Vec<SocketAddr> = std::iter::once(addr)
        .chain(others.iter().map(|(_, a)| *a))
        .collect();
    if args.wants("push") {
        drive(
            &label("push"),
            &nodes,
            Some(auth.clone()),
            Workload::Push,
            args,
        )
        .await?
        .print(baseline);
    }
    if args.wants("push-token") {
        let token = login(addr).await?;
        drive(
            &label("push-token"),
            &nodes,
            Some(format!("Bearer {token}")),
            Workload::Push,
            args,
        )
        .await?
        .print(baseline);
    }
    // The SQS scenarios' client is the run's own: the process id keeps it clear of
    // what an earlier run left in a store that persists.
    let sqs_client = (args.wants("sqs-send") || args.wants("sqs-receive"))
        .then(|| format!("bench-sqs-{}", std::process::id()));
    let sqs_key = match &sqs_client {
        Some(client) => Some(Arc::new(
            issue_aws_key(addr, &auth, client, &[SQS_SEND_QUEUE, SQS_RECEIVE_QUEUE]).await?,
        )),
        None => None,
    };
    if let Some(key) = sqs_key.as_ref().filter(|_| args.wants("sqs-send")) {
        let caller = SqsCaller::create_queue(addr, key.clone(), SQS_SEND_QUEUE).await?;
        drive(
            &label("sqs-send"),
            &nodes,
            None,
            Workload::SqsSend(caller),
            args,
        )
        .await?
        .print(baseline);
    }
    if args.wants("receive-ack") {
        // Enough messages that the consumers never run dry: 400k/s is well above what
        // this scenario reaches on a 2-core machine.
        let seconds = (args.warmup + args.duration).as_secs_f64().ceil() as usize;
        fill(addr, &auth, "bench", 400_000 * seconds).await?;
        drive(
            &label("receive-ack"),
            &nodes,
            Some(auth.clone()),
            Workload::ReceiveAck,
            args,
        )
        .await?
        .print(baseline);
    }
    let pairs = PAIRS_PER_SECOND * (args.warmup + args.duration).as_secs_f64().ceil() as usize;
    if args.wants("receive-ack-1") {
        fill(addr, &auth, PAIR_QUEUE, pairs).await?;
        drive(
            &label("receive-ack-1"),
            &nodes,
            Some(auth.clone()),
            Workload::ReceiveAckOne(PAIR_QUEUE.into()),
            args,
        )
        .await?
        .print(baseline);
    }
    if let Some(key) = sqs_key.filter(|_| args.wants("sqs-receive")) {
        let caller = SqsCaller::create_queue(addr, key, SQS_RECEIVE_QUEUE).await?;
        fill(addr, &auth, SQS_RECEIVE_QUEUE, pairs).await?;
        drive(
            &label("sqs-receive"),
            &nodes,
            None,
            Workload::SqsReceiveDelete(caller),
            args,
        )
        .await?
        .print(baseline);
    }
    if args.wants("append") {
        drive(
            &label("append"),
            &nodes,
            Some(auth.clone()),
            Workload::Append,
            args,
        )
        .await?
        .print(baseline);
    }
    if args.wants("read") {
        drive(
            &label("read"),
            &nodes,
            Some(auth.clone()),
            Workload::Read,
            args,
        )
        .await?
        .print(baseline);
    }
    if args.wants("ds-append") || args.wants("ds-read") {
        bench_ds(&nodes, Some(&auth), DS_BASE, "", backend, baseline, args).await?;
    }
    if args.wants("tasks") {
        bench_tasks(addr, &auth, backend, args).await?;
    }
    if args.wants("task-waiters") {
        let pid = server.id().context("the server has exited")?;
        bench_task_waiters(addr, pid, &auth, backend, args).await?;
    }
    if args.wants("deliver") {
        let pid = server.id().context("the server has exited")?;
        bench_deliver(addr, bare_addr, pid, &auth, backend, args).await?;
    }
    if args.wants("breaker") {
        let pid = server.id().context("the server has exited")?;
        bench_breaker(addr, pid, &auth, backend).await?;
    }
    if args.wants("capacity") {
        purge(addr, &auth).await?;
        let started = Instant::now();
        fill(addr, &auth, "bench", args.capacity_messages).await?;
        let filled = started.elapsed();
        let pid = server.id().context("the server has exited")?;
        let rss = rss_mb(pid).unwrap_or(f64::NAN);
        server.kill().await?;
        server.wait().await?;
        let restart_started = Instant::now();
        let (restarted, restarted_addr) = serve_hopper(store).await?;
        let restart = restart_started.elapsed();
        (server, addr) = (restarted, restarted_addr);
        let mut conn = Connection::open(addr, Some(auth.clone())).await?;
        let (_, info) = conn
            .call(Method::GET, "/api/v1/queues/bench", Bytes::new())
            .await?;
        let info: serde_json::Value = serde_json::from_slice(&info)?;
        let rss_after = server.id().and_then(rss_mb).unwrap_or(f64::NAN);
        println!(
            "{:<20} {} messages queued in {:.1} s; RSS {:.1} MB; after kill -9, ready again in {} ms (RSS {:.1} MB, ready count {})",
            label("capacity"),
            args.capacity_messages,
            filled.as_secs_f64(),
            rss,
            restart.as_millis(),
            rss_after,
            info["ready"]
        );
    }
    // What the scenarios queued is not left behind in a shared store; failing that
    // costs no figures, so the next store still runs.
    if let Err(error) = purge(addr, &auth).await {
        eprintln!("{backend}: the bench queue is left full: {error:#}");
    }
    if let Err(error) = remove_sqs_leftovers(addr, &auth, sqs_client.as_deref()).await {
        eprintln!(
            "{backend}: the SQS and pair scenarios' queues or client are left behind: {error:#}"
        );
    }
    let _ = server.kill().await;
    if let Some(path) = store.strip_prefix("sqlite://") {
        let _ = std::fs::remove_file(Path::new(path));
    }
    Ok(())
}

/// Empties the `bench` queue.
async fn purge(addr: SocketAddr, auth: &str) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr, Some(auth.to_owned())).await?;
    let (status, _) = conn
        .call(Method::POST, "/api/v1/queues/bench/purge", Bytes::new())
        .await?;
    // The queue does not exist until a scenario pushes to it.
    anyhow::ensure!(
        status.is_success() || status == StatusCode::NOT_FOUND,
        "purge: status {status}"
    );
    Ok(())
}

/// Logs the admin in and returns its token.
async fn login(addr: SocketAddr) -> anyhow::Result<String> {
    let mut conn = Connection::open(addr, None).await?;
    let body = serde_json::json!({ "username": "admin", "password": ADMIN_SECRET });
    let (status, answer) = conn
        .call(
            Method::POST,
            "/api/v1/auth/login",
            serde_json::to_vec(&body)?.into(),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "login answered {status}");
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .context("the login answer has no token")
}

/// A bar for a long step on a terminal; elsewhere (a log, CI) a plain line when it
/// begins and another when it ends, so a log shows where the time went.
struct Progress {
    bar: indicatif::ProgressBar,
    label: String,
    started: Instant,
    plain: bool,
}

impl Progress {
    /// A step of `total` units (`None`: a spinner for a step of unknown length).
    fn start(label: &str, total: Option<u64>) -> Progress {
        let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = match total {
            Some(total) => indicatif::ProgressBar::new(total).with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:<12} [{bar:40}] {human_pos}/{human_len} ({eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => {
                let spinner = indicatif::ProgressBar::new_spinner();
                spinner.enable_steady_tick(Duration::from_millis(200));
                spinner
            }
        }
        .with_message(label.to_owned());
        if plain {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            match total {
                Some(total) => eprintln!("{label}: {total} to go"),
                None => eprintln!("{label}: running"),
            }
        }
        Progress {
            bar,
            label: label.to_owned(),
            started: Instant::now(),
            plain,
        }
    }

    fn advance(&self, units: u64) {
        self.bar.inc(units);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        if self.plain {
            eprintln!(
                "{}: done in {:.1} s",
                self.label,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Serves the bare baseline: 200 `{"status":"OK"}` to any request, no storage, no auth.
pub async fn serve_bare(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let answer = || async { ([("content-type", "application/json")], r#"{"status":"OK"}"#) };
    let app = axum::Router::new().fallback(answer);
    // As `hopper serve` does, so the baseline differs only by what Hopper adds.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SendMessage as boto3 1.44.8 writes and signs it (botocore's `SigV4Auth` for
    /// `sqs` in `us-east-1`, its clock set to 2026-05-04T12:34:56Z): the same body,
    /// signed headers and signature.
    #[test]
    fn sqs_requests_are_written_and_signed_as_boto3_does() {
        let mut caller = SqsCaller {
            key: Arc::new(AwsKey {
                access_key_id: "HOPRABCDEFGHIJ234567".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            }),
            queue_url: json_text("http://127.0.0.1:4000/sqs/000000000000/bench-sqs-send").into(),
            signing_key: None,
        };
        let body = caller.send_message_body();
        assert_eq!(
            body,
            r#"{"QueueUrl": "http://127.0.0.1:4000/sqs/000000000000/bench-sqs-send", "MessageBody": "{\"user_id\":123,\"app_id\":222,\"item_id\":4,\"quantity\":5}"}"#
        );
        let headers = [
            ("content-type", JSON_CONTENT_TYPE),
            ("host", "127.0.0.1:4000"),
            ("x-amz-date", "20260504T123456Z"),
            ("x-amz-target", "AmazonSQS.SendMessage"),
        ];
        let boto3 = "AWS4-HMAC-SHA256 Credential=HOPRABCDEFGHIJ234567/20260504/us-east-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=c286349063f7607e91d74af4b140c3f5745856dec0b90e262fda17713d66df14";
        assert_eq!(
            caller.sign(&headers, body.as_bytes(), "20260504T123456Z"),
            boto3
        );
        // Again with the day's signing key cached.
        assert_eq!(
            caller.sign(&headers, body.as_bytes(), "20260504T123456Z"),
            boto3
        );
    }
}

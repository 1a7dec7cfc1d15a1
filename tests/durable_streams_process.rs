//! The Durable Streams protocol served by the compiled binary, as a process
//! ([`common::serve::ServeProcess`]), for what only a process shows:
//!
//! - an idempotent producer whose server is killed with SIGKILL in the middle of its
//!   sequence, many requests in flight, retries what it got no answer to once the
//!   server is back, and the log holds every message once, in order;
//! - 10,000 idle SSE readers cost the server memory but no CPU time, and one append
//!   reaches every one of them.
//!
//! Each test runs on every backend that holds the byte log, on a store of its own
//! (`sqlite::…`; a backend's trials are ignored when it is not configured).

// The `trials!` macro has no section for the backends with the log: `main` builds
// the trials itself.
#[allow(unused_macros, unused_imports)]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::serve::ServeProcess;
use common::{Backend, BackendKind, Runtime, ADMIN_SECRET};
use libtest_mimic::Trial;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};

/// The stores the kill is tried on: a Hopper killed with SIGKILL loses nothing it
/// answered on any of them.
const KILL_BACKENDS: &[BackendKind] = &[
    BackendKind::Sqlite,
    BackendKind::Postgres,
    BackendKind::Redis,
];
/// The store the 10,000 readers wait on: what they cost is Hopper's, not the store's.
const READER_BACKENDS: &[BackendKind] = &[BackendKind::Sqlite];

fn main() {
    let mut trials: Vec<Trial> = common::on_backends(
        KILL_BACKENDS,
        "a_producer_killed_mid_sequence_resumes_with_each_message_once",
        Runtime::MultiThread(4),
        a_producer_killed_mid_sequence_resumes_with_each_message_once,
    );
    let readers = "ten_thousand_idle_sse_readers_cost_memory_not_cpu";
    match raise_open_file_limit(READERS as u64 + SPARE_FILES) {
        Ok(()) => trials.extend(common::on_backends(
            READER_BACKENDS,
            readers,
            Runtime::MultiThread(2),
            ten_thousand_idle_sse_readers_cost_memory_not_cpu,
        )),
        Err(why) => trials.extend(READER_BACKENDS.iter().map(|kind| {
            let why = why.clone();
            Trial::test(format!("{}::{readers}", kind.label()), move || {
                Err(why.into())
            })
            .with_ignored_flag(true)
        })),
    }
    common::run_trials(trials)
}

fn stream_url(server: &ServeProcess, name: &str) -> String {
    format!("{}/api/v1/stream/{name}", server.base_url())
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn header_number(response: &reqwest::Response, name: &str) -> Option<u64> {
    header(response, name).and_then(|v| v.parse().ok())
}

/// Creates the JSON stream at `url` as the admin; asserts 201, returns its tail.
async fn create_json_stream(client: &reqwest::Client, url: &str) -> String {
    let created = client
        .put(url)
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "creating {url}");
    header(&created, "stream-next-offset")
        .expect("a create answers the tail")
        .to_owned()
}

/// Every message of the JSON stream at `url`, read from the beginning one catch-up
/// read after another until the stream says the reader is up to date.
async fn read_all(client: &reqwest::Client, url: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut offset = "-1".to_owned();
    loop {
        let read = client
            .get(format!("{url}?offset={offset}"))
            .basic_auth("admin", Some(ADMIN_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), StatusCode::OK, "reading {url} at {offset}");
        let up_to_date = header(&read, "stream-up-to-date") == Some("true");
        offset = header(&read, "stream-next-offset")
            .expect("a read answers the next offset")
            .to_owned();
        let page: Vec<Value> = read.json().await.unwrap();
        messages.extend(page);
        if up_to_date {
            return messages;
        }
    }
}

/// Messages the producer sends, one per request.
const MESSAGES: u64 = 2000;
/// Requests of the producer in flight at once: enough that a kill always cuts some
/// off, and that they often reach the store out of order (a seq gap, answered 409).
const IN_FLIGHT: usize = 16;
/// Appends acknowledged before the kill, well inside the sequence.
const ACKED_BEFORE_KILL: usize = 600;
const PRODUCER_ID: &str = "orders-writer";

/// The message of the producer's request `seq`.
fn message(seq: u64) -> Value {
    json!({"seq": seq, "producer": PRODUCER_ID, "order": {"id": format!("o-{seq}"), "quantity": seq % 7 + 1}})
}

/// What the producer knows of one of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Not sent yet.
    Unsent,
    /// `200`: appended now.
    Stored,
    /// `204`: a retry of an append the stream already holds.
    Duplicate,
    /// Sent, but the server went away before it answered.
    Unanswered,
}

/// The producer's view of its sequence, shared by its requests.
struct Sequence {
    /// By seq.
    answers: Vec<Answer>,
    /// A request got no answer: no new ones start, and those waiting for an earlier
    /// seq give up.
    server_gone: bool,
    /// `409` seq gaps answered, each waited out and retried.
    gaps: u64,
}

impl Sequence {
    fn count(&self, answer: Answer) -> usize {
        self.answers.iter().filter(|a| **a == answer).count()
    }

    fn seqs(&self, wanted: impl Fn(Answer) -> bool) -> Vec<u64> {
        (0..MESSAGES)
            .filter(|seq| wanted(self.answers[*seq as usize]))
            .collect()
    }
}

/// An idempotent producer in epoch 0, as the protocol's client pipelines one: seqs
/// go out in order, up to [`IN_FLIGHT`] at once, and a request that overtook an
/// earlier one (`409` with `Producer-Expected-Seq` below its seq) waits for the
/// earlier ones' answers and is sent again.
struct Producer {
    client: reqwest::Client,
    url: String,
    sequence: Arc<watch::Sender<Sequence>>,
}

impl Producer {
    /// Sends `seqs` in order; stops starting new ones once the server is gone, and
    /// returns when every one sent has its answer (or never will).
    async fn send_all(self: Arc<Self>, seqs: Vec<u64>) {
        let window = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut requests = tokio::task::JoinSet::new();
        for seq in seqs {
            let permit = window.clone().acquire_owned().await.unwrap();
            if self.sequence.borrow().server_gone {
                break;
            }
            let producer = self.clone();
            requests.spawn(async move {
                let answer = producer.send(seq).await;
                producer.sequence.send_modify(|sequence| {
                    sequence.answers[seq as usize] = answer;
                    sequence.server_gone |= answer == Answer::Unanswered;
                });
                drop(permit);
            });
        }
        while let Some(request) = requests.join_next().await {
            // A failed assertion in a request fails the test.
            request.unwrap();
        }
    }

    async fn send(&self, seq: u64) -> Answer {
        loop {
            let sent = self
                .client
                .post(&self.url)
                .basic_auth("admin", Some(ADMIN_SECRET))
                .header("content-type", "application/json")
                .header("producer-id", PRODUCER_ID)
                .header("producer-epoch", "0")
                .header("producer-seq", seq.to_string())
                .body(message(seq).to_string())
                .send()
                .await;
            let Ok(response) = sent else {
                return Answer::Unanswered;
            };
            let echoed = header_number(&response, "producer-seq");
            match response.status() {
                StatusCode::OK => {
                    assert_eq!(echoed, Some(seq), "a new append echoes its own seq");
                    return Answer::Stored;
                }
                StatusCode::NO_CONTENT => {
                    assert!(
                        echoed >= Some(seq),
                        "a duplicate of seq {seq} echoes the producer's last seq, got {echoed:?}"
                    );
                    return Answer::Duplicate;
                }
                StatusCode::CONFLICT => {
                    let expected = header_number(&response, "producer-expected-seq")
                        .expect("a seq gap names the seq expected");
                    assert!(
                        expected < seq,
                        "seq {seq} refused as a gap, yet the stream expects {expected}"
                    );
                    self.sequence.send_modify(|sequence| sequence.gaps += 1);
                    let mut sequence = self.sequence.subscribe();
                    let gone = sequence
                        .wait_for(|sequence| {
                            sequence.server_gone
                                || sequence.answers[expected as usize..seq as usize]
                                    .iter()
                                    .all(|a| matches!(a, Answer::Stored | Answer::Duplicate))
                        })
                        .await
                        .unwrap()
                        .server_gone;
                    if gone {
                        return Answer::Unanswered;
                    }
                }
                status => panic!(
                    "seq {seq}: unexpected {status}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
    }

    /// The seq the stream expects next from this producer, as a request far past it
    /// is told (`409` with `Producer-Expected-Seq`; nothing is stored).
    async fn expected_seq(&self) -> u64 {
        let probe = self
            .client
            .post(&self.url)
            .basic_auth("admin", Some(ADMIN_SECRET))
            .header("content-type", "application/json")
            .header("producer-id", PRODUCER_ID)
            .header("producer-epoch", "0")
            .header("producer-seq", (MESSAGES + 1000).to_string())
            .body(json!({"probe": true}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            probe.status(),
            StatusCode::CONFLICT,
            "a seq far ahead is a gap"
        );
        header_number(&probe, "producer-expected-seq").expect("a gap names the seq expected")
    }
}

/// SIGKILL while an idempotent producer has many appends in flight, then a restart
/// on the same store: the producer retries every request it got no answer to (same
/// seq), then goes on. Each append answered 2xx before the kill is in the log once;
/// a retry is a duplicate (204) exactly when the stream held it already; the stream
/// expects the seq after its last message; the log ends as seqs 0..N in order.
async fn a_producer_killed_mid_sequence_resumes_with_each_message_once(backend: Backend) {
    let store = backend.isolated_store();
    let mut server = ServeProcess::start(&store.url, store.dir.path(), "");
    let url = stream_url(&server, "orders");
    create_json_stream(&http_client(), &url).await;
    let sequence = Arc::new(watch::Sender::new(Sequence {
        answers: vec![Answer::Unsent; MESSAGES as usize],
        server_gone: false,
        gaps: 0,
    }));
    let producer = Arc::new(Producer {
        client: http_client(),
        url: url.clone(),
        sequence: sequence.clone(),
    });
    let mut sending = tokio::spawn(producer.clone().send_all((0..MESSAGES).collect()));
    let mut progress = sequence.subscribe();
    tokio::select! {
        reached = progress.wait_for(|s| s.count(Answer::Stored) >= ACKED_BEFORE_KILL) => {
            reached.unwrap();
        }
        ended = &mut sending => {
            ended.unwrap();
            panic!("the producer ended before the kill: {}", server.log());
        }
    }
    // Up to a millisecond later, so that over runs the kill lands at every step of
    // the next append's commit, sometimes after it and before its answer.
    std::thread::sleep(Duration::from_micros(rand::random::<u64>() % 1000));
    server.kill_hard();
    sending.await.unwrap();

    let (acked, unanswered, unsent, gaps) = {
        let before = sequence.borrow();
        assert_eq!(
            before.count(Answer::Duplicate),
            0,
            "nothing was retried yet, so nothing is a duplicate"
        );
        (
            before.seqs(|a| a == Answer::Stored),
            before.seqs(|a| a == Answer::Unanswered),
            before.seqs(|a| a == Answer::Unsent),
            before.gaps,
        )
    };
    assert!(
        !unanswered.is_empty(),
        "the kill cut requests off in flight"
    );

    server.restart();
    // The old client's pooled connections died with the old process.
    let client = http_client();
    let log = read_all(&client, &url).await;
    // What the stream holds is a prefix of the sequence: each seq once, in order.
    for (position, stored) in log.iter().enumerate() {
        assert_eq!(
            stored,
            &message(position as u64),
            "position {position} of {} after the kill",
            log.len()
        );
    }
    let held = log.len() as u64;
    assert!(held < MESSAGES, "the kill came mid-sequence");
    assert!(
        acked.iter().all(|seq| *seq < held),
        "every append acknowledged before the kill survived it: {held} held, acked up to {:?}",
        acked.last()
    );
    let producer = Arc::new(Producer {
        client,
        url: url.clone(),
        sequence: sequence.clone(),
    });
    // The producer's state was committed with the appends it accepted, no further:
    // a retry of the last one it holds is a duplicate, the next seq is the log's.
    assert_eq!(producer.send(held - 1).await, Answer::Duplicate);
    assert_eq!(producer.expected_seq().await, held);
    let lost_answers = unanswered.iter().filter(|seq| **seq < held).count();
    eprintln!(
        "killed after {} appends acknowledged ({gaps} seq gaps waited out); {} in flight got no answer, {lost_answers} of them stored; the stream held {held}",
        acked.len(),
        unanswered.len(),
    );

    sequence.send_modify(|sequence| sequence.server_gone = false);
    let retried: Vec<u64> = unanswered.iter().chain(&unsent).copied().collect();
    producer.clone().send_all(retried.clone()).await;
    let after = sequence.borrow();
    for seq in &retried {
        let expected = if *seq < held {
            Answer::Duplicate
        } else {
            Answer::Stored
        };
        assert_eq!(
            after.answers[*seq as usize], expected,
            "seq {seq} after the restart"
        );
    }
    drop(after);
    let log = read_all(&producer.client, &url).await;
    let expected: Vec<Value> = (0..MESSAGES).map(message).collect();
    assert!(
        log == expected,
        "the log is seqs 0..{MESSAGES} once each, in order"
    );
    assert_eq!(producer.expected_seq().await, MESSAGES);
}

/// Idle SSE readers of the readers' test.
const READERS: usize = 10_000;
/// Descriptors the test process needs besides its readers' sockets.
const SPARE_FILES: u64 = 1024;
/// Connections being opened at once: within the listen backlog (`somaxconn` is
/// often 4096), so no SYN is dropped and retried a second later.
const OPENING: usize = 256;
/// The idle window the server's CPU time is measured over.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// The server's share of one core the readers may cost while idle. Idle, nothing
/// at all should run; this leaves room for a tick of the sweep or the clock's
/// granularity (10 ms in 3 s is 0.3%).
const MAX_IDLE_CPU: f64 = 0.05;
/// Memory the server may hold per idle reader: a connection, its buffers, the
/// response's state and a waiter. Generous: a few KiB are expected.
const MAX_BYTES_PER_READER: u64 = 64 * 1024;

/// Raises this process's soft open-file limit to `needed` (its children inherit
/// it); why not, when the hard limit is lower.
fn raise_open_file_limit(needed: u64) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(format!(
            "this test opens {needed} files, above the hard open-file limit of {} (raise `ulimit -Hn`)",
            limit.rlim_max
        ));
    }
    let raised = libc::rlimit {
        rlim_cur: needed,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct passed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "cannot raise the open-file limit to {needed}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// [`READERS`] `live=sse` readers at the tail of one stream, each on a connection of
/// its own: while they wait, the server uses next to no CPU time and a bounded
/// amount of memory per reader (both printed); then one append reaches every one.
async fn ten_thousand_idle_sse_readers_cost_memory_not_cpu(backend: Backend) {
    let store = backend.isolated_store();
    // Every reader holds a connection and, between appends, a waiter: the caps are
    // raised above the crowd. Each wait lasts longer than the test, because the end
    // of one is a re-read, which is work, not idleness.
    let server = ServeProcess::start(
        &store.url,
        store.dir.path(),
        &format!(
            "[limits]\nmax_waiters = {n}\nmax_connections = {n}\nmax_poll = \"10m\"\n\
             [durable_streams]\nlong_poll_timeout = \"10m\"\n",
            n = 2 * READERS
        ),
    );
    let client = http_client();
    let url = stream_url(&server, "crowd");
    let tail = create_json_stream(&client, &url).await;
    assert!(read_all(&client, &url).await.is_empty());
    let rss_before = server.rss_kib();
    let cpu_start = server.cpu_time();

    let addr: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_SECRET}"));
    let request = Arc::new(format!(
        "GET /api/v1/stream/crowd?offset={tail}&live=sse HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Basic {credentials}\r\nAccept: text/event-stream\r\n\r\n"
    ));
    let opening = Arc::new(Semaphore::new(OPENING));
    let (ready, mut readied) = mpsc::unbounded_channel();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (request, opening, ready) = (request.clone(), opening.clone(), ready.clone());
        readers.spawn(async move {
            let mut reader = match SseReader::open(addr, &request, &opening).await {
                Ok(reader) => {
                    let _ = ready.send(Ok(()));
                    reader
                }
                Err(error) => {
                    let _ = ready.send(Err(error.clone()));
                    return Err(error);
                }
            };
            reader.read_until(MARKER.as_bytes()).await
        });
    }
    drop(ready);
    for opened in 0..READERS {
        match readied.recv().await {
            Some(Ok(())) => {}
            Some(Err(error)) => panic!("reader {opened} of {READERS}: {error}"),
            None => panic!("only {opened} of {READERS} readers started"),
        }
    }
    // What opening the crowd left behind (its allocations, the store's reads) settles
    // before the idle window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = server.rss_kib();
    let cpu_before = server.cpu_time();
    let cpu_opening = cpu_before - cpu_start;
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu_idle = server.cpu_time() - cpu_before;
    let share = cpu_idle.as_secs_f64() / IDLE_WINDOW.as_secs_f64();
    let per_reader = rss_idle.saturating_sub(rss_before) * 1024 / READERS as u64;
    eprintln!(
        "{READERS} idle SSE readers: RSS {rss_before} KiB -> {rss_idle} KiB, {:.1} KiB per reader; \
         CPU opening them {cpu_opening:?}, over {IDLE_WINDOW:?} idle {cpu_idle:?}: {:.2}% of one core",
        per_reader as f64 / 1024.0,
        share * 100.0
    );
    assert!(
        share < MAX_IDLE_CPU,
        "idle readers cost {:.2}% of a core",
        share * 100.0
    );
    assert!(
        per_reader < MAX_BYTES_PER_READER,
        "{per_reader} bytes per idle reader"
    );

    let appended = client
        .post(&url)
        .basic_auth("admin", Some(ADMIN_SECRET))
        .header("content-type", "application/json")
        .body(json!({ "note": MARKER }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), StatusCode::NO_CONTENT);
    // A guard against a hang, not a measure: a reader the append missed fails here.
    let mut reached = 0;
    let mut missed = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(reader) = readers.join_next().await {
            match reader.unwrap() {
                Ok(()) => reached += 1,
                Err(error) => missed.push(error),
            }
        }
    })
    .await;
    assert!(
        all.is_ok() && reached == READERS,
        "the append reached {reached} of {READERS} readers; {} failed, first {:?}",
        missed.len(),
        missed.first()
    );
}

/// Text in the append the readers wait for.
const MARKER: &str = "one append for the whole crowd";

/// A `live=sse` reader over a raw socket: 10,000 of them cost the test little more
/// than their sockets.
struct SseReader {
    socket: tokio::net::TcpStream,
    /// What arrived since the last match.
    seen: Vec<u8>,
}

impl SseReader {
    /// Connects (at most [`OPENING`] at once), sends `request`, and reads until the
    /// first control event says the reader is at the tail.
    async fn open(addr: SocketAddr, request: &str, opening: &Semaphore) -> Result<Self, String> {
        let _opening = opening.acquire().await.map_err(|e| e.to_string())?;
        let mut socket = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        socket
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send the request: {e}"))?;
        let mut reader = SseReader {
            socket,
            seen: Vec::new(),
        };
        reader.read_until(b"\"upToDate\":true").await?;
        let head = String::from_utf8_lossy(&reader.seen);
        if !(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream")) {
            return Err(format!("not an event stream: {head}"));
        }
        reader.seen.clear();
        Ok(reader)
    }

    /// Reads until `needle` has arrived.
    async fn read_until(&mut self, needle: &[u8]) -> Result<(), String> {
        let mut buffer = [0u8; 512];
        loop {
            if self.seen.windows(needle.len()).any(|w| w == needle) {
                return Ok(());
            }
            let read = self
                .socket
                .read(&mut buffer)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if read == 0 {
                return Err(format!(
                    "the server ended the response: {}",
                    String::from_utf8_lossy(&self.seen)
                ));
            }
            self.seen.extend_from_slice(&buffer[..read]);
        }
    }
}

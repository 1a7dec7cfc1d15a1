//! Tasks over HTTP: asynchronous request-reply on top of queues (seed 001). A create
//! pushes `{"task_id", "payload"}` and waits up to `Prefer: wait` for a worker's
//! result (200), else answers 202 with `Location`; workers receive the message from
//! the queue API and finish the task with its receipt (`complete`, `fail`). Tests
//! assert the effect on the task (status, result, attempts) and on its queue (counts,
//! what a later receive sees), not only the status code. Every test runs once per
//! storage backend (`sqlite::…`, `postgres::…`; see `common::trials!`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_error, assert_error_prefix, assert_json_conventions, trials, Backend, TestApp,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

trials! {
    each_backend {
        respond_async_answers_202_at_once_with_location_and_the_task_message_is_queued,
        payload_and_result_come_back_byte_for_byte,
        fast_path_returns_the_worker_result_in_the_create_answer: multi_thread(2),
        sequential_creates_with_prompt_workers_each_answer_200_long_before_the_wait: multi_thread(2),
        slow_path_answers_202_then_get_with_wait_returns_the_result: multi_thread(2),
        default_wait_and_max_wait_come_from_the_configuration,
        prefer_wait_is_capped_at_max_wait_and_fractions_are_honoured: multi_thread(2),
        unreadable_prefer_wait_is_ignored,
        get_with_wait_on_an_unfinished_task_answers_after_the_wait,
        unknown_task_is_404_and_a_non_uuid_id_is_400,
        complete_stores_the_result_and_acks_the_message,
        fail_without_retry_fails_the_task_and_removes_the_message,
        fail_with_retry_makes_the_task_pending_again_and_keeps_the_error,
        fail_with_retry_and_delay_hides_the_message_until_the_delay_passes,
        bad_delay_is_400_and_changes_nothing,
        retry_with_no_attempts_left_dead_letters_the_message_and_fails_the_task,
        stale_receipt_after_redelivery_is_409_and_the_new_holder_completes,
        concurrent_completions_after_redeliveries_finish_the_task_once: multi_thread(2),
        receipt_of_another_tasks_message_is_400_and_changes_nothing,
        malformed_worker_bodies_are_rejected_and_change_nothing,
        expired_lease_redelivers_the_task_with_attempts_counted,
        expired_lease_with_no_attempts_left_reads_failed,
        get_with_wait_returns_failed_when_the_last_lease_ends,
        idempotency_key_returns_the_same_task_and_pushes_one_message,
        queue_info_counts_tasks_by_status,
        purged_task_reads_expired_and_its_receipt_is_stale,
        waits_on_a_task_end_as_soon_as_its_queue_is_purged: multi_thread(2),
        finished_tasks_are_dropped_after_the_retention,
        tasks_failed_by_running_out_of_attempts_are_dropped_after_the_retention,
        missing_or_wrong_credentials_are_401_on_every_task_call,
        produce_grant_creates_and_reads_but_cannot_finish_or_create_elsewhere,
        bad_create_requests_are_rejected_and_create_nothing,
        queue_api_settlements_end_tasks_and_a_redrive_reopens_them: multi_thread(2),
    }
}

/// The fields of every task answer, in no particular order.
const TASK_FIELDS: [&str; 8] = [
    "id",
    "queue",
    "status",
    "result",
    "error",
    "attempts",
    "created_at",
    "finished_at",
];

/// A header's value as text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts `value` is an RFC 3339 timestamp.
fn assert_rfc3339(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{what} is not RFC 3339: {text}"
    );
}

/// Asserts the shape of a task: exactly the documented fields, a UUID id, a known
/// status, a count of attempts and RFC 3339 (or null) timestamps.
fn assert_task_shape(task: &Value) {
    let object = task
        .as_object()
        .unwrap_or_else(|| panic!("a task is a JSON object: {task}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = TASK_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "task fields of {task}");
    let id = task["id"].as_str().expect("id is a string");
    assert!(
        uuid::Uuid::try_parse(id).is_ok() && id.len() == 36,
        "id is not a UUID: {id}"
    );
    assert!(
        ["pending", "running", "succeeded", "failed", "expired"]
            .contains(&task["status"].as_str().unwrap_or("")),
        "unknown status in {task}"
    );
    assert!(task["attempts"].is_u64(), "attempts in {task}");
    assert_rfc3339(&task["created_at"], "created_at");
    if !task["finished_at"].is_null() {
        assert_rfc3339(&task["finished_at"], "finished_at");
    }
}

/// Asserts a task finished by a worker: `status`, a set `finished_at` not before
/// `created_at`.
fn assert_finished(task: &Value, status: &str) {
    assert_eq!(task["status"], status, "{task}");
    assert_rfc3339(&task["finished_at"], "finished_at");
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(task[field].as_str().unwrap());
    assert!(
        at("finished_at").unwrap() >= at("created_at").unwrap(),
        "finished before created: {task}"
    );
}

/// Status, headers and JSON body of an answer, after checking the conventions.
async fn answer(response: Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response.text().await.unwrap();
    assert_json_conventions(&headers);
    let body = serde_json::from_str(&raw)
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {raw:?}"));
    (status, headers, body)
}

/// `POST /api/v1/tasks/{queue}` as the admin with `payload`, and `Prefer` if given.
async fn create(app: &TestApp, queue: &str, payload: &Value, prefer: Option<&str>) -> Response {
    let mut request = app
        .as_admin(Method::POST, &format!("/api/v1/tasks/{queue}"))
        .json(payload);
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    request.send().await.unwrap()
}

/// Creates a task answered at once (`Prefer: respond-async`); asserts 202, returns it.
async fn create_pending(app: &TestApp, queue: &str, payload: &Value) -> Value {
    let (status, _, task) = answer(create(app, queue, payload, Some("respond-async")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_task_shape(&task);
    task
}

/// The id of a task answer.
fn id_of(task: &Value) -> String {
    task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {task}"))
        .to_owned()
}

/// `GET /api/v1/tasks/{id}` as the admin; asserts 200 and returns the task.
async fn get_task(app: &TestApp, id: &str) -> Value {
    let (status, _, task) = answer(
        app.as_admin(Method::GET, &format!("/api/v1/tasks/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_task_shape(&task);
    task
}

/// `GET /api/v1/tasks/{id}` with `Prefer: wait=<wait>`; asserts 200 and returns how
/// long it took, the headers and the task.
async fn get_waiting(app: &TestApp, id: &str, wait: &str) -> (Duration, HeaderMap, Value) {
    let started = Instant::now();
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/tasks/{id}"))
        .header("prefer", format!("wait={wait}"))
        .send()
        .await
        .unwrap();
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_task_shape(&task);
    (started.elapsed(), headers, task)
}

/// A received task message: the task id and payload of its body, and its receipt.
struct Received {
    task_id: String,
    payload: Value,
    receipt: String,
    attempts: u64,
}

impl Received {
    fn of(message: &Value) -> Received {
        let body = &message["body"];
        let fields: Vec<&String> = body
            .as_object()
            .unwrap_or_else(|| panic!("a task message body is an object: {message}"))
            .keys()
            .collect();
        assert_eq!(fields.len(), 2, "task message body fields: {body}");
        Received {
            task_id: body["task_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no task_id in {message}"))
                .to_owned(),
            payload: body["payload"].clone(),
            receipt: message["receipt"]
                .as_str()
                .unwrap_or_else(|| panic!("no receipt in {message}"))
                .to_owned(),
            attempts: message["attempts"].as_u64().expect("attempts"),
        }
    }
}

/// Receives exactly one task message from `queue` with `query`.
async fn receive_one(app: &TestApp, queue: &str, query: &str) -> Received {
    let messages = app.receive(queue, query).await;
    assert_eq!(messages.len(), 1, "expected one message: {messages:?}");
    Received::of(&messages[0])
}

/// `POST /api/v1/tasks/{id}/{verb}` (complete, fail) as the admin with `body`.
async fn finish(app: &TestApp, id: &str, verb: &str, body: &Value) -> Response {
    app.as_admin(Method::POST, &format!("/api/v1/tasks/{id}/{verb}"))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// As [`finish`]; asserts 200 and returns the task after.
async fn finish_ok(app: &TestApp, id: &str, verb: &str, body: &Value) -> Value {
    let (status, headers, task) = answer(finish(app, id, verb, body).await).await;
    assert_eq!(status, StatusCode::OK, "{verb}: {task}");
    assert!(
        header(&headers, "location").is_none(),
        "{verb} has no Location"
    );
    assert_task_shape(&task);
    assert_eq!(task["id"], id);
    task
}

/// The `tasks` counts of `GET /api/v1/queues/{queue}`.
async fn task_counts(app: &TestApp, queue: &str) -> Value {
    let info = app.queue_info(queue).await;
    info["tasks"].clone()
}

/// `{"pending", "running", "succeeded", "failed", "expired"}` as JSON.
fn counts(pending: u64, running: u64, succeeded: u64, failed: u64, expired: u64) -> Value {
    json!({
        "pending": pending,
        "running": running,
        "succeeded": succeeded,
        "failed": failed,
        "expired": expired,
    })
}

/// Creates `queue` with its default settings, so a worker can long-poll it before the
/// first task creates it (a receive on an unknown queue is 404).
async fn declare(app: &TestApp, queue: &str) {
    let (status, body) = app.configure(queue, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A worker: long-polls one task message of `queue`, holds it `pause`, then completes
/// it with `result`. Returns what it received and the completed task.
async fn work_one(
    app: Arc<TestApp>,
    queue: &'static str,
    pause: Duration,
    result: Value,
) -> (Received, Value) {
    let received = receive_one(&app, queue, "wait=10&lease=30").await;
    tokio::time::sleep(pause).await;
    let task = finish_ok(
        &app,
        &received.task_id,
        "complete",
        &json!({"receipt": received.receipt, "result": result}),
    )
    .await;
    (received, task)
}

/// A `Prefer: respond-async` create answers 202 at once with `Location`, `Retry-After`
/// and `Preference-Applied`, the task is pending with nothing set yet, and its queue
/// (created by the create) holds `{"task_id", "payload"}`.
async fn respond_async_answers_202_at_once_with_location_and_the_task_message_is_queued(
    app: TestApp,
) {
    let payload = json!({"order": 17, "items": ["a", "b"]});
    let started = Instant::now();
    let response = create(&app, "orders", &payload, Some("respond-async")).await;
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "respond-async waited {:?}",
        started.elapsed()
    );
    assert_task_shape(&task);
    let id = id_of(&task);
    assert_eq!(task["queue"], "orders");
    assert_eq!(task["status"], "pending");
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task["error"], Value::Null);
    assert_eq!(task["attempts"], 0);
    assert_eq!(task["finished_at"], Value::Null);
    let location = format!("/api/v1/tasks/{id}");
    assert_eq!(header(&headers, "location"), Some(location.as_str()));
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert_eq!(
        header(&headers, "preference-applied"),
        Some("respond-async")
    );

    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
    assert_eq!(task_counts(&app, "orders").await, counts(1, 0, 0, 0, 0));

    let (status, _, polled) =
        answer(app.as_admin(Method::GET, &location).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(polled, task, "GET Location shows the task as created");
    let upper = get_task(&app, &id.to_uppercase()).await;
    assert_eq!(upper, task, "task ids are read in any case");

    let received = receive_one(&app, "orders", "lease=30").await;
    assert_eq!(received.task_id, id);
    assert_eq!(received.payload, payload);
    assert_eq!(received.attempts, 1);
    let running = get_task(&app, &id).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 1);
    assert_eq!(running["finished_at"], Value::Null);
    assert_eq!(running["created_at"], task["created_at"]);
    assert_eq!(task_counts(&app, "orders").await, counts(0, 1, 0, 0, 0));
}

/// The payload reaches the worker and the result reaches the caller unchanged, byte
/// for byte (big numbers, trailing zeros, escapes), and any JSON value is a payload.
async fn payload_and_result_come_back_byte_for_byte(app: TestApp) {
    let sent = r#"{"big":123456789012345678901234567890,"f":1.10,"s":"\u00e9"}"#;
    let response = app
        .as_admin(Method::POST, "/api/v1/tasks/exact")
        .header("content-type", "application/json")
        .header("prefer", "respond-async")
        .body(sent)
        .send()
        .await
        .unwrap();
    let (status, _, task) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = id_of(&task);

    let received = app
        .as_admin(Method::POST, "/api/v1/queues/exact/receive?lease=30")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        received.contains(&format!(r#""payload":{sent}"#)),
        "the payload was rewritten: sent {sent}, got {received}"
    );
    let message: Value = serde_json::from_str(&received).unwrap();
    let receipt = Received::of(&message["messages"][0]).receipt;

    let result = r#"{"total":98765432109876543210987654321,"ratio":2.50,"t":"\u00e8"}"#;
    let response = app
        .as_admin(Method::POST, &format!("/api/v1/tasks/{id}/complete"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"receipt":"{receipt}","result":{result}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let completed = response.text().await.unwrap();
    assert!(
        completed.contains(&format!(r#""result":{result}"#)),
        "the result was rewritten: sent {result}, got {completed}"
    );
    let polled = app
        .as_admin(Method::GET, &format!("/api/v1/tasks/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        polled.contains(&format!(r#""result":{result}"#)),
        "the stored result was rewritten: sent {result}, got {polled}"
    );

    for payload in [
        json!("just a string"),
        json!([1, 2, 3]),
        json!(null),
        json!(7),
    ] {
        create_pending(&app, "scalars", &payload).await;
        let received = receive_one(&app, "scalars", "lease=30").await;
        assert_eq!(received.payload, payload);
    }
}

/// A worker long-polling the queue gets the task at once and completes it; the
/// create with `Prefer: wait=5` answers 200 with the result in the same call, long
/// before the wait ends, and the message is gone.
async fn fast_path_returns_the_worker_result_in_the_create_answer(app: TestApp) {
    let app = Arc::new(app);
    declare(&app, "fast").await;
    let worker = tokio::spawn(work_one(
        app.clone(),
        "fast",
        Duration::ZERO,
        json!({"sum": 42, "by": "worker-1"}),
    ));
    // Let the worker's long poll start first, so the push wakes it.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let payload = json!({"numbers": [40, 2]});
    let started = Instant::now();
    let response = create(&app, "fast", &payload, Some("wait=5")).await;
    let elapsed = started.elapsed();
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert!(
        elapsed < Duration::from_secs(3),
        "the result took {elapsed:?} with a worker waiting"
    );
    assert_task_shape(&task);
    assert_finished(&task, "succeeded");
    assert_eq!(task["queue"], "fast");
    assert_eq!(task["result"], json!({"sum": 42, "by": "worker-1"}));
    assert_eq!(task["error"], Value::Null);
    assert_eq!(task["attempts"], 1);
    assert!(
        header(&headers, "location").is_none(),
        "a 200 has no Location"
    );
    assert!(header(&headers, "retry-after").is_none());
    assert_eq!(header(&headers, "preference-applied"), Some("wait=5"));

    let (received, completed) = worker.await.unwrap();
    assert_eq!(received.task_id, id_of(&task));
    assert_eq!(received.payload, payload);
    assert_eq!(completed, task, "complete and create answer the same task");
    assert_eq!(app.counts("fast").await, (0, 0, 0, 0));
    assert_eq!(task_counts(&app, "fast").await, counts(0, 0, 1, 0, 0));

    // Without Prefer the create waits too (the default wait, 5 s), so a prompt worker's
    // result still comes back in the create answer; no Preference-Applied then.
    let worker = tokio::spawn(work_one(
        app.clone(),
        "fast",
        Duration::from_millis(300),
        json!("by default"),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = create(&app, "fast", &json!(2), None).await;
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(task["result"], "by default");
    assert!(header(&headers, "preference-applied").is_none());
    worker.await.unwrap();
}

/// Creates made one after another, each with `Prefer: wait=5`, while four workers
/// long-poll the queue and complete every task at once: each create answers 200 with
/// its own task's result, far from its deadline. A wake-up lost or held back anywhere
/// on the way (the push waking a receive, a receive handing on, the finish waking the
/// create) shows here as a 202 or as a create that takes seconds; the bound is loose
/// on purpose, since the benchmark measures speed.
async fn sequential_creates_with_prompt_workers_each_answer_200_long_before_the_wait(app: TestApp) {
    const CREATES: u64 = 40;
    const WORKERS: usize = 4;
    let app = Arc::new(app);
    declare(&app, "prompt").await;
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let app = app.clone();
            tokio::spawn(async move {
                loop {
                    let messages = app.receive("prompt", "wait=20&lease=30").await;
                    for message in &messages {
                        let received = Received::of(message);
                        let result = json!({"n": received.payload["n"], "by": worker});
                        finish_ok(
                            &app,
                            &received.task_id,
                            "complete",
                            &json!({"receipt": received.receipt, "result": result}),
                        )
                        .await;
                    }
                }
            })
        })
        .collect();
    // Every worker is long-polling before the first create.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut slowest = Duration::ZERO;
    for n in 0..CREATES {
        let started = Instant::now();
        let response = create(&app, "prompt", &json!({"n": n}), Some("wait=5")).await;
        let elapsed = started.elapsed();
        let (status, headers, task) = answer(response).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "create {n} after {elapsed:?}: {task}"
        );
        assert!(header(&headers, "location").is_none(), "create {n}");
        assert_finished(&task, "succeeded");
        assert_eq!(
            task["result"]["n"], n,
            "create {n} got another task's result"
        );
        assert_eq!(task["attempts"], 1, "create {n}: {task}");
        assert!(
            elapsed < Duration::from_millis(2500),
            "create {n} took {elapsed:?} of its 5 s wait with {WORKERS} idle workers"
        );
        slowest = slowest.max(elapsed);
    }
    for worker in &workers {
        assert!(!worker.is_finished(), "a worker failed");
        worker.abort();
    }
    assert_eq!(app.counts("prompt").await, (0, 0, 0, 0));
    assert_eq!(
        task_counts(&app, "prompt").await,
        counts(0, 0, CREATES, 0, 0),
        "slowest create: {slowest:?}"
    );
}

/// A worker slower than the wait: the create answers 202 with `Location` once its wait
/// is over; a `GET` of that `Location` with `Prefer: wait=5` answers 200 as soon as
/// the worker completes, well before its own wait ends.
async fn slow_path_answers_202_then_get_with_wait_returns_the_result(app: TestApp) {
    let app = Arc::new(app);
    declare(&app, "slow").await;
    let worker = tokio::spawn(work_one(
        app.clone(),
        "slow",
        Duration::from_millis(1500),
        json!("done late"),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let response = create(&app, "slow", &json!({"job": 1}), Some("wait=0.3")).await;
    let create_took = started.elapsed();
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert!(
        create_took >= Duration::from_millis(250),
        "answered 202 after {create_took:?}, before the 0.3 s wait"
    );
    assert!(
        task["status"] == "running" || task["status"] == "pending",
        "{task}"
    );
    let location = header(&headers, "location")
        .expect("a 202 carries Location")
        .to_owned();
    assert_eq!(location, format!("/api/v1/tasks/{}", id_of(&task)));
    assert_eq!(header(&headers, "retry-after"), Some("1"));

    // A second caller waits on the same task at the same time: both are woken.
    let other_waiter = app
        .as_admin(Method::GET, &location)
        .header("prefer", "wait=5")
        .send();
    let this_waiter = app
        .as_admin(Method::GET, &location)
        .header("prefer", "wait=5")
        .send();
    let (other, response) = tokio::join!(other_waiter, this_waiter);
    let total = started.elapsed();
    let (status, _, other) = answer(other.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let response = response.unwrap();
    let (status, headers, done) = answer(response).await;
    assert_eq!(other, done, "both waiters see the result");
    assert_eq!(status, StatusCode::OK);
    assert_finished(&done, "succeeded");
    assert_eq!(done["result"], "done late");
    assert_eq!(done["attempts"], 1);
    assert_eq!(header(&headers, "preference-applied"), Some("wait=5"));
    assert!(
        total >= Duration::from_millis(1200),
        "finished after {total:?}, before the worker completed"
    );
    assert!(
        total < Duration::from_secs(4),
        "the GET was not woken by the completion: {total:?}"
    );
    let (_, completed) = worker.await.unwrap();
    assert_eq!(completed, done);
}

/// Without `Prefer` a create waits `tasks.default_wait` and says nothing in
/// `Preference-Applied`; a longer `Prefer: wait` is capped at `tasks.max_wait`, and
/// the header names the capped value.
async fn default_wait_and_max_wait_come_from_the_configuration(backend: Backend) {
    let app = common::spawn_app_with(&backend, |config| {
        config.tasks.default_wait = Duration::from_secs(1);
        config.tasks.max_wait = Duration::from_secs(2);
    })
    .await;

    let started = Instant::now();
    let response = create(&app, "waits", &json!(1), None).await;
    let elapsed = started.elapsed();
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["status"], "pending");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "the default wait is 1 s, answered after {elapsed:?}"
    );
    assert!(
        header(&headers, "preference-applied").is_none(),
        "no preference was sent"
    );
    assert!(header(&headers, "location").is_some());

    let started = Instant::now();
    let response = create(&app, "waits", &json!(2), Some("wait=100")).await;
    let elapsed = started.elapsed();
    let (status, headers, _) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "wait=100 capped at 2 s, answered after {elapsed:?}"
    );
    assert_eq!(header(&headers, "preference-applied"), Some("wait=2"));
    assert_eq!(app.counts("waits").await, (2, 0, 0, 0));
}

/// With the default configuration `Prefer: wait=100` is applied as `wait=60` (and a
/// finished task still answers at once); a fractional wait is honoured.
async fn prefer_wait_is_capped_at_max_wait_and_fractions_are_honoured(app: TestApp) {
    let app = Arc::new(app);
    declare(&app, "capped").await;
    let worker = tokio::spawn(work_one(app.clone(), "capped", Duration::ZERO, json!(1)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = create(&app, "capped", &json!("x"), Some("wait=100")).await;
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(header(&headers, "preference-applied"), Some("wait=60"));
    worker.await.unwrap();

    let started = Instant::now();
    let response = create(&app, "fraction", &json!("y"), Some("wait=0.5")).await;
    let elapsed = started.elapsed();
    let (status, headers, _) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "wait=0.5 answered after {elapsed:?}"
    );
    let applied = header(&headers, "preference-applied").expect("Preference-Applied");
    let seconds: f64 = applied
        .strip_prefix("wait=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("Preference-Applied: {applied}"));
    assert!(
        (seconds - 0.5).abs() < 1e-9,
        "Preference-Applied: {applied}"
    );
}

/// `Prefer: wait=soon` (or a negative wait) is a 400 on create and on GET, and the
/// create pushes nothing (the queue is not even created).
/// A `Prefer: wait` that cannot be honoured (`wait=soon`, `wait=-1`) is ignored, as
/// RFC 7240 asks of preferences a server cannot honour: the create waits the default
/// and `Preference-Applied` names no wait; a GET answers at once.
async fn unreadable_prefer_wait_is_ignored(backend: Backend) {
    let app = common::spawn_app_with(&backend, |config| {
        config.tasks.default_wait = Duration::from_millis(300);
    })
    .await;
    for prefer in ["wait=soon", "wait=-1"] {
        let started = Instant::now();
        let response = create(&app, "ignored", &json!(1), Some(prefer)).await;
        let (status, headers, task) = answer(response).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{prefer}: the default wait applies"
        );
        assert!(
            header(&headers, "preference-applied").is_none(),
            "{prefer}: no wait was honoured"
        );
    }
    let task = create_pending(&app, "present", &json!(1)).await;
    let started = Instant::now();
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/tasks/{}", id_of(&task)))
        .header("prefer", "wait=soon")
        .send()
        .await
        .unwrap();
    let (status, headers, _) = answer(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no wait applied"
    );
    assert!(header(&headers, "preference-applied").is_none());
}

/// A `GET` without `Prefer` answers at once; with `Prefer: wait=1` on a task nobody
/// works it answers 200 (not 202) with the task still pending after about 1 s.
async fn get_with_wait_on_an_unfinished_task_answers_after_the_wait(app: TestApp) {
    let task = create_pending(&app, "idle", &json!({"n": 1})).await;
    let id = id_of(&task);

    let started = Instant::now();
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/tasks/{id}"))
        .send()
        .await
        .unwrap();
    let (status, headers, now) = answer(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(header(&headers, "preference-applied").is_none());
    assert!(header(&headers, "location").is_none());
    assert_eq!(now, task);

    let (elapsed, headers, later) = get_waiting(&app, &id, "1").await;
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "wait=1 answered after {elapsed:?}"
    );
    assert_eq!(later["status"], "pending");
    assert_eq!(header(&headers, "preference-applied"), Some("wait=1"));
    assert!(header(&headers, "location").is_none());
}

/// An unknown (well-formed) id is 404 `"Not Found - task <id>"`, on GET and on the
/// worker calls; an id that is not a UUID is 400.
async fn unknown_task_is_404_and_a_non_uuid_id_is_400(app: TestApp) {
    let unknown = uuid::Uuid::new_v4().to_string();
    let expected = format!("Not Found - task {unknown}");
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/tasks/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, &expected).await;
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/tasks/{unknown}"))
        .header("prefer", "wait=5")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, &expected).await;

    // A receipt of a real message, so only the task id is wrong.
    app.push("plain", json!(1)).await;
    let messages = app.receive("plain", "lease=30").await;
    let receipt = messages[0]["receipt"].as_str().unwrap().to_owned();
    for verb in ["complete", "fail"] {
        let response = finish(&app, &unknown, verb, &json!({"receipt": receipt})).await;
        assert_error(response, StatusCode::NOT_FOUND, &expected).await;
    }

    for bad in ["42", "not-a-uuid", "a0b1c2d30000400080000000000000000"] {
        let response = app
            .as_admin(Method::GET, &format!("/api/v1/tasks/{bad}"))
            .send()
            .await
            .unwrap();
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - invalid task id",
        )
        .await;
        let response = finish(&app, bad, "complete", &json!({"receipt": receipt})).await;
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - invalid task id",
        )
        .await;
    }
    assert_eq!(app.counts("plain").await, (0, 1, 0, 0));
}

/// `complete` answers the succeeded task (result, attempts, finished_at) and acks the
/// message in the same step: the queue is empty and nothing is redelivered.
async fn complete_stores_the_result_and_acks_the_message(app: TestApp) {
    let task = create_pending(&app, "work", &json!({"x": 3})).await;
    let id = id_of(&task);
    let received = receive_one(&app, "work", "lease=0.5").await;
    assert_eq!(received.task_id, id);

    let result = json!({"squares": [9], "note": "ünïcode", "nested": {"ok": true}});
    let done = finish_ok(
        &app,
        &id,
        "complete",
        &json!({"receipt": received.receipt, "result": result}),
    )
    .await;
    assert_finished(&done, "succeeded");
    assert_eq!(done["result"], result);
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["queue"], "work");
    assert_eq!(done["created_at"], task["created_at"]);
    assert_eq!(get_task(&app, &id).await, done);

    assert_eq!(app.counts("work").await, (0, 0, 0, 0));
    // Past the lease the message would come back had the complete not acked it.
    let again = app.receive("work", "wait=1").await;
    assert!(
        again.is_empty(),
        "a completed task was redelivered: {again:?}"
    );
    assert_eq!(get_task(&app, &id).await, done);
    assert_eq!(task_counts(&app, "work").await, counts(0, 0, 1, 0, 0));

    // A complete without a result stores null.
    let other = id_of(&create_pending(&app, "work", &json!(2)).await);
    let received = receive_one(&app, "work", "lease=30").await;
    assert_eq!(received.task_id, other);
    let done = finish_ok(
        &app,
        &other,
        "complete",
        &json!({"receipt": received.receipt}),
    )
    .await;
    assert_finished(&done, "succeeded");
    assert_eq!(done["result"], Value::Null);
}

/// `fail` without retry fails the task with the worker's error and removes the
/// message; nothing is redelivered.
async fn fail_without_retry_fails_the_task_and_removes_the_message(app: TestApp) {
    let id = id_of(&create_pending(&app, "doomed", &json!("x")).await);
    let received = receive_one(&app, "doomed", "lease=0.5").await;
    let error = json!({"code": "E42", "message": "cannot do x"});
    let failed = finish_ok(
        &app,
        &id,
        "fail",
        &json!({"receipt": received.receipt, "error": error, "retry": false}),
    )
    .await;
    assert_finished(&failed, "failed");
    assert_eq!(failed["error"], error);
    assert_eq!(failed["result"], Value::Null);
    assert_eq!(failed["attempts"], 1);
    assert_eq!(get_task(&app, &id).await, failed);
    assert_eq!(app.counts("doomed").await, (0, 0, 0, 0));
    let again = app.receive("doomed", "wait=1").await;
    assert!(again.is_empty(), "a failed task was redelivered: {again:?}");
    assert_eq!(task_counts(&app, "doomed").await, counts(0, 0, 0, 1, 0));

    // `retry` defaults to false.
    let other = id_of(&create_pending(&app, "doomed", &json!("y")).await);
    let received = receive_one(&app, "doomed", "lease=30").await;
    let failed = finish_ok(
        &app,
        &other,
        "fail",
        &json!({"receipt": received.receipt, "error": "plain text"}),
    )
    .await;
    assert_finished(&failed, "failed");
    assert_eq!(failed["error"], "plain text");
    assert_eq!(app.counts("doomed").await, (0, 0, 0, 0));
}

/// `fail` with `retry: true` puts the message back at once: the task is pending with
/// the worker's error kept, the next receive gets it with attempts 2, and a complete
/// then succeeds it.
async fn fail_with_retry_makes_the_task_pending_again_and_keeps_the_error(app: TestApp) {
    let id = id_of(&create_pending(&app, "flaky", &json!({"try": "me"})).await);
    let first = receive_one(&app, "flaky", "lease=30").await;
    let retried = finish_ok(
        &app,
        &id,
        "fail",
        &json!({"receipt": first.receipt, "error": {"transient": true}, "retry": true}),
    )
    .await;
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["error"], json!({"transient": true}));
    assert_eq!(retried["result"], Value::Null);
    assert_eq!(retried["finished_at"], Value::Null);
    assert_eq!(retried["attempts"], 1);
    assert_eq!(app.counts("flaky").await, (1, 0, 0, 0));
    assert_eq!(task_counts(&app, "flaky").await, counts(1, 0, 0, 0, 0));

    let second = receive_one(&app, "flaky", "lease=30").await;
    assert_eq!(second.task_id, id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.payload, json!({"try": "me"}));
    let running = get_task(&app, &id).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 2);
    assert_eq!(
        running["error"],
        json!({"transient": true}),
        "the last error"
    );

    let response = finish(
        &app,
        &id,
        "complete",
        &json!({"receipt": first.receipt, "result": "stale"}),
    )
    .await;
    assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;

    let done = finish_ok(
        &app,
        &id,
        "complete",
        &json!({"receipt": second.receipt, "result": "second time lucky"}),
    )
    .await;
    assert_finished(&done, "succeeded");
    assert_eq!(done["result"], "second time lucky");
    assert_eq!(done["attempts"], 2);
    assert_eq!(app.counts("flaky").await, (0, 0, 0, 0));
}

/// `fail` with `retry: true` and `delay` keeps the message delayed: no receive gets it
/// before the delay, one waiting past it does, with attempts 2.
async fn fail_with_retry_and_delay_hides_the_message_until_the_delay_passes(app: TestApp) {
    let id = id_of(&create_pending(&app, "later", &json!(1)).await);
    let first = receive_one(&app, "later", "lease=30").await;
    let failed_at = Instant::now();
    let retried = finish_ok(
        &app,
        &id,
        "fail",
        &json!({"receipt": first.receipt, "error": "busy", "retry": true, "delay": 1}),
    )
    .await;
    assert_eq!(retried["status"], "pending");
    assert_eq!(retried["error"], "busy");
    assert_eq!(app.counts("later").await, (0, 0, 1, 0));
    assert_eq!(task_counts(&app, "later").await, counts(1, 0, 0, 0, 0));
    let early = app.receive("later", "wait=0.3").await;
    if failed_at.elapsed() < Duration::from_millis(900) {
        assert!(early.is_empty(), "received before the delay: {early:?}");
    }

    let second = receive_one(&app, "later", "wait=5&lease=30").await;
    let elapsed = failed_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "redelivered after {elapsed:?}, before the 1 s delay"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "redelivered after {elapsed:?}"
    );
    assert_eq!(second.task_id, id);
    assert_eq!(second.attempts, 2);
    assert_eq!(get_task(&app, &id).await["status"], "running");
}

/// `delay` without `retry: true`, negative or out of range is a 400 that changes
/// nothing: the task keeps running under the same receipt, which still completes it.
async fn bad_delay_is_400_and_changes_nothing(app: TestApp) {
    let id = id_of(&create_pending(&app, "strict", &json!(1)).await);
    let received = receive_one(&app, "strict", "lease=30").await;
    for body in [
        json!({"receipt": received.receipt, "error": "e", "delay": 1}),
        json!({"receipt": received.receipt, "error": "e", "retry": false, "delay": 1}),
    ] {
        let response = finish(&app, &id, "fail", &body).await;
        assert_error(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - delay applies only with retry: true",
        )
        .await;
    }
    for delay in [json!(-1), json!(1e12), json!("soon")] {
        let body =
            json!({"receipt": received.receipt, "error": "e", "retry": true, "delay": delay});
        let response = finish(&app, &id, "fail", &body).await;
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let task = get_task(&app, &id).await;
    assert_eq!(task["status"], "running");
    assert_eq!(task["error"], Value::Null);
    assert_eq!(app.counts("strict").await, (0, 1, 0, 0));
    let done = finish_ok(
        &app,
        &id,
        "complete",
        &json!({"receipt": received.receipt, "result": 1}),
    )
    .await;
    assert_finished(&done, "succeeded");
}

/// With `max_attempts: 1`, a retry has no attempt left: the message becomes a dead
/// letter and the task reads failed with the worker's error.
async fn retry_with_no_attempts_left_dead_letters_the_message_and_fails_the_task(app: TestApp) {
    let (status, _) = app.configure("once", json!({"max_attempts": 1})).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = id_of(&create_pending(&app, "once", &json!("x")).await);
    let received = receive_one(&app, "once", "lease=30").await;
    let answered = finish_ok(
        &app,
        &id,
        "fail",
        &json!({"receipt": received.receipt, "error": "still broken", "retry": true}),
    )
    .await;
    assert_eq!(answered["status"], "failed", "{answered}");
    assert_eq!(answered["error"], "still broken");
    assert_eq!(answered["attempts"], 1);
    assert_eq!(get_task(&app, &id).await["status"], "failed");
    assert_eq!(app.counts("once").await, (0, 0, 0, 1));
    assert_eq!(task_counts(&app, "once").await, counts(0, 0, 0, 1, 0));
    let again = app.receive("once", "wait=0.3").await;
    assert!(again.is_empty(), "a dead letter was handed out: {again:?}");

    // A failed task waits no more.
    let (elapsed, _, task) = get_waiting(&app, &id, "5").await;
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(task["status"], "failed");

    let response = finish(
        &app,
        &id,
        "complete",
        &json!({"receipt": received.receipt, "result": "too late"}),
    )
    .await;
    assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;
    assert_eq!(get_task(&app, &id).await["result"], Value::Null);
}

/// A receipt whose lease expired and was re-leased is 409 on complete and fail and
/// changes nothing; the new holder completes the task; a second complete (or a fail)
/// after that is 409 and keeps the first result.
async fn stale_receipt_after_redelivery_is_409_and_the_new_holder_completes(app: TestApp) {
    let id = id_of(&create_pending(&app, "contended", &json!(1)).await);
    let first = receive_one(&app, "contended", "lease=0.2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = receive_one(&app, "contended", "lease=30&wait=5").await;
    assert_eq!(second.task_id, id);
    assert_eq!(second.attempts, 2);
    assert_ne!(first.receipt, second.receipt);

    let stale_calls = [
        (
            "complete",
            json!({"receipt": first.receipt, "result": "old"}),
        ),
        ("fail", json!({"receipt": first.receipt, "error": "old"})),
        (
            "fail",
            json!({"receipt": first.receipt, "error": "old", "retry": true}),
        ),
    ];
    for (verb, body) in &stale_calls {
        let response = finish(&app, &id, verb, body).await;
        assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;
    }
    let task = get_task(&app, &id).await;
    assert_eq!(task["status"], "running", "{task}");
    assert_eq!(task["attempts"], 2);
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task["error"], Value::Null);
    assert_eq!(app.counts("contended").await, (0, 1, 0, 0));

    let done = finish_ok(
        &app,
        &id,
        "complete",
        &json!({"receipt": second.receipt, "result": "new"}),
    )
    .await;
    assert_finished(&done, "succeeded");
    assert_eq!(done["result"], "new");
    assert_eq!(done["attempts"], 2);

    let after = [
        (
            "complete",
            json!({"receipt": second.receipt, "result": "again"}),
        ),
        ("fail", json!({"receipt": second.receipt, "error": "again"})),
        (
            "complete",
            json!({"receipt": first.receipt, "result": "old"}),
        ),
    ];
    for (verb, body) in &after {
        let response = finish(&app, &id, verb, body).await;
        assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;
    }
    assert_eq!(get_task(&app, &id).await, done);
    assert_eq!(app.counts("contended").await, (0, 0, 0, 0));
}

/// A task leased three times (two leases expired) is completed at once by all three
/// receipt holders: exactly one complete, the current holder's, is 200; the others
/// are 409 and the task keeps the winner's result.
async fn concurrent_completions_after_redeliveries_finish_the_task_once(app: TestApp) {
    let id = id_of(&create_pending(&app, "race", &json!("once")).await);
    let mut receipts = Vec::new();
    for attempt in 1..=3u64 {
        let lease = if attempt < 3 { "0.2" } else { "30" };
        let received = receive_one(&app, "race", &format!("lease={lease}&wait=5")).await;
        assert_eq!(received.task_id, id);
        assert_eq!(received.attempts, attempt);
        receipts.push(received.receipt);
        if attempt < 3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    let app = Arc::new(app);
    let mut completions = tokio::task::JoinSet::new();
    for (holder, receipt) in receipts.into_iter().enumerate() {
        let app = app.clone();
        let id = id.clone();
        completions.spawn(async move {
            let body = json!({"receipt": receipt, "result": {"by": holder}});
            let response = finish(&app, &id, "complete", &body).await;
            (holder, answer(response).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = completions.join_next().await {
        let (holder, (status, _, body)) = joined.unwrap();
        match status {
            StatusCode::OK => winners.push((holder, body)),
            StatusCode::CONFLICT => assert!(
                body.as_str().is_some_and(|t| t.starts_with("Conflict - ")),
                "{body}"
            ),
            other => panic!("holder {holder}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "completed more than once: {winners:?}");
    let (holder, task) = &winners[0];
    assert_eq!(*holder, 2, "only the current lease holder may complete");
    assert_eq!(task["result"], json!({"by": 2}));
    assert_eq!(task["attempts"], 3);
    assert_eq!(&get_task(&app, &id).await, task);
    assert_eq!(app.counts("race").await, (0, 0, 0, 0));
    assert_eq!(task_counts(&app, "race").await, counts(0, 0, 1, 0, 0));
}

/// The receipt of another task's message (or of a plain message) is 400 and finishes
/// neither task.
async fn receipt_of_another_tasks_message_is_400_and_changes_nothing(app: TestApp) {
    let a = id_of(&create_pending(&app, "pair", &json!("a")).await);
    let b = id_of(&create_pending(&app, "pair", &json!("b")).await);
    let messages = app.receive("pair", "count=2&lease=30").await;
    assert_eq!(messages.len(), 2);
    let received: Vec<Received> = messages.iter().map(Received::of).collect();
    let receipt_of = |id: &str| {
        received
            .iter()
            .find(|r| r.task_id == id)
            .unwrap_or_else(|| panic!("task {id} not received"))
            .receipt
            .clone()
    };
    let (receipt_a, receipt_b) = (receipt_of(&a), receipt_of(&b));

    app.push("pair", json!("plain")).await;
    let plain = app.receive("pair", "lease=30").await;
    let receipt_plain = plain[0]["receipt"].as_str().unwrap().to_owned();

    for wrong in [&receipt_b, &receipt_plain] {
        for (verb, body) in [
            ("complete", json!({"receipt": wrong, "result": "wrong"})),
            ("fail", json!({"receipt": wrong, "error": "wrong"})),
        ] {
            let response = finish(&app, &a, verb, &body).await;
            assert_error(
                response,
                StatusCode::CONFLICT,
                &format!("Conflict - the receipt is not for task {a}'s message"),
            )
            .await;
        }
    }
    for id in [&a, &b] {
        let task = get_task(&app, id).await;
        assert_eq!(task["status"], "running", "{task}");
        assert_eq!(task["result"], Value::Null);
    }
    assert_eq!(app.counts("pair").await, (0, 3, 0, 0));

    finish_ok(
        &app,
        &a,
        "complete",
        &json!({"receipt": receipt_a, "result": "a"}),
    )
    .await;
    let b_done = finish_ok(
        &app,
        &b,
        "complete",
        &json!({"receipt": receipt_b, "result": "b"}),
    )
    .await;
    assert_eq!(b_done["result"], "b");
}

/// Worker calls with a malformed receipt, no receipt, an unknown field, a body that is
/// not JSON or not declared JSON are rejected (400, 415) and leave the task running.
async fn malformed_worker_bodies_are_rejected_and_change_nothing(app: TestApp) {
    let id = id_of(&create_pending(&app, "picky", &json!(1)).await);
    let received = receive_one(&app, "picky", "lease=30").await;
    for verb in ["complete", "fail"] {
        let response = finish(&app, &id, verb, &json!({"receipt": "nope"})).await;
        assert_error(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - invalid receipt \"nope\"",
        )
        .await;

        let response = finish(&app, &id, verb, &json!({"result": 1, "error": 1})).await;
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - unknown field `",
        )
        .await;

        let response = finish(&app, &id, verb, &json!({})).await;
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - receipt is required",
        )
        .await;

        let response = finish(
            &app,
            &id,
            verb,
            &json!({"receipt": received.receipt, "extra": true}),
        )
        .await;
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - unknown field `extra`",
        )
        .await;

        for raw in ["{\"receipt\": ", "not json", ""] {
            let response = app
                .as_admin(Method::POST, &format!("/api/v1/tasks/{id}/{verb}"))
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .unwrap();
            assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
        }

        let response = app
            .as_admin(Method::POST, &format!("/api/v1/tasks/{id}/{verb}"))
            .header("content-type", "text/plain")
            .body(json!({"receipt": received.receipt}).to_string())
            .send()
            .await
            .unwrap();
        assert_error_prefix(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type - ",
        )
        .await;
    }
    // A result of the wrong kind of field: complete takes no `error`, fail no `result`.
    let response = finish(
        &app,
        &id,
        "complete",
        &json!({"receipt": received.receipt, "error": "e"}),
    )
    .await;
    assert_error_prefix(
        response,
        StatusCode::BAD_REQUEST,
        "Bad Request - unknown field `error`",
    )
    .await;
    let response = finish(
        &app,
        &id,
        "fail",
        &json!({"receipt": received.receipt, "result": 1}),
    )
    .await;
    assert_error_prefix(
        response,
        StatusCode::BAD_REQUEST,
        "Bad Request - unknown field `result`",
    )
    .await;

    let task = get_task(&app, &id).await;
    assert_eq!(task["status"], "running", "{task}");
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task["error"], Value::Null);
    assert_eq!(app.counts("picky").await, (0, 1, 0, 0));
    finish_ok(
        &app,
        &id,
        "complete",
        &json!({"receipt": received.receipt, "result": "fine"}),
    )
    .await;
}

/// A lease that ends unanswered gives the task back: running while leased, pending
/// once the lease is over, then received again (same task) with attempts 2.
async fn expired_lease_redelivers_the_task_with_attempts_counted(app: TestApp) {
    let id = id_of(&create_pending(&app, "slowpoke", &json!({"n": 5})).await);
    let first = receive_one(&app, "slowpoke", "lease=0.2").await;
    assert_eq!(first.task_id, id);
    let leased = get_task(&app, &id).await;
    assert_eq!(leased["status"], "running", "{leased}");
    assert_eq!(leased["attempts"], 1);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let expired = get_task(&app, &id).await;
    assert_eq!(expired["status"], "pending", "{expired}");
    assert_eq!(expired["attempts"], 1);
    assert_eq!(expired["finished_at"], Value::Null);
    assert_eq!(task_counts(&app, "slowpoke").await, counts(1, 0, 0, 0, 0));

    let second = receive_one(&app, "slowpoke", "lease=30&wait=5").await;
    assert_eq!(second.task_id, id);
    assert_eq!(second.attempts, 2);
    assert_eq!(second.payload, json!({"n": 5}));
    let running = get_task(&app, &id).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 2);
    assert_eq!(task_counts(&app, "slowpoke").await, counts(0, 1, 0, 0, 0));
}

/// With `max_attempts: 1`, a lease that ends unanswered fails the task with no
/// worker call: it reads failed, counts as failed, is not handed out again, and the
/// late worker's receipt is 409.
async fn expired_lease_with_no_attempts_left_reads_failed(app: TestApp) {
    let (status, _) = app.configure("fragile", json!({"max_attempts": 1})).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = id_of(&create_pending(&app, "fragile", &json!(1)).await);
    let received = receive_one(&app, "fragile", "lease=0.2").await;
    assert_eq!(get_task(&app, &id).await["status"], "running");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let task = get_task(&app, &id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task_counts(&app, "fragile").await, counts(0, 0, 0, 1, 0));

    let again = app.receive("fragile", "wait=0.3").await;
    assert!(
        again.is_empty(),
        "out of attempts, yet handed out: {again:?}"
    );
    assert_eq!(get_task(&app, &id).await["status"], "failed");

    let response = finish(
        &app,
        &id,
        "complete",
        &json!({"receipt": received.receipt, "result": "late"}),
    )
    .await;
    assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;
    let task = get_task(&app, &id).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(task["result"], Value::Null);
}

/// A `GET` with `Prefer: wait=5` on a running task whose lease ends with no attempts
/// left answers failed at about the lease end, well before its wait is over.
async fn get_with_wait_returns_failed_when_the_last_lease_ends(app: TestApp) {
    let (status, _) = app.configure("last", json!({"max_attempts": 1})).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = id_of(&create_pending(&app, "last", &json!(1)).await);
    let leased_at = Instant::now();
    receive_one(&app, "last", "lease=1").await;

    let (_, _, task) = get_waiting(&app, &id, "5").await;
    let elapsed = leased_at.elapsed();
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "failed after {elapsed:?}, before the 1 s lease ended"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "the wait did not end with the lease: {elapsed:?}"
    );
}

/// The same `Idempotency-Key` on the same queue gives the same task and one message;
/// another key, or the same key on another queue, makes a new task; a key taken by a
/// plain message is 409.
async fn idempotency_key_returns_the_same_task_and_pushes_one_message(app: TestApp) {
    let create_keyed = |queue: &'static str, key: &'static str, payload: Value| {
        let request = app
            .as_admin(Method::POST, &format!("/api/v1/tasks/{queue}"))
            .header("idempotency-key", key)
            .header("prefer", "respond-async")
            .json(&payload);
        async move {
            let (status, _, task) = answer(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{task}");
            assert_task_shape(&task);
            task
        }
    };
    let first = create_keyed("billing", "order-17", json!({"amount": 10})).await;
    let again = create_keyed("billing", "order-17", json!({"amount": 10})).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.counts("billing").await, (1, 0, 0, 0), "one message");
    assert_eq!(task_counts(&app, "billing").await, counts(1, 0, 0, 0, 0));

    let other_key = create_keyed("billing", "order-18", json!({"amount": 10})).await;
    assert_ne!(other_key["id"], first["id"]);
    let other_queue = create_keyed("refunds", "order-17", json!({"amount": 10})).await;
    assert_ne!(other_queue["id"], first["id"]);
    assert_eq!(app.counts("billing").await, (2, 0, 0, 0));

    // The repeat still finds the task once it is finished, and answers its result.
    let received = receive_one(&app, "billing", "lease=30").await;
    let done_id = received.task_id.clone();
    finish_ok(
        &app,
        &done_id,
        "complete",
        &json!({"receipt": received.receipt, "result": "paid"}),
    )
    .await;
    let key = if done_id == id_of(&first) {
        "order-17"
    } else {
        "order-18"
    };
    let response = app
        .as_admin(Method::POST, "/api/v1/tasks/billing")
        .header("idempotency-key", key)
        .header("prefer", "wait=5")
        .json(&json!({"amount": 10}))
        .send()
        .await
        .unwrap();
    let (status, _, repeated) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{repeated}");
    assert_eq!(repeated["id"], done_id.as_str());
    assert_eq!(repeated["result"], "paid");
    assert_eq!(app.counts("billing").await, (1, 0, 0, 0));

    let response = app
        .as_admin(Method::POST, "/api/v1/queues/billing/messages")
        .header("idempotency-key", "plain-1")
        .json(&json!("not a task"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app
        .as_admin(Method::POST, "/api/v1/tasks/billing")
        .header("idempotency-key", "plain-1")
        .header("prefer", "respond-async")
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;
    assert_eq!(app.counts("billing").await, (2, 0, 0, 0));
}

/// `GET /api/v1/queues/{q}` counts the queue's tasks by status, and the counts move
/// with the tasks: pending, running, succeeded, failed, then expired by a purge.
async fn queue_info_counts_tasks_by_status(app: TestApp) {
    let (status, _) = app.configure("mixed", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(task_counts(&app, "mixed").await, counts(0, 0, 0, 0, 0));
    for n in 0..4 {
        create_pending(&app, "mixed", &json!(n)).await;
    }
    assert_eq!(task_counts(&app, "mixed").await, counts(4, 0, 0, 0, 0));

    let to_succeed = receive_one(&app, "mixed", "lease=30").await;
    let to_fail = receive_one(&app, "mixed", "lease=30").await;
    let to_run = receive_one(&app, "mixed", "lease=30").await;
    assert_eq!(task_counts(&app, "mixed").await, counts(1, 3, 0, 0, 0));

    finish_ok(
        &app,
        &to_succeed.task_id,
        "complete",
        &json!({"receipt": to_succeed.receipt, "result": 1}),
    )
    .await;
    finish_ok(
        &app,
        &to_fail.task_id,
        "fail",
        &json!({"receipt": to_fail.receipt, "error": 1}),
    )
    .await;
    assert_eq!(task_counts(&app, "mixed").await, counts(1, 1, 1, 1, 0));
    assert_eq!(app.counts("mixed").await, (1, 1, 0, 0));

    let response = app
        .as_admin(Method::POST, "/api/v1/queues/mixed/purge")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(task_counts(&app, "mixed").await, counts(0, 0, 1, 1, 2));
    assert_eq!(get_task(&app, &to_run.task_id).await["status"], "expired");

    // Counts are per queue.
    create_pending(&app, "elsewhere", &json!(1)).await;
    assert_eq!(task_counts(&app, "mixed").await, counts(0, 0, 1, 1, 2));
    assert_eq!(task_counts(&app, "elsewhere").await, counts(1, 0, 0, 0, 0));
}

/// A task whose message was purged reads expired, a wait on it ends at once, and its
/// worker's receipt is 409.
async fn purged_task_reads_expired_and_its_receipt_is_stale(app: TestApp) {
    let leased = id_of(&create_pending(&app, "gone", &json!(1)).await);
    let received = receive_one(&app, "gone", "lease=30").await;
    assert_eq!(received.task_id, leased);
    let waiting = id_of(&create_pending(&app, "gone", &json!(2)).await);

    let response = app
        .as_admin(Method::POST, "/api/v1/queues/gone/purge")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    for id in [&leased, &waiting] {
        let (elapsed, _, task) = get_waiting(&app, id, "5").await;
        assert_eq!(task["status"], "expired", "{task}");
        assert_eq!(task["result"], Value::Null);
        assert!(elapsed < Duration::from_secs(2), "waited {elapsed:?}");
    }
    let response = finish(
        &app,
        &leased,
        "complete",
        &json!({"receipt": received.receipt, "result": "too late"}),
    )
    .await;
    assert_error_prefix(response, StatusCode::CONFLICT, "Conflict - ").await;
    assert_eq!(get_task(&app, &leased).await["status"], "expired");
}

/// A purge finishes the queue's unfinished tasks (expired), so callers waiting on
/// them (a `GET` with `Prefer: wait=5`, a create with `Prefer: wait=5`) get the
/// outcome as soon as the purge commits, like any other finish, not when their wait
/// runs out.
async fn waits_on_a_task_end_as_soon_as_its_queue_is_purged(app: TestApp) {
    let app = Arc::new(app);
    let id = id_of(&create_pending(&app, "doomed", &json!(1)).await);
    let purger = {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let response = app
                .as_admin(Method::POST, "/api/v1/queues/doomed/purge")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        })
    };
    let creator = {
        let app = app.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = create(&app, "doomed", &json!(2), Some("wait=5")).await;
            (started.elapsed(), answer(response).await)
        })
    };
    let (elapsed, _, task) = get_waiting(&app, &id, "5").await;
    purger.await.unwrap();
    assert_eq!(task["status"], "expired", "{task}");
    assert!(
        elapsed < Duration::from_secs(3),
        "the GET waited {elapsed:?} although the task expired after 0.5 s"
    );
    let (elapsed, (status, _, created)) = creator.await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "an expired task is final: {created}"
    );
    assert_eq!(created["status"], "expired");
    assert!(
        elapsed < Duration::from_secs(3),
        "the create waited {elapsed:?} although the task expired after 0.5 s"
    );
}

/// With `tasks.retention = 1s`, a finished task (and a purged one) gives 404 after a
/// few seconds, while an unfinished task is kept.
async fn finished_tasks_are_dropped_after_the_retention(backend: Backend) {
    let app = common::spawn_app_with(&backend, |config| {
        config.tasks.retention = Duration::from_secs(1);
        config.sweep_interval = Duration::from_secs(1);
    })
    .await;
    let done = id_of(&create_pending(&app, "kept", &json!(1)).await);
    let received = receive_one(&app, "kept", "lease=30").await;
    assert_eq!(received.task_id, done);
    finish_ok(
        &app,
        &done,
        "complete",
        &json!({"receipt": received.receipt, "result": 1}),
    )
    .await;
    let finished_at = Instant::now();
    let unfinished = id_of(&create_pending(&app, "kept", &json!(2)).await);
    let purged = id_of(&create_pending(&app, "dropped", &json!(3)).await);
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/dropped/purge")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(get_task(&app, &done).await["status"], "succeeded");
    assert_eq!(get_task(&app, &purged).await["status"], "expired");

    let deadline = Instant::now() + Duration::from_secs(10);
    for id in [&done, &purged] {
        loop {
            let response = app
                .as_admin(Method::GET, &format!("/api/v1/tasks/{id}"))
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::NOT_FOUND {
                assert_error(
                    response,
                    StatusCode::NOT_FOUND,
                    &format!("Not Found - task {id}"),
                )
                .await;
                break;
            }
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                Instant::now() < deadline,
                "task {id} still there 10 s after it finished"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        finished_at.elapsed() >= Duration::from_millis(900),
        "dropped after {:?}, before the 1 s retention",
        finished_at.elapsed()
    );
    assert_eq!(get_task(&app, &unfinished).await["status"], "pending");
    assert_eq!(task_counts(&app, "kept").await, counts(1, 0, 0, 0, 0));
    assert_eq!(task_counts(&app, "dropped").await, counts(0, 0, 0, 0, 0));
}

/// With `tasks.retention = 1s`, tasks that failed by running out of attempts (a retry
/// on the last attempt, or the last lease ending unanswered) are finished like any
/// other failed task: they give 404 after the retention, as a task failed by `fail`
/// does.
async fn tasks_failed_by_running_out_of_attempts_are_dropped_after_the_retention(backend: Backend) {
    let app = common::spawn_app_with(&backend, |config| {
        config.tasks.retention = Duration::from_secs(1);
        config.sweep_interval = Duration::from_secs(1);
    })
    .await;
    let (status, _) = app.configure("once", json!({"max_attempts": 1})).await;
    assert_eq!(status, StatusCode::CREATED);

    let failed = id_of(&create_pending(&app, "once", &json!("fail")).await);
    let received = receive_one(&app, "once", "lease=30").await;
    assert_eq!(received.task_id, failed);
    let answered = finish_ok(
        &app,
        &failed,
        "fail",
        &json!({"receipt": received.receipt, "error": "no"}),
    )
    .await;
    assert_finished(&answered, "failed");

    let retried = id_of(&create_pending(&app, "once", &json!("retry")).await);
    let received = receive_one(&app, "once", "lease=30").await;
    assert_eq!(received.task_id, retried);
    let answered = finish_ok(
        &app,
        &retried,
        "fail",
        &json!({"receipt": received.receipt, "error": "again", "retry": true}),
    )
    .await;
    assert_eq!(answered["status"], "failed", "{answered}");

    let abandoned = id_of(&create_pending(&app, "once", &json!("lease")).await);
    let received = receive_one(&app, "once", "lease=0.2").await;
    assert_eq!(received.task_id, abandoned);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get_task(&app, &abandoned).await["status"], "failed");

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut remaining = vec![failed, retried, abandoned];
    while !remaining.is_empty() {
        let mut kept = Vec::new();
        for id in remaining {
            let response = app
                .as_admin(Method::GET, &format!("/api/v1/tasks/{id}"))
                .send()
                .await
                .unwrap();
            match response.status() {
                StatusCode::NOT_FOUND => {}
                StatusCode::OK => kept.push(id),
                other => panic!("task {id}: unexpected {other}"),
            }
        }
        remaining = kept;
        if remaining.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let mut still = Vec::new();
            for id in &remaining {
                still.push(get_task(&app, id).await);
            }
            panic!("failed tasks still there 10 s after they failed (retention 1 s): {still:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every task call without credentials, or with a wrong secret, is 401
/// `"Unauthorized"` and changes nothing.
async fn missing_or_wrong_credentials_are_401_on_every_task_call(app: TestApp) {
    let id = id_of(&create_pending(&app, "secure", &json!(1)).await);
    let received = receive_one(&app, "secure", "lease=30").await;
    let receipt = json!({"receipt": received.receipt, "result": 1});
    let calls = [
        (Method::POST, "/api/v1/tasks/secure".to_owned(), json!(1)),
        (Method::GET, format!("/api/v1/tasks/{id}"), Value::Null),
        (
            Method::POST,
            format!("/api/v1/tasks/{id}/complete"),
            receipt.clone(),
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{id}/fail"),
            json!({"receipt": received.receipt}),
        ),
    ];
    for (method, path, body) in &calls {
        let anonymous = app.request(method.clone(), path);
        let wrong = app.as_client("admin", "wrong-secret", method.clone(), path);
        for request in [anonymous, wrong] {
            let request = if body.is_null() {
                request
            } else {
                request.json(body)
            };
            let response = request.send().await.unwrap();
            assert_error(response, StatusCode::UNAUTHORIZED, "Unauthorized").await;
        }
    }
    assert_eq!(get_task(&app, &id).await["status"], "running");
    assert_eq!(app.counts("secure").await, (0, 1, 0, 0));
}

/// A client with `task:orders:produce` creates and reads tasks on `orders` only and
/// cannot complete or fail them (403); a worker with `task:orders:consume` (and
/// `queue:orders:consume` to receive) completes them.
async fn produce_grant_creates_and_reads_but_cannot_finish_or_create_elsewhere(app: TestApp) {
    let caller = app.create_client("caller", &["task:orders:produce"]).await;
    let worker = app
        .create_client("worker", &["task:orders:consume", "queue:orders:consume"])
        .await;
    let as_caller = |method: Method, path: &str| app.as_client("caller", &caller, method, path);
    let as_worker = |method: Method, path: &str| app.as_client("worker", &worker, method, path);

    let response = as_caller(Method::POST, "/api/v1/tasks/orders")
        .header("prefer", "respond-async")
        .json(&json!({"item": "book"}))
        .send()
        .await
        .unwrap();
    let (status, headers, task) = answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let id = id_of(&task);
    let location = header(&headers, "location").unwrap().to_owned();
    let response = as_caller(Method::GET, &location).send().await.unwrap();
    let (status, _, polled) = answer(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(polled["id"], id.as_str());

    let response = as_caller(Method::POST, "/api/v1/tasks/other")
        .header("prefer", "respond-async")
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant task:other:produce",
    )
    .await;
    let response = app
        .as_admin(Method::GET, "/api/v1/queues/other")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "nothing created");

    let elsewhere = id_of(&create_pending(&app, "other", &json!(1)).await);
    let response = as_caller(Method::GET, &format!("/api/v1/tasks/{elsewhere}"))
        .send()
        .await
        .unwrap();
    assert_error_prefix(response, StatusCode::FORBIDDEN, "Forbidden - ").await;

    let response = as_worker(Method::POST, "/api/v1/queues/orders/receive?lease=30")
        .send()
        .await
        .unwrap();
    let messages = common::messages_of(response).await;
    assert_eq!(messages.len(), 1);
    let received = Received::of(&messages[0]);
    assert_eq!(received.task_id, id);

    for (verb, body) in [
        (
            "complete",
            json!({"receipt": received.receipt, "result": 1}),
        ),
        ("fail", json!({"receipt": received.receipt, "error": 1})),
    ] {
        let response = as_caller(Method::POST, &format!("/api/v1/tasks/{id}/{verb}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            StatusCode::FORBIDDEN,
            "Forbidden - needs grant task:orders:consume",
        )
        .await;
    }
    assert_eq!(get_task(&app, &id).await["status"], "running");

    let response = as_worker(Method::POST, "/api/v1/tasks/orders")
        .header("prefer", "respond-async")
        .json(&json!(1))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant task:orders:produce",
    )
    .await;

    let response = as_worker(Method::POST, &format!("/api/v1/tasks/{id}/complete"))
        .json(&json!({"receipt": received.receipt, "result": {"shipped": true}}))
        .send()
        .await
        .unwrap();
    let (status, _, done) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_finished(&done, "succeeded");

    let response = as_caller(Method::GET, &location)
        .header("prefer", "wait=5")
        .send()
        .await
        .unwrap();
    let (status, _, seen) = answer(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["result"], json!({"shipped": true}));
    assert_eq!(app.counts("orders").await, (0, 0, 0, 0));
}

/// A create whose body is not JSON (400), not declared JSON (415), over 1 MiB (413),
/// or whose queue name is invalid (400) is refused and creates nothing.
async fn bad_create_requests_are_rejected_and_create_nothing(app: TestApp) {
    let raw = |body: String, content_type: &str| {
        app.as_admin(Method::POST, "/api/v1/tasks/rejects")
            .header("content-type", content_type)
            .header("prefer", "respond-async")
            .body(body)
    };
    for body in ["{\"a\": ", "not json", ""] {
        let response = raw(body.to_owned(), "application/json")
            .send()
            .await
            .unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let response = raw("{}".to_owned(), "text/plain").send().await.unwrap();
    assert_error_prefix(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type - ",
    )
    .await;
    let big = format!("\"{}\"", "x".repeat(1024 * 1024));
    let response = raw(big, "application/json").send().await.unwrap();
    assert_error_prefix(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload Too Large - ",
    )
    .await;
    let response = app
        .as_admin(Method::GET, "/api/v1/queues/rejects")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "nothing created");

    let too_long = "q".repeat(129);
    for bad in ["bad!name", "sp%20ace", too_long.as_str()] {
        let response = create(&app, bad, &json!(1), Some("respond-async")).await;
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - invalid queue name",
        )
        .await;
    }

    // Just under the limit is fine.
    let fits = format!("\"{}\"", "x".repeat(1024 * 1024 - 1024));
    let response = raw(fits, "application/json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Task messages settled through the queue API end their tasks, and wake whoever
/// waits on them: an ack is a success without a result, a pop (which no worker can
/// answer) expires the task, a nack out of attempts fails it with `"out of
/// attempts"`. A redrive of that dead letter reopens the task, and a worker then
/// completes it.
async fn queue_api_settlements_end_tasks_and_a_redrive_reopens_them(app: TestApp) {
    let app = Arc::new(app);
    let (status, _) = app.configure("plain", json!({"max_attempts": 1})).await;
    assert_eq!(status, StatusCode::CREATED);

    // An ack through the queue API, while a GET waits on the task.
    let acked = id_of(&create_pending(&app, "plain", &json!("a")).await);
    let message = receive_one(&app, "plain", "lease=30").await;
    let waiting = tokio::spawn({
        let (app, id) = (app.clone(), acked.clone());
        async move { get_waiting(&app, &id, "10").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.settle("plain", "ack", json!({"receipts": [message.receipt]}))
        .await;
    let (elapsed, _, task) = waiting.await.unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task["attempts"], 1);
    assert_rfc3339(&task["finished_at"], "finished_at");
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by the ack, not by the 10 s wait: {elapsed:?}"
    );

    // A pop: nobody can answer the task any more.
    let popped = id_of(&create_pending(&app, "plain", &json!("b")).await);
    assert_eq!(app.pop("plain", 1).await.len(), 1);
    let task = get_task(&app, &popped).await;
    assert_eq!(task["status"], "expired", "{task}");
    assert_rfc3339(&task["finished_at"], "finished_at");

    // A nack with no attempts left: failed, its dead letter kept.
    let dead = id_of(&create_pending(&app, "plain", &json!("c")).await);
    let message = receive_one(&app, "plain", "lease=30").await;
    app.settle("plain", "nack", json!({"receipts": [message.receipt]}))
        .await;
    let task = get_task(&app, &dead).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"], "out of attempts");
    assert_rfc3339(&task["finished_at"], "finished_at");
    assert_eq!(app.counts("plain").await.3, 1, "one dead letter");

    // The redrive reopens it; a worker completes it.
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/plain/dead/redrive")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let task = get_task(&app, &dead).await;
    assert_eq!(task["status"], "pending", "{task}");
    assert_eq!(task["finished_at"], Value::Null);
    let message = receive_one(&app, "plain", "lease=30").await;
    assert_eq!(message.task_id, dead);
    let task = finish_ok(
        &app,
        &dead,
        "complete",
        &json!({"receipt": message.receipt, "result": "second round"}),
    )
    .await;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["result"], "second round");
    assert_eq!(
        task_counts(&app, "plain").await,
        counts(0, 0, 2, 0, 1),
        "after the ack, the pop and the redriven completion"
    );
}

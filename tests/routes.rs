//! Routes of the config file (`[[routes]]`) over real HTTP: legacy endpoints mapped
//! onto queues (seeds 000 and 002), tasks (seed 001) and upstreams with compensation
//! (seed 003). Upstreams are small axum servers started by each test, told to answer,
//! fail, hang or be down. Tests assert the effect (what the queue holds, what the
//! upstream received), not only the status. Each server test runs once per backend
//! (`sqlite::…`, `postgres::…`); start-up validation needs no server.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_error, assert_json_conventions, spawn_app_with, trials, Backend, TestApp};
use hopper::config::{Config, Overrides};
use hopper::routes::{Route, RouteSpec};
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

trials! {
    each_backend {
        seed_000_add_queues_the_body_for_the_client_and_refuses_an_unknown_client,
        seed_002_push_count_and_pop_are_fifo_and_an_empty_pop_says_no_hay_dato,
        default_answers_are_202_id_the_message_204_and_a_count_object,
        templates_fill_ids_messages_counts_and_path_parameters,
        public_routes_need_no_credentials_and_the_others_take_every_credential_form,
        each_action_needs_the_grant_of_the_matching_api_operation,
        methods_of_one_path_share_it_and_other_methods_are_405,
        bodies_over_the_limit_are_413_and_change_nothing,
        forward_passes_the_answer_through_and_compensates_nothing_on_success,
        forward_on_a_5xx_queues_the_compensation_before_answering_502,
        forward_on_a_timeout_queues_the_compensation_and_answers_504,
        forward_to_a_down_upstream_queues_the_compensation_and_answers_502,
        forward_without_compensate_answers_502_and_queues_nothing,
        task_route_answers_the_task_a_worker_completes_in_time: multi_thread(2),
        task_route_answers_202_with_location_when_the_task_is_slow,
        task_route_on_a_delivering_queue_answers_as_the_upstream_did: multi_thread(2),
    }
    plain {
        a_valid_file_loads_every_action,
        every_bad_route_is_refused_at_start_with_its_line,
        paths_of_hoppers_own_api_are_refused,
        routes_with_the_same_method_and_path_shape_collide,
    }
}

/// The fields of a task answer, as `GET /api/v1/tasks/{id}` shows them.
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

/// Seed 000's client and its secret.
const SEED_CLIENT: &str = "12345";
const SEED_SECRET: &str = "MTI4NTBANjEwMmZjMzhiOTM5YjQyODVhNDAwZmE3";

/// The routes of a TOML text, validated as the configuration does.
fn routes(text: &str) -> Vec<Route> {
    #[derive(Deserialize)]
    struct File {
        routes: Vec<toml::Spanned<RouteSpec>>,
    }
    let file: File = toml::from_str(text).unwrap_or_else(|e| panic!("bad test TOML: {e}"));
    hopper::routes::parse(file.routes, text).unwrap_or_else(|e| panic!("routes refused: {e:#}"))
}

/// A server on `backend` with the routes of `text`.
async fn spawn_with_routes(backend: &Backend, text: &str) -> TestApp {
    let routes = routes(text);
    spawn_app_with(backend, move |config| config.routes = routes).await
}

/// Status, headers and body text of an answer.
async fn parts(response: Response) -> (StatusCode, HeaderMap, String) {
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Status and JSON body of an answer, after checking the API's conventions.
async fn json_answer(response: Response) -> (StatusCode, Value) {
    let (status, headers, text) = parts(response).await;
    assert_json_conventions(&headers);
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {text:?}"));
    (status, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The bodies of every ready message of `queue`, oldest first, taken off the queue.
async fn drain(app: &TestApp, queue: &str) -> Vec<Value> {
    app.pop(queue, 100)
        .await
        .iter()
        .map(|m| m["body"].clone())
        .collect()
}

/// Asserts `queue` was never created: no route pushed to it.
async fn assert_no_queue(app: &TestApp, queue: &str) {
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/queues/{queue}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "queue {queue} exists"
    );
}

/// Seed 000: a client created with the seed's secret and `queue:add:produce` posts
/// with `API-Client-Id` + `Bearer`: 200 `{"status":"OK"}` and the body is on `add`,
/// whether sent as JSON or with curl's default form content type. Another client id
/// with the same secret, or no credentials, is 401 and queues nothing; a client
/// without the grant is 403 and queues nothing.
async fn seed_000_add_queues_the_body_for_the_client_and_refuses_an_unknown_client(
    backend: Backend,
) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/api/v1/add"
enqueue = "add"
respond = { status = 200, body = { status = "OK" } }
"#,
    )
    .await;
    let created = app
        .as_admin(Method::POST, "/api/v1/admin/clients")
        .json(&json!({"id": SEED_CLIENT, "secret": SEED_SECRET, "grants": ["queue:add:produce"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body = r#"{"user_id":123,"app_id":222,"item_id":4,"quantity":5}"#;
    let seed_request = |client_id: &str, content_type: &str| {
        app.request(Method::POST, "/api/v1/add")
            .header("API-Client-Id", client_id)
            .header("Authorization", format!("Bearer {SEED_SECRET}"))
            .header("Content-Type", content_type)
            .body(body)
    };

    let (status, answer) = json_answer(
        seed_request(SEED_CLIENT, "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"status": "OK"})));
    let (status, answer) = json_answer(
        seed_request(SEED_CLIENT, "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"status": "OK"})));
    let sent: Value = serde_json::from_str(body).unwrap();
    assert_eq!(drain(&app, "add").await, [sent.clone(), sent]);

    let refused = seed_request("1234567", "application/json")
        .send()
        .await
        .unwrap();
    let headers = assert_error(refused, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    assert!(headers.contains_key("www-authenticate"));
    let anonymous = app
        .request(Method::POST, "/api/v1/add")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    let secret = app.create_client("reader", &["queue:add:consume"]).await;
    let forbidden = app
        .as_client("reader", &secret, Method::POST, "/api/v1/add")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(
        forbidden,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:add:produce",
    )
    .await;
    assert_eq!(app.counts("add").await, (0, 0, 0, 0));
}

/// Seed 002: push answers `{"status":"ok"}`, count `{"count": N}` (0 before the queue
/// exists), pop the oldest message first, and "No hay Dato" when there is none. A
/// plain-text body is kept as a JSON string.
async fn seed_002_push_count_and_pop_are_fifo_and_an_empty_pop_says_no_hay_dato(backend: Backend) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/apis/queue/push"
enqueue = "queu"
respond = { status = 200, body = { status = "ok" } }

[[routes]]
method = "GET"
path = "/apis/queue/count"
count = "queu"
respond = { status = 200, body = { count = "{{count}}" } }

[[routes]]
method = "POST"
path = "/apis/queue/pop"
pop = "queu"
respond = { status = 200, body = { message = "{{message}}" } }
empty = { status = 200, body = { message = "No hay Dato" } }
"#,
    )
    .await;
    let secret = app.create_client("pulpo", &["queue:queu:*"]).await;
    let call = |method: Method, path: &str| app.as_client("pulpo", &secret, method, path);
    let count = || async {
        let (status, body) =
            json_answer(call(Method::GET, "/apis/queue/count").send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        body
    };
    let pop = || async {
        let (status, body) =
            json_answer(call(Method::POST, "/apis/queue/pop").send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        body
    };

    assert_eq!(count().await, json!({"count": 0}));
    assert_eq!(pop().await, json!({"message": "No hay Dato"}));
    for body in [json!({"msg": "primero"}), json!(["segundo", 2])] {
        let (status, answer) = json_answer(
            call(Method::POST, "/apis/queue/push")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, answer), (StatusCode::OK, json!({"status": "ok"})));
    }
    let (status, answer) = json_answer(
        call(Method::POST, "/apis/queue/push")
            .header("content-type", "text/plain")
            .body("tercero")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(count().await, json!({"count": 3}));

    assert_eq!(pop().await, json!({"message": {"msg": "primero"}}));
    assert_eq!(count().await, json!({"count": 2}));
    assert_eq!(pop().await, json!({"message": ["segundo", 2]}));
    assert_eq!(pop().await, json!({"message": "tercero"}));
    assert_eq!(pop().await, json!({"message": "No hay Dato"}));
    assert_eq!(count().await, json!({"count": 0}));
    assert_eq!(app.counts("queu").await, (0, 0, 0, 0));
}

/// Without `respond`: an enqueue answers 202 `{"id"}` (the id the queue API shows),
/// a pop the message's body as sent, 204 without a body when empty, a count
/// `{"count"}`. Leased messages are not ready, so a count leaves them out.
async fn default_answers_are_202_id_the_message_204_and_a_count_object(backend: Backend) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/in"
enqueue = "jobs"

[[routes]]
method = "POST"
path = "/out"
pop = "jobs"

[[routes]]
method = "GET"
path = "/size"
count = "jobs"
"#,
    )
    .await;
    let (status, answer) = json_answer(
        app.as_admin(Method::POST, "/in")
            .body(r#"{ "b": 1,  "a": [true] }"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert_eq!(answer.as_object().unwrap().len(), 1, "{answer}");
    // The message as the queue API shows it: the id answered, the body as sent.
    let leased = app.receive("jobs", "count=1&lease=30").await;
    assert_eq!(leased[0]["id"], id.as_str());
    assert_eq!(leased[0]["body"], json!({"b": 1, "a": [true]}));
    app.push("jobs", json!("second")).await;
    app.push("jobs", json!("third")).await;

    // The leased message is not ready: the count and the pops leave it out.
    let (status, answer) =
        json_answer(app.as_admin(Method::GET, "/size").send().await.unwrap()).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"count": 2})));
    let (status, headers, text) =
        parts(app.as_admin(Method::POST, "/out").send().await.unwrap()).await;
    assert_json_conventions(&headers);
    assert_eq!((status, text.as_str()), (StatusCode::OK, r#""second""#));
    let (status, _, text) = parts(app.as_admin(Method::POST, "/out").send().await.unwrap()).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, r#""third""#));
    let (status, _, text) = parts(app.as_admin(Method::POST, "/out").send().await.unwrap()).await;
    assert_eq!((status, text.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(app.counts("jobs").await, (0, 1, 0, 0));
    let empty = app.as_admin(Method::POST, "/in").send().await.unwrap();
    assert_error(
        empty,
        StatusCode::BAD_REQUEST,
        "Bad Request - a request body is required",
    )
    .await;
}

/// `{{id}}`, `{{message}}`, `{{count}}` and path parameters, whole (as JSON) and
/// inside text, in nested objects and arrays; the answer's status is the template's.
async fn templates_fill_ids_messages_counts_and_path_parameters(backend: Backend) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/customers/{customer}/orders"
enqueue = "orders"
respond = { status = 201, body = { id = "{{id}}", customer = "{{customer}}", text = "order {{id}} of {{customer}}", list = ["{{customer}}", 1, true, { deep = "{{id}}" }] } }

[[routes]]
method = "POST"
path = "/next/{worker}"
pop = "orders"
respond = { body = { got = "{{message}}", note = "{{worker}} took {{message}}", id = "{{id}}" } }
empty = { status = 404, body = "nothing for {{worker}}" }

[[routes]]
method = "GET"
path = "/customers/{customer}/backlog"
count = "orders"
respond = { status = 200, body = { who = "{{customer}}", n = "{{count}}", says = "{{count}} waiting" } }
"#,
    )
    .await;
    let (status, answer) = json_answer(
        app.as_admin(Method::POST, "/customers/ana%20m/orders")
            .json(&json!({"sku": "A-1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = answer["id"].as_str().expect("id is a string").to_owned();
    assert_eq!(
        answer,
        json!({
            "id": id,
            "customer": "ana m",
            "text": format!("order {id} of ana m"),
            "list": ["ana m", 1, true, {"deep": id}],
        })
    );
    let (status, answer) = json_answer(
        app.as_admin(Method::GET, "/customers/ana/backlog")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"who": "ana", "n": 1, "says": "1 waiting"}));
    let (status, answer) =
        json_answer(app.as_admin(Method::POST, "/next/w1").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({"got": {"sku": "A-1"}, "note": r#"w1 took {"sku":"A-1"}"#, "id": id})
    );
    let (status, answer) =
        json_answer(app.as_admin(Method::POST, "/next/w2").send().await.unwrap()).await;
    assert_eq!(
        (status, answer),
        (StatusCode::NOT_FOUND, json!("nothing for w2"))
    );
}

/// A `public` route answers without credentials (and ignores wrong ones); the others
/// are 401 with `WWW-Authenticate` without them, and take Basic as well as Bearer
/// with `API-Client-Id`.
async fn public_routes_need_no_credentials_and_the_others_take_every_credential_form(
    backend: Backend,
) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/hooks/in"
enqueue = "hooks"
public = true

[[routes]]
method = "GET"
path = "/hooks/count"
count = "hooks"
"#,
    )
    .await;
    let anonymous = app
        .request(Method::POST, "/hooks/in")
        .json(&json!({"event": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::ACCEPTED);
    let wrong = app
        .as_client(
            "nobody",
            "wrong-secret-wrong-secret",
            Method::POST,
            "/hooks/in",
        )
        .json(&json!({"event": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::ACCEPTED);

    let refused = app
        .request(Method::GET, "/hooks/count")
        .send()
        .await
        .unwrap();
    let headers = assert_error(refused, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    assert!(headers.contains_key("www-authenticate"));
    let secret = app.create_client("counter", &["queue:hooks:consume"]).await;
    let basic = app
        .as_client("counter", &secret, Method::GET, "/hooks/count")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_answer(basic).await,
        (StatusCode::OK, json!({"count": 2}))
    );
    let bearer = app
        .request(Method::GET, "/hooks/count")
        .header("API-Client-Id", "counter")
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_answer(bearer).await,
        (StatusCode::OK, json!({"count": 2}))
    );
}

/// enqueue needs `queue:q:produce`, pop `queue:q:consume`, count any grant on q, task
/// `task:q:produce`, a forward with a compensation queue that queue's `produce`, one
/// without `route:<path>:call`; a refusal is 403 and does nothing (no upstream call).
async fn each_action_needs_the_grant_of_the_matching_api_operation(backend: Backend) {
    let upstream =
        Upstream::start(Behaviour::Answer(200, "application/json", r#"{"ok":true}"#)).await;
    let app = spawn_with_routes(
        &backend,
        &format!(
            r#"
[[routes]]
method = "POST"
path = "/q/push"
enqueue = "q"

[[routes]]
method = "POST"
path = "/q/pop"
pop = "q"

[[routes]]
method = "GET"
path = "/q/count"
count = "q"

[[routes]]
method = "POST"
path = "/t"
task = "t"
wait = 0

[[routes]]
method = "POST"
path = "/f"
forward = {{ url = "http://{}/f" }}

[[routes]]
method = "POST"
path = "/fc"
forward = {{ url = "http://{}/fc" }}
compensate = "undo"
"#,
            upstream.addr, upstream.addr
        ),
    )
    .await;
    let producer = app.create_client("producer", &["queue:q:produce"]).await;
    let consumer = app.create_client("consumer", &["queue:q:consume"]).await;
    let tasker = app.create_client("tasker", &["task:t:produce"]).await;
    let nothing = app.create_client("nothing", &[]).await;
    let send = |id: &str, secret: &str, method: Method, path: &str| {
        app.as_client(id, secret, method, path)
            .json(&json!({"n": 1}))
            .send()
    };

    assert_eq!(
        send("producer", &producer, Method::POST, "/q/push")
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_error(
        send("consumer", &consumer, Method::POST, "/q/push")
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:q:produce",
    )
    .await;
    assert_error(
        send("producer", &producer, Method::POST, "/q/pop")
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:q:consume",
    )
    .await;
    assert_eq!(app.counts("q").await, (1, 0, 0, 0));
    for (id, secret) in [("producer", &producer), ("consumer", &consumer)] {
        let answer = json_answer(send(id, secret, Method::GET, "/q/count").await.unwrap()).await;
        assert_eq!(answer, (StatusCode::OK, json!({"count": 1})), "{id}");
    }
    assert_error(
        send("nothing", &nothing, Method::GET, "/q/count")
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "Forbidden - needs a grant on queue:q",
    )
    .await;
    let (status, popped) = json_answer(
        send("consumer", &consumer, Method::POST, "/q/pop")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, popped), (StatusCode::OK, json!({"n": 1})));

    assert_error(
        send("producer", &producer, Method::POST, "/t")
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant task:t:produce",
    )
    .await;
    assert_no_queue(&app, "t").await;
    assert_eq!(
        send("tasker", &tasker, Method::POST, "/t")
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.counts("t").await.0, 1);

    let caller = app.create_client("caller", &["route:/f*:call"]).await;
    let undoer = app.create_client("undoer", &["queue:undo:produce"]).await;
    for path in ["/f", "/fc"] {
        let refused = send("nothing", &nothing, Method::POST, path).await.unwrap();
        let needs = if path == "/f" {
            "route:/f:call"
        } else {
            "queue:undo:produce"
        };
        assert_error(
            refused,
            StatusCode::FORBIDDEN,
            &format!("Forbidden - needs grant {needs}"),
        )
        .await;
    }
    assert_eq!(
        upstream.seen().len(),
        0,
        "a refused forward called upstream"
    );
    let refused = send("caller", &caller, Method::POST, "/fc").await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "the route grant is not the queue's"
    );
    let forwarded = send("caller", &caller, Method::POST, "/f").await.unwrap();
    assert_eq!(forwarded.status(), StatusCode::OK);
    let forwarded = send("undoer", &undoer, Method::POST, "/fc").await.unwrap();
    assert_eq!(forwarded.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 2);
}

/// Routes with one path shape and different methods (and parameter names) share it;
/// another method is 405 as in the API, an unknown path is still the API's 404, and
/// the API itself is untouched.
async fn methods_of_one_path_share_it_and_other_methods_are_405(backend: Backend) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/shelves/{shelf}"
enqueue = "shelf"
respond = { status = 201, body = { shelf = "{{shelf}}" } }

[[routes]]
method = "get"
path = "/shelves/{name}"
count = "shelf"
respond = { body = { name = "{{name}}", count = "{{count}}" } }

[[routes]]
method = "DELETE"
path = "/shelves/{which}"
pop = "shelf"
"#,
    )
    .await;
    let pushed = app
        .as_admin(Method::POST, "/shelves/top")
        .json(&json!("book"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_answer(pushed).await,
        (StatusCode::CREATED, json!({"shelf": "top"}))
    );
    let counted = app
        .as_admin(Method::GET, "/shelves/low")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_answer(counted).await,
        (StatusCode::OK, json!({"name": "low", "count": 1}))
    );
    let popped = app
        .as_admin(Method::DELETE, "/shelves/x")
        .send()
        .await
        .unwrap();
    assert_eq!(json_answer(popped).await, (StatusCode::OK, json!("book")));

    let put = app
        .as_admin(Method::PUT, "/shelves/top")
        .send()
        .await
        .unwrap();
    let headers = assert_error(put, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").await;
    let allow = header(&headers, "allow").unwrap_or_default().to_owned();
    for method in ["GET", "POST", "DELETE"] {
        assert!(allow.contains(method), "Allow: {allow}");
    }
    let unknown = app
        .as_admin(Method::GET, "/shelves/top/more")
        .send()
        .await
        .unwrap();
    assert_error(unknown, StatusCode::NOT_FOUND, "Not Found").await;
    let ping = app
        .as_admin(Method::GET, "/api/v1/ping")
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
}

/// `max_body_bytes` holds on routes too: 413 on enqueue, task and forward, and
/// nothing is queued or sent upstream.
async fn bodies_over_the_limit_are_413_and_change_nothing(backend: Backend) {
    let upstream = Upstream::start(Behaviour::Answer(200, "text/plain", "ok")).await;
    let routes = routes(&format!(
        r#"
[[routes]]
method = "POST"
path = "/in"
enqueue = "big"

[[routes]]
method = "POST"
path = "/task"
task = "bigtasks"

[[routes]]
method = "POST"
path = "/out"
forward = {{ url = "http://{}/out" }}
compensate = "big-undo"
"#,
        upstream.addr
    ));
    let app = spawn_app_with(&backend, move |config| {
        config.routes = routes;
        config.max_body_bytes = 1024;
    })
    .await;
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
    for path in ["/in", "/task", "/out"] {
        let response = app
            .as_admin(Method::POST, path)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large - body exceeds 1024 bytes",
        )
        .await;
    }
    for queue in ["big", "bigtasks", "big-undo"] {
        assert_no_queue(&app, queue).await;
    }
    assert!(upstream.seen().is_empty());
}

/// Seed 003's cluster API behind a forward route with compensation.
fn forward_routes(upstream: SocketAddr, timeout: &str) -> String {
    format!(
        r#"
[[routes]]
method = "POST"
path = "/groups/{{group}}"
forward = {{ url = "http://{upstream}/cluster/groups/{{group}}/create", timeout = "{timeout}" }}
compensate = "groups-rollback"
"#
    )
}

/// A group creation as a client allowed to push compensations, which is what a forward
/// with a compensation queue needs.
async fn create_group(app: &TestApp, secret: &str, path: &str, body: &str) -> Response {
    app.as_client("cluster-user", secret, Method::POST, path)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// A 2xx or 4xx upstream answer comes back as is (status, content type, body); the
/// upstream got the method, the parameter encoded into its URL, the query, the body
/// and its content type, and never the client's credentials. Nothing is compensated.
async fn forward_passes_the_answer_through_and_compensates_nothing_on_success(backend: Backend) {
    let upstream = Upstream::start(Behaviour::Answer(
        201,
        "text/plain; charset=utf-8",
        "created",
    ))
    .await;
    let app = spawn_with_routes(&backend, &forward_routes(upstream.addr, "5s")).await;
    let secret = app
        .create_client("cluster-user", &["queue:groups-rollback:produce"])
        .await;

    let response = create_group(
        &app,
        &secret,
        "/groups/team%20a%2Fb?dry=1&x=%20",
        r#"{"name":"x"}"#,
    )
    .await;
    let (status, headers, text) = parts(response).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(text, "created");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].uri,
        "/cluster/groups/team%20a%2Fb/create?dry=1&x=%20"
    );
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[0].body, r#"{"name":"x"}"#);
    assert_eq!(seen[0].authorization, None);

    upstream.set(Behaviour::Answer(
        409,
        "application/json",
        r#"{"error":"exists"}"#,
    ));
    let response = create_group(&app, &secret, "/groups/a", r#"{"name":"x"}"#).await;
    let (status, headers, text) = parts(response).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(text, r#"{"error":"exists"}"#);
    assert_no_queue(&app, "groups-rollback").await;

    let anonymous = app
        .request(Method::POST, "/groups/a")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    assert_eq!(
        upstream.seen().len(),
        2,
        "a refused request reached the upstream"
    );
}

/// A 5xx is a failure: the client gets 502, and by then the compensation (the body's
/// fields with the path parameter, which wins over a body field of the same name) is
/// already on the compensate queue.
async fn forward_on_a_5xx_queues_the_compensation_before_answering_502(backend: Backend) {
    let upstream = Upstream::start(Behaviour::Answer(500, "text/plain", "boom")).await;
    let app = spawn_with_routes(&backend, &forward_routes(upstream.addr, "5s")).await;
    let secret = app
        .create_client("cluster-user", &["queue:groups-rollback:produce"])
        .await;
    let response = create_group(
        &app,
        &secret,
        "/groups/g%201",
        r#"{"name":"admins","group":"from-body","members":[1,2]}"#,
    )
    .await;
    assert_error(
        response,
        StatusCode::BAD_GATEWAY,
        "Bad Gateway - upstream answered 500",
    )
    .await;
    assert_eq!(
        drain(&app, "groups-rollback").await,
        [json!({"name": "admins", "group": "g 1", "members": [1, 2]})]
    );
    assert_eq!(upstream.seen().len(), 1);

    // A body that is not an object goes under "body"; an empty one adds nothing.
    create_group(&app, &secret, "/groups/g2", "[1]").await;
    create_group(&app, &secret, "/groups/g3", "").await;
    assert_eq!(
        drain(&app, "groups-rollback").await,
        [json!({"body": [1], "group": "g2"}), json!({"group": "g3"})]
    );
}

/// An upstream that does not answer in time: 504 after the route's timeout, with the
/// compensation queued.
async fn forward_on_a_timeout_queues_the_compensation_and_answers_504(backend: Backend) {
    let upstream = Upstream::start(Behaviour::Hang).await;
    let app = spawn_with_routes(&backend, &forward_routes(upstream.addr, "300ms")).await;
    let secret = app
        .create_client("cluster-user", &["queue:groups-rollback:produce"])
        .await;
    let started = Instant::now();
    let response = create_group(&app, &secret, "/groups/slow", r#"{"name":"s"}"#).await;
    assert_error(
        response,
        StatusCode::GATEWAY_TIMEOUT,
        "Gateway Timeout - upstream did not answer within 300ms",
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        drain(&app, "groups-rollback").await,
        [json!({"name": "s", "group": "slow"})]
    );
}

/// No upstream listening: 502 at once, with the compensation queued.
async fn forward_to_a_down_upstream_queues_the_compensation_and_answers_502(backend: Backend) {
    let app = spawn_with_routes(&backend, &forward_routes(down_address().await, "5s")).await;
    let secret = app
        .create_client("cluster-user", &["queue:groups-rollback:produce"])
        .await;
    let response = create_group(&app, &secret, "/groups/gone", r#"{"name":"d"}"#).await;
    assert_error(
        response,
        StatusCode::BAD_GATEWAY,
        "Bad Gateway - upstream unreachable",
    )
    .await;
    assert_eq!(
        drain(&app, "groups-rollback").await,
        [json!({"name": "d", "group": "gone"})]
    );
}

/// Without `compensate`, a failure is only answered: 502, and no queue appears.
async fn forward_without_compensate_answers_502_and_queues_nothing(backend: Backend) {
    let upstream = Upstream::start(Behaviour::Answer(503, "text/plain", "busy")).await;
    let app = spawn_with_routes(
        &backend,
        &format!(
            r#"
[[routes]]
method = "DELETE"
path = "/groups/{{id}}"
forward = {{ url = "http://{}/groups/{{id}}" }}
"#,
            upstream.addr
        ),
    )
    .await;
    let response = app
        .as_admin(Method::DELETE, "/groups/7")
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::BAD_GATEWAY,
        "Bad Gateway - upstream answered 503",
    )
    .await;
    let seen = upstream.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("DELETE", "/groups/7")
    );
    let queues: Value = app
        .as_admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queues["queues"], json!([]));
}

/// Seed 001: the body becomes the task's payload; a worker that completes it through
/// the task API within `wait` makes the route answer 200 with the task, result included.
async fn task_route_answers_the_task_a_worker_completes_in_time(backend: Backend) {
    let app = Arc::new(
        spawn_with_routes(
            &backend,
            r#"
[[routes]]
method = "POST"
path = "/api/v1/clients"
task = "clients"
wait = "10s"
"#,
        )
        .await,
    );
    let (status, _) = app.configure("clients", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let worker = {
        let app = app.clone();
        tokio::spawn(async move {
            let messages = app.receive("clients", "wait=10&lease=30").await;
            assert_eq!(messages.len(), 1, "{messages:?}");
            let body = &messages[0]["body"];
            let id = body["task_id"].as_str().unwrap().to_owned();
            let completed = app
                .as_admin(Method::POST, &format!("/api/v1/tasks/{id}/complete"))
                .json(&json!({"receipt": messages[0]["receipt"], "result": {"client_id": 42}}))
                .send()
                .await
                .unwrap();
            assert_eq!(completed.status(), StatusCode::OK);
            (id, body["payload"].clone())
        })
    };
    let secret = app.create_client("proxy", &["task:clients:produce"]).await;
    let response = app
        .as_client("proxy", &secret, Method::POST, "/api/v1/clients")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"email":"a@b.c","name":"Ann"}"#)
        .send()
        .await
        .unwrap();
    let (status, task) = json_answer(response).await;
    let (id, payload) = worker.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(payload, json!({"email": "a@b.c", "name": "Ann"}));
    assert_task_fields(&task);
    assert_eq!(task["id"], id);
    assert_eq!(task["queue"], "clients");
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["result"], json!({"client_id": 42}));
    assert_eq!(task["attempts"], 1);
    assert!(task["finished_at"].is_string());
}

/// A task not finished within `wait`: 202 with the task, `Location` of the task API
/// (which then shows it) and `Retry-After`; with `respond`, its template with `{{task_id}}`.
async fn task_route_answers_202_with_location_when_the_task_is_slow(backend: Backend) {
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/reports/{kind}"
task = "reports"
wait = "200ms"

[[routes]]
method = "PUT"
path = "/reports/{kind}"
task = "reports"
wait = 0
respond = { status = 202, body = { ticket = "{{task_id}}", kind = "{{kind}}" } }
"#,
    )
    .await;
    let started = Instant::now();
    let response = app
        .as_admin(Method::POST, "/reports/daily")
        .body("plain text input")
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    let (status, task) = json_answer(response).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_task_fields(&task);
    assert_eq!(task["status"], "pending");
    let id = task["id"].as_str().unwrap();
    let location = format!("/api/v1/tasks/{id}");
    assert_eq!(header(&headers, "location"), Some(location.as_str()));
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    let (status, shown) =
        json_answer(app.as_admin(Method::GET, &location).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["id"], id);

    let response = app
        .as_admin(Method::PUT, "/reports/weekly")
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    let (status, answer) = json_answer(response).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ticket = answer["ticket"].as_str().expect("a ticket").to_owned();
    assert_eq!(answer, json!({"ticket": ticket, "kind": "weekly"}));
    assert_eq!(
        header(&headers, "location"),
        Some(format!("/api/v1/tasks/{ticket}").as_str())
    );
    // The task messages: a text body is a JSON string; no body is null.
    let payloads: Vec<Value> = drain(&app, "reports")
        .await
        .iter()
        .map(|m| m["payload"].clone())
        .collect();
    assert_eq!(payloads, [json!("plain text input"), Value::Null]);
}

/// Seed 001 with Hopper as the executor: the task queue delivers to the customer API,
/// and the route answers with the upstream's status and body (JSON as JSON, text as
/// text) rather than with the task.
async fn task_route_on_a_delivering_queue_answers_as_the_upstream_did(backend: Backend) {
    let upstream = Upstream::start(Behaviour::Answer(201, "application/json", r#"{"id":9}"#)).await;
    let app = spawn_with_routes(
        &backend,
        r#"
[[routes]]
method = "POST"
path = "/clients"
task = "clients"
wait = "10s"
"#,
    )
    .await;
    let (status, body) = app
        .configure(
            "clients",
            json!({"delivery": {"url": format!("http://{}/customers", upstream.addr)}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = app
        .as_admin(Method::POST, "/clients")
        .json(&json!({"email": "a@b.c"}))
        .send()
        .await
        .unwrap();
    let (status, answer) = json_answer(response).await;
    assert_eq!((status, answer), (StatusCode::CREATED, json!({"id": 9})));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].body).unwrap(),
        json!({"email": "a@b.c"})
    );

    upstream.set(Behaviour::Answer(200, "text/plain", "created"));
    let response = app
        .as_admin(Method::POST, "/clients")
        .json(&json!({"email": "d@e.f"}))
        .send()
        .await
        .unwrap();
    let (status, headers, text) = parts(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(text, "created");
}

fn assert_task_fields(task: &Value) {
    let mut keys: Vec<&str> = task
        .as_object()
        .unwrap_or_else(|| panic!("a task is an object: {task}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = TASK_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected);
}

// --- start-up validation -------------------------------------------------------

/// Loads `text` as a config file; returns the whole error chain.
fn load_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("hopper.toml");
    std::fs::write(&path, text).unwrap();
    let error = Config::load(Overrides {
        config: Some(path),
        ..Overrides::default()
    })
    .expect_err("the file was accepted");
    format!("{error:#}")
}

/// A valid route, then `route` starting on line 8.
fn with_route(route: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[[routes]]\nmethod = \"POST\"\npath = \"/ok\"\nenqueue = \"ok\"\n\n[[routes]]\n{route}"
    )
}

fn a_valid_file_loads_every_action() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hopper.toml");
    std::fs::write(
        &path,
        r#"
[[routes]]
method = "POST"
path = "/api/v1/add"
enqueue = "add"
respond = { status = 200, body = { status = "OK" } }

[[routes]]
method = "POST"
path = "/api/v1/clients"
task = "clients"
wait = "5s"

[[routes]]
method = "POST"
path = "/groups"
forward = { url = "http://cluster.internal/groups", timeout = "5s" }
compensate = "groups-rollback"

[[routes]]
method = "GET"
path = "/apis/queue/count"
count = "queu"
respond = { status = 200, body = { count = "{{count}}" } }

[[routes]]
method = "POST"
path = "/apis/queue/pop"
pop = "queu"
empty = { status = 404, body = "No hay Dato" }
public = true
"#,
    )
    .unwrap();
    let config = Config::load(Overrides {
        config: Some(path),
        ..Overrides::default()
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let lines: Vec<usize> = config.routes.iter().map(|r| r.line).collect();
    assert_eq!(lines, [2, 8, 14, 20, 26]);
    assert!(config.routes[4].public);
}

fn every_bad_route_is_refused_at_start_with_its_line() {
    // Errors found by the TOML reader name the line of the field; the others the
    // line the route starts on.
    let cases: &[(&str, &str)] = &[
        ("method = \"POST\"\npath = \"/x\"\nenqeue = \"x\"\n", "unknown field `enqeue`"),
        ("method = \"POST\"\npath = \"/x\"\n", "needs one action: enqueue, pop, count, task or forward"),
        (
            "method = \"POST\"\npath = \"/x\"\nenqueue = \"x\"\npop = \"x\"\n",
            "has 2 actions (enqueue, pop); a route does exactly one",
        ),
        ("method = \"FETCH\"\npath = \"/x\"\nenqueue = \"x\"\n", "method \"FETCH\" is not one of GET, POST, PUT, PATCH, DELETE"),
        ("method = \"POST\"\npath = \"/x\"\nenqueue = \"x\"\nrespond = { body = { a = \"{{id\" } }\n", "respond.body: \"{{id\" opens {{ without closing it with }}"),
        ("method = \"POST\"\npath = \"/x\"\nenqueue = \"x\"\nrespond = { body = \"{{a b}}\" }\n", "respond.body: \"{{a b}}\" holds {{a b}}"),
        (
            "method = \"POST\"\npath = \"/x/{who}\"\nenqueue = \"x\"\nrespond = { body = [\"{{message}}\"] }\n",
            "respond.body names {{message}}, which an enqueue route does not offer (it offers: id, who (path))",
        ),
        (
            "method = \"POST\"\npath = \"/x\"\npop = \"x\"\nempty = { body = \"{{id}}\" }\n",
            "empty.body names {{id}}, which a pop route's empty answer does not offer (it offers: none)",
        ),
        (
            "method = \"GET\"\npath = \"/x\"\ncount = \"x\"\nrespond = { body = \"{{task_id}}\" }\n",
            "respond.body names {{task_id}}, which a count route does not offer",
        ),
        ("method = \"POST\"\npath = \"/x\"\nenqueue = \"x\"\nrespond = { status = 99 }\n", "respond.status 99 is not an HTTP status from 200 to 599"),
        (
            "method = \"POST\"\npath = \"/x\"\nenqueue = \"x\"\nrespond = { status = 204, body = {} }\n",
            "respond.status 204 answers without a body; remove respond.body",
        ),
        ("method = \"POST\"\npath = \"/x\"\nenqueue = \"x\"\nwait = \"1s\"\n", "wait applies only to task routes"),
        ("method = \"POST\"\npath = \"/x\"\npop = \"x\"\ncompensate = \"y\"\n", "compensate applies only to forward routes"),
        ("method = \"POST\"\npath = \"/x\"\ncount = \"x\"\nempty = { status = 404 }\n", "empty applies only to pop routes"),
        (
            "method = \"POST\"\npath = \"/x\"\nforward = { url = \"http://h/x\" }\nrespond = { status = 200 }\n",
            "respond does not apply to forward routes",
        ),
        ("method = \"POST\"\npath = \"/x\"\nenqueue = \"bad name\"\n", "enqueue: invalid queue name \"bad name\""),
        ("method = \"POST\"\npath = \"x\"\nenqueue = \"x\"\n", "path \"x\" must start with /"),
        ("method = \"POST\"\npath = \"/x/:id\"\nenqueue = \"x\"\n", "a segment must not start with : or *"),
        ("method = \"POST\"\npath = \"/x/{id}/{id}\"\nforward = { url = \"http://h/\" }\n", "names parameter {id} twice"),
        ("method = \"POST\"\npath = \"/x/{*rest}\"\nenqueue = \"x\"\n", "wildcard parameters ({*rest}) are not supported"),
        (
            "method = \"POST\"\npath = \"/x/{id}\"\nenqueue = \"x\"\n",
            "path parameter {id} has the name of a value an enqueue route offers to templates",
        ),
        (
            "method = \"POST\"\npath = \"/x/{id}\"\nforward = { url = \"http://h/{other}\" }\n",
            "forward.url \"http://h/{other}\" names {other}, which is not a parameter of the path",
        ),
        ("method = \"POST\"\npath = \"/x\"\nforward = { url = \"ftp://h/x\" }\n", "must be an http:// or https:// URL with a host"),
        ("method = \"POST\"\npath = \"/x\"\nforward = { url = \"not a url\" }\n", "is not a URL"),
        ("method = \"POST\"\npath = \"/x\"\nforward = { url = \"http://h/x\", timeout = \"10m\" }\n", "forward.timeout must be more than 0 and at most 300 seconds"),
        ("method = \"POST\"\npath = \"/x\"\ntask = \"t\"\nwait = \"soon\"\n", "must be a number of seconds"),
    ];
    for (route, reason) in cases {
        let error = load_error(&with_route(route));
        let field_line = 8 + route.lines().count();
        assert!(
            error.contains("line 8") || error.contains(&format!("line {field_line}")),
            "{route:?}: {error}"
        );
        assert!(
            error.contains(reason),
            "{route:?}: expected {reason:?} in {error}"
        );
    }
}

fn paths_of_hoppers_own_api_are_refused() {
    for path in [
        "/api/v1/queues",
        "/api/v1/queues/orders/messages",
        "/api/v1/streams/{s}",
        "/api/v1/stream",
        "/api/v1/stream/{name}",
        "/api/v1/tasks/{id}/complete",
        "/api/v1/admin/clients",
        "/api/v1/ping",
        "/api/v1/auth/token",
        "/health",
        "/health/",
        "/metrics",
        "/openapi.json",
        "/docs/x",
        "/ui",
    ] {
        let error = load_error(&with_route(&format!(
            "method = \"POST\"\npath = \"{path}\"\nenqueue = \"x\"\n"
        )));
        assert!(error.contains("line 8"), "{path}: {error}");
        assert!(
            error.contains("belong to Hopper's own API"),
            "{path}: {error}"
        );
    }
}

fn routes_with_the_same_method_and_path_shape_collide() {
    let text = "[[routes]]\nmethod = \"GET\"\npath = \"/a/{x}/b\"\ncount = \"a\"\n\n[[routes]]\nmethod = \"POST\"\npath = \"/a/{y}/b\"\nenqueue = \"a\"\n\n[[routes]]\nmethod = \"get\"\npath = \"/a/{z}/b\"\npop = \"a\"\n";
    let error = load_error(text);
    assert!(
        error.contains(
            "line 11: route get /a/{z}/b collides with the route on line 1: same method and path"
        ),
        "{error}"
    );
    // Same method, different shapes (a literal where the other has a parameter): fine.
    let routes = routes("[[routes]]\nmethod = \"GET\"\npath = \"/a/{x}\"\ncount = \"a\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/a/b\"\ncount = \"b\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/a/b/\"\ncount = \"b\"\n");
    assert_eq!(routes.len(), 3);
    let _ = hopper::routes::router(&routes);
}

// --- upstream ------------------------------------------------------------------

/// How the test upstream answers.
#[derive(Clone)]
enum Behaviour {
    /// Status, content type, body.
    Answer(u16, &'static str, &'static str),
    /// Never answers (within any test's patience).
    Hang,
}

/// A request the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

/// A real HTTP server on 127.0.0.1 that answers as told and records what it got.
struct Upstream {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(behaviour: Behaviour) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = {
            let (behaviour, seen) = (behaviour.clone(), seen.clone());
            axum::Router::new().fallback(move |request: axum::extract::Request| {
                let (behaviour, seen) = (behaviour.clone(), seen.clone());
                async move { upstream_answer(request, &behaviour, &seen).await }
            })
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Upstream {
            addr,
            behaviour,
            seen,
            server,
        }
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn upstream_answer(
    request: axum::extract::Request,
    behaviour: &Mutex<Behaviour>,
    seen: &Mutex<Vec<Seen>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        content_type: text("content-type"),
        authorization: text("authorization"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let behaviour = behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::Answer(status, content_type, body) => (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            body,
        )
            .into_response(),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            axum::http::StatusCode::OK.into_response()
        }
    }
}

/// An address where nothing listens: bound, then released.
async fn down_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

//! The documented answer to each bad input: status, exact seed-004 body, the JSON
//! content type and a request id; plus identity, grants and the admin API.
//! Every test runs once per storage backend (`sqlite::…`, `postgres::…`; see
//! `common::trials!`).

mod common;

use common::{
    assert_error, assert_error_prefix, assert_json_conventions, trials, Backend, TestApp,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

trials! {
    each_backend {
        missing_credentials_are_401_with_a_challenge,
        wrong_secret_unknown_client_and_malformed_credentials_are_401,
        bearer_secret_with_api_client_id_authenticates_and_a_wrong_id_fails,
        request_id_is_echoed_when_given_and_generated_otherwise,
        produce_only_client_can_push_but_not_receive_or_push_elsewhere,
        malformed_json_is_400,
        settle_bodies_of_the_wrong_shape_are_400,
        non_json_content_type_is_415,
        body_over_the_limit_is_413,
        chunked_body_over_the_limit_is_413,
        bad_queue_names_are_400,
        count_outside_1_to_1000_is_400,
        bad_lease_and_wait_are_400,
        other_documented_limits_are_400,
        unknown_path_is_404,
        wrong_method_is_405,
        ping_needs_no_credentials,
        health_reports_the_backend_and_its_latency,
        admin_creates_a_client_whose_secret_works,
        admin_refuses_bad_client_definitions,
        configured_admin_secret_bootstraps_the_admin_on_an_empty_store,
        duplicate_client_id_is_409,
        client_list_shows_ids_and_grants_but_no_secrets,
        deleted_client_is_refused_at_once_even_when_cached,
        non_admin_is_403_on_the_admin_api,
    }
}

const UNAUTHORIZED: &str = "Unauthorized";

/// Asserts a 401 with the exact body and a `WWW-Authenticate` challenge.
async fn assert_unauthorized(response: reqwest::Response) {
    let headers = assert_error(response, StatusCode::UNAUTHORIZED, UNAUTHORIZED).await;
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .expect("a 401 carries WWW-Authenticate");
    assert!(challenge.starts_with("Basic"), "{challenge}");
}

async fn push_as(app: &TestApp, id: &str, secret: &str, queue: &str) -> reqwest::Response {
    app.as_client(
        id,
        secret,
        Method::POST,
        &format!("/api/v1/queues/{queue}/messages"),
    )
    .json(&json!({"from": id}))
    .send()
    .await
    .unwrap()
}

async fn missing_credentials_are_401_with_a_challenge(app: TestApp) {
    for (method, path) in [
        (Method::GET, "/api/v1/queues"),
        (Method::POST, "/api/v1/queues/orders/messages"),
        (Method::GET, "/api/v1/admin/clients"),
    ] {
        let response = app
            .request(method, path)
            .json(&json!(1))
            .send()
            .await
            .unwrap();
        assert_unauthorized(response).await;
    }
}

async fn wrong_secret_unknown_client_and_malformed_credentials_are_401(app: TestApp) {
    let wrong_secret = app
        .as_client(
            "admin",
            "not-the-admin-secret",
            Method::GET,
            "/api/v1/queues",
        )
        .send()
        .await
        .unwrap();
    assert_unauthorized(wrong_secret).await;

    let unknown = app
        .as_client("nobody", &app.admin_secret, Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_unauthorized(unknown).await;

    for authorization in ["Basic !!!not-base64", "Digest abc", "Basic", "Bearer"] {
        let response = app
            .request(Method::GET, "/api/v1/queues")
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_unauthorized(response).await;
    }
}

async fn bearer_secret_with_api_client_id_authenticates_and_a_wrong_id_fails(app: TestApp) {
    let secret = app.create_client("seed000", &["queue:add:*"]).await;
    app.create_client("other", &["queue:add:*"]).await;

    let response = app
        .request(Method::POST, "/api/v1/queues/add/messages")
        .bearer_auth(&secret)
        .header("API-Client-Id", "seed000")
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.counts("add").await, (1, 0, 0, 0));

    for client_id in [Some("other"), Some("nobody"), Some("admin"), None] {
        let mut request = app
            .request(Method::POST, "/api/v1/queues/add/messages")
            .bearer_auth(&secret)
            .json(&json!({"a": 2}));
        if let Some(client_id) = client_id {
            request = request.header("API-Client-Id", client_id);
        }
        assert_unauthorized(request.send().await.unwrap()).await;
    }
    assert_eq!(app.counts("add").await, (1, 0, 0, 0));
}

async fn request_id_is_echoed_when_given_and_generated_otherwise(app: TestApp) {
    let response = app
        .request(Method::GET, "/api/v1/queues")
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "trace-me-42"
    );
    assert_unauthorized(response).await;

    let response = app
        .as_admin(Method::GET, "/api/v1/queues")
        .header("X-Request-Id", "trace-me-43")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "trace-me-43"
    );

    let first = app
        .request(Method::GET, "/api/v1/ping")
        .send()
        .await
        .unwrap();
    let second = app
        .request(Method::GET, "/api/v1/ping")
        .send()
        .await
        .unwrap();
    let id = |r: &reqwest::Response| r.headers().get("x-request-id").cloned();
    assert!(id(&first).is_some());
    assert_ne!(id(&first), id(&second), "each request gets its own id");
}

async fn produce_only_client_can_push_but_not_receive_or_push_elsewhere(app: TestApp) {
    let secret = app.create_client("shop", &["queue:orders:produce"]).await;

    let pushed = push_as(&app, "shop", &secret, "orders").await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));

    let receive = app
        .as_client(
            "shop",
            &secret,
            Method::POST,
            "/api/v1/queues/orders/receive",
        )
        .send()
        .await
        .unwrap();
    assert_error(
        receive,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:orders:consume",
    )
    .await;
    let pop = app
        .as_client("shop", &secret, Method::POST, "/api/v1/queues/orders/pop")
        .send()
        .await
        .unwrap();
    assert_error_prefix(pop, StatusCode::FORBIDDEN, "Forbidden - ").await;
    let delete = app
        .as_client("shop", &secret, Method::DELETE, "/api/v1/queues/orders")
        .send()
        .await
        .unwrap();
    assert_error_prefix(delete, StatusCode::FORBIDDEN, "Forbidden - ").await;
    assert_eq!(
        app.counts("orders").await,
        (1, 0, 0, 0),
        "nothing was taken"
    );

    let elsewhere = push_as(&app, "shop", &secret, "payments").await;
    assert_error(
        elsewhere,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:payments:produce",
    )
    .await;
    let payments = app
        .as_admin(Method::GET, "/api/v1/queues/payments")
        .send()
        .await
        .unwrap();
    assert_error(
        payments,
        StatusCode::NOT_FOUND,
        "Not Found - queue payments",
    )
    .await;

    let counts = app
        .as_client("shop", &secret, Method::GET, "/api/v1/queues/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(
        counts.status(),
        StatusCode::OK,
        "any grant on a queue shows its counts"
    );
}

async fn malformed_json_is_400(app: TestApp) {
    for body in [r#"{"a":"#, "not json", "{} trailing", r#"{"a": 1,}"#] {
        let response = app
            .as_admin(Method::POST, "/api/v1/queues/orders/messages")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error_prefix(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - invalid JSON: ",
        )
        .await;
    }
    let empty = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_error(
        empty,
        StatusCode::BAD_REQUEST,
        "Bad Request - a JSON body is required",
    )
    .await;
    let queues = app
        .as_admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(
        queues.json::<Value>().await.unwrap(),
        json!({"queues": []}),
        "a refused push creates no queue"
    );
}

async fn settle_bodies_of_the_wrong_shape_are_400(app: TestApp) {
    app.configure("work", json!({})).await;
    for body in [
        json!({"receipts": "abc"}),
        json!({"receipts": [1, 2]}),
        json!({"receipt": ["x"]}),
        json!(["x"]),
        json!({}),
    ] {
        let response = app
            .as_admin(Method::POST, "/api/v1/queues/work/ack")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let cases = [
        (
            "ack",
            json!({"receipts": ["garbage"]}),
            r#"Bad Request - invalid receipt "garbage""#,
        ),
        (
            "ack",
            json!({"receipts": []}),
            "Bad Request - receipts must hold 1 to 1000 receipts",
        ),
        (
            "ack",
            json!({"receipts": ["1.0000000000000001"], "delay": 1}),
            "Bad Request - unknown field `delay`, expected `receipts`",
        ),
        (
            "extend",
            json!({"receipts": ["1.0000000000000001"]}),
            "Bad Request - lease is required",
        ),
        (
            "extend",
            json!({"receipts": ["1.0000000000000001"], "lease": 0.01}),
            "Bad Request - lease must be between 0.1 and 43200 seconds",
        ),
        (
            "nack",
            json!({"receipts": ["1.0000000000000001"], "lease": 5}),
            "Bad Request - unknown field `lease`, expected `receipts` or `delay`",
        ),
        (
            "nack",
            json!({"receipts": ["1.0000000000000001"], "delay": 604801}),
            "Bad Request - delay must be between 0 and 604800 seconds",
        ),
    ];
    for (verb, body, text) in cases {
        let response = app
            .as_admin(Method::POST, &format!("/api/v1/queues/work/{verb}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, text).await;
    }
}

async fn non_json_content_type_is_415(app: TestApp) {
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("content-type", "text/plain")
        .body(r#"{"looks": "like json"}"#)
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        r#"Unsupported Media Type - expected Content-Type: application/json, got "text/plain""#,
    )
    .await;
    let form = app
        .as_admin(Method::POST, "/api/v1/queues/orders/ack")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("receipts=1")
        .send()
        .await
        .unwrap();
    assert_error_prefix(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type - ",
    )
    .await;

    let with_charset = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("content-type", "application/json; charset=utf-8")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(with_charset.status(), StatusCode::CREATED);
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
}

async fn body_over_the_limit_is_413(app: TestApp) {
    let big = format!(r#"{{"blob": "{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("the server must answer a too large body, not drop the connection");
    assert_error(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload Too Large - body exceeds 1048576 bytes",
    )
    .await;

    let just_under = format!(r#"{{"blob": "{}"}}"#, "a".repeat(1024 * 1024 - 20));
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("content-type", "application/json")
        .body(just_under)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
}

async fn chunked_body_over_the_limit_is_413(app: TestApp) {
    let mut request = format!(
        "POST /api/v1/queues/orders/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr,
        basic_credentials("admin", &app.admin_secret),
    )
    .into_bytes();
    let chunk = vec![b'7'; 64 * 1024];
    for _ in 0..32 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let (status, body) = raw_exchange(app.addr, &request).await;
    assert_eq!(status, 413, "{body}");
    let text: String = serde_json::from_str(&body).expect("a JSON string body");
    assert_eq!(text, "Payload Too Large - body exceeds 1048576 bytes");
    let queues = app
        .as_admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(queues.json::<Value>().await.unwrap(), json!({"queues": []}));
}

async fn bad_queue_names_are_400(app: TestApp) {
    let long = "a".repeat(129);
    let cases = [
        ("bad%20name", "bad name".to_owned()),
        (long.as_str(), long.clone()),
        ("%C3%B1", "ñ".to_owned()),
        ("a%2Fb", "a/b".to_owned()),
    ];
    for (segment, name) in cases {
        let response = app
            .as_admin(Method::POST, &format!("/api/v1/queues/{segment}/messages"))
            .json(&json!(1))
            .send()
            .await
            .unwrap();
        let expected =
            format!("Bad Request - invalid queue name {name:?}: use 1 to 128 of A-Z a-z 0-9 . _ -");
        assert_error(response, StatusCode::BAD_REQUEST, &expected).await;
        let response = app
            .as_admin(Method::GET, &format!("/api/v1/queues/{segment}"))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, &expected).await;
    }
    let longest = "b".repeat(128);
    app.push(&longest, json!(1)).await;
    assert_eq!(app.counts(&longest).await, (1, 0, 0, 0));
}

async fn count_outside_1_to_1000_is_400(app: TestApp) {
    app.push("orders", json!(1)).await;
    for verb in ["pop", "receive"] {
        for count in ["0", "1001", "abc", "-1", "1.5", ""] {
            let response = app
                .as_admin(
                    Method::POST,
                    &format!("/api/v1/queues/orders/{verb}?count={count}"),
                )
                .send()
                .await
                .unwrap();
            assert_error(
                response,
                StatusCode::BAD_REQUEST,
                "Bad Request - count must be between 1 and 1000",
            )
            .await;
        }
    }
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
    assert_eq!(app.pop("orders", 1000).await.len(), 1);
}

async fn bad_lease_and_wait_are_400(app: TestApp) {
    app.push("orders", json!(1)).await;
    let cases = [
        (
            "lease=soon",
            "Bad Request - lease must be a number of seconds or a duration such as 500ms, 5s, 2m, 1h or 7d",
        ),
        (
            "wait=-1",
            "Bad Request - wait must be a number of seconds or a duration such as 500ms, 5s, 2m, 1h or 7d",
        ),
        (
            "lease=0.01",
            "Bad Request - lease must be between 0.1 and 43200 seconds",
        ),
    ];
    for (query, text) in cases {
        let response = app
            .as_admin(
                Method::POST,
                &format!("/api/v1/queues/orders/receive?{query}"),
            )
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, text).await;
    }
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("Hopper-Delay", "tomorrow")
        .json(&json!(2))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::BAD_REQUEST,
        "Bad Request - Hopper-Delay must be a number of seconds from 0 to 604800",
    )
    .await;
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
}

async fn other_documented_limits_are_400(app: TestApp) {
    app.push("orders", json!(1)).await;
    let batch_with_key = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages/batch")
        .header("Idempotency-Key", "k")
        .json(&json!({"messages": [1]}))
        .send()
        .await
        .unwrap();
    assert_error(
        batch_with_key,
        StatusCode::BAD_REQUEST,
        "Bad Request - Idempotency-Key applies to single pushes, not to batches",
    )
    .await;
    let empty_batch = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages/batch")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_error(
        empty_batch,
        StatusCode::BAD_REQUEST,
        "Bad Request - messages must hold at least one message",
    )
    .await;
    let long_key = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("Idempotency-Key", "k".repeat(257))
        .json(&json!(2))
        .send()
        .await
        .unwrap();
    assert_error(
        long_key,
        StatusCode::BAD_REQUEST,
        "Bad Request - Idempotency-Key must be 1 to 256 bytes",
    )
    .await;
    let dead_limit = app
        .as_admin(Method::GET, "/api/v1/queues/orders/dead?limit=0")
        .send()
        .await
        .unwrap();
    assert_error(
        dead_limit,
        StatusCode::BAD_REQUEST,
        "Bad Request - limit must be between 1 and 1000",
    )
    .await;
    let long_delay = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .header("Hopper-Delay", "604801")
        .json(&json!(3))
        .send()
        .await
        .unwrap();
    assert_error(
        long_delay,
        StatusCode::BAD_REQUEST,
        "Bad Request - Hopper-Delay must be a number of seconds from 0 to 604800",
    )
    .await;
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
}

async fn unknown_path_is_404(app: TestApp) {
    for path in [
        "/api/v1/nope",
        "/nope",
        "/api/v2/queues",
        "/api/v1/queues/a/b/c",
    ] {
        let response = app.as_admin(Method::GET, path).send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "Not Found").await;
    }
    let anonymous = app
        .request(Method::GET, "/api/v1/nope")
        .send()
        .await
        .unwrap();
    assert_error(anonymous, StatusCode::NOT_FOUND, "Not Found").await;
}

async fn wrong_method_is_405(app: TestApp) {
    app.push("orders", json!(1)).await;
    for (method, path) in [
        (Method::DELETE, "/api/v1/queues/orders/messages"),
        (Method::GET, "/api/v1/queues/orders/pop"),
        (Method::POST, "/api/v1/queues/orders"),
        (Method::PUT, "/api/v1/queues"),
        (Method::POST, "/health"),
        (Method::POST, "/api/v1/ping"),
    ] {
        let response = app.as_admin(method.clone(), path).send().await.unwrap();
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        )
        .await;
    }
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));
}

async fn ping_needs_no_credentials(app: TestApp) {
    let response = app
        .request(Method::GET, "/api/v1/ping")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_json_conventions(response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["pong"], true);
    let time = body["time"].as_str().expect("time");
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "time is RFC 3339: {time}"
    );
}

async fn health_reports_the_backend_and_its_latency(app: TestApp) {
    let response = app.request(Method::GET, "/health").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_json_conventions(response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    // `sqlite` in `sqlite::…`, `postgres` in `postgres::…`.
    assert_eq!(body["store"]["backend"], app.backend);
    assert_eq!(body["store"]["ok"], true);
    assert!(body["store"]["latency_ms"].is_number(), "{body}");
    // What a 2xx rests on: an fsynced file, or a database's commit.
    let durability = match app.backend {
        "sqlite" => "fsync".to_owned(),
        "postgres" => "commit".to_owned(),
        // On Redis, what the server's own persistence settings promise.
        "redis" => redis_durability(app.store_url()),
        other => panic!("no durability known for {other}"),
    };
    assert_eq!(body["store"]["durability"], durability, "{body}");
}

/// What a Redis server's `appendonly` and `appendfsync` promise, asked of the server itself.
fn redis_durability(store_url: &str) -> String {
    let base = store_url.split('?').next().unwrap();
    let node = match base.strip_prefix("redis+cluster://") {
        Some(hosts) => format!("redis://{}", hosts.split(',').next().unwrap()),
        None => base.to_owned(),
    };
    let mut connection = redis::Client::open(node).unwrap().get_connection().unwrap();
    let setting = |connection: &mut redis::Connection, name: &str| -> String {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(connection)
            .unwrap();
        pair.get(1).cloned().unwrap_or_default()
    };
    match (
        setting(&mut connection, "appendonly").as_str(),
        setting(&mut connection, "appendfsync").as_str(),
    ) {
        ("yes", "always") => "fsync-always",
        ("yes", "everysec") => "fsync-everysec",
        _ => "none",
    }
    .to_owned()
}

async fn admin_creates_a_client_whose_secret_works(app: TestApp) {
    let response = app
        .as_admin(Method::POST, "/api/v1/admin/clients")
        .json(&json!({"id": "worker", "grants": ["queue:jobs:*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_json_conventions(response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "worker");
    let secret = body["secret"].as_str().expect("a generated secret");
    assert!(secret.len() >= 32, "a generated secret is long: {secret}");

    let pushed = push_as(&app, "worker", secret, "jobs").await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let received = app
        .as_client(
            "worker",
            secret,
            Method::POST,
            "/api/v1/queues/jobs/receive",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(common::messages_of(received).await.len(), 1);

    let response = app
        .as_admin(Method::POST, "/api/v1/admin/clients")
        .json(&json!({"id": "chosen", "secret": "a-chosen-secret-123", "grants": ["queue:*:produce"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "chosen", "secret": "a-chosen-secret-123"})
    );
    let pushed = push_as(&app, "chosen", "a-chosen-secret-123", "anything").await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
}

async fn admin_refuses_bad_client_definitions(app: TestApp) {
    let cases = [
        (
            json!({"id": "x", "grants": ["queue:orders:eat"]}),
            "Bad Request - invalid grant",
        ),
        (
            json!({"id": "bad id", "grants": []}),
            "Bad Request - id: invalid client name",
        ),
        (
            json!({"id": "x", "secret": "short", "grants": []}),
            "Bad Request - secret must be at least 12 characters",
        ),
        (json!({"id": "x", "grant": []}), "Bad Request - "),
    ];
    for (body, prefix) in cases {
        let response = app
            .as_admin(Method::POST, "/api/v1/admin/clients")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, prefix).await;
    }
    let list = app
        .as_admin(Method::GET, "/api/v1/admin/clients")
        .send()
        .await
        .unwrap();
    let body: Value = list.json().await.unwrap();
    assert_eq!(body["clients"].as_array().unwrap().len(), 1, "{body}");
}

async fn configured_admin_secret_bootstraps_the_admin_on_an_empty_store(backend: Backend) {
    let app = common::spawn_app_bootstrapped(&backend).await;
    let response = app
        .as_client(
            "admin",
            common::ADMIN_SECRET,
            Method::GET,
            "/api/v1/admin/clients",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["clients"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["clients"][0]["id"], "admin");
    assert_eq!(body["clients"][0]["grants"], json!(["admin"]));

    let wrong = app
        .as_client(
            "admin",
            "test-admin-secret-0123456780",
            Method::GET,
            "/api/v1/admin/clients",
        )
        .send()
        .await
        .unwrap();
    assert_unauthorized(wrong).await;
}

async fn duplicate_client_id_is_409(app: TestApp) {
    let secret = app.create_client("twin", &["queue:a:produce"]).await;
    let response = app
        .as_admin(Method::POST, "/api/v1/admin/clients")
        .json(&json!({"id": "twin", "grants": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::CONFLICT,
        "Conflict - client twin exists",
    )
    .await;

    let still_first = push_as(&app, "twin", &secret, "a").await;
    assert_eq!(still_first.status(), StatusCode::CREATED);
    let not_admin = app
        .as_client("twin", &secret, Method::GET, "/api/v1/admin/clients")
        .send()
        .await
        .unwrap();
    assert_eq!(
        not_admin.status(),
        StatusCode::FORBIDDEN,
        "the duplicate must not change the grants"
    );
}

async fn client_list_shows_ids_and_grants_but_no_secrets(app: TestApp) {
    let secret = app
        .create_client("lister", &["queue:orders:produce", "queue:*:consume"])
        .await;
    let response = app
        .as_admin(Method::GET, "/api/v1/admin/clients")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_json_conventions(response.headers());
    let text = response.text().await.unwrap();
    assert!(!text.contains(&secret), "a secret leaked: {text}");
    assert!(!text.contains(&app.admin_secret), "a secret leaked: {text}");
    assert!(!text.contains("secret"), "a secret field is listed: {text}");
    assert!(
        !text.contains("argon2") && !text.contains("sha256"),
        "{text}"
    );

    let body: Value = serde_json::from_str(&text).unwrap();
    let clients = body["clients"].as_array().unwrap();
    let lister = clients
        .iter()
        .find(|c| c["id"] == "lister")
        .expect("lister is listed");
    assert_eq!(
        lister["grants"],
        json!(["queue:orders:produce", "queue:*:consume"])
    );
    assert!(lister["created_at"].is_string());
    let admin = clients
        .iter()
        .find(|c| c["id"] == "admin")
        .expect("admin is listed");
    assert_eq!(admin["grants"], json!(["admin"]));
}

async fn deleted_client_is_refused_at_once_even_when_cached(app: TestApp) {
    let secret = app.create_client("leaver", &["queue:*:*"]).await;
    for _ in 0..2 {
        let pushed = push_as(&app, "leaver", &secret, "jobs").await;
        assert_eq!(pushed.status(), StatusCode::CREATED);
    }

    let response = app
        .as_admin(Method::DELETE, "/api/v1/admin/clients/leaver")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"id": "leaver", "deleted": true})
    );

    assert_unauthorized(push_as(&app, "leaver", &secret, "jobs").await).await;
    let bearer = app
        .request(Method::GET, "/api/v1/queues")
        .bearer_auth(&secret)
        .header("API-Client-Id", "leaver")
        .send()
        .await
        .unwrap();
    assert_unauthorized(bearer).await;
    assert_eq!(app.counts("jobs").await, (2, 0, 0, 0));

    let again = app
        .as_admin(Method::DELETE, "/api/v1/admin/clients/leaver")
        .send()
        .await
        .unwrap();
    assert_error(again, StatusCode::NOT_FOUND, "Not Found - client leaver").await;

    let new_secret = app.create_client("leaver", &["queue:*:*"]).await;
    assert_unauthorized(push_as(&app, "leaver", &secret, "jobs").await).await;
    let pushed = push_as(&app, "leaver", &new_secret, "jobs").await;
    assert_eq!(
        pushed.status(),
        StatusCode::CREATED,
        "a client re-created under the same id uses its new secret"
    );
}

async fn non_admin_is_403_on_the_admin_api(app: TestApp) {
    let secret = app.create_client("mortal", &["queue:*:*"]).await;
    let calls = [
        (Method::GET, "/api/v1/admin/clients", None),
        (
            Method::POST,
            "/api/v1/admin/clients",
            Some(json!({"id": "sneaky", "grants": ["admin"]})),
        ),
        (Method::DELETE, "/api/v1/admin/clients/admin", None),
        (
            Method::PUT,
            "/api/v1/admin/clients/mortal/grants",
            Some(json!({"grants": ["admin"]})),
        ),
        (Method::POST, "/api/v1/admin/clients/admin/rotate", None),
    ];
    for (method, path, body) in calls {
        let mut request = app.as_client("mortal", &secret, method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_error(
            request.send().await.unwrap(),
            StatusCode::FORBIDDEN,
            "Forbidden - needs grant admin",
        )
        .await;
    }
    let list = app
        .as_admin(Method::GET, "/api/v1/admin/clients")
        .send()
        .await
        .unwrap();
    let body: Value = list.json().await.unwrap();
    let ids: Vec<&str> = body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"admin") && !ids.contains(&"sneaky"),
        "{ids:?}"
    );
    let mortal = body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "mortal")
        .expect("mortal is listed");
    assert_eq!(mortal["grants"], json!(["queue:*:*"]), "its grants stayed");
    // The listing above went through with the admin's secret: it was not rotated.
}

/// `base64(id:secret)`, written out here so the raw request needs no extra crate.
fn basic_credentials(id: &str, secret: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{id}:{secret}").into_bytes();
    let mut out = String::new();
    for group in input.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `request` on a fresh connection and reads the answer until the server closes
/// it; returns the status and the body (a server may answer before reading the whole
/// request, so a failed write is not an error here).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_to_end(&mut answer),
    )
    .await
    .expect("no answer within 10 s");
    if answer.is_empty() {
        panic!("the server closed the connection without an answer: {read:?}");
    }
    drop(writing);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json; charset=utf-8"),
        "{head}"
    );
    assert!(lower.contains("x-request-id:"), "{head}");
    let body = if lower.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

//! `/openapi.json` and the router agree: every endpoint Hopper has is described,
//! every described operation is routed (a request reaches its handler, not the
//! router's fallback), config routes appear as operations, and `/docs` serves
//! Swagger UI and `/ui` the dashboard from the binary.

mod common;

use std::collections::BTreeSet;

use common::{spawn_app, spawn_app_with, trials, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

trials! {
    once {
        every_endpoint_is_described_and_every_described_operation_is_routed,
        config_routes_are_operations_of_the_description,
        docs_serve_swagger_ui_from_the_binary_titled_hopper,
        the_dashboard_is_served_from_the_binary_under_a_content_security_policy,
        a_duration_string_is_described_by_the_pattern_the_server_reads,
    }
}

/// Every endpoint of the API, as `(method, path template)`; adding a route to the
/// server without adding it here (and to the description) fails this test.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{file}"),
    ("GET", "/ui"),
    ("GET", "/ui/{file}"),
    ("GET", "/api/v1/ping"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/queues/{queue}"),
    ("PUT", "/api/v1/queues/{queue}"),
    ("DELETE", "/api/v1/queues/{queue}"),
    ("POST", "/api/v1/queues/{queue}/messages"),
    ("GET", "/api/v1/queues/{queue}/messages"),
    ("POST", "/api/v1/queues/{queue}/messages/batch"),
    ("POST", "/api/v1/queues/{queue}/pop"),
    ("POST", "/api/v1/queues/{queue}/receive"),
    ("POST", "/api/v1/queues/{queue}/ack"),
    ("POST", "/api/v1/queues/{queue}/nack"),
    ("POST", "/api/v1/queues/{queue}/extend"),
    ("POST", "/api/v1/queues/{queue}/purge"),
    ("GET", "/api/v1/queues/{queue}/dead"),
    ("POST", "/api/v1/queues/{queue}/dead/redrive"),
    ("POST", "/api/v1/tasks/{queue_or_id}"),
    ("GET", "/api/v1/tasks/{queue_or_id}"),
    ("POST", "/api/v1/tasks/{id}/complete"),
    ("POST", "/api/v1/tasks/{id}/fail"),
    ("GET", "/api/v1/streams"),
    ("GET", "/api/v1/streams/{stream}"),
    ("PUT", "/api/v1/streams/{stream}"),
    ("POST", "/api/v1/streams/{stream}/events"),
    ("GET", "/api/v1/streams/{stream}/events"),
    ("POST", "/api/v1/streams/{stream}/events/{event}"),
    ("PUT", "/api/v1/stream/{stream}"),
    ("POST", "/api/v1/stream/{stream}"),
    ("GET", "/api/v1/stream/{stream}"),
    ("HEAD", "/api/v1/stream/{stream}"),
    ("DELETE", "/api/v1/stream/{stream}"),
    ("PUT", "/api/v1/admin/streams/{stream}/owner"),
    ("GET", "/api/v1/admin/clients"),
    ("POST", "/api/v1/admin/clients"),
    ("DELETE", "/api/v1/admin/clients/{id}"),
    ("PUT", "/api/v1/admin/clients/{id}/grants"),
    ("POST", "/api/v1/admin/clients/{id}/rotate"),
    ("POST", "/api/v1/admin/clients/{id}/aws-keys"),
    ("GET", "/api/v1/admin/clients/{id}/aws-keys"),
    ("DELETE", "/api/v1/admin/clients/{id}/aws-keys/{key_id}"),
    ("POST", "/sqs"),
    ("POST", "/sqs/{account}/{queue}"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/auth/whoami"),
];

/// The `(method, path)` of every operation of the description.
fn operations(description: &Value) -> BTreeSet<(String, String)> {
    description["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|key| {
                    ["get", "put", "post", "delete", "patch", "head"].contains(&key.as_str())
                })
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

async fn description(app: &TestApp) -> Value {
    let response = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The router's own "no route here": 404 with no detail, or 405.
fn fell_through(status: StatusCode, body: &str) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && body == r#""Not Found""#)
}

async fn every_endpoint_is_described_and_every_described_operation_is_routed() {
    let app = spawn_app(&Backend::Sqlite).await;
    let description = description(&app).await;
    assert_eq!(description["openapi"], "3.1.0");
    assert_eq!(description["info"]["title"], "Hopper");
    let described = operations(&description);
    let expected: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(
        described, expected,
        "the description and the list of endpoints differ"
    );

    // Things for each path parameter to name, so every call reaches its handler.
    app.push("q", json!({"n": 1})).await;
    let event = json!({
        "event": {"name": "E", "version": 1},
        "system": {"id": "s", "name": "s", "time": "t", "timezone": "UTC"},
        "trigger": {"type": "t", "name": "n"},
        "payload": {}
    });
    let appended = app
        .as_admin(Method::POST, "/api/v1/streams/s/events")
        .header("x-producer-id", "p")
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), StatusCode::OK);
    let task: Value = app
        .as_admin(Method::POST, "/api/v1/tasks/q")
        .header("prefer", "respond-async")
        .json(&json!(1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_id = task["id"].as_str().expect("a task id").to_owned();
    app.create_client("probe", &[]).await;

    for (method, template) in &described {
        let path = template
            .replace("{queue}", "q")
            .replace("{stream}", "s")
            .replace("{event}", "1")
            .replace("{file}", "swagger-ui.css")
            .replace("{key_id}", "HOPRAAAAAAAAAAAAAAAA")
            .replace(
                "{queue_or_id}",
                if method == "POST" { "q" } else { &task_id },
            )
            .replace(
                "{id}",
                if path_is_client(template) {
                    "probe"
                } else {
                    &task_id
                },
            );
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .as_admin(method.clone(), &path)
            .header("x-consumer-id", "c")
            .header("x-producer-id", "p")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            !fell_through(status, &body),
            "{method} {path} ({template}) is described but not routed: {status} {body}"
        );
    }
}

fn path_is_client(template: &str) -> bool {
    template.starts_with("/api/v1/admin/clients/")
}

async fn config_routes_are_operations_of_the_description() {
    let text = r#"
[[routes]]
method = "POST"
path = "/api/v1/add"
enqueue = "add"
respond = { status = 200, body = { status = "OK" } }

[[routes]]
method = "GET"
path = "/apis/queue/count"
count = "queu"
public = true
"#;
    #[derive(serde::Deserialize)]
    struct File {
        routes: Vec<toml::Spanned<hopper::routes::RouteSpec>>,
    }
    let file: File = toml::from_str(text).unwrap();
    let routes = hopper::routes::parse(file.routes, text).unwrap();
    let app = spawn_app_with(&Backend::Sqlite, move |config| config.routes = routes).await;
    let description = description(&app).await;
    let add = &description["paths"]["/api/v1/add"]["post"];
    assert_eq!(add["tags"], json!(["routes"]), "{add}");
    assert!(
        add["responses"]["200"].is_object(),
        "the respond status: {add}"
    );
    assert!(
        add["responses"]["401"].is_object(),
        "authenticated like the API"
    );
    assert!(add["requestBody"].is_object(), "an enqueue takes a body");
    let count = &description["paths"]["/apis/queue/count"]["get"];
    assert_eq!(
        count["security"],
        json!([{}]),
        "a public route needs no credentials"
    );
    assert!(count["responses"]["401"].is_null(), "{count}");
}

async fn docs_serve_swagger_ui_from_the_binary_titled_hopper() {
    let app = spawn_app(&Backend::Sqlite).await;
    let page = app.request(Method::GET, "/docs").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Hopper API</title>"), "{html}");
    assert!(html.contains(r#"<base href="/docs/" />"#));
    // Its files come from the binary, and point it at this server's description.
    let initializer = app
        .request(Method::GET, "/docs/swagger-initializer.js")
        .send()
        .await
        .unwrap();
    assert_eq!(initializer.status(), StatusCode::OK);
    let script = initializer.text().await.unwrap();
    assert!(script.contains("/openapi.json"), "{script}");
    assert!(script.contains("\"tryItOutEnabled\": true"), "{script}");
    let bundle = app
        .request(Method::GET, "/docs/swagger-ui-bundle.js")
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(
        bundle.bytes().await.unwrap().len() > 100_000,
        "the whole bundle"
    );
    let missing = app
        .request(Method::GET, "/docs/nothing.js")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

async fn the_dashboard_is_served_from_the_binary_under_a_content_security_policy() {
    let app = spawn_app(&Backend::Sqlite).await;
    let page = app.request(Method::GET, "/ui").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Hopper dashboard</title>"), "{html}");
    assert!(html.contains(r#"<script src="/ui/app.js""#), "{html}");
    // No inline script or style, which the policy would block anyway.
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains(" style="));

    for (file, content_type, marker) in [
        (
            "app.js",
            "text/javascript; charset=utf-8",
            "/api/v1/auth/login",
        ),
        ("app.css", "text/css; charset=utf-8", "table"),
    ] {
        let answer = app
            .request(Method::GET, &format!("/ui/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{file}");
        assert_eq!(answer.headers()["content-type"], content_type, "{file}");
        assert!(answer.text().await.unwrap().contains(marker), "{file}");
    }
    // The page writes what the API answers as text, never as HTML.
    let script = app
        .request(Method::GET, "/ui/app.js")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!script.contains("innerHTML"), "the script sets no HTML");

    let missing = app.request(Method::GET, "/ui/nope").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!("Not Found - file nope")
    );
}

/// The schema of `field` in the JSON body of the operation `operation_id`.
fn body_field_schema<'d>(description: &'d Value, operation_id: &str, field: &str) -> &'d Value {
    let operation = description["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .find(|operation| operation["operationId"] == operation_id)
        .unwrap_or_else(|| panic!("no operation {operation_id}"));
    let mut body = &operation["requestBody"]["content"]["application/json"]["schema"];
    // An optional body is `oneOf: [null, {$ref}]`.
    if let Some(shapes) = body["oneOf"].as_array() {
        body = shapes
            .iter()
            .find(|shape| shape["$ref"].is_string())
            .unwrap();
    }
    if let Some(reference) = body["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        body = &description["components"]["schemas"][name];
    }
    &body["properties"][field]
}

/// A duration is a number of seconds or a string with a unit. The description
/// says both, and a string matching its pattern is read by the server, while one
/// that does not match is refused: a client generated from the description, or a
/// fuzzer, sees the same rule the server applies.
async fn a_duration_string_is_described_by_the_pattern_the_server_reads() {
    let app = spawn_app(&Backend::Sqlite).await;
    let description = description(&app).await;
    let retention = body_field_schema(&description, "configureQueue", "retention");
    let shapes = retention["anyOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{retention}"));
    let types: Vec<&str> = shapes.iter().filter_map(|s| s["type"].as_str()).collect();
    assert_eq!(types, ["number", "string", "null"], "{retention}");
    let pattern = shapes[1]["pattern"].as_str().unwrap();
    let pattern = regex::Regex::new(pattern).unwrap();
    for (text, seconds) in [
        ("5", 5.0),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("7d", 604_800.0),
        ("1.5e2s", 150.0),
        ("1E1h", 36_000.0),
    ] {
        assert!(pattern.is_match(text), "{text}");
        let (status, body) = app.configure("durations", json!({"retention": text})).await;
        assert!(status.is_success(), "{text}: {status} {body}");
        assert_eq!(body["settings"]["retention"], json!(seconds), "{text}");
    }
    for text in ["5x", "1.", ".5", "5 s", "1e", "inf", "+5", "5S", "", "0x10"] {
        assert!(!pattern.is_match(text), "{text}");
        let (status, body) = app.configure("durations", json!({"retention": text})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}: {body}");
    }
    // The bounds are the number's, stated in the description for both shapes.
    let lease = body_field_schema(&description, "extend", "lease");
    assert_eq!(lease["anyOf"][0]["minimum"], json!(0.1), "{lease}");
    assert_eq!(lease["anyOf"][0]["maximum"], json!(43200), "{lease}");
    assert!(
        lease["description"]
            .as_str()
            .unwrap()
            .contains("from 0.1 to 43200 seconds"),
        "{lease}"
    );
    for (operation, field) in [("configureStream", "max_age"), ("nack", "delay")] {
        let schema = body_field_schema(&description, operation, field);
        assert!(
            schema["anyOf"][1]["pattern"].is_string(),
            "{operation}.{field}: {schema}"
        );
    }
}

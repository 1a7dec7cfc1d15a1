//! `hopper queues`, `hopper streams` and `hopper tasks`, run as the binary against a
//! real server on the embedded store: each command's output for people (tables,
//! key/value lines) and for scripts (`--json`, the server's answer unchanged), its
//! effect on the server's state, and its failures: a refusal prints the server's
//! text on standard error, a server that is not there is named, both exit non-zero.

mod common;

use std::process::Output;

use common::{spawn_app, trials, Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

trials! {
    once {
        queues_list_prints_a_table_counting_a_pushed_message,
        json_prints_the_servers_answer_unchanged,
        queues_show_prints_key_value_lines,
        peek_shows_the_bodies_and_leaves_the_messages_ready,
        purge_empties_the_queue,
        redrive_moves_dead_letters_back,
        streams_list_and_show_print_the_stream_and_its_consumers,
        tasks_show_prints_the_task,
        a_wrong_secret_fails_with_unauthorized_on_stderr,
        a_missing_grant_fails_with_the_servers_text,
        a_server_that_is_down_is_named_in_the_failure,
        url_user_and_secret_come_from_the_environment,
        names_the_server_would_refuse_are_not_sent,
        bench_names_a_store_url_it_cannot_open,
    }
}

/// Runs `hopper ARGS` with none of the variables that would choose its server or
/// credentials but those in `env`.
async fn hopper(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hopper"));
    command
        .args(args)
        .env_remove("HOPPER_URL")
        .env_remove("HOPPER_USER")
        .env_remove("HOPPER_SECRET")
        .env_remove("RUST_BACKTRACE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("the hopper binary runs")
}

/// `ARGS --url <app> --user admin --secret <admin's>`.
fn as_admin<'a>(app: &'a TestApp, url: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--url",
        url,
        "--user",
        "admin",
        "--secret",
        &app.admin_secret,
    ]);
    all
}

/// Standard output of an admin's run that must succeed.
async fn succeeds(app: &TestApp, args: &[&str]) -> String {
    let url = app.base_url();
    let output = hopper(&as_admin(app, &url, args), &[]).await;
    assert!(
        output.status.success(),
        "hopper {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the output is UTF-8")
}

/// Standard error of a run that must fail (with exit status 1) and print nothing.
fn failure(args: &[&str], output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "hopper {args:?}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.stdout.is_empty(), "a failure prints no output");
    String::from_utf8(output.stderr.clone()).expect("the error is UTF-8")
}

/// The words of each line of a table.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect()
}

async fn queues_list_prints_a_table_counting_a_pushed_message() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.push("orders", json!({"item": 4})).await;
    app.push("billing", json!(1)).await;
    app.push("billing", json!(2)).await;
    app.receive("billing", "lease=60").await;

    let table = succeeds(&app, &["queues", "list"]).await;
    assert_eq!(
        rows(&table),
        [
            vec!["queue", "ready", "leased", "delayed", "dead"],
            vec!["billing", "1", "1", "0", "0"],
            vec!["orders", "1", "0", "0", "0"],
        ],
        "{table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    let column_end = |line: &str, word: &str| line.find(word).map(|at| at + word.len());
    assert_eq!(
        column_end(lines[0], "ready"),
        column_end(lines[1], "1"),
        "counts line up under their header:\n{table}"
    );
    assert_eq!(lines[1].len(), lines[0].len(), "aligned:\n{table}");
}

async fn json_prints_the_servers_answer_unchanged() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.push("orders", json!({"item": 4})).await;
    let printed = succeeds(&app, &["queues", "list", "--json"]).await;
    let answer = app
        .as_admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(printed.trim_end(), answer);
    let parsed: Value = serde_json::from_str(&printed).expect("--json prints JSON");
    assert_eq!(parsed["queues"][0]["name"], "orders");
    assert_eq!(parsed["queues"][0]["ready"], 1);

    let shown: Value =
        serde_json::from_str(&succeeds(&app, &["queues", "show", "orders", "--json"]).await)
            .unwrap();
    assert_eq!(shown["name"], "orders");
    let peeked: Value =
        serde_json::from_str(&succeeds(&app, &["queues", "peek", "orders", "--json"]).await)
            .unwrap();
    assert_eq!(peeked["messages"][0]["body"], json!({"item": 4}));
}

async fn queues_show_prints_key_value_lines() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.configure("orders", json!({"max_attempts": 3})).await;
    app.push("orders", json!(1)).await;
    let shown = succeeds(&app, &["queues", "show", "orders"]).await;
    let lines = rows(&shown);
    assert_eq!(lines[0], ["name", "orders"], "{shown}");
    for expected in [
        ["ready", "1"],
        ["leased", "0"],
        ["dead", "0"],
        ["settings.max_attempts", "3"],
        ["tasks.pending", "0"],
    ] {
        assert!(
            lines.contains(&expected.to_vec()),
            "{expected:?} in\n{shown}"
        );
    }
    let value_column: Vec<usize> = shown
        .lines()
        .map(|line| line.len() - line.split_whitespace().last().unwrap_or("").len())
        .collect();
    assert!(
        value_column.windows(2).all(|pair| pair[0] == pair[1]),
        "values aligned:\n{shown}"
    );
}

async fn peek_shows_the_bodies_and_leaves_the_messages_ready() {
    let app = spawn_app(&Backend::Sqlite).await;
    let first = app.push("orders", json!({"item": 4, "quantity": 5})).await;
    let second = app.push("orders", json!("second")).await;
    app.push("orders", json!("third")).await;

    let table = succeeds(&app, &["queues", "peek", "orders", "--limit", "2"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two messages:\n{table}");
    assert_eq!(
        rows(lines[0]).concat(),
        ["id", "attempts", "enqueued_at", "body"]
    );
    assert!(lines[1].trim_start().starts_with(&first), "{table}");
    assert!(lines[1].ends_with(r#"{"item":4,"quantity":5}"#), "{table}");
    assert!(lines[2].trim_start().starts_with(&second), "{table}");
    assert!(lines[2].ends_with(r#""second""#), "{table}");
    assert_eq!(
        app.counts("orders").await,
        (3, 0, 0, 0),
        "a peek takes nothing"
    );
    let received = app.receive("orders", "").await;
    assert_eq!(received[0]["attempts"], 1, "a peek counts no attempt");

    let url = app.base_url();
    let args = as_admin(&app, &url, &["queues", "peek", "orders", "--limit", "101"]);
    let error = failure(&args, &hopper(&args, &[]).await);
    assert_eq!(error, "Bad Request - limit must be between 1 and 100\n");
}

async fn purge_empties_the_queue() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.push("orders", json!(1)).await;
    app.push("orders", json!(2)).await;
    let said = succeeds(&app, &["queues", "purge", "orders"]).await;
    assert_eq!(said, "purged 2 messages of orders\n");
    assert_eq!(app.counts("orders").await, (0, 0, 0, 0));
    let said = succeeds(&app, &["queues", "purge", "orders", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&said).unwrap(),
        json!({"purged": 0})
    );
}

async fn redrive_moves_dead_letters_back() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.configure("fragile", json!({"max_attempts": 1})).await;
    let id = app.push("fragile", json!({"poison": true})).await;
    let received = app.receive("fragile", "").await;
    let receipt = received[0]["receipt"].as_str().unwrap();
    app.settle("fragile", "nack", json!({ "receipts": [receipt] }))
        .await;
    assert_eq!(app.counts("fragile").await, (0, 0, 0, 1));

    let said = succeeds(&app, &["queues", "redrive", "fragile"]).await;
    assert_eq!(
        said,
        "redrove 1 dead letter of fragile: ready again, attempts reset\n"
    );
    assert_eq!(app.counts("fragile").await, (1, 0, 0, 0));
    let table = succeeds(&app, &["queues", "peek", "fragile"]).await;
    assert_eq!(rows(&table)[1][..2], [id.as_str(), "0"], "{table}");
}

async fn streams_list_and_show_print_the_stream_and_its_consumers() {
    let app = spawn_app(&Backend::Sqlite).await;
    let event = json!({
        "event": {"name": "OrderPlaced", "version": 1},
        "system": {"id": "alv123", "name": "shop", "time": "2017-09-06 13:58:12", "timezone": "Europe/Berlin"},
        "trigger": {"type": "system", "name": "/script.php"},
        "payload": {"order": 42}
    });
    for _ in 0..2 {
        let response = app
            .as_admin(Method::POST, "/api/v1/streams/orders/events")
            .header("X-Producer-ID", "shop")
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = app
        .as_admin(Method::POST, "/api/v1/streams/orders/events/1")
        .header("X-Consumer-ID", "billing")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("action=ACK")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let table = succeeds(&app, &["streams", "list"]).await;
    assert_eq!(
        rows(&table),
        [
            vec!["stream", "owner", "length", "first", "last"],
            vec!["orders", "shop", "2", "1", "2"],
        ],
        "{table}"
    );
    let shown = succeeds(&app, &["streams", "show", "orders"]).await;
    let lines = rows(&shown);
    assert_eq!(lines[0], ["name", "orders"], "{shown}");
    assert!(lines.contains(&vec!["owner", "shop"]), "{shown}");
    assert!(lines.contains(&vec!["length", "2"]), "{shown}");
    assert!(
        lines.contains(&vec!["consumer", "event_name", "offset", "lag"]),
        "{shown}"
    );
    assert!(
        lines.contains(&vec!["billing", "OrderPlaced", "1", "1"]),
        "{shown}"
    );
    let shown: Value =
        serde_json::from_str(&succeeds(&app, &["streams", "show", "orders", "--json"]).await)
            .unwrap();
    assert_eq!(shown["consumers"][0]["consumer"], "billing");
}

async fn tasks_show_prints_the_task() {
    let app = spawn_app(&Backend::Sqlite).await;
    let response = app
        .as_admin(Method::POST, "/api/v1/tasks/reports")
        .header("Prefer", "respond-async")
        .json(&json!({"month": "2026-11"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap();

    let shown = succeeds(&app, &["tasks", "show", id]).await;
    let lines = rows(&shown);
    assert_eq!(lines[0], ["id", id], "{shown}");
    for expected in [
        ["queue", "reports"],
        ["status", "pending"],
        ["attempts", "0"],
        ["result", "-"],
    ] {
        assert!(
            lines.contains(&expected.to_vec()),
            "{expected:?} in\n{shown}"
        );
    }
    let shown: Value =
        serde_json::from_str(&succeeds(&app, &["tasks", "show", id, "--json"]).await).unwrap();
    assert_eq!(shown, task, "--json is the server's task");

    let url = app.base_url();
    let unknown = "7b0e2a52-3f1c-4d6e-9a8b-0c1d2e3f4a5b";
    let args = as_admin(&app, &url, &["tasks", "show", unknown]);
    let error = failure(&args, &hopper(&args, &[]).await);
    assert!(error.starts_with("Not Found"), "{error}");
}

async fn a_wrong_secret_fails_with_unauthorized_on_stderr() {
    let app = spawn_app(&Backend::Sqlite).await;
    let url = app.base_url();
    let args = [
        "queues", "list", "--url", &url, "--user", "admin", "--secret", "wrong",
    ];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert_eq!(error, "Unauthorized\n");
    let args = ["queues", "list", "--url", &url];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert_eq!(error, "Unauthorized\n", "no credentials at all");
    let args = [
        "queues",
        "list",
        "--url",
        &url,
        "--user",
        "admin",
        "--secret",
        "-m-looks-like-a-flag",
    ];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert_eq!(error, "Unauthorized\n", "a secret may start with -");
}

async fn a_missing_grant_fails_with_the_servers_text() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.push("orders", json!(1)).await;
    let secret = app.create_client("shop", &["queue:orders:produce"]).await;
    let url = app.base_url();
    let args = [
        "queues", "purge", "orders", "--url", &url, "--user", "shop", "--secret", &secret,
    ];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert_eq!(error, "Forbidden - needs grant queue:orders:manage\n");
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0), "nothing purged");
    let args = [
        "queues", "show", "ghost", "--url", &url, "--user", "shop", "--secret", &secret,
    ];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert_eq!(error, "Forbidden - needs a grant on queue:ghost\n");
}

async fn a_server_that_is_down_is_named_in_the_failure() {
    // A port just freed: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let args = ["queues", "list", "--url", &url];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert!(
        error.starts_with(&format!("cannot reach Hopper at {url}: ")),
        "{error}"
    );
    assert!(error.to_lowercase().contains("refused"), "{error}");
    let args = ["queues", "list", "--url", "not a url"];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert!(error.contains("not a url"), "{error}");
}

async fn bench_names_a_store_url_it_cannot_open() {
    // Before any server starts: not "did not come up" after a server that failed.
    let args = [
        "bench",
        "--store",
        "sqlite",
        "--scenarios",
        "push",
        "--duration",
        "1s",
    ];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert!(
        error.contains(r#"unsupported store URL "sqlite": use sqlite://PATH"#),
        "{error}"
    );
    assert!(!error.contains("did not come up"), "{error}");
}

async fn url_user_and_secret_come_from_the_environment() {
    let app = spawn_app(&Backend::Sqlite).await;
    app.push("orders", json!(1)).await;
    let url = app.base_url();
    let env = [
        ("HOPPER_URL", url.as_str()),
        ("HOPPER_USER", "admin"),
        ("HOPPER_SECRET", app.admin_secret.as_str()),
    ];
    let output = hopper(&["queues", "list"], &env).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert_eq!(rows(&table)[1], ["orders", "1", "0", "0", "0"], "{table}");

    let args = ["queues", "list", "--secret", "wrong"];
    let error = failure(&args, &hopper(&args, &env).await);
    assert_eq!(error, "Unauthorized\n", "a flag beats the environment");
}

async fn names_the_server_would_refuse_are_not_sent() {
    // Nothing listens here: a name refused before sending never reaches the network.
    let args = ["queues", "show", "..", "--url", "http://127.0.0.1:9"];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert!(error.contains("invalid queue name"), "{error}");
    let args = ["tasks", "show", "not-a-uuid", "--url", "http://127.0.0.1:9"];
    let error = failure(&args, &hopper(&args, &[]).await);
    assert!(error.contains("invalid task id"), "{error}");
}

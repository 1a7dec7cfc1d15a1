//! Streams over HTTP: seed 004's event server, contract exact (paths, headers, bodies,
//! status codes and error strings), plus what DESIGN.md adds beyond the seed (list and
//! info with lag, `after=` replay, `wait=` long-poll, owner transfer). Every test runs
//! once per storage backend (`sqlite::…`, `postgres::…`; see `common::trials!`).
//!
//! Seed 004's `500 "Internal Server Error - <error>"` rows cannot be provoked through
//! the public API; the error mapping itself is covered elsewhere.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    assert_error, assert_error_prefix, assert_json_conventions, trials, TestApp, JSON_CONTENT_TYPE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

trials! {
    each_backend {
        retention_is_set_by_put_and_shown_in_the_details,
        seed_requests_sent_as_written_get_the_seed_answers,
        append_answers_200_with_the_event_id_as_a_json_string_counting_from_1_per_stream,
        events_come_back_as_posted_with_their_id_added,
        first_producer_owns_the_stream_and_a_second_writer_gets_423_and_appends_nothing,
        racing_first_writers_exactly_one_owns_the_stream: multi_thread(4),
        concurrent_appends_of_the_owner_get_distinct_consecutive_ids: multi_thread(4),
        invalid_event_bodies_are_400_naming_the_field_and_append_nothing,
        malformed_json_non_object_and_non_json_bodies_are_rejected,
        missing_or_empty_producer_id_is_400,
        bad_stream_names_are_400_on_every_stream_call,
        missing_or_wrong_credentials_are_401_on_every_stream_call,
        produce_only_client_can_append_but_not_read_ack_or_transfer,
        read_returns_only_the_named_events_oldest_first_at_most_limit,
        read_parameter_and_header_errors_are_400,
        unknown_stream_is_404_for_read_info_and_ack,
        acked_event_is_returned_until_acked_and_never_after,
        unacked_events_are_redelivered_on_every_read,
        ack_is_cumulative_over_the_events_of_that_name,
        ack_never_moves_the_offset_backwards,
        offsets_are_per_consumer,
        offsets_are_per_event_name,
        ack_of_an_unknown_event_is_404_and_moves_nothing,
        ack_with_another_action_no_action_or_no_consumer_is_400_and_moves_nothing,
        after_replays_from_an_event_id_without_moving_offsets,
        long_poll_wakes_up_promptly_on_a_matching_append,
        long_poll_ignores_appends_of_other_event_names,
        long_poll_without_a_matching_append_answers_empty_after_the_wait,
        long_poll_answers_at_once_when_events_are_waiting,
        list_shows_every_stream_with_owner_length_and_first_and_last_ids,
        info_shows_each_consumer_offset_and_lag_per_event_name,
        admin_transfers_ownership_and_the_old_owner_gets_423,
        owner_transfer_is_admin_only_and_checks_stream_and_body,
    }
}

const PLACED: &str = "OrderPlaced";
const SHIPPED: &str = "OrderShipped";
const LOCKED: &str = "Locked - Second writers not allowed";
const FORM: &str = "application/x-www-form-urlencoded";

/// An event body exactly as seed 004 writes one, named `name`, carrying `payload`.
fn event(name: &str, payload: Value) -> Value {
    json!({
        "event": {
            "name": name,
            "version": 1
        },
        "system": {
            "id": "alv123",
            "name": "codello alvine",
            "time": "2017-09-06 13:58:12",
            "timezone": "Europe/Berlin"
        },
        "trigger": {
            "type": "system",
            "name": "/path/to/script.php"
        },
        "payload": payload
    })
}

/// `body` with `"id": id` added, as a read returns it.
fn with_id(body: &Value, id: &str) -> Value {
    let mut expected = body.clone();
    expected["id"] = json!(id);
    expected
}

fn events_path(stream: &str) -> String {
    format!("/api/v1/streams/{stream}/events")
}

/// `POST /api/v1/streams/{stream}/events` as the admin, with seed 004's content type
/// and `X-Producer-ID: producer` when given.
fn append_request(
    app: &TestApp,
    stream: &str,
    producer: Option<&str>,
    body: &Value,
) -> RequestBuilder {
    let mut request = app
        .as_admin(Method::POST, &events_path(stream))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string());
    if let Some(producer) = producer {
        request = request.header("X-Producer-ID", producer);
    }
    request
}

/// Appends `body` as `producer`; the raw answer.
async fn try_append(app: &TestApp, stream: &str, producer: &str, body: &Value) -> Response {
    append_request(app, stream, Some(producer), body)
        .send()
        .await
        .unwrap()
}

/// Appends `body` as `producer`; asserts 200 with a JSON string and returns that id.
async fn append(app: &TestApp, stream: &str, producer: &str, body: &Value) -> String {
    let response = try_append(app, stream, producer, body).await;
    id_of(response).await
}

/// Appends an event named `name` with payload `{"n": n}` as `producer`; returns its id.
async fn append_named(app: &TestApp, stream: &str, producer: &str, name: &str, n: u32) -> String {
    append(app, stream, producer, &event(name, json!({ "n": n }))).await
}

/// The id of a 200 append answer, which must be a bare JSON string.
async fn id_of(response: Response) -> String {
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "append answered {body}");
    body.as_str()
        .unwrap_or_else(|| panic!("an append answers with the id as a JSON string, got {body}"))
        .to_owned()
}

/// Status and JSON body of any answer, after checking the conventions (content type,
/// request id).
async fn answer(response: Response) -> (StatusCode, Value) {
    let url = response.url().clone();
    let status = response.status();
    assert_json_conventions(response.headers());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: the body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// `GET /api/v1/streams/{stream}/events?<query>` as the admin, with `X-Consumer-ID`
/// when given.
fn read_request(
    app: &TestApp,
    stream: &str,
    consumer: Option<&str>,
    query: &str,
) -> RequestBuilder {
    let mut request = app.as_admin(Method::GET, &format!("{}?{query}", events_path(stream)));
    if let Some(consumer) = consumer {
        request = request.header("X-Consumer-ID", consumer);
    }
    request
}

/// Reads as `consumer`; asserts 200 with a JSON array and returns it.
async fn read(app: &TestApp, stream: &str, consumer: &str, query: &str) -> Vec<Value> {
    let response = read_request(app, stream, Some(consumer), query)
        .send()
        .await
        .unwrap();
    events_of(response).await
}

/// The events of a 200 read answer.
async fn events_of(response: Response) -> Vec<Value> {
    let url = response.url().clone();
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    body.as_array()
        .unwrap_or_else(|| panic!("{url}: a read answers with a JSON array, got {body}"))
        .clone()
}

/// The `id` of each event.
fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap_or_else(|| panic!("an event carries its id as a string: {e}"))
                .to_owned()
        })
        .collect()
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// `POST /api/v1/streams/{stream}/events/{id}` as the admin with the form `form` and
/// `X-Consumer-ID` when given.
fn ack_request(
    app: &TestApp,
    stream: &str,
    id: &str,
    consumer: Option<&str>,
    form: &str,
) -> RequestBuilder {
    let mut request = app
        .as_admin(Method::POST, &format!("{}/{id}", events_path(stream)))
        .header("content-type", FORM)
        .body(form.to_owned());
    if let Some(consumer) = consumer {
        request = request.header("X-Consumer-ID", consumer);
    }
    request
}

/// Acknowledges event `id` as `consumer`; asserts 200 `"OK"`.
async fn ack(app: &TestApp, stream: &str, consumer: &str, id: &str) {
    let response = ack_request(app, stream, id, Some(consumer), "action=ACK")
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!("OK")),
        "ack of {stream}/{id} by {consumer}"
    );
}

/// `GET /api/v1/streams/{stream}` as the admin; asserts 200.
async fn stream_info(app: &TestApp, stream: &str) -> Value {
    let response = app
        .as_admin(Method::GET, &format!("/api/v1/streams/{stream}"))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "GET stream {stream}: {body}");
    body
}

/// `GET /api/v1/streams` as the admin; asserts 200 and returns the `streams` array.
async fn stream_list(app: &TestApp) -> Vec<Value> {
    let response = app
        .as_admin(Method::GET, "/api/v1/streams")
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "GET streams: {body}");
    body["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("no streams array in {body}"))
        .clone()
}

/// The consumer entry of `info` for (`consumer`, `event_name`), if any.
fn consumer_entry<'a>(info: &'a Value, consumer: &str, event_name: &str) -> Option<&'a Value> {
    info["consumers"]
        .as_array()
        .unwrap_or_else(|| panic!("no consumers array in {info}"))
        .iter()
        .find(|c| c["consumer"] == consumer && c["event_name"] == event_name)
}

/// `(offset, lag)` of (`consumer`, `event_name`) as `GET /api/v1/streams/{s}` reports it.
async fn offset_and_lag(
    app: &TestApp,
    stream: &str,
    consumer: &str,
    event_name: &str,
) -> (Value, Value) {
    let info = stream_info(app, stream).await;
    let entry = consumer_entry(&info, consumer, event_name)
        .unwrap_or_else(|| panic!("no consumer {consumer}/{event_name} in {info}"));
    (entry["offset"].clone(), entry["lag"].clone())
}

/// `PUT /api/v1/admin/streams/{stream}/owner` with `body` through `request`.
fn owner_request(request: RequestBuilder, body: &Value) -> RequestBuilder {
    request
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn owner_path(stream: &str) -> String {
    format!("/api/v1/admin/streams/{stream}/owner")
}

// ---------------------------------------------------------------------------
// Seed 004 as written
// ---------------------------------------------------------------------------

async fn seed_requests_sent_as_written_get_the_seed_answers(app: TestApp) {
    let body_text = r#"{
	"event": {
		"name" : "OrderPlaced",
		"version" : 1
	},
	"system" : {
		"id" : "alv123",
		"name" :"codello alvine",
		"time": "2017-09-06 13:58:12",
		"timezone" : "Europe/Berlin"		
	},	
	"trigger" : {
		"type": "system",
		"name": "/path/to/script.php"
	},
	"payload" : {} 
}"#;
    let posted = app
        .as_admin(Method::POST, "/api/v1/streams/orders/events")
        .header("Accept", "application/json; charset=utf-8")
        .header("Content-Type", "application/json; charset=utf-8")
        .header("X-Producer-ID", "shop")
        .body(body_text)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    assert_json_conventions(posted.headers());
    assert_eq!(posted.text().await.unwrap(), r#""1""#);

    let fetched = app
        .as_admin(
            Method::GET,
            "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10",
        )
        .header("Accept", "application/json; charset=utf-8")
        .header("Content-Type", "application/json; charset=utf-8")
        .header("X-Consumer-ID", "billing")
        .send()
        .await
        .unwrap();
    let events = events_of(fetched).await;
    let stored: Value = serde_json::from_str(body_text).unwrap();
    assert_eq!(events, [with_id(&stored, "1")]);

    let acked = app
        .as_admin(Method::POST, "/api/v1/streams/orders/events/1")
        .header("Accept", "application/json; charset=utf-8")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Consumer-ID", "billing")
        .body("action=ACK")
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status(), StatusCode::OK);
    assert_json_conventions(acked.headers());
    assert_eq!(acked.text().await.unwrap(), r#""OK""#);

    assert!(
        read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10")
            .await
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// Produce
// ---------------------------------------------------------------------------

async fn append_answers_200_with_the_event_id_as_a_json_string_counting_from_1_per_stream(
    app: TestApp,
) {
    let response = try_append(&app, "orders", "shop", &event(PLACED, json!({}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_json_conventions(response.headers());
    assert_eq!(response.text().await.unwrap(), r#""1""#);

    assert_eq!(append_named(&app, "orders", "shop", SHIPPED, 2).await, "2");
    assert_eq!(append_named(&app, "orders", "shop", PLACED, 3).await, "3");
    assert_eq!(
        append_named(&app, "payments", "bank", PLACED, 1).await,
        "1",
        "ids are per stream"
    );
    assert_eq!(append_named(&app, "orders", "shop", PLACED, 4).await, "4");

    let info = stream_info(&app, "orders").await;
    assert_eq!(info["length"], 4, "{info}");
    assert_eq!(info["last_event_id"], "4", "{info}");
}

async fn events_come_back_as_posted_with_their_id_added(app: TestApp) {
    let first = event(
        PLACED,
        json!({
            "order": 17,
            "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}],
            "note": "ünïcode ✓",
            "nothing": null,
            "price": 12.5,
            "flags": {"gift": true}
        }),
    );
    let mut second = event(PLACED, json!({"order": 18}));
    second["event"]["version"] = json!(7);
    second["trigger"] = json!({"type": "user", "name": "alice"});

    let first_id = append(&app, "orders", "shop", &first).await;
    let second_id = append(&app, "orders", "shop", &second).await;

    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(
        events,
        [with_id(&first, &first_id), with_id(&second, &second_id)]
    );
}

async fn first_producer_owns_the_stream_and_a_second_writer_gets_423_and_appends_nothing(
    app: TestApp,
) {
    assert_eq!(append_named(&app, "orders", "shop", PLACED, 1).await, "1");

    let intruder = try_append(&app, "orders", "intruder", &event(PLACED, json!({"n": 99}))).await;
    assert_error(intruder, StatusCode::LOCKED, LOCKED).await;
    let intruder_other_name = try_append(
        &app,
        "orders",
        "intruder",
        &event(SHIPPED, json!({"n": 98})),
    )
    .await;
    assert_error(intruder_other_name, StatusCode::LOCKED, LOCKED).await;

    let info = stream_info(&app, "orders").await;
    assert_eq!(info["owner"], "shop", "{info}");
    assert_eq!(info["length"], 1, "{info}");
    assert_eq!(
        append_named(&app, "orders", "shop", PLACED, 2).await,
        "2",
        "a refused write takes no id"
    );

    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(ids(&events), strings(&["1", "2"]));
    assert!(
        read(&app, "orders", "billing", "eventName=OrderShipped&limit=10")
            .await
            .is_empty()
    );
    assert_eq!(
        append_named(&app, "elsewhere", "intruder", PLACED, 1).await,
        "1",
        "the intruder may own another stream"
    );
}

async fn racing_first_writers_exactly_one_owns_the_stream(app: TestApp) {
    for round in 0..3 {
        let stream = format!("race-{round}");
        let mut writers = tokio::task::JoinSet::new();
        for p in 0..10 {
            let producer = format!("producer-{p}");
            let request = append_request(
                &app,
                &stream,
                Some(&producer),
                &event(PLACED, json!({ "from": producer })),
            );
            writers.spawn(async move {
                let response = request.send().await.unwrap();
                let status = response.status();
                assert_json_conventions(response.headers());
                let body: Value = response.json().await.unwrap();
                (producer, status, body)
            });
        }
        let mut winners = Vec::new();
        while let Some(outcome) = writers.join_next().await {
            let (producer, status, body) = outcome.unwrap();
            match status {
                StatusCode::OK => winners.push((producer, body)),
                StatusCode::LOCKED => assert_eq!(body, json!(LOCKED)),
                other => panic!("{stream}: {producer} got {other} {body}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "{stream}: exactly one first writer wins: {winners:?}"
        );
        let (owner, id) = &winners[0];
        assert_eq!(id, &json!("1"));

        let info = stream_info(&app, &stream).await;
        assert_eq!(info["owner"], owner.as_str(), "{info}");
        assert_eq!(info["length"], 1, "{info}");
        let events = read(&app, &stream, "audit", "eventName=OrderPlaced&limit=100").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["payload"]["from"], owner.as_str());
        assert_eq!(append_named(&app, &stream, owner, PLACED, 2).await, "2");
        let loser = if owner == "producer-0" {
            "producer-1"
        } else {
            "producer-0"
        };
        let refused = try_append(&app, &stream, loser, &event(PLACED, json!({}))).await;
        assert_error(refused, StatusCode::LOCKED, LOCKED).await;
    }
}

async fn concurrent_appends_of_the_owner_get_distinct_consecutive_ids(app: TestApp) {
    assert_eq!(append_named(&app, "orders", "shop", PLACED, 0).await, "1");
    let mut writers = tokio::task::JoinSet::new();
    for n in 1..=20 {
        let request = append_request(
            &app,
            "orders",
            Some("shop"),
            &event(PLACED, json!({ "n": n })),
        );
        writers.spawn(async move { id_of(request.send().await.unwrap()).await });
    }
    let mut returned = BTreeSet::new();
    while let Some(id) = writers.join_next().await {
        let id: u64 = id
            .unwrap()
            .parse()
            .expect("an event id is a decimal number");
        assert!(returned.insert(id), "id {id} was given twice");
    }
    assert_eq!(returned, (2..=21).collect::<BTreeSet<u64>>());

    let events = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=1000",
    )
    .await;
    let expected: Vec<String> = (1..=21).map(|n| n.to_string()).collect();
    assert_eq!(ids(&events), expected, "read in id order");
    assert_eq!(stream_info(&app, "orders").await["length"], 21);
}

/// How a 400 must name the field.
enum Expect {
    /// The exact text.
    Exact(&'static str),
    /// Starts with `Bad Request - ` and names this field path.
    Names(&'static str),
}

async fn invalid_event_bodies_are_400_naming_the_field_and_append_nothing(app: TestApp) {
    let valid = event(PLACED, json!({}));
    let without = |pointer: &str| {
        let mut body = valid.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut body
        } else {
            body.pointer_mut(parent).unwrap()
        };
        parent.as_object_mut().unwrap().remove(key).unwrap();
        body
    };
    let with = |pointer: &str, value: Value| {
        let mut body = valid.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    use Expect::{Exact, Names};
    let cases: Vec<(Value, Expect)> = vec![
        (without("/event"), Exact("Bad Request - event is required")),
        (
            with("/event", json!("OrderPlaced")),
            Exact("Bad Request - event must be an object"),
        ),
        (
            without("/event/name"),
            Exact("Bad Request - event.name is required"),
        ),
        (
            with("/event/name", json!(5)),
            Exact("Bad Request - event.name must be a string"),
        ),
        (with("/event/name", json!("")), Names("event.name")),
        (with("/event/name", Value::Null), Names("event.name")),
        (
            without("/event/version"),
            Exact("Bad Request - event.version is required"),
        ),
        (
            with("/event/version", json!("1")),
            Exact("Bad Request - event.version must be an integer"),
        ),
        (
            with("/event/version", json!(1.5)),
            Exact("Bad Request - event.version must be an integer"),
        ),
        (
            with("/event/version", json!(true)),
            Exact("Bad Request - event.version must be an integer"),
        ),
        (
            without("/system"),
            Exact("Bad Request - system is required"),
        ),
        (
            with("/system", json!([])),
            Exact("Bad Request - system must be an object"),
        ),
        (
            without("/system/id"),
            Exact("Bad Request - system.id is required"),
        ),
        (
            with("/system/id", json!(123)),
            Exact("Bad Request - system.id must be a string"),
        ),
        (
            without("/system/name"),
            Exact("Bad Request - system.name is required"),
        ),
        (
            with("/system/name", json!(["x"])),
            Exact("Bad Request - system.name must be a string"),
        ),
        (
            without("/system/time"),
            Exact("Bad Request - system.time is required"),
        ),
        (
            with("/system/time", json!(1504706292)),
            Exact("Bad Request - system.time must be a string"),
        ),
        (
            without("/system/timezone"),
            Exact("Bad Request - system.timezone is required"),
        ),
        (
            with("/system/timezone", json!({})),
            Exact("Bad Request - system.timezone must be a string"),
        ),
        (
            without("/trigger"),
            Exact("Bad Request - trigger is required"),
        ),
        (
            with("/trigger", json!("system")),
            Exact("Bad Request - trigger must be an object"),
        ),
        (
            without("/trigger/type"),
            Exact("Bad Request - trigger.type is required"),
        ),
        (
            with("/trigger/type", json!(false)),
            Exact("Bad Request - trigger.type must be a string"),
        ),
        (
            without("/trigger/name"),
            Exact("Bad Request - trigger.name is required"),
        ),
        (
            with("/trigger/name", json!(1)),
            Exact("Bad Request - trigger.name must be a string"),
        ),
        (
            without("/payload"),
            Exact("Bad Request - payload is required"),
        ),
        (
            with("/payload", json!([])),
            Exact("Bad Request - payload must be an object"),
        ),
        (
            with("/payload", json!("x")),
            Exact("Bad Request - payload must be an object"),
        ),
        (with("/payload", Value::Null), Names("payload")),
    ];

    let mut mismatches = Vec::new();
    for (body, expect) in &cases {
        let response = try_append(&app, "orders", "sloppy", body).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        let ok = status == StatusCode::BAD_REQUEST
            && content_type.as_deref() == Some(JSON_CONTENT_TYPE)
            && match (expect, &message) {
                (Exact(expected), Some(message)) => message == expected,
                (Names(path), Some(message)) => {
                    message.starts_with("Bad Request - ") && message.contains(path)
                }
                (_, None) => false,
            };
        if !ok {
            let wanted = match expect {
                Exact(text) => format!("{text:?}"),
                Names(path) => format!("\"Bad Request - ...{path}...\""),
            };
            mismatches.push(format!(
                "body {body}\n    wanted 400 {wanted}, got {status} {content_type:?} {text}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} invalid bodies were not refused as expected:\n  {}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n  ")
    );

    let info = app
        .as_admin(Method::GET, "/api/v1/streams/orders")
        .send()
        .await
        .unwrap();
    assert_error(info, StatusCode::NOT_FOUND, "Not Found - stream orders").await;
    assert_eq!(
        append(&app, "orders", "careful", &valid).await,
        "1",
        "refused bodies neither create the stream nor claim it"
    );
    assert_eq!(stream_info(&app, "orders").await["owner"], "careful");
}

async fn malformed_json_non_object_and_non_json_bodies_are_rejected(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    for body in [
        r#"{"event":"#,
        "not json",
        "{} trailing",
        r#"{"event": {"name": "OrderPlaced",}}"#,
        "",
        "[]",
        r#""OrderPlaced""#,
        "42",
        "null",
    ] {
        let response = app
            .as_admin(Method::POST, "/api/v1/streams/orders/events")
            .header("content-type", "application/json; charset=utf-8")
            .header("X-Producer-ID", "shop")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let text_plain = app
        .as_admin(Method::POST, "/api/v1/streams/orders/events")
        .header("content-type", "text/plain")
        .header("X-Producer-ID", "shop")
        .body(event(PLACED, json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_error_prefix(
        text_plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported Media Type - ",
    )
    .await;
    assert_eq!(stream_info(&app, "orders").await["length"], 1);
}

async fn missing_or_empty_producer_id_is_400(app: TestApp) {
    let body = event(PLACED, json!({}));
    let missing = append_request(&app, "orders", None, &body)
        .send()
        .await
        .unwrap();
    assert_error(
        missing,
        StatusCode::BAD_REQUEST,
        "Bad Request - X-Producer-ID header is required",
    )
    .await;
    let empty = try_append(&app, "orders", "", &body).await;
    assert_error_prefix(empty, StatusCode::BAD_REQUEST, "Bad Request - ").await;

    let info = app
        .as_admin(Method::GET, "/api/v1/streams/orders")
        .send()
        .await
        .unwrap();
    assert_error(info, StatusCode::NOT_FOUND, "Not Found - stream orders").await;
}

async fn bad_stream_names_are_400_on_every_stream_call(app: TestApp) {
    let long = "a".repeat(129);
    let body = event(PLACED, json!({}));
    for segment in ["bad%20name", long.as_str(), "%C3%B1", "a%2Fb", "a%3Fb"] {
        let calls = [
            append_request(&app, segment, Some("shop"), &body),
            read_request(
                &app,
                segment,
                Some("billing"),
                "eventName=OrderPlaced&limit=1",
            ),
            ack_request(&app, segment, "1", Some("billing"), "action=ACK"),
            app.as_admin(Method::GET, &format!("/api/v1/streams/{segment}")),
            owner_request(
                app.as_admin(Method::PUT, &owner_path(segment)),
                &json!({"owner": "shop"}),
            ),
        ];
        for request in calls {
            let response = request.send().await.unwrap();
            assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
        }
    }
    assert!(stream_list(&app).await.is_empty());
    let longest = "b".repeat(128);
    assert_eq!(append(&app, &longest, "shop", &body).await, "1");
    assert_eq!(
        append(&app, "A-z_0.9", "shop", &body).await,
        "1",
        "letters, digits, dot, dash and underscore are allowed"
    );
}

async fn missing_or_wrong_credentials_are_401_on_every_stream_call(app: TestApp) {
    let body = event(PLACED, json!({}));
    append(&app, "orders", "shop", &body).await;
    let no_credentials = [
        app.request(Method::POST, "/api/v1/streams/orders/events")
            .header("content-type", "application/json; charset=utf-8")
            .header("X-Producer-ID", "shop")
            .body(body.to_string()),
        app.request(
            Method::GET,
            "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10",
        )
        .header("X-Consumer-ID", "billing"),
        app.request(Method::POST, "/api/v1/streams/orders/events/1")
            .header("content-type", FORM)
            .header("X-Consumer-ID", "billing")
            .body("action=ACK"),
        app.request(Method::GET, "/api/v1/streams"),
        app.request(Method::GET, "/api/v1/streams/orders"),
        owner_request(
            app.request(Method::PUT, &owner_path("orders")),
            &json!({"owner": "thief"}),
        ),
    ];
    for request in no_credentials {
        let response = request.send().await.unwrap();
        let headers = assert_error(response, StatusCode::UNAUTHORIZED, "Unauthorized").await;
        assert!(
            headers.get("www-authenticate").is_some(),
            "a 401 carries a challenge"
        );
    }
    let wrong_secret = app
        .as_client(
            "admin",
            "not-the-secret",
            Method::POST,
            "/api/v1/streams/orders/events",
        )
        .header("content-type", "application/json; charset=utf-8")
        .header("X-Producer-ID", "shop")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_error(wrong_secret, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    let unknown_client = app
        .as_client(
            "nobody",
            &app.admin_secret,
            Method::GET,
            "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10",
        )
        .header("X-Consumer-ID", "billing")
        .send()
        .await
        .unwrap();
    assert_error(unknown_client, StatusCode::UNAUTHORIZED, "Unauthorized").await;

    let info = stream_info(&app, "orders").await;
    assert_eq!(info["length"], 1, "nothing was appended: {info}");
    assert_eq!(info["owner"], "shop", "{info}");
    assert!(
        consumer_entry(&info, "billing", PLACED).is_none_or(|c| c["offset"].is_null()),
        "nothing was acked: {info}"
    );
}

async fn produce_only_client_can_append_but_not_read_ack_or_transfer(app: TestApp) {
    let secret = app.create_client("shop", &["stream:orders:produce"]).await;
    let body = event(PLACED, json!({}));
    let appended = app
        .as_client(
            "shop",
            &secret,
            Method::POST,
            "/api/v1/streams/orders/events",
        )
        .header("content-type", "application/json; charset=utf-8")
        .header("X-Producer-ID", "shop")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(appended).await, "1");

    let elsewhere = app
        .as_client(
            "shop",
            &secret,
            Method::POST,
            "/api/v1/streams/payments/events",
        )
        .header("content-type", "application/json; charset=utf-8")
        .header("X-Producer-ID", "shop")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_error_prefix(elsewhere, StatusCode::FORBIDDEN, "Forbidden - ").await;
    let refused_read = app
        .as_client(
            "shop",
            &secret,
            Method::GET,
            "/api/v1/streams/orders/events?eventName=OrderPlaced&limit=10",
        )
        .header("X-Consumer-ID", "shop")
        .send()
        .await
        .unwrap();
    assert_error_prefix(refused_read, StatusCode::FORBIDDEN, "Forbidden - ").await;
    let acked = app
        .as_client(
            "shop",
            &secret,
            Method::POST,
            "/api/v1/streams/orders/events/1",
        )
        .header("content-type", FORM)
        .header("X-Consumer-ID", "shop")
        .body("action=ACK")
        .send()
        .await
        .unwrap();
    assert_error_prefix(acked, StatusCode::FORBIDDEN, "Forbidden - ").await;
    let transfer = owner_request(
        app.as_client("shop", &secret, Method::PUT, &owner_path("orders")),
        &json!({"owner": "other"}),
    )
    .send()
    .await
    .unwrap();
    assert_error_prefix(transfer, StatusCode::FORBIDDEN, "Forbidden - ").await;

    let info = stream_info(&app, "orders").await;
    assert_eq!(info["owner"], "shop", "{info}");
    assert!(
        consumer_entry(&info, "shop", PLACED).is_none_or(|c| c["offset"].is_null()),
        "the refused ack moved nothing: {info}"
    );
}

// ---------------------------------------------------------------------------
// Consume
// ---------------------------------------------------------------------------

async fn read_returns_only_the_named_events_oldest_first_at_most_limit(app: TestApp) {
    // ids: 1 P, 2 S, 3 P, 4 P, 5 S, 6 P, 7 P
    for (n, name) in [PLACED, SHIPPED, PLACED, PLACED, SHIPPED, PLACED, PLACED]
        .into_iter()
        .enumerate()
    {
        append_named(&app, "orders", "shop", name, n as u32 + 1).await;
    }
    let placed = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=1000",
    )
    .await;
    assert_eq!(ids(&placed), strings(&["1", "3", "4", "6", "7"]));
    assert!(placed.iter().all(|e| e["event"]["name"] == PLACED));
    let numbers: Vec<&Value> = placed.iter().map(|e| &e["payload"]["n"]).collect();
    assert_eq!(
        numbers,
        [&json!(1), &json!(3), &json!(4), &json!(6), &json!(7)]
    );

    let shipped = read(&app, "orders", "billing", "eventName=OrderShipped&limit=10").await;
    assert_eq!(ids(&shipped), strings(&["2", "5"]));

    let first_two = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=2").await;
    assert_eq!(ids(&first_two), strings(&["1", "3"]));
    let one = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=1").await;
    assert_eq!(ids(&one), strings(&["1"]));

    let none = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderCancelled&limit=10",
    )
    .await;
    assert!(none.is_empty(), "an event name never written reads as []");
}

async fn read_parameter_and_header_errors_are_400(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    let limit_error = "Bad Request - limit must be between 1 and 1000";
    let cases = [
        ("limit=10", "Bad Request - eventName is required"),
        ("eventName=OrderPlaced", "Bad Request - limit is required"),
        ("eventName=OrderPlaced&limit=0", limit_error),
        ("eventName=OrderPlaced&limit=1001", limit_error),
        ("eventName=OrderPlaced&limit=abc", limit_error),
        ("eventName=OrderPlaced&limit=-1", limit_error),
        ("eventName=OrderPlaced&limit=", limit_error),
    ];
    for (query, text) in cases {
        let response = read_request(&app, "orders", Some("billing"), query)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, text).await;
    }
    let empty_name = read_request(&app, "orders", Some("billing"), "eventName=&limit=10")
        .send()
        .await
        .unwrap();
    assert_error_prefix(empty_name, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    for query in [
        "eventName=OrderPlaced&limit=10&after=abc",
        "eventName=OrderPlaced&limit=10&wait=soon",
    ] {
        let response = read_request(&app, "orders", Some("billing"), query)
            .send()
            .await
            .unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let no_consumer = read_request(&app, "orders", None, "eventName=OrderPlaced&limit=10")
        .send()
        .await
        .unwrap();
    assert_error(
        no_consumer,
        StatusCode::BAD_REQUEST,
        "Bad Request - X-Consumer-ID header is required",
    )
    .await;

    let at_the_edge = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=1000",
    )
    .await;
    assert_eq!(ids(&at_the_edge), strings(&["1"]));
}

async fn unknown_stream_is_404_for_read_info_and_ack(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    let read_unknown = read_request(
        &app,
        "nosuch",
        Some("billing"),
        "eventName=OrderPlaced&limit=10",
    )
    .send()
    .await
    .unwrap();
    assert_error(
        read_unknown,
        StatusCode::NOT_FOUND,
        "Not Found - stream nosuch",
    )
    .await;
    let info_unknown = app
        .as_admin(Method::GET, "/api/v1/streams/nosuch")
        .send()
        .await
        .unwrap();
    assert_error(
        info_unknown,
        StatusCode::NOT_FOUND,
        "Not Found - stream nosuch",
    )
    .await;
    let ack_unknown = ack_request(&app, "nosuch", "1", Some("billing"), "action=ACK")
        .send()
        .await
        .unwrap();
    assert_error(ack_unknown, StatusCode::NOT_FOUND, "Not Found").await;

    let listed = stream_list(&app).await;
    let listed: Vec<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["orders"], "reads and acks create no stream");
}

// ---------------------------------------------------------------------------
// Acknowledge
// ---------------------------------------------------------------------------

async fn acked_event_is_returned_until_acked_and_never_after(app: TestApp) {
    let mut appended = Vec::new();
    for n in 1..=3 {
        appended.push(append_named(&app, "orders", "shop", PLACED, n).await);
    }
    let query = "eventName=OrderPlaced&limit=1";
    for id in &appended {
        for _ in 0..2 {
            let events = read(&app, "orders", "billing", query).await;
            assert_eq!(
                ids(&events),
                std::slice::from_ref(id),
                "returned until acked"
            );
        }
        ack(&app, "orders", "billing", id).await;
        let next = read(
            &app,
            "orders",
            "billing",
            "eventName=OrderPlaced&limit=1000",
        )
        .await;
        assert!(
            !ids(&next).contains(id),
            "event {id} came back after its ack: {next:?}"
        );
    }
    assert!(read(&app, "orders", "billing", query).await.is_empty());

    let fourth = append_named(&app, "orders", "shop", PLACED, 4).await;
    assert_eq!(fourth, "4");
    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(
        ids(&events),
        [fourth],
        "only the new event after the acked ones"
    );
}

async fn unacked_events_are_redelivered_on_every_read(app: TestApp) {
    for n in 1..=3 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    let query = "eventName=OrderPlaced&limit=10";
    for _ in 0..3 {
        let events = read(&app, "orders", "billing", query).await;
        assert_eq!(ids(&events), strings(&["1", "2", "3"]));
    }
    let (offset, lag) = consumer_entry(&stream_info(&app, "orders").await, "billing", PLACED)
        .map(|c| (c["offset"].clone(), c["lag"].clone()))
        .unwrap_or((Value::Null, json!(3)));
    assert_eq!(offset, Value::Null, "reading commits nothing");
    assert_eq!(lag, 3);

    ack(&app, "orders", "billing", "1").await;
    let events = read(&app, "orders", "billing", query).await;
    assert_eq!(ids(&events), strings(&["2", "3"]));
    let again = read(&app, "orders", "billing", query).await;
    assert_eq!(ids(&again), strings(&["2", "3"]), "still unacked, so again");
}

async fn ack_is_cumulative_over_the_events_of_that_name(app: TestApp) {
    for n in 1..=5 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    let query = "eventName=OrderPlaced&limit=2";
    assert_eq!(
        ids(&read(&app, "orders", "billing", query).await),
        strings(&["1", "2"])
    );
    ack(&app, "orders", "billing", "2").await;
    assert_eq!(
        ids(&read(&app, "orders", "billing", query).await),
        strings(&["3", "4"])
    );
    ack(&app, "orders", "billing", "4").await;
    assert_eq!(
        ids(&read(&app, "orders", "billing", query).await),
        strings(&["5"])
    );

    for n in 6..=8 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    ack(&app, "orders", "auditor", "7").await;
    assert_eq!(
        ids(&read(&app, "orders", "auditor", "eventName=OrderPlaced&limit=10").await),
        strings(&["8"]),
        "acking 7 without reading commits 1..7"
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "auditor", PLACED).await,
        (json!("7"), json!(1))
    );
}

async fn ack_never_moves_the_offset_backwards(app: TestApp) {
    for n in 1..=6 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    ack(&app, "orders", "billing", "5").await;
    ack(&app, "orders", "billing", "3").await;
    ack(&app, "orders", "billing", "5").await;
    ack(&app, "orders", "billing", "1").await;
    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(ids(&events), strings(&["6"]));
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", PLACED).await,
        (json!("5"), json!(1))
    );
}

async fn offsets_are_per_consumer(app: TestApp) {
    for n in 1..=3 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    ack(&app, "orders", "billing", "2").await;
    let query = "eventName=OrderPlaced&limit=10";
    assert_eq!(
        ids(&read(&app, "orders", "billing", query).await),
        strings(&["3"])
    );
    assert_eq!(
        ids(&read(&app, "orders", "shipping", query).await),
        strings(&["1", "2", "3"]),
        "another consumer's ack moves nothing for this one"
    );
    ack(&app, "orders", "shipping", "3").await;
    assert!(read(&app, "orders", "shipping", query).await.is_empty());
    assert_eq!(
        ids(&read(&app, "orders", "billing", query).await),
        strings(&["3"])
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", PLACED).await,
        (json!("2"), json!(1))
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "shipping", PLACED).await,
        (json!("3"), json!(0))
    );
}

async fn offsets_are_per_event_name(app: TestApp) {
    // ids: 1 P, 2 S, 3 P, 4 S, 5 P
    for (n, name) in [PLACED, SHIPPED, PLACED, SHIPPED, PLACED]
        .into_iter()
        .enumerate()
    {
        append_named(&app, "orders", "shop", name, n as u32 + 1).await;
    }
    ack(&app, "orders", "billing", "3").await;
    let placed = "eventName=OrderPlaced&limit=10";
    let shipped = "eventName=OrderShipped&limit=10";
    assert_eq!(
        ids(&read(&app, "orders", "billing", placed).await),
        strings(&["5"])
    );
    assert_eq!(
        ids(&read(&app, "orders", "billing", shipped).await),
        strings(&["2", "4"]),
        "acking OrderPlaced 3 leaves OrderShipped 2 unacked"
    );

    ack(&app, "orders", "billing", "4").await;
    assert!(read(&app, "orders", "billing", shipped).await.is_empty());
    assert_eq!(
        ids(&read(&app, "orders", "billing", placed).await),
        strings(&["5"]),
        "acking OrderShipped 4 leaves OrderPlaced 5 unacked"
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", PLACED).await,
        (json!("3"), json!(1))
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", SHIPPED).await,
        (json!("4"), json!(0))
    );
}

async fn ack_of_an_unknown_event_is_404_and_moves_nothing(app: TestApp) {
    for n in 1..=2 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    for n in 1..=5 {
        append_named(&app, "payments", "bank", PLACED, n).await;
    }
    for id in ["99", "3", "0"] {
        let response = ack_request(&app, "orders", id, Some("billing"), "action=ACK")
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "Not Found").await;
    }
    let unknown_stream = ack_request(&app, "nosuch", "1", Some("billing"), "action=ACK")
        .send()
        .await
        .unwrap();
    assert_error(unknown_stream, StatusCode::NOT_FOUND, "Not Found").await;
    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(ids(&events), strings(&["1", "2"]));
}

async fn ack_with_another_action_no_action_or_no_consumer_is_400_and_moves_nothing(app: TestApp) {
    for n in 1..=2 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    for form in ["action=NACK", "", "action=", "other=ACK"] {
        let response = ack_request(&app, "orders", "2", Some("billing"), form)
            .send()
            .await
            .unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let no_consumer = ack_request(&app, "orders", "2", None, "action=ACK")
        .send()
        .await
        .unwrap();
    assert_error_prefix(no_consumer, StatusCode::BAD_REQUEST, "Bad Request - ").await;

    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(
        ids(&events),
        strings(&["1", "2"]),
        "no refused ack moved the offset"
    );
}

// ---------------------------------------------------------------------------
// Beyond the seed: after=, wait=
// ---------------------------------------------------------------------------

async fn after_replays_from_an_event_id_without_moving_offsets(app: TestApp) {
    // ids: 1 P, 2 S, 3 P, 4 P, 5 S, 6 P
    for (n, name) in [PLACED, SHIPPED, PLACED, PLACED, SHIPPED, PLACED]
        .into_iter()
        .enumerate()
    {
        append_named(&app, "orders", "shop", name, n as u32 + 1).await;
    }
    ack(&app, "orders", "billing", "4").await;
    let plain = "eventName=OrderPlaced&limit=10";
    assert_eq!(
        ids(&read(&app, "orders", "billing", plain).await),
        strings(&["6"])
    );

    let replay =
        |after: &str, limit: u32| format!("eventName=OrderPlaced&limit={limit}&after={after}");
    assert_eq!(
        ids(&read(&app, "orders", "billing", &replay("0", 10)).await),
        strings(&["1", "3", "4", "6"]),
        "after=0 replays from the start, acked events included"
    );
    assert_eq!(
        ids(&read(&app, "orders", "billing", &replay("1", 10)).await),
        strings(&["3", "4", "6"])
    );
    assert_eq!(
        ids(&read(&app, "orders", "billing", &replay("2", 2)).await),
        strings(&["3", "4"]),
        "after= respects limit"
    );
    assert_eq!(
        ids(&read(
            &app,
            "orders",
            "billing",
            "eventName=OrderShipped&limit=10&after=2"
        )
        .await),
        strings(&["5"]),
        "after= respects eventName"
    );
    assert!(read(&app, "orders", "billing", &replay("6", 10))
        .await
        .is_empty());
    assert!(read(&app, "orders", "billing", &replay("100", 10))
        .await
        .is_empty());
    assert_eq!(
        ids(&read(&app, "orders", "newcomer", &replay("3", 10)).await),
        strings(&["4", "6"])
    );

    assert_eq!(
        ids(&read(&app, "orders", "billing", plain).await),
        strings(&["6"]),
        "replays moved no offset"
    );
    assert_eq!(
        ids(&read(&app, "orders", "newcomer", plain).await),
        strings(&["1", "3", "4", "6"]),
        "a replay commits nothing for its consumer"
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", PLACED).await,
        (json!("4"), json!(1))
    );
}

async fn long_poll_wakes_up_promptly_on_a_matching_append(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    ack(&app, "orders", "billing", "1").await;

    let started = Instant::now();
    let waiting = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=10&wait=10",
    );
    let appending = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        append_named(&app, "orders", "shop", PLACED, 2).await
    };
    let (events, id) = tokio::join!(waiting, appending);
    let elapsed = started.elapsed();
    assert_eq!(ids(&events), [id]);
    assert!(
        elapsed < Duration::from_secs(2),
        "the long-poll answered after {elapsed:?}, not at the append"
    );
    assert_eq!(events[0]["payload"]["n"], 2);
}

async fn long_poll_ignores_appends_of_other_event_names(app: TestApp) {
    append_named(&app, "orders", "shop", SHIPPED, 1).await;

    let started = Instant::now();
    let waiting = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=10&wait=10",
    );
    let appending = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        append_named(&app, "orders", "shop", SHIPPED, 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        append_named(&app, "orders", "shop", PLACED, 3).await
    };
    let (events, id) = tokio::join!(waiting, appending);
    let elapsed = started.elapsed();
    assert_eq!(
        ids(&events),
        [id],
        "the OrderShipped append must not end an OrderPlaced long-poll"
    );
    assert!(
        elapsed >= Duration::from_millis(650) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}: the matching append came at ~700 ms"
    );
}

async fn long_poll_without_a_matching_append_answers_empty_after_the_wait(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    ack(&app, "orders", "billing", "1").await;
    let started = Instant::now();
    let events = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=10&wait=1",
    )
    .await;
    let elapsed = started.elapsed();
    assert!(events.is_empty(), "{events:?}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered after {elapsed:?}, before the wait"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}, long after the wait"
    );
}

async fn long_poll_answers_at_once_when_events_are_waiting(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    let started = Instant::now();
    let events = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=10&wait=30",
    )
    .await;
    assert_eq!(ids(&events), strings(&["1"]));
    let capped = read(
        &app,
        "orders",
        "billing",
        "eventName=OrderPlaced&limit=10&wait=300",
    )
    .await;
    assert_eq!(
        ids(&capped),
        strings(&["1"]),
        "a wait over the cap is capped, not refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?} with events waiting",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Beyond the seed: list, info, owner transfer
// ---------------------------------------------------------------------------

async fn list_shows_every_stream_with_owner_length_and_first_and_last_ids(app: TestApp) {
    assert!(stream_list(&app).await.is_empty(), "no stream yet");
    for n in 1..=3 {
        append_named(&app, "orders", "shop", PLACED, n).await;
    }
    append_named(&app, "payments", "bank", SHIPPED, 1).await;

    let streams = stream_list(&app).await;
    assert_eq!(streams.len(), 2, "{streams:?}");
    let find = |name: &str| {
        streams
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {streams:?}"))
            .clone()
    };
    let fields = |s: &Value| {
        (
            s["name"].clone(),
            s["owner"].clone(),
            s["length"].clone(),
            s["first_event_id"].clone(),
            s["last_event_id"].clone(),
        )
    };
    assert_eq!(
        fields(&find("orders")),
        (
            json!("orders"),
            json!("shop"),
            json!(3),
            json!("1"),
            json!("3")
        )
    );
    assert_eq!(
        fields(&find("payments")),
        (
            json!("payments"),
            json!("bank"),
            json!(1),
            json!("1"),
            json!("1")
        )
    );

    let info = stream_info(&app, "orders").await;
    assert_eq!(
        fields(&info),
        fields(&find("orders")),
        "info agrees with the list"
    );
}

async fn info_shows_each_consumer_offset_and_lag_per_event_name(app: TestApp) {
    // ids: 1 P, 2 S, 3 P, 4 P, 5 S, 6 P
    for (n, name) in [PLACED, SHIPPED, PLACED, PLACED, SHIPPED, PLACED]
        .into_iter()
        .enumerate()
    {
        append_named(&app, "orders", "shop", name, n as u32 + 1).await;
    }
    let info = stream_info(&app, "orders").await;
    assert_eq!(info["name"], "orders");
    assert_eq!(info["owner"], "shop");
    assert_eq!(info["length"], 6);
    assert_eq!(info["first_event_id"], "1");
    assert_eq!(info["last_event_id"], "6");
    assert!(
        info["consumers"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["offset"].is_null())),
        "no consumer has committed anything: {info}"
    );

    ack(&app, "orders", "billing", "3").await;
    ack(&app, "orders", "shipping", "2").await;
    ack(&app, "orders", "billing", "5").await;
    read(&app, "orders", "reader", "eventName=OrderPlaced&limit=10").await;

    let info = stream_info(&app, "orders").await;
    let mut committed: Vec<(String, String, Value, Value)> = info["consumers"]
        .as_array()
        .unwrap_or_else(|| panic!("no consumers array in {info}"))
        .iter()
        .filter(|c| !c["offset"].is_null())
        .map(|c| {
            (
                c["consumer"].as_str().unwrap_or_default().to_owned(),
                c["event_name"].as_str().unwrap_or_default().to_owned(),
                c["offset"].clone(),
                c["lag"].clone(),
            )
        })
        .collect();
    committed.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        committed,
        [
            (
                "billing".to_owned(),
                PLACED.to_owned(),
                json!("3"),
                json!(2)
            ),
            (
                "billing".to_owned(),
                SHIPPED.to_owned(),
                json!("5"),
                json!(0)
            ),
            (
                "shipping".to_owned(),
                SHIPPED.to_owned(),
                json!("2"),
                json!(1)
            ),
        ],
        "{info}"
    );
    if let Some(reader) = consumer_entry(&info, "reader", PLACED) {
        assert_eq!(reader["offset"], Value::Null, "{info}");
        assert_eq!(
            reader["lag"], 4,
            "a consumer with no offset lags by every event: {info}"
        );
    }

    append_named(&app, "orders", "shop", PLACED, 7).await;
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", PLACED).await,
        (json!("3"), json!(3)),
        "lag grows with appends"
    );
    assert_eq!(
        offset_and_lag(&app, "orders", "billing", SHIPPED).await,
        (json!("5"), json!(0)),
        "only appends of that name count"
    );
}

async fn admin_transfers_ownership_and_the_old_owner_gets_423(app: TestApp) {
    assert_eq!(append_named(&app, "orders", "shop", PLACED, 1).await, "1");
    let response = owner_request(
        app.as_admin(Method::PUT, &owner_path("orders")),
        &json!({"owner": "new-shop"}),
    )
    .send()
    .await
    .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"name": "orders", "owner": "new-shop"}));

    assert_eq!(
        append_named(&app, "orders", "new-shop", PLACED, 2).await,
        "2"
    );
    let old = try_append(&app, "orders", "shop", &event(PLACED, json!({}))).await;
    assert_error(old, StatusCode::LOCKED, LOCKED).await;

    let info = stream_info(&app, "orders").await;
    assert_eq!(info["owner"], "new-shop", "{info}");
    assert_eq!(info["length"], 2, "{info}");
    let events = read(&app, "orders", "billing", "eventName=OrderPlaced&limit=10").await;
    assert_eq!(
        ids(&events),
        strings(&["1", "2"]),
        "the log is kept across the transfer"
    );
}

async fn owner_transfer_is_admin_only_and_checks_stream_and_body(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    let secret = app.create_client("manager", &["stream:*:*"]).await;
    let forbidden = owner_request(
        app.as_client("manager", &secret, Method::PUT, &owner_path("orders")),
        &json!({"owner": "manager"}),
    )
    .send()
    .await
    .unwrap();
    assert_error_prefix(forbidden, StatusCode::FORBIDDEN, "Forbidden - ").await;

    let unknown = owner_request(
        app.as_admin(Method::PUT, &owner_path("nosuch")),
        &json!({"owner": "shop"}),
    )
    .send()
    .await
    .unwrap();
    assert_error_prefix(unknown, StatusCode::NOT_FOUND, "Not Found").await;

    for body in [
        json!({}),
        json!({"owner": 5}),
        json!({"owner": ""}),
        json!(["shop"]),
    ] {
        let response = owner_request(app.as_admin(Method::PUT, &owner_path("orders")), &body)
            .send()
            .await
            .unwrap();
        let (status, answer) = answer(response).await;
        assert!(
            status == StatusCode::BAD_REQUEST
                && answer
                    .as_str()
                    .is_some_and(|t| t.starts_with("Bad Request - ")),
            "PUT owner {body}: wanted 400 \"Bad Request - ...\", got {status} {answer}"
        );
    }

    assert_eq!(stream_info(&app, "orders").await["owner"], "shop");
    assert_eq!(append_named(&app, "orders", "shop", PLACED, 2).await, "2");
    let manager = try_append(&app, "orders", "manager", &event(PLACED, json!({}))).await;
    assert_error(manager, StatusCode::LOCKED, LOCKED).await;
    assert!(
        stream_list(&app)
            .await
            .iter()
            .all(|s| s["name"] != "nosuch"),
        "a refused transfer creates no stream"
    );
}

async fn retention_is_set_by_put_and_shown_in_the_details(app: TestApp) {
    append_named(&app, "orders", "shop", PLACED, 1).await;
    let put = |stream: &str, body: Value| {
        app.as_admin(Method::PUT, &format!("/api/v1/streams/{stream}"))
            .json(&body)
            .send()
    };
    let response = put("orders", json!({"max_age": "7d", "max_events": 1000}))
        .await
        .unwrap();
    let (status, set) = answer(response).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        set["retention"],
        json!({"max_age": 604800.0, "max_events": 1000})
    );
    let details: Value = app
        .as_admin(Method::GET, "/api/v1/streams/orders")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["retention"]["max_events"], json!(1000));

    let cleared = put("orders", json!({})).await.unwrap();
    let (_, cleared) = answer(cleared).await;
    assert_eq!(
        cleared["retention"],
        json!({"max_age": null, "max_events": null})
    );

    let unknown = put("nosuch", json!({"max_events": 5})).await.unwrap();
    assert_error_prefix(unknown, StatusCode::NOT_FOUND, "Not Found - stream nosuch").await;
    for body in [
        json!({"max_events": 0}),
        json!({"max_age": "soon"}),
        json!([1]),
        json!({"keep": 1}),
    ] {
        let response = put("orders", body.clone()).await.unwrap();
        assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let secret = app
        .create_client("writer", &["stream:orders:produce"])
        .await;
    let forbidden = app
        .as_client("writer", &secret, Method::PUT, "/api/v1/streams/orders")
        .json(&json!({"max_events": 5}))
        .send()
        .await
        .unwrap();
    assert_error_prefix(forbidden, StatusCode::FORBIDDEN, "Forbidden - ").await;
}

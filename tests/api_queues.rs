//! The queues API over HTTP, each endpoint's success path, asserting its effect
//! on the queue (counts, what a later pop or receive sees), not only the status.
//! Every test runs once per storage backend (`sqlite::…`, `postgres::…`; see
//! `common::trials!`).

mod common;

use std::time::{Duration, Instant};

use common::{assert_error, ids_of, trials, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

trials! {
    each_backend {
        push_answers_201_with_an_id_and_the_body_comes_back_unchanged,
        body_comes_back_byte_for_byte_as_pushed,
        competing_consumers_never_receive_the_same_message: multi_thread(4),
        batch_push_creates_every_message_in_order,
        batch_with_an_invalid_element_creates_nothing,
        same_idempotency_key_returns_the_same_id_and_stores_one_message,
        delayed_message_is_not_receivable_before_its_delay,
        pop_returns_the_oldest_first_and_removes_them,
        pop_without_count_takes_one_message,
        received_messages_are_leased_and_ack_removes_them,
        nack_returns_the_message_at_once_with_attempt_counted,
        nack_with_delay_hides_the_message_until_the_delay_passes,
        extend_keeps_the_message_leased_past_its_first_lease,
        stale_receipt_is_reported_and_not_applied,
        ack_with_a_stale_and_the_current_receipt_of_one_message_acks_once,
        expired_lease_redelivers_with_attempt_counted,
        message_out_of_attempts_is_dead_lettered_and_redrive_resets_attempts,
        nack_of_the_last_attempt_dead_letters_the_message,
        long_poll_wakes_up_promptly_on_a_concurrent_push,
        long_poll_on_an_empty_queue_answers_empty_after_the_wait,
        long_poll_wakes_up_when_another_consumer_nacks,
        long_poll_takes_a_delayed_push_when_it_becomes_ready,
        deleting_a_queue_ends_its_long_polls_with_404,
        idempotency_key_is_forgotten_after_the_queue_window,
        receipt_of_another_queue_is_stale,
        deleting_a_queue_removes_it_and_its_messages,
        purge_removes_every_message_but_keeps_the_queue,
        list_shows_every_queue_with_its_counts,
        list_shows_a_client_only_the_queues_it_holds_a_grant_on,
        a_glob_grant_covers_the_names_it_matches_and_no_other,
        put_creates_a_queue_with_201_then_updates_it_with_200,
        queue_lease_setting_is_the_default_lease_of_receive,
        put_with_invalid_settings_is_400_and_changes_nothing,
        never_created_queue_is_404_for_every_call,
        peek_shows_the_oldest_ready_messages_and_changes_nothing,
        peek_limit_is_bounded_and_needs_the_consume_grant,
    }
}

fn receipt_of(message: &Value) -> String {
    message["receipt"]
        .as_str()
        .unwrap_or_else(|| panic!("no receipt in {message}"))
        .to_owned()
}

async fn push_answers_201_with_an_id_and_the_body_comes_back_unchanged(app: TestApp) {
    let body =
        json!({"order": 17, "items": [{"sku": "a-1", "qty": 2}], "note": "ünïcode", "ok": null});

    let response = app
        .as_admin(Method::POST, "/api/v1/queues/orders/messages")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    common::assert_json_conventions(response.headers());
    let answer: Value = response.json().await.unwrap();
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert!(!id.is_empty());
    assert_eq!(app.counts("orders").await, (1, 0, 0, 0));

    let popped = app.pop("orders", 1).await;
    assert_eq!(popped.len(), 1);
    assert_eq!(popped[0]["id"], id);
    assert_eq!(popped[0]["body"], body);
    assert_eq!(popped[0]["attempts"], 1);
    assert!(
        popped[0].get("receipt").is_none(),
        "pop hands out no receipt"
    );
    let enqueued_at = popped[0]["enqueued_at"].as_str().expect("enqueued_at");
    assert!(
        enqueued_at.len() >= 20 && enqueued_at.contains('T'),
        "enqueued_at is RFC 3339: {enqueued_at}"
    );
    assert_eq!(app.counts("orders").await, (0, 0, 0, 0));
}

async fn body_comes_back_byte_for_byte_as_pushed(app: TestApp) {
    let sent = r#"{"big":123456789012345678901234567890,"f":1.10,"s":"\u00e9"}"#;
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/exact/messages")
        .header("content-type", "application/json")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let popped = app
        .as_admin(Method::POST, "/api/v1/queues/exact/pop")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        popped.contains(&format!(r#""body":{sent}"#)),
        "the body was rewritten: sent {sent}, got {popped}"
    );
}

async fn competing_consumers_never_receive_the_same_message(app: TestApp) {
    let messages: Vec<Value> = (0..60).map(|n| json!(n)).collect();
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/shared/messages/batch")
        .json(&json!({ "messages": messages }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app.as_admin(
            Method::POST,
            "/api/v1/queues/shared/receive?count=10&lease=30",
        );
        consumers.spawn(async move { common::messages_of(request.send().await.unwrap()).await });
    }
    let mut received = Vec::new();
    while let Some(batch) = consumers.join_next().await {
        received.extend(ids_of(&batch.unwrap()));
    }
    let distinct: std::collections::HashSet<&String> = received.iter().collect();
    assert_eq!(distinct.len(), received.len(), "a message was leased twice");
    assert_eq!(
        received.len(),
        60,
        "8 consumers of 10 must drain 60 messages"
    );
    assert_eq!(app.counts("shared").await, (0, 60, 0, 0));
}

async fn batch_push_creates_every_message_in_order(app: TestApp) {
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/jobs/messages/batch")
        .json(&json!({"messages": [{"n": 1}, "two", 3]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer: Value = response.json().await.unwrap();
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(app.counts("jobs").await, (3, 0, 0, 0));

    let popped = app.pop("jobs", 10).await;
    assert_eq!(ids_of(&popped), ids);
    let bodies: Vec<&Value> = popped.iter().map(|m| &m["body"]).collect();
    assert_eq!(bodies, [&json!({"n": 1}), &json!("two"), &json!(3)]);
}

async fn batch_with_an_invalid_element_creates_nothing(app: TestApp) {
    app.push("jobs", json!("already there")).await;

    let malformed_element = app
        .as_admin(Method::POST, "/api/v1/queues/jobs/messages/batch")
        .header("content-type", "application/json")
        .body(r#"{"messages": [{"n": 1}, {"n": }, {"n": 3}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed_element.status(), StatusCode::BAD_REQUEST);

    let too_many: Vec<Value> = (0..1001).map(|n| json!(n)).collect();
    let over_limit = app
        .as_admin(Method::POST, "/api/v1/queues/jobs/messages/batch")
        .json(&json!({ "messages": too_many }))
        .send()
        .await
        .unwrap();
    assert_error(
        over_limit,
        StatusCode::BAD_REQUEST,
        "Bad Request - messages must hold at most 1000 messages",
    )
    .await;

    assert_eq!(app.counts("jobs").await, (1, 0, 0, 0));

    let to_new_queue = app
        .as_admin(Method::POST, "/api/v1/queues/fresh/messages/batch")
        .json(&json!({ "messages": (0..1001).collect::<Vec<u32>>() }))
        .send()
        .await
        .unwrap();
    assert_eq!(to_new_queue.status(), StatusCode::BAD_REQUEST);
    let fresh = app
        .as_admin(Method::GET, "/api/v1/queues/fresh")
        .send()
        .await
        .unwrap();
    assert_error(fresh, StatusCode::NOT_FOUND, "Not Found - queue fresh").await;
}

async fn same_idempotency_key_returns_the_same_id_and_stores_one_message(app: TestApp) {
    let push = |key: &'static str, body: Value| {
        app.as_admin(Method::POST, "/api/v1/queues/payments/messages")
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    let first = push("pay-1", json!({"amount": 10})).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_id = first.json::<Value>().await.unwrap()["id"].clone();

    let again = push("pay-1", json!({"amount": 10})).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first_id);
    assert_eq!(app.counts("payments").await, (1, 0, 0, 0));

    let other = push("pay-2", json!({"amount": 20})).await.unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert_ne!(other.json::<Value>().await.unwrap()["id"], first_id);
    assert_eq!(app.counts("payments").await, (2, 0, 0, 0));
}

async fn delayed_message_is_not_receivable_before_its_delay(app: TestApp) {
    let pushed_at = Instant::now();
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/later/messages")
        .header("Hopper-Delay", "0.6")
        .json(&json!("wake up"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"].clone();

    assert!(app.receive("later", "").await.is_empty());
    assert!(app.pop("later", 1).await.is_empty());
    assert_eq!(app.counts("later").await, (0, 0, 1, 0));

    let received = app.receive("later", "wait=5").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["id"], id);
    let elapsed = pushed_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(550),
        "received after {elapsed:?}, before its delay"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "received only after {elapsed:?}"
    );
}

async fn pop_returns_the_oldest_first_and_removes_them(app: TestApp) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.push("fifo", json!({ "n": n })).await);
    }

    let first = app.pop("fifo", 3).await;
    assert_eq!(ids_of(&first), ids[..3]);
    assert_eq!(app.counts("fifo").await, (2, 0, 0, 0));

    let one = app.pop("fifo", 1).await;
    assert_eq!(ids_of(&one), ids[3..4]);
    let rest = app.pop("fifo", 10).await;
    assert_eq!(ids_of(&rest), ids[4..]);
    assert!(app.pop("fifo", 10).await.is_empty());

    let default_count = app
        .as_admin(Method::POST, "/api/v1/queues/fifo/pop")
        .send()
        .await
        .unwrap();
    assert!(common::messages_of(default_count).await.is_empty());
}

async fn pop_without_count_takes_one_message(app: TestApp) {
    app.push("single", json!(1)).await;
    app.push("single", json!(2)).await;
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/single/pop")
        .send()
        .await
        .unwrap();
    let popped = common::messages_of(response).await;
    assert_eq!(popped.len(), 1);
    assert_eq!(popped[0]["body"], 1);
    assert_eq!(app.counts("single").await, (1, 0, 0, 0));
}

async fn received_messages_are_leased_and_ack_removes_them(app: TestApp) {
    let a = app.push("work", json!("a")).await;
    let b = app.push("work", json!("b")).await;

    let received = app.receive("work", "count=10&lease=30").await;
    assert_eq!(ids_of(&received), [a.clone(), b.clone()]);
    for message in &received {
        assert_eq!(message["attempts"], 1);
        assert!(message["enqueued_at"].is_string());
        receipt_of(message);
    }
    assert_eq!(received[0]["body"], "a");
    assert_eq!(app.counts("work").await, (0, 2, 0, 0));
    assert!(
        app.receive("work", "count=10").await.is_empty(),
        "leased messages are invisible"
    );

    let receipts: Vec<String> = received.iter().map(receipt_of).collect();
    let acked = app
        .settle("work", "ack", json!({ "receipts": receipts }))
        .await;
    assert_eq!(acked, json!({"acked": 2, "stale": []}));
    assert_eq!(app.counts("work").await, (0, 0, 0, 0));
    assert!(app.receive("work", "count=10").await.is_empty());

    let acked_again = app
        .settle("work", "ack", json!({ "receipts": receipts }))
        .await;
    assert_eq!(acked_again["acked"], 0);
    assert_eq!(acked_again["stale"], json!(receipts));
}

async fn nack_returns_the_message_at_once_with_attempt_counted(app: TestApp) {
    let id = app.push("retry", json!("x")).await;
    let received = app.receive("retry", "lease=30").await;
    assert_eq!(received[0]["attempts"], 1);

    let nacked = app
        .settle(
            "retry",
            "nack",
            json!({ "receipts": [receipt_of(&received[0])] }),
        )
        .await;
    assert_eq!(nacked, json!({"nacked": 1, "stale": []}));
    assert_eq!(app.counts("retry").await, (1, 0, 0, 0));

    let again = app.receive("retry", "").await;
    assert_eq!(ids_of(&again), [id]);
    assert_eq!(again[0]["attempts"], 2);
}

async fn nack_with_delay_hides_the_message_until_the_delay_passes(app: TestApp) {
    let id = app.push("retry", json!("x")).await;
    let received = app.receive("retry", "").await;

    let nacked_at = Instant::now();
    let nacked = app
        .settle(
            "retry",
            "nack",
            json!({ "receipts": [receipt_of(&received[0])], "delay": 0.6 }),
        )
        .await;
    assert_eq!(nacked["nacked"], 1);
    assert_eq!(app.counts("retry").await, (0, 0, 1, 0));
    assert!(app.receive("retry", "").await.is_empty());

    let again = app.receive("retry", "wait=5").await;
    let elapsed = nacked_at.elapsed();
    assert_eq!(ids_of(&again), [id]);
    assert_eq!(again[0]["attempts"], 2);
    assert!(
        elapsed >= Duration::from_millis(550),
        "redelivered after {elapsed:?}, before the nack delay"
    );
}

async fn extend_keeps_the_message_leased_past_its_first_lease(app: TestApp) {
    app.push("slow", json!("x")).await;
    let received = app.receive("slow", "lease=0.3").await;
    let receipt = receipt_of(&received[0]);

    let extended = app
        .settle(
            "slow",
            "extend",
            json!({ "receipts": [receipt], "lease": 10 }),
        )
        .await;
    assert_eq!(extended, json!({"extended": 1, "stale": []}));

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.receive("slow", "").await.is_empty(),
        "an extended lease must not expire at its first deadline"
    );
    assert_eq!(app.counts("slow").await, (0, 1, 0, 0));

    let acked = app
        .settle("slow", "ack", json!({ "receipts": [receipt] }))
        .await;
    assert_eq!(acked["acked"], 1);
    assert_eq!(app.counts("slow").await, (0, 0, 0, 0));
}

async fn stale_receipt_is_reported_and_not_applied(app: TestApp) {
    let id = app.push("contended", json!("x")).await;
    let first = app.receive("contended", "lease=0.2").await;
    let first_receipt = receipt_of(&first[0]);

    let second = app.receive("contended", "lease=30&wait=5").await;
    assert_eq!(ids_of(&second), [id]);
    let second_receipt = receipt_of(&second[0]);
    assert_ne!(first_receipt, second_receipt);

    let acked = app
        .settle("contended", "ack", json!({ "receipts": [first_receipt] }))
        .await;
    assert_eq!(acked, json!({"acked": 0, "stale": [first_receipt]}));
    assert_eq!(
        app.counts("contended").await,
        (0, 1, 0, 0),
        "a stale ack must leave the new lease alone"
    );

    let stale_settlements = [
        ("nack", json!({ "receipts": [first_receipt] })),
        ("extend", json!({ "receipts": [first_receipt], "lease": 1 })),
    ];
    for (verb, body) in stale_settlements {
        let settled = app.settle("contended", verb, body).await;
        assert_eq!(settled["stale"], json!([first_receipt]), "{verb}");
    }
    assert_eq!(app.counts("contended").await, (0, 1, 0, 0));

    let acked = app
        .settle("contended", "ack", json!({ "receipts": [second_receipt] }))
        .await;
    assert_eq!(acked, json!({"acked": 1, "stale": []}));
    assert_eq!(app.counts("contended").await, (0, 0, 0, 0));
}

async fn ack_with_a_stale_and_the_current_receipt_of_one_message_acks_once(app: TestApp) {
    let id = app.push("contended", json!("x")).await;
    let first = app.receive("contended", "lease=0.2").await;
    let stale = receipt_of(&first[0]);
    let second = app.receive("contended", "lease=30&wait=5").await;
    assert_eq!(ids_of(&second), [id]);
    let current = receipt_of(&second[0]);

    let acked = app
        .settle("contended", "ack", json!({ "receipts": [stale, current] }))
        .await;
    assert_eq!(acked, json!({"acked": 1, "stale": [stale]}));
    assert_eq!(app.counts("contended").await, (0, 0, 0, 0));
}

async fn expired_lease_redelivers_with_attempt_counted(app: TestApp) {
    let id = app.push("flaky", json!("x")).await;
    let leased_at = Instant::now();
    let first = app.receive("flaky", "lease=0.2").await;
    assert_eq!(first[0]["attempts"], 1);

    let second = app.receive("flaky", "wait=5").await;
    let elapsed = leased_at.elapsed();
    assert_eq!(ids_of(&second), [id]);
    assert_eq!(second[0]["attempts"], 2);
    assert!(
        elapsed >= Duration::from_millis(150),
        "redelivered after {elapsed:?}, before the lease expired"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "redelivered only after {elapsed:?}"
    );
}

async fn message_out_of_attempts_is_dead_lettered_and_redrive_resets_attempts(app: TestApp) {
    let (status, _) = app
        .configure("poison", json!({"max_attempts": 2, "lease": 0.2}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = app.push("poison", json!({"bad": true})).await;

    let first = app.receive("poison", "").await;
    assert_eq!(first[0]["attempts"], 1);
    let second = app.receive("poison", "wait=5").await;
    assert_eq!(ids_of(&second), std::slice::from_ref(&id));
    assert_eq!(second[0]["attempts"], 2);

    let third = app.receive("poison", "wait=0.5").await;
    assert!(
        third.is_empty(),
        "out of attempts, yet handed out: {third:?}"
    );
    assert_eq!(app.counts("poison").await, (0, 0, 0, 1));

    let response = app
        .as_admin(Method::GET, "/api/v1/queues/poison/dead")
        .send()
        .await
        .unwrap();
    let dead = common::messages_of(response).await;
    assert_eq!(ids_of(&dead), std::slice::from_ref(&id));
    assert_eq!(dead[0]["body"], json!({"bad": true}));
    assert_eq!(dead[0]["attempts"], 2);

    let response = app
        .as_admin(Method::POST, "/api/v1/queues/poison/dead/redrive")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"redriven": 1})
    );
    assert_eq!(app.counts("poison").await, (1, 0, 0, 0));
    let response = app
        .as_admin(Method::GET, "/api/v1/queues/poison/dead")
        .send()
        .await
        .unwrap();
    assert!(common::messages_of(response).await.is_empty());

    let redriven = app.receive("poison", "").await;
    assert_eq!(ids_of(&redriven), [id]);
    assert_eq!(redriven[0]["attempts"], 1);
}

async fn nack_of_the_last_attempt_dead_letters_the_message(app: TestApp) {
    app.configure("poison", json!({"max_attempts": 1})).await;
    let id = app.push("poison", json!("x")).await;
    let received = app.receive("poison", "").await;
    let nacked = app
        .settle(
            "poison",
            "nack",
            json!({ "receipts": [receipt_of(&received[0])] }),
        )
        .await;
    assert_eq!(nacked["nacked"], 1);
    assert_eq!(app.counts("poison").await, (0, 0, 0, 1));
    assert!(app.receive("poison", "").await.is_empty());
    let response = app
        .as_admin(Method::GET, "/api/v1/queues/poison/dead")
        .send()
        .await
        .unwrap();
    assert_eq!(ids_of(&common::messages_of(response).await), [id]);
}

async fn long_poll_wakes_up_promptly_on_a_concurrent_push(app: TestApp) {
    app.configure("events", json!({})).await;
    let started = Instant::now();
    let waiting = app.receive("events", "wait=10");
    let pushing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.push("events", json!("ping")).await
    };
    let (received, id) = tokio::join!(waiting, pushing);
    let elapsed = started.elapsed();
    assert_eq!(ids_of(&received), [id]);
    assert!(
        elapsed < Duration::from_secs(2),
        "the long-poll answered after {elapsed:?}, not at the push"
    );
}

async fn long_poll_on_an_empty_queue_answers_empty_after_the_wait(app: TestApp) {
    app.configure("quiet", json!({})).await;
    let started = Instant::now();
    let received = app.receive("quiet", "wait=0.5").await;
    let elapsed = started.elapsed();
    assert!(received.is_empty());
    assert!(
        elapsed >= Duration::from_millis(450),
        "answered after {elapsed:?}, before the wait"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}, long after the wait"
    );
}

async fn long_poll_wakes_up_when_another_consumer_nacks(app: TestApp) {
    let id = app.push("events", json!("x")).await;
    let leased = app.receive("events", "lease=30").await;
    let started = Instant::now();
    let waiting = app.receive("events", "wait=10");
    let nacking = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.settle(
            "events",
            "nack",
            json!({ "receipts": [receipt_of(&leased[0])] }),
        )
        .await
    };
    let (received, _) = tokio::join!(waiting, nacking);
    assert_eq!(ids_of(&received), [id]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the long-poll answered after {:?}, not at the nack",
        started.elapsed()
    );
}

async fn long_poll_takes_a_delayed_push_when_it_becomes_ready(app: TestApp) {
    app.configure("events", json!({})).await;
    let started = Instant::now();
    let waiting = app.receive("events", "wait=10");
    let pushing = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = app
            .as_admin(Method::POST, "/api/v1/queues/events/messages")
            .header("Hopper-Delay", "300ms")
            .json(&json!("later"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    };
    let (received, ()) = tokio::join!(waiting, pushing);
    let elapsed = started.elapsed();
    assert_eq!(received.len(), 1);
    assert!(
        elapsed >= Duration::from_millis(450),
        "handed out after {elapsed:?}, before its delay"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "handed out after {elapsed:?}, long after its delay"
    );
}

async fn deleting_a_queue_ends_its_long_polls_with_404(app: TestApp) {
    app.configure("doomed", json!({})).await;
    let started = Instant::now();
    let waiting = app
        .as_admin(Method::POST, "/api/v1/queues/doomed/receive?wait=10")
        .send();
    let deleting = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.as_admin(Method::DELETE, "/api/v1/queues/doomed")
            .send()
            .await
            .unwrap()
            .status()
    };
    let (waited, deleted) = tokio::join!(waiting, deleting);
    assert_eq!(deleted, StatusCode::OK);
    assert_error(
        waited.unwrap(),
        StatusCode::NOT_FOUND,
        "Not Found - queue doomed",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the long-poll outlived its queue by {:?}",
        started.elapsed()
    );
}

async fn idempotency_key_is_forgotten_after_the_queue_window(app: TestApp) {
    app.configure("payments", json!({"idempotency_window": 1}))
        .await;
    let push = || {
        app.as_admin(Method::POST, "/api/v1/queues/payments/messages")
            .header("Idempotency-Key", "pay-1")
            .json(&json!({"amount": 10}))
            .send()
    };
    let first = push().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_id = first.json::<Value>().await.unwrap()["id"].clone();
    assert_eq!(push().await.unwrap().status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = push().await.unwrap();
    assert_eq!(later.status(), StatusCode::CREATED);
    assert_ne!(later.json::<Value>().await.unwrap()["id"], first_id);
    assert_eq!(app.counts("payments").await, (2, 0, 0, 0));
}

async fn receipt_of_another_queue_is_stale(app: TestApp) {
    app.push("left", json!("l")).await;
    app.push("right", json!("r")).await;
    let left = app.receive("left", "").await;
    let settled = app
        .settle(
            "right",
            "ack",
            json!({ "receipts": [receipt_of(&left[0])] }),
        )
        .await;
    assert_eq!(
        settled,
        json!({"acked": 0, "stale": [receipt_of(&left[0])]})
    );
    assert_eq!(app.counts("left").await, (0, 1, 0, 0));
    assert_eq!(app.counts("right").await, (1, 0, 0, 0));
}

async fn deleting_a_queue_removes_it_and_its_messages(app: TestApp) {
    app.push("doomed", json!(1)).await;
    app.push("doomed", json!(2)).await;

    let response = app
        .as_admin(Method::DELETE, "/api/v1/queues/doomed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"name": "doomed", "deleted_messages": 2})
    );

    let response = app
        .as_admin(Method::GET, "/api/v1/queues/doomed")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "Not Found - queue doomed").await;
    let response = app
        .as_admin(Method::POST, "/api/v1/queues/doomed/pop")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "Not Found - queue doomed").await;

    app.push("doomed", json!(3)).await;
    let popped = app.pop("doomed", 10).await;
    assert_eq!(popped.len(), 1, "a re-created queue starts empty");
    assert_eq!(popped[0]["body"], 3);
}

async fn purge_removes_every_message_but_keeps_the_queue(app: TestApp) {
    app.configure("full", json!({"max_attempts": 7})).await;
    for n in 0..3 {
        app.push("full", json!(n)).await;
    }
    app.receive("full", "").await;
    assert_eq!(app.counts("full").await, (2, 1, 0, 0));

    let response = app
        .as_admin(Method::POST, "/api/v1/queues/full/purge")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"purged": 3})
    );

    assert_eq!(app.counts("full").await, (0, 0, 0, 0));
    assert_eq!(app.queue_info("full").await["settings"]["max_attempts"], 7);
    assert!(app.pop("full", 10).await.is_empty());
}

async fn list_shows_every_queue_with_its_counts(app: TestApp) {
    app.push("beta", json!(1)).await;
    app.push("beta", json!(2)).await;
    app.push("alpha", json!(1)).await;
    app.configure("gamma", json!({})).await;
    app.receive("beta", "").await;

    let response = app
        .as_admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let queues = body["queues"].as_array().expect("queues");
    let summary: Vec<(&str, u64, u64)> = queues
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap(),
                q["ready"].as_u64().unwrap(),
                q["leased"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [("alpha", 1, 0), ("beta", 1, 1), ("gamma", 0, 0)]);
    for queue in queues {
        assert!(queue["settings"]["lease"].is_number(), "{queue}");
        assert_eq!(queue["dead"], 0);
        assert_eq!(queue["delayed"], 0);
    }
}

async fn list_shows_a_client_only_the_queues_it_holds_a_grant_on(app: TestApp) {
    app.push("orders", json!(1)).await;
    app.push("secrets", json!(1)).await;
    let secret = app.create_client("shop", &["queue:orders:produce"]).await;
    let response = app
        .as_client("shop", &secret, Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let names: Vec<&str> = body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);
}

/// `queue:orders-*:produce`: pushes to `orders-eu` and `orders-us`, 403 on `billing`
/// and on `orders` (the `-` is part of the pattern), and no receive anywhere.
async fn a_glob_grant_covers_the_names_it_matches_and_no_other(app: TestApp) {
    let secret = app.create_client("shop", &["queue:orders-*:produce"]).await;
    let push = |queue: &str| {
        app.as_client(
            "shop",
            &secret,
            Method::POST,
            &format!("/api/v1/queues/{queue}/messages"),
        )
        .json(&json!({"n": 1}))
        .send()
    };
    for queue in ["orders-eu", "orders-us"] {
        assert_eq!(
            push(queue).await.unwrap().status(),
            StatusCode::CREATED,
            "{queue}"
        );
    }
    for queue in ["billing", "orders"] {
        assert_error(
            push(queue).await.unwrap(),
            StatusCode::FORBIDDEN,
            &format!("Forbidden - needs grant queue:{queue}:produce"),
        )
        .await;
    }
    let receive = app
        .as_client(
            "shop",
            &secret,
            Method::POST,
            "/api/v1/queues/orders-eu/receive",
        )
        .send()
        .await
        .unwrap();
    assert_error(
        receive,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:orders-eu:consume",
    )
    .await;
    assert_eq!(app.counts("orders-eu").await, (1, 0, 0, 0));
    assert_eq!(app.counts("orders-us").await, (1, 0, 0, 0));
}

async fn put_creates_a_queue_with_201_then_updates_it_with_200(app: TestApp) {
    let (status, created) = app
        .configure(
            "tuned",
            json!({"lease": 5, "max_attempts": 3, "retention": "2h", "idempotency_window": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["name"], "tuned");
    assert_eq!(
        created["settings"],
        json!({"lease": 5.0, "max_attempts": 3, "retention": 7200.0, "idempotency_window": 60.0,
               "delivery": null, "ordering": "any", "dead_letter_queue": null, "delay": 0.0,
               "wait": 0.0, "content_deduplication": false})
    );
    assert_eq!(app.counts("tuned").await, (0, 0, 0, 0));

    // The newer settings are set and shown the same way.
    let (status, grouped) = app
        .configure(
            "tuned",
            json!({"ordering": "group", "dead_letter_queue": "tuned-dead", "delay": "1.5s",
                   "wait": 20, "content_deduplication": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for (key, value) in [
        ("ordering", json!("group")),
        ("dead_letter_queue", json!("tuned-dead")),
        ("delay", json!(1.5)),
        ("wait", json!(20.0)),
        ("content_deduplication", json!(true)),
    ] {
        assert_eq!(grouped["settings"][key], value, "{key}");
    }
    let (status, _) = app.configure("tuned", json!({"wait": 61})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "wait is at most 60 s");
    let (status, _) = app.configure("tuned", json!({"ordering": "random"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, reset) = app
        .configure("tuned", json!({"ordering": "any", "dead_letter_queue": null, "delay": 0, "wait": 0, "content_deduplication": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reset["settings"]["dead_letter_queue"], Value::Null);

    let (status, updated) = app.configure("tuned", json!({"max_attempts": 4})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["settings"]["max_attempts"], 4);
    assert_eq!(
        updated["settings"]["lease"], 5.0,
        "absent fields keep their value"
    );
    assert_eq!(updated["settings"]["retention"], 7200.0);

    let (status, _) = app.configure("tuned", json!({"retention": null})).await;
    assert_eq!(status, StatusCode::OK);
    let info = app.queue_info("tuned").await;
    assert_eq!(info["settings"]["retention"], Value::Null);
    assert_eq!(info["settings"]["max_attempts"], 4);
}

async fn queue_lease_setting_is_the_default_lease_of_receive(app: TestApp) {
    app.configure("short", json!({"lease": "200ms"})).await;
    let id = app.push("short", json!("x")).await;
    app.receive("short", "").await;
    let started = Instant::now();
    let again = app.receive("short", "wait=5").await;
    assert_eq!(ids_of(&again), [id]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the queue's 200 ms lease was not applied"
    );
}

async fn put_with_invalid_settings_is_400_and_changes_nothing(app: TestApp) {
    let cases = [
        (
            json!({"max_attempts": 0}),
            "Bad Request - max_attempts must be between 1 and 1000",
        ),
        (
            json!({"max_attempts": 1001}),
            "Bad Request - max_attempts must be between 1 and 1000",
        ),
        (
            json!({"lease": 0.01}),
            "Bad Request - lease must be between 0.1 and 43200 seconds",
        ),
        (
            json!({"lease": 86400}),
            "Bad Request - lease must be between 0.1 and 43200 seconds",
        ),
    ];
    for (settings, text) in cases {
        let response = app
            .as_admin(Method::PUT, "/api/v1/queues/strict")
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, text).await;
    }
    for settings in [
        json!({"leese": 5}),
        json!({"lease": -1}),
        json!({"max_attempts": "many"}),
    ] {
        let response = app
            .as_admin(Method::PUT, "/api/v1/queues/strict")
            .json(&settings)
            .send()
            .await
            .unwrap();
        common::assert_error_prefix(response, StatusCode::BAD_REQUEST, "Bad Request - ").await;
    }
    let response = app
        .as_admin(Method::GET, "/api/v1/queues/strict")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "Not Found - queue strict").await;

    app.configure("strict", json!({"max_attempts": 5})).await;
    let response = app
        .as_admin(Method::PUT, "/api/v1/queues/strict")
        .json(&json!({"max_attempts": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.queue_info("strict").await["settings"]["max_attempts"],
        5
    );
}

async fn never_created_queue_is_404_for_every_call(app: TestApp) {
    let receipts = json!({"receipts": ["1.0000000000000001"]});
    let calls: [(Method, &str, Option<Value>); 12] = [
        (Method::GET, "", None),
        (Method::GET, "/messages", None),
        (Method::POST, "/receive", None),
        (Method::POST, "/receive?wait=1", None),
        (Method::POST, "/pop", None),
        (Method::POST, "/ack", Some(receipts.clone())),
        (Method::POST, "/nack", Some(receipts.clone())),
        (
            Method::POST,
            "/extend",
            Some(json!({"receipts": ["1.0000000000000001"], "lease": 5})),
        ),
        (Method::POST, "/purge", None),
        (Method::DELETE, "", None),
        (Method::GET, "/dead", None),
        (Method::POST, "/dead/redrive", None),
    ];
    for (method, suffix, body) in calls {
        let mut request = app.as_admin(method, &format!("/api/v1/queues/ghost{suffix}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_error(response, StatusCode::NOT_FOUND, "Not Found - queue ghost").await;
    }
    let response = app
        .as_admin(Method::GET, "/api/v1/queues")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"queues": []}),
        "none of those calls may create the queue"
    );
}

/// `GET /api/v1/queues/{queue}/messages?<query>` as the admin; asserts 200, returns the messages.
async fn peek(app: &TestApp, queue: &str, query: &str) -> Vec<Value> {
    let response = app
        .as_admin(
            Method::GET,
            &format!("/api/v1/queues/{queue}/messages?{query}"),
        )
        .send()
        .await
        .unwrap();
    common::assert_json_conventions(response.headers());
    common::messages_of(response).await
}

async fn peek_shows_the_oldest_ready_messages_and_changes_nothing(app: TestApp) {
    let leased = app.push("look", json!({"n": 0})).await;
    let received = app.receive("look", "lease=30").await;
    assert_eq!(ids_of(&received), [leased]);
    let nacked = app.push("look", json!({"n": 1})).await;
    let receipt = receipt_of(&app.receive("look", "lease=30").await[0]);
    app.settle("look", "nack", json!({ "receipts": [receipt] }))
        .await;
    let ready: Vec<String> = [
        nacked,
        app.push("look", json!({"n": 2})).await,
        app.push("look", json!({"n": 3})).await,
    ]
    .into();
    let delayed = app
        .as_admin(Method::POST, "/api/v1/queues/look/messages")
        .header("Hopper-Delay", "1h")
        .json(&json!({"n": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(delayed.status(), StatusCode::CREATED);
    assert_eq!(app.counts("look").await, (3, 1, 1, 0));

    let peeked = peek(&app, "look", "").await;
    assert_eq!(ids_of(&peeked), ready, "ready ones only, oldest first");
    assert_eq!(peeked[0]["body"], json!({"n": 1}));
    assert_eq!(
        peeked[0]["attempts"], 1,
        "the nacked one was handed out once"
    );
    assert_eq!(peeked[1]["attempts"], 0, "never handed out");
    for message in &peeked {
        assert!(message.get("receipt").is_none(), "a peek leases nothing");
        assert!(message["enqueued_at"].as_str().is_some());
    }
    assert_eq!(ids_of(&peek(&app, "look", "limit=2").await), ready[..2]);
    assert_eq!(ids_of(&peek(&app, "look", "limit=100").await), ready);
    assert_eq!(
        app.counts("look").await,
        (3, 1, 1, 0),
        "a peek leases nothing"
    );

    let received = app.receive("look", "count=10").await;
    assert_eq!(ids_of(&received), ready, "peeked messages stay ready");
    let attempts: Vec<&Value> = received.iter().map(|m| &m["attempts"]).collect();
    assert_eq!(
        attempts,
        [&json!(2), &json!(1), &json!(1)],
        "a peek counts no attempt"
    );
    assert!(peek(&app, "look", "").await.is_empty());
}

async fn peek_limit_is_bounded_and_needs_the_consume_grant(app: TestApp) {
    app.push("look", json!("x")).await;
    for limit in ["0", "101", "ten"] {
        let response = app
            .as_admin(
                Method::GET,
                &format!("/api/v1/queues/look/messages?limit={limit}"),
            )
            .send()
            .await
            .unwrap();
        assert_error(
            response,
            StatusCode::BAD_REQUEST,
            "Bad Request - limit must be between 1 and 100",
        )
        .await;
    }
    let secret = app.create_client("producer", &["queue:look:produce"]).await;
    let response = app
        .as_client(
            "producer",
            &secret,
            Method::GET,
            "/api/v1/queues/look/messages",
        )
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "Forbidden - needs grant queue:look:consume",
    )
    .await;
    let secret = app.create_client("reader", &["queue:look:consume"]).await;
    let response = app
        .as_client(
            "reader",
            &secret,
            Method::GET,
            "/api/v1/queues/look/messages",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(common::messages_of(response).await.len(), 1);
    assert_eq!(app.counts("look").await, (1, 0, 0, 0));
}

//! The `Store` trait's contract, written once and run against every backend
//! (`sqlite::…`, `postgres::…`; see `common::trials!`): push, lease and settle
//! semantics, FIFO order, idempotency, pop, counts, dead letters, queue settings,
//! message groups, tasks and clients, and rows corrupted behind the store's back,
//! which must be errors, never panics or wrong answers. Each test opens its own
//! isolated store with `hopper::store::open`.

mod common;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use common::{trials, Backend, Fixture, IsolatedStore};
use hopper::domain::clock::now_millis;
use hopper::domain::settings::Ordering;
use hopper::domain::{AccessKeyId, AwsKeyRecord};
use hopper::domain::{ClientId, Grant, NewMessage, QueueName, QueueSettings, SettingsPatch};
use hopper::domain::{
    ClientRecord, Message, MessageId, PushOutcome, PushRequest, QueueCounts, Receipt, Revocation,
    Settled, Settlement, Store, StoreError, Upsert,
};
use hopper::domain::{
    NewTask, TaskCounts, TaskCreated, TaskFinish, TaskFinished, TaskId, TaskRecord, TaskStatus,
};

trials! {
    each_backend {
        ack_removes_a_leased_message_and_nack_returns_it_with_attempt_counted,
        receipt_from_an_earlier_lease_is_stale,
        current_and_stale_receipts_of_one_message_are_told_apart,
        receipt_given_twice_in_one_ack_is_applied_once,
        receipt_still_settles_after_its_lease_expired_if_nobody_took_the_message,
        messages_are_handed_out_oldest_first,
        same_idempotency_key_makes_a_second_push_a_duplicate,
        pop_removes_the_oldest_ready_messages_without_a_receipt,
        delayed_push_becomes_ready_after_its_delay,
        counts_tell_ready_leased_delayed_and_dead_apart,
        message_out_of_attempts_is_dead_lettered_and_redrive_resets_attempts,
        update_settings_creates_then_updates_the_queue,
        concurrent_settings_updates_compose,
        concurrent_pushes_each_get_the_ids_of_their_own_messages,
        one_push_of_many_bodies_stores_every_one_in_order,
        every_queue_of_many_is_listed,
        sweep_trims_streams_by_count_and_by_age,
        stream_owner_offsets_and_missing_events,
        purge_empties_a_queue_and_delete_removes_it,
        unknown_queue_is_not_found_and_not_created,
        peek_reads_the_ready_messages_a_receive_would_take_and_writes_nothing,
        clients_are_created_listed_and_deleted,
        client_grants_and_secrets_are_replaced_and_announced,
        aws_keys_are_stored_for_existing_clients_and_go_with_them,
        task_goes_from_pending_to_running_to_succeeded_and_its_message_is_acked,
        stale_or_wrong_receipt_finishes_no_task,
        retried_task_stays_pending_until_out_of_attempts_then_fails,
        failed_task_keeps_its_error_and_its_message_is_acked,
        repeated_task_create_finds_the_first_task_and_a_push_key_is_taken,
        sweep_drops_finished_tasks_past_their_time_and_keeps_the_others,
        grouped_queue_hands_out_one_message_per_group_in_order,
        group_moves_on_when_its_head_is_dead_lettered,
        group_and_metadata_and_first_receive_are_kept,
        dead_letters_are_removed_by_id,
        every_queue_settings_are_listed_without_counts,
        push_without_a_delay_takes_the_queue_delay,
        acking_a_group_head_wakes_the_queue_waiters,
        keyed_push_keeps_groups_and_metadata_and_takes_the_queue_delay,
        group_backlog_behind_a_leased_head_hides_no_other_group,
        group_moves_on_when_retention_drops_its_head,
        redriven_dead_letter_heads_its_group_again,
        concurrent_option_updates_compose,
    }
    sql_backend {
        unreadable_delivery_setting_is_an_error_and_is_not_overwritten,
        invalid_task_ids_in_stored_rows_are_errors,
        unknown_task_state_is_an_error,
        task_column_of_another_type_is_an_error,
    }
    redis_backend {
        unreadable_delivery_setting_in_redis_is_an_error_and_is_not_overwritten,
        unreadable_task_in_redis_is_an_error,
        invalid_task_id_on_a_redis_message_loses_nothing,
        redis_writes_wait_for_replicas_and_durability_is_read_from_the_server,
        unreadable_options_in_redis_are_an_error_and_are_not_overwritten,
    }
    redis_server {
        redis_over_tls_trusts_the_ca_of_ca_file,
    }
}

/// An open store of the backend under test; dereferences to `dyn Store`.
struct TestStore {
    store: Arc<dyn Store>,
    isolated: IsolatedStore,
}

impl Fixture for TestStore {
    async fn start(backend: Backend) -> Self {
        let isolated = backend.isolated_store();
        let store = hopper::store::open(&isolated.url)
            .await
            .expect("cannot open the test store");
        TestStore { store, isolated }
    }
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        self.store.as_ref()
    }
}

const LONG_LEASE: Option<Duration> = Some(Duration::from_secs(30));
/// The shortest lease the API allows; tests wait [`PAST_SHORT_LEASE`] for it to expire.
const SHORT_LEASE: Duration = Duration::from_millis(100);
const PAST_SHORT_LEASE: Duration = Duration::from_millis(150);

fn queue(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

fn push_request(queue: &QueueName, bodies: &[&str]) -> PushRequest {
    PushRequest {
        queue: queue.clone(),
        messages: bodies.iter().map(|b| (*b).into()).collect(),
        delay: Some(Duration::ZERO),
        idempotency_key: None,
        defaults: QueueSettings::default(),
    }
}

/// Pushes `bodies` (JSON texts) without delay or key; returns the new ids.
async fn push(store: &TestStore, queue: &QueueName, bodies: &[&str]) -> Vec<MessageId> {
    match store.push(push_request(queue, bodies)).await.unwrap() {
        PushOutcome::Created(ids) => {
            assert_eq!(ids.len(), bodies.len(), "one id per body");
            ids
        }
        other => panic!("a push without a key created nothing: {other:?}"),
    }
}

/// Leases up to `count` messages.
async fn receive(
    store: &TestStore,
    queue: &QueueName,
    count: u32,
    lease: Option<Duration>,
) -> Vec<Message> {
    store.receive(queue, count, lease).await.unwrap().messages
}

async fn settle(
    store: &TestStore,
    queue: &QueueName,
    receipts: &[Receipt],
    settlement: Settlement,
) -> Settled {
    store.settle(queue, receipts, settlement).await.unwrap()
}

async fn counts(store: &TestStore, queue: &QueueName) -> QueueCounts {
    store.queue_info(queue).await.unwrap().counts
}

fn counted(ready: u64, leased: u64, delayed: u64, dead: u64) -> QueueCounts {
    QueueCounts {
        ready,
        leased,
        delayed,
        dead,
    }
}

fn ids_of(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

fn receipt_of(message: &Message) -> Receipt {
    message
        .receipt
        .unwrap_or_else(|| panic!("a received message has a receipt: {message:?}"))
}

const NACK_NOW: Settlement = Settlement::Nack {
    delay: Duration::ZERO,
};

async fn ack_removes_a_leased_message_and_nack_returns_it_with_attempt_counted(store: TestStore) {
    let q = queue("work");
    let ids = push(&store, &q, &[r#""a""#, r#"{"b": [1, 2]}"#]).await;

    let received = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&received), ids);
    assert_eq!(received[0].body, r#""a""#);
    assert_eq!(received[1].body, r#"{"b": [1, 2]}"#);
    for message in &received {
        assert_eq!(message.attempts, 1);
        assert_eq!(receipt_of(message).message_id, message.id);
    }
    assert_eq!(counts(&store, &q).await, counted(0, 2, 0, 0));
    let nothing = store.receive(&q, 10, LONG_LEASE).await.unwrap();
    assert!(nothing.messages.is_empty(), "leased messages are invisible");
    assert!(
        nothing.next_ready_in.is_some_and(
            |ahead| ahead > Duration::ZERO && ahead <= LONG_LEASE.unwrap_or(Duration::MAX)
        ),
        "an empty receive tells when a lease ends: {:?}",
        nothing.next_ready_in
    );

    let (a, b) = (receipt_of(&received[0]), receipt_of(&received[1]));
    let acked = settle(&store, &q, &[a], Settlement::Ack).await;
    assert_eq!((acked.applied, acked.stale), (vec![a], vec![]));
    assert_eq!(counts(&store, &q).await, counted(0, 1, 0, 0));

    let nacked = settle(&store, &q, &[b], NACK_NOW).await;
    assert_eq!((nacked.applied, nacked.stale), (vec![b], vec![]));
    assert_eq!(counts(&store, &q).await, counted(1, 0, 0, 0));

    let again = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&again), [ids[1]]);
    assert_eq!(again[0].attempts, 2);
    assert_ne!(receipt_of(&again[0]), b, "a new lease has a new receipt");

    let acked_twice = settle(&store, &q, &[a], Settlement::Ack).await;
    assert_eq!(
        (acked_twice.applied, acked_twice.stale),
        (vec![], vec![a]),
        "the receipt of an acked message is stale"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 1, 0, 0));
}

async fn receipt_from_an_earlier_lease_is_stale(store: TestStore) {
    let q = queue("contended");
    let ids = push(&store, &q, &["1"]).await;
    let first = receive(&store, &q, 1, Some(SHORT_LEASE)).await;
    let old = receipt_of(&first[0]);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let second = receive(&store, &q, 1, LONG_LEASE).await;
    assert_eq!(ids_of(&second), ids, "an expired lease is handed out again");
    assert_eq!(second[0].attempts, 2);
    let current = receipt_of(&second[0]);
    assert_ne!(old, current);

    let settlements = [
        Settlement::Ack,
        NACK_NOW,
        Settlement::Extend {
            lease: Duration::from_secs(1),
        },
    ];
    for settlement in settlements {
        let settled = settle(&store, &q, &[old], settlement).await;
        assert_eq!(
            (settled.applied, settled.stale),
            (vec![], vec![old]),
            "{settlement:?} with the earlier lease's receipt"
        );
        assert_eq!(
            counts(&store, &q).await,
            counted(0, 1, 0, 0),
            "{settlement:?} with a stale receipt changed the current lease"
        );
    }

    let acked = settle(&store, &q, &[current], Settlement::Ack).await;
    assert_eq!((acked.applied, acked.stale), (vec![current], vec![]));
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 0));
}

async fn current_and_stale_receipts_of_one_message_are_told_apart(store: TestStore) {
    let q = queue("mixed");
    push(&store, &q, &["1"]).await;
    let first = receive(&store, &q, 1, Some(SHORT_LEASE)).await;
    let old = receipt_of(&first[0]);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let current = receipt_of(&receive(&store, &q, 1, LONG_LEASE).await[0]);

    let extended = settle(
        &store,
        &q,
        &[old, current],
        Settlement::Extend {
            lease: Duration::from_secs(60),
        },
    )
    .await;
    assert_eq!(
        (extended.applied, extended.stale),
        (vec![current], vec![old]),
        "extend with the earlier and the current receipt of one message"
    );

    let acked = settle(&store, &q, &[old, current], Settlement::Ack).await;
    assert_eq!(
        (acked.applied, acked.stale),
        (vec![current], vec![old]),
        "ack with the earlier and the current receipt of one message"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 0));
}

async fn receipt_given_twice_in_one_ack_is_applied_once(store: TestStore) {
    let q = queue("twice");
    push(&store, &q, &["1"]).await;
    let receipt = receipt_of(&receive(&store, &q, 1, LONG_LEASE).await[0]);
    let acked = settle(&store, &q, &[receipt, receipt], Settlement::Ack).await;
    assert_eq!(
        (acked.applied, acked.stale),
        (vec![receipt], vec![receipt]),
        "one message is acked once: the second copy of its receipt finds it gone"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 0));
}

async fn receipt_still_settles_after_its_lease_expired_if_nobody_took_the_message(
    store: TestStore,
) {
    let q = queue("late");
    push(&store, &q, &["1"]).await;
    let received = receive(&store, &q, 1, Some(SHORT_LEASE)).await;
    let receipt = receipt_of(&received[0]);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert_eq!(
        counts(&store, &q).await,
        counted(1, 0, 0, 0),
        "an expired lease counts as ready"
    );

    let acked = settle(&store, &q, &[receipt], Settlement::Ack).await;
    assert_eq!(
        (acked.applied, acked.stale),
        (vec![receipt], vec![]),
        "only a new lease makes a receipt stale, not expiry alone"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 0));
    assert!(receive(&store, &q, 10, LONG_LEASE).await.is_empty());
}

async fn messages_are_handed_out_oldest_first(store: TestStore) {
    let q = queue("fifo");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.extend(push(&store, &q, &[&n.to_string()]).await);
    }
    ids.extend(push(&store, &q, &["3", "4", "5"]).await);
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids increase in push order: {ids:?}"
    );

    let received = receive(&store, &q, 2, LONG_LEASE).await;
    assert_eq!(ids_of(&received), ids[..2]);
    let popped = store.pop(&q, 2).await.unwrap();
    assert_eq!(ids_of(&popped), ids[2..4]);
    let rest = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&rest), ids[4..]);
    let bodies: Vec<&str> = rest.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["4", "5"]);

    let nacked = settle(&store, &q, &[receipt_of(&received[1])], NACK_NOW).await;
    assert_eq!(nacked.applied.len(), 1);
    let nacked = settle(&store, &q, &[receipt_of(&received[0])], NACK_NOW).await;
    assert_eq!(nacked.applied.len(), 1);
    let again = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(
        ids_of(&again),
        ids[..2],
        "returned messages come back oldest first, whatever the order of the nacks"
    );
}

async fn same_idempotency_key_makes_a_second_push_a_duplicate(store: TestStore) {
    let q = queue("payments");
    let keyed = |queue: &QueueName, key: &str, body: &str| PushRequest {
        idempotency_key: Some(key.to_owned()),
        ..push_request(queue, &[body])
    };

    let first = store.push(keyed(&q, "pay-1", "10")).await.unwrap();
    let PushOutcome::Created(first_ids) = first else {
        panic!("the first push with a key creates a message: {first:?}");
    };
    assert_eq!(first_ids.len(), 1);
    let again = store.push(keyed(&q, "pay-1", "10")).await.unwrap();
    assert_eq!(again, PushOutcome::Duplicate(first_ids[0]));
    assert_eq!(counts(&store, &q).await, counted(1, 0, 0, 0));

    let other = store.push(keyed(&q, "pay-2", "20")).await.unwrap();
    assert!(
        matches!(&other, PushOutcome::Created(ids) if ids.len() == 1 && ids[0] != first_ids[0]),
        "another key creates another message: {other:?}"
    );
    let elsewhere = store.push(keyed(&queue("refunds"), "pay-1", "10")).await;
    assert!(
        matches!(elsewhere, Ok(PushOutcome::Created(_))),
        "keys are per queue: {elsewhere:?}"
    );
    assert_eq!(counts(&store, &q).await, counted(2, 0, 0, 0));

    let popped = store.pop(&q, 10).await.unwrap();
    assert_eq!(popped[0].id, first_ids[0]);
    assert_eq!(popped[0].body, "10");
}

async fn pop_removes_the_oldest_ready_messages_without_a_receipt(store: TestStore) {
    let q = queue("popped");
    let before = now_millis();
    let ids = push(&store, &q, &[r#"{"n":1}"#, r#""two""#, "3"]).await;

    let popped = store.pop(&q, 2).await.unwrap();
    assert_eq!(ids_of(&popped), ids[..2]);
    assert_eq!(popped[0].body, r#"{"n":1}"#);
    assert_eq!(popped[1].body, r#""two""#);
    for message in &popped {
        assert!(message.receipt.is_none(), "pop hands out no receipt");
        assert_eq!(message.attempts, 1);
        assert!(
            (before..=now_millis()).contains(&message.enqueued_at),
            "enqueued_at {} is the push time",
            message.enqueued_at
        );
    }
    assert_eq!(counts(&store, &q).await, counted(1, 0, 0, 0));

    assert_eq!(ids_of(&store.pop(&q, 10).await.unwrap()), ids[2..]);
    assert!(store.pop(&q, 10).await.unwrap().is_empty());

    push(&store, &q, &["4"]).await;
    receive(&store, &q, 1, LONG_LEASE).await;
    assert!(
        store.pop(&q, 10).await.unwrap().is_empty(),
        "pop leaves leased messages alone"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 1, 0, 0));
}

async fn delayed_push_becomes_ready_after_its_delay(store: TestStore) {
    let q = queue("later");
    let delayed = PushRequest {
        delay: Some(Duration::from_millis(200)),
        ..push_request(&q, &["1"])
    };
    let PushOutcome::Created(ids) = store.push(delayed).await.unwrap() else {
        panic!("a delayed push creates its message");
    };
    assert_eq!(counts(&store, &q).await, counted(0, 0, 1, 0));

    let early = store.receive(&q, 1, LONG_LEASE).await.unwrap();
    assert!(early.messages.is_empty(), "received before its delay");
    let next = early.next_ready_in.expect("the delayed message's time");
    assert!(
        next <= Duration::from_millis(200),
        "next_ready_in {next:?} is at most the delay"
    );
    assert!(store.pop(&q, 1).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(counts(&store, &q).await, counted(1, 0, 0, 0));
    assert_eq!(ids_of(&receive(&store, &q, 1, LONG_LEASE).await), ids);
}

async fn counts_tell_ready_leased_delayed_and_dead_apart(store: TestStore) {
    let q = queue("mixed");
    let settings = QueueSettings {
        max_attempts: 1,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    push(&store, &q, &["1", "2", "3", "4"]).await;
    let delayed = PushRequest {
        delay: Some(Duration::from_secs(60)),
        ..push_request(&q, &["5"])
    };
    store.push(delayed).await.unwrap();
    receive(&store, &q, 1, LONG_LEASE).await;
    let doomed = receive(&store, &q, 1, LONG_LEASE).await;
    let nacked = settle(&store, &q, &[receipt_of(&doomed[0])], NACK_NOW).await;
    assert_eq!(nacked.applied.len(), 1);

    let info = store.queue_info(&q).await.unwrap();
    assert_eq!(info.name, q);
    assert_eq!(info.settings, settings);
    assert_eq!(info.counts, counted(2, 1, 1, 1));

    push(&store, &queue("another"), &["1"]).await;
    let listed: Vec<(String, QueueCounts)> = store
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|info| (info.name.as_str().to_owned(), info.counts))
        .collect();
    assert_eq!(
        listed,
        [
            ("another".to_owned(), counted(1, 0, 0, 0)),
            ("mixed".to_owned(), counted(2, 1, 1, 1)),
        ]
    );
}

async fn message_out_of_attempts_is_dead_lettered_and_redrive_resets_attempts(store: TestStore) {
    let q = queue("poison");
    let settings = QueueSettings {
        lease: SHORT_LEASE,
        max_attempts: 2,
        ..QueueSettings::default()
    };
    assert_eq!(
        store
            .update_settings(&q, &set_to(&settings), &QueueSettings::default())
            .await
            .unwrap(),
        Upsert::Created
    );
    let ids = push(&store, &q, &[r#"{"bad":true}"#]).await;

    for attempt in 1..=2 {
        let received = receive(&store, &q, 1, None).await;
        assert_eq!(ids_of(&received), ids, "attempt {attempt}");
        assert_eq!(received[0].attempts, attempt);
        tokio::time::sleep(PAST_SHORT_LEASE).await;
    }
    assert!(
        receive(&store, &q, 1, None).await.is_empty(),
        "out of attempts, yet handed out"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 1));
    assert!(store.pop(&q, 10).await.unwrap().is_empty());

    let dead = store.dead_letters(&q, 10).await.unwrap();
    assert_eq!(ids_of(&dead), ids);
    assert_eq!(dead[0].body, r#"{"bad":true}"#);
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].receipt.is_none());

    assert_eq!(store.redrive(&q, 10).await.unwrap(), 1);
    assert_eq!(counts(&store, &q).await, counted(1, 0, 0, 0));
    assert!(store.dead_letters(&q, 10).await.unwrap().is_empty());
    let redriven = receive(&store, &q, 1, LONG_LEASE).await;
    assert_eq!(ids_of(&redriven), ids);
    assert_eq!(redriven[0].attempts, 1, "a redrive resets the attempts");
}

async fn update_settings_creates_then_updates_the_queue(store: TestStore) {
    let q = queue("tuned");
    assert!(matches!(
        store.settings(&q).await,
        Err(StoreError::QueueNotFound(_))
    ));
    let first = QueueSettings {
        lease: Duration::from_millis(5500),
        max_attempts: 3,
        retention: Some(Duration::from_secs(7200)),
        idempotency_window: Duration::from_secs(60),
        // Every delivery field survives the store, as it was set.
        delivery: Some(
            serde_json::from_str(
                r#"{"url": "http://cluster/groups/{id}", "method": "DELETE",
                    "headers": {"x-k": "v"}, "timeout": 2.5, "concurrency": 3,
                    "backoff": {"initial": 0.5, "max": 60, "factor": 3},
                    "done_statuses": [404], "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    "breaker": {"failures": 2, "open_for": 10}}"#,
            )
            .unwrap(),
        ),
        // And so does every option newer than the columns.
        ordering: Ordering::Group,
        dead_letter_queue: Some(queue("settings-dead")),
        delay: Duration::from_millis(1500),
        wait: Duration::from_secs(20),
        content_deduplication: true,
    };
    assert_eq!(
        store
            .update_settings(&q, &set_to(&first), &QueueSettings::default())
            .await
            .unwrap(),
        Upsert::Created
    );
    assert_eq!(store.settings(&q).await.unwrap(), first);
    assert_eq!(
        store.delivering_queues().await.unwrap(),
        vec![(q.clone(), first.delivery.clone().unwrap())],
        "the delivery engine finds it"
    );
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 0));

    let second = QueueSettings {
        max_attempts: 4,
        retention: None,
        ..first.clone()
    };
    assert_eq!(
        store
            .update_settings(&q, &set_to(&second), &QueueSettings::default())
            .await
            .unwrap(),
        Upsert::Updated
    );
    assert_eq!(store.settings(&q).await.unwrap(), second);
    assert_eq!(store.queue_info(&q).await.unwrap().settings, second);

    let pushed = PushRequest {
        defaults: QueueSettings {
            max_attempts: 9,
            ..QueueSettings::default()
        },
        ..push_request(&q, &["1"])
    };
    store.push(pushed).await.unwrap();
    assert_eq!(
        store.settings(&q).await.unwrap(),
        second,
        "a push's defaults apply only to a queue it creates"
    );
}

async fn purge_empties_a_queue_and_delete_removes_it(store: TestStore) {
    let q = queue("full");
    let settings = QueueSettings {
        max_attempts: 7,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    push(&store, &q, &["1", "2", "3"]).await;
    let leased = receive(&store, &q, 1, LONG_LEASE).await;

    assert_eq!(store.purge(&q).await.unwrap(), 3);
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 0));
    assert_eq!(store.settings(&q).await.unwrap(), settings);
    let acked = settle(&store, &q, &[receipt_of(&leased[0])], Settlement::Ack).await;
    assert_eq!(acked.stale.len(), 1, "a purged message's receipt is stale");

    push(&store, &q, &["4", "5"]).await;
    assert_eq!(store.delete_queue(&q).await.unwrap(), 2);
    assert!(matches!(
        store.queue_info(&q).await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert!(store.list_queues().await.unwrap().is_empty());

    push(&store, &q, &["6"]).await;
    assert_eq!(
        store.settings(&q).await.unwrap(),
        QueueSettings::default(),
        "a re-created queue starts afresh"
    );
    let popped = store.pop(&q, 10).await.unwrap();
    assert_eq!(popped.len(), 1);
    assert_eq!(popped[0].body, "6");
}

async fn unknown_queue_is_not_found_and_not_created(store: TestStore) {
    let q = queue("ghost");
    let receipt = Receipt {
        message_id: 1,
        lease_token: 1,
    };
    let not_found = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::QueueNotFound(name)) => assert_eq!(name, "ghost", "{what}"),
        other => panic!("{what} on a queue never created: {other:?}"),
    };
    not_found("pop", store.pop(&q, 1).await.map(drop));
    not_found("receive", store.receive(&q, 1, LONG_LEASE).await.map(drop));
    not_found(
        "settle",
        store
            .settle(&q, &[receipt], Settlement::Ack)
            .await
            .map(drop),
    );
    not_found("queue_info", store.queue_info(&q).await.map(drop));
    not_found("settings", store.settings(&q).await.map(drop));
    not_found("dead_letters", store.dead_letters(&q, 1).await.map(drop));
    not_found("peek", store.peek(&q, 1).await.map(drop));
    not_found("redrive", store.redrive(&q, 1).await.map(drop));
    not_found("purge", store.purge(&q).await.map(drop));
    not_found("delete_queue", store.delete_queue(&q).await.map(drop));
    assert!(store.list_queues().await.unwrap().is_empty());
}

async fn peek_reads_the_ready_messages_a_receive_would_take_and_writes_nothing(store: TestStore) {
    let q = queue("peeked");
    let settings = QueueSettings {
        max_attempts: 2,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    let out_of_attempts = push(&store, &q, &["0"]).await[0];
    for _ in 0..2 {
        receive(&store, &q, 1, Some(SHORT_LEASE)).await;
        tokio::time::sleep(PAST_SHORT_LEASE).await;
    }
    let expired = push(&store, &q, &["1"]).await[0];
    receive(&store, &q, 1, Some(SHORT_LEASE)).await;
    let leased = push(&store, &q, &["2"]).await[0];
    receive(&store, &q, 1, LONG_LEASE).await;
    let waiting = push(&store, &q, &["3", "4"]).await;
    let delayed = PushRequest {
        delay: Some(Duration::from_secs(3600)),
        ..push_request(&q, &["5"])
    };
    store.push(delayed).await.unwrap();
    tokio::time::sleep(PAST_SHORT_LEASE).await;

    let peeked = store.peek(&q, 10).await.unwrap();
    assert_eq!(
        ids_of(&peeked),
        [expired, waiting[0], waiting[1]],
        "expired leases with attempts left and waiting messages, oldest first; \
         not {out_of_attempts} (out of attempts), {leased} (leased) or the delayed one"
    );
    assert_eq!(
        peeked[0].attempts, 1,
        "the expired lease's hand-out counted once"
    );
    assert_eq!(peeked[1].attempts, 0);
    assert_eq!(peeked[1].body, "3");
    assert!(peeked.iter().all(|m| m.receipt.is_none()));
    assert_eq!(ids_of(&store.peek(&q, 1).await.unwrap()), [expired]);
    assert_eq!(counts(&store, &q).await, counted(3, 1, 1, 1));

    let received = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(
        ids_of(&received),
        ids_of(&peeked),
        "a receive takes the same"
    );
    assert_eq!(received[0].attempts, 2);
    assert_eq!(received[1].attempts, 1, "the peek counted no attempt");
    assert!(store.peek(&q, 10).await.unwrap().is_empty());
}

fn client_record(id: &str, grants: &[&str]) -> ClientRecord {
    ClientRecord {
        id: ClientId::parse(id).unwrap(),
        secret_hash: format!("sha256${}", "ab".repeat(32)),
        grants: grants.iter().map(|g| g.parse::<Grant>().unwrap()).collect(),
        created_at: now_millis(),
    }
}

async fn clients_are_created_listed_and_deleted(store: TestStore) {
    assert!(store.list_clients().await.unwrap().is_empty());
    let shop = client_record("shop", &["queue:orders:produce", "queue:*:consume"]);
    let admin = client_record("admin", &["admin"]);
    store.create_client(&shop).await.unwrap();
    store.create_client(&admin).await.unwrap();

    let twin = client_record("shop", &["admin"]);
    match store.create_client(&twin).await {
        Err(StoreError::ClientExists(id)) => assert_eq!(id, "shop"),
        other => panic!("a second client shop: {other:?}"),
    }

    let listed = store.list_clients().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["admin", "shop"], "clients are listed by id");
    let stored = store
        .client(&shop.id)
        .await
        .unwrap()
        .expect("shop is stored");
    assert_eq!(stored.grants, shop.grants, "the duplicate changed nothing");
    assert_eq!(stored.secret_hash, shop.secret_hash);
    assert_eq!(stored.created_at, shop.created_at);

    store.delete_client(&shop.id).await.unwrap();
    assert!(store.client(&shop.id).await.unwrap().is_none());
    match store.delete_client(&shop.id).await {
        Err(StoreError::ClientNotFound(id)) => assert_eq!(id, "shop"),
        other => panic!("deleting shop twice: {other:?}"),
    }
    let nobody = ClientId::parse("nobody").unwrap();
    assert!(store.client(&nobody).await.unwrap().is_none());
    let left: Vec<String> = store
        .list_clients()
        .await
        .unwrap()
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(left, ["admin"]);
}

async fn client_grants_and_secrets_are_replaced_and_announced(store: TestStore) {
    let shop = client_record("shop", &["queue:orders:produce"]);
    let other = client_record("other", &["stream:s:*"]);
    store.create_client(&shop).await.unwrap();
    store.create_client(&other).await.unwrap();
    let mut revocations = store.wakeups().revocations();

    let grants: Vec<Grant> = ["queue:orders-*:consume", "admin"]
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    store.set_client_grants(&shop.id, &grants).await.unwrap();
    let stored = store
        .client(&shop.id)
        .await
        .unwrap()
        .expect("shop is stored");
    assert_eq!(stored.grants, grants, "the grants are replaced, in order");
    assert_eq!(stored.secret_hash, shop.secret_hash, "the secret stays");
    assert_eq!(stored.created_at, shop.created_at);
    assert!(
        announced(&mut revocations, "shop"),
        "cached credentials of shop hold the old grants"
    );

    store.set_client_grants(&shop.id, &[]).await.unwrap();
    let stored = store.client(&shop.id).await.unwrap().unwrap();
    assert!(stored.grants.is_empty(), "{:?}", stored.grants);
    assert!(announced(&mut revocations, "shop"));

    let new_hash = format!("sha256${}", "cd".repeat(32));
    store.set_client_secret(&shop.id, &new_hash).await.unwrap();
    let stored = store.client(&shop.id).await.unwrap().unwrap();
    assert_eq!(stored.secret_hash, new_hash);
    assert!(
        announced(&mut revocations, "shop"),
        "the old secret must be refused at once"
    );

    let untouched = store.client(&other.id).await.unwrap().unwrap();
    assert_eq!(untouched.grants, other.grants, "only shop changed");
    assert_eq!(untouched.secret_hash, other.secret_hash);

    let nobody = ClientId::parse("nobody").unwrap();
    match store.set_client_grants(&nobody, &grants).await {
        Err(StoreError::ClientNotFound(id)) => assert_eq!(id, "nobody"),
        other => panic!("grants of nobody: {other:?}"),
    }
    match store.set_client_secret(&nobody, &new_hash).await {
        Err(StoreError::ClientNotFound(id)) => assert_eq!(id, "nobody"),
        other => panic!("secret of nobody: {other:?}"),
    }
    assert!(
        store.client(&nobody).await.unwrap().is_none(),
        "nothing was created"
    );
}

/// Whether the revocation of client `id` is among those received so far. Others may
/// come too: on PostgreSQL the node's own `NOTIFY` comes back through its listener,
/// which also forgets every client when it starts listening.
fn aws_key(id: &str, client: &str, created_at: i64) -> AwsKeyRecord {
    AwsKeyRecord {
        access_key_id: AccessKeyId::parse(id).unwrap(),
        client_id: ClientId::parse(client).unwrap(),
        // Bytes of every value, newlines and NULs included, to come back unchanged.
        sealed_secret: (0..=255u8).rev().collect(),
        created_at,
    }
}

async fn aws_keys_are_stored_for_existing_clients_and_go_with_them(store: TestStore) {
    let shop = client_record("shop", &["queue:orders:produce"]);
    let other = client_record("other", &[]);
    store.create_client(&shop).await.unwrap();
    store.create_client(&other).await.unwrap();
    let first = aws_key("HOPRAAAAAAAAAAAAAAAA", "shop", 1_000);
    let second = aws_key("HOPRBBBBBBBBBBBBBBBB", "shop", 2_000);
    let others = aws_key("HOPRCCCCCCCCCCCCCCCC", "other", 1_500);
    // Inserted out of order: the listing is by creation.
    store.create_aws_key(&second).await.unwrap();
    store.create_aws_key(&first).await.unwrap();
    store.create_aws_key(&others).await.unwrap();
    match store
        .create_aws_key(&aws_key("HOPRAAAAAAAAAAAAAAAA", "other", 3_000))
        .await
    {
        Err(StoreError::AwsKeyExists(id)) => assert_eq!(id, "HOPRAAAAAAAAAAAAAAAA"),
        other => panic!("a second key HOPRAAAAAAAAAAAAAAAA: {other:?}"),
    }
    match store
        .create_aws_key(&aws_key("HOPRDDDDDDDDDDDDDDDD", "nobody", 3_000))
        .await
    {
        Err(StoreError::ClientNotFound(id)) => assert_eq!(id, "nobody"),
        other => panic!("a key of nobody: {other:?}"),
    }

    let found = store
        .aws_key(&first.access_key_id)
        .await
        .unwrap()
        .expect("the key is stored");
    assert_eq!(found.client_id, shop.id, "the duplicate changed nothing");
    assert_eq!(found.sealed_secret, first.sealed_secret);
    assert_eq!(found.created_at, 1_000);
    let missing = AccessKeyId::parse("HOPRDDDDDDDDDDDDDDDD").unwrap();
    assert!(store.aws_key(&missing).await.unwrap().is_none());
    let ids = |keys: Vec<AwsKeyRecord>| -> Vec<String> {
        keys.iter().map(|k| k.access_key_id.to_string()).collect()
    };
    assert_eq!(
        ids(store.list_aws_keys(&shop.id).await.unwrap()),
        ["HOPRAAAAAAAAAAAAAAAA", "HOPRBBBBBBBBBBBBBBBB"]
    );
    let nobody = ClientId::parse("nobody").unwrap();
    assert!(store.list_aws_keys(&nobody).await.unwrap().is_empty());

    let mut revocations = store.wakeups().revocations();
    match store.delete_aws_key(&other.id, &first.access_key_id).await {
        Err(StoreError::AwsKeyNotFound(id)) => assert_eq!(id, "HOPRAAAAAAAAAAAAAAAA"),
        other => panic!("another client's key deleted: {other:?}"),
    }
    assert!(store.aws_key(&first.access_key_id).await.unwrap().is_some());
    store
        .delete_aws_key(&shop.id, &first.access_key_id)
        .await
        .unwrap();
    assert!(store.aws_key(&first.access_key_id).await.unwrap().is_none());
    assert!(
        announced(&mut revocations, "shop"),
        "nodes that cached the key must forget it"
    );
    match store.delete_aws_key(&shop.id, &first.access_key_id).await {
        Err(StoreError::AwsKeyNotFound(_)) => {}
        other => panic!("deleting a key twice: {other:?}"),
    }

    store.delete_client(&shop.id).await.unwrap();
    assert!(store
        .aws_key(&second.access_key_id)
        .await
        .unwrap()
        .is_none());
    store.create_client(&shop).await.unwrap();
    assert!(
        store.list_aws_keys(&shop.id).await.unwrap().is_empty(),
        "a client of the same id gets none of the old one's keys"
    );
    assert_eq!(
        ids(store.list_aws_keys(&other.id).await.unwrap()),
        ["HOPRCCCCCCCCCCCCCCCC"],
        "only shop's keys went"
    );
}

fn announced(revocations: &mut tokio::sync::broadcast::Receiver<Revocation>, id: &str) -> bool {
    let mut found = false;
    while let Ok(revocation) = revocations.try_recv() {
        found |= revocation == Revocation::Client(id.to_owned());
    }
    found
}

/// A patch that sets the settings whatever they were.
fn set_to(settings: &QueueSettings) -> SettingsPatch {
    SettingsPatch::replacing(settings)
}

async fn concurrent_settings_updates_compose(store: TestStore) {
    let q = queue("composed");
    let start = QueueSettings {
        max_attempts: 1,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&start), &QueueSettings::default())
        .await
        .unwrap();
    // Each patch changes one field over the current settings: a read and a write that
    // are not one atomic step would write back a stale value of the other fields.
    let patches: Vec<SettingsPatch> = (1..=20u32)
        .map(|n| match n % 3 {
            0 => SettingsPatch {
                max_attempts: Some(n),
                ..SettingsPatch::default()
            },
            1 => SettingsPatch {
                lease: Some(Duration::from_secs(n.into())),
                ..SettingsPatch::default()
            },
            _ => SettingsPatch {
                retention: Some(Some(Duration::from_secs(n.into()))),
                ..SettingsPatch::default()
            },
        })
        .collect();
    let defaults = QueueSettings::default();
    let updates = patches
        .iter()
        .map(|patch| store.update_settings(&q, patch, &defaults));
    for upsert in futures_util::future::join_all(updates).await {
        upsert.unwrap();
    }
    // Whatever order they ran in, each field holds a value one of its patches set.
    let settings = store.settings(&q).await.unwrap();
    assert_ne!(settings.max_attempts, 1, "a max_attempts change was lost");
    assert_ne!(settings.lease, start.lease, "a lease change was lost");
    assert!(settings.retention.is_some(), "a retention change was lost");
}

async fn concurrent_pushes_each_get_the_ids_of_their_own_messages(store: TestStore) {
    // Pushes arriving together share a write where a backend gathers them (group
    // commit, batched scripts): each caller must still get the ids of its own bodies.
    let queues = [
        queue("gathered-a"),
        queue("gathered-b"),
        queue("gathered-c"),
    ];
    let pushes: Vec<PushRequest> = (0..90usize)
        .map(|n| {
            let bodies: Vec<String> = (0..1 + n % 3)
                .map(|i| format!(r#"{{"push":{n},"part":{i}}}"#))
                .collect();
            PushRequest {
                messages: bodies.into_iter().map(Into::into).collect(),
                delay: Some(if n % 10 == 9 {
                    Duration::from_secs(60)
                } else {
                    Duration::ZERO
                }),
                ..push_request(&queues[n % 3], &[])
            }
        })
        .collect();
    let outcomes =
        futures_util::future::join_all(pushes.iter().map(|p| store.push(p.clone()))).await;
    let mut expected = std::collections::BTreeMap::new();
    let mut delayed = std::collections::BTreeMap::<&str, u64>::new();
    for (push, outcome) in pushes.iter().zip(outcomes) {
        let PushOutcome::Created(ids) = outcome.unwrap() else {
            panic!("a push without a key created nothing");
        };
        assert_eq!(ids.len(), push.messages.len(), "one id per body");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one push's ids in order: {ids:?}"
        );
        if push.delay.unwrap_or_default().is_zero() {
            for (id, message) in ids.iter().zip(&push.messages) {
                expected.insert((push.queue.as_str().to_owned(), *id), message.body.clone());
            }
        } else {
            *delayed.entry(push.queue.as_str()).or_default() += ids.len() as u64;
        }
    }
    let mut received = std::collections::BTreeMap::new();
    for q in &queues {
        loop {
            let batch = receive(&store, q, 50, LONG_LEASE).await;
            if batch.is_empty() {
                break;
            }
            for message in batch {
                let key = (q.as_str().to_owned(), message.id);
                assert!(
                    received.insert(key, message.body).is_none(),
                    "an id given twice"
                );
            }
        }
        assert_eq!(
            counts(&store, q).await.delayed,
            delayed[q.as_str()],
            "delayed on {q}"
        );
    }
    assert_eq!(received, expected);
}

async fn one_push_of_many_bodies_stores_every_one_in_order(store: TestStore) {
    // More bodies than one Redis command takes at once (its scripts write in chunks).
    let q = queue("bulk");
    let bodies: Vec<String> = (0..5000).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let texts: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let ids = push(&store, &q, &texts).await;
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in the bodies' order"
    );
    let delayed = PushRequest {
        delay: Some(Duration::from_secs(60)),
        ..push_request(&q, &texts)
    };
    store.push(delayed).await.unwrap();
    assert_eq!(counts(&store, &q).await, counted(5000, 0, 5000, 0));
    let mut received = Vec::new();
    loop {
        let batch = receive(&store, &q, 100, LONG_LEASE).await;
        if batch.is_empty() {
            break;
        }
        received.extend(batch.into_iter().map(|m| (m.id, m.body)));
    }
    let pushed: Vec<(MessageId, String)> = ids.into_iter().zip(bodies).collect();
    assert_eq!(received, pushed, "every body once, oldest first");
}

async fn every_queue_of_many_is_listed(store: TestStore) {
    // More queues than Redis's registry reads in one page.
    let names: Vec<String> = (0..1200).map(|n| format!("many-{n:04}")).collect();
    let pushes = names
        .iter()
        .map(|name| store.push(push_request(&queue(name), &["1"])));
    for pushed in futures_util::future::join_all(pushes).await {
        pushed.unwrap();
    }
    let listed: Vec<String> = store
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.name.as_str().to_owned())
        .collect();
    assert_eq!(listed, names, "every queue once, by name");
}

fn new_event(stream: &str, producer: &str, name: &str) -> hopper::domain::NewEvent {
    hopper::domain::NewEvent {
        stream: hopper::domain::StreamName::parse(stream).unwrap(),
        producer: producer.to_owned(),
        name: name.to_owned(),
        body: format!(r#"{{"event":{{"name":"{name}","version":1}}}}"#),
    }
}

async fn sweep_trims_streams_by_count_and_by_age(store: TestStore) {
    use hopper::domain::streams::StreamRetention;
    use hopper::domain::Appended;
    let stream = hopper::domain::StreamName::parse("trimmed").unwrap();
    for expected in 1..=5 {
        let appended = store.append(new_event("trimmed", "p", "E")).await.unwrap();
        assert_eq!(appended, Appended::Event(expected));
    }
    let keep_two = StreamRetention {
        max_age: None,
        max_events: Some(2),
    };
    store.set_stream_retention(&stream, keep_two).await.unwrap();
    hopper::domain::storage::sweep(store.deref())
        .await
        .1
        .map_or(Ok(()), Err)
        .unwrap();
    let info = store.stream_info(&stream).await.unwrap();
    assert_eq!(
        (info.length, info.first_event, info.last_event),
        (2, Some(4), Some(5))
    );
    assert_eq!(info.retention, keep_two);
    // Ids go on after a trim; nothing is renumbered.
    assert_eq!(
        store.append(new_event("trimmed", "p", "E")).await.unwrap(),
        Appended::Event(6)
    );

    let short_lived = StreamRetention {
        max_age: Some(Duration::from_millis(1)),
        max_events: None,
    };
    store
        .set_stream_retention(&stream, short_lived)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    hopper::domain::storage::sweep(store.deref())
        .await
        .1
        .map_or(Ok(()), Err)
        .unwrap();
    assert_eq!(store.stream_info(&stream).await.unwrap().length, 0);
}

async fn stream_owner_offsets_and_missing_events(store: TestStore) {
    use hopper::domain::{Appended, ReadFrom};
    let stream = hopper::domain::StreamName::parse("owned").unwrap();
    assert!(matches!(
        store
            .read_events(&stream, "c", "E", ReadFrom::Offset, 10)
            .await,
        Err(hopper::domain::StoreError::StreamNotFound(_))
    ));
    assert_eq!(
        store.append(new_event("owned", "p1", "E")).await.unwrap(),
        Appended::Event(1)
    );
    assert_eq!(
        store.append(new_event("owned", "p2", "E")).await.unwrap(),
        Appended::Locked
    );
    assert_eq!(
        store.append(new_event("owned", "p1", "F")).await.unwrap(),
        Appended::Event(2)
    );
    assert_eq!(
        store.append(new_event("owned", "p1", "E")).await.unwrap(),
        Appended::Event(3)
    );
    assert!(
        !store.ack_event(&stream, "c", 99).await.unwrap(),
        "no event 99"
    );
    assert!(store.ack_event(&stream, "c", 3).await.unwrap());
    assert!(
        store.ack_event(&stream, "c", 1).await.unwrap(),
        "an older ack is accepted"
    );
    let after = store
        .read_events(&stream, "c", "E", ReadFrom::Offset, 10)
        .await
        .unwrap();
    assert!(after.is_empty(), "the offset stayed at 3");
    let others = store
        .read_events(&stream, "c", "F", ReadFrom::Offset, 10)
        .await
        .unwrap();
    assert_eq!(
        others.iter().map(|e| e.id).collect::<Vec<_>>(),
        [2],
        "F has its own offset"
    );
    let replay = store
        .read_events(&stream, "c", "E", ReadFrom::After(0), 10)
        .await
        .unwrap();
    assert_eq!(replay.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 3]);
    store.set_stream_owner(&stream, "p2").await.unwrap();
    assert_eq!(
        store.append(new_event("owned", "p1", "E")).await.unwrap(),
        Appended::Locked
    );
    assert_eq!(
        store.append(new_event("owned", "p2", "E")).await.unwrap(),
        Appended::Event(4)
    );
}

/// Long enough that no test sees a task dropped by its `keep_finished`.
const KEEP: Duration = Duration::from_secs(3600);

/// A task with `payload` (JSON text) on `queue`, its message built as the task service
/// builds it.
fn new_task(queue: &QueueName, payload: &str, key: Option<&str>, keep: Duration) -> NewTask {
    let id = TaskId::generate();
    NewTask {
        message: PushRequest {
            idempotency_key: key.map(str::to_owned),
            ..push_request(
                queue,
                &[&format!(r#"{{"task_id":"{id}","payload":{payload}}}"#)],
            )
        },
        id,
        keep_finished: keep,
    }
}

/// Creates a task that must be new; returns its id.
async fn create_task(store: &TestStore, task: NewTask) -> TaskId {
    let id = task.id.clone();
    assert_eq!(
        store.create_task(task).await.unwrap(),
        TaskCreated::New(id.clone())
    );
    id
}

/// The task `id`, which must be there.
async fn task_of(store: &TestStore, id: &TaskId) -> TaskRecord {
    store
        .task(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("task {id} is not there"))
}

/// What a finish that must apply made of the task.
async fn finish(store: &TestStore, id: &TaskId, receipt: Receipt, how: TaskFinish) -> TaskRecord {
    match store.finish_task(id, receipt, how).await.unwrap() {
        TaskFinished::Applied(task) => task,
        other => panic!("finishing task {id} with a current receipt: {other:?}"),
    }
}

/// Receives the one message of `queue`, which must be task `id`'s.
async fn receive_task(
    store: &TestStore,
    queue: &QueueName,
    id: &TaskId,
    lease: Option<Duration>,
) -> Message {
    let mut received = receive(store, queue, 10, lease).await;
    assert_eq!(received.len(), 1, "one task message: {received:?}");
    let message = received.remove(0);
    assert_eq!(
        message.task.as_ref(),
        Some(id),
        "the message names its task"
    );
    message
}

fn succeeded(result: &str) -> TaskFinish {
    TaskFinish::Succeeded {
        result: result.to_owned(),
        upstream_status: None,
    }
}

/// Sets `max_attempts` on a new queue `name`.
async fn queue_with_attempts(store: &TestStore, name: &str, max_attempts: u32) -> QueueName {
    let q = queue(name);
    let settings = QueueSettings {
        max_attempts,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    q
}

async fn task_counts(store: &TestStore, queue: &QueueName) -> TaskCounts {
    store.queue_info(queue).await.unwrap().tasks
}

async fn task_goes_from_pending_to_running_to_succeeded_and_its_message_is_acked(store: TestStore) {
    let q = queue("jobs");
    let before = now_millis();
    let new = new_task(&q, r#"{"n":7}"#, None, KEEP);
    let body = new.message.messages[0].body.clone();
    let id = create_task(&store, new).await;

    let pending = task_of(&store, &id).await;
    assert_eq!(pending.id, id);
    assert_eq!(pending.queue, "jobs");
    assert_eq!(pending.status, TaskStatus::Pending);
    assert_eq!(pending.attempts, 0);
    assert_eq!((pending.result, pending.error), (None, None));
    assert_eq!((pending.finished_at, pending.lease_ends_in), (None, None));
    assert!(
        (before..=now_millis()).contains(&pending.created_at),
        "created_at {} is the create's time",
        pending.created_at
    );
    assert_eq!(counts(&store, &q).await, counted(1, 0, 0, 0));
    assert_eq!(
        task_counts(&store, &q).await,
        TaskCounts {
            pending: 1,
            ..TaskCounts::default()
        }
    );

    let message = receive_task(&store, &q, &id, LONG_LEASE).await;
    assert_eq!(
        message.body, body,
        "the task's message carries its id and payload"
    );
    let running = task_of(&store, &id).await;
    assert_eq!(running.status, TaskStatus::Running);
    assert_eq!(running.attempts, 1);
    assert!(
        running
            .lease_ends_in
            .is_some_and(|ahead| ahead <= LONG_LEASE.unwrap_or(Duration::MAX)),
        "a running task tells when its lease ends: {:?}",
        running.lease_ends_in
    );

    let done = finish(&store, &id, receipt_of(&message), succeeded(r#"{"sum":7}"#)).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.result.as_deref(), Some(r#"{"sum":7}"#));
    assert_eq!((done.error, done.lease_ends_in), (None, None));
    assert_eq!(done.attempts, 1);
    assert!(done.finished_at.is_some_and(|at| at >= running.created_at));
    let read = task_of(&store, &id).await;
    assert_eq!(read.status, TaskStatus::Succeeded);
    assert_eq!(read.result.as_deref(), Some(r#"{"sum":7}"#));
    assert_eq!(
        counts(&store, &q).await,
        counted(0, 0, 0, 0),
        "the message is acked"
    );
    assert!(receive(&store, &q, 10, LONG_LEASE).await.is_empty());
    assert_eq!(
        task_counts(&store, &q).await,
        TaskCounts {
            succeeded: 1,
            ..TaskCounts::default()
        }
    );
}

async fn stale_or_wrong_receipt_finishes_no_task(store: TestStore) {
    let q = queue("contended-jobs");
    let id = create_task(&store, new_task(&q, "1", None, KEEP)).await;
    let first = receipt_of(&receive_task(&store, &q, &id, Some(SHORT_LEASE)).await);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let current = receipt_of(&receive_task(&store, &q, &id, LONG_LEASE).await);

    for how in [
        succeeded("1"),
        TaskFinish::Failed {
            error: r#""no""#.into(),
        },
        TaskFinish::Retry {
            error: r#""again""#.into(),
            delay: Duration::ZERO,
        },
    ] {
        let stale = store.finish_task(&id, first, how.clone()).await.unwrap();
        assert!(
            matches!(stale, TaskFinished::Stale),
            "{how:?} with the receipt of an earlier lease: {stale:?}"
        );
    }
    let unchanged = task_of(&store, &id).await;
    assert_eq!(unchanged.status, TaskStatus::Running);
    assert_eq!(unchanged.attempts, 2);
    assert_eq!((unchanged.result, unchanged.error), (None, None));
    assert_eq!(counts(&store, &q).await, counted(0, 1, 0, 0));

    let other = push(&store, &q, &["2"]).await[0];
    let wrong = Receipt {
        message_id: other,
        ..current
    };
    let answer = store.finish_task(&id, wrong, succeeded("1")).await.unwrap();
    assert!(
        matches!(answer, TaskFinished::WrongMessage),
        "a receipt for another message: {answer:?}"
    );
    let unknown = TaskId::generate();
    let answer = store
        .finish_task(&unknown, current, succeeded("1"))
        .await
        .unwrap();
    assert!(matches!(answer, TaskFinished::NotFound), "{answer:?}");

    finish(&store, &id, current, succeeded("1")).await;
    let again = store
        .finish_task(&id, current, succeeded("2"))
        .await
        .unwrap();
    assert!(
        matches!(again, TaskFinished::Stale),
        "finishing a finished task: {again:?}"
    );
    let done = task_of(&store, &id).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(
        done.result.as_deref(),
        Some("1"),
        "the second finish changed nothing"
    );
    assert_eq!(
        counts(&store, &q).await,
        counted(1, 0, 0, 0),
        "only the other message is left"
    );
}

async fn retried_task_stays_pending_until_out_of_attempts_then_fails(store: TestStore) {
    let q = queue_with_attempts(&store, "retried", 2).await;
    let id = create_task(&store, new_task(&q, "1", None, KEEP)).await;

    let first = receive_task(&store, &q, &id, LONG_LEASE).await;
    let retry = |error: &str| TaskFinish::Retry {
        error: error.to_owned(),
        delay: Duration::ZERO,
    };
    let retried = finish(&store, &id, receipt_of(&first), retry(r#""flaky""#)).await;
    assert_eq!(retried.status, TaskStatus::Pending);
    assert_eq!(retried.error.as_deref(), Some(r#""flaky""#));
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.finished_at, None);
    assert_eq!(
        counts(&store, &q).await,
        counted(1, 0, 0, 0),
        "the message is ready again"
    );

    let second = receive_task(&store, &q, &id, LONG_LEASE).await;
    assert_eq!(second.attempts, 2);
    assert_eq!(task_of(&store, &id).await.status, TaskStatus::Running);
    let failed = finish(&store, &id, receipt_of(&second), retry(r#""still flaky""#)).await;
    assert_eq!(failed.status, TaskStatus::Failed, "out of attempts");
    assert_eq!(failed.error.as_deref(), Some(r#""still flaky""#));
    assert_eq!(failed.attempts, 2);
    assert!(failed.finished_at.is_some());
    assert_eq!(counts(&store, &q).await, counted(0, 0, 0, 1));
    let dead = store.dead_letters(&q, 10).await.unwrap();
    assert_eq!(ids_of(&dead), [second.id]);
    assert_eq!(dead[0].task.as_ref(), Some(&id));
    assert_eq!(task_of(&store, &id).await.status, TaskStatus::Failed);

    let once = queue_with_attempts(&store, "once", 1).await;
    let id = create_task(&store, new_task(&once, "2", None, KEEP)).await;
    let only = receive_task(&store, &once, &id, LONG_LEASE).await;
    let failed = finish(&store, &id, receipt_of(&only), retry(r#""no luck""#)).await;
    assert_eq!(
        failed.status,
        TaskStatus::Failed,
        "a retry with no attempt left fails"
    );
    assert_eq!(failed.error.as_deref(), Some(r#""no luck""#));
    assert_eq!(failed.attempts, 1);
    assert_eq!(counts(&store, &once).await, counted(0, 0, 0, 1));
    assert!(receive(&store, &once, 10, LONG_LEASE).await.is_empty());
}

async fn failed_task_keeps_its_error_and_its_message_is_acked(store: TestStore) {
    let q = queue("doomed");
    let id = create_task(&store, new_task(&q, "1", None, KEEP)).await;
    let message = receive_task(&store, &q, &id, LONG_LEASE).await;
    let error = r#"{"reason":"bad input"}"#;
    let how = TaskFinish::Failed {
        error: error.to_owned(),
    };
    let failed = finish(&store, &id, receipt_of(&message), how).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some(error));
    assert_eq!(failed.result, None);
    assert_eq!(failed.attempts, 1);
    assert!(failed.finished_at.is_some());
    assert_eq!(task_of(&store, &id).await.status, TaskStatus::Failed);
    assert_eq!(
        counts(&store, &q).await,
        counted(0, 0, 0, 0),
        "a failed task's message is acked, not dead-lettered"
    );
}

async fn repeated_task_create_finds_the_first_task_and_a_push_key_is_taken(store: TestStore) {
    let q = queue("keyed-jobs");
    let first = create_task(&store, new_task(&q, "1", Some("job-1"), KEEP)).await;
    let repeat = new_task(&q, "1", Some("job-1"), KEEP);
    let repeat_id = repeat.id.clone();
    assert_eq!(
        store.create_task(repeat).await.unwrap(),
        TaskCreated::Existing(first.clone())
    );
    assert!(
        store.task(&repeat_id).await.unwrap().is_none(),
        "the repeated create made no task of its own"
    );
    assert_eq!(
        counts(&store, &q).await,
        counted(1, 0, 0, 0),
        "nor a message"
    );

    let keyed_push = PushRequest {
        idempotency_key: Some("plain-1".into()),
        ..push_request(&q, &["2"])
    };
    assert!(matches!(
        store.push(keyed_push).await.unwrap(),
        PushOutcome::Created(_)
    ));
    let taken = new_task(&q, "3", Some("plain-1"), KEEP);
    let taken_id = taken.id.clone();
    assert_eq!(
        store.create_task(taken).await.unwrap(),
        TaskCreated::KeyTaken
    );
    assert!(store.task(&taken_id).await.unwrap().is_none());
    assert_eq!(
        counts(&store, &q).await,
        counted(2, 0, 0, 0),
        "nothing was pushed"
    );

    assert!(
        store.task(&TaskId::generate()).await.unwrap().is_none(),
        "an unknown task id"
    );
    assert_eq!(task_of(&store, &first).await.status, TaskStatus::Pending);
}

async fn sweep_drops_finished_tasks_past_their_time_and_keeps_the_others(store: TestStore) {
    let q = queue("swept-jobs");
    let brief = Duration::from_millis(1);
    let finished = create_task(&store, new_task(&q, "1", None, brief)).await;
    let unfinished = create_task(&store, new_task(&q, "2", None, brief)).await;
    let kept = create_task(&store, new_task(&q, "3", None, KEEP)).await;
    let messages = receive(&store, &q, 10, LONG_LEASE).await;
    let receipt = |id: &TaskId| {
        receipt_of(
            messages
                .iter()
                .find(|m| m.task.as_ref() == Some(id))
                .unwrap_or_else(|| panic!("task {id}'s message was not received")),
        )
    };
    finish(&store, &finished, receipt(&finished), succeeded("1")).await;
    finish(&store, &kept, receipt(&kept), succeeded("3")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(
        store.sweep_tasks().await.unwrap(),
        1,
        "only the finished task past its time"
    );
    assert!(store.task(&finished).await.unwrap().is_none());
    assert_eq!(
        task_of(&store, &unfinished).await.status,
        TaskStatus::Running
    );
    assert_eq!(task_of(&store, &kept).await.status, TaskStatus::Succeeded);
    assert_eq!(store.sweep_tasks().await.unwrap(), 0);
}

/// A connection of its own to the test store's database, for planting rows that no
/// store operation would write.
enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl TestStore {
    /// Opens a [`Raw`] connection to this store's database (on PostgreSQL, with the
    /// test's schema first on the search path).
    async fn raw(&self) -> Raw {
        let url = &self.isolated.url;
        if let Some(path) = url.strip_prefix("sqlite://") {
            let conn = rusqlite::Connection::open(path).expect("cannot open the SQLite file");
            // The store's writer may hold the write lock for a moment.
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            return Raw::Sqlite(conn);
        }
        let (base, query) = url
            .split_once('?')
            .expect("a PostgreSQL test URL has a query");
        let schema = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("schema="))
            .expect("a PostgreSQL test URL names its schema");
        let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .expect("cannot connect to PostgreSQL");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await
            .unwrap();
        Raw::Postgres(client)
    }
}

impl Raw {
    /// Runs `statement`, which must change some row: a corruption that missed its row
    /// would let a test pass without testing anything.
    async fn execute(&self, statement: &str) {
        let changed = match self {
            Raw::Sqlite(conn) => conn.execute(statement, []).unwrap() as u64,
            Raw::Postgres(client) => client.execute(statement, &[]).await.unwrap(),
        };
        assert!(changed > 0, "{statement:?} changed no row");
    }

    /// Runs a schema change (or anything that reports no rows).
    async fn batch(&self, statements: &str) {
        match self {
            Raw::Sqlite(conn) => conn.execute_batch(statements).unwrap(),
            Raw::Postgres(client) => client.batch_execute(statements).await.unwrap(),
        }
    }

    /// The first column, as text, of the one row `query` returns.
    async fn text(&self, query: &str) -> Option<String> {
        match self {
            Raw::Sqlite(conn) => conn.query_row(query, [], |row| row.get(0)).unwrap(),
            Raw::Postgres(client) => client.query_one(query, &[]).await.unwrap().get(0),
        }
    }
}

/// Fails the test unless `result` is a backend error, the answer to a stored row this
/// binary cannot read (not `QueueNotFound` or the like, which would be a wrong answer).
#[track_caller]
fn assert_unreadable<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Backend { .. })),
        "{what} of a corrupt row: {result:?}"
    );
}

async fn unreadable_delivery_setting_is_an_error_and_is_not_overwritten(store: TestStore) {
    let raw = store.raw().await;
    let defaults = QueueSettings::default();
    let lease_only = SettingsPatch {
        lease: Some(Duration::from_secs(5)),
        ..SettingsPatch::default()
    };
    // Not JSON at all, and JSON that is no delivery setting (it has no url).
    for (name, corrupt) in [
        ("garbled", "{not json"),
        ("urlless", r#"{"method": "GET"}"#),
    ] {
        let q = queue(name);
        store
            .update_settings(&q, &set_to(&defaults), &defaults)
            .await
            .unwrap();
        raw.execute(&format!(
            "UPDATE queues SET delivery = '{corrupt}' WHERE name = '{name}'"
        ))
        .await;

        assert_unreadable("settings", store.settings(&q).await);
        assert_unreadable("queue_info", store.queue_info(&q).await);
        assert_unreadable(
            "update_settings",
            store.update_settings(&q, &lease_only, &defaults).await,
        );
        let stored = format!(
            "SELECT delivery || ' ' || CAST(lease_ms AS TEXT) FROM queues WHERE name = '{name}'"
        );
        assert_eq!(
            raw.text(&stored).await,
            Some(format!("{corrupt} {}", defaults.lease.as_millis())),
            "a patch that does not touch the delivery setting wrote over the stored one"
        );
    }
}

async fn invalid_task_ids_in_stored_rows_are_errors(store: TestStore) {
    let raw = store.raw().await;
    let q = queue("mangled");
    let renamed = create_task(&store, new_task(&q, "1", Some("job-1"), KEEP)).await;
    raw.execute(&format!(
        "UPDATE tasks SET id = 'not-a-uuid' WHERE id = '{renamed}'"
    ))
    .await;
    // A repeated create reads the id of the task its key found.
    assert_unreadable(
        "a repeated create",
        store
            .create_task(new_task(&q, "1", Some("job-1"), KEEP))
            .await,
    );

    let q = queue("mislabelled");
    let marked = create_task(&store, new_task(&q, "2", None, KEEP)).await;
    raw.execute(&format!(
        "UPDATE messages SET task_id = 'garbage' WHERE task_id = '{marked}'"
    ))
    .await;
    assert_unreadable("peek", store.peek(&q, 10).await);
    assert_unreadable("receive", store.receive(&q, 10, LONG_LEASE).await);
    assert_unreadable("pop", store.pop(&q, 10).await);
    assert_eq!(
        counts(&store, &q).await,
        counted(1, 0, 0, 0),
        "a failed receive or pop took the message all the same"
    );
}

async fn unknown_task_state_is_an_error(store: TestStore) {
    let raw = store.raw().await;
    let q = queue("drifted");
    let id = create_task(&store, new_task(&q, "1", None, KEEP)).await;
    raw.execute(&format!("UPDATE tasks SET status = 9 WHERE id = '{id}'"))
        .await;
    assert_unreadable("task", store.task(&id).await);
    assert_unreadable("queue_info", store.queue_info(&q).await);
}

/// Reads the task before anything else does: on PostgreSQL a statement prepared
/// before the column changed fails on its own (its cached plan no longer fits), and
/// would hide how the row itself is read.
async fn task_column_of_another_type_is_an_error(store: TestStore) {
    let raw = store.raw().await;
    let q = queue("retyped");
    let retyped = create_task(&store, new_task(&q, "2", None, KEEP)).await;
    match &raw {
        // SQLite keeps whatever value a column is given.
        Raw::Sqlite(_) => {
            raw.execute(&format!(
                "UPDATE tasks SET created_at = 'yesterday' WHERE id = '{retyped}'"
            ))
            .await
        }
        Raw::Postgres(_) => {
            raw.batch("ALTER TABLE tasks ALTER COLUMN created_at TYPE TEXT")
                .await
        }
    }
    assert_unreadable("task", store.task(&retyped).await);
}

/// A connection of its own to the test store's Redis node that holds `key`, and the
/// store's key prefix: for planting values no store operation would write.
fn redis_raw(store: &TestStore, key_of: impl Fn(&str) -> String) -> (redis::Connection, String) {
    let url = &store.isolated.url;
    let (base, query) = url.split_once('?').expect("a Redis test URL has a query");
    let prefix = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("prefix="))
        .expect("a Redis test URL names its prefix")
        .to_owned();
    let key = key_of(&prefix);
    let nodes: Vec<String> = match base.strip_prefix("redis+cluster://") {
        Some(hosts) => hosts.split(',').map(|h| format!("redis://{h}")).collect(),
        None => vec![base.to_owned()],
    };
    // On a cluster, the node that answers for the key's slot rather than with MOVED.
    for node in nodes {
        let mut connection = redis::Client::open(node.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let owned: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(&key).query(&mut connection);
        if owned.is_ok() {
            return (connection, key);
        }
    }
    panic!("no node answers for {key}");
}

async fn unreadable_delivery_setting_in_redis_is_an_error_and_is_not_overwritten(store: TestStore) {
    let defaults = QueueSettings::default();
    let q = queue("garbled");
    store
        .update_settings(&q, &set_to(&defaults), &defaults)
        .await
        .unwrap();
    let (mut raw, cfg) = redis_raw(&store, |prefix| format!("{prefix}{{q:garbled}}:cfg"));
    let _: i64 = redis::cmd("HSET")
        .arg(&cfg)
        .arg("delivery")
        .arg("{not json")
        .query(&mut raw)
        .unwrap();
    assert_unreadable("settings", store.settings(&q).await);
    assert_unreadable("queue_info", store.queue_info(&q).await);
    // A patch that does not touch the delivery setting leaves it as it is: the
    // script changes only the fields the patch names.
    let lease_only = SettingsPatch {
        lease: Some(Duration::from_secs(5)),
        ..SettingsPatch::default()
    };
    store
        .update_settings(&q, &lease_only, &defaults)
        .await
        .unwrap();
    let stored: String = redis::cmd("HGET")
        .arg(&cfg)
        .arg("delivery")
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        stored, "{not json",
        "the stored delivery setting was written over"
    );
}

async fn unreadable_task_in_redis_is_an_error(store: TestStore) {
    let q = queue("drifted");
    let id = create_task(&store, new_task(&q, "1", None, KEEP)).await;
    let (mut raw, tasks) = redis_raw(&store, |prefix| format!("{prefix}{{q:drifted}}:tasks"));
    for corrupt in [
        r#"{"queue":"drifted","msg":1,"state":"bogus","created_at":1,"keep":1000}"#,
        "not json",
    ] {
        let _: i64 = redis::cmd("HSET")
            .arg(&tasks)
            .arg(id.as_str())
            .arg(corrupt)
            .query(&mut raw)
            .unwrap();
        assert_unreadable("task", store.task(&id).await);
    }
}

/// A script commits before its reply is read, so a message whose task label cannot be
/// read is handed out as a plain message rather than failed: failing it after a pop
/// would lose it. (On SQL the transaction is undone instead; see
/// `invalid_task_ids_in_stored_rows_are_errors`.)
async fn invalid_task_id_on_a_redis_message_loses_nothing(store: TestStore) {
    let q = queue("mislabelled");
    create_task(&store, new_task(&q, "2", None, KEEP)).await;
    let (mut raw, labels) = redis_raw(&store, |prefix| format!("{prefix}{{q:mislabelled}}:task"));
    let _: i64 = redis::cmd("HSET")
        .arg(&labels)
        .arg(1)
        .arg("garbage")
        .query(&mut raw)
        .unwrap();
    let popped = store.pop(&q, 10).await.unwrap();
    assert_eq!(popped.len(), 1, "the mislabelled message was lost");
    assert!(popped[0].task.is_none());
}

fn push_one(q: &QueueName) -> PushRequest {
    PushRequest {
        queue: q.clone(),
        messages: vec!["{}".into()],
        delay: Some(Duration::ZERO),
        idempotency_key: None,
        defaults: QueueSettings::default(),
    }
}

/// On the test's server (or cluster, whose masters have no replica), `wait_replicas`
/// makes a write wait for that many replicas, and one they do not confirm is an
/// unknown outcome, though the primary has it. On a primary of the test's own with
/// one replica and `appendfsync always`, `durability()` says so.
async fn redis_writes_wait_for_replicas_and_durability_is_read_from_the_server(backend: Backend) {
    let q = queue("replicated");
    if let Backend::RedisCluster { .. } = backend {
        let isolated = backend.isolated_store();
        let store = hopper::store::open(&format!("{}&wait_replicas=1", isolated.url))
            .await
            .unwrap();
        let unconfirmed = store.push(push_one(&q)).await;
        assert!(
            matches!(unconfirmed, Err(StoreError::OutcomeUnknown(_))),
            "{unconfirmed:?}"
        );
        return;
    }
    let primary =
        common::redis_cluster::OwnRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let replica = common::redis_cluster::OwnRedis::start(&[
        "--replicaof",
        "127.0.0.1",
        &primary.port().to_string(),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while primary.replicas() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("redis://127.0.0.1:{}/0", primary.port());
    let one = hopper::store::open(&format!("{url}?wait_replicas=1"))
        .await
        .unwrap();
    assert_eq!(one.durability().as_str(), "fsync-always");
    one.push(push_one(&q)).await.unwrap();
    let two = hopper::store::open(&format!("{url}?wait_replicas=2"))
        .await
        .unwrap();
    let unconfirmed = two.push(push_one(&q)).await;
    assert!(
        matches!(unconfirmed, Err(StoreError::OutcomeUnknown(_))),
        "{unconfirmed:?}"
    );
    // The confirmed push is on the replica too.
    let mut on_replica = redis::Client::open(format!("redis://127.0.0.1:{}/0", replica.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let ready: i64 = redis::cmd("ZCARD")
        .arg("{q:replicated}:ready")
        .query(&mut on_replica)
        .unwrap();
    assert!(ready >= 1, "the replica has {ready} ready messages");
}

/// A CA and a certificate it signed for 127.0.0.1, made with the `openssl` command
/// in `dir`: `(ca.crt, server.crt, server.key)`.
fn tls_certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(dir.join("san"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san",
        "-out",
        "server.crt",
    ]);
    ["ca.crt", "server.crt", "server.key"].map(|name| dir.join(name))
}

/// `rediss://` to a server whose certificate a private CA signed: refused while
/// only the system's roots are trusted, and a working store with `ca_file` naming
/// that CA; a missing `ca_file` stops the start with its path.
async fn redis_over_tls_trusts_the_ca_of_ca_file(_: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = tls_certificates(dir.path());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = common::redis_cluster::OwnRedis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let untrusted = hopper::store::open(&url).await.err().expect("refused");
    assert!(
        format!("{untrusted:#}").contains("certificate"),
        "{untrusted:#}"
    );
    let trusted = format!("{url}?ca_file={}", ca.display());
    let store = hopper::store::open(&trusted).await.unwrap();
    let q = queue("secure");
    store.push(push_one(&q)).await.unwrap();
    assert_eq!(store.pop(&q, 10).await.unwrap().len(), 1);
    let missing = hopper::store::open(&format!("{url}?ca_file=/nonexistent/ca.pem"))
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{missing:#}").contains("/nonexistent/ca.pem"),
        "{missing:#}"
    );
}

/// A queue ordered by group, created empty.
async fn grouped_queue(store: &TestStore, name: &str, max_attempts: u32) -> QueueName {
    let q = queue(name);
    let settings = QueueSettings {
        ordering: Ordering::Group,
        max_attempts,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    q
}

/// Pushes one message per `(group, body)`, in order; returns the ids.
async fn push_grouped(
    store: &TestStore,
    q: &QueueName,
    messages: &[(Option<&str>, &str)],
) -> Vec<MessageId> {
    let request = PushRequest {
        messages: messages
            .iter()
            .map(|(group, body)| NewMessage {
                group: group.map(str::to_owned),
                ..NewMessage::from(*body)
            })
            .collect(),
        ..push_request(q, &[])
    };
    match store.push(request).await.unwrap() {
        PushOutcome::Created(ids) => ids,
        other => panic!("a push without a key created nothing: {other:?}"),
    }
}

async fn grouped_queue_hands_out_one_message_per_group_in_order(store: TestStore) {
    let q = grouped_queue(&store, "grouped", 10).await;
    let ids = push_grouped(
        &store,
        &q,
        &[
            (Some("a"), "1"),
            (Some("a"), "2"),
            (Some("b"), "3"),
            (None, "4"),
            (Some("a"), "5"),
            (Some("b"), "6"),
        ],
    )
    .await;
    // Heads of a and b, and the message without a group.
    let first = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&first), vec![ids[0], ids[2], ids[3]]);
    assert_eq!(first[0].group.as_deref(), Some("a"));
    // Both groups wait while their heads are leased; nothing spins: the next ready is a lease's end.
    let blocked = store.receive(&q, 10, LONG_LEASE).await.unwrap();
    assert!(
        blocked.messages.is_empty(),
        "a group waits for its leased head"
    );
    assert!(
        blocked
            .next_ready_in
            .is_some_and(|ahead| ahead > Duration::from_secs(1)),
        "the next ready is when a head's lease ends: {:?}",
        blocked.next_ready_in
    );
    assert_eq!(peek_ids(&store, &q).await, Vec::<MessageId>::new());
    // A nacked head comes back first; the group stays behind it.
    settle(&store, &q, &[receipt_of(&first[0])], NACK_NOW).await;
    let again = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&again), vec![ids[0]]);
    // Acking the heads lets each group move on, in its order.
    settle(
        &store,
        &q,
        &[receipt_of(&again[0]), receipt_of(&first[1])],
        Settlement::Ack,
    )
    .await;
    assert_eq!(peek_ids(&store, &q).await, vec![ids[1], ids[5]]);
    let next = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&next), vec![ids[1], ids[5]]);
    settle(&store, &q, &[receipt_of(&next[0])], Settlement::Ack).await;
    assert_eq!(ids_of(&store.pop(&q, 10).await.unwrap()), vec![ids[4]]);
}

async fn peek_ids(store: &TestStore, q: &QueueName) -> Vec<MessageId> {
    ids_of(&store.peek(q, 100).await.unwrap())
}

async fn group_moves_on_when_its_head_is_dead_lettered(store: TestStore) {
    let q = grouped_queue(&store, "grouped-dead", 1).await;
    let ids = push_grouped(&store, &q, &[(Some("g"), "1"), (Some("g"), "2")]).await;
    let head = receive(&store, &q, 10, Some(SHORT_LEASE)).await;
    assert_eq!(ids_of(&head), vec![ids[0]]);
    // Its lease runs out with its one attempt spent: a dead letter, and the group goes on.
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let next = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&next), vec![ids[1]]);
    let dead = store.dead_letters(&q, 10).await.unwrap();
    assert_eq!(ids_of(&dead), vec![ids[0]]);
    assert_eq!(dead[0].group.as_deref(), Some("g"));
}

async fn group_and_metadata_and_first_receive_are_kept(store: TestStore) {
    let q = queue("with-meta");
    let before = now_millis();
    let request = PushRequest {
        messages: vec![NewMessage {
            body: r#""text""#.into(),
            group: Some("g-1".into()),
            meta: Some(r#"{"attributes":{"k":"v"}}"#.into()),
        }],
        ..push_request(&q, &[])
    };
    store.push(request).await.unwrap();
    let peeked = store.peek(&q, 1).await.unwrap();
    assert_eq!(peeked[0].first_received_at, None, "not received yet");
    let first = receive(&store, &q, 1, Some(SHORT_LEASE)).await;
    assert_eq!(first[0].group.as_deref(), Some("g-1"));
    assert_eq!(
        first[0].meta.as_deref(),
        Some(r#"{"attributes":{"k":"v"}}"#)
    );
    let received_at = first[0]
        .first_received_at
        .expect("a receive records its time");
    assert!(received_at >= before, "{received_at} < {before}");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let second = receive(&store, &q, 1, LONG_LEASE).await;
    assert_eq!(second[0].attempts, 2);
    assert_eq!(
        second[0].first_received_at,
        Some(received_at),
        "the first receive's time stays"
    );
}

async fn dead_letters_are_removed_by_id(store: TestStore) {
    let q = queue("dead-removed");
    let settings = QueueSettings {
        max_attempts: 1,
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    let ids = push(&store, &q, &["1", "2", "3"]).await;
    let received = receive(&store, &q, 3, LONG_LEASE).await;
    let receipts: Vec<Receipt> = received[..2].iter().map(receipt_of).collect();
    settle(&store, &q, &receipts, NACK_NOW).await;
    // Only dead letters go: the leased third stays.
    assert_eq!(store.remove_dead(&q, &[ids[0], ids[2]]).await.unwrap(), 1);
    assert_eq!(
        ids_of(&store.dead_letters(&q, 10).await.unwrap()),
        vec![ids[1]]
    );
    assert_eq!(counts(&store, &q).await, counted(0, 1, 0, 1));
}

async fn every_queue_settings_are_listed_without_counts(store: TestStore) {
    let (a, b) = (queue("listed-a"), queue("listed-b"));
    let settings = QueueSettings {
        dead_letter_queue: Some(b.clone()),
        ..QueueSettings::default()
    };
    store
        .update_settings(&a, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    push(&store, &b, &["1"]).await;
    let all = store.all_settings().await.unwrap();
    let mine: Vec<_> = all
        .iter()
        .filter(|(name, _)| name == &a || name == &b)
        .collect();
    assert_eq!(mine.len(), 2, "{all:?}");
    assert_eq!(mine[0].1.dead_letter_queue.as_ref(), Some(&b));
    assert_eq!(mine[1].1, QueueSettings::default());
}

async fn push_without_a_delay_takes_the_queue_delay(store: TestStore) {
    let q = queue("delayed-by-default");
    let settings = QueueSettings {
        delay: Duration::from_secs(60),
        wait: Duration::from_secs(3),
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    let request = PushRequest {
        delay: None,
        ..push_request(&q, &["1"])
    };
    store.push(request).await.unwrap();
    push(&store, &q, &["2"]).await;
    assert_eq!(counts(&store, &q).await, counted(1, 0, 1, 0));
    let received = store.receive(&q, 10, LONG_LEASE).await.unwrap();
    assert_eq!(received.messages.len(), 1);
    assert_eq!(received.queue_wait, Duration::from_secs(3));
}

/// A push with an idempotency key is written apart from the batched plain pushes:
/// it keeps groups and metadata the same way, and takes the queue's delay too.
async fn keyed_push_keeps_groups_and_metadata_and_takes_the_queue_delay(store: TestStore) {
    let q = queue("keyed-grouped");
    let settings = QueueSettings {
        ordering: Ordering::Group,
        delay: Duration::from_millis(200),
        ..QueueSettings::default()
    };
    store
        .update_settings(&q, &set_to(&settings), &QueueSettings::default())
        .await
        .unwrap();
    let request = PushRequest {
        messages: vec![
            NewMessage {
                group: Some("g".into()),
                meta: Some(String::new()),
                ..NewMessage::from("1")
            },
            NewMessage {
                group: Some("g".into()),
                meta: Some(r#"{"n":2}"#.into()),
                ..NewMessage::from("2")
            },
            "3".into(),
        ],
        delay: None,
        idempotency_key: Some("keyed".into()),
        ..push_request(&q, &[])
    };
    let PushOutcome::Created(ids) = store.push(request).await.unwrap() else {
        panic!("a first push with a key created nothing");
    };
    assert_eq!(counts(&store, &q).await, counted(0, 0, 3, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&received), vec![ids[0], ids[2]], "one of group g");
    assert_eq!(received[0].group.as_deref(), Some("g"));
    assert_eq!(received[0].meta.as_deref(), Some(""), "empty metadata kept");
    assert_eq!(received[1].group, None);
    assert_eq!(received[1].meta, None);
    settle(&store, &q, &[receipt_of(&received[0])], Settlement::Ack).await;
    let next = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(ids_of(&next), vec![ids[1]]);
    assert_eq!(next[0].meta.as_deref(), Some(r#"{"n":2}"#));
}

/// However long a group's backlog behind its leased head, another group's head
/// further back is handed out, and an empty receive waits for a head, not for the
/// backlog's delayed messages.
async fn group_backlog_behind_a_leased_head_hides_no_other_group(store: TestStore) {
    let q = grouped_queue(&store, "grouped-backlog", 10).await;
    let head = push_grouped(&store, &q, &[(Some("a"), "0")]).await;
    assert_eq!(ids_of(&receive(&store, &q, 1, LONG_LEASE).await), head);
    let backlog: Vec<(Option<&str>, &str)> = (0..250).map(|_| (Some("a"), "1")).collect();
    push_grouped(&store, &q, &backlog).await;
    let other = push_grouped(&store, &q, &[(Some("b"), "2")]).await;
    assert_eq!(ids_of(&receive(&store, &q, 10, LONG_LEASE).await), other);
    let delayed = PushRequest {
        messages: backlog
            .iter()
            .map(|(group, body)| NewMessage {
                group: group.map(str::to_owned),
                ..NewMessage::from(*body)
            })
            .collect(),
        delay: Some(Duration::from_millis(100)),
        ..push_request(&q, &[])
    };
    store.push(delayed).await.unwrap();
    let blocked = store.receive(&q, 10, LONG_LEASE).await.unwrap();
    assert!(blocked.messages.is_empty());
    assert!(
        blocked
            .next_ready_in
            .is_some_and(|ahead| ahead > Duration::from_secs(1)),
        "the next ready is when a head's lease ends, not the backlog's delay: {:?}",
        blocked.next_ready_in
    );
    assert_eq!(peek_ids(&store, &q).await, Vec::<MessageId>::new());
}

async fn group_moves_on_when_retention_drops_its_head(store: TestStore) {
    let q = grouped_queue(&store, "grouped-retention", 10).await;
    let head = push_grouped(&store, &q, &[(Some("g"), "1")]).await;
    assert_eq!(ids_of(&receive(&store, &q, 1, LONG_LEASE).await), head);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let next = push_grouped(&store, &q, &[(Some("g"), "2")]).await;
    let retention = SettingsPatch {
        retention: Some(Some(Duration::from_millis(300))),
        ..SettingsPatch::default()
    };
    store
        .update_settings(&q, &retention, &QueueSettings::default())
        .await
        .unwrap();
    assert!(receive(&store, &q, 10, LONG_LEASE).await.is_empty());
    assert_eq!(store.sweep_messages().await.unwrap(), 1);
    assert_eq!(ids_of(&receive(&store, &q, 10, LONG_LEASE).await), next);
}

async fn redriven_dead_letter_heads_its_group_again(store: TestStore) {
    let q = grouped_queue(&store, "grouped-redrive", 1).await;
    let ids = push_grouped(
        &store,
        &q,
        &[(Some("g"), "1"), (Some("g"), "2"), (Some("g"), "3")],
    )
    .await;
    let head = receive(&store, &q, 1, LONG_LEASE).await;
    settle(&store, &q, &[receipt_of(&head[0])], NACK_NOW).await;
    let second = receive(&store, &q, 10, LONG_LEASE).await;
    assert_eq!(
        ids_of(&second),
        vec![ids[1]],
        "the dead head let the group on"
    );
    settle(&store, &q, &[receipt_of(&second[0])], Settlement::Ack).await;
    assert_eq!(store.redrive(&q, 10).await.unwrap(), 1);
    // Back in its place, the oldest heads its group again, ahead of the third.
    assert_eq!(peek_ids(&store, &q).await, vec![ids[0]]);
    assert_eq!(
        ids_of(&receive(&store, &q, 10, LONG_LEASE).await),
        vec![ids[0]]
    );
}

async fn concurrent_option_updates_compose(store: TestStore) {
    let q = queue("composed-options");
    let defaults = QueueSettings::default();
    store
        .update_settings(&q, &set_to(&defaults), &defaults)
        .await
        .unwrap();
    // Options are kept together (one JSON text or column), yet a change of one must
    // not write back a stale value of another.
    let patches: Vec<SettingsPatch> = (1..=20u64)
        .map(|n| match n % 4 {
            0 => SettingsPatch {
                delay: Some(Duration::from_secs(n)),
                ..SettingsPatch::default()
            },
            1 => SettingsPatch {
                wait: Some(Duration::from_secs(n)),
                ..SettingsPatch::default()
            },
            2 => SettingsPatch {
                ordering: Some(Ordering::Group),
                ..SettingsPatch::default()
            },
            _ => SettingsPatch {
                content_deduplication: Some(true),
                dead_letter_queue: Some(Some(queue("composed-dead"))),
                ..SettingsPatch::default()
            },
        })
        .collect();
    let updates = patches
        .iter()
        .map(|patch| store.update_settings(&q, patch, &defaults));
    for upsert in futures_util::future::join_all(updates).await {
        upsert.unwrap();
    }
    let settings = store.settings(&q).await.unwrap();
    assert!(!settings.delay.is_zero(), "a delay change was lost");
    assert!(!settings.wait.is_zero(), "a wait change was lost");
    assert_eq!(
        settings.ordering,
        Ordering::Group,
        "an ordering change was lost"
    );
    assert!(
        settings.content_deduplication,
        "a deduplication change was lost"
    );
    assert_eq!(settings.dead_letter_queue, Some(queue("composed-dead")));
}

async fn unreadable_options_in_redis_are_an_error_and_are_not_overwritten(store: TestStore) {
    let defaults = QueueSettings::default();
    let q = queue("garbled-options");
    store
        .update_settings(&q, &set_to(&defaults), &defaults)
        .await
        .unwrap();
    push(&store, &q, &["1"]).await;
    let (mut raw, cfg) = redis_raw(&store, |prefix| {
        format!("{prefix}{{q:garbled-options}}:cfg")
    });
    let _: i64 = redis::cmd("HSET")
        .arg(&cfg)
        .arg("opts")
        .arg("{not json")
        .query(&mut raw)
        .unwrap();
    assert_unreadable("settings", store.settings(&q).await);
    assert_unreadable("queue_info", store.queue_info(&q).await);
    // The scripts read them too, and refuse before they write anything.
    assert!(store.receive(&q, 1, LONG_LEASE).await.is_err());
    assert!(store.push(push_request(&q, &["2"])).await.is_err());
    let wait = SettingsPatch {
        wait: Some(Duration::from_secs(1)),
        ..SettingsPatch::default()
    };
    assert!(store.update_settings(&q, &wait, &defaults).await.is_err());
    let stored: String = redis::cmd("HGET")
        .arg(&cfg)
        .arg("opts")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, "{not json", "the stored options were written over");
    let body: String = redis::cmd("HGET")
        .arg(cfg.replace(":cfg", ":body"))
        .arg(1)
        .query(&mut raw)
        .unwrap();
    assert_eq!(body, "1", "the message is still there");
    assert_eq!(
        redis::cmd("HGET")
            .arg(cfg.replace(":cfg", ":att"))
            .arg(1)
            .query::<Option<String>>(&mut raw)
            .unwrap(),
        None,
        "a refused receive counted an attempt"
    );
}

/// A group's next message becomes ready when its head goes, though no push or nack
/// says so: every store wakes the queue's waiters then, so a long poll takes it
/// at once instead of at the end of the head's lease.
async fn acking_a_group_head_wakes_the_queue_waiters(store: TestStore) {
    let q = grouped_queue(&store, "grouped-wake", 10).await;
    push_grouped(&store, &q, &[(Some("g"), "1"), (Some("g"), "2")]).await;
    let head = receive(&store, &q, 1, LONG_LEASE).await;
    let watch = store.wakeups().watch(q.as_str());
    let notified = watch.notify().notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    settle(&store, &q, &[receipt_of(&head[0])], Settlement::Ack).await;
    tokio::time::timeout(Duration::from_secs(2), notified)
        .await
        .expect("the ack of a group's head woke nobody");
}

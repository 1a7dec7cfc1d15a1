//! The services ask the access policy themselves: called directly, as a new edge
//! would call them (no HTTP, no handler in between), every operation refuses a
//! caller without the grant, and leaves the store as it was. Runs on a real SQLite
//! store.

use std::time::Duration;

use hopper::auth::{clients, Principal};
use hopper::domain::streams::ReadRequest;
use hopper::domain::{
    ClientId, DomainError, Grant, QueueName, QueueService, QueueSettings, ReceiveRequest,
    SettingsPatch, Settlement, StreamName, StreamRetention, StreamService, TaskFinish, TaskId,
    TaskService, TaskSettings,
};
use tokio_util::sync::CancellationToken;

fn caller(grants: &[&str]) -> Principal {
    Principal {
        id: ClientId::parse("edge-caller").unwrap(),
        grants: grants
            .iter()
            .map(|g| g.parse::<Grant>().unwrap())
            .collect::<Vec<_>>()
            .into(),
    }
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, DomainError>, what: &str) {
    match result {
        Err(DomainError::Forbidden(_)) => {}
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn every_service_operation_refuses_a_caller_without_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let store = hopper::store::open(&format!("sqlite://{}/h.db", dir.path().display()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let queues = QueueService::new(store.clone(), QueueSettings::default(), stop.clone());
    let tasks = TaskService::new(
        store.clone(),
        QueueSettings::default(),
        TaskSettings::default(),
        stop.clone(),
    );
    let streams = StreamService::new(store.clone(), stop.clone());
    let node = Principal::node();
    let q = QueueName::parse("orders").unwrap();
    queues
        .push(&node, q.clone(), vec!["1".into()], None, None)
        .await
        .unwrap();
    let task = tasks
        .create(&node, q.clone(), "{}", None, Duration::ZERO)
        .await
        .unwrap();

    // Grants on another queue, and of other kinds, do not count.
    let outsider = caller(&["queue:other:*", "stream:other:*", "task:other:*"]);
    let c = &outsider;
    let receive = ReceiveRequest {
        count: 1,
        lease: None,
        wait: Some(Duration::ZERO),
    };
    assert_forbidden(
        queues
            .push(c, q.clone(), vec!["2".into()], None, None)
            .await,
        "push",
    );
    assert_forbidden(queues.pop(c, &q, 1).await, "pop");
    assert_forbidden(queues.receive(c, &q, receive).await, "receive");
    assert_forbidden(
        queues
            .settle(c, &q, &["1.0000000000000000".into()], Settlement::Ack)
            .await,
        "settle",
    );
    assert_forbidden(queues.info(c, &q).await, "info");
    assert_forbidden(
        queues.configure(c, &q, &SettingsPatch::default()).await,
        "configure",
    );
    assert_forbidden(queues.purge(c, &q).await, "purge");
    assert_forbidden(queues.dead_letters(c, &q, 1).await, "dead letters");
    assert_forbidden(queues.peek(c, &q, 1).await, "peek");
    let producer = caller(&["queue:orders:produce"]);
    assert_forbidden(queues.peek(&producer, &q, 1).await, "peek by a producer");
    assert_forbidden(queues.redrive(c, &q, 1).await, "redrive");
    assert_forbidden(queues.delete(c, &q).await, "delete");
    assert!(
        queues.list(c).await.unwrap().is_empty(),
        "list shows only granted queues"
    );

    assert_forbidden(
        tasks.create(c, q.clone(), "{}", None, Duration::ZERO).await,
        "create task",
    );
    assert_forbidden(tasks.get(c, &task.id).await, "get task");
    assert_forbidden(tasks.wait(c, &task.id, Duration::ZERO).await, "wait task");
    assert_forbidden(
        tasks
            .finish(
                c,
                &task.id,
                "1.0000000000000000",
                TaskFinish::Succeeded {
                    result: "1".into(),
                    upstream_status: None,
                },
            )
            .await,
        "finish task",
    );
    let unknown = TaskId::generate();
    assert!(matches!(
        tasks.get(c, &unknown).await,
        Err(DomainError::NotFound(_))
    ));

    let s = StreamName::parse("events").unwrap();
    let event = serde_json::json!({
        "event": {"name": "E", "version": 1},
        "system": {"id": "s", "name": "s", "time": "t", "timezone": "UTC"},
        "trigger": {"type": "t", "name": "n"},
        "payload": {}
    });
    assert_forbidden(
        streams
            .append(c, s.clone(), "p".into(), event.to_string(), &event)
            .await,
        "append",
    );
    let read = ReadRequest {
        consumer: "c".into(),
        event_name: "E".into(),
        limit: 1,
        after: None,
        wait: Duration::ZERO,
    };
    assert_forbidden(streams.read(c, &s, read).await, "read");
    assert_forbidden(streams.info(c, &s).await, "stream info");
    assert_forbidden(
        streams
            .set_retention(c, &s, StreamRetention::default())
            .await,
        "retention",
    );
    assert_forbidden(streams.set_owner(c, &s, "q").await, "owner");

    let id = ClientId::parse("victim").unwrap();
    assert_forbidden(
        clients::create(c, store.as_ref(), id.clone(), None, &[])
            .await
            .map(|_| ()),
        "create client",
    );
    assert_forbidden(clients::list(c, store.as_ref()).await, "list clients");
    assert_forbidden(
        clients::rotate(c, store.as_ref(), &id, None)
            .await
            .map(|_| ()),
        "rotate",
    );

    // Nothing changed: the message and the task are still there, as they were.
    let info = queues.info(&node, &q).await.unwrap();
    assert_eq!(info.counts.ready, 2);
    assert_eq!(info.tasks.pending, 1);
    store.close().await;
}

//! The node's `LISTEN` connection: turns other nodes' `NOTIFY`s into local wake-ups
//! and revocations. When the connection drops it reconnects, and then wakes every
//! waiter and forgets every cached client, since notifications sent meanwhile are lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{NOTIFY_CHANNEL, REVOKE_CHANNEL};
use crate::domain::{Revocation, Wakeups};

/// Pause between reconnection attempts while PostgreSQL is down.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Listens until `stop` is cancelled.
pub async fn listen(
    config: tokio_postgres::Config,
    wakeups: Arc<Wakeups>,
    stop: CancellationToken,
) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(notification) = message {
                            let _ = sender.send((
                                notification.channel().to_owned(),
                                notification.payload().to_owned(),
                            ));
                        }
                    }
                });
                let listening = client
                    .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}; LISTEN {REVOKE_CHANNEL}"))
                    .await;
                match listening {
                    Ok(()) => {
                        // Anything announced while this node was not listening is lost.
                        wakeups.signal_all();
                        wakeups.revoke(Revocation::All);
                        loop {
                            tokio::select! {
                                received = notifications.recv() => match received {
                                    Some((channel, payload)) if channel == REVOKE_CHANNEL => wakeups.revoke(Revocation::Client(payload)),
                                    Some((_, queue)) => wakeups.signal(&queue),
                                    None => break,
                                },
                                _ = stop.cancelled() => return,
                            }
                        }
                        tracing::warn!("postgres: the LISTEN connection dropped; reconnecting");
                    }
                    Err(error) => tracing::warn!(%error, "postgres: cannot LISTEN"),
                }
                driver.abort();
            }
            Err(error) => tracing::warn!(%error, "postgres: the LISTEN connection cannot connect"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

//! The node's subscription: turns other nodes' published wake-ups and revocations
//! into local ones. On a cluster, one node's subscription hears what is published
//! on any node. When it drops it reconnects, then wakes every waiter and forgets
//! every cached client, since what was published meanwhile is lost.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::domain::{Revocation, Wakeups};

/// Pause between reconnection attempts while Redis is down.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Listens on `[wake channel, revoke channel]` until `stop` is cancelled; payloads
/// are `<node id>|<key or client id>`, and this node's own are skipped. Each
/// reconnection tries the next of `urls` (a cluster's nodes), so one node down does
/// not silence the others.
pub async fn listen(
    urls: Vec<String>,
    root_cert: Option<Vec<u8>>,
    channels: [String; 2],
    node: String,
    wakeups: Arc<Wakeups>,
    stop: CancellationToken,
) {
    let [wake_channel, revoke_channel] = channels;
    let own = format!("{node}|");
    for url in urls.iter().cycle() {
        let subscribed = async {
            let client = super::client(url, root_cert.as_deref())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&wake_channel).await?;
            pubsub.subscribe(&revoke_channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(mut pubsub) => {
                wakeups.signal_all();
                wakeups.revoke(Revocation::All);
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let Ok(payload) = message.get_payload::<String>() else { continue };
                            if payload.starts_with(&own) {
                                continue;
                            }
                            let Some((_, key)) = payload.split_once('|') else { continue };
                            if message.get_channel_name() == revoke_channel {
                                wakeups.revoke(Revocation::Client(key.to_owned()));
                            } else {
                                wakeups.signal(key);
                            }
                        }
                        _ = stop.cancelled() => return,
                    }
                }
                tracing::warn!("redis: the subscription dropped; reconnecting");
            }
            Err(error) => tracing::warn!(%error, "redis: cannot subscribe to wake-ups"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

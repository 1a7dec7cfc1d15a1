//! In-process signals from the store: wake-ups for long-polls (a store signals a
//! queue after it commits a change that may make messages ready, a stream after an
//! append, a task when it finishes), and client revocations for credential caches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Notify};

/// The wake-up key of a stream's appends; `/` cannot occur in names, so it never
/// meets a queue's key.
pub fn stream_key(stream: &super::StreamName) -> String {
    format!("stream/{stream}")
}

/// The wake-up key of a task's finish; like [`stream_key`], never a queue's.
pub fn task_key(task: impl std::fmt::Display) -> String {
    format!("task/{task}")
}

/// Whether `key` names a queue (waited on by receives, which compete for its
/// messages) rather than a stream or a task (waited on by reads).
pub fn is_queue_key(key: &str) -> bool {
    !key.contains('/')
}

/// Revocations buffered per subscriber; one that falls further behind forgets every client.
const REVOCATION_BUFFER: usize = 256;

/// Per-queue notifiers and client revocations, shared by the store (which signals)
/// and the domain and auth layers (which wait).
#[derive(Debug)]
pub struct Wakeups {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    revocations: broadcast::Sender<Revocation>,
}

/// A change that invalidates cached credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// This client was deleted, or its grants or secret changed.
    Client(String),
    /// Revocations may have been missed (e.g. a lost connection): forget every client.
    All,
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            queues: Mutex::default(),
            revocations: broadcast::channel(REVOCATION_BUFFER).0,
        }
    }
}

impl Wakeups {
    /// Announces that a client was deleted or changed (here or on another node).
    pub fn revoke(&self, revocation: Revocation) {
        let _ = self.revocations.send(revocation);
    }

    /// Revocations from now on.
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    /// Registers interest in `queue`; the entry is removed when the last waiter drops its guard,
    /// so receives on names that never see a push do not grow the map.
    pub fn watch(self: &Arc<Self>, queue: &str) -> Watch {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let notify = queues.entry(queue.to_owned()).or_default().clone();
        Watch {
            wakeups: self.clone(),
            queue: queue.to_owned(),
            notify,
        }
    }

    /// Wakes the waiters of `key`; a no-op when none waits. On a queue it wakes one
    /// receive, since receives compete for the same messages: waking them all would
    /// have each of them ask the store, and all but one come back empty. The receive
    /// that finds messages hands on to the next (see [`Watch::hand_on`]), so a burst
    /// wakes as many as it feeds. On a stream or a task it wakes every waiter, since
    /// each reads for itself.
    pub fn signal(&self, key: &str) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = queues.get(key) {
            if is_queue_key(key) {
                notify.notify_one();
            } else {
                notify.notify_waiters();
            }
        }
    }

    /// Wakes every waiter of every queue, e.g. when a queue is deleted or at shutdown.
    pub fn signal_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for notify in queues.values() {
            notify.notify_waiters();
        }
    }
}

/// A waiter's registration on one queue; see [`Wakeups::watch`].
pub struct Watch {
    wakeups: Arc<Wakeups>,
    queue: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// The notifier to wait on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Wakes the next waiter on this queue: called by a receive that found messages,
    /// since more may be ready than one receive takes.
    pub fn hand_on(&self) {
        self.notify.notify_one();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut queues = self
            .wakeups
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Two holders left: the map and this guard, so no other waiter needs the entry.
        if Arc::strong_count(&self.notify) == 2 {
            queues.remove(&self.queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_only_while_watched() {
        let wakeups = Arc::new(Wakeups::default());
        let first = wakeups.watch("q");
        let second = wakeups.watch("q");
        drop(first);
        assert_eq!(wakeups.queues.lock().unwrap().len(), 1);
        drop(second);
        assert!(wakeups.queues.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_queue_wakes_one_waiter_a_stream_or_task_all() {
        use std::time::Duration;
        let wakeups = Arc::new(Wakeups::default());
        for (key, expected) in [("q", 1), ("stream/s", 2), ("task/t", 2)] {
            let watches = [wakeups.watch(key), wakeups.watch(key)];
            let mut waiting: Vec<_> = watches
                .iter()
                .map(|w| Box::pin(w.notify().notified()))
                .collect();
            for notified in &mut waiting {
                notified.as_mut().enable();
            }
            wakeups.signal(key);
            let mut woken = 0;
            for notified in waiting {
                if tokio::time::timeout(Duration::from_millis(20), notified)
                    .await
                    .is_ok()
                {
                    woken += 1;
                }
            }
            assert_eq!(woken, expected, "waiters woken on {key}");
        }
    }
}

//! In-process wake-ups for long-polls: a store signals a queue after it commits a
//! change that may make messages ready, and every receive waiting on that queue retries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Per-queue notifiers shared by the store (which signals) and the domain (which waits).
#[derive(Debug, Default)]
pub struct Wakeups {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    /// The notifier of `queue`, created on first use.
    pub fn queue(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes every receive waiting on `queue`; a no-op when none waits.
    pub fn signal(&self, queue: &str) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = queues.get(queue) {
            notify.notify_waiters();
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

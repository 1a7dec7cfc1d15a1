//! Admission of requests that wait on purpose (queue receive and stream read
//! long-polls, task waits) against one cap per node, and the extra time such a wait
//! grants its request under the edge's `request_timeout`.
//!
//! A request takes a slot only once it is about to wait (a wait was asked for and
//! nothing is ready), so the non-waiting hot path never touches the counter. Slots are
//! released in `Drop`: an error, a cancelled request or a panic cannot leak one. This
//! module must never block or wait itself: a full house is an immediate refusal.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;

use super::DomainError;

/// Default cap on waiting requests per node: each costs a few KiB (its connection,
/// its future, a timer), so 10,000 stay far below what a small node can hold.
pub const DEFAULT_MAX_WAITERS: usize = 10_000;
/// Default longest long-poll: long enough to spare a client most reconnects, short
/// enough for the idle timeouts of common proxies and load balancers.
pub const DEFAULT_MAX_POLL: Duration = Duration::from_secs(60);

tokio::task_local! {
    /// Time the request served on this task may run past the edge's request timeout,
    /// because it waits on purpose. Task-local rather than passed down, so that the
    /// slot that admits a wait is also what grants its time, and no handler can forget.
    static WAIT_ALLOWANCE: Cell<Duration>;
}

/// The one counter of waiting requests; cheap to clone, clones share it.
#[derive(Debug, Clone)]
pub struct Waiters {
    inner: Arc<Counter>,
}

#[derive(Debug)]
struct Counter {
    /// Requests holding a slot now.
    active: AtomicUsize,
    /// Most slots held at once.
    max: usize,
    /// Longest long-poll of a receive or a stream read.
    max_poll: Duration,
}

/// A held place among the waiters; released when dropped.
#[derive(Debug)]
pub struct WaitSlot {
    counter: Arc<Counter>,
}

impl Waiters {
    /// A counter admitting at most `max` waiters at once, whose long-polls last at
    /// most [`DEFAULT_MAX_POLL`].
    pub fn new(max: usize) -> Self {
        Self::with_max_poll(max, DEFAULT_MAX_POLL)
    }

    /// A counter admitting at most `max` waiters at once, whose long-polls last at most `max_poll`.
    pub fn with_max_poll(max: usize, max_poll: Duration) -> Self {
        Waiters {
            inner: Arc::new(Counter {
                active: AtomicUsize::new(0),
                max,
                max_poll,
            }),
        }
    }

    /// The longest a receive or a stream read long-polls; longer waits are cut to it.
    pub fn max_poll(&self) -> Duration {
        self.inner.max_poll
    }

    /// A slot for a request about to wait up to `wait`, or a refusal when `max` are
    /// waiting already. The request's time budget grows by `wait` (see [`scope`]).
    pub fn try_wait(&self, wait: Duration) -> Result<WaitSlot, DomainError> {
        let max = self.inner.max;
        // A compare-and-swap loop rather than add-then-undo: a transient count over
        // `max` would refuse another request while a slot is in fact free.
        self.inner
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < max).then_some(active + 1)
            })
            .map_err(|_| DomainError::TooManyWaiters { max })?;
        allow(wait);
        Ok(WaitSlot {
            counter: self.inner.clone(),
        })
    }

    /// Requests waiting now.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters::new(DEFAULT_MAX_WAITERS)
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.counter.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `future` (one request) with a time allowance of zero that waits inside it
/// extend; [`allowance`] reads it from within.
pub fn scope<F: Future>(future: F) -> TaskLocalFuture<Cell<Duration>, F> {
    WAIT_ALLOWANCE.scope(Cell::new(Duration::ZERO), future)
}

/// The extra time granted so far to the request of this task; zero outside [`scope`].
pub fn allowance() -> Duration {
    WAIT_ALLOWANCE.try_with(Cell::get).unwrap_or_default()
}

/// Grants the request of this task `wait` more than the request timeout (the largest
/// grant wins; they do not add up). Outside [`scope`] (a delivery worker, a unit
/// test) there is no request timeout, so nothing to grant.
pub fn allow(wait: Duration) {
    let _ = WAIT_ALLOWANCE.try_with(|allowance| allowance.set(allowance.get().max(wait)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_exact_and_slots_come_back_on_drop() {
        let waiters = Waiters::new(2);
        let first = waiters.try_wait(Duration::from_secs(1)).unwrap();
        let second = waiters.clone().try_wait(Duration::from_secs(1)).unwrap();
        assert!(matches!(
            waiters.try_wait(Duration::from_secs(1)),
            Err(DomainError::TooManyWaiters { max: 2 })
        ));
        assert_eq!(waiters.active(), 2);
        drop(first);
        let third = waiters.try_wait(Duration::from_secs(1)).unwrap();
        drop((second, third));
        assert_eq!(waiters.active(), 0);
    }

    #[tokio::test]
    async fn a_slot_grants_its_wait_to_the_request_in_scope_only() {
        let waiters = Waiters::new(1);
        let granted = scope(async {
            assert_eq!(allowance(), Duration::ZERO);
            let _slot = waiters.try_wait(Duration::from_secs(20)).unwrap();
            allow(Duration::from_secs(5));
            allowance()
        })
        .await;
        assert_eq!(granted, Duration::from_secs(20), "the largest grant wins");
        assert_eq!(
            allowance(),
            Duration::ZERO,
            "nothing leaks out of the scope"
        );
        allow(Duration::from_secs(1));
        assert_eq!(waiters.active(), 0);
    }
}

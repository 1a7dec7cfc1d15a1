//! Brute-force limits: after `max_failures` failed credential checks for one client
//! id or AWS access key id, or from one source address, within `window`, that id or
//! address is refused with 429 until the oldest of those failures leaves the window,
//! correct credentials included (else the limit would tell a guesser when it guessed
//! right).
//! Kept per node, in memory.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ids and addresses tracked at most; past it, those whose failures all left the
/// window are dropped, then the oldest, so a flood of made-up ids costs bounded memory.
const MAX_TRACKED: usize = 100_000;

/// Who failed: a claimed client id, or a source address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Suspect {
    /// A client id as claimed by the credentials.
    Client(String),
    /// An AWS access key id as claimed by a SigV4 signature; apart from client ids,
    /// which may be spelt alike.
    AccessKey(String),
    /// The address the request came from.
    Address(IpAddr),
}

/// Counts failures per suspect within a sliding window.
pub struct FailureLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<Suspect, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// At most `max_failures` failures per suspect within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        FailureLimiter {
            max_failures: max_failures.max(1) as usize,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `None` if none of `suspects` is locked out; else how long until the last
    /// lock-out among them ends.
    pub fn locked(&self, suspects: &[Suspect]) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        suspects
            .iter()
            .filter_map(|suspect| {
                let times = failures.get_mut(suspect)?;
                self.forget_expired(times, now);
                (times.len() >= self.max_failures)
                    .then(|| times.front().map(|&oldest| oldest + self.window - now))
                    .flatten()
            })
            .max()
    }

    /// Counts one failure against each of `suspects`.
    pub fn record(&self, suspects: &[Suspect]) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|&last| now.duration_since(last) < self.window)
            });
        }
        if failures.len() >= MAX_TRACKED {
            // Every entry is live: the one whose last failure is oldest goes.
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(suspect, _)| suspect.clone())
            {
                failures.remove(&oldest);
            }
        }
        for suspect in suspects {
            let times = failures.entry(suspect.clone()).or_default();
            self.forget_expired(times, now);
            times.push_back(now);
            // Only the newest `max_failures` matter for the lock-out's end.
            while times.len() > self.max_failures {
                times.pop_front();
            }
        }
    }

    fn forget_expired(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times
            .front()
            .is_some_and(|&oldest| now.duration_since(oldest) >= self.window)
        {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_a_suspect_after_max_failures_until_the_window_passes() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        let shop = [Suspect::Client("shop".into())];
        let other = [Suspect::Client("other".into())];
        for _ in 0..2 {
            limiter.record(&shop);
            assert_eq!(limiter.locked(&shop), None);
        }
        limiter.record(&shop);
        let wait = limiter
            .locked(&shop)
            .expect("locked after the third failure");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert_eq!(limiter.locked(&other), None, "others are unaffected");
        let both = [shop[0].clone(), other[0].clone()];
        assert!(limiter.locked(&both).is_some(), "any locked suspect locks");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.locked(&shop), None, "the window passed");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_ids() {
        let limiter = FailureLimiter::new(10, Duration::from_secs(60));
        for n in 0..(MAX_TRACKED + 10) {
            limiter.record(&[Suspect::Client(format!("id-{n}"))]);
        }
        assert!(limiter.failures.lock().unwrap().len() <= MAX_TRACKED);
    }
}

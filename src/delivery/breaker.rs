//! A circuit breaker per upstream host and port: after `failures` consecutive
//! failures no call goes to the host for `open_for`; then a single probe does, and
//! its outcome closes the breaker or opens it again. A host that is down costs one
//! call per `open_for`, not one per message.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::delivery::Breaker as Settings;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe may be in flight.
    HalfOpen {
        probing: bool,
    },
}

/// One upstream host's breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Yes (as the probe, when half-open).
    Pass,
    /// No: look again then.
    WaitUntil(Instant),
}

/// How long a worker that is not the probe waits before looking again.
const PROBE_WAIT: Duration = Duration::from_millis(200);

impl Breaker {
    /// Asks to call the host.
    pub fn gate(&self, settings: &Settings) -> Gate {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Gate::Pass,
            State::Open { until } if now < until => Gate::WaitUntil(until),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Gate::Pass
            }
            State::HalfOpen { probing: true } => {
                Gate::WaitUntil(now + PROBE_WAIT.min(settings.open_for))
            }
        }
    }

    /// The probe passed the gate but had nothing to send.
    pub fn release_probe(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::HalfOpen { probing: true } = *state {
            *state = State::HalfOpen { probing: false };
        }
    }

    /// Whether calls go freely (not open, not probing).
    pub fn is_closed(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Closed { .. }
        )
    }

    /// The host answered: close.
    pub fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Closed { failures: 0 };
    }

    /// The host failed: count it, and open when there were too many in a row.
    pub fn failed(&self, settings: &Settings) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let open = State::Open {
            until: Instant::now() + settings.open_for,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 < settings.failures => State::Closed {
                failures: failures + 1,
            },
            State::Open { until } => State::Open { until },
            _ => open,
        };
    }

    /// The state as `GET /queues/{q}` shows it.
    pub fn state_name(&self) -> &'static str {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { .. } => "closed",
            State::Open { until } if Instant::now() < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_and_probes_once() {
        let settings = Settings {
            failures: 2,
            open_for: Duration::from_secs(5),
        };
        let breaker = Breaker::default();
        breaker.failed(&settings);
        assert_eq!(breaker.gate(&settings), Gate::Pass);
        breaker.failed(&settings);
        assert!(matches!(breaker.gate(&settings), Gate::WaitUntil(_)));
        assert_eq!(breaker.state_name(), "open");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(breaker.gate(&settings), Gate::Pass, "the probe");
        assert!(
            matches!(breaker.gate(&settings), Gate::WaitUntil(_)),
            "only one probe"
        );
        breaker.failed(&settings);
        assert_eq!(breaker.state_name(), "open");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(breaker.gate(&settings), Gate::Pass);
        breaker.succeeded();
        assert_eq!(breaker.state_name(), "closed");
    }
}

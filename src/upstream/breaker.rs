//! Failing fast while an upstream is unreachable.
//!
//! After a request could not reach the upstream at all (connect error or
//! timeout, retries included), requests fail at once for a short hold, so
//! cached content is served as stale without every node waiting out the
//! retries. When the hold ends, exactly one request probes; the others keep
//! failing fast until it has an answer. Any HTTP response, whatever its
//! status, counts as reachable. This module must not retry or interpret
//! responses.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// How long to fail fast after the upstream was found unreachable.
pub const HOLD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    Probing,
}

/// One upstream's breaker.
pub struct Breaker {
    state: Arc<Mutex<State>>,
    hold: Duration,
    clock: Clock,
}

/// Permission to send; report the outcome with [`Admission::reachable`] or
/// [`Admission::unreachable`]. Dropped unreported (the request was
/// cancelled), a probe lets the next request probe again.
pub struct Admission {
    state: Arc<Mutex<State>>,
    probe: bool,
    hold: Duration,
    reported: bool,
    clock: Clock,
}

impl Breaker {
    pub fn new(hold: Duration, clock: Clock) -> Breaker {
        Breaker {
            state: Arc::new(Mutex::new(State::Closed)),
            hold,
            clock,
        }
    }

    /// Admit a request, or say how long until the upstream is tried again.
    pub fn admit(&self) -> Result<Admission, Duration> {
        let mut s = self.state.lock().expect("breaker lock");
        let now = self.clock.instant();
        let probe = match *s {
            State::Closed => false,
            State::Open { until } if now < until => return Err(until - now),
            State::Open { .. } => {
                *s = State::Probing;
                true
            }
            State::Probing => return Err(self.hold),
        };
        Ok(Admission {
            state: self.state.clone(),
            probe,
            hold: self.hold,
            reported: false,
            clock: self.clock.clone(),
        })
    }
}

impl Admission {
    /// The upstream answered (any status).
    pub fn reachable(mut self) {
        self.reported = true;
        *self.state.lock().expect("breaker lock") = State::Closed;
    }

    /// The upstream could not be reached.
    pub fn unreachable(mut self) {
        self.reported = true;
        *self.state.lock().expect("breaker lock") = State::Open {
            until: self.clock.instant() + self.hold,
        };
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut s = self.state.lock().expect("breaker lock");
            if *s == State::Probing {
                *s = State::Open {
                    until: self.clock.instant(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_then_lets_one_probe_through() {
        let clock = Clock::manual(std::time::SystemTime::UNIX_EPOCH);
        let b = Breaker::new(Duration::from_secs(5), clock.clone());
        b.admit().unwrap().unreachable();
        assert!(
            b.admit().is_err(),
            "requests must fail fast during the hold"
        );
        clock.advance(Duration::from_secs(4));
        assert!(b.admit().is_err(), "still within the hold");
        clock.advance(Duration::from_secs(1));
        let probe = b.admit().unwrap();
        assert!(b.admit().is_err(), "only one probe at a time");
        probe.reachable();
        b.admit().unwrap().reachable();
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_cancelled_probe_does_not_wedge_the_breaker() {
        let b = Breaker::new(Duration::ZERO, Clock::system());
        b.admit().unwrap().unreachable();
        let probe = b.admit().unwrap();
        drop(probe);
        assert!(
            b.admit().is_ok(),
            "the next request must be allowed to probe"
        );
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let clock = Clock::manual(std::time::SystemTime::UNIX_EPOCH);
        let b = Breaker::new(Duration::from_secs(5), clock.clone());
        b.admit().unwrap().unreachable();
        clock.advance(Duration::from_secs(5));
        b.admit().unwrap().unreachable();
        assert!(b.admit().is_err(), "a failed probe must start a new hold");
    }
}

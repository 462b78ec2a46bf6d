//! The time portcullis decides by: wall-clock time for tag freshness, verdict
//! lifetimes and `enforce_from`, and a monotonic reading for holds such as
//! the upstream breaker's.
//!
//! Owns one [`Clock`] handle, cheap to clone and handed to every module that
//! asks "what time is it?" for a decision. In production it reads the system
//! clocks; a manual clock (for tests and drills) stands still until
//! [`Clock::advance`] moves both readings, so behaviour that depends on time
//! passing is driven rather than slept for. Timeouts that guard I/O (read
//! timeouts, rate floors, shutdown grace) stay on tokio's timer: they bound
//! real waiting. This module must not do I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug)]
struct Manual {
    wall: SystemTime,
    mono: Instant,
    /// Nanoseconds advanced so far.
    offset: AtomicU64,
}

/// The clock decisions are made by.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Manual>>);

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `start` until advanced.
    pub fn manual(start: SystemTime) -> Clock {
        Clock(Some(Arc::new(Manual {
            wall: start,
            mono: Instant::now(),
            offset: AtomicU64::new(0),
        })))
    }

    fn offset(m: &Manual) -> Duration {
        Duration::from_nanos(m.offset.load(Ordering::SeqCst))
    }

    /// Wall-clock time.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            None => SystemTime::now(),
            Some(m) => m.wall + Self::offset(m),
        }
    }

    /// Monotonic time, for holds and ages.
    pub fn instant(&self) -> Instant {
        match &self.0 {
            None => Instant::now(),
            Some(m) => m.mono + Self::offset(m),
        }
    }

    /// Move a manual clock forward; returns false (and does nothing) for
    /// the system clock.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.0 {
            None => false,
            Some(m) => {
                let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
                let _ = m
                    .offset
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                        Some(o.saturating_add(nanos))
                    });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let c = Clock::manual(start);
        let i = c.instant();
        assert_eq!(c.now(), start);
        assert!(c.advance(Duration::from_secs(90)));
        assert_eq!(c.now(), start + Duration::from_secs(90));
        assert_eq!(c.instant() - i, Duration::from_secs(90));
        let shared = c.clone();
        shared.advance(Duration::from_secs(10));
        assert_eq!(c.now(), start + Duration::from_secs(100));
        assert!(!Clock::system().advance(Duration::from_secs(1)));
    }
}

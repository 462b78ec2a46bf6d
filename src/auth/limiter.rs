//! Failed logins per client address: after [`MAX_FAILURES`] within a
//! [`WINDOW`], that address's credentials are not checked at all (it gets
//! 429) until the window has passed since its first failure. Successful
//! logins do not count; a success does not wipe the count either, so
//! interleaving a known password does not buy more guesses. The table is
//! bounded; when it is full, expired entries go, then the oldest. This
//! module must not know how logins are checked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per address within a window.
pub const MAX_FAILURES: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most.
const ADDRESSES: usize = 16 * 1024;

#[derive(Default)]
pub struct Failures {
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Failures {
    /// `Some(seconds until allowed)` while `addr` is over its limit.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        let map = self.by_address.lock().expect("limiter lock");
        let (first, n) = map.get(&addr)?;
        let until = *first + WINDOW;
        (*n >= MAX_FAILURES && now < until).then(|| until.duration_since(now).as_secs().max(1))
    }

    /// Count a failure of `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut map = self.by_address.lock().expect("limiter lock");
        if map.len() >= ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, (first, _)| now < *first + WINDOW);
            if map.len() >= ADDRESSES
                && let Some(oldest) = map.iter().min_by_key(|(_, (f, _))| *f).map(|(a, _)| *a)
            {
                map.remove(&oldest);
            }
        }
        let e = map.entry(addr).or_insert((now, 0));
        if now >= e.0 + WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_passes() {
        let f = Failures::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(f.blocked(a, t0), None, "after {i}");
            f.failed(a, t0 + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(f.blocked(a, t0 + Duration::from_secs(10)), Some(50));
        // Another address is not affected.
        assert_eq!(f.blocked(b, t0), None);
        assert_eq!(f.blocked(a, t0 + WINDOW), None);
        // A new window starts from scratch.
        f.failed(a, t0 + WINDOW);
        assert_eq!(f.blocked(a, t0 + WINDOW), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let f = Failures::default();
        let t0 = Instant::now();
        for i in 0..(ADDRESSES as u32 + 100) {
            f.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(f.by_address.lock().unwrap().len() <= ADDRESSES);
    }
}

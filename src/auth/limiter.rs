//! Failed logins per client address: after [`MAX_FAILURES`] within a
//! [`WINDOW`], that address's credentials are not checked at all (it gets
//! 429) until the window has passed since its first failure. An attempt is
//! counted when it starts ([`Failures::begin`]) and uncounted only if it
//! succeeds, so parallel guesses cannot outrun the limit and a guess whose
//! request goes away still counts; a success does not wipe earlier
//! failures, so interleaving a known password buys no more guesses. IPv6
//! clients count by /64 (one host usually has the whole prefix). The table
//! is bounded; when it is full, expired entries go, then the oldest. This
//! module must not know how logins are checked.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

/// The address an attempt counts against: IPv6 by its /64.
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Failures {
    /// Start an attempt from `addr`: `Err(seconds until allowed)` while it
    /// is over its limit, else the attempt counts as a failure until
    /// [`Failures::succeeded`].
    pub fn begin(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let addr = key(addr);
        let mut map = self.by_address.lock().expect("limiter lock");
        if let Some((first, n)) = map.get(&addr) {
            let until = *first + WINDOW;
            if *n >= MAX_FAILURES && now < until {
                return Err(until.duration_since(now).as_secs().max(1));
            }
        }
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
        Ok(())
    }

    /// The attempt [`Failures::begin`] counted succeeded: uncount it.
    pub fn succeeded(&self, addr: IpAddr) {
        let addr = key(addr);
        let mut map = self.by_address.lock().expect("limiter lock");
        if let Some(e) = map.get_mut(&addr) {
            e.1 = e.1.saturating_sub(1);
        }
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
            assert_eq!(
                f.begin(a, t0 + Duration::from_secs(u64::from(i))),
                Ok(()),
                "attempt {i}"
            );
        }
        assert_eq!(f.begin(a, t0 + Duration::from_secs(10)), Err(50));
        // Another address is not affected.
        assert_eq!(f.begin(b, t0), Ok(()));
        // A new window starts from scratch.
        assert_eq!(f.begin(a, t0 + WINDOW), Ok(()));
    }

    #[test]
    fn attempts_count_while_they_run_and_successes_uncount_only_themselves() {
        let f = Failures::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        // Ten guesses at once: the eleventh is refused before any finishes.
        for _ in 0..MAX_FAILURES {
            f.begin(a, t0).unwrap();
        }
        assert!(f.begin(a, t0).is_err());
        // One of them was the right password: room for one more, no more.
        f.succeeded(a);
        assert_eq!(f.begin(a, t0), Ok(()));
        assert!(f.begin(a, t0).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix() {
        let f = Failures::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            let a: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            f.begin(a, t0).unwrap();
        }
        assert!(
            f.begin("2001:db8:1:2:ffff::1".parse().unwrap(), t0)
                .is_err()
        );
        assert_eq!(f.begin("2001:db8:1:3::1".parse().unwrap(), t0), Ok(()));
        // A v4-mapped address is its IPv4 address.
        for _ in 0..MAX_FAILURES {
            f.begin("::ffff:10.0.0.9".parse().unwrap(), t0).unwrap();
        }
        assert!(f.begin("10.0.0.9".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let f = Failures::default();
        let t0 = Instant::now();
        for i in 0..(ADDRESSES as u32 + 100) {
            let _ = f.begin(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(f.by_address.lock().unwrap().len() <= ADDRESSES);
    }
}

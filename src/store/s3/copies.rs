//! Which objects this replica keeps on its own disk beside the bucket
//! (`[store] local_cache`), and which to drop when they outgrow it: least
//! recently opened first. In memory only; rebuilt at start from the files
//! on disk. This module must not do I/O: it names victims, the store
//! deletes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::digest::Digest;

/// Local copies and their budget.
pub struct Copies {
    budget: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Size and last use of each copy.
    by_digest: HashMap<Digest, (u64, u64)>,
    /// Copies by last use, oldest first.
    by_use: BTreeMap<u64, Digest>,
    total: u64,
    clock: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, digest: &Digest) {
        if let Some((size, used)) = self.by_digest.remove(digest) {
            self.by_use.remove(&used);
            self.total -= size;
        }
    }
}

impl Copies {
    /// Room for `budget` bytes (0: no local copies at all).
    pub fn new(budget: u64) -> Copies {
        Copies {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether copies are kept at all.
    pub fn keeps(&self) -> bool {
        self.budget > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("local copies lock")
    }

    /// A copy of `size` bytes is on disk now: the copies to delete to make
    /// room (possibly this one, if it alone exceeds the budget).
    pub fn add(&self, digest: &Digest, size: u64) -> Vec<Digest> {
        let mut inner = self.lock();
        inner.remove(digest);
        let used = inner.tick();
        inner.by_digest.insert(digest.clone(), (size, used));
        inner.by_use.insert(used, digest.clone());
        inner.total = inner.total.saturating_add(size);
        let mut victims = Vec::new();
        while inner.total > self.budget {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some((n, _)) = inner.by_digest.remove(&oldest) {
                inner.total -= n;
            }
            victims.push(oldest);
        }
        victims
    }

    /// The copy of `digest` was opened: it is the most recently used.
    pub fn touch(&self, digest: &Digest) {
        let mut inner = self.lock();
        let Some(&(size, used)) = inner.by_digest.get(digest) else {
            return;
        };
        inner.by_use.remove(&used);
        let now = inner.tick();
        inner.by_use.insert(now, digest.clone());
        inner.by_digest.insert(digest.clone(), (size, now));
    }

    /// The copy of `digest` is gone.
    pub fn remove(&self, digest: &Digest) {
        self.lock().remove(digest);
    }

    /// Bytes and objects kept locally.
    #[cfg(test)]
    fn totals(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.total, inner.by_digest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn d(n: u8) -> Digest {
        Digest::of(Algorithm::Sha256, &[n])
    }

    #[test]
    fn the_least_recently_used_copies_go_first() {
        let c = Copies::new(10);
        assert!(c.add(&d(1), 4).is_empty());
        assert!(c.add(&d(2), 4).is_empty());
        c.touch(&d(1));
        // 4 + 4 + 4 > 10: the oldest use is d(2).
        assert_eq!(c.add(&d(3), 4), vec![d(2)]);
        assert_eq!(c.totals(), (8, 2));
        // Adding a copy again counts it once.
        assert!(c.add(&d(3), 4).is_empty());
        assert_eq!(c.totals(), (8, 2));
        c.remove(&d(1));
        assert_eq!(c.totals(), (4, 1));
        // Larger than the budget alone: it goes too.
        assert_eq!(c.add(&d(4), 11), vec![d(3), d(4)]);
        assert_eq!(c.totals(), (0, 0));
    }

    #[test]
    fn no_budget_keeps_nothing() {
        let c = Copies::new(0);
        assert!(!c.keeps());
        assert_eq!(c.add(&d(1), 1), vec![d(1)]);
    }
}

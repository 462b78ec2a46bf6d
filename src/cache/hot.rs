//! Recently served manifests and lists, kept in memory.
//!
//! Owns a byte-bounded, least-recently-used map from digest to verified
//! manifest bytes, so that the requests nodes send most often (a `HEAD` on a
//! tag, a `GET` of a manifest by digest) are answered without touching the
//! disk or the blocking pool. Only bytes that were verified against their
//! digest enter it (they come from the store or from a fetch that just
//! checked them). It does not decide what is cached: callers ask the index
//! first, so an object evicted or forgotten there is never served from here.
//! This module must not do I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::digest::Digest;

/// The largest share of the budget one manifest may take.
const MAX_SHARE: u64 = 8;

struct Entry {
    bytes: Bytes,
    media_type: Arc<str>,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    map: HashMap<Digest, Entry>,
    /// tick -> digest, oldest first.
    order: BTreeMap<u64, Digest>,
    bytes: u64,
    tick: u64,
}

/// Verified manifest bytes by digest, at most `budget` bytes in all.
pub struct HotManifests {
    lru: Mutex<Lru>,
    budget: u64,
}

impl HotManifests {
    /// A map holding at most `budget` bytes of manifests (0 turns it off).
    pub fn new(budget: u64) -> HotManifests {
        HotManifests {
            lru: Mutex::new(Lru::default()),
            budget,
        }
    }

    fn lru(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().expect("hot manifests lock")
    }

    /// The bytes and media type of `digest`, marking it recently used.
    pub fn get(&self, digest: &Digest) -> Option<(Bytes, Arc<str>)> {
        let mut lru = self.lru();
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.map.get_mut(digest)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let found = (entry.bytes.clone(), entry.media_type.clone());
        lru.order.remove(&old);
        lru.order.insert(tick, digest.clone());
        Some(found)
    }

    /// Keep verified bytes; the least recently used go when over budget.
    pub fn insert(&self, digest: &Digest, bytes: Bytes, media_type: Arc<str>) {
        let size = bytes.len() as u64;
        if size > self.budget / MAX_SHARE {
            return;
        }
        let mut lru = self.lru();
        lru.tick += 1;
        let tick = lru.tick;
        let entry = Entry {
            bytes,
            media_type,
            tick,
        };
        if let Some(old) = lru.map.insert(digest.clone(), entry) {
            lru.order.remove(&old.tick);
            lru.bytes -= old.bytes.len() as u64;
        }
        lru.order.insert(tick, digest.clone());
        lru.bytes += size;
        while lru.bytes > self.budget {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(e) = lru.map.remove(&oldest) {
                lru.bytes -= e.bytes.len() as u64;
            }
        }
    }

    /// Drop `digests` (evicted or forgotten by the index).
    pub fn remove(&self, digests: &[Digest]) {
        let mut lru = self.lru();
        for d in digests {
            if let Some(e) = lru.map.remove(d) {
                lru.order.remove(&e.tick);
                lru.bytes -= e.bytes.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn item(n: u8, len: usize) -> (Digest, Bytes) {
        let bytes = Bytes::from(vec![n; len]);
        (Digest::of(Algorithm::Sha256, &bytes), bytes)
    }

    #[test]
    fn least_recently_used_go_first_and_the_budget_holds() {
        let hot = HotManifests::new(800);
        let t: Arc<str> = Arc::from("application/vnd.oci.image.manifest.v1+json");
        let (a, b, c) = (item(1, 100), item(2, 100), item(3, 100));
        for (d, bytes) in [&a, &b] {
            hot.insert(d, bytes.clone(), t.clone());
        }
        // Touch a: b is now the least recently used.
        assert_eq!(hot.get(&a.0).unwrap().0, a.1);
        for n in 4..=10 {
            let (d, bytes) = item(n, 100);
            hot.insert(&d, bytes, t.clone());
        }
        assert_eq!(hot.lru().bytes, 800);
        assert!(hot.get(&b.0).is_none(), "the least recently used stayed");
        assert!(hot.get(&a.0).is_some(), "a recently used one went");
        hot.insert(&c.0, c.1.clone(), t.clone());
        assert!(hot.lru().bytes <= 800);
        hot.remove(std::slice::from_ref(&c.0));
        assert!(hot.get(&c.0).is_none());
    }

    #[test]
    fn oversized_manifests_and_a_zero_budget_are_not_kept() {
        let t: Arc<str> = Arc::from("application/vnd.oci.image.index.v1+json");
        let hot = HotManifests::new(800);
        let (d, bytes) = item(1, 101);
        hot.insert(&d, bytes, t.clone());
        assert!(
            hot.get(&d).is_none(),
            "one manifest took over 1/8 of the budget"
        );
        let off = HotManifests::new(0);
        let (d, bytes) = item(2, 1);
        off.insert(&d, bytes, t);
        assert!(off.get(&d).is_none());
        assert_eq!(off.lru().bytes, 0);
    }

    #[test]
    fn reinserting_replaces_without_double_counting() {
        let t: Arc<str> = Arc::from("x/y");
        let hot = HotManifests::new(1000);
        let (d, bytes) = item(1, 100);
        hot.insert(&d, bytes.clone(), t.clone());
        hot.insert(&d, bytes, t);
        assert_eq!(hot.lru().bytes, 100);
    }
}

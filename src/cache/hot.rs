//! Recently served manifests and lists, kept in memory.
//!
//! Owns a byte-bounded, least-recently-used map from digest to verified
//! manifests (bytes and their parsed form), so that the requests nodes send most often (a `HEAD` on a
//! tag, a `GET` of a manifest by digest) are answered without touching the
//! disk or the blocking pool. Only bytes that were verified against their
//! digest enter it (they come from the store or from a fetch that just
//! checked them). It does not decide what is cached: callers ask the index
//! first, so an object evicted or forgotten there is never served from here.
//! This module must not do I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::manifest::Manifest;

/// The largest share of the budget one manifest may take.
const MAX_SHARE: u64 = 8;

struct Entry {
    manifest: Manifest,
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

    /// The parsed manifest `digest`, marking it recently used.
    pub fn get(&self, digest: &Digest) -> Option<Manifest> {
        let mut lru = self.lru();
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.map.get_mut(digest)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let found = entry.manifest.clone();
        lru.order.remove(&old);
        lru.order.insert(tick, digest.clone());
        Some(found)
    }

    /// Keep a verified manifest; the least recently used go when over budget.
    pub fn insert(&self, manifest: &Manifest) {
        let size = manifest.bytes.len() as u64;
        let digest = &manifest.digest;
        if size > self.budget / MAX_SHARE {
            return;
        }
        let mut lru = self.lru();
        lru.tick += 1;
        let tick = lru.tick;
        let entry = Entry {
            manifest: manifest.clone(),
            tick,
        };
        if let Some(old) = lru.map.insert(digest.clone(), entry) {
            lru.order.remove(&old.tick);
            lru.bytes -= old.manifest.bytes.len() as u64;
        }
        lru.order.insert(tick, digest.clone());
        lru.bytes += size;
        while lru.bytes > self.budget {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(e) = lru.map.remove(&oldest) {
                lru.bytes -= e.manifest.bytes.len() as u64;
            }
        }
    }

    /// Drop `digests` (evicted or forgotten by the index).
    pub fn remove(&self, digests: &[Digest]) {
        let mut lru = self.lru();
        for d in digests {
            if let Some(e) = lru.map.remove(d) {
                lru.order.remove(&e.tick);
                lru.bytes -= e.manifest.bytes.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest of about `len` bytes, distinct for each `n`.
    fn item(n: u8, len: usize) -> Manifest {
        let pad = "x".repeat(len.saturating_sub(160));
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{{"n":"{n:03}","p":"{pad}"}}}}"#
        );
        let bytes = bytes::Bytes::from(json);
        let digest = Digest::of(crate::digest::Algorithm::Sha256, &bytes);
        Manifest::check(&digest, bytes, None).unwrap()
    }

    #[test]
    fn least_recently_used_go_first_and_the_budget_holds() {
        let (a, b, c) = (item(1, 200), item(2, 200), item(3, 200));
        let size = a.bytes.len() as u64;
        let hot = HotManifests::new(8 * size);
        hot.insert(&a);
        hot.insert(&b);
        // Touch a: b is now the least recently used.
        assert_eq!(hot.get(&a.digest).unwrap().bytes, a.bytes);
        for n in 4..=10 {
            hot.insert(&item(n, 200));
        }
        assert_eq!(hot.lru().bytes, 8 * size);
        assert!(
            hot.get(&b.digest).is_none(),
            "the least recently used stayed"
        );
        assert!(hot.get(&a.digest).is_some(), "a recently used one went");
        hot.insert(&c);
        assert!(hot.lru().bytes <= 8 * size);
        hot.remove(std::slice::from_ref(&c.digest));
        assert!(hot.get(&c.digest).is_none());
    }

    #[test]
    fn oversized_manifests_and_a_zero_budget_are_not_kept() {
        let m = item(1, 200);
        let hot = HotManifests::new(8 * m.bytes.len() as u64 - 1);
        hot.insert(&m);
        assert!(
            hot.get(&m.digest).is_none(),
            "one manifest took over 1/8 of the budget"
        );
        let off = HotManifests::new(0);
        off.insert(&m);
        assert!(off.get(&m.digest).is_none());
        assert_eq!(off.lru().bytes, 0);
    }

    #[test]
    fn reinserting_replaces_without_double_counting() {
        let m = item(1, 200);
        let hot = HotManifests::new(1 << 20);
        hot.insert(&m);
        hot.insert(&m);
        assert_eq!(hot.lru().bytes, m.bytes.len() as u64);
    }
}

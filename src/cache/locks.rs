//! Per-digest locks: publishing an object, evicting it and quarantining it
//! exclude each other for that digest only, so that an eviction can never
//! delete a file a fill has just renamed into place, while fills of
//! unrelated digests publish (fsync, rename, index commit) side by side.
//! Entries live only while someone holds or waits for them. This module must
//! not know what the locks guard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::digest::Digest;

type Map = Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>;

/// Locks by digest.
#[derive(Clone, Default)]
pub struct DigestLocks(Map);

/// Holds one digest's lock; released on drop.
pub struct DigestGuard {
    map: Map,
    digest: Digest,
    guard: Option<OwnedMutexGuard<()>>,
}

impl DigestLocks {
    pub async fn lock(&self, digest: &Digest) -> DigestGuard {
        let lock = self
            .0
            .lock()
            .expect("digest locks")
            .entry(digest.clone())
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        DigestGuard {
            map: self.0.clone(),
            digest: digest.clone(),
            guard: Some(guard),
        }
    }

    /// Lock several digests (in a fixed order, so two callers never deadlock).
    pub async fn lock_all(&self, digests: &[Digest]) -> Vec<DigestGuard> {
        let mut sorted: Vec<&Digest> = digests.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut out = Vec::with_capacity(sorted.len());
        for d in sorted {
            out.push(self.lock(d).await);
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("digest locks").len()
    }
}

impl Drop for DigestGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().expect("digest locks");
        // Only this map holds it: nobody else waits, so forget it.
        if map
            .get(&self.digest)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[tokio::test]
    async fn one_digest_is_exclusive_and_others_are_not() {
        let locks = DigestLocks::default();
        let a = Digest::of(Algorithm::Sha256, b"a");
        let b = Digest::of(Algorithm::Sha256, b"b");
        let held = locks.lock(&a).await;
        // Another digest is free while `a` is held.
        let other = tokio::time::timeout(std::time::Duration::from_secs(5), locks.lock(&b))
            .await
            .expect("an unrelated digest must not wait");
        drop(other);
        let waiting = tokio::spawn({
            let locks = locks.clone();
            let a = a.clone();
            async move { locks.lock(&a).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the same digest waits");
        drop(held);
        drop(waiting.await.unwrap());
        assert_eq!(locks.len(), 0, "no entry outlives its users");
    }
}

//! Background upkeep: least-recently-used eviction above `cache.max_size`,
//! and periodic flushing of access times to the index.
//!
//! Eviction runs when a publish pushes the cache over its limit (and on a
//! timer). It takes only unpinned objects (none being read; objects being
//! written are not in the index yet), and it holds each victim's digest lock
//! while it deletes the file and the entry, so a fill cannot publish that
//! digest between the two (one that published it again first keeps it). The task holds a weak handle: it ends when the cache is
//! dropped. This module must not serve requests.

use std::sync::Arc;
use std::time::Duration;

use super::Cache;

pub(super) fn spawn(cache: &Cache, flush_every: Duration) {
    let weak = Arc::downgrade(&cache.0);
    let wake = cache.0.evict_wanted.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(flush_every);
        ticker.tick().await;
        loop {
            let woken = tokio::select! {
                _ = wake.notified() => true,
                _ = ticker.tick() => false,
            };
            let Some(inner) = weak.upgrade() else { return };
            let cache = Cache(inner);
            if let Err(e) = evict(&cache).await {
                tracing::error!(error = %crate::error::chain(&e), "eviction failed");
            }
            if !woken && let Err(e) = cache.flush().await {
                tracing::error!(error = %crate::error::chain(&e), "flushing access times failed");
            }
        }
    });
}

/// Evict until the cache is within `max_size`.
pub(super) async fn evict(cache: &Cache) -> Result<(), super::CacheError> {
    let inner = &cache.0;
    let victims = inner.index.take_lru(inner.max_size);
    if victims.is_empty() {
        return Ok(());
    }
    let all: Vec<_> = victims.iter().map(|(d, _)| d.clone()).collect();
    let _locks = inner.locks.lock_all(&all).await;
    // A fill may have published one again since it was taken: it stays.
    let victims: Vec<_> = victims
        .into_iter()
        .filter(|(d, _)| inner.index.get(d).is_none())
        .collect();
    let bytes: u64 = victims.iter().map(|(_, n)| n).sum();
    let digests: Vec<_> = victims.into_iter().map(|(d, _)| d).collect();
    let count = digests.len() as u64;
    inner.hot.remove(&digests);
    inner.store.delete(digests.clone()).await?;
    inner.index.forget(digests).await?;
    inner.metrics.evicted(count, bytes);
    let (total, objects) = inner.index.totals();
    inner.metrics.cache_totals(total, objects);
    tracing::info!(
        evicted = count,
        evicted_bytes = bytes,
        cache_bytes = total,
        "evicted least-recently-used objects"
    );
    Ok(())
}

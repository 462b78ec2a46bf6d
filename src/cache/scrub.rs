//! Checking what the cache holds: the background scrub, and `fsck`.
//!
//! Bytes on disk are not trusted forever: a flipped bit in a cached blob
//! would otherwise be served as a complete, correctly named response. The
//! scrub re-hashes every indexed object in turn at `cache.scrub_rate` bytes
//! per second (paced on tokio's timer, hashing on the blocking pool), one
//! object at a time and pinned while it is read, then pauses before the next
//! pass. `fsck` does the same at full speed, once, and reports. Either way an
//! object that does not match its digest is quarantined: removed from the
//! index and the store, so the next request fetches it again. This module
//! must not serve requests.

use std::time::Duration;

use super::{Cache, CacheError};
use crate::digest::Digest;
use crate::store::{Check, rehash};

/// The pause between two scrub passes.
const PASS_PAUSE: Duration = Duration::from_secs(600);
/// Objects `fsck` re-hashes at once.
const FSCK_CONCURRENCY: usize = 4;

/// What checking objects found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    pub bytes: u64,
    /// Objects whose bytes did not match; removed.
    pub corrupt: Vec<Digest>,
    /// Objects the index named whose file was gone; forgotten.
    pub missing: Vec<Digest>,
}

impl Cache {
    /// Re-hash one indexed object (pinned while read) and quarantine it if
    /// it is bad. `None` when the index no longer holds it.
    async fn check_object(&self, digest: &Digest, rate: u64) -> Result<Option<Check>, CacheError> {
        let Some((_, pin)) = self.0.index.pin(digest) else {
            return Ok(None);
        };
        let check = rehash(&*self.0.store, digest, rate).await?;
        drop(pin);
        match &check {
            Check::Good { size } => self.0.metrics.scrubbed(*size),
            Check::Bad { actual, .. } => {
                tracing::error!(%digest, %actual, "a cached object does not match its digest (disk corruption?); it was removed and will be fetched again");
                self.0.metrics.corrupt_objects(1);
                self.quarantine(digest).await?;
            }
            Check::Absent => self.forget_missing(digest).await?,
        }
        Ok(Some(check))
    }

    /// Re-hash every object now, at full speed; bad ones are removed.
    pub async fn fsck(&self) -> Result<Report, CacheError> {
        use futures_util::StreamExt;
        let objects = self.0.index.objects();
        let checks: Vec<(Digest, Result<Option<Check>, CacheError>)> =
            futures_util::stream::iter(objects)
                .map(|(d, _)| async move {
                    let c = self.check_object(&d, 0).await;
                    (d, c)
                })
                .buffer_unordered(FSCK_CONCURRENCY)
                .collect()
                .await;
        let mut report = Report::default();
        for (d, c) in checks {
            match c? {
                None => {}
                Some(Check::Good { size }) => {
                    report.checked += 1;
                    report.bytes += size;
                }
                Some(Check::Bad { size, .. }) => {
                    report.checked += 1;
                    report.bytes += size;
                    report.corrupt.push(d);
                }
                Some(Check::Absent) => report.missing.push(d),
            }
        }
        report.corrupt.sort();
        report.missing.sort();
        Ok(report)
    }
}

/// Scrub in the background at `rate` bytes per second (0: never). The task
/// holds a weak handle: it ends when the cache is dropped.
pub(super) fn spawn(cache: &Cache, rate: u64) {
    if rate == 0 {
        return;
    }
    let weak = std::sync::Arc::downgrade(&cache.0);
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let objects = inner.index.objects();
            drop(inner);
            let mut report = Report::default();
            for (digest, _) in objects {
                let Some(inner) = weak.upgrade() else { return };
                let cache = Cache(inner);
                match cache.check_object(&digest, rate).await {
                    Ok(Some(Check::Good { size })) => {
                        report.checked += 1;
                        report.bytes += size;
                    }
                    Ok(Some(Check::Bad { .. })) => report.corrupt.push(digest),
                    Ok(Some(Check::Absent)) => report.missing.push(digest),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%digest, error = %crate::error::chain(&e), "the scrub could not check an object");
                    }
                }
            }
            tracing::info!(
                checked = report.checked,
                bytes = report.bytes,
                corrupt = report.corrupt.len(),
                missing = report.missing.len(),
                "scrub pass done"
            );
            tokio::time::sleep(PASS_PAUSE).await;
        }
    });
}

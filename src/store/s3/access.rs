//! When objects in the shared bucket were last used, across replicas, and
//! the explicit garbage collection that reads it.
//!
//! A replica that opens an object writes an empty marker object,
//! `<prefix>access/<algorithm>/<two hex>/<hex>`, at most once per object
//! per `[store] access_interval` (1 h by default): one small `PUT` per
//! object in use per interval, from a bounded queue, off the request path.
//! An object's last use is the later of its own `LastModified` (when it was
//! stored) and its marker's. [`collect`] lists both and deletes objects
//! last used longer ago than asked, with their markers, and markers left
//! without an object. Only keys in the layout portcullis writes are
//! considered; anything else in the bucket is never touched. This module
//! must not decide what the cache holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::client::{S3, S3Error};
use super::objects;
use crate::digest::Digest;

/// Markers waiting to be written, at most; more are dropped (and the
/// object is marked at its next use).
const QUEUE: usize = 4096;
/// Markers written at once.
const WRITERS: usize = 4;
/// Objects remembered as recently marked, at most.
const REMEMBERED: usize = 1 << 20;

/// The key of `digest`'s access marker under `prefix`.
pub fn marker_key(prefix: &str, digest: &Digest) -> String {
    objects::in_layout(prefix, "access", digest)
}

/// Records uses of objects as markers in the bucket.
pub struct Marks {
    interval: Duration,
    /// When each object was last marked by this replica.
    marked: Arc<Mutex<HashMap<Digest, Instant>>>,
    queue: mpsc::Sender<Digest>,
}

impl Marks {
    /// Start the marker writer (it ends when the `Marks` is dropped).
    pub fn start(s3: S3, prefix: String, interval: Duration) -> Marks {
        let (queue, rx) = mpsc::channel::<Digest>(QUEUE);
        let marked = Arc::new(Mutex::new(HashMap::new()));
        let forget = marked.clone();
        tokio::spawn(async move {
            stream_of(rx)
                .for_each_concurrent(WRITERS, |digest| {
                    let (s3, key, forget) = (s3.clone(), marker_key(&prefix, &digest), forget.clone());
                    async move {
                        if let Err(e) = s3.put(&key, bytes::Bytes::new()).await {
                            tracing::debug!(key, error = %crate::error::chain(&e), "cannot write an access marker; it is written at the next use");
                            forget.lock().expect("marks lock").remove(&digest);
                        }
                    }
                })
                .await;
        });
        Marks {
            interval,
            marked,
            queue,
        }
    }

    /// `digest` was used: mark it, unless this replica did within the interval.
    pub fn used(&self, digest: &Digest) {
        let now = Instant::now();
        {
            let mut marked = self.marked.lock().expect("marks lock");
            if marked
                .get(digest)
                .is_some_and(|at| now.duration_since(*at) < self.interval)
            {
                return;
            }
            if marked.len() >= REMEMBERED {
                marked.clear();
            }
            marked.insert(digest.clone(), now);
        }
        if self.queue.try_send(digest.clone()).is_err() {
            self.marked.lock().expect("marks lock").remove(digest);
            tracing::debug!(%digest, "the access marker queue is full; the object is marked at its next use");
        }
    }
}

/// A receiver as a stream.
fn stream_of<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// What [`collect`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    /// Objects in the bucket, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects last used too long ago: deleted (or, dry, to be), and their bytes.
    pub old: u64,
    pub old_bytes: u64,
    /// Markers without an object, deleted (or to be).
    pub stray_markers: u64,
    /// Keys in the bucket outside portcullis's layout, left alone.
    pub foreign: u64,
}

/// Every key under `prefix` with its time.
async fn list_all(s3: &S3, prefix: &str) -> Result<Vec<super::client::Listed>, S3Error> {
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let (page, token) = s3.list(prefix, next.as_deref()).await?;
        all.extend(page);
        match token {
            Some(t) => next = Some(t),
            None => return Ok(all),
        }
    }
}

/// The digest a key of `root` (`blobs/` or `access/`) names, if it is in
/// the layout exactly.
fn digest_of(prefix: &str, root: &str, key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(root)?;
    let (alg, rest) = rest.split_once('/')?;
    let (_, hex) = rest.split_once('/')?;
    let digest: Digest = format!("{alg}:{hex}").parse().ok()?;
    let canonical = match root {
        "blobs/" => objects::key(prefix, &digest),
        _ => marker_key(prefix, &digest),
    };
    (canonical == key).then_some(digest)
}

/// Why `portcullis gc` refused to run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(
        "the configuration keeps objects on local disk: gc is for [store] backend = \"s3\" (local objects are evicted by cache.max_size)"
    )]
    NotShared,
    #[error(
        "--older-than {older_than:?} is shorter than twice [store] access_interval ({interval:?}): objects in use could be deleted"
    )]
    TooRecent {
        older_than: Duration,
        interval: Duration,
    },
    #[error("cannot reach the bucket")]
    S3(#[source] S3Error),
}

/// `portcullis gc`: [`collect`] with the configured bucket.
pub async fn gc(
    settings: &super::BucketSettings,
    older_than: Duration,
    dry_run: bool,
    metrics: crate::metrics::Metrics,
) -> Result<Collected, GcError> {
    let interval = settings.access_interval;
    if older_than < interval.saturating_mul(2) {
        return Err(GcError::TooRecent {
            older_than,
            interval,
        });
    }
    let s3 = S3::new(&settings.s3, metrics).map_err(GcError::S3)?;
    collect(
        &s3,
        &settings.prefix,
        older_than,
        SystemTime::now(),
        dry_run,
    )
    .await
    .map_err(GcError::S3)
}

/// Delete objects under `prefix` last used more than `older_than` before
/// `now` (nothing when `dry_run`). Objects are listed before markers, so a
/// use marked while the objects are listed still counts.
pub async fn collect(
    s3: &S3,
    prefix: &str,
    older_than: Duration,
    now: SystemTime,
    dry_run: bool,
) -> Result<Collected, S3Error> {
    let blobs = list_all(s3, &format!("{prefix}blobs/")).await?;
    let markers = list_all(s3, &format!("{prefix}access/")).await?;
    let mut used: HashMap<Digest, (SystemTime, String)> = HashMap::new();
    let mut report = Collected::default();
    for m in markers {
        match digest_of(prefix, "access/", &m.key) {
            Some(d) => {
                used.insert(d, (m.modified, m.key));
            }
            None => report.foreign += 1,
        }
    }
    let cutoff = now
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut doomed = Vec::new();
    for b in blobs {
        let Some(d) = digest_of(prefix, "blobs/", &b.key) else {
            report.foreign += 1;
            continue;
        };
        report.objects += 1;
        report.bytes = report.bytes.saturating_add(b.size);
        let marker = used.remove(&d);
        let last = match &marker {
            Some((t, _)) => b.modified.max(*t),
            None => b.modified,
        };
        if last < cutoff {
            report.old += 1;
            report.old_bytes = report.old_bytes.saturating_add(b.size);
            doomed.push(b.key);
            doomed.extend(marker.map(|(_, k)| k));
        }
    }
    // Markers left over name no object; those written before the cutoff go.
    for (t, key) in used.into_values() {
        if t < cutoff {
            report.stray_markers += 1;
            doomed.push(key);
        }
    }
    if !dry_run {
        let results: Vec<Result<(), S3Error>> = futures_util::stream::iter(doomed)
            .map(|key| async move { s3.delete(&key).await })
            .buffer_unordered(WRITERS)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), S3Error>>()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn only_keys_in_the_layout_name_digests() {
        let d = Digest::of(Algorithm::Sha256, b"x");
        let blob = objects::key("p/", &d);
        let mark = marker_key("p/", &d);
        assert_eq!(digest_of("p/", "blobs/", &blob), Some(d.clone()));
        assert_eq!(digest_of("p/", "access/", &mark), Some(d.clone()));
        assert_eq!(digest_of("p/", "blobs/", &mark), None);
        assert_eq!(digest_of("", "blobs/", &blob), None);
        // A wrong shard, a stray suffix, upper case: not ours.
        let hex = d.hex();
        for key in [
            format!("p/blobs/sha256/zz/{hex}"),
            format!("p/blobs/sha256/{}/{hex}.tmp", &hex[..2]),
            format!("p/blobs/sha256/{}/{}", &hex[..2], hex.to_uppercase()),
            "p/blobs/readme".to_owned(),
        ] {
            assert_eq!(digest_of("p/", "blobs/", &key), None, "{key}");
        }
    }
}

//! The cache: a local registry of verified content, decorated with a proxy
//! that fills it from upstream.
//!
//! As in distribution's `registry/proxy`, the proxy is a decorator over the
//! local store: every operation first asks the local side (index + object
//! store) and goes upstream only on a miss, an expired tag, or never when
//! `offline = true`. This module owns the shared plumbing: opening and
//! reconciling storage at start, publishing verified objects (under a lock
//! per digest shared with eviction, so an eviction can never delete a file a
//! fill has just published, while unrelated digests publish side by side),
//! and the error type. The flows live in [`manifests`],
//! [`blobs`] and [`lists`]. Nothing from an upstream is stored or served
//! before it has been checked against its digest. This module must not build
//! HTTP responses.

pub mod blobs;
mod evict;
pub mod fill;
pub mod flight;
mod holdings;
pub use holdings::Kind as Held;
pub mod hot;
mod imports;
pub mod index;
pub mod lists;
mod locks;
pub mod manifests;
pub mod scratch;
pub mod scrub;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::digest::Digest;
use crate::manifest::ManifestError;
use crate::metrics::Metrics;
use crate::router::UpstreamId;
use crate::store::local::LocalStore;
use crate::store::s3::BucketStore;
use crate::store::{Check, ObjectStore, PendingObject, StoreError};
use crate::upstream::{UpstreamError, Upstreams};
use fill::Fill;
use flight::Flights;
use hot::HotManifests;
use index::{Index, IndexError, PinGuard};
use manifests::{ManifestKey, SharedManifest};

/// How often access times are written to the index.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);
/// Objects re-hashed at once when adopting them at start.
const ADOPT_CONCURRENCY: usize = 4;

/// Why the cache could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("upstream request failed")]
    Upstream(#[from] UpstreamError),
    #[error("object store failed")]
    Store(#[from] StoreError),
    #[error("cache index failed")]
    Index(#[from] IndexError),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("blob unknown")]
    BlobUnknown,
    #[error("not cached, and this mirror is offline")]
    Offline,
    #[error("manifest refused")]
    ManifestInvalid(#[source] ManifestError),
    #[error("upstream referrers response is not an image index")]
    BadReferrers,
    #[error("upstream did not say the blob's size")]
    NoLength,
    /// A fetch others shared: reads as its own failure, so an answer never
    /// says whether someone else was fetching the same thing.
    #[error(transparent)]
    Shared(Arc<CacheError>),
    #[error("the blob download ended without a result")]
    FillAbandoned,
    #[error(
        "too many blob downloads are running or waiting ({running} at once, {waiting} waiting): try again shortly"
    )]
    Busy { running: usize, waiting: usize },
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl CacheError {
    /// The underlying error, looking through shared fetches.
    pub fn root(&self) -> &CacheError {
        match self {
            CacheError::Shared(inner) => inner.root(),
            other => other,
        }
    }
}

/// A running fill, counted until dropped.
pub(crate) struct FillRunning(tokio::sync::watch::Sender<usize>);

impl Drop for FillRunning {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The cache, cheap to clone.
#[derive(Clone)]
pub struct Cache(Arc<Inner>);

struct Inner {
    index: Index,
    store: Arc<dyn ObjectStore>,
    upstreams: Upstreams,
    offline: bool,
    tag_ttl: Duration,
    max_size: u64,
    /// Re-hash cached blobs served whole.
    verify_reads: bool,
    /// `[auth]`: serve objects only through repositories that hold them.
    check_holdings: bool,
    blob_fills: Flights<Digest, Arc<Fill>>,
    manifest_flights: Flights<ManifestKey, SharedManifest>,
    /// Recently served manifests, in memory.
    hot: HotManifests,
    /// Held per digest while publishing, evicting or quarantining it.
    locks: locks::DigestLocks,
    evict_wanted: Arc<Notify>,
    /// Blob fills running (publishing included): shutdown waits for zero.
    fills_running: tokio::sync::watch::Sender<usize>,
    /// Slots for blob downloads (`cache.max_fills`) ...
    fill_slots: Arc<tokio::sync::Semaphore>,
    max_fills: usize,
    /// ... and how many may wait for one (`cache.fill_queue`).
    fill_queue: usize,
    fills_waiting: std::sync::atomic::AtomicUsize,
    /// Upstreams seen without a referrers API, and when.
    no_referrers_api: Mutex<HashMap<UpstreamId, Instant>>,
    metrics: Metrics,
    clock: Clock,
    /// `data_dir`: where work files beside the store may go.
    dir: std::path::PathBuf,
}

impl Cache {
    /// Open the store and index under `config.data_dir`, reconcile them, and
    /// start background eviction.
    pub async fn open(
        config: &Config,
        upstreams: Upstreams,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<Cache, CacheError> {
        let dir = config.data_dir.clone();
        let time = clock.clone();
        let backend = config.store.clone();
        let store_metrics = metrics.clone();
        // The bucket client spawns its marker writer: built on the runtime.
        let runtime = tokio::runtime::Handle::current();
        let (store, (index, opened)) =
            tokio::task::spawn_blocking(move || -> Result<_, CacheError> {
                let _runtime = runtime.enter();
                let store: Arc<dyn ObjectStore> = match &backend {
                    StoreConfig::Local => Arc::new(LocalStore::open(&dir)?),
                    StoreConfig::S3(settings) => {
                        Arc::new(BucketStore::open(&dir, settings, store_metrics)?)
                    }
                };
                let index = Index::open(&dir.join("index.redb"), time)?;
                Ok((store, index))
            })
            .await
            .map_err(CacheError::Task)??;
        if let Some(aside) = &opened.quarantined {
            tracing::error!(
                moved_to = %aside.display(),
                reason = opened.reason.as_deref().unwrap_or(""),
                "the cache index could not be read; it was moved aside and is rebuilt from the objects on disk (every object re-hashed; tags and verdicts are lost and will be fetched and checked again)"
            );
        }
        let cache = Cache(Arc::new(Inner {
            index,
            store,
            upstreams,
            offline: config.offline,
            tag_ttl: config.cache.tag_ttl,
            max_size: config.cache.max_size,
            verify_reads: config.cache.verify_reads,
            check_holdings: config.auth.is_some(),
            blob_fills: Flights::default(),
            manifest_flights: Flights::default(),
            hot: HotManifests::new(config.cache.manifest_memory),
            locks: locks::DigestLocks::default(),
            evict_wanted: Arc::new(Notify::new()),
            fills_running: tokio::sync::watch::Sender::new(0),
            fill_slots: Arc::new(tokio::sync::Semaphore::new(config.cache.max_fills)),
            max_fills: config.cache.max_fills,
            fill_queue: config.cache.fill_queue,
            fills_waiting: std::sync::atomic::AtomicUsize::new(0),
            no_referrers_api: Mutex::new(HashMap::new()),
            metrics,
            clock,
            dir: config.data_dir.clone(),
        }));
        cache.reconcile(&config.data_dir).await?;
        evict::spawn(&cache, FLUSH_INTERVAL);
        scrub::spawn(&cache, config.cache.scrub_rate);
        cache.watch_writable();
        Ok(cache)
    }

    /// Mirror the index's writability into the metrics.
    fn watch_writable(&self) {
        let mut writable = self.0.index.writable();
        let metrics = self.0.metrics.clone();
        metrics.index_writable(*writable.borrow());
        tokio::spawn(async move {
            while writable.changed().await.is_ok() {
                metrics.index_writable(*writable.borrow_and_update());
            }
        });
    }

    /// Whether the index accepts writes (readiness depends on it).
    pub fn is_writable(&self) -> bool {
        *self.0.index.writable().borrow()
    }

    /// Flush access times and close the index cleanly (at shutdown).
    pub async fn close(&self) {
        if let Err(e) = self.flush().await {
            tracing::error!(error = %crate::error::chain(&e), "flushing the index on shutdown failed");
        }
        self.0.index.close().await;
    }

    /// Make index and store agree: drop entries without bytes, discard
    /// partial writes, and adopt objects the index does not name (published
    /// just before a crash, or every object when the index was lost) once
    /// they are re-hashed; the ones that do not match are deleted.
    async fn reconcile(&self, dir: &Path) -> Result<(), CacheError> {
        let stored = self.0.store.list().await?;
        let report = self.0.index.reconcile(&stored).await?;
        let orphans = report.orphans.len();
        if orphans > 0 {
            tracing::info!(
                objects = orphans,
                "re-hashing objects the index does not name"
            );
        }
        let (adopted, bad) = self.adopt(report.orphans).await?;
        let (bytes, objects) = self.0.index.totals();
        self.0.metrics.cache_totals(bytes, objects);
        tracing::info!(
            data_dir = %dir.display(),
            objects,
            bytes,
            dropped_entries = report.dropped_entries,
            adopted_orphans = adopted,
            deleted_corrupt = bad,
            "cache opened"
        );
        if bytes > self.0.max_size {
            self.0.evict_wanted.notify_one();
        }
        Ok(())
    }

    /// Re-hash `orphans` and index the good ones (a manifest as a manifest,
    /// when its bytes parse as one); delete the bad. Returns (adopted, bad).
    async fn adopt(&self, orphans: Vec<Digest>) -> Result<(usize, usize), CacheError> {
        use futures_util::StreamExt;
        let results: Vec<Result<Option<bool>, CacheError>> = futures_util::stream::iter(orphans)
            .map(|d| async move {
                match crate::store::rehash(&*self.0.store, &d, 0).await? {
                    Check::Absent => Ok(None),
                    Check::Bad { .. } => {
                        self.0.metrics.corrupt_objects(1);
                        self.0.store.delete(vec![d]).await?;
                        Ok(Some(false))
                    }
                    Check::Good { size } => {
                        let media_type = self.manifest_type_on_disk(&d, size).await?;
                        drop(self.0.index.insert(&d, size, media_type).await?);
                        Ok(Some(true))
                    }
                }
            })
            .buffer_unordered(ADOPT_CONCURRENCY)
            .collect()
            .await;
        let mut counts = (0, 0);
        for r in results {
            match r? {
                Some(true) => counts.0 += 1,
                Some(false) => counts.1 += 1,
                None => {}
            }
        }
        Ok(counts)
    }

    /// The manifest type of a stored object whose bytes parse as a manifest.
    async fn manifest_type_on_disk(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<Option<&'static str>, CacheError> {
        if size > crate::upstream::MAX_MANIFEST_SIZE as u64 {
            return Ok(None);
        }
        let Some(object) = self.0.store.open(digest).await? else {
            return Ok(None);
        };
        let bytes = crate::store::read_chunk(&*object.reader, digest, 0, size as usize).await?;
        Ok(crate::manifest::Manifest::check(digest, bytes, None)
            .ok()
            .map(|m| m.media_type()))
    }

    pub fn is_offline(&self) -> bool {
        self.0.offline
    }

    /// Resolves once no blob fill is running. Clients may finish a response
    /// as soon as its bytes verify, while the fill still publishes them:
    /// shutdown waits here so that work is not cut off.
    pub async fn fills_settled(&self) {
        let mut rx = self.0.fills_running.subscribe();
        // An error means the sender is gone: nothing can be running.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// A slot for one blob download: at once when one is free, else after
    /// waiting in a bounded queue; when the queue is full, `Busy`.
    pub(crate) async fn fill_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, CacheError> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.0.fill_slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        /// Counts a fill waiting for a slot until dropped (also if the wait
        /// is cancelled).
        struct Waiting<'a>(&'a Inner);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fills_waiting.fetch_sub(1, Ordering::SeqCst);
                self.0.metrics.fills_waiting(-1);
            }
        }
        if self.0.fills_waiting.fetch_add(1, Ordering::SeqCst) >= self.0.fill_queue {
            self.0.fills_waiting.fetch_sub(1, Ordering::SeqCst);
            self.0.metrics.fill_refused();
            return Err(CacheError::Busy {
                running: self.0.max_fills,
                waiting: self.0.fill_queue,
            });
        }
        self.0.metrics.fills_waiting(1);
        let _waiting = Waiting(&self.0);
        self.0
            .fill_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CacheError::FillAbandoned)
    }

    /// Count a fill as running until the guard drops (also on panic).
    pub(crate) fn fill_running(&self) -> FillRunning {
        self.0.fills_running.send_modify(|n| *n += 1);
        FillRunning(self.0.fills_running.clone())
    }

    /// Write access times to disk (also done periodically).
    pub async fn flush(&self) -> Result<(), CacheError> {
        self.0.index.flush_access_times().await?;
        self.0.index.purge_verdicts().await?;
        Ok(())
    }

    /// A cached policy verdict (opaque to the cache).
    pub fn verdict(&self, key: &str) -> Option<Arc<[u8]>> {
        self.0.index.verdict(key)
    }

    /// Cache policy verdicts, each with its lifetime.
    pub async fn put_verdicts(
        &self,
        entries: Vec<(String, Duration, Vec<u8>)>,
    ) -> Result<(), CacheError> {
        Ok(self.0.index.put_verdicts(entries).await?)
    }

    /// Trust state kept under `key` (opaque to the cache, never evicted).
    pub fn trust(&self, key: &str) -> Option<Arc<[u8]>> {
        self.0.index.trust(key)
    }

    /// Keep trust state under `key`; durable when this returns.
    pub async fn put_trust(&self, key: String, value: Vec<u8>) -> Result<(), CacheError> {
        Ok(self.0.index.put_trust(key, value).await?)
    }

    /// Every trust state kept, by key.
    pub fn trust_entries(&self) -> Vec<(String, Arc<[u8]>)> {
        self.0.index.trust_entries()
    }

    /// Publish a verified object and index it; returns it pinned.
    async fn commit(
        &self,
        pending: Box<dyn PendingObject>,
        digest: &Digest,
        media_type: Option<&'static str>,
    ) -> Result<PinGuard, CacheError> {
        let size = pending.size();
        let pin = {
            let _publishing = self.0.locks.lock(digest).await;
            pending.publish().await?;
            self.0.index.insert(digest, size, media_type).await?
        };
        let (bytes, objects) = self.0.index.totals();
        self.0.metrics.cache_totals(bytes, objects);
        if bytes > self.0.max_size {
            self.0.evict_wanted.notify_one();
        }
        Ok(pin)
    }

    /// Store small bytes (a manifest, a referrers list) through the verified writer.
    async fn store_bytes(
        &self,
        digest: &Digest,
        bytes: Bytes,
        media_type: Option<&'static str>,
    ) -> Result<PinGuard, CacheError> {
        let mut writer = self
            .0
            .store
            .create(digest, Some(bytes.len() as u64))
            .await?;
        writer.append(bytes).await?;
        let pending = writer.finish().await?;
        self.commit(pending, digest, media_type).await
    }

    /// Read a whole stored manifest or list, re-hashed: bytes on disk are
    /// not trusted. Objects larger than a manifest may be (a blob's digest
    /// asked for as a manifest) are never read. A damaged object is
    /// quarantined and reads as absent, so it is fetched again.
    async fn read_object(
        &self,
        digest: &Digest,
    ) -> Result<Option<(Bytes, index::ObjectInfo)>, CacheError> {
        let Some((info, _pin)) = self.0.index.pin(digest) else {
            return Ok(None);
        };
        if info.size > crate::upstream::MAX_MANIFEST_SIZE as u64 {
            return Ok(None);
        }
        let reader = match self.0.store.open(digest).await? {
            Some(object) if object.size == info.size => object.reader,
            _ => {
                self.forget_missing(digest).await?;
                return Ok(None);
            }
        };
        let bytes = crate::store::read_chunk(&*reader, digest, 0, info.size as usize).await?;
        if bytes.len() as u64 != info.size {
            self.forget_missing(digest).await?;
            return Ok(None);
        }
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            tracing::error!(%digest, %actual, "a cached object does not match its digest (disk corruption?); it was removed and will be fetched again");
            self.0.metrics.corrupt_objects(1);
            drop(_pin);
            self.quarantine(digest).await?;
            return Ok(None);
        }
        Ok(Some((bytes, info)))
    }

    /// Remove an object whose bytes turned out to be bad: its file and its
    /// index entry, so the next request fetches it again.
    pub(crate) async fn quarantine(&self, digest: &Digest) -> Result<(), CacheError> {
        let _lock = self.0.locks.lock(digest).await;
        self.0.hot.remove(std::slice::from_ref(digest));
        self.0.index.forget(vec![digest.clone()]).await?;
        self.0.store.delete(vec![digest.clone()]).await?;
        self.discard_shared_later(digest);
        Ok(())
    }

    /// Bytes of `digest` did not match it: check its shared copy on its
    /// own, in the background, and remove it if it is bad too.
    pub(crate) fn discard_shared_later(&self, digest: &Digest) {
        let store = self.0.store.clone();
        let d = digest.clone();
        tokio::spawn(async move {
            if let Err(e) = store.discard_shared(&d).await {
                tracing::warn!(digest = %d, error = %crate::error::chain(&e), "cannot check the shared copy of an object whose bytes did not match");
            }
        });
    }

    /// An indexed object's file is gone or damaged (deleted or truncated by
    /// hand, disk trouble): forget it so the next request fetches it again.
    async fn forget_missing(&self, digest: &Digest) -> Result<(), CacheError> {
        tracing::warn!(%digest, "cached object is missing from the store; it will be fetched again");
        self.0.hot.remove(std::slice::from_ref(digest));
        self.0.index.forget(vec![digest.clone()]).await?;
        Ok(())
    }
}

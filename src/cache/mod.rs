//! The cache: a local registry of verified content, decorated with a proxy
//! that fills it from upstream.
//!
//! As in distribution's `registry/proxy`, the proxy is a decorator over the
//! local store: every operation first asks the local side (index + object
//! store) and goes upstream only on a miss, an expired tag, or never when
//! `offline = true`. This module owns the shared plumbing: opening and
//! reconciling storage at start, publishing verified objects (under one lock
//! shared with eviction, so an eviction can never delete a file a fill has
//! just published), and the error type. The flows live in [`manifests`],
//! [`blobs`] and [`lists`]. Nothing from an upstream is stored or served
//! before it has been checked against its digest. This module must not build
//! HTTP responses.

pub mod blobs;
mod evict;
pub mod fill;
pub mod flight;
pub mod hot;
pub mod index;
pub mod lists;
pub mod manifests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::config::Config;
use crate::digest::Digest;
use crate::manifest::ManifestError;
use crate::metrics::Metrics;
use crate::router::UpstreamId;
use crate::store::local::LocalStore;
use crate::store::{ObjectStore, PendingObject, StoreError};
use crate::upstream::{UpstreamError, Upstreams};
use fill::Fill;
use flight::Flights;
use hot::HotManifests;
use index::{Index, IndexError, PinGuard};
use manifests::{ManifestKey, SharedManifest};

/// How often access times are written to the index.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

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
    #[error("a shared upstream fetch failed")]
    Shared(#[source] Arc<CacheError>),
    #[error("the blob download ended without a result")]
    FillAbandoned,
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
    blob_fills: Flights<Digest, Arc<Fill>>,
    manifest_flights: Flights<ManifestKey, SharedManifest>,
    /// Recently served manifests, in memory.
    hot: HotManifests,
    /// Held while publishing or evicting objects.
    publish_lock: tokio::sync::Mutex<()>,
    evict_wanted: Arc<Notify>,
    /// Blob fills running (publishing included): shutdown waits for zero.
    fills_running: tokio::sync::watch::Sender<usize>,
    /// Upstreams seen without a referrers API, and when.
    no_referrers_api: Mutex<HashMap<UpstreamId, Instant>>,
    metrics: Metrics,
}

impl Cache {
    /// Open the store and index under `config.data_dir`, reconcile them, and
    /// start background eviction.
    pub async fn open(
        config: &Config,
        upstreams: Upstreams,
        metrics: Metrics,
    ) -> Result<Cache, CacheError> {
        let dir = config.data_dir.clone();
        let (store, index) = tokio::task::spawn_blocking(move || -> Result<_, CacheError> {
            let store = LocalStore::open(&dir)?;
            let index = Index::open(&dir.join("index.redb"))?;
            Ok((store, index))
        })
        .await
        .map_err(CacheError::Task)??;
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        let cache = Cache(Arc::new(Inner {
            index,
            store,
            upstreams,
            offline: config.offline,
            tag_ttl: config.cache.tag_ttl,
            max_size: config.cache.max_size,
            blob_fills: Flights::default(),
            manifest_flights: Flights::default(),
            hot: HotManifests::new(config.cache.manifest_memory),
            publish_lock: tokio::sync::Mutex::new(()),
            evict_wanted: Arc::new(Notify::new()),
            fills_running: tokio::sync::watch::Sender::new(0),
            no_referrers_api: Mutex::new(HashMap::new()),
            metrics,
        }));
        cache.reconcile(&config.data_dir).await?;
        evict::spawn(&cache, FLUSH_INTERVAL);
        Ok(cache)
    }

    /// Make index and store agree: drop entries without bytes, delete bytes
    /// without entries, discard partial writes.
    async fn reconcile(&self, dir: &Path) -> Result<(), CacheError> {
        let stored = self.0.store.list().await?;
        let inner = self.0.clone();
        let report = tokio::task::spawn_blocking(move || inner.index.reconcile(&stored))
            .await
            .map_err(CacheError::Task)??;
        let orphans = report.orphans.len();
        self.0.store.delete(report.orphans).await?;
        let (bytes, objects) = self.0.index.totals();
        self.0.metrics.cache_totals(bytes, objects);
        tracing::info!(
            data_dir = %dir.display(),
            objects,
            bytes,
            dropped_entries = report.dropped_entries,
            deleted_orphans = orphans,
            "cache opened"
        );
        if bytes > self.0.max_size {
            self.0.evict_wanted.notify_one();
        }
        Ok(())
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

    /// Publish a verified object and index it; returns it pinned.
    async fn commit(
        &self,
        pending: Box<dyn PendingObject>,
        digest: &Digest,
        media_type: Option<&'static str>,
    ) -> Result<PinGuard, CacheError> {
        let size = pending.size();
        let pin = {
            let _publishing = self.0.publish_lock.lock().await;
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
        let bytes = reader
            .read_at(0, info.size as usize)
            .await
            .map_err(|source| StoreError::Io {
                op: "read",
                path: digest.to_string().into(),
                source,
            })?;
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
        self.0.hot.remove(std::slice::from_ref(digest));
        self.0.index.forget(vec![digest.clone()]).await?;
        self.0.store.delete(vec![digest.clone()]).await?;
        Ok(())
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

//! The shared backend of the object store: objects in an S3-compatible
//! bucket that several replicas use, with an optional copy on this
//! replica's disk (`[store] local_cache`).
//!
//! A new object is spooled to a local file by the local store's verified
//! writer (followers read the spool as it grows), and uploaded from the
//! spool by a task of its own as it grows, in parts of
//! [`upload::PART_SIZE`]; the upload re-hashes what it reads back, and is
//! completed, under the object's final content-addressed key, only after
//! the writer verified every byte and the bytes read back match too. Until
//! then nothing exists under the key; a failed or abandoned write aborts
//! the upload. Publishing completes the upload, then keeps the spool as the
//! local copy (or drops it, when there is no local cache). An object
//! another replica stored is copied through a writer that uploads nothing.
//! Reads go to the local copy when there is one, else to the bucket by
//! ranged `GET`s. [`ObjectStore::delete`] and [`ObjectStore::list`] see only
//! the local copies: the bucket is shared, and only `portcullis gc`
//! deletes from it. This module must not know about the index or HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::access::Marks;
use super::client::{S3, S3Settings};
use super::copies::Copies;
use super::objects;
use super::upload::{PART_SIZE, Upload};
use crate::digest::{Digest, Hasher};
use crate::metrics::Metrics;
use crate::store::local::LocalStore;
use crate::store::{
    BoxFuture, Listing, ObjectReader, ObjectStore, ObjectWriter, PendingObject, StoreError,
    StoredObject,
};

/// How the shared backend is set up (`[store]` with `backend = "s3"`).
#[derive(Debug, Clone)]
pub struct BucketSettings {
    pub s3: S3Settings,
    /// Key prefix inside the bucket: empty, or ending in `/`.
    pub prefix: String,
    /// Bytes of objects also kept on local disk (0: none).
    pub local_cache: u64,
    /// How often, at most, a replica marks an object it uses.
    pub access_interval: Duration,
}

/// Objects in a shared bucket, with local copies.
pub struct BucketStore {
    local: Arc<LocalStore>,
    s3: S3,
    prefix: String,
    copies: Arc<Copies>,
    marks: Marks,
    metrics: Metrics,
    /// Memory for the windows of bucket reads ([`objects::WINDOW_MEMORY`]).
    windows: Arc<tokio::sync::Semaphore>,
}

impl BucketStore {
    /// Open the local side under `root` and the bucket client. Nothing is
    /// sent to the bucket yet.
    pub fn open(
        root: &Path,
        settings: &BucketSettings,
        metrics: Metrics,
    ) -> Result<BucketStore, StoreError> {
        let local = LocalStore::open(root)?;
        let s3 = S3::new(&settings.s3, metrics.clone()).map_err(StoreError::Shared)?;
        Ok(BucketStore {
            local: Arc::new(local),
            marks: Marks::start(
                s3.clone(),
                settings.prefix.clone(),
                settings.access_interval,
            ),
            s3,
            prefix: settings.prefix.clone(),
            copies: Arc::new(Copies::new(settings.local_cache)),
            metrics,
            windows: Arc::new(tokio::sync::Semaphore::new(objects::WINDOW_MEMORY)),
        })
    }

    fn key(&self, digest: &Digest) -> String {
        objects::key(&self.prefix, digest)
    }

    /// Start a writer: a local spool, and (for a new object) its upload.
    async fn writer(
        &self,
        digest: &Digest,
        expected_len: Option<u64>,
        upload: bool,
    ) -> Result<Box<dyn ObjectWriter>, StoreError> {
        let spool = self.local.create(digest, expected_len).await?;
        let upload = upload.then(|| {
            let (size_tx, size_rx) = oneshot::channel();
            let task = tokio::spawn(upload_spool(
                Upload::new(&self.s3, &self.key(digest)),
                digest.clone(),
                spool.reader(),
                spool.written(),
                size_rx,
            ));
            Uploading { size_tx, task }
        });
        Ok(Box::new(BucketWriter {
            spool,
            upload,
            digest: digest.clone(),
            local: self.local.clone(),
            copies: self.copies.clone(),
        }))
    }
}

/// The task uploading a new object, and how it learns the verified size.
struct Uploading {
    size_tx: oneshot::Sender<u64>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

/// Read `len` bytes of the spool at `offset`, in one piece.
async fn read_spool(
    reader: &dyn ObjectReader,
    digest: &Digest,
    offset: u64,
    len: usize,
) -> Result<Bytes, StoreError> {
    let bytes = crate::store::read_chunk(reader, digest, offset, len).await?;
    if bytes.len() != len {
        return Err(StoreError::LengthMismatch {
            expected: offset.saturating_add(len as u64),
            actual: offset.saturating_add(bytes.len() as u64),
        });
    }
    Ok(bytes)
}

/// Hash `bytes` into `hasher` off the async threads.
async fn hash(mut hasher: Hasher, bytes: Bytes) -> Result<Hasher, StoreError> {
    tokio::task::spawn_blocking(move || {
        hasher.update(&bytes);
        hasher
    })
    .await
    .map_err(StoreError::Task)
}

/// Upload the spool of `digest` as it grows; once the writer verified it
/// and says its size, upload the rest and complete, if the bytes read back
/// match the digest too. Without a size (the write failed or was dropped),
/// abort.
async fn upload_spool(
    mut upload: Upload,
    digest: Digest,
    reader: Arc<dyn ObjectReader>,
    mut written: watch::Receiver<u64>,
    mut size: oneshot::Receiver<u64>,
) -> Result<(), StoreError> {
    let mut hasher = Hasher::new(digest.algorithm());
    let mut sent = 0u64;
    let mut growing = true;
    let total = loop {
        // A part goes up only when more follows it: an object of one part
        // or less is a single PUT at the end.
        let available = *written.borrow_and_update();
        if available.saturating_sub(sent) > PART_SIZE as u64 {
            let part = read_spool(&*reader, &digest, sent, PART_SIZE).await?;
            hasher = hash(hasher, part.clone()).await?;
            upload.part(part).await.map_err(StoreError::Upload)?;
            sent += PART_SIZE as u64;
            continue;
        }
        tokio::select! {
            changed = written.changed(), if growing => growing = changed.is_ok(),
            verified = &mut size => match verified {
                Ok(n) => break n,
                Err(_) => {
                    // Never verified: nothing may appear under the key.
                    upload.abort().await.map_err(StoreError::Upload)?;
                    return Err(StoreError::WriterFailed);
                }
            },
        }
    };
    while total.saturating_sub(sent) > PART_SIZE as u64 {
        let part = read_spool(&*reader, &digest, sent, PART_SIZE).await?;
        hasher = hash(hasher, part.clone()).await?;
        upload.part(part).await.map_err(StoreError::Upload)?;
        sent += PART_SIZE as u64;
    }
    let rest_len = usize::try_from(total - sent).map_err(|_| StoreError::WriterFailed)?;
    let rest = read_spool(&*reader, &digest, sent, rest_len).await?;
    hasher = hash(hasher, rest.clone()).await?;
    let actual = hasher.finish();
    if actual != digest {
        // The spool changed under us (disk trouble): upload nothing.
        upload.abort().await.map_err(StoreError::Upload)?;
        return Err(StoreError::DigestMismatch {
            expected: digest,
            actual,
        });
    }
    upload.complete(rest).await.map_err(StoreError::Upload)
}

struct BucketWriter {
    spool: Box<dyn ObjectWriter>,
    upload: Option<Uploading>,
    digest: Digest,
    local: Arc<LocalStore>,
    copies: Arc<Copies>,
}

impl ObjectWriter for BucketWriter {
    fn append(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        self.spool.append(chunk)
    }

    fn written(&self) -> watch::Receiver<u64> {
        self.spool.written()
    }

    fn reader(&self) -> Arc<dyn ObjectReader> {
        self.spool.reader()
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn PendingObject>, StoreError>> {
        Box::pin(async move {
            let this = *self;
            // A failure here drops the size sender: the upload aborts.
            let pending = this.spool.finish().await?;
            let upload = match this.upload {
                Some(Uploading { size_tx, task }) => {
                    let _ = size_tx.send(pending.size());
                    Some(task)
                }
                None => None,
            };
            let pending: Box<dyn PendingObject> = Box::new(BucketPending {
                spool: pending,
                upload,
                digest: this.digest,
                local: this.local,
                copies: this.copies,
            });
            Ok(pending)
        })
    }
}

struct BucketPending {
    spool: Box<dyn PendingObject>,
    upload: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    digest: Digest,
    local: Arc<LocalStore>,
    copies: Arc<Copies>,
}

impl Drop for BucketPending {
    /// Not published: the upload must not complete (it would have been
    /// told the size already).
    fn drop(&mut self) {
        if let Some(task) = self.upload.take() {
            task.abort();
        }
    }
}

impl PendingObject for BucketPending {
    fn size(&self) -> u64 {
        self.spool.size()
    }

    fn publish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move {
            if let Some(task) = self.upload.take() {
                task.await.map_err(StoreError::Task)??;
            }
            let size = self.spool.size();
            let spool = std::mem::replace(&mut self.spool, Box::new(Published(size)));
            if !self.copies.keeps() {
                // The spool goes; readers that have it open keep reading.
                drop(spool);
                return Ok(());
            }
            spool.publish().await?;
            let victims = self.copies.add(&self.digest, size);
            if !victims.is_empty() {
                self.local.delete(victims).await?;
            }
            Ok(())
        })
    }
}

/// What is left of a pending object once published.
struct Published(u64);

impl PendingObject for Published {
    fn size(&self) -> u64 {
        self.0
    }

    fn publish(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

impl BucketStore {
    async fn open_bucket(&self, digest: &Digest) -> Result<Option<StoredObject>, StoreError> {
        let found = objects::open(&self.s3, &self.prefix, digest, &self.windows)
            .await
            .map_err(StoreError::Shared)?;
        if found.is_some() {
            self.metrics.store_read("bucket");
            self.marks.used(digest);
        }
        Ok(found)
    }
}

impl ObjectStore for BucketStore {
    fn create<'a>(
        &'a self,
        digest: &'a Digest,
        expected_len: Option<u64>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StoreError>> {
        Box::pin(self.writer(digest, expected_len, true))
    }

    fn copy<'a>(
        &'a self,
        digest: &'a Digest,
        expected_len: Option<u64>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StoreError>> {
        Box::pin(self.writer(digest, expected_len, false))
    }

    fn open<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>> {
        Box::pin(async move {
            if self.copies.keeps()
                && let Some(object) = self.local.open(digest).await?
            {
                self.copies.touch(digest);
                self.metrics.store_read("local");
                self.marks.used(digest);
                return Ok(Some(object));
            }
            self.open_bucket(digest).await
        })
    }

    fn shared<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>> {
        Box::pin(self.open_bucket(digest))
    }

    fn delete(&self, digests: Vec<Digest>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            for d in &digests {
                self.copies.remove(d);
            }
            self.local.delete(digests).await
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(async move {
            let mut listing = self.local.list().await?;
            listing.complete = false;
            // Copies beyond the budget (it shrank, or there is none now) go.
            let mut victims = Vec::new();
            for (d, size) in &listing.objects {
                victims.extend(self.copies.add(d, *size));
            }
            if !victims.is_empty() {
                listing.objects.retain(|(d, _)| !victims.contains(d));
                self.local.delete(victims).await?;
            }
            Ok(listing)
        })
    }

    fn used(&self, digest: &Digest) {
        self.marks.used(digest);
    }

    fn discard_shared<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let Some(object) = objects::open(&self.s3, &self.prefix, digest, &self.windows)
                .await
                .map_err(StoreError::Shared)?
            else {
                return Ok(());
            };
            if let crate::store::Check::Bad { actual, .. } =
                crate::store::rehash_object(object, digest, 0).await?
            {
                tracing::error!(%digest, %actual, "an object in the shared bucket does not match its digest; it was deleted and will be fetched again");
                self.s3
                    .delete(&self.key(digest))
                    .await
                    .map_err(StoreError::Shared)?;
            }
            Ok(())
        })
    }
}

//! The object store: content-addressed bytes, behind a small interface.
//!
//! Owns how object bytes are written, verified, made visible and read back:
//! a verified writer ([`ObjectWriter`]) that hashes as it writes and refuses to
//! finish if the bytes do not match the digest and length, ranged reads
//! ([`ObjectReader`], which also work on an object still being written, for
//! followers of a fill), stat (with [`ObjectStore::open`]), delete and list.
//! Two backends: local files ([`local::LocalStore`]), and an S3-compatible
//! bucket shared by replicas with an optional local copy
//! ([`s3::BucketStore`]). The request path only sees these traits. A shared
//! backend also answers [`ObjectStore::shared`] (an object another replica
//! stored) and takes [`ObjectStore::copy`] writers (a verified local copy of
//! it, published nowhere else). This module must not know about the index,
//! tags, upstreams or HTTP.

pub mod buffers;
pub mod local;
pub mod s3;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::digest::Digest;

/// A boxed, sendable future (the store traits are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content length does not match: expected {expected} bytes, got {actual}")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("storage I/O failed: {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the writer failed earlier and cannot continue")]
    WriterFailed,
    #[error("the shared object store is unavailable")]
    Shared(#[source] s3::client::S3Error),
    #[error("storing the object in the shared object store failed")]
    Upload(#[source] s3::upload::UploadError),
    #[error("storage task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// True when the content itself was wrong (as opposed to the disk).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            StoreError::DigestMismatch { .. } | StoreError::LengthMismatch { .. }
        )
    }
}

/// A content-addressed object store.
pub trait ObjectStore: Send + Sync + 'static {
    /// Begin writing the object named `digest`. Nothing is visible under that
    /// name until [`PendingObject::publish`]; dropping the writer discards it.
    /// `expected_len`, when known, is enforced while writing.
    fn create<'a>(
        &'a self,
        digest: &'a Digest,
        expected_len: Option<u64>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StoreError>>;

    /// Stat and open a published object for ranged reads (`None` if absent).
    fn open<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>>;

    /// Delete this replica's copies of published objects; absent ones are
    /// ignored. A shared store keeps its shared copies (they are removed
    /// only by `portcullis gc`).
    fn delete(&self, digests: Vec<Digest>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// This replica's published objects with their sizes, after discarding
    /// unfinished writes left by a crash. Used at start to reconcile with
    /// the index.
    fn list(&self) -> BoxFuture<'_, Result<Listing, StoreError>>;

    /// An object stored by another replica in storage they share and not
    /// yet known here, opened for reading (`None` if absent, always for a
    /// store that shares nothing). Its bytes are not trusted: they are
    /// copied through a [`ObjectStore::copy`] writer, which verifies them.
    fn shared<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>> {
        let _ = digest;
        Box::pin(async { Ok(None) })
    }

    /// Begin a verified copy of an object found by [`ObjectStore::shared`]:
    /// like [`ObjectStore::create`], but publishing keeps only what this
    /// replica keeps locally, and stores nothing shared again.
    fn copy<'a>(
        &'a self,
        digest: &'a Digest,
        expected_len: Option<u64>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StoreError>> {
        self.create(digest, expected_len)
    }

    /// `digest` was served without opening it (a manifest from memory):
    /// a shared store records the use, as an open does.
    fn used(&self, digest: &Digest) {
        let _ = digest;
    }

    /// Bytes of `digest` were found not to match it: remove the shared
    /// copy too, if its own bytes are wrong (re-hashed first: a damaged
    /// local copy says nothing about the shared one).
    fn discard_shared<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = digest;
        Box::pin(async { Ok(()) })
    }
}

/// What [`ObjectStore::list`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<(Digest, u64)>,
    /// Whether every object the store holds is listed. A shared store lists
    /// only the local copies: an object not listed may still be in the bucket.
    pub complete: bool,
}

/// A published object, opened: its size as stored, and a reader.
pub struct StoredObject {
    pub size: u64,
    pub reader: Arc<dyn ObjectReader>,
}

/// Ranged reads of one object.
pub trait ObjectReader: Send + Sync {
    /// Read up to `max` bytes at `offset`. Returns fewer bytes only at the end
    /// of what has been written. The read starts when this is called, so a
    /// caller may have the next one under way while it sends the last.
    fn read_at(&self, offset: u64, max: usize) -> BoxFuture<'static, io::Result<Bytes>>;
}

/// A verified writer: hashes every byte it writes, off the async threads.
///
/// Appending queues bytes for a writer of its own, which writes and hashes
/// them in order while the caller goes on receiving; at most a bounded
/// number of bytes wait in the queue.
pub trait ObjectWriter: Send {
    /// Queue bytes. Waits only while the queue is full. Fails as soon as
    /// more bytes arrive than the expected length, or once writing failed.
    fn append(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;

    /// How many bytes are written so far (and readable through
    /// [`ObjectWriter::reader`]); it changes as the writer catches up.
    fn written(&self) -> watch::Receiver<u64>;

    /// Reads of the bytes written so far, valid after publishing too.
    fn reader(&self) -> Arc<dyn ObjectReader>;

    /// Wait for every queued byte, then check length and digest; the bytes
    /// stay invisible.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Box<dyn PendingObject>, StoreError>>;
}

/// Verified bytes waiting to become visible under their digest.
pub trait PendingObject: Send {
    fn size(&self) -> u64;

    /// Make the object durable, then visible, atomically: after a crash it
    /// is either whole or absent.
    fn publish(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// Read `len` bytes of `digest` from `reader` at `offset` (fewer at the end).
pub async fn read_chunk(
    reader: &dyn ObjectReader,
    digest: &Digest,
    offset: u64,
    len: usize,
) -> Result<Bytes, StoreError> {
    reader
        .read_at(offset, len)
        .await
        .map_err(|source| StoreError::Io {
            op: "read",
            path: digest.to_string().into(),
            source,
        })
}

/// What re-hashing a published object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// No such object.
    Absent,
    /// Its bytes match its digest.
    Good { size: u64 },
    /// They do not: the object must not be served.
    Bad { size: u64, actual: Digest },
}

/// Re-hash the published object `digest`, reading it in chunks through the
/// store's ranged reads and hashing off the async threads. With a
/// `max_rate` (bytes per second, 0 for none) it paces itself by sleeping on
/// tokio's timer between chunks, so a background scrub stays cancellable.
pub async fn rehash(
    store: &dyn ObjectStore,
    digest: &Digest,
    max_rate: u64,
) -> Result<Check, StoreError> {
    match store.open(digest).await? {
        Some(object) => rehash_object(object, digest, max_rate).await,
        None => Ok(Check::Absent),
    }
}

/// [`rehash`] of an object already opened.
pub async fn rehash_object(
    object: StoredObject,
    digest: &Digest,
    max_rate: u64,
) -> Result<Check, StoreError> {
    let mut hasher = crate::digest::Hasher::new(digest.algorithm());
    let mut at = 0u64;
    while at < object.size {
        let want = (object.size - at).min(buffers::CHUNK as u64) as usize;
        let chunk = read_chunk(&*object.reader, digest, at, want).await?;
        if chunk.is_empty() {
            break;
        }
        at += chunk.len() as u64;
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            hasher
        })
        .await
        .map_err(StoreError::Task)?;
        if max_rate > 0 {
            let pause = want as f64 / max_rate as f64;
            tokio::time::sleep(std::time::Duration::from_secs_f64(pause.min(60.0))).await;
        }
    }
    let actual = hasher.finish();
    Ok(if actual == *digest && at == object.size {
        Check::Good { size: object.size }
    } else {
        Check::Bad {
            size: object.size,
            actual,
        }
    })
}

/// Run blocking store work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(StoreError::Task)?
}

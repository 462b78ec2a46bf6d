//! The local-files backend of the object store.
//!
//! Layout under the data directory:
//! `objects/<algorithm>/<first two hex>/<hex>` for published objects and
//! `tmp/<hex>.<n>` for objects being written. A write goes temp file → fsync
//! → rename → fsync of the directory, so a crash never leaves a visible
//! partial object; whatever is left in `tmp/` at start is discarded by
//! [`ObjectStore::list`]. All file system calls run on the blocking pool.
//! This module must not know about the index or HTTP.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::buffers::Buffers;
use super::{
    BoxFuture, Listing, ObjectReader, ObjectStore, ObjectWriter, PendingObject, StoreError,
    StoredObject, blocking,
};
use crate::digest::{Algorithm, Digest, Hasher};

/// Objects stored as files under a root directory.
pub struct LocalStore {
    root: Arc<Path>,
    next_tmp: AtomicU64,
    buffers: Buffers,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

impl LocalStore {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        for dir in [root.join("tmp"), root.join("objects")] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(LocalStore {
            root: root.into(),
            next_tmp: AtomicU64::new(0),
            buffers: Buffers::default(),
        })
    }

    fn object_path(&self, digest: &Digest) -> PathBuf {
        object_path(&self.root, digest)
    }
}

fn object_path(root: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    root.join("objects")
        .join(digest.algorithm().name())
        .join(&hex[..2])
        .join(hex)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

impl ObjectStore for LocalStore {
    fn create<'a>(
        &'a self,
        digest: &'a Digest,
        expected_len: Option<u64>,
    ) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>, StoreError>> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}.{}.{n}", digest.hex(), std::process::id()));
        let target = self.object_path(digest);
        let digest = digest.clone();
        let buffers = self.buffers.clone();
        Box::pin(async move {
            let tmp2 = tmp.clone();
            let file = blocking(move || {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&tmp2)
                    .map_err(io_err("create", &tmp2))
            })
            .await?;
            let writer: Box<dyn ObjectWriter> = Box::new(LocalWriter::start(
                file,
                tmp,
                digest,
                expected_len,
                target,
                buffers,
            ));
            Ok(writer)
        })
    }

    fn open<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<StoredObject>, StoreError>> {
        let path = self.object_path(digest);
        let buffers = self.buffers.clone();
        Box::pin(blocking(move || match File::open(&path) {
            Ok(file) => {
                let size = file.metadata().map_err(io_err("stat", &path))?.len();
                let reader: Arc<dyn ObjectReader> = Arc::new(FileReader {
                    file: Arc::new(file),
                    buffers,
                });
                Ok(Some(StoredObject { size, reader }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("open", &path)(e)),
        }))
    }

    fn delete(&self, digests: Vec<Digest>) -> BoxFuture<'_, Result<(), StoreError>> {
        let root = self.root.clone();
        Box::pin(blocking(move || {
            for d in digests {
                let path = object_path(&root, &d);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("delete", &path)(e)),
                }
            }
            Ok(())
        }))
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, StoreError>> {
        let root = self.root.clone();
        Box::pin(blocking(move || {
            Ok(Listing {
                objects: list_objects(&root)?,
                complete: true,
            })
        }))
    }
}

/// Discard unfinished writes, then list every published object.
fn list_objects(root: &Path) -> Result<Vec<(Digest, u64)>, StoreError> {
    let tmp = root.join("tmp");
    for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))? {
        let path = entry.map_err(io_err("list", &tmp))?.path();
        fs::remove_file(&path).map_err(io_err("delete partial", &path))?;
    }
    let mut found = Vec::new();
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let alg_dir = root.join("objects").join(algorithm.name());
        let shards = match fs::read_dir(&alg_dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &alg_dir)(e)),
        };
        for shard in shards {
            let shard = shard.map_err(io_err("list", &alg_dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(io_err("list", &shard))? {
                let entry = entry.map_err(io_err("list", &shard))?;
                let name = entry.file_name();
                let parsed = name
                    .to_str()
                    .and_then(|hex| format!("{}:{hex}", algorithm.name()).parse::<Digest>().ok())
                    .filter(|d| object_path(root, d) == entry.path());
                match parsed {
                    Some(d) => {
                        let len = entry
                            .metadata()
                            .map_err(io_err("stat", &entry.path()))?
                            .len();
                        found.push((d, len));
                    }
                    None => {
                        tracing::warn!(path = %entry.path().display(), "ignoring a file that is not a stored object")
                    }
                }
            }
        }
    }
    Ok(found)
}

/// A temp file removed on drop unless it was published.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.0);
        if path.as_os_str().is_empty() {
            return;
        }
        let remove = move || {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a partial object");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

impl TempFile {
    /// Stop tracking: the file was renamed away.
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

/// Bytes queued for one object's writer, at most: what a fill may receive
/// ahead of the disk and the hash.
const WRITE_QUEUE: usize = 4 << 20;
/// Chunks written with one vectored write, at most.
const WRITE_BATCH: usize = 64;

type Queued = (Bytes, OwnedSemaphorePermit);

struct LocalWriter {
    /// `None` once closed (finishing) or found broken.
    queue: Option<mpsc::UnboundedSender<Queued>>,
    /// Bytes the queue has room for.
    room: Arc<Semaphore>,
    /// The writer: writes and hashes, returns the hasher when the queue closes.
    /// The writer thread's answer: the hasher once every chunk is written.
    task: Option<oneshot::Receiver<Result<Hasher, StoreError>>>,
    written: watch::Receiver<u64>,
    file: Arc<File>,
    queued: u64,
    expected_len: Option<u64>,
    digest: Digest,
    temp: Option<TempFile>,
    target: PathBuf,
    buffers: Buffers,
}

impl LocalWriter {
    fn start(
        file: File,
        path: PathBuf,
        digest: Digest,
        expected_len: Option<u64>,
        target: PathBuf,
        buffers: Buffers,
    ) -> LocalWriter {
        let file = Arc::new(file);
        let (queue, rx) = mpsc::unbounded_channel();
        let (progress, written) = watch::channel(0);
        let hasher = Hasher::new(digest.algorithm());
        let (f, p) = (file.clone(), path.clone());
        let (done, task) = oneshot::channel();
        // Threads of its own, not the blocking pool: a fill holds them for
        // its whole life, and must not starve index commits and reads. The
        // cache bounds how many fills (so writers) run at once.
        let spawned = std::thread::Builder::new()
            .name("portcullis-write".into())
            .spawn(move || {
                let _ = done.send(write_queued(&f, &p, hasher, rx, progress));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a writer thread");
        }
        LocalWriter {
            queue: Some(queue),
            room: Arc::new(Semaphore::new(WRITE_QUEUE)),
            task: Some(task),
            written,
            file,
            queued: 0,
            expected_len,
            digest,
            temp: Some(TempFile(path)),
            target,
            buffers,
        }
    }

    /// Why the writer stopped: its own error, if it had one.
    async fn failure(&mut self) -> StoreError {
        self.queue = None;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) | Err(_) => StoreError::WriterFailed,
            },
            None => StoreError::WriterFailed,
        }
    }
}

/// The writer's loop, on a thread of its own: write each batch of queued
/// chunks with one vectored write, report progress, and pass the chunks to
/// a hasher of its own, so that writing and hashing overlap. Returns the
/// hasher once the queue closes and every chunk is hashed.
fn write_queued(
    file: &File,
    path: &Path,
    hasher: Hasher,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    progress: watch::Sender<u64>,
) -> Result<Hasher, StoreError> {
    let (to_hash, hash_rx) = std::sync::mpsc::channel::<Vec<Queued>>();
    let hashing = std::thread::Builder::new()
        .name("portcullis-hash".into())
        .spawn(move || hash_queued(hasher, hash_rx))
        .map_err(|e| io_err("start a hashing thread", path)(e))?;
    let mut written = 0u64;
    while let Some(first) = rx.blocking_recv() {
        let mut batch: Vec<Queued> = Vec::with_capacity(WRITE_BATCH);
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|(b, _)| IoSlice::new(b)).collect();
        write_all_vectored(file, &mut slices).map_err(io_err("write", path))?;
        written += batch.iter().map(|(b, _)| b.len() as u64).sum::<u64>();
        // Readable now; hashing follows while readers go on.
        progress.send_replace(written);
        if to_hash.send(batch).is_err() {
            break;
        }
    }
    drop(to_hash);
    hashing.join().map_err(|_| StoreError::WriterFailed)
}

/// The hasher's loop: hash batches in order, then free their queue room.
fn hash_queued(mut hasher: Hasher, rx: std::sync::mpsc::Receiver<Vec<Queued>>) -> Hasher {
    for batch in rx {
        for (chunk, _room) in batch {
            hasher.update(&chunk);
        }
    }
    hasher
}

/// `write_all` for vectored writes (std's is unstable). The file's own
/// cursor is the writer's alone: readers use positional reads.
fn write_all_vectored(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl ObjectWriter for LocalWriter {
    fn append(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if chunk.is_empty() {
                return Ok(());
            }
            let total = self.queued + chunk.len() as u64;
            if let Some(expected) = self.expected_len
                && total > expected
            {
                return Err(StoreError::LengthMismatch {
                    expected,
                    actual: total,
                });
            }
            let want = chunk.len().min(WRITE_QUEUE) as u32;
            let room = self
                .room
                .clone()
                .acquire_many_owned(want)
                .await
                .map_err(|_| StoreError::WriterFailed)?;
            let sent = match &self.queue {
                Some(q) => q.send((chunk, room)).is_ok(),
                None => false,
            };
            if !sent {
                return Err(self.failure().await);
            }
            self.queued = total;
            Ok(())
        })
    }

    fn written(&self) -> watch::Receiver<u64> {
        self.written.clone()
    }

    fn reader(&self) -> Arc<dyn ObjectReader> {
        Arc::new(FileReader {
            file: self.file.clone(),
            buffers: self.buffers.clone(),
        })
    }

    fn finish(
        mut self: Box<Self>,
    ) -> BoxFuture<'static, Result<Box<dyn PendingObject>, StoreError>> {
        Box::pin(async move {
            // Closing the queue lets the writer drain it and hand back the hash.
            self.queue = None;
            let hasher = match self.task.take() {
                Some(task) => task.await.map_err(|_| StoreError::WriterFailed)??,
                None => return Err(StoreError::WriterFailed),
            };
            let written = self.queued;
            if let Some(expected) = self.expected_len
                && written != expected
            {
                return Err(StoreError::LengthMismatch {
                    expected,
                    actual: written,
                });
            }
            let actual = hasher.finish();
            if actual != self.digest {
                return Err(StoreError::DigestMismatch {
                    expected: self.digest.clone(),
                    actual,
                });
            }
            let pending: Box<dyn PendingObject> = Box::new(LocalPending {
                file: self.file.clone(),
                temp: self.temp.take(),
                target: std::mem::take(&mut self.target),
                size: written,
            });
            Ok(pending)
        })
    }
}

struct LocalPending {
    file: Arc<File>,
    temp: Option<TempFile>,
    target: PathBuf,
    size: u64,
}

impl PendingObject for LocalPending {
    fn size(&self) -> u64 {
        self.size
    }

    fn publish(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move {
            let temp = self.temp.take().expect("published twice");
            let target = std::mem::take(&mut self.target);
            let from = temp.0.clone();
            let file = self.file.clone();
            blocking(move || {
                file.sync_all().map_err(io_err("fsync", &from))?;
                let shard = target.parent().expect("object paths have a parent");
                let created = !shard.exists();
                fs::create_dir_all(shard).map_err(io_err("create directory", shard))?;
                fs::rename(&from, &target).map_err(io_err("rename into place", &target))?;
                temp.disarm();
                sync_dir(shard)?;
                if created {
                    sync_dir(shard.parent().expect("shards have a parent"))?;
                }
                Ok(())
            })
            .await
        })
    }
}

/// Ranged reads through a shared file handle (pread: no shared cursor).
struct FileReader {
    file: Arc<File>,
    buffers: Buffers,
}

impl ObjectReader for FileReader {
    fn read_at(&self, offset: u64, max: usize) -> BoxFuture<'static, io::Result<Bytes>> {
        let (file, buffers) = (self.file.clone(), self.buffers.clone());
        // Started now, not when first polled: callers read ahead.
        let read = tokio::task::spawn_blocking(move || {
            buffers.fill(max, |buf| {
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(filled)
            })
        });
        Box::pin(async move { read.await.map_err(io::Error::other)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    async fn read_all(r: &dyn ObjectReader) -> Vec<u8> {
        r.read_at(0, 1 << 20).await.unwrap().to_vec()
    }

    #[tokio::test]
    async fn write_verify_publish_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = b"hello, portcullis".to_vec();
        let d = digest(&data);
        let mut w = store.create(&d, Some(data.len() as u64)).await.unwrap();
        let reader = w.reader();
        let mut written = w.written();
        w.append(Bytes::from_static(b"hello, ")).await.unwrap();
        // Followers can read what has been written before it is published.
        written.wait_for(|n| *n == 7).await.unwrap();
        assert_eq!(read_all(&*reader).await, b"hello, ");
        assert!(
            store.open(&d).await.unwrap().is_none(),
            "visible before publish"
        );
        w.append(Bytes::from_static(b"portcullis")).await.unwrap();
        let pending = w.finish().await.unwrap();
        assert_eq!(pending.size(), data.len() as u64);
        pending.publish().await.unwrap();
        let o = store.open(&d).await.unwrap().unwrap();
        assert_eq!(o.size, data.len() as u64);
        assert_eq!(
            o.reader.read_at(7, 100).await.unwrap().as_ref(),
            b"portcullis"
        );
        assert_eq!(read_all(&*reader).await, data);
        let listed = store.list().await.unwrap();
        assert_eq!(listed.objects, vec![(d.clone(), data.len() as u64)]);
        assert!(listed.complete);
        store.delete(vec![d.clone()]).await.unwrap();
        assert!(store.open(&d).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sha512_objects_verify_and_shard_by_their_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"sha512 content");
        let d = Digest::of(Algorithm::Sha512, &data);
        let mut w = store.create(&d, Some(data.len() as u64)).await.unwrap();
        w.append(data.clone()).await.unwrap();
        w.finish().await.unwrap().publish().await.unwrap();
        let path = dir
            .path()
            .join("objects/sha512")
            .join(&d.hex()[..2])
            .join(d.hex());
        assert_eq!(std::fs::read(path).unwrap(), data);
        assert_eq!(
            store.list().await.unwrap().objects,
            vec![(d.clone(), data.len() as u64)]
        );
        let wrong = Digest::of(Algorithm::Sha512, b"other");
        let mut w = store.create(&wrong, None).await.unwrap();
        w.append(data).await.unwrap();
        assert!(matches!(
            w.finish().await.err().unwrap(),
            StoreError::DigestMismatch { .. }
        ));
    }

    #[tokio::test]
    async fn wrong_bytes_never_become_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let d = digest(b"expected");
        let mut w = store.create(&d, None).await.unwrap();
        w.append(Bytes::from_static(b"tampered")).await.unwrap();
        let err = w.finish().await.err().unwrap();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err:?}");
        assert!(store.open(&d).await.unwrap().is_none());
        // The partial file is cleaned up.
        tokio::task::yield_now().await;
        assert!(store.list().await.unwrap().objects.is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn length_is_enforced_while_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let d = digest(b"abc");
        let mut w = store.create(&d, Some(2)).await.unwrap();
        let err = w.append(Bytes::from_static(b"abc")).await.unwrap_err();
        assert!(matches!(
            err,
            StoreError::LengthMismatch {
                expected: 2,
                actual: 3
            }
        ));
        let mut w = store.create(&d, Some(4)).await.unwrap();
        w.append(Bytes::from_static(b"abc")).await.unwrap();
        assert!(matches!(
            w.finish().await.err().unwrap(),
            StoreError::LengthMismatch { .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn chunks_beyond_the_queue_are_written_in_order_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        // More than the queue holds, in chunks of every size up to it.
        let data: Vec<u8> = (0..3 * WRITE_QUEUE + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let d = digest(&data);
        let mut w = store.create(&d, Some(data.len() as u64)).await.unwrap();
        let (mut at, mut step) = (0, 1);
        while at < data.len() {
            let end = (at + step).min(data.len());
            w.append(Bytes::copy_from_slice(&data[at..end]))
                .await
                .unwrap();
            at = end;
            step = (step * 3 + 1) % WRITE_QUEUE + 1;
        }
        let pending = w.finish().await.unwrap();
        pending.publish().await.unwrap();
        let o = store.open(&d).await.unwrap().unwrap();
        let mut back = Vec::new();
        while back.len() < data.len() {
            back.extend_from_slice(&o.reader.read_at(back.len() as u64, 1 << 20).await.unwrap());
        }
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn list_discards_partials_left_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("tmp").join("abc.1.0"), b"partial").unwrap();
        assert!(store.list().await.unwrap().objects.is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}

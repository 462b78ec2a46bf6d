//! A blob fill in progress, and the byte streams clients read.
//!
//! Owns the state a fill publishes to its followers (connecting, streaming
//! with the count of bytes received, verified, done, failed) and the two
//! streams a response body can be: [`published`] for an object already in
//! the store, [`Fill::stream`] for one still arriving. A follower reads the
//! recent bytes from the fill's memory window and older ones from the
//! growing file, Range requests included, but always holds back the last byte
//! of its response until the whole blob has been verified against its digest:
//! if verification fails, no client ever completes a response with unverified
//! bytes. This module must not talk to upstreams or the index.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::CacheError;
use super::index::PinGuard;
use crate::store::buffers::CHUNK;
use crate::store::{BoxFuture, ObjectReader};

/// Errors carried by response body streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body: bytes, or an error that aborts the response.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>;

/// Bytes a fill keeps in memory once they are on disk, for followers a
/// little behind. Bytes not yet on disk are kept too (at most the store
/// writer's queue).
const WINDOW_KEEP: u64 = 1 << 20;

/// A failed fill, as seen by a follower's stream.
#[derive(Debug, thiserror::Error)]
#[error("blob download failed")]
pub struct FillError(#[source] pub Arc<CacheError>);

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("the blob download ended without a result")]
    Abandoned,
    #[error("stored object is shorter than its recorded size")]
    Truncated,
    #[error("stored object does not match its digest (disk corruption?): removed from the cache")]
    Corrupt,
}

/// What a fill has achieved so far.
#[derive(Clone)]
pub enum FillState {
    /// Waiting for the upstream's response.
    Connecting,
    /// Bytes are arriving; `received` of them can be read (not yet
    /// verified): recent ones from memory, older ones from `reader`.
    Streaming {
        reader: Arc<dyn ObjectReader>,
        received: u64,
        total: Option<u64>,
    },
    /// Every byte arrived and matches the digest; publishing (fsync,
    /// rename, index) is under way. Followers may finish their responses.
    Verified {
        reader: Arc<dyn ObjectReader>,
        size: u64,
    },
    /// Verified, published and indexed.
    Done {
        reader: Arc<dyn ObjectReader>,
        size: u64,
    },
    Failed(Arc<CacheError>),
}

/// The most recent bytes of a fill, contiguous: `chunks` hold
/// `start..start + len`. Everything before `start` is on disk.
#[derive(Default)]
struct Window {
    start: u64,
    len: u64,
    chunks: VecDeque<Bytes>,
}

/// Where a follower's next bytes are.
enum Source {
    Memory(Bytes),
    /// Read the file, up to this offset (the window's start).
    File(u64),
}

impl Window {
    /// Bytes from `pos` up to `limit` from memory, or where the file must
    /// serve them instead.
    fn take(&self, pos: u64, limit: u64) -> Source {
        if pos < self.start {
            return Source::File(self.start);
        }
        let mut at = self.start;
        for chunk in &self.chunks {
            let end = at + chunk.len() as u64;
            if pos < end {
                let from = (pos - at) as usize;
                let to = (limit.min(end) - at) as usize;
                return Source::Memory(chunk.slice(from..to));
            }
            at = end;
        }
        // Not arrived: callers only ask below `received`.
        Source::Memory(Bytes::new())
    }
}

/// Where a fill downloads from: the upstream and repository of the request
/// that started it. A blob is one object whatever repository names it, but
/// access is per repository: a follower from elsewhere may retry through its
/// own when this one is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub upstream: crate::router::UpstreamId,
    pub repo: crate::reference::RepoName,
}

impl Origin {
    /// The repository `target` asks through.
    pub fn of(target: &crate::router::Target) -> Origin {
        Origin {
            upstream: target.upstream,
            repo: target.repo.clone(),
        }
    }
}

/// A blob fill that followers can read from.
pub struct Fill {
    pub origin: Origin,
    rx: watch::Receiver<FillState>,
    window: Mutex<Window>,
    /// Keeps the published object from eviction while followers still read.
    pin: Mutex<Option<PinGuard>>,
}

/// The fill's writing side, held by the task that downloads.
pub struct FillProducer {
    tx: watch::Sender<FillState>,
    fill: Arc<Fill>,
}

impl FillProducer {
    pub fn streaming(&self, reader: Arc<dyn ObjectReader>, total: Option<u64>) {
        self.tx.send_replace(FillState::Streaming {
            reader,
            received: 0,
            total,
        });
    }

    /// Bytes arrived: followers may read them at once, from memory. Bytes
    /// on disk (`written` of them) beyond the window's allowance are
    /// dropped from memory; followers behind read them from the file.
    pub fn received(&self, chunk: Bytes, written: u64) {
        let received = {
            let mut w = self.fill.window.lock().expect("fill window lock");
            w.len += chunk.len() as u64;
            w.chunks.push_back(chunk);
            while w.len > WINDOW_KEEP {
                let Some(front) = w.chunks.front() else { break };
                let n = front.len() as u64;
                if w.start + n > written {
                    break;
                }
                w.chunks.pop_front();
                w.start += n;
                w.len -= n;
            }
            w.start + w.len
        };
        self.tx.send_modify(|s| {
            if let FillState::Streaming { received: r, .. } = s {
                *r = received;
            }
        });
    }

    /// The bytes verified: followers need not wait for them to be durable.
    pub fn verified(&self, reader: Arc<dyn ObjectReader>, size: u64) {
        self.tx.send_replace(FillState::Verified { reader, size });
    }

    pub fn done(self, reader: Arc<dyn ObjectReader>, size: u64, pin: PinGuard) {
        *self.fill.pin.lock().expect("fill lock") = Some(pin);
        self.tx.send_replace(FillState::Done { reader, size });
    }

    pub fn failed(self, error: Arc<CacheError>) {
        *self.fill.window.lock().expect("fill window lock") = Window::default();
        self.tx.send_replace(FillState::Failed(error));
    }
}

impl Fill {
    pub fn new(origin: Origin) -> (Arc<Fill>, FillProducer) {
        let (tx, rx) = watch::channel(FillState::Connecting);
        let fill = Arc::new(Fill {
            origin,
            rx,
            window: Mutex::new(Window::default()),
            pin: Mutex::new(None),
        });
        (fill.clone(), FillProducer { tx, fill })
    }

    /// Wait until the upstream has answered: the total size when known.
    pub async fn ready(&self) -> Result<Option<u64>, CacheError> {
        let mut rx = self.rx.clone();
        loop {
            match &*rx.borrow_and_update() {
                FillState::Connecting => {}
                FillState::Streaming { total, .. } => return Ok(*total),
                FillState::Verified { size, .. } | FillState::Done { size, .. } => {
                    return Ok(Some(*size));
                }
                FillState::Failed(e) => return Err(CacheError::Shared(e.clone())),
            }
            if rx.changed().await.is_err() {
                return Err(CacheError::FillAbandoned);
            }
        }
    }

    /// Wait until the fill is verified: its size.
    pub async fn size_when_done(&self) -> Result<u64, CacheError> {
        let mut rx = self.rx.clone();
        loop {
            match &*rx.borrow_and_update() {
                FillState::Verified { size, .. } | FillState::Done { size, .. } => {
                    return Ok(*size);
                }
                FillState::Failed(e) => return Err(CacheError::Shared(e.clone())),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(CacheError::FillAbandoned);
            }
        }
    }

    /// Stream bytes `start..end` (`end` exclusive; `None` = to the end) as they land.
    pub fn stream(self: Arc<Self>, start: u64, end: Option<u64>) -> ByteStream {
        let follower = Follower {
            rx: self.rx.clone(),
            fill: self,
            pos: start,
            end,
            finished: false,
            verified: None,
        };
        Box::pin(futures_util::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        }))
    }
}

struct Follower {
    rx: watch::Receiver<FillState>,
    fill: Arc<Fill>,
    pos: u64,
    end: Option<u64>,
    finished: bool,
    /// Set once the fill was seen verified (or done).
    verified: Option<FillState>,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        if self.finished {
            return None;
        }
        loop {
            // Once verified, the bytes are final: a later failure to publish
            // them does not concern a response already being served.
            let state = match &self.verified {
                Some(v) => v.clone(),
                None => self.rx.borrow_and_update().clone(),
            };
            let (reader, limit, complete) = match state {
                FillState::Connecting => (None, 0, false),
                FillState::Streaming {
                    reader,
                    received,
                    total,
                } => {
                    // Hold back the final byte of this response until verified.
                    let limit = match self.end.or(total) {
                        Some(end) => received.min(end.saturating_sub(1)),
                        None => received.saturating_sub(1),
                    };
                    (Some(reader), limit, false)
                }
                FillState::Verified { reader, size } | FillState::Done { reader, size } => {
                    self.verified = Some(FillState::Verified {
                        reader: reader.clone(),
                        size,
                    });
                    let end = self.end.map_or(size, |e| e.min(size));
                    (Some(reader), end, true)
                }
                FillState::Failed(e) => {
                    self.finished = true;
                    return Some(Err(Box::new(FillError(e))));
                }
            };
            if let Some(reader) = reader
                && self.pos < limit
            {
                let source = self
                    .fill
                    .window
                    .lock()
                    .expect("fill window lock")
                    .take(self.pos, limit);
                let file_end = match source {
                    Source::Memory(b) if !b.is_empty() => {
                        self.pos += b.len() as u64;
                        return Some(Ok(b));
                    }
                    // Past the window (dropped after a failure, or after
                    // the fill ended): the file has everything.
                    Source::Memory(_) => limit,
                    Source::File(window_start) => limit.min(window_start),
                };
                let n = (file_end - self.pos).min(CHUNK as u64) as usize;
                return Some(match reader.read_at(self.pos, n).await {
                    Ok(b) if b.is_empty() => {
                        self.finished = true;
                        Err(Box::new(StreamError::Truncated))
                    }
                    Ok(b) => {
                        self.pos += b.len() as u64;
                        Ok(b)
                    }
                    Err(e) => {
                        self.finished = true;
                        Err(Box::new(e))
                    }
                });
            }
            if complete {
                self.finished = true;
                return None;
            }
            if self.rx.changed().await.is_err() {
                self.finished = true;
                return Some(Err(Box::new(StreamError::Abandoned)));
            }
        }
    }
}

/// Chunks of a published object read ahead of the one being sent.
const READ_AHEAD: usize = 2;

/// Re-hash a whole published object while it is served: the last chunk is
/// held back until the bytes match `digest`; if they do not, the response
/// ends with an error and `on_corrupt` runs (it quarantines the object).
pub struct VerifyRead {
    pub digest: crate::digest::Digest,
    pub on_corrupt: Box<dyn FnOnce() + Send>,
}

/// Stream bytes `start..end` of a published object, keeping it pinned. The
/// next chunks are read (on the blocking pool) while the last one is sent.
/// With `verify` (whole objects only), bytes are hashed as they go, on the
/// blocking pool.
pub fn published(
    reader: Arc<dyn ObjectReader>,
    start: u64,
    end: u64,
    pin: PinGuard,
    verify: Option<VerifyRead>,
) -> ByteStream {
    struct Reading {
        reader: Arc<dyn ObjectReader>,
        /// Reads under way, in order, each with the length it must return.
        ahead: VecDeque<(usize, BoxFuture<'static, std::io::Result<Bytes>>)>,
        next: u64,
        end: u64,
        hasher: Option<(Hashing, VerifyRead)>,
        _pin: PinGuard,
    }
    /// The hash so far, or the task adding the last chunk sent to it.
    enum Hashing {
        Ready(Box<crate::digest::Hasher>),
        Running(tokio::task::JoinHandle<crate::digest::Hasher>),
    }
    impl Reading {
        fn fill(&mut self) {
            while self.ahead.len() < READ_AHEAD && self.next < self.end {
                let n = (self.end - self.next).min(CHUNK as u64) as usize;
                self.ahead.push_back((n, self.reader.read_at(self.next, n)));
                self.next += n as u64;
            }
        }

        /// Hash `chunk` on the blocking pool. The hashing of one chunk runs
        /// while it is being sent; only the last chunk waits for the digest
        /// (and is withheld when it does not match).
        async fn hash(&mut self, chunk: &Bytes) -> Result<(), BoxError> {
            let Some((state, v)) = self.hasher.take() else {
                return Ok(());
            };
            let mut hasher = match state {
                Hashing::Ready(h) => *h,
                Hashing::Running(task) => task.await.map_err(|e| Box::new(e) as BoxError)?,
            };
            let data = chunk.clone();
            let last = self.ahead.is_empty() && self.next >= self.end;
            if !last {
                let task = tokio::task::spawn_blocking(move || {
                    hasher.update(&data);
                    hasher
                });
                self.hasher = Some((Hashing::Running(task), v));
                return Ok(());
            }
            let digest = tokio::task::spawn_blocking(move || {
                hasher.update(&data);
                hasher.finish()
            })
            .await
            .map_err(|e| Box::new(e) as BoxError)?;
            if digest == v.digest {
                return Ok(());
            }
            (v.on_corrupt)();
            Err(Box::new(StreamError::Corrupt))
        }
    }
    let hasher = verify.filter(|_| start == 0).map(|v| {
        (
            Hashing::Ready(Box::new(crate::digest::Hasher::new(v.digest.algorithm()))),
            v,
        )
    });
    let mut reading = Reading {
        reader,
        ahead: VecDeque::new(),
        next: start,
        end,
        hasher,
        _pin: pin,
    };
    reading.fill();
    Box::pin(futures_util::stream::unfold(reading, |mut r| async move {
        let (want, read) = r.ahead.pop_front()?;
        let item: Result<Bytes, BoxError> = match read.await {
            // Every read but at the end is whole: a short one means the
            // file is shorter than the object it should hold.
            Ok(b) if b.len() == want => {
                r.fill();
                match r.hash(&b).await {
                    Ok(()) => return Some((Ok(b), r)),
                    Err(e) => Err(e),
                }
            }
            Ok(_) => Err(Box::new(StreamError::Truncated)),
            Err(e) => Err(Box::new(e)),
        };
        r.ahead.clear();
        r.next = r.end;
        r.hasher = None;
        Some((item, r))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn test_origin() -> Origin {
        Origin {
            upstream: crate::router::UpstreamId(0),
            repo: "test/img".parse().unwrap(),
        }
    }

    /// An in-memory object that can grow.
    struct Growing(Mutex<Vec<u8>>);

    impl ObjectReader for Growing {
        fn read_at(&self, offset: u64, max: usize) -> BoxFuture<'static, std::io::Result<Bytes>> {
            let data = self.0.lock().unwrap();
            let start = (offset as usize).min(data.len());
            let end = (start + max).min(data.len());
            let out = Bytes::copy_from_slice(&data[start..end]);
            Box::pin(async move { Ok(out) })
        }
    }

    fn pin_guard() -> (PinGuard, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let idx = super::super::index::Index::open(
            &dir.path().join("i.redb"),
            crate::clock::Clock::system(),
        )
        .unwrap()
        .0;
        let d = crate::digest::Digest::of(crate::digest::Algorithm::Sha256, b"x");
        let rt = tokio::runtime::Handle::current();
        let guard = tokio::task::block_in_place(|| rt.block_on(idx.insert(&d, 1, None))).unwrap();
        (guard, dir)
    }

    /// Append to the object (the store's writer) and hand the chunk to the fill.
    fn arrive(producer: &FillProducer, obj: &Growing, chunk: &[u8]) {
        let mut data = obj.0.lock().unwrap();
        data.extend_from_slice(chunk);
        let written = data.len() as u64;
        drop(data);
        producer.received(Bytes::copy_from_slice(chunk), written);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn followers_see_bytes_before_the_end_but_not_the_last_byte() {
        let (fill, producer) = Fill::new(test_origin());
        let obj = Arc::new(Growing(Mutex::new(Vec::new())));
        producer.streaming(obj.clone(), Some(10));
        let mut s = fill.clone().stream(0, None);
        // Not on disk yet: followers get it from memory.
        producer.received(Bytes::from_static(b"01234"), 0);
        assert_eq!(s.next().await.unwrap().unwrap().as_ref(), b"01234");
        producer.received(Bytes::from_static(b"56789"), 0);
        // Everything but the final byte is released before verification.
        assert_eq!(s.next().await.unwrap().unwrap().as_ref(), b"5678");
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), s.next()).await;
        assert!(
            pending.is_err(),
            "final byte released before the fill was verified"
        );
        // Verified is enough: durability (fsync, rename, index) follows.
        obj.0.lock().unwrap().extend_from_slice(b"0123456789");
        producer.verified(obj.clone(), 10);
        assert_eq!(s.next().await.unwrap().unwrap().as_ref(), b"9");
        assert!(s.next().await.is_none());
        // A follower that starts once the fill is done reads it all.
        let (pin, _dir) = pin_guard();
        producer.done(obj.clone(), 10, pin);
        let all: Vec<u8> = fill
            .stream(0, None)
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(all, b"0123456789");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_holds_a_bounded_window_and_followers_behind_it_read_the_file() {
        let (fill, producer) = Fill::new(test_origin());
        let obj = Arc::new(Growing(Mutex::new(Vec::new())));
        let chunk = 100_000usize;
        let chunks = 3 * WINDOW_KEEP as usize / chunk;
        let total = (chunks * chunk) as u64;
        producer.streaming(obj.clone(), Some(total));
        let expected: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
        // The writer lags: nothing on disk, so memory keeps everything.
        producer.received(Bytes::copy_from_slice(&expected[..chunk]), 0);
        assert_eq!(fill.window.lock().unwrap().start, 0);
        obj.0.lock().unwrap().extend_from_slice(&expected[..chunk]);
        for c in expected[chunk..].chunks(chunk) {
            arrive(&producer, &obj, c);
            let w = fill.window.lock().unwrap();
            assert!(
                w.len <= WINDOW_KEEP + chunk as u64,
                "{} bytes in memory",
                w.len
            );
        }
        assert!(fill.window.lock().unwrap().start > 0, "nothing left memory");
        // A follower from the start reads the file, then memory; a Range
        // inside the window comes from memory alone.
        let mut s = fill.clone().stream(0, None);
        let mut got = Vec::new();
        while (got.len() as u64) < total - 1 {
            got.extend_from_slice(&s.next().await.unwrap().unwrap());
        }
        assert_eq!(got, expected[..total as usize - 1]);
        let (a, b) = (total - 1000, total - 10);
        let mut r = fill.clone().stream(a, Some(b));
        assert_eq!(
            r.next().await.unwrap().unwrap().as_ref(),
            &expected[a as usize..b as usize - 1]
        );
        producer.verified(obj.clone(), total);
        assert_eq!(
            s.next().await.unwrap().unwrap().as_ref(),
            &expected[total as usize - 1..]
        );
        assert!(s.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_fill_fails_every_follower() {
        let (fill, producer) = Fill::new(test_origin());
        let obj = Arc::new(Growing(Mutex::new(Vec::new())));
        producer.streaming(obj.clone(), Some(3));
        arrive(&producer, &obj, b"abc");
        let mut a = fill.clone().stream(0, None);
        let mut b = fill.clone().stream(1, Some(3));
        assert_eq!(a.next().await.unwrap().unwrap().as_ref(), b"ab");
        assert_eq!(b.next().await.unwrap().unwrap().as_ref(), b"b");
        producer.failed(Arc::new(CacheError::FillAbandoned));
        assert!(a.next().await.unwrap().is_err());
        assert!(b.next().await.unwrap().is_err());
        assert!(a.next().await.is_none());
        assert!(fill.ready().await.is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_abandoned_fill_is_an_error_not_a_short_success() {
        let (fill, producer) = Fill::new(test_origin());
        let obj = Arc::new(Growing(Mutex::new(Vec::new())));
        producer.streaming(obj.clone(), None);
        arrive(&producer, &obj, b"abc");
        let mut s = fill.stream(0, None);
        assert_eq!(s.next().await.unwrap().unwrap().as_ref(), b"ab");
        drop(producer);
        assert!(s.next().await.unwrap().is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_published_object_shorter_than_recorded_fails_the_stream() {
        // Three chunks' worth recorded, two and a bit on disk.
        let on_disk = 2 * CHUNK + 10;
        let obj: Arc<dyn ObjectReader> = Arc::new(Growing(Mutex::new(vec![1u8; on_disk])));
        let (pin, _dir) = pin_guard();
        let mut s = published(obj, 0, 3 * CHUNK as u64, pin, None);
        let mut sent = 0;
        let failed = loop {
            match s.next().await {
                Some(Ok(b)) => sent += b.len(),
                Some(Err(_)) => break true,
                None => break false,
            }
        };
        assert!(failed, "a short object ended like a complete one");
        assert!(sent < on_disk, "sent {sent} bytes");
        assert!(s.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn verified_reads_withhold_the_last_chunk_of_a_corrupt_object() {
        let data: Vec<u8> = (0..3 * CHUNK + 100).map(|i| (i % 251) as u8).collect();
        let good = crate::digest::Digest::of(crate::digest::Algorithm::Sha256, &data);
        let read = |claimed: crate::digest::Digest| {
            let obj: Arc<dyn ObjectReader> = Arc::new(Growing(Mutex::new(data.clone())));
            let flagged = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let f = flagged.clone();
            let verify = VerifyRead {
                digest: claimed,
                on_corrupt: Box::new(move || f.store(true, std::sync::atomic::Ordering::SeqCst)),
            };
            (obj, flagged, verify)
        };
        let (obj, flagged, verify) = read(good);
        let (pin, _dir) = pin_guard();
        let got: Vec<u8> = published(obj, 0, data.len() as u64, pin, Some(verify))
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(got, data);
        assert!(!flagged.load(std::sync::atomic::Ordering::SeqCst));

        let (obj, flagged, verify) = read(crate::digest::Digest::of(
            crate::digest::Algorithm::Sha256,
            b"other",
        ));
        let (pin, _dir) = pin_guard();
        let mut s = published(obj, 0, data.len() as u64, pin, Some(verify));
        let mut sent = 0;
        let failed = loop {
            match s.next().await {
                Some(Ok(b)) => sent += b.len(),
                Some(Err(_)) => break true,
                None => break false,
            }
        };
        assert!(failed, "a corrupt object ended like a sound one");
        assert_eq!(sent, 3 * CHUNK, "everything but the last chunk went out");
        assert!(
            flagged.load(std::sync::atomic::Ordering::SeqCst),
            "it was reported"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn published_streams_ranges() {
        let obj: Arc<dyn ObjectReader> = Arc::new(Growing(Mutex::new((0..=255u8).collect())));
        let (pin, _dir) = pin_guard();
        let got: Vec<u8> = published(obj, 10, 20, pin, None)
            .map(|c| c.unwrap().to_vec())
            .concat()
            .await;
        assert_eq!(got, (10..20u8).collect::<Vec<_>>());
    }
}

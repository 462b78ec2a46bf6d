//! Blobs through the cache: served from the store when present, otherwise
//! filled from upstream by exactly one download that every concurrent
//! request follows.
//!
//! Owns the fill: the download runs in its own task (a client hanging up
//! does not stop it), queues each chunk of the upstream body for the store's
//! verified writer (which writes and hashes on threads of its own) and hands
//! it to followers at once; on success it publishes and indexes the object.
//! A wrong digest or length fails the fill for every follower and leaves
//! nothing in the cache; the next request starts afresh. This module must
//! not build HTTP responses.

use std::sync::Arc;

use super::fill::{ByteStream, Fill, FillProducer, Origin, VerifyRead, published};
use super::flight::{Join, Ticket};
use super::holdings::Kind;
use super::index::PinGuard;
use super::{Cache, CacheError};
use crate::digest::Digest;
use crate::metrics::CacheResult;
use crate::router::Target;
use crate::store::{ObjectReader, StoreError};
use crate::upstream::UpstreamError;

enum Source {
    Published {
        reader: Arc<dyn ObjectReader>,
        size: u64,
        pin: PinGuard,
        /// Re-hash whole reads (`cache.verify_reads`): the digest, and the
        /// cache to quarantine it in.
        verify: Option<(Digest, Cache)>,
    },
    Filling(Arc<Fill>),
}

/// A blob ready to stream.
pub struct Blob {
    /// Total size, when known (always, except for an upstream that sent no
    /// `Content-Length`, until the fill ends).
    pub size: Option<u64>,
    pub result: CacheResult,
    source: Source,
}

impl Blob {
    /// Wait for the size of a blob whose upstream did not announce it.
    pub async fn size_when_done(&self) -> Result<u64, CacheError> {
        match &self.source {
            Source::Published { size, .. } => Ok(*size),
            Source::Filling(fill) => match self.size {
                Some(n) => Ok(n),
                None => fill.size_when_done().await,
            },
        }
    }

    /// Stream bytes `start..end` (`end` exclusive, `None` = to the end).
    pub fn stream(self, start: u64, end: Option<u64>) -> ByteStream {
        match self.source {
            Source::Published {
                reader,
                size,
                pin,
                verify,
            } => {
                let end = end.unwrap_or(size).min(size);
                let verify = verify.filter(|_| start == 0 && end == size).map(|(digest, cache)| {
                    let d = digest.clone();
                    VerifyRead {
                        digest,
                        on_corrupt: Box::new(move || {
                            // Removed first, then reported: once the log line
                            // or the count is seen, the next request fetches
                            // it again.
                            tokio::spawn(async move {
                                if let Err(e) = cache.quarantine(&d).await {
                                    tracing::error!(error = %crate::error::chain(&e), "removing a corrupt object failed");
                                }
                                tracing::error!(digest = %d, "a cached blob does not match its digest (disk corruption?); the response was cut and the object removed");
                                cache.0.metrics.corrupt_objects(1);
                            });
                        }),
                    }
                });
                published(reader, start, end, pin, verify)
            }
            Source::Filling(fill) => fill.stream(start, end),
        }
    }
}

/// Bytes read from the shared bucket at a time when copying an object: a
/// window of the bucket reader, which fetches the next one meanwhile.
const COPY_READ: usize = crate::store::s3::objects::WINDOW;

/// How many times a request joins, leads or retries a fill.
const ATTEMPTS: usize = 4;

/// The upstream refused this repository (not found, not authorized): a
/// request through another repository may still get the blob.
fn refused_in_repository(e: &CacheError) -> bool {
    matches!(
        e.root(),
        CacheError::Upstream(UpstreamError::NotFound { .. } | UpstreamError::Unauthorized { .. })
    )
}

impl Cache {
    /// A blob, from the store or from a (possibly shared) upstream fill.
    /// Returns once the upstream has answered, before the bytes arrive.
    pub async fn blob(&self, target: &Target, digest: &Digest) -> Result<Blob, CacheError> {
        let origin = Origin::of(target);
        for _ in 0..ATTEMPTS {
            if self.0.offline {
                let Some((info, pin)) = self.0.index.pin(digest) else {
                    return Err(CacheError::Offline);
                };
                self.check_held(target, digest, Kind::Blob).await?;
                return self
                    .open_published(digest, info.size, pin)
                    .await?
                    .ok_or(CacheError::Offline);
            }
            let join = self.0.blob_fills.join(
                digest,
                || self.0.index.pin(digest),
                |ticket| {
                    let (fill, producer) = Fill::new(origin.clone());
                    (fill, (producer, ticket))
                },
            );
            match join {
                Join::Cached((info, pin)) => {
                    self.check_held(target, digest, Kind::Blob).await?;
                    if let Some(blob) = self.open_published(digest, info.size, pin).await? {
                        return Ok(blob);
                    }
                }
                Join::Follow(fill) => {
                    let foreign = fill.origin != origin;
                    // Ours must hold it before anything of another
                    // repository's fetch (its timing, its errors) shows.
                    if foreign {
                        self.check_held(target, digest, Kind::Blob).await?;
                    }
                    match fill.ready().await {
                        Ok(size) => {
                            return Ok(Blob {
                                size,
                                result: CacheResult::Coalesced,
                                source: Source::Filling(fill),
                            });
                        }
                        // Refused in the leader's repository: that says
                        // nothing about ours. With [auth], no failure of
                        // another repository's fetch is passed on. Try
                        // again, through ours.
                        Err(e)
                            if foreign && (refused_in_repository(&e) || self.checks_holdings()) =>
                        {
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Join::Lead(fill, (producer, ticket)) => {
                    // Counted before the task starts, so shutdown never misses it.
                    let running = self.fill_running();
                    tokio::spawn(self.clone().run_fill(
                        target.clone(),
                        digest.clone(),
                        producer,
                        (ticket, running),
                    ));
                    let size = fill.ready().await?;
                    return Ok(Blob {
                        size,
                        result: CacheResult::Miss,
                        source: Source::Filling(fill),
                    });
                }
            }
        }
        Err(CacheError::BlobUnknown)
    }

    /// Open a cached blob; `None` (and forgotten) if its file is gone or
    /// is not the size the index recorded.
    async fn open_published(
        &self,
        digest: &Digest,
        size: u64,
        pin: PinGuard,
    ) -> Result<Option<Blob>, CacheError> {
        match self.0.store.open(digest).await? {
            Some(object) if object.size == size => Ok(Some(Blob {
                size: Some(size),
                result: CacheResult::Hit,
                source: Source::Published {
                    reader: object.reader,
                    size,
                    pin,
                    verify: self.0.verify_reads.then(|| (digest.clone(), self.clone())),
                },
            })),
            _ => {
                drop(pin);
                self.forget_missing(digest).await?;
                Ok(None)
            }
        }
    }

    /// The size of a blob, for HEAD: from the index, a fill in progress, or
    /// the upstream's claim (the bytes are verified when fetched).
    pub async fn blob_size(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<(u64, CacheResult), CacheError> {
        if let Some(info) = self.0.index.get(digest) {
            self.check_held(target, digest, Kind::Blob).await?;
            return Ok((info.size, CacheResult::Hit));
        }
        if let Some(fill) = self.0.blob_fills.get(digest) {
            if fill.origin != Origin::of(target) {
                self.check_held(target, digest, Kind::Blob).await?;
            }
            if let Ok(Some(size)) = fill.ready().await {
                return Ok((size, CacheResult::Coalesced));
            }
        }
        if self.0.offline {
            return Err(CacheError::Offline);
        }
        // Another replica stored it: its size, unless the upstream must
        // confirm that this repository holds it anyway.
        if !self.checks_holdings()
            && let Some(shared) = self.0.store.shared(digest).await?
        {
            return Ok((shared.size, CacheResult::Hit));
        }
        let upstream = self.0.upstreams.get(target.upstream);
        match upstream.head_blob(&target.repo, digest).await? {
            Some(size) => Ok((size, CacheResult::Pass)),
            None => Err(CacheError::NoLength),
        }
    }

    async fn run_fill(
        self,
        target: Target,
        digest: Digest,
        producer: FillProducer,
        ended: (Ticket<Digest, Arc<Fill>>, super::FillRunning),
    ) {
        let _in_flight = self.0.metrics.fill_started();
        let (ticket, running) = ended;
        match self.download(&target, &digest, &producer).await {
            Ok((reader, size, pin)) => {
                producer.done(reader, size, pin);
                // Fetched through this repository: it holds the blob.
                if let Err(e) = self
                    .record_held(&target, std::slice::from_ref(&digest))
                    .await
                {
                    tracing::warn!(%digest, error = %crate::error::chain(&e), "cannot record the blob's repository");
                }
                drop(ticket);
            }
            Err(e) => {
                tracing::warn!(
                    %digest,
                    repository = %target.reference(),
                    error = %crate::error::chain(&e),
                    "blob fill failed; nothing was cached"
                );
                // The flight ends first: a follower that retries after the
                // failure starts a fresh fill instead of finding this one.
                drop(ticket);
                producer.failed(Arc::new(e));
            }
        }
        drop(running);
    }

    async fn download(
        &self,
        target: &Target,
        digest: &Digest,
        producer: &FillProducer,
    ) -> Result<(Arc<dyn ObjectReader>, u64, PinGuard), CacheError> {
        // Held for the download's whole life, publishing included.
        let _slot = self.fill_slot().await?;
        // Stored by another replica: copied from the bucket, verified, and
        // no upstream request for the bytes. Through this repository only
        // if it holds the object (with [auth], the upstream confirms it).
        if let Some(shared) = self.0.store.shared(digest).await? {
            self.check_held(target, digest, Kind::Blob).await?;
            return self.copy_shared(digest, shared, producer).await;
        }
        let upstream = self.0.upstreams.get(target.upstream);
        let name = upstream.name().to_owned();
        let download = upstream.get_blob(&target.repo, digest).await?;
        let mut writer = self.0.store.create(digest, download.length).await?;
        let reader = writer.reader();
        let written = writer.written();
        producer.streaming(reader.clone(), download.length);
        // Silences and drips both end the fill (and fail its followers).
        let mut body = upstream.paced(download.body);
        while let Some(data) = body.next().await? {
            self.0.metrics.upstream_bytes(&name, data.len() as u64);
            // The verified writer refuses bytes beyond the announced length
            // and queues the rest for writing and hashing on its own
            // threads; followers get the bytes at once (all but the last
            // byte of the blob, until it verifies).
            writer.append(data.clone()).await?;
            producer.received(data, *written.borrow());
        }
        let pending = writer.finish().await?;
        self.publish_fill(digest, pending, reader, producer).await
    }

    /// A fill's bytes verified: release the held-back last bytes to its
    /// followers now, and make the object durable and visible behind them.
    async fn publish_fill(
        &self,
        digest: &Digest,
        pending: Box<dyn crate::store::PendingObject>,
        reader: Arc<dyn ObjectReader>,
        producer: &FillProducer,
    ) -> Result<(Arc<dyn ObjectReader>, u64, PinGuard), CacheError> {
        let size = pending.size();
        producer.verified(reader.clone(), size);
        let pin = self.commit(pending, digest, None).await?;
        Ok((reader, size, pin))
    }

    /// Copy an object another replica stored, through a verified writer,
    /// streaming it to followers as a fill from upstream would. Bytes that
    /// do not match fail the fill (as wrong upstream bytes do) and the
    /// shared copy is checked and removed, so the next request fetches
    /// the blob from upstream.
    async fn copy_shared(
        &self,
        digest: &Digest,
        shared: crate::store::StoredObject,
        producer: &FillProducer,
    ) -> Result<(Arc<dyn ObjectReader>, u64, PinGuard), CacheError> {
        let size = shared.size;
        let mut writer = self.0.store.copy(digest, Some(size)).await?;
        let reader = writer.reader();
        let written = writer.written();
        producer.streaming(reader.clone(), Some(size));
        let read = |at: u64| {
            let len = (size - at).min(COPY_READ as u64) as usize;
            shared.reader.read_at(at, len)
        };
        let mut at = 0u64;
        // One read ahead while the last one is written.
        let mut next = (size > 0).then(|| read(0));
        while let Some(pending_read) = next.take() {
            let data = pending_read.await.map_err(|source| StoreError::Io {
                op: "read from the shared bucket",
                path: digest.to_string().into(),
                source,
            })?;
            if data.is_empty() {
                break;
            }
            at = at.saturating_add(data.len() as u64);
            if at < size {
                next = Some(read(at));
            }
            let mut rest = data;
            while !rest.is_empty() {
                let piece = rest.split_to(rest.len().min(crate::store::buffers::CHUNK));
                writer.append(piece.clone()).await?;
                producer.received(piece, *written.borrow());
            }
        }
        let pending = match writer.finish().await {
            Ok(p) => p,
            Err(e) => {
                if e.is_integrity() {
                    self.discard_shared_later(digest);
                }
                return Err(e.into());
            }
        };
        self.publish_fill(digest, pending, reader, producer).await
    }
}

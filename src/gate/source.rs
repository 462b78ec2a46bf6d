//! What the gate needs from the world, as two small interfaces: where
//! signatures and artifacts are read from ([`Source`]) and where verdicts are
//! kept ([`Verdicts`]). The cache implements both; anything else that holds
//! registry content (a directory of fixtures, an image layout) can too, and
//! the gate's discovery and verification then run unchanged over it.
//!
//! A source answers "absent" as `Ok(None)` (not found upstream, not cached
//! while offline) and everything else as an error, so that the gate can
//! refuse when it could not look. Nothing a source returns is trusted:
//! manifests come parsed and checked against their digest, blobs are checked
//! against their digest by the source, and the gate verifies what they mean.
//! This module must not decide anything.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::cache::fill::BoxError;
use crate::cache::{Cache, CacheError};
use crate::digest::Digest;
use crate::manifest::{Manifest, ManifestError};
use crate::reference::Reference;
use crate::router::Target;
use crate::store::BoxFuture;
use crate::upstream::UpstreamError;

/// Registry content the gate reads: manifests, referrer lists, small blobs.
pub trait Source: Send + Sync {
    /// A manifest by tag or digest, parsed; `None` when there is none.
    fn manifest<'a>(
        &'a self,
        target: &'a Target,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<Option<Manifest>, SourceError>>;

    /// The referrers list of `subject`, parsed as an index; `None` when
    /// nothing refers to it.
    fn referrers<'a>(
        &'a self,
        target: &'a Target,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<Manifest>, SourceError>>;

    /// A blob's bytes, verified against `digest`, refusing more than `max`
    /// bytes; `None` when it does not exist.
    fn blob<'a>(
        &'a self,
        target: &'a Target,
        digest: &'a Digest,
        max: u64,
    ) -> BoxFuture<'a, Result<Option<Bytes>, SourceError>>;
}

/// Where verdicts are kept between requests: opaque bytes with a lifetime.
pub trait Verdicts: Send + Sync {
    fn get(&self, key: &str) -> Option<Arc<[u8]>>;
    fn put(&self, entries: Vec<(String, Duration, Vec<u8>)>)
    -> BoxFuture<'_, Result<(), BoxError>>;
}

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The content exists but is not a valid manifest: junk, to be skipped
    /// beside other evidence.
    #[error("not a valid manifest")]
    Malformed(#[source] ManifestError),
    #[error(transparent)]
    TooLarge(TooLarge),
    #[error("the bytes of {digest} do not match it")]
    Corrupt { digest: Digest },
    /// It could not be looked at (upstream down, disk failing): the gate
    /// refuses rather than decide on part of the evidence.
    #[error("fetching failed")]
    Fetch(#[source] BoxError),
}

/// A blob larger than the gate reads.
#[derive(Debug, thiserror::Error)]
#[error("{digest} is larger than {max} bytes")]
pub struct TooLarge {
    pub digest: Digest,
    pub max: u64,
}

/// Not found (or not cached while offline): nothing of that kind.
fn absent(e: &CacheError) -> bool {
    matches!(
        e.root(),
        CacheError::Upstream(UpstreamError::NotFound { .. })
            | CacheError::ManifestUnknown
            | CacheError::BlobUnknown
            | CacheError::Offline
    )
}

fn found<T>(r: Result<T, CacheError>) -> Result<Option<T>, SourceError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(match e.root() {
            CacheError::ManifestInvalid(m) => SourceError::Malformed(m.clone()),
            _ => fetch(e),
        }),
    }
}

fn fetch(e: CacheError) -> SourceError {
    SourceError::Fetch(Box::new(e))
}

impl Source for Cache {
    fn manifest<'a>(
        &'a self,
        target: &'a Target,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<Option<Manifest>, SourceError>> {
        Box::pin(async move {
            found(
                Cache::manifest(self, target, reference)
                    .await
                    .map(|(m, _)| m),
            )
        })
    }

    fn referrers<'a>(
        &'a self,
        target: &'a Target,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<Manifest>, SourceError>> {
        Box::pin(async move {
            found(
                Cache::referrers(self, target, subject)
                    .await
                    .map(|(m, _)| m),
            )
        })
    }

    fn blob<'a>(
        &'a self,
        target: &'a Target,
        digest: &'a Digest,
        max: u64,
    ) -> BoxFuture<'a, Result<Option<Bytes>, SourceError>> {
        Box::pin(async move {
            let too_large = || {
                SourceError::TooLarge(TooLarge {
                    digest: digest.clone(),
                    max,
                })
            };
            let Some(blob) = found(Cache::blob(self, target, digest).await)? else {
                return Ok(None);
            };
            let size = blob.size_when_done().await.map_err(fetch)?;
            if size > max {
                return Err(too_large());
            }
            let capacity = usize::try_from(size).map_err(|_| too_large())?;
            let mut out = BytesMut::with_capacity(capacity);
            // The stream ends only once the bytes have verified against
            // the digest; a mismatch ends it with an error.
            let mut stream = blob.stream(0, None);
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.map_err(SourceError::Fetch)?);
                if out.len() as u64 > max {
                    return Err(too_large());
                }
            }
            // Bytes read back from disk are not trusted: check them again.
            let out = out.freeze();
            let actual = Digest::of(digest.algorithm(), &out);
            if actual != *digest {
                tracing::error!(%digest, %actual, "a cached blob does not match its digest (disk corruption?); it was removed");
                self.quarantine(digest).await.map_err(fetch)?;
                return Err(SourceError::Corrupt {
                    digest: digest.clone(),
                });
            }
            Ok(Some(out))
        })
    }
}

impl Verdicts for Cache {
    fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.verdict(key)
    }

    fn put(
        &self,
        entries: Vec<(String, Duration, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.put_verdicts(entries)
                .await
                .map_err(|e| Box::new(e) as BoxError)
        })
    }
}

//! Manifests through the cache: by digest (immutable, never revalidated) and
//! by tag (trusted for `tag_ttl`, then revalidated with a `HEAD` upstream).
//!
//! Owns the manifest flow: read whole (at most 4 MiB), verify against the
//! requested digest, or, for a tag, against the upstream's
//! `Docker-Content-Digest`; determine the media type from the verified bytes;
//! store through the verified writer; record the tag. Concurrent requests
//! for the same manifest or tag share one upstream fetch. When the upstream is
//! unreachable, times out, answers 5xx or 429, a cached copy is served as
//! stale. This module must not build HTTP responses.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::holdings::Kind;
use super::index::{TagEntry, TagKey, TagName};
use super::{Cache, CacheError};
use crate::digest::{Algorithm, Digest};
use crate::metrics::CacheResult;
use crate::reference::{Reference, RegistryHost, RepoName, Tag};
use crate::router::Target;
use crate::upstream::UpstreamError;

pub use crate::manifest::Manifest;

/// What a shared fetch produced.
pub struct ManifestOutcome {
    pub manifest: Manifest,
    pub result: CacheResult,
}

/// Keys of shared manifest fetches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKey {
    ByDigest(RegistryHost, RepoName, Digest),
    ByTag(TagKey),
    Referrers(TagKey),
}

pub type SharedManifest = Shared<BoxFuture<'static, Result<Arc<ManifestOutcome>, Arc<CacheError>>>>;

/// Attempts when a concurrent fetch keeps publishing under our feet.
const RACE_RETRIES: usize = 3;

impl Cache {
    /// A manifest by tag or digest. With `[auth]`, the repository is
    /// recorded as holding it (its tag named it, the upstream returned it
    /// through this repository, or confirmed that it holds it).
    pub async fn manifest(
        &self,
        target: &Target,
        reference: &Reference,
    ) -> Result<(Manifest, CacheResult), CacheError> {
        let (m, result) = self.find_manifest(target, reference).await?;
        self.record_held(target, std::slice::from_ref(&m.digest))
            .await?;
        Ok((m, result))
    }

    async fn find_manifest(
        &self,
        target: &Target,
        reference: &Reference,
    ) -> Result<(Manifest, CacheResult), CacheError> {
        for _ in 0..RACE_RETRIES {
            let attempt = match reference {
                Reference::Digest(d) => {
                    if let Some(m) = self.local_manifest(d).await? {
                        self.check_held(target, d, Kind::Manifest).await?;
                        return Ok((m, CacheResult::Hit));
                    }
                    if self.0.offline {
                        return Err(CacheError::Offline);
                    }
                    let key = ManifestKey::ByDigest(
                        target.registry.clone(),
                        target.repo.clone(),
                        d.clone(),
                    );
                    let (this, t, digest) = (self.clone(), target.clone(), d.clone());
                    let work = async move {
                        let manifest = this.fetch_by_digest(&t, &digest).await?;
                        Ok(ManifestOutcome {
                            manifest,
                            result: CacheResult::Miss,
                        })
                    };
                    self.coalesce(key, || self.has_manifest(d), work).await
                }
                Reference::Tag(tag) => {
                    let key = self.tag_key(target, TagName::Tag(tag.clone()));
                    if let Some(e) = self.0.index.tag(&key)
                        && (self.0.offline || self.is_fresh(&e))
                        && let Some(m) = self.local_manifest(&e.digest).await?
                    {
                        return Ok((m, CacheResult::Hit));
                    }
                    if self.0.offline {
                        return Err(CacheError::Offline);
                    }
                    let fresh = || {
                        self.0
                            .index
                            .tag(&key)
                            .is_some_and(|e| self.is_fresh(&e) && self.has_manifest(&e.digest))
                    };
                    let work = self
                        .clone()
                        .resolve_tag(target.clone(), tag.clone(), key.clone());
                    self.coalesce(ManifestKey::ByTag(key.clone()), fresh, work)
                        .await
                }
            };
            if let Some(result) = attempt {
                return result;
            }
        }
        Err(CacheError::ManifestUnknown)
    }

    pub(super) fn tag_key(&self, target: &Target, name: TagName) -> TagKey {
        TagKey {
            registry: target.registry.clone(),
            repo: target.repo.clone(),
            name,
        }
    }

    pub(super) fn is_fresh(&self, entry: &TagEntry) -> bool {
        self.0
            .clock
            .now()
            .duration_since(entry.fetched_at)
            .is_ok_and(|age| age < self.0.tag_ttl)
    }

    pub(super) fn has_manifest(&self, digest: &Digest) -> bool {
        self.0
            .index
            .get(digest)
            .is_some_and(|i| i.media_type.is_some())
    }

    /// The manifest `digest` if the cache holds it as one (never fetched).
    pub async fn cached_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, CacheError> {
        self.local_manifest(digest).await
    }

    /// A cached manifest: from memory when it was served recently, else
    /// from the store (and then kept in memory).
    async fn local_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, CacheError> {
        if !self.has_manifest(digest) {
            return Ok(None);
        }
        if let Some(m) = self.0.hot.get(digest) {
            // Still in use, for `gc` of a shared bucket.
            self.0.store.used(digest);
            return Ok(Some(m));
        }
        let Some((bytes, info)) = self.read_object(digest).await? else {
            return Ok(None);
        };
        let Some(media_type) = info.media_type else {
            return Ok(None);
        };
        // The bytes matched their digest; they are parsed afresh, as every
        // manifest is, so what the gate reads is what they mean.
        match Manifest::check(digest, bytes, Some(&media_type)) {
            Ok(m) => {
                self.0.hot.insert(&m);
                Ok(Some(m))
            }
            Err(e) => {
                tracing::warn!(%digest, error = %crate::error::chain(&e), "a cached manifest no longer parses; it will be fetched again");
                self.quarantine(digest).await?;
                Ok(None)
            }
        }
    }

    /// Run `work` once per key; `None` when the object turned out to be
    /// cached after all (the caller reads it locally).
    pub(super) async fn coalesce<F>(
        &self,
        key: ManifestKey,
        cached: impl FnOnce() -> bool,
        work: F,
    ) -> Option<Result<(Manifest, CacheResult), CacheError>>
    where
        F: Future<Output = Result<ManifestOutcome, CacheError>> + Send + 'static,
    {
        let join = self.0.manifest_flights.join(
            &key,
            || cached().then_some(()),
            move |ticket| {
                let task = tokio::spawn(async move {
                    let _ticket = ticket;
                    work.await.map(Arc::new).map_err(Arc::new)
                });
                let shared = async move { task.await.map_err(|e| Arc::new(CacheError::Task(e)))? }
                    .boxed()
                    .shared();
                (shared, ())
            },
        );
        let (shared, leader) = match join {
            super::flight::Join::Cached(()) => return None,
            super::flight::Join::Follow(s) => (s, false),
            super::flight::Join::Lead(s, ()) => (s, true),
        };
        Some(match shared.await {
            Ok(o) => {
                let result = if leader || o.result == CacheResult::Stale {
                    o.result
                } else {
                    CacheResult::Coalesced
                };
                Ok((o.manifest.clone(), result))
            }
            Err(e) => Err(CacheError::Shared(e)),
        })
    }

    /// Fetch what a tag points to now, revalidating a cached answer with HEAD.
    async fn resolve_tag(
        self,
        target: Target,
        tag: Tag,
        key: TagKey,
    ) -> Result<ManifestOutcome, CacheError> {
        let cached = match self.0.index.tag(&key) {
            Some(e) => self.local_manifest(&e.digest).await?.map(|m| (e, m)),
            None => None,
        };
        let fetched = self.fetch_tag(&target, &tag, &key, cached.as_ref()).await;
        match fetched {
            Err(CacheError::Upstream(e)) if e.is_unavailable() && cached.is_some() => {
                let (_, manifest) = cached.expect("checked above");
                tracing::warn!(
                    reference = %format!("{}:{tag}", target.reference()),
                    error = %crate::error::chain(&e),
                    "upstream unavailable; serving the cached manifest"
                );
                Ok(ManifestOutcome {
                    manifest,
                    result: CacheResult::Stale,
                })
            }
            Err(CacheError::Upstream(e @ UpstreamError::NotFound { .. })) => {
                if cached.is_some() {
                    // The tag is gone upstream: stop serving it.
                    self.0.index.remove_tag(&key).await?;
                }
                Err(CacheError::Upstream(e))
            }
            other => other,
        }
    }

    async fn fetch_tag(
        &self,
        target: &Target,
        tag: &Tag,
        key: &TagKey,
        cached: Option<&(TagEntry, Manifest)>,
    ) -> Result<ManifestOutcome, CacheError> {
        let upstream = self.0.upstreams.get(target.upstream);
        if let Some((entry, manifest)) = cached {
            // HEAD does not count against Docker Hub's pull limit.
            match upstream
                .head_manifest(&target.repo, &Reference::Tag(tag.clone()))
                .await?
            {
                Some(d) if d == entry.digest => {
                    self.record_tag(key, &d).await?;
                    return Ok(ManifestOutcome {
                        manifest: manifest.clone(),
                        result: CacheResult::Revalidated,
                    });
                }
                Some(d) => {
                    let manifest = self.fetch_by_digest(target, &d).await?;
                    self.record_tag(key, &manifest.digest).await?;
                    return Ok(ManifestOutcome {
                        manifest,
                        result: CacheResult::Miss,
                    });
                }
                None => {}
            }
        }
        let fetched = upstream
            .get_manifest(&target.repo, &Reference::Tag(tag.clone()))
            .await?;
        let digest = match &fetched.digest {
            Some(d) => d.clone(),
            None => Digest::of(Algorithm::Sha256, &fetched.bytes),
        };
        let manifest = self
            .keep_manifest(&digest, fetched.bytes, fetched.content_type.as_deref())
            .await?;
        self.record_tag(key, &digest).await?;
        Ok(ManifestOutcome {
            manifest,
            result: CacheResult::Miss,
        })
    }

    /// Remember where a tag points. A failure (the index cannot be written)
    /// does not fail the request: the answer is verified either way, it is
    /// only not remembered, and readiness reports the index.
    pub(super) async fn record_tag(&self, key: &TagKey, digest: &Digest) -> Result<(), CacheError> {
        let entry = TagEntry {
            digest: digest.clone(),
            fetched_at: self.0.clock.now(),
        };
        if let Err(e) = self.0.index.set_tag(key, entry).await {
            tracing::warn!(tag = ?key.name, error = %crate::error::chain(&e), "could not record a tag in the index");
        }
        Ok(())
    }

    async fn fetch_by_digest(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<Manifest, CacheError> {
        let upstream = self.0.upstreams.get(target.upstream);
        let fetched = upstream
            .get_manifest(&target.repo, &Reference::Digest(digest.clone()))
            .await?;
        self.keep_manifest(digest, fetched.bytes, fetched.content_type.as_deref())
            .await
    }

    /// Verify manifest bytes against `digest`, parse them, and store them.
    async fn keep_manifest(
        &self,
        digest: &Digest,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<Manifest, CacheError> {
        let manifest =
            Manifest::check(digest, bytes, content_type).map_err(CacheError::ManifestInvalid)?;
        if !self.has_manifest(digest) {
            drop(
                self.store_bytes(digest, manifest.bytes.clone(), Some(manifest.media_type()))
                    .await?,
            );
        }
        self.0.hot.insert(&manifest);
        Ok(manifest)
    }
}

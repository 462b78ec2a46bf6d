//! Tag lists and referrer lists through the cache.
//!
//! Tag lists pass through from upstream (they change too often to cache
//! whole); when the upstream is down or the mirror is offline they are
//! answered from the tags the index knows, paginated the same way. Referrer
//! lists come from the upstream's referrers API and are cached like a tag for
//! `tag_ttl`; an upstream without that API (it answers 404) is asked through
//! the referrers tag schema (`<alg>-<hex>`), which the manifest flow caches.
//! This module must not build HTTP responses.

use bytes::Bytes;

use super::index::{TagKey, TagName};
use super::manifests::{Manifest, ManifestKey, ManifestOutcome};
use super::{Cache, CacheError};
use crate::digest::{Algorithm, Digest};
use crate::media::OCI_INDEX;
use crate::metrics::CacheResult;
use crate::reference::{MAX_TAG_LEN, Reference, Tag};
use crate::router::{Target, UpstreamId};
use crate::upstream::UpstreamError;

/// The referrers response for a subject nothing refers to.
pub const EMPTY_INDEX: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

/// Bytes a registry offered as a referrers list: an OCI image index, parsed
/// like any other.
fn referrers_list(bytes: Bytes) -> Result<Manifest, CacheError> {
    let digest = Digest::of(Algorithm::Sha256, &bytes);
    match Manifest::check(&digest, bytes, Some(OCI_INDEX)) {
        Ok(m) if m.media_type() == OCI_INDEX => Ok(m),
        Ok(_) => Err(CacheError::BadReferrers),
        Err(e) => Err(CacheError::ManifestInvalid(e)),
    }
}

/// The referrers list of a subject nothing refers to.
pub fn empty_index() -> Manifest {
    referrers_list(Bytes::from_static(EMPTY_INDEX.as_bytes())).expect("the empty index parses")
}

/// A page of tags.
pub struct TagList {
    pub tags: Vec<Tag>,
    /// More tags follow this page.
    pub more: bool,
    pub result: CacheResult,
}

/// Tags after `last`, at most `n` of them, from a sorted list.
fn page(all: Vec<Tag>, n: Option<usize>, last: Option<&Tag>) -> (Vec<Tag>, bool) {
    let mut rest: Vec<Tag> = all
        .into_iter()
        .filter(|t| last.is_none_or(|l| t.as_str() > l.as_str()))
        .collect();
    let more = n.is_some_and(|n| rest.len() > n);
    if let Some(n) = n {
        rest.truncate(n);
    }
    (rest, more)
}

/// The referrers tag schema's tag for a subject: `<alg>-<hex>`, at most 128 characters.
pub fn referrers_tag(subject: &Digest) -> Tag {
    let mut s = format!("{}-{}", subject.algorithm().name(), subject.hex());
    s.truncate(MAX_TAG_LEN);
    s.parse()
        .expect("algorithm names and hex digits form a valid tag")
}

impl Cache {
    /// A page of a repository's tags.
    pub async fn tags(
        &self,
        target: &Target,
        n: Option<usize>,
        last: Option<&Tag>,
    ) -> Result<TagList, CacheError> {
        let mut failure = None;
        if !self.0.offline {
            let upstream = self.0.upstreams.get(target.upstream);
            match upstream.tags(&target.repo, n, last).await {
                Ok(mut p) => {
                    // The spec wants lexical order and n/last honoured; some
                    // registries (distribution 2.8) ignore both. Applying
                    // them again is a no-op for those that don't.
                    p.tags.sort();
                    let (tags, truncated) = page(p.tags, n, last);
                    return Ok(TagList {
                        tags,
                        more: p.more || truncated,
                        result: CacheResult::Pass,
                    });
                }
                Err(e) if e.is_unavailable() => failure = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        let known = self.0.index.tags_in(&target.registry, &target.repo);
        if known.is_empty() {
            return Err(failure.map_or(CacheError::Offline, CacheError::Upstream));
        }
        let result = match failure {
            Some(e) => {
                tracing::warn!(
                    repository = %target.reference(),
                    error = %crate::error::chain(&e),
                    "upstream unavailable; listing the tags this mirror knows"
                );
                CacheResult::Stale
            }
            None => CacheResult::Hit,
        };
        let (tags, more) = page(known, n, last);
        Ok(TagList { tags, more, result })
    }

    /// The image index of manifests that refer to `subject` (unfiltered),
    /// parsed like any index.
    pub async fn referrers(
        &self,
        target: &Target,
        subject: &Digest,
    ) -> Result<(Manifest, CacheResult), CacheError> {
        let key = self.tag_key(target, TagName::Referrers(subject.clone()));
        for _ in 0..3 {
            if let Some(e) = self.0.index.tag(&key)
                && (self.0.offline || self.is_fresh(&e))
                && let Some((bytes, _)) = self.read_object(&e.digest).await?
            {
                return Ok((referrers_list(bytes)?, CacheResult::Hit));
            }
            if self.0.offline {
                return self.referrers_by_tag(target, subject).await;
            }
            let fresh = || {
                self.0
                    .index
                    .tag(&key)
                    .is_some_and(|e| self.is_fresh(&e) && self.0.index.get(&e.digest).is_some())
            };
            let work = self
                .clone()
                .resolve_referrers(target.clone(), subject.clone(), key.clone());
            if let Some(r) = self
                .coalesce(ManifestKey::Referrers(key.clone()), fresh, work)
                .await
            {
                return r;
            }
        }
        Err(CacheError::ManifestUnknown)
    }

    fn referrers_api_missing(&self, id: UpstreamId) -> bool {
        let seen = self.0.no_referrers_api.lock().expect("referrers lock");
        seen.get(&id).is_some_and(|at| {
            self.0.clock.instant().saturating_duration_since(*at) < self.0.tag_ttl
        })
    }

    async fn resolve_referrers(
        self,
        target: Target,
        subject: Digest,
        key: TagKey,
    ) -> Result<ManifestOutcome, CacheError> {
        let outcome = |manifest, result| ManifestOutcome { manifest, result };
        if !self.referrers_api_missing(target.upstream) {
            let upstream = self.0.upstreams.get(target.upstream);
            match upstream.referrers(&target.repo, &subject).await {
                Ok(Some(bytes)) => {
                    let list = referrers_list(bytes)?;
                    // Stored as a plain object, so it can never be served as a manifest.
                    drop(
                        self.store_bytes(&list.digest, list.bytes.clone(), None)
                            .await?,
                    );
                    self.record_tag(&key, &list.digest).await?;
                    return Ok(outcome(list, CacheResult::Miss));
                }
                Ok(None) => {
                    self.0
                        .no_referrers_api
                        .lock()
                        .expect("referrers lock")
                        .insert(target.upstream, self.0.clock.instant());
                }
                Err(e) if e.is_unavailable() => {
                    if let Some(entry) = self.0.index.tag(&key)
                        && let Some((bytes, _)) = self.read_object(&entry.digest).await?
                    {
                        tracing::warn!(
                            repository = %target.reference(),
                            error = %crate::error::chain(&e),
                            "upstream unavailable; serving cached referrers"
                        );
                        return Ok(outcome(referrers_list(bytes)?, CacheResult::Stale));
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (list, result) = self.referrers_by_tag(&target, &subject).await?;
        Ok(outcome(list, result))
    }

    /// Referrers through the tag schema: the index tagged `<alg>-<hex>`.
    async fn referrers_by_tag(
        &self,
        target: &Target,
        subject: &Digest,
    ) -> Result<(Manifest, CacheResult), CacheError> {
        let tag = Reference::Tag(referrers_tag(subject));
        match self.manifest(target, &tag).await {
            Ok((m, result)) if m.media_type() == OCI_INDEX => Ok((m, result)),
            // Something else under that tag is not a referrers list.
            Ok((_, result)) => Ok((empty_index(), result)),
            Err(e)
                if matches!(
                    e.root(),
                    CacheError::Upstream(UpstreamError::NotFound { .. })
                        | CacheError::ManifestUnknown
                        | CacheError::Offline
                ) =>
            {
                let result = if self.0.offline {
                    CacheResult::Hit
                } else {
                    CacheResult::Miss
                };
                Ok((empty_index(), result))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<Tag> {
        list.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn paginates_like_the_spec() {
        let all = tags(&["a", "b", "c", "d"]);
        assert_eq!(page(all.clone(), Some(2), None), (tags(&["a", "b"]), true));
        assert_eq!(
            page(all.clone(), Some(2), Some(&"b".parse().unwrap())),
            (tags(&["c", "d"]), false)
        );
        assert_eq!(
            page(all.clone(), None, Some(&"c".parse().unwrap())),
            (tags(&["d"]), false)
        );
        assert_eq!(page(all.clone(), Some(0), None), (vec![], true));
        assert_eq!(
            page(all, Some(10), Some(&"z".parse().unwrap())),
            (vec![], false)
        );
    }

    #[test]
    fn referrers_tag_schema() {
        let d = Digest::of(Algorithm::Sha256, b"");
        assert_eq!(referrers_tag(&d).as_str(), format!("sha256-{}", d.hex()));
        let long = Digest::of(Algorithm::Sha512, b"");
        assert_eq!(referrers_tag(&long).as_str().len(), MAX_TAG_LEN);
        assert!(empty_index().parsed.children().is_empty());
    }
}

//! With `[auth]`, objects are served only through repositories that hold
//! them: a blob cached for a private repository must not come out through
//! a public repository's path (`/v2/public/app/blobs/<private digest>`).
//!
//! A repository holds what the upstream returned through it (a manifest by
//! tag or digest, a blob), what the upstream confirmed with a `HEAD`
//! through it, and what `import` brought for it. What a manifest merely
//! references is not taken as held: a registry may accept a manifest naming
//! blobs it does not hold in that repository (foreign layers, unchecked
//! index children), so anyone able to push such a manifest would otherwise
//! unlock another repository's cached layers. An object cached or being
//! fetched for another repository is served through this one only once the
//! index says this one holds it, or the upstream confirms it (then it is
//! recorded: one `HEAD` per repository and object, ever); offline, an
//! object not known to be held is unknown. Without `[auth]` nothing is
//! recorded or checked (every client may pull everything anyway). This
//! module must not decide who may pull a repository.

use super::{Cache, CacheError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::router::Target;
use crate::upstream::UpstreamError;

/// What is asked for through a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Blob,
    Manifest,
}

impl Cache {
    /// Whether objects are served only through repositories that hold them
    /// (`[auth]`).
    pub fn checks_holdings(&self) -> bool {
        self.0.check_holdings
    }

    /// Whether `target`'s repository may be served `digest` from what is
    /// cached or being fetched for others.
    pub async fn check_held(
        &self,
        target: &Target,
        digest: &Digest,
        kind: Kind,
    ) -> Result<(), CacheError> {
        if !self.0.check_holdings {
            return Ok(());
        }
        let repository = target.reference();
        if self.0.index.holds(digest, &repository) {
            return Ok(());
        }
        // Refused exactly as a miss would be (the same error, the same
        // message): nothing says the object is cached for someone else.
        if self.0.offline {
            return Err(CacheError::Offline);
        }
        let upstream = self.0.upstreams.get(target.upstream);
        let answer = match kind {
            Kind::Blob => upstream.head_blob(&target.repo, digest).await.map(|_| ()),
            Kind::Manifest => upstream
                .head_manifest(&target.repo, &Reference::Digest(digest.clone()))
                .await
                .and_then(|d| match d {
                    // A registry that names another digest does not hold this one.
                    Some(d) if d != *digest => Err(UpstreamError::NotFound {
                        upstream: upstream.name().to_owned(),
                    }),
                    _ => Ok(()),
                }),
        };
        answer?;
        self.0
            .index
            .add_holdings(&repository, std::slice::from_ref(digest))
            .await?;
        Ok(())
    }

    /// Record that `target`'s repository holds `digests` (what the upstream
    /// returned through it, or what a layout brought for it).
    pub async fn record_held(&self, target: &Target, digests: &[Digest]) -> Result<(), CacheError> {
        if self.0.check_holdings {
            self.0
                .index
                .add_holdings(&target.reference(), digests)
                .await?;
        }
        Ok(())
    }
}

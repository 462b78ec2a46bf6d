//! Putting content carried across an air gap into the cache: blobs through
//! the verified writer (the bytes must match their digest and size, or
//! nothing is published), manifests already checked by the caller, tags and
//! referrer lists recorded so an offline instance answers them. Imported
//! tags are served whatever their age while `offline = true`, as cached
//! tags are. This module must not read layouts.

use std::path::Path;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::index::{TagEntry, TagName};
use super::{Cache, CacheError};
use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::reference::Tag;
use crate::router::Target;
use crate::store::StoreError;

/// Bytes read from a file per write.
const CHUNK: usize = 256 * 1024;

impl Cache {
    /// The data directory (work files of an import go beside the store).
    pub fn data_dir(&self) -> &Path {
        &self.0.dir
    }

    /// Is `digest` cached already (as a blob or a manifest)?
    pub fn has_object(&self, digest: &Digest) -> bool {
        self.0.index.get(digest).is_some()
    }

    /// Copy the file at `path` into the store as the blob `digest`, through
    /// the verified writer: a file of another size, or whose bytes do not
    /// match, is refused and nothing is published.
    pub async fn import_blob(
        &self,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<(), CacheError> {
        let io = |source| {
            CacheError::Store(StoreError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            })
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let actual = file.metadata().await.map_err(io)?.len();
        if actual != size {
            return Err(CacheError::Store(StoreError::LengthMismatch {
                expected: size,
                actual,
            }));
        }
        let mut writer = self.0.store.create(digest, Some(size)).await?;
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let n = (&mut file)
                .take(CHUNK as u64)
                .read_buf(&mut buf)
                .await
                .map_err(io)?;
            if n == 0 {
                break;
            }
            writer.append(buf.freeze()).await?;
        }
        let pending = writer.finish().await?;
        drop(self.commit(pending, digest, None).await?);
        Ok(())
    }

    /// Store a manifest the caller has checked ([`Manifest::check`]).
    pub async fn import_manifest(&self, manifest: &Manifest) -> Result<(), CacheError> {
        if !self.has_manifest(&manifest.digest) {
            drop(
                self.store_bytes(
                    &manifest.digest,
                    manifest.bytes.clone(),
                    Some(manifest.media_type()),
                )
                .await?,
            );
        }
        self.0.hot.insert(manifest);
        Ok(())
    }

    /// Point `tag` in `target` at `digest`.
    pub async fn import_tag(
        &self,
        target: &Target,
        tag: Tag,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        self.set_tag(target, TagName::Tag(tag), digest).await
    }

    /// Record `list` (an OCI index of referrer descriptors) as the
    /// referrers of `subject` in `target`.
    pub async fn import_referrers(
        &self,
        target: &Target,
        subject: &Digest,
        list: &Manifest,
    ) -> Result<(), CacheError> {
        if !self.has_object(&list.digest) {
            // A plain object, as fetched lists are: never served as a manifest.
            drop(
                self.store_bytes(&list.digest, list.bytes.clone(), None)
                    .await?,
            );
        }
        self.set_tag(target, TagName::Referrers(subject.clone()), &list.digest)
            .await
    }

    async fn set_tag(
        &self,
        target: &Target,
        name: TagName,
        digest: &Digest,
    ) -> Result<(), CacheError> {
        let key = self.tag_key(target, name);
        let entry = TagEntry {
            digest: digest.clone(),
            fetched_at: self.0.clock.now(),
        };
        Ok(self.0.index.set_tag(&key, entry).await?)
    }
}

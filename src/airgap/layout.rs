//! The OCI image layout portcullis exports and imports: `oci-layout`,
//! `index.json` (each exported image, and each signature or attestation
//! tag, named by `org.opencontainers.image.ref.name` with its full
//! normalized reference, so skopeo, oras and crane read it too) and
//! `blobs/<alg>/<hex>`; plus `portcullis.json`, which other tools ignore:
//! for each image, every object it needs, its tags and its referrer lists.
//!
//! Owns the format and writing it into a directory. Nothing read from a
//! layout is trusted: [`super::import`] checks every object. This module
//! must not fetch anything.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::digest::{Algorithm, Digest};

pub const OCI_LAYOUT: &str = "oci-layout";
pub const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
pub const INDEX: &str = "index.json";
pub const EXTRA: &str = "portcullis.json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The version of `portcullis.json` this build writes and reads.
pub const VERSION: u32 = 1;

/// `portcullis.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extra {
    pub version: u32,
    pub images: Vec<Image>,
    /// Docker Content Trust data the export decided with, per (Notary
    /// server, GUN): opaque to the layout, checked again by the importing
    /// site's gate at every decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<Trust>,
}

/// One repository's trust data.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// The Notary server's URL and the GUN, as the trust state names them.
    pub key: String,
    pub state: serde_json::Value,
}

/// One exported image and everything the gate needs to decide on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// As asked for, e.g. `alpine:3.20`.
    pub requested: String,
    /// Normalized repository, e.g. `docker.io/library/alpine`.
    pub repository: String,
    /// The top manifest (or index).
    pub digest: String,
    /// Tags to record: the image's own (when asked for by tag), `.sig` and
    /// `.att` tags, in whichever repository they were found.
    pub tags: Vec<TagEntry>,
    /// Referrer lists: for a subject in a repository, the referrer
    /// manifests exported.
    pub referrers: Vec<Referrers>,
    /// Every object (manifests first, then blobs) the image needs, each once.
    pub objects: Vec<Object>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagEntry {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referrers {
    pub repository: String,
    pub subject: String,
    /// The referrers' descriptors as the registry listed them.
    pub manifests: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub digest: String,
    pub size: u64,
    /// Set for manifests and indexes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// Where a blob lives inside a layout.
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    let alg = match digest.algorithm() {
        Algorithm::Sha256 => "sha256",
        Algorithm::Sha512 => "sha512",
    };
    root.join("blobs").join(alg).join(digest.hex())
}

/// Writes a layout into a directory. Each blob is written to a temporary
/// name and renamed once complete, so a blob file is never partial.
pub struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    pub async fn create(root: &Path) -> std::io::Result<LayoutDir> {
        tokio::fs::create_dir_all(root.join("blobs").join("sha256")).await?;
        tokio::fs::create_dir_all(root.join("blobs").join("sha512")).await?;
        Ok(LayoutDir {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Is the blob there already with this size?
    pub async fn has(&self, digest: &Digest, size: u64) -> bool {
        tokio::fs::metadata(blob_path(&self.root, digest))
            .await
            .is_ok_and(|m| m.len() == size)
    }

    /// Write a blob from a stream that ends with an error if the bytes do
    /// not match `digest` (the cache's streams do): nothing is renamed into
    /// place then.
    pub async fn put_stream<S, E>(&self, digest: &Digest, mut stream: S) -> Result<u64, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = blob_path(&self.root, digest);
        let tmp = path.with_extension("partial");
        let mut file = tokio::fs::File::create(&tmp).await.map_err(PutError::Io)?;
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| PutError::Source(e.into()))?;
                file.write_all(&chunk).await.map_err(PutError::Io)?;
                written = written
                    .checked_add(chunk.len() as u64)
                    .ok_or(PutError::TooLarge)?;
            }
            file.flush().await.map_err(PutError::Io)?;
            Ok::<(), PutError>(())
        }
        .await;
        drop(file);
        match result {
            Ok(()) => {
                tokio::fs::rename(&tmp, &path).await.map_err(PutError::Io)?;
                Ok(written)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Write small bytes already checked against `digest`.
    pub async fn put_bytes(&self, digest: &Digest, bytes: Bytes) -> Result<u64, PutError> {
        let stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(bytes)]);
        self.put_stream(digest, stream).await
    }

    /// What an earlier export left in this directory (`index.json` entries
    /// and `portcullis.json`), so that exporting into it adds to it. A
    /// directory without them starts empty; unreadable ones are an error
    /// (nothing is overwritten that could not be read).
    pub async fn existing(&self) -> std::io::Result<(Vec<serde_json::Value>, Extra)> {
        let read = |name: &str| {
            let path = self.root.join(name);
            async move {
                match tokio::fs::read(&path).await {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        let bad = |name: &str, e: serde_json::Error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{name}: {e}"))
        };
        let index = match read(INDEX).await? {
            None => Vec::new(),
            Some(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| bad(INDEX, e))?;
                v["manifests"].as_array().cloned().unwrap_or_default()
            }
        };
        let extra = match read(EXTRA).await? {
            None => Extra {
                version: VERSION,
                images: Vec::new(),
                trust: Vec::new(),
            },
            Some(b) => serde_json::from_slice(&b).map_err(|e| bad(EXTRA, e))?,
        };
        if extra.version != VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{EXTRA}: version {} is not {VERSION}", extra.version),
            ));
        }
        Ok((index, extra))
    }

    /// Write `oci-layout`, `index.json` and `portcullis.json`.
    pub async fn finish(&self, index: &serde_json::Value, extra: &Extra) -> std::io::Result<()> {
        let write = |name: &str, bytes: Vec<u8>| {
            let path = self.root.join(name);
            async move {
                let tmp = path.with_extension("partial");
                tokio::fs::write(&tmp, bytes).await?;
                tokio::fs::rename(&tmp, &path).await
            }
        };
        write(OCI_LAYOUT, OCI_LAYOUT_CONTENT.as_bytes().to_vec()).await?;
        write(
            INDEX,
            serde_json::to_vec_pretty(index).expect("the index serializes"),
        )
        .await?;
        write(
            EXTRA,
            serde_json::to_vec_pretty(extra).expect("the extra file serializes"),
        )
        .await
    }
}

/// Why a blob could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("writing the layout failed")]
    Io(#[source] std::io::Error),
    #[error("reading the object failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the object is too large")]
    TooLarge,
}

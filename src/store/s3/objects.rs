//! Published objects in the bucket: their content-addressed keys
//! (`<prefix>blobs/<algorithm>/<first two hex digits>/<hex>`, the layout
//! distribution's storage driver uses), stat by `HEAD`, and ranged reads by
//! ranged `GET`s. What a key holds is trusted only as far as the caller
//! verifies it (the cache re-hashes what it serves whole, and the scrub
//! re-hashes everything). This module must not write objects.

use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::client::{S3, S3Error};
use crate::digest::Digest;
use crate::store::{BoxFuture, ObjectReader, StoredObject};

/// The key of `digest` under `prefix` (empty, or ending in `/`).
pub fn key(prefix: &str, digest: &Digest) -> String {
    in_layout(prefix, "blobs", digest)
}

/// `<prefix><root>/<algorithm>/<first two hex digits>/<hex>`: where the
/// bucket keeps something about `digest` (its bytes under `blobs`).
pub fn in_layout(prefix: &str, root: &str, digest: &Digest) -> String {
    let hex = digest.hex();
    format!(
        "{prefix}{root}/{}/{}/{hex}",
        digest.algorithm().name(),
        &hex[..2]
    )
}

/// Ranged reads of one published object.
pub struct BucketReader {
    s3: S3,
    key: String,
}

impl ObjectReader for BucketReader {
    fn read_at(&self, offset: u64, max: usize) -> BoxFuture<'static, io::Result<Bytes>> {
        let (s3, key) = (self.s3.clone(), self.key.clone());
        Box::pin(async move {
            match s3.read(&key, offset, max).await {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{key} is gone from the bucket"),
                )),
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }
}

/// Stat `digest` in the bucket and open it for ranged reads (`None` if absent).
pub async fn open(s3: &S3, prefix: &str, digest: &Digest) -> Result<Option<StoredObject>, S3Error> {
    let key = key(prefix, digest);
    Ok(s3.head(&key).await?.map(|size| StoredObject {
        size,
        reader: Arc::new(BucketReader {
            s3: s3.clone(),
            key,
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn keys_are_content_addressed_under_the_prefix() {
        let d = Digest::of(Algorithm::Sha256, b"x");
        let hex = d.hex().to_owned();
        assert_eq!(key("", &d), format!("blobs/sha256/{}/{hex}", &hex[..2]));
        assert_eq!(
            key("cache/", &d),
            format!("cache/blobs/sha256/{}/{hex}", &hex[..2])
        );
    }
}

//! Published objects in the bucket: their content-addressed keys
//! (`<prefix>blobs/<algorithm>/<first two hex digits>/<hex>`, the layout
//! distribution's storage driver uses), stat by `HEAD`, and ranged reads by
//! ranged `GET`s of [`WINDOW`] bytes, the next fetched while one is read,
//! within a memory budget shared by every reader. What a key holds is trusted only as far as the caller
//! verifies it (the cache re-hashes what it serves whole, and the scrub
//! re-hashes everything). This module must not write objects.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::sync::Semaphore;

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

/// Bytes fetched by one ranged `GET` when reading an object: reads of a
/// response's chunks are served from such windows, and the next window is
/// fetched while the current one is sent.
pub const WINDOW: usize = 4 << 20;
/// Windows fetched ahead of the one being read.
const AHEAD: u64 = 1;
/// Windows one reader keeps: the ones being read, and those ahead.
const KEPT: usize = 2 + AHEAD as usize;

/// Bytes of windows held by every reader of a store together, at most (a
/// window's bytes are held until the last slice of it is sent).
pub const WINDOW_MEMORY: usize = 256 << 20;

type Fetch = futures_util::future::Shared<BoxFuture<'static, Result<Bytes, Arc<str>>>>;

/// A window's bytes, holding their share of [`WINDOW_MEMORY`] while any
/// slice of them lives.
struct Held {
    bytes: Bytes,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Ranged reads of one published object, by windows of [`WINDOW`] bytes.
pub struct BucketReader {
    s3: S3,
    key: String,
    size: u64,
    budget: Arc<Semaphore>,
    /// Windows fetched or being fetched, by index, oldest first.
    windows: Mutex<VecDeque<(u64, Fetch)>>,
}

impl BucketReader {
    fn window_len(&self, index: u64) -> usize {
        let start = index * WINDOW as u64;
        (self.size.saturating_sub(start)).min(WINDOW as u64) as usize
    }

    /// The fetch of window `index`, started now if it is not under way.
    /// A prefetch (`needed` is `None`) is skipped when the memory budget is
    /// spent; a read (of the windows `needed`) waits for it, after dropping
    /// every window it does not need (so a reader never waits for memory
    /// it holds itself).
    fn window(&self, index: u64, needed: Option<std::ops::RangeInclusive<u64>>) -> Option<Fetch> {
        let mut windows = self.windows.lock().expect("bucket reader lock");
        if let Some((_, f)) = windows.iter().find(|(i, _)| *i == index) {
            return Some(f.clone());
        }
        let len = self.window_len(index);
        let mut permit = self.budget.clone().try_acquire_many_owned(len as u32).ok();
        if permit.is_none() {
            let needed = needed?;
            windows.retain(|(i, _)| needed.contains(i));
            permit = self.budget.clone().try_acquire_many_owned(len as u32).ok();
        }
        let (s3, key, budget) = (self.s3.clone(), self.key.clone(), self.budget.clone());
        let start = index * WINDOW as u64;
        // Spawned: the GET runs whether or not anyone polls yet.
        let task = tokio::spawn(async move {
            let permit = match permit {
                Some(p) => p,
                None => budget
                    .acquire_many_owned(len as u32)
                    .await
                    .map_err(|_| Arc::<str>::from("the store is closing"))?,
            };
            match s3.read(&key, start, len).await {
                Ok(Some(bytes)) => Ok(Bytes::from_owner(Held {
                    bytes,
                    _budget: permit,
                })),
                Ok(None) => Err(Arc::from(format!("{key} is gone from the bucket"))),
                Err(e) => Err(Arc::from(crate::error::chain(&e))),
            }
        });
        let fetch: BoxFuture<'static, Result<Bytes, Arc<str>>> =
            Box::pin(async move { task.await.map_err(|e| Arc::<str>::from(e.to_string()))? });
        let fetch = fetch.shared();
        windows.push_back((index, fetch.clone()));
        while windows.len() > KEPT {
            windows.pop_front();
        }
        Some(fetch)
    }
}

impl ObjectReader for BucketReader {
    fn read_at(&self, offset: u64, max: usize) -> BoxFuture<'static, io::Result<Bytes>> {
        let max = (self.size.saturating_sub(offset)).min(max as u64) as usize;
        if max == 0 {
            return Box::pin(async { Ok(Bytes::new()) });
        }
        let w = WINDOW as u64;
        let (first, last) = (offset / w, (offset + max as u64 - 1) / w);
        // Only this read's windows and those ahead are kept: any other is
        // dropped first, so a reader never waits for memory it holds.
        self.windows
            .lock()
            .expect("bucket reader lock")
            .retain(|(i, _)| (first..=last + AHEAD).contains(i));
        let fetches: Vec<(u64, Fetch)> = (first..=last)
            .filter_map(|i| self.window(i, Some(first..=last)).map(|f| (i, f)))
            .collect();
        for ahead in last + 1..=last + AHEAD {
            if ahead * w < self.size {
                self.window(ahead, None);
            }
        }
        Box::pin(async move {
            let mut out = BytesMut::new();
            let mut single = None;
            for (i, fetch) in fetches {
                let bytes = fetch.await.map_err(|e| io::Error::other(e.to_string()))?;
                let from = offset.saturating_sub(i * w) as usize;
                let to = (offset + max as u64 - i * w).min(bytes.len() as u64) as usize;
                let part = bytes.slice(from.min(to)..to);
                if first == last {
                    single = Some(part);
                } else {
                    out.extend_from_slice(&part);
                }
            }
            Ok(single.unwrap_or_else(|| out.freeze()))
        })
    }
}

/// Stat `digest` in the bucket and open it for ranged reads (`None` if
/// absent); its windows come out of `budget`.
pub async fn open(
    s3: &S3,
    prefix: &str,
    digest: &Digest,
    budget: &Arc<Semaphore>,
) -> Result<Option<StoredObject>, S3Error> {
    let key = key(prefix, digest);
    Ok(s3.head(&key).await?.map(|size| StoredObject {
        size,
        reader: Arc::new(BucketReader {
            s3: s3.clone(),
            key,
            size,
            budget: budget.clone(),
            windows: Mutex::new(VecDeque::new()),
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

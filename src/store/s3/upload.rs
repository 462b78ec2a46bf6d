//! One object's upload, fed in order with parts of [`PART_SIZE`] bytes as
//! they become available, then completed with the rest. An object no
//! larger than one part goes up in a single `PUT` at completion (manifests,
//! small layers); a larger one as a multipart upload, begun with its first
//! part, with at most [`IN_FLIGHT`] parts uploading at once (so one upload
//! holds at most `IN_FLIGHT × PART_SIZE` bytes). The client retries each
//! request on transient failures. Nothing is visible under the key until
//! [`Upload::complete`]; [`Upload::abort`], or dropping the upload, removes
//! the parts. This module must not decide whether the bytes are right: the
//! verified writer completes only what verified.

use bytes::Bytes;
use tokio::task::JoinSet;

use super::client::{S3, S3Error};

/// Bytes per part (S3's minimum is 5 MiB, except for the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once, at most.
pub const IN_FLIGHT: usize = 2;
/// S3's limit on parts per upload (80 000 MiB objects at [`PART_SIZE`]).
const MAX_PARTS: u16 = 10_000;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("S3 upload of {key} failed")]
    S3 {
        key: String,
        #[source]
        source: S3Error,
    },
    #[error("{key} is larger than an upload of {MAX_PARTS} parts of {PART_SIZE} bytes")]
    TooLarge { key: String },
    #[error("a part upload task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// An upload in progress.
pub struct Upload {
    s3: S3,
    key: String,
    /// The multipart upload's id, once its first part is sent.
    id: Option<String>,
    next: u16,
    running: JoinSet<Result<(u16, String), S3Error>>,
    etags: Vec<(u16, String)>,
    /// Completed or aborted: nothing to clean up on drop.
    settled: bool,
}

impl Upload {
    /// Prepare to upload `key`; nothing is sent yet.
    pub fn new(s3: &S3, key: &str) -> Upload {
        Upload {
            s3: s3.clone(),
            key: key.to_owned(),
            id: None,
            next: 1,
            running: JoinSet::new(),
            etags: Vec::new(),
            settled: false,
        }
    }

    /// The multipart upload id, once there is one (for tests and logs).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn failed(&self, source: S3Error) -> UploadError {
        UploadError::S3 {
            key: self.key.clone(),
            source,
        }
    }

    /// Wait for one running part; its ETag is kept.
    async fn reap(&mut self) -> Result<(), UploadError> {
        if let Some(done) = self.running.join_next().await {
            let (n, etag) = done
                .map_err(UploadError::Task)?
                .map_err(|e| self.failed(e))?;
            self.etags.push((n, etag));
        }
        Ok(())
    }

    /// Start uploading `body` as the next part (every part but the last is
    /// [`PART_SIZE`] bytes), waiting first while [`IN_FLIGHT`] parts run.
    pub async fn part(&mut self, body: Bytes) -> Result<(), UploadError> {
        if self.next > MAX_PARTS {
            return Err(UploadError::TooLarge {
                key: self.key.clone(),
            });
        }
        let id = match &self.id {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .s3
                    .create_multipart(&self.key)
                    .await
                    .map_err(|e| self.failed(e))?;
                self.id = Some(id.clone());
                id
            }
        };
        while self.running.len() >= IN_FLIGHT {
            self.reap().await?;
        }
        let (s3, key, n) = (self.s3.clone(), self.key.clone(), self.next);
        self.running.spawn(async move {
            let etag = s3.upload_part(&key, &id, n, body).await?;
            Ok((n, etag))
        });
        self.next += 1;
        Ok(())
    }

    /// Upload `rest` (the object's last bytes, possibly none) and make the
    /// object visible under its key.
    pub async fn complete(mut self, rest: Bytes) -> Result<(), UploadError> {
        if self.id.is_none() {
            // One part's worth at most: a single PUT.
            let put = self.s3.put(&self.key, rest).await;
            self.settled = true;
            return put.map_err(|e| self.failed(e));
        }
        if !rest.is_empty() {
            self.part(rest).await?;
        }
        while !self.running.is_empty() {
            self.reap().await?;
        }
        self.etags.sort_by_key(|(n, _)| *n);
        let etags: Vec<String> = self.etags.iter().map(|(_, e)| e.clone()).collect();
        let id = self.id.clone().unwrap_or_default();
        self.s3
            .complete_multipart(&self.key, &id, &etags)
            .await
            .map_err(|e| self.failed(e))?;
        self.settled = true;
        Ok(())
    }

    /// Abandon the upload: its parts are removed, nothing appears.
    pub async fn abort(mut self) -> Result<(), UploadError> {
        self.running.abort_all();
        while self.running.join_next().await.is_some() {}
        self.settled = true;
        match self.id.clone() {
            Some(id) => self
                .s3
                .abort_multipart(&self.key, &id)
                .await
                .map_err(|e| self.failed(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Upload {
    /// An upload dropped unsettled (a failed or cancelled fill) is aborted
    /// in the background, so its parts do not linger in the bucket.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.running.abort_all();
        let Some(id) = self.id.take() else { return };
        let (s3, key) = (self.s3.clone(), self.key.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = s3.abort_multipart(&key, &id).await {
                    tracing::warn!(key, error = %crate::error::chain(&e), "cannot abort an abandoned S3 upload; the bucket's lifecycle rule must remove its parts");
                }
            });
        }
    }
}

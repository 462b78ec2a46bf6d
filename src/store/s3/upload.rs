//! One object's multipart upload, fed in order while its bytes stream in:
//! parts of [`PART_SIZE`] go up as they fill, at most [`IN_FLIGHT`] at once
//! (so one upload holds at most `(IN_FLIGHT + 1) × PART_SIZE` bytes), each
//! retried on transient
//! failures. Nothing is visible under the key until [`Upload::complete`];
//! [`Upload::abort`], or dropping the upload, removes the parts. This
//! module must not decide whether the bytes are right: the verified writer
//! completes only what verified.

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::client::{S3, S3Error};

/// Bytes per part (S3's minimum is 5 MiB, except for the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once, at most.
pub const IN_FLIGHT: usize = 2;
/// S3's limit on parts per upload (80 000 MiB objects at [`PART_SIZE`]).
const MAX_PARTS: u16 = 10_000;
/// Attempts per part, the first included.
const ATTEMPTS: u32 = 3;

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

/// A multipart upload in progress.
pub struct Upload {
    s3: S3,
    key: String,
    id: String,
    buf: BytesMut,
    next: u16,
    running: JoinSet<Result<(u16, String), S3Error>>,
    etags: Vec<(u16, String)>,
    size: u64,
    /// Completed or aborted: nothing to clean up on drop.
    settled: bool,
}

async fn upload_part(
    s3: S3,
    key: String,
    id: String,
    number: u16,
    body: Bytes,
) -> Result<(u16, String), S3Error> {
    let mut attempt = 1;
    loop {
        match s3.upload_part(&key, &id, number, body.clone()).await {
            Ok(etag) => return Ok((number, etag)),
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Upload {
    /// Begin uploading `key`.
    pub async fn begin(s3: &S3, key: &str) -> Result<Upload, UploadError> {
        let id = s3
            .create_multipart(key)
            .await
            .map_err(|source| UploadError::S3 {
                key: key.to_owned(),
                source,
            })?;
        Ok(Upload {
            s3: s3.clone(),
            key: key.to_owned(),
            id,
            buf: BytesMut::new(),
            next: 1,
            running: JoinSet::new(),
            etags: Vec::new(),
            size: 0,
            settled: false,
        })
    }

    /// The upload id (for tests and logs).
    pub fn id(&self) -> &str {
        &self.id
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

    /// Start uploading `body` as the next part, waiting first while
    /// [`IN_FLIGHT`] parts are running.
    async fn send_part(&mut self, body: Bytes) -> Result<(), UploadError> {
        if self.next > MAX_PARTS {
            return Err(UploadError::TooLarge {
                key: self.key.clone(),
            });
        }
        while self.running.len() >= IN_FLIGHT {
            self.reap().await?;
        }
        let (s3, key, id, n) = (
            self.s3.clone(),
            self.key.clone(),
            self.id.clone(),
            self.next,
        );
        self.running.spawn(upload_part(s3, key, id, n, body));
        self.next += 1;
        Ok(())
    }

    /// Append the next bytes of the object.
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size = self.size.saturating_add(chunk.len() as u64);
        self.buf.extend_from_slice(chunk);
        while self.buf.len() >= PART_SIZE {
            let part = self.buf.split_to(PART_SIZE).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Upload what is left and make the object visible under its key: its size.
    pub async fn complete(mut self) -> Result<u64, UploadError> {
        if self.size == 0 {
            // S3 has no multipart object of no parts: an empty object is a PUT.
            self.settled = true;
            let _ = self.s3.abort_multipart(&self.key, &self.id).await;
            self.s3
                .put(&self.key, Bytes::new())
                .await
                .map_err(|e| self.failed(e))?;
            return Ok(0);
        }
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.send_part(rest).await?;
        }
        while !self.running.is_empty() {
            self.reap().await?;
        }
        self.etags.sort_by_key(|(n, _)| *n);
        let etags: Vec<String> = self.etags.iter().map(|(_, e)| e.clone()).collect();
        self.s3
            .complete_multipart(&self.key, &self.id, &etags)
            .await
            .map_err(|e| self.failed(e))?;
        self.settled = true;
        Ok(self.size)
    }

    /// Abandon the upload: its parts are removed, nothing appears.
    pub async fn abort(mut self) -> Result<(), UploadError> {
        self.running.abort_all();
        while self.running.join_next().await.is_some() {}
        self.settled = true;
        self.s3
            .abort_multipart(&self.key, &self.id)
            .await
            .map_err(|e| self.failed(e))
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
        let (s3, key, id) = (self.s3.clone(), self.key.clone(), self.id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = s3.abort_multipart(&key, &id).await {
                    tracing::warn!(key, error = %crate::error::chain(&e), "cannot abort an abandoned S3 upload; the bucket's lifecycle rule must remove its parts");
                }
            });
        }
    }
}

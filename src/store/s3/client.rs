//! The S3 API as the object store needs it: stat, ranged reads, whole and
//! multipart writes, delete and list, against any S3-compatible service
//! (Garage, MinIO, Ceph RGW, AWS).
//!
//! Requests are signed by `rusty-s3` (SigV4 in the query string, valid for a
//! minute) and sent over a pooled hyper client with rustls, trusting the web
//! PKI roots and any configured CA. Every response is checked: statuses,
//! lengths (a ranged read returns exactly the bytes asked for, or fewer only
//! at the end of the object), and bodies read whole are bounded. Credentials
//! are used here only and never logged. This module must not know what the
//! objects are.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, ETAG, RANGE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::metrics::Metrics;

/// How long a signed request stays valid: its attempts, each bounded by
/// the timeout, must fit.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// Attempts per request, the first included, when the service fails (5xx),
/// throttles (429 or 503 SlowDown) or the connection does.
const ATTEMPTS: u32 = 3;
/// The pause before the second attempt; it doubles for each one after.
const BACKOFF: Duration = Duration::from_millis(100);
/// Longest XML or error body read.
const MAX_DOCUMENT: usize = 8 * 1024 * 1024;
/// Longest ranged read.
pub const MAX_READ: usize = 16 * 1024 * 1024;
/// Answers that mean "gone now" for deletes and aborts.
const GONE: &[StatusCode] = &[
    StatusCode::NO_CONTENT,
    StatusCode::OK,
    StatusCode::NOT_FOUND,
];
/// Longest error document read after a ranged read.
const ERROR_DOCUMENT: usize = 64 * 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 {op}: the endpoint is unreachable or the connection failed")]
    Connect {
        op: &'static str,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("S3 {op}: {status} {code}")]
    Status {
        op: &'static str,
        status: u16,
        /// The `<Code>` of the error document, if any.
        code: String,
    },
    #[error("S3 {op}: the response body failed")]
    Body {
        op: &'static str,
        #[source]
        source: hyper::Error,
    },
    #[error("S3 {op}: invalid response: {what}")]
    Invalid { op: &'static str, what: String },
    #[error("S3 {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("invalid S3 endpoint or bucket")]
    Bucket(#[source] rusty_s3::BucketError),
    #[error("invalid S3 TLS settings")]
    Tls(#[source] rustls::Error),
}

impl S3Error {
    /// Worth another attempt: the service failed or throttled, or the
    /// connection did.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Connect { .. } | S3Error::Body { .. } | S3Error::Timeout { .. } => true,
            S3Error::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Where the bucket is and how to sign for it.
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: url::Url,
    pub bucket: String,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Bound on each request (headers and, for reads, the body).
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// One bucket.
#[derive(Clone)]
pub struct S3 {
    bucket: Arc<Bucket>,
    credentials: Arc<Credentials>,
    http: HttpClient,
    timeout: Duration,
    metrics: Metrics,
}

/// An object listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// When it was last written, as the service says.
    pub modified: SystemTime,
}

fn client(settings: &S3Settings) -> Result<HttpClient, S3Error> {
    let https = crate::https::connector(&settings.ca_certs, settings.timeout, false)
        .map_err(S3Error::Tls)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

impl S3 {
    pub fn new(settings: &S3Settings, metrics: Metrics) -> Result<S3, S3Error> {
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            settings.endpoint.clone(),
            style,
            settings.bucket.clone(),
            settings.region.clone(),
        )
        .map_err(S3Error::Bucket)?;
        Ok(S3 {
            bucket: Arc::new(bucket),
            credentials: Arc::new(Credentials::new(
                settings.access_key_id.clone(),
                settings.secret_access_key.clone(),
            )),
            http: client(settings)?,
            timeout: settings.timeout,
            metrics,
        })
    }

    /// Send a signed request, again after a pause while the service or the
    /// connection fails (every request here may be repeated: the same key
    /// gets the same bytes); the response's status, headers and body (the
    /// body read whole up to `limit` bytes).
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: url::Url,
        headers: &[(http::HeaderName, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), S3Error> {
        let (mut pause, mut attempt) = (BACKOFF, 1);
        loop {
            let answer = self
                .send_once(
                    op,
                    method.clone(),
                    url.clone(),
                    headers,
                    body.clone(),
                    limit,
                )
                .await;
            // A failed or throttled attempt is worth another; a 4xx is not.
            let failed = match &answer {
                Ok((status, _, _)) => {
                    status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => e.is_transient(),
            };
            let received = answer.as_ref().map_or(0, |(_, _, b)| b.len() as u64);
            self.metrics.s3_request(
                op,
                (body.len() as u64).saturating_add(received),
                failed || answer.is_err(),
            );
            if !failed || attempt >= ATTEMPTS {
                return answer;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// One attempt of [`S3::send`].
    async fn send_once(
        &self,
        op: &'static str,
        method: Method,
        url: url::Url,
        headers: &[(http::HeaderName, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), S3Error> {
        let invalid = |what: String| S3Error::Invalid { op, what };
        let mut req = Request::builder().method(method).uri(url.as_str());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if !body.is_empty() {
            req = req.header(CONTENT_LENGTH, body.len());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| invalid(e.to_string()))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|source| S3Error::Connect { op, source })?;
            let (parts, mut incoming) = resp.into_parts();
            let mut buf = BytesMut::new();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|source| S3Error::Body { op, source })?;
                if let Some(data) = frame.data_ref() {
                    if buf.len().saturating_add(data.len()) > limit {
                        return Err(invalid(format!("a body over {limit} bytes")));
                    }
                    buf.extend_from_slice(data);
                }
            }
            Ok((parts.status, parts.headers, buf.freeze()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| S3Error::Timeout {
                op,
                after: self.timeout,
            })?
    }

    fn status(op: &'static str, status: StatusCode, body: &[u8]) -> S3Error {
        // <Error><Code>NoSuchKey</Code>...: only the code, never the rest.
        let text = String::from_utf8_lossy(body);
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| code)
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("")
            .to_owned();
        S3Error::Status {
            op,
            status: status.as_u16(),
            code,
        }
    }

    /// [`S3::send`] for a request whose answer must be one of `ok`: the
    /// headers and the body (at most [`MAX_DOCUMENT`] bytes).
    async fn expect(
        &self,
        op: &'static str,
        method: Method,
        url: url::Url,
        body: Bytes,
        ok: &[StatusCode],
    ) -> Result<(http::HeaderMap, Bytes), S3Error> {
        let (status, headers, resp) = self.send(op, method, url, &[], body, MAX_DOCUMENT).await?;
        if ok.contains(&status) {
            Ok((headers, resp))
        } else {
            Err(Self::status(op, status, &resp))
        }
    }

    /// The size of `key`, or `None` if there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<u64>, S3Error> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let (status, headers, _) = self
            .send("HEAD", Method::HEAD, url, &[], Bytes::new(), ERROR_DOCUMENT)
            .await?;
        match status {
            StatusCode::OK => headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| S3Error::Invalid {
                    op: "HEAD",
                    what: "no Content-Length".into(),
                }),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::status("HEAD", s, &[])),
        }
    }

    /// `len` bytes of `key` from `offset` (fewer only at the end of the
    /// object; empty at or past it), or `None` if there is no such object.
    pub async fn read(&self, key: &str, offset: u64, len: usize) -> Result<Option<Bytes>, S3Error> {
        let len = len.min(MAX_READ);
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let last = offset.saturating_add(len as u64 - 1);
        let range = [(RANGE, format!("bytes={offset}-{last}"))];
        // Room for an error document; a successful body is checked below.
        let (status, _, body) = self
            .send(
                "GET",
                Method::GET,
                url,
                &range,
                Bytes::new(),
                len.max(ERROR_DOCUMENT),
            )
            .await?;
        match status {
            StatusCode::PARTIAL_CONTENT | StatusCode::OK if body.len() > len => {
                Err(S3Error::Invalid {
                    op: "GET",
                    what: format!("{} bytes for a range of {len}", body.len()),
                })
            }
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => {
                // A 200 is the whole object: only right from offset 0.
                if status == StatusCode::OK && offset != 0 {
                    return Err(S3Error::Invalid {
                        op: "GET",
                        what: "a whole object for a ranged read".into(),
                    });
                }
                Ok(Some(body))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Ok(Some(Bytes::new())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Self::status("GET", s, &body)),
        }
    }

    /// Write `body` as `key` in one request.
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), S3Error> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.expect("PUT", Method::PUT, url, body, &[StatusCode::OK])
            .await
            .map(drop)
    }

    /// Begin a multipart upload of `key`: its upload id.
    pub async fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        const OP: &str = "CreateMultipartUpload";
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let (_, body) = self
            .expect(OP, Method::POST, url, Bytes::new(), &[StatusCode::OK])
            .await?;
        let invalid = |what: String| S3Error::Invalid { op: OP, what };
        let text = std::str::from_utf8(&body).map_err(|e| invalid(e.to_string()))?;
        let parsed =
            CreateMultipartUpload::parse_response(text).map_err(|e| invalid(e.to_string()))?;
        Ok(parsed.upload_id().to_owned())
    }

    /// Upload part `number` (from 1) of an upload: its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: Bytes,
    ) -> Result<String, S3Error> {
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload_id)
            .sign(SIGNED_FOR);
        let (headers, _) = self
            .expect("UploadPart", Method::PUT, url, body, &[StatusCode::OK])
            .await?;
        headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| S3Error::Invalid {
                op: "UploadPart",
                what: "no ETag".into(),
            })
    }

    /// Complete an upload from its parts' ETags, in order: only now does
    /// `key` exist.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), S3Error> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = Bytes::from(action.body());
        let (status, _, resp) = self
            .send(
                "CompleteMultipartUpload",
                Method::POST,
                url,
                &[],
                body,
                MAX_DOCUMENT,
            )
            .await?;
        // S3 may answer 200 with an error document when completing fails late.
        if status != StatusCode::OK || resp.windows(7).any(|w| w == b"<Error>") {
            return Err(Self::status("CompleteMultipartUpload", status, &resp));
        }
        Ok(())
    }

    /// Abandon an upload and its parts.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id)
            .sign(SIGNED_FOR);
        self.expect(
            "AbortMultipartUpload",
            Method::DELETE,
            url,
            Bytes::new(),
            GONE,
        )
        .await
        .map(drop)
    }

    /// Delete `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.expect("DELETE", Method::DELETE, url, Bytes::new(), GONE)
            .await
            .map(drop)
    }

    /// One page of the objects under `prefix`, and the token of the next.
    pub async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), S3Error> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
        action.with_prefix(prefix);
        if let Some(c) = continuation {
            action.with_continuation_token(c);
        }
        let url = action.sign(SIGNED_FOR);
        let (_, body) = self
            .expect(
                "ListObjectsV2",
                Method::GET,
                url,
                Bytes::new(),
                &[StatusCode::OK],
            )
            .await?;
        let invalid = |what: String| S3Error::Invalid {
            op: "ListObjectsV2",
            what,
        };
        let text = std::str::from_utf8(&body).map_err(|e| invalid(e.to_string()))?;
        let parsed = ListObjectsV2::parse_response(text).map_err(|e| invalid(e.to_string()))?;
        let objects = parsed
            .contents
            .into_iter()
            .map(|c| {
                let size = c
                    .size
                    .ok_or_else(|| invalid(format!("{}: no size", c.key)))?;
                let modified = c
                    .last_modified
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(SystemTime::from)
                    .ok_or_else(|| invalid(format!("{}: no valid LastModified", c.key)))?;
                Ok(Listed {
                    key: c.key,
                    size,
                    modified,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((objects, parsed.next_continuation_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_give_only_a_plain_code() {
        let e = |body: &str| match S3::status("GET", StatusCode::FORBIDDEN, body.as_bytes()) {
            S3Error::Status { code, status, .. } => (status, code),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e("<?xml?><Error><Code>AccessDenied</Code><Message>no</Message></Error>"),
            (403, "AccessDenied".to_owned())
        );
        // Anything but a short alphanumeric code is dropped, never echoed.
        assert_eq!(
            e("<Error><Code>a b<script></Code></Error>"),
            (403, String::new())
        );
        assert_eq!(
            e(&format!("<Code>{}</Code>", "A".repeat(65))),
            (403, String::new())
        );
        assert_eq!(e("not xml"), (403, String::new()));
    }

    #[test]
    fn only_service_and_connection_failures_are_retried() {
        let status = |status| S3Error::Status {
            op: "GET",
            status,
            code: String::new(),
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(403).is_transient());
        assert!(!status(404).is_transient());
        let invalid = S3Error::Invalid {
            op: "GET",
            what: String::new(),
        };
        assert!(!invalid.is_transient());
    }
}

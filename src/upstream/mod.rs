//! The registries portcullis pulls from: typed calls of the distribution API.
//!
//! Owns the upstream side of each operation (which URL, which `Accept`, which
//! status means what, size limits) on top of the transport in [`client`] and
//! the authentication in [`auth`]. Everything returned here is *unverified*:
//! digests, sizes and media types are claims until the cache checks them.
//! This module must not touch the cache or decide what a client sees.

pub mod auth;
pub mod breaker;
pub mod client;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK};
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;

use crate::clock::Clock;
use crate::config::UpstreamConfig;
use crate::digest::Digest;
use crate::media::MANIFEST_ACCEPT;
use crate::metrics::Metrics;
use crate::reference::{Reference, RepoName, Tag};
use crate::router::UpstreamId;
use auth::Auth;
pub use client::PacedBody;
use client::{Pace, Transport, build_client, encode_query_value, read_limited};

/// Manifests larger than this are refused.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;
/// Tag lists and referrer indexes larger than this are refused.
const MAX_LIST_SIZE: usize = 4 * 1024 * 1024;

/// What went wrong talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach upstream {upstream}")]
    Connect {
        upstream: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error(
        "cannot reach upstream {upstream}: it was unreachable moments ago; trying again in {retry_in:?}"
    )]
    Down {
        upstream: String,
        retry_in: Duration,
    },
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
    #[error("upstream {upstream} sent less than {min_rate} bytes per second over {window:?}")]
    TooSlow {
        upstream: String,
        min_rate: u64,
        window: Duration,
    },
    #[error("reading the response from upstream {upstream} failed")]
    Body {
        upstream: String,
        #[source]
        source: hyper::Error,
    },
    #[error("upstream {upstream} answered {status}")]
    Status {
        upstream: String,
        status: StatusCode,
    },
    #[error("not found on upstream {upstream}")]
    NotFound { upstream: String },
    #[error("upstream {upstream} is rate limiting requests")]
    TooManyRequests {
        upstream: String,
        retry_after: Option<Duration>,
    },
    #[error(
        "upstream {upstream} denied access (the repository may not exist, or the mirror's credentials lack access)"
    )]
    Unauthorized { upstream: String },
    #[error("upstream {upstream} named an unusable token realm: {reason}")]
    BadRealm {
        upstream: String,
        reason: &'static str,
    },
    #[error("upstream {upstream} redirect refused: {reason}")]
    Redirect {
        upstream: String,
        reason: &'static str,
    },
    #[error("upstream {upstream} sent more than {limit} bytes")]
    TooLarge { upstream: String, limit: usize },
    #[error("upstream {upstream} sent an invalid response: {what}")]
    Invalid {
        upstream: String,
        what: &'static str,
    },
    #[error("TLS setup for upstream {upstream} failed")]
    Tls {
        upstream: String,
        #[source]
        source: rustls::Error,
    },
}

impl UpstreamError {
    /// The upstream is down, overloaded or rate limiting: a cached copy may
    /// be served instead (stale-if-error).
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Down { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::TooSlow { .. }
            | UpstreamError::Body { .. }
            | UpstreamError::TooManyRequests { .. } => true,
            UpstreamError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// A manifest as the upstream sent it (unverified).
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header, if any.
    pub digest: Option<Digest>,
}

/// A blob download in progress (unverified).
pub struct BlobDownload {
    /// `Content-Length`, when the upstream sent one.
    pub length: Option<u64>,
    pub body: Incoming,
}

/// One page of an upstream's tag list.
pub struct TagPage {
    pub tags: Vec<Tag>,
    /// The upstream has more tags after this page.
    pub more: bool,
}

/// One configured upstream registry.
pub struct Upstream {
    transport: Transport,
}

fn scope(repo: &RepoName) -> String {
    format!("repository:{repo}:pull")
}

fn header_str<'a>(h: &'a HeaderMap, name: &http::header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Upstream {
    pub fn new(
        cfg: &UpstreamConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<Upstream, UpstreamError> {
        let name = cfg.name.to_string();
        Ok(Upstream {
            transport: Transport {
                client: build_client(cfg)?,
                auth: Auth::new(name.clone(), cfg.url.clone(), cfg.credentials.clone()),
                base: cfg.url.clone(),
                read_timeout: cfg.read_timeout,
                pace: Pace {
                    timeout: cfg.read_timeout,
                    min_rate: cfg.min_rate,
                    window: cfg.min_rate_window,
                },
                metrics,
                breaker: breaker::Breaker::new(breaker::HOLD, clock),
                name,
            },
        })
    }

    pub fn name(&self) -> &str {
        &self.transport.name
    }

    pub fn read_timeout(&self) -> Duration {
        self.transport.read_timeout
    }

    /// A blob download's body, read at this upstream's pace.
    pub fn paced(&self, body: Incoming) -> PacedBody {
        PacedBody::new(body, self.transport.pace, &self.transport.name)
    }

    /// Map a final upstream status to an error, for statuses other than 2xx.
    fn check(&self, resp: Response<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
        let upstream = self.transport.name.clone();
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(UpstreamError::NotFound { upstream }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(UpstreamError::Unauthorized { upstream })
            }
            status => Err(UpstreamError::Status { upstream, status }),
        }
    }

    /// Send a request about `repo` and require a 2xx answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        repo: &RepoName,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let resp = self
            .transport
            .send(method, path, accept, &scope(repo))
            .await?;
        self.check(resp)
    }

    /// Read a whole response body of at most `limit` bytes.
    async fn read_body(
        &self,
        resp: Response<Incoming>,
        limit: usize,
    ) -> Result<Bytes, UpstreamError> {
        read_limited(
            resp.into_body(),
            limit,
            self.transport.pace,
            &self.transport.name,
        )
        .await
    }

    fn digest_header(&self, headers: &HeaderMap) -> Result<Option<Digest>, UpstreamError> {
        match header_str(
            headers,
            &http::header::HeaderName::from_static("docker-content-digest"),
        ) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| UpstreamError::Invalid {
                upstream: self.transport.name.clone(),
                what: "Docker-Content-Digest header",
            }),
        }
    }

    fn content_length(headers: &HeaderMap) -> Option<u64> {
        header_str(headers, &CONTENT_LENGTH).and_then(|v| v.parse().ok())
    }

    /// `GET /v2/<repo>/manifests/<reference>`, body limited to 4 MiB.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<FetchedManifest, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .request(Method::GET, &path, Some(MANIFEST_ACCEPT), repo)
            .await?;
        let too_large = || UpstreamError::TooLarge {
            upstream: self.transport.name.clone(),
            limit: MAX_MANIFEST_SIZE,
        };
        if Self::content_length(resp.headers()).is_some_and(|n| n > MAX_MANIFEST_SIZE as u64) {
            return Err(too_large());
        }
        let digest = self.digest_header(resp.headers())?;
        let content_type = header_str(resp.headers(), &CONTENT_TYPE).map(str::to_owned);
        let bytes = self.read_body(resp, MAX_MANIFEST_SIZE).await?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// `GET <path>` of a small JSON document on a server that is not a
    /// registry (a Notary server), answering auth challenges for `scope`;
    /// `None` when it answers 404. The body is limited to `limit` bytes.
    pub async fn get_document(
        &self,
        path: &str,
        scope: &str,
        limit: usize,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let resp = self
            .transport
            .send(Method::GET, path, Some("application/json"), scope)
            .await?;
        match self.check(resp) {
            Ok(resp) => {
                if Self::content_length(resp.headers()).is_some_and(|n| n > limit as u64) {
                    return Err(UpstreamError::TooLarge {
                        upstream: self.transport.name.clone(),
                        limit,
                    });
                }
                self.read_body(resp, limit).await.map(Some)
            }
            Err(UpstreamError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest a tag points to
    /// now (or that the repository has a digest). `None` when the upstream
    /// does not send `Docker-Content-Digest`.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Digest>, UpstreamError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .request(Method::HEAD, &path, Some(MANIFEST_ACCEPT), repo)
            .await?;
        self.digest_header(resp.headers())
    }

    /// `GET /v2/<repo>/blobs/<digest>`: the response body, to be verified while streamed.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<BlobDownload, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.request(Method::GET, &path, None, repo).await?;
        if resp.status() != StatusCode::OK {
            return Err(UpstreamError::Invalid {
                upstream: self.transport.name.clone(),
                what: "blob response status other than 200",
            });
        }
        Ok(BlobDownload {
            length: Self::content_length(resp.headers()),
            body: resp.into_body(),
        })
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: the size the upstream claims.
    pub async fn head_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, UpstreamError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.request(Method::HEAD, &path, None, repo).await?;
        Ok(Self::content_length(resp.headers()))
    }

    /// `GET /v2/<repo>/tags/list?n=&last=`. Tags that break the grammar are dropped.
    pub async fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&Tag>,
    ) -> Result<TagPage, UpstreamError> {
        let mut path = format!("/v2/{repo}/tags/list");
        let mut sep = '?';
        if let Some(n) = n {
            path.push_str(&format!("{sep}n={n}"));
            sep = '&';
        }
        if let Some(last) = last {
            path.push_str(&format!("{sep}last={}", encode_query_value(last.as_str())));
        }
        let resp = self.request(Method::GET, &path, None, repo).await?;
        let more = resp.headers().contains_key(LINK);
        let body = self.read_body(resp, MAX_LIST_SIZE).await?;
        #[derive(serde::Deserialize)]
        struct List {
            tags: Option<Vec<String>>,
        }
        let list: List = serde_json::from_slice(&body).map_err(|_| UpstreamError::Invalid {
            upstream: self.transport.name.clone(),
            what: "tag list is not the expected JSON",
        })?;
        let tags = list
            .tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        Ok(TagPage { tags, more })
    }

    /// `GET /v2/<repo>/referrers/<digest>`: `None` when the upstream has no
    /// referrers API (it answers 404, as the spec prescribes).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let path = format!("/v2/{repo}/referrers/{digest}");
        let resp = match self
            .request(Method::GET, &path, Some(crate::media::OCI_INDEX), repo)
            .await
        {
            Err(UpstreamError::NotFound { .. }) => return Ok(None),
            other => other?,
        };
        let ct = header_str(resp.headers(), &CONTENT_TYPE).unwrap_or("");
        if !ct.starts_with(crate::media::OCI_INDEX) {
            return Ok(None);
        }
        let body = self.read_body(resp, MAX_LIST_SIZE).await?;
        Ok(Some(body))
    }
}

/// All configured upstreams, indexed like the configuration.
#[derive(Clone)]
pub struct Upstreams(Arc<Vec<Upstream>>);

impl Upstreams {
    pub fn new(
        cfgs: &[UpstreamConfig],
        metrics: &Metrics,
        clock: &Clock,
    ) -> Result<Upstreams, UpstreamError> {
        let list = cfgs
            .iter()
            .map(|c| Upstream::new(c, metrics.clone(), clock.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstreams(Arc::new(list)))
    }

    pub fn get(&self, id: UpstreamId) -> &Upstream {
        &self.0[id.0]
    }
}

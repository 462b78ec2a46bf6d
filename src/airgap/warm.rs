//! `portcullis warm`: pull images into a running instance's cache ahead of
//! need, so a node pool's first pull of a release is already warm.
//!
//! Talks to the instance over its own pull API, as a client would, with the
//! same HTTP client portcullis uses for upstreams: every manifest (all
//! platforms of an index) and every blob, each read to its end. Asking for
//! a manifest runs the gate, which fetches the signatures, attestations and
//! referrers it checks into the cache as well; an image the policy refuses
//! is reported, not warmed. This module must not touch a cache directly.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use crate::clock::Clock;
use crate::config::{Config, Credentials, UpstreamConfig};
use crate::digest::{Algorithm, Digest};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::reference::{Reference, RepoName};
use crate::router::{RouteError, Router, UpstreamId};
use crate::upstream::{Upstream, UpstreamError, Upstreams};

/// What was warmed.
#[derive(Debug, Default)]
pub struct Report {
    /// (image, digest)
    pub warmed: Vec<(String, String)>,
    /// (image, why the instance refused it)
    pub refused: Vec<(String, String)>,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// Why warming could not run.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{image}: invalid image reference")]
    Image {
        image: String,
        #[source]
        source: RouteError,
    },
    #[error("the instance URL {0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("cannot set up the HTTP client")]
    Client(#[source] UpstreamError),
    #[error("{image}: {what} failed")]
    Fetch {
        image: String,
        what: String,
        #[source]
        source: Box<UpstreamError>,
    },
    #[error("{image}: the manifest {digest} is not valid")]
    Manifest {
        image: String,
        digest: String,
        #[source]
        source: crate::manifest::ManifestError,
    },
}

/// The instance's pull API URL: `url`, or the configured listener (an
/// unspecified address is reached on the loopback).
fn instance_url(config: &Config, url: Option<&str>) -> Result<http::Uri, WarmError> {
    let text = match url {
        Some(u) => u.to_owned(),
        None => {
            let addr = super::local_address(config.listen);
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{addr}")
        }
    };
    let uri: http::Uri = text.parse().map_err(|_| WarmError::Url(text.clone()))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(WarmError::Url(text)),
    }
}

/// Warm `images` into the instance at `url` (default: the configured
/// listener), signing in with `credentials` when it has `[auth]` (through
/// its token flow, as any client).
pub async fn warm(
    config: &Config,
    url: Option<&str>,
    credentials: Option<Credentials>,
    images: &[String],
) -> Result<Report, WarmError> {
    let url = instance_url(config, url)?;
    let client = UpstreamConfig {
        name: "portcullis".parse().expect("a valid registry name"),
        aliases: Vec::new(),
        url,
        default: false,
        credentials,
        ca_certs: Vec::new(),
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(300),
        min_rate: 0,
        min_rate_window: Duration::from_secs(30),
    };
    let metrics = Metrics::new();
    let upstreams = Upstreams::new(std::slice::from_ref(&client), &metrics, &Clock::system())
        .map_err(WarmError::Client)?;
    let instance = upstreams.get(UpstreamId(0));
    let router = Arc::new(Router::new(&config.upstreams));
    let mut report = Report::default();
    let progress = super::progress::Progress::new("warming");
    for image in images {
        progress.image(image);
        let (target, reference) =
            router
                .resolve_image(image)
                .map_err(|source| WarmError::Image {
                    image: image.clone(),
                    source,
                })?;
        let reference =
            reference.unwrap_or_else(|| Reference::Tag("latest".parse().expect("a valid tag")));
        // The instance routes `<registry>/<repository>` by path prefix.
        let path: RepoName = format!("{}/{}", target.registry, target.repo)
            .parse()
            .map_err(|source| WarmError::Image {
                image: image.clone(),
                source: RouteError::BadName(source),
            })?;
        let w = Warming {
            progress: &progress,
            instance,
            repo: &path,
            image,
        };
        match w.manifest(&reference, &mut report).await {
            Ok(digest) => report.warmed.push((image.clone(), digest.to_string())),
            // 403 DENIED: the instance's policy refuses it (`portcullis
            // verify` says why).
            Err(WarmError::Fetch { source, .. })
                if matches!(*source, UpstreamError::Unauthorized { .. }) =>
            {
                report.refused.push((
                    image.clone(),
                    "refused by the instance (its policy; `portcullis verify IMAGE` says why)"
                        .into(),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    progress.finish();
    Ok(report)
}

struct Warming<'a> {
    progress: &'a super::progress::Progress,
    instance: &'a Upstream,
    repo: &'a RepoName,
    image: &'a str,
}

impl Warming<'_> {
    fn fetch_error(&self, what: String, source: UpstreamError) -> WarmError {
        WarmError::Fetch {
            image: self.image.to_owned(),
            what,
            source: Box::new(source),
        }
    }

    /// Pull a manifest and everything it needs; returns its digest.
    async fn manifest(
        &self,
        reference: &Reference,
        report: &mut Report,
    ) -> Result<Digest, WarmError> {
        let fetched = self
            .instance
            .get_manifest(self.repo, reference)
            .await
            .map_err(|e| self.fetch_error(format!("the manifest {reference}"), e))?;
        let digest = fetched
            .digest
            .unwrap_or_else(|| Digest::of(Algorithm::Sha256, &fetched.bytes));
        let m = Manifest::check(&digest, fetched.bytes, fetched.content_type.as_deref()).map_err(
            |source| WarmError::Manifest {
                image: self.image.to_owned(),
                digest: digest.to_string(),
                source,
            },
        )?;
        report.manifests += 1;
        let size = m.bytes.len() as u64;
        self.progress.expect(size);
        self.progress.done(size, report.manifests + report.blobs);
        for child in m.parsed.children() {
            Box::pin(self.manifest(&Reference::Digest(child.digest.clone()), report)).await?;
        }
        for blob in m.parsed.blobs() {
            self.progress.expect(blob.size);
            let download = self
                .instance
                .get_blob(self.repo, &blob.digest)
                .await
                .map_err(|e| self.fetch_error(format!("blob {}", blob.digest), e))?;
            let mut body = download.body;
            let mut read = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    self.fetch_error(
                        format!("blob {}", blob.digest),
                        UpstreamError::Body {
                            upstream: "portcullis".into(),
                            source: e,
                        },
                    )
                })?;
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                }
            }
            if read != blob.size {
                return Err(self.fetch_error(
                    format!("blob {}", blob.digest),
                    UpstreamError::Invalid {
                        upstream: "portcullis".into(),
                        what: "a blob of another size than its descriptor",
                    },
                ));
            }
            report.blobs += 1;
            report.bytes += read;
            self.progress.done(read, report.manifests + report.blobs);
        }
        Ok(m.digest)
    }
}

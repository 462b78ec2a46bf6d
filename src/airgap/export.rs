//! `portcullis export`: carry images across an air gap with everything the
//! gate needs to decide on them offline.
//!
//! Each image is fetched through the configured upstreams into a scratch
//! cache (so a running server's cache is never touched), decided by the
//! policy first (a refused image is not exported unless `--unverified`),
//! then written into an OCI layout ([`super::layout`]): the manifest or
//! index, every child (or the `--platform`s asked for), every blob, and the
//! evidence the policy looks at for each manifest: the legacy `.sig` and
//! `.att` tags and every referrer (bundles, SBOMs, attestations), in the
//! rule's `signature_repository` when it names one. Blobs are streamed to
//! disk and checked against their digest on the way. A PATH ending in `.tar`
//! gets the layout as one archive ([`super::tarball`]), packed from a
//! layout directory written beside it and then removed. This module must not
//! serve anything.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::layout::{self, Image, LayoutDir, Object, PutError, Referrers, TagEntry};
use crate::cache::scratch::{Scratch, ScratchError};
use crate::cache::{Cache, CacheError};
use crate::config::Config;
use crate::digest::{Algorithm, Digest};
use crate::gate::{Gate, Source, SourceError};
use crate::manifest::{Descriptor, Manifest};
use crate::policy::{Policy, PolicyError};
use crate::reference::Reference;
use crate::router::{RouteError, Router, Target};

/// Referrers exported for one subject, at most.
pub const MAX_REFERRERS: usize = 256;

/// What to export.
pub struct Options {
    pub out: PathBuf,
    /// `os/arch` or `os/arch/variant`; empty: every platform.
    pub platforms: Vec<String>,
    /// Export images the policy refuses (they are still refused when served).
    pub unverified: bool,
    pub images: Vec<String>,
}

/// What was exported.
#[derive(Debug, Default)]
pub struct Report {
    /// (image as asked for, digest)
    pub exported: Vec<(String, String)>,
    /// (image as asked for, why the policy refused it)
    pub refused: Vec<(String, String)>,
    /// Exported anyway with `--unverified`.
    pub unverified: Vec<String>,
    pub objects: usize,
    pub bytes: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid policy")]
    Policy(#[source] PolicyError),
    #[error("{image}: invalid image reference")]
    Image {
        image: String,
        #[source]
        source: RouteError,
    },
    #[error("--platform {0:?}: write os/arch or os/arch/variant")]
    Platform(String),
    #[error(transparent)]
    Scratch(ScratchError),
    #[error("{image}: cannot fetch {what}")]
    Fetch {
        image: String,
        what: String,
        #[source]
        source: Box<CacheError>,
    },
    #[error("{image}: cannot fetch its signatures or attestations")]
    Evidence {
        image: String,
        #[source]
        source: SourceError,
    },
    #[error("{image}: the rule's signature_repository cannot be used")]
    SignatureRepository {
        image: String,
        #[source]
        source: RouteError,
    },
    #[error("{image}: {what} is listed but not found")]
    Missing { image: String, what: String },
    #[error("cannot write {digest} into {path}")]
    Write {
        digest: String,
        path: PathBuf,
        #[source]
        source: PutError,
    },
    #[error("cannot write the layout in {0}")]
    Finish(PathBuf, #[source] std::io::Error),
}

/// A `--platform` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlatformFilter {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl PlatformFilter {
    fn parse(s: &str) -> Result<PlatformFilter, ExportError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformFilter {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(PlatformFilter {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*v).to_owned()),
            }),
            _ => Err(ExportError::Platform(s.to_owned())),
        }
    }

    fn matches(&self, d: &Descriptor) -> bool {
        d.platform.as_ref().is_some_and(|p| {
            p.os == self.os
                && p.architecture == self.architecture
                && self
                    .variant
                    .as_ref()
                    .is_none_or(|v| p.variant.as_ref() == Some(v))
        })
    }
}

/// One image being gathered.
struct Gathering<'a> {
    image: &'a str,
    seen: HashSet<Digest>,
    objects: Vec<Object>,
    tags: Vec<TagEntry>,
    referrers: Vec<Referrers>,
    bytes: u64,
}

struct Exporter {
    progress: super::progress::Progress,
    cache: Cache,
    gate: Option<Gate>,
    router: Arc<Router>,
    layout: LayoutDir,
    platforms: Vec<PlatformFilter>,
}

/// Export `opts.images` into `opts.out`.
pub async fn export(config: &Config, opts: &Options) -> Result<Report, ExportError> {
    let platforms = opts
        .platforms
        .iter()
        .map(|p| PlatformFilter::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = config
        .policy
        .as_deref()
        .map(|p| Policy::load(p, &config.upstreams))
        .transpose()
        .map_err(ExportError::Policy)?;
    let clock = crate::clock::Clock::system();
    let scratch = Scratch::open(config, "export", &clock)
        .await
        .map_err(ExportError::Scratch)?;
    let result = async {
        let router = Arc::new(Router::new(&config.upstreams));
        let gate = match (policy, &config.policy) {
            (Some(policy), Some(path)) => Some(
                Gate::over_cache(
                    policy,
                    path,
                    config,
                    &scratch.cache,
                    router.clone(),
                    scratch.metrics.clone(),
                    clock.clone(),
                )
                .await,
            ),
            _ => None,
        };
        // A `.tar` is written from a fresh layout directory beside it.
        let tar = opts.out.extension().is_some_and(|e| e == "tar");
        let dir = if tar {
            let dir = opts.out.with_extension("tar.layout");
            let _ = tokio::fs::remove_dir_all(&dir).await;
            dir
        } else {
            opts.out.clone()
        };
        let layout = LayoutDir::create(&dir)
            .await
            .map_err(|e| ExportError::Finish(dir.clone(), e))?;
        let exporter = Exporter {
            progress: super::progress::Progress::new("exporting"),
            cache: scratch.cache.clone(),
            gate,
            router,
            layout,
            platforms,
        };
        let report = exporter.run(opts).await;
        exporter.progress.finish();
        if !tar {
            return report;
        }
        let packed = match report {
            Ok(r) => {
                let (d, out) = (dir.clone(), opts.out.clone());
                match tokio::task::spawn_blocking(move || super::tarball::pack(&d, &out)).await {
                    Ok(Ok(())) => Ok(r),
                    Ok(Err(e)) => Err(ExportError::Finish(opts.out.clone(), e)),
                    Err(e) => Err(ExportError::Finish(
                        opts.out.clone(),
                        std::io::Error::other(e),
                    )),
                }
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        packed
    }
    .await;
    scratch.close().await;
    result
}

impl Exporter {
    async fn run(&self, opts: &Options) -> Result<Report, ExportError> {
        let mut report = Report::default();
        // Exporting into an earlier export adds to it; an image exported
        // again replaces its entries.
        let (mut index, mut extra) = self
            .layout
            .existing()
            .await
            .map_err(|e| ExportError::Finish(self.layout.root().to_owned(), e))?;
        for image in &opts.images {
            self.progress.image(image);
            let (target, reference) =
                self.router
                    .resolve_image(image)
                    .map_err(|source| ExportError::Image {
                        image: image.clone(),
                        source,
                    })?;
            let reference =
                reference.unwrap_or_else(|| Reference::Tag("latest".parse().expect("a valid tag")));
            let (manifest, _) =
                self.cache
                    .manifest(&target, &reference)
                    .await
                    .map_err(|source| ExportError::Fetch {
                        image: image.clone(),
                        what: "its manifest".into(),
                        source: Box::new(source),
                    })?;
            if let Some(gate) = &self.gate {
                let decision = gate.check(&target, &reference, &manifest, None).await;
                if !decision.outcome.serves() {
                    report.refused.push((image.clone(), decision.message()));
                    if !opts.unverified {
                        continue;
                    }
                    report.unverified.push(image.clone());
                }
            }
            let mut g = Gathering {
                image,
                seen: HashSet::new(),
                objects: Vec::new(),
                tags: Vec::new(),
                referrers: Vec::new(),
                bytes: 0,
            };
            if let Reference::Tag(t) = &reference {
                g.tags.push(TagEntry {
                    repository: target.reference(),
                    tag: t.to_string(),
                    digest: manifest.digest.to_string(),
                });
            }
            let sigs = self.signature_target(image, &target)?;
            let mut decided = Vec::new();
            self.tree(&target, &manifest, true, &mut g, &mut decided)
                .await?;
            for digest in decided {
                self.evidence(&sigs, &digest, &mut g).await?;
            }
            let name = match &reference {
                Reference::Tag(t) => format!("{}:{t}", target.reference()),
                Reference::Digest(d) => format!("{}@{d}", target.reference()),
            };
            index.retain(|e| e["annotations"][layout::REF_NAME] != name.as_str());
            extra.images.retain(|i| i.requested != *image);
            index.push(json!({
                "mediaType": manifest.media_type(),
                "digest": manifest.digest.to_string(),
                "size": manifest.bytes.len(),
                "annotations": { layout::REF_NAME: name },
            }));
            report.objects += g.objects.len();
            report.bytes += g.bytes;
            report
                .exported
                .push((image.clone(), manifest.digest.to_string()));
            extra.images.push(Image {
                requested: image.clone(),
                repository: target.reference(),
                digest: manifest.digest.to_string(),
                tags: g.tags,
                referrers: g.referrers,
                objects: g.objects,
            });
        }
        // The trust data the gate decided with (Docker Content Trust),
        // replacing what an earlier export carried for the same repository.
        for (key, state) in self.cache.trust_entries() {
            let Ok(state) = serde_json::from_slice::<serde_json::Value>(&state) else {
                continue;
            };
            extra.trust.retain(|t| t.key != key);
            extra.trust.push(layout::Trust { key, state });
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": crate::media::OCI_INDEX,
            "manifests": index,
        });
        self.layout
            .finish(&index, &extra)
            .await
            .map_err(|e| ExportError::Finish(self.layout.root().to_owned(), e))?;
        Ok(report)
    }

    /// Where the policy looks for this image's signatures and attestations.
    fn signature_target(&self, image: &str, target: &Target) -> Result<Target, ExportError> {
        let policy = self.gate.as_ref().map(Gate::policy);
        let repo = policy
            .as_ref()
            .and_then(|p| p.rule_for(&target.reference()))
            .and_then(|r| r.signature_repository.clone());
        match repo {
            None => Ok(target.clone()),
            Some(repo) => self
                .router
                .resolve_image(&repo)
                .map(|(t, _)| t)
                .map_err(|source| ExportError::SignatureRepository {
                    image: image.to_owned(),
                    source,
                }),
        }
    }

    /// Write a manifest and what it needs: its blobs, and (for the image
    /// itself, `top`) the children of an index the platform filter keeps.
    /// The digests the gate decides on (the image's manifests) go to `decided`.
    async fn tree(
        &self,
        target: &Target,
        manifest: &Manifest,
        top: bool,
        g: &mut Gathering<'_>,
        decided: &mut Vec<Digest>,
    ) -> Result<(), ExportError> {
        if !g.seen.insert(manifest.digest.clone()) {
            return Ok(());
        }
        if top {
            decided.push(manifest.digest.clone());
        }
        let size = manifest.bytes.len() as u64;
        self.progress.expect(size);
        self.put_bytes(&manifest.digest, manifest.bytes.clone(), g)
            .await?;
        g.objects.push(Object {
            digest: manifest.digest.to_string(),
            size,
            media_type: Some(manifest.media_type().to_owned()),
        });
        self.progress.done(size, g.objects.len());
        for child in manifest.parsed.children() {
            if !self.platforms.is_empty() && !self.platforms.iter().any(|p| p.matches(child)) {
                continue;
            }
            let (m, _) = self
                .cache
                .manifest(target, &Reference::Digest(child.digest.clone()))
                .await
                .map_err(|source| ExportError::Fetch {
                    image: g.image.to_owned(),
                    what: format!("the child manifest {}", child.digest),
                    source: Box::new(source),
                })?;
            Box::pin(self.tree(target, &m, top, g, decided)).await?;
        }
        for blob in manifest.parsed.blobs() {
            if !g.seen.insert(blob.digest.clone()) {
                continue;
            }
            self.progress.expect(blob.size);
            if !self.layout.has(&blob.digest, blob.size).await {
                let b = self
                    .cache
                    .blob(target, &blob.digest)
                    .await
                    .map_err(|source| ExportError::Fetch {
                        image: g.image.to_owned(),
                        what: format!("blob {}", blob.digest),
                        source: Box::new(source),
                    })?;
                self.layout
                    .put_stream(&blob.digest, b.stream(0, None))
                    .await
                    .map_err(|source| self.write_error(&blob.digest, source))?;
            }
            g.bytes += blob.size;
            g.objects.push(Object {
                digest: blob.digest.to_string(),
                size: blob.size,
                media_type: None,
            });
            self.progress.done(blob.size, g.objects.len());
        }
        Ok(())
    }

    async fn put_bytes(
        &self,
        digest: &Digest,
        bytes: bytes::Bytes,
        g: &mut Gathering<'_>,
    ) -> Result<(), ExportError> {
        g.bytes += bytes.len() as u64;
        if self.layout.has(digest, bytes.len() as u64).await {
            return Ok(());
        }
        self.layout
            .put_bytes(digest, bytes)
            .await
            .map(|_| ())
            .map_err(|source| self.write_error(digest, source))
    }

    fn write_error(&self, digest: &Digest, source: PutError) -> ExportError {
        ExportError::Write {
            digest: digest.to_string(),
            path: self.layout.root().to_owned(),
            source,
        }
    }

    /// The legacy `.sig` and `.att` tags and the referrers of `digest`.
    async fn evidence(
        &self,
        sigs: &Target,
        digest: &Digest,
        g: &mut Gathering<'_>,
    ) -> Result<(), ExportError> {
        let evidence_error = |source| ExportError::Evidence {
            image: g.image.to_owned(),
            source,
        };
        if digest.algorithm() == Algorithm::Sha256 {
            for suffix in ["sig", "att"] {
                let tag = format!("sha256-{}.{suffix}", digest.hex());
                let reference = Reference::Tag(tag.parse().expect("a sha256 tag is valid"));
                let found = Source::manifest(&self.cache, sigs, &reference).await;
                let m = match found {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) => return Err(evidence_error(e)),
                };
                g.tags.push(TagEntry {
                    repository: sigs.reference(),
                    tag,
                    digest: m.digest.to_string(),
                });
                self.tree(sigs, &m, false, g, &mut Vec::new()).await?;
            }
        }
        let list = match Source::referrers(&self.cache, sigs, digest).await {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) => return Err(evidence_error(e)),
        };
        let mut listed = Vec::new();
        for d in list.parsed.children().iter().take(MAX_REFERRERS) {
            let m = match Source::manifest(&self.cache, sigs, &Reference::Digest(d.digest.clone()))
                .await
            {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return Err(ExportError::Missing {
                        image: g.image.to_owned(),
                        what: format!("referrer {}", d.digest),
                    });
                }
                Err(e) => return Err(evidence_error(e)),
            };
            self.tree(sigs, &m, false, g, &mut Vec::new()).await?;
            listed.push(descriptor_json(d));
        }
        if !listed.is_empty() {
            g.referrers.push(Referrers {
                repository: sigs.reference(),
                subject: digest.to_string(),
                manifests: listed,
            });
        }
        Ok(())
    }
}

/// A descriptor as JSON, as a referrers list holds it.
fn descriptor_json(d: &Descriptor) -> serde_json::Value {
    let mut v = json!({
        "mediaType": d.media_type,
        "digest": d.digest.to_string(),
        "size": d.size,
    });
    if let Some(t) = &d.artifact_type {
        v["artifactType"] = json!(t);
    }
    if !d.annotations.is_empty() {
        v["annotations"] = json!(d.annotations);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_filters() {
        let f = PlatformFilter::parse("linux/arm64/v8").unwrap();
        assert_eq!(f.variant.as_deref(), Some("v8"));
        assert!(PlatformFilter::parse("linux/amd64").is_ok());
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
        ] {
            assert!(PlatformFilter::parse(bad).is_err(), "{bad}");
        }
    }
}

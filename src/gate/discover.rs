//! Finding the signatures offered for a manifest digest, through the cache.
//!
//! Two formats, each looked up on its own so that junk in one never masks a
//! valid signature in the other: the legacy cosign tag `<alg>-<hex>.sig`
//! (every simple-signing layer of it), and Sigstore bundles attached as OCI
//! 1.1 referrers (through the referrers API or its tag-schema fallback).
//! Everything is bounded: layers, referrers and sizes are capped, and an
//! artifact over a cap is reported and skipped. A failure to *fetch* (as
//! opposed to a malformed artifact) is an error, so the caller can refuse.
//! Nothing found here is trusted: it is evidence for [`super::verify`].

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;

use super::GateError;
use crate::cache::{Cache, CacheError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::router::Target;
use crate::upstream::UpstreamError;

/// Signature layers read from one `.sig` manifest.
pub const MAX_SIGNATURE_LAYERS: usize = 32;
/// Referrers considered for one digest.
pub const MAX_REFERRERS: usize = 32;
/// Largest simple-signing payload read.
pub const MAX_PAYLOAD: u64 = 64 * 1024;
/// Largest Sigstore bundle read.
pub const MAX_BUNDLE: u64 = 1024 * 1024;

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Artifact types of Sigstore bundles (the second is the older spelling).
pub const BUNDLE_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
];
const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

/// One signature offered for the digest, not yet verified.
#[derive(Clone, Debug)]
pub enum Evidence {
    /// A layer of a legacy `.sig` manifest.
    Legacy {
        layer: Digest,
        payload: Bytes,
        /// Base64 of the signature over `payload`.
        signature: String,
        certificate: Option<String>,
        chain: Option<String>,
        /// The Rekor entry bundle (SET) as cosign stores it.
        rekor_bundle: Option<String>,
    },
    /// A Sigstore bundle attached as a referrer.
    Bundle { manifest: Digest, json: Bytes },
}

impl Evidence {
    /// Where it came from, for reasons and audit lines.
    pub fn origin(&self) -> String {
        match self {
            Evidence::Legacy { layer, .. } => format!(".sig layer {layer}"),
            Evidence::Bundle { manifest, .. } => format!("bundle referrer {manifest}"),
        }
    }
}

/// What discovery found.
#[derive(Debug, Default)]
pub struct Found {
    pub evidence: Vec<Evidence>,
    /// Artifacts skipped as malformed or over a cap.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ManifestShape {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

/// Not found (or not cached while offline): no signatures of that kind.
fn absent(e: &CacheError) -> bool {
    matches!(
        e.root(),
        CacheError::Upstream(UpstreamError::NotFound { .. })
            | CacheError::ManifestUnknown
            | CacheError::Offline
    )
}

/// Read a small blob whole, refusing more than `max` bytes: before fetching
/// when its descriptor declares more, and while reading otherwise.
async fn read_blob(
    cache: &Cache,
    target: &Target,
    digest: &Digest,
    declared: u64,
    max: u64,
) -> Result<Bytes, GateError> {
    if declared > max {
        return Err(GateError::TooLarge {
            what: digest.to_string(),
            max,
        });
    }
    let blob = cache.blob(target, digest).await.map_err(GateError::Fetch)?;
    let size = blob.size_when_done().await.map_err(GateError::Fetch)?;
    if size > max {
        return Err(GateError::TooLarge {
            what: digest.to_string(),
            max,
        });
    }
    let mut out = BytesMut::with_capacity(size as usize);
    let mut stream = blob.stream(0, None);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.map_err(GateError::Stream)?);
        if out.len() as u64 > max {
            return Err(GateError::TooLarge {
                what: digest.to_string(),
                max,
            });
        }
    }
    Ok(out.freeze())
}

/// Signatures in the legacy `.sig` tag for `subject`.
pub async fn legacy(
    cache: &Cache,
    sigs: &Target,
    subject: &Digest,
    found: &mut Found,
) -> Result<(), GateError> {
    let tag = format!("{}-{}.sig", subject.algorithm().name(), subject.hex());
    let tag = Reference::Tag(tag.parse().expect("algorithm and hex form a valid tag"));
    let manifest = match cache.manifest(sigs, &tag).await {
        Ok((m, _)) => m,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(GateError::Fetch(e)),
    };
    let shape: ManifestShape = match serde_json::from_slice(&manifest.bytes) {
        Ok(s) => s,
        Err(_) => {
            found
                .skipped
                .push(format!("{} is not a signature manifest", manifest.digest));
            return Ok(());
        }
    };
    if shape.layers.len() > MAX_SIGNATURE_LAYERS {
        found.skipped.push(format!(
            "{} has {} layers; only the first {MAX_SIGNATURE_LAYERS} were read",
            manifest.digest,
            shape.layers.len()
        ));
    }
    for layer in shape.layers.into_iter().take(MAX_SIGNATURE_LAYERS) {
        let Ok(digest) = layer.digest.parse::<Digest>() else {
            found.skipped.push(format!(
                "a .sig layer has an invalid digest {:?}",
                layer.digest
            ));
            continue;
        };
        if layer.media_type != SIMPLE_SIGNING {
            found.skipped.push(format!(
                ".sig layer {digest} has media type {:?}",
                layer.media_type
            ));
            continue;
        }
        let Some(signature) = layer.annotations.get(ANN_SIGNATURE).cloned() else {
            found.skipped.push(format!(
                ".sig layer {digest} carries no signature annotation"
            ));
            continue;
        };
        let payload = match read_blob(cache, sigs, &digest, layer.size, MAX_PAYLOAD).await {
            Ok(p) => p,
            Err(GateError::Fetch(e)) if !absent(&e) => return Err(GateError::Fetch(e)),
            Err(e) => {
                found
                    .skipped
                    .push(format!(".sig layer {digest}: {}", crate::error::chain(&e)));
                continue;
            }
        };
        found.evidence.push(Evidence::Legacy {
            layer: digest,
            payload,
            signature,
            certificate: layer.annotations.get(ANN_CERTIFICATE).cloned(),
            chain: layer.annotations.get(ANN_CHAIN).cloned(),
            rekor_bundle: layer.annotations.get(ANN_BUNDLE).cloned(),
        });
    }
    Ok(())
}

/// Sigstore bundles attached to `subject` as referrers.
pub async fn referrers(
    cache: &Cache,
    sigs: &Target,
    subject: &Digest,
    found: &mut Found,
) -> Result<(), GateError> {
    let index = match cache.referrers(sigs, subject).await {
        Ok((bytes, _)) => bytes,
        Err(e) if absent(&e) => return Ok(()),
        Err(e) => return Err(GateError::Fetch(e)),
    };
    let Ok(index) = serde_json::from_slice::<ManifestShape>(&index) else {
        found
            .skipped
            .push("the referrers list is not an image index".to_owned());
        return Ok(());
    };
    let bundles: Vec<_> = index
        .manifests
        .into_iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|t| BUNDLE_TYPES.contains(&t))
        })
        .collect();
    if bundles.len() > MAX_REFERRERS {
        found.skipped.push(format!(
            "{} bundle referrers; only the first {MAX_REFERRERS} were read",
            bundles.len()
        ));
    }
    for d in bundles.into_iter().take(MAX_REFERRERS) {
        let Ok(digest) = d.digest.parse::<Digest>() else {
            found
                .skipped
                .push(format!("a referrer has an invalid digest {:?}", d.digest));
            continue;
        };
        let manifest = match cache
            .manifest(sigs, &Reference::Digest(digest.clone()))
            .await
        {
            Ok((m, _)) => m,
            Err(e) if absent(&e) => {
                found
                    .skipped
                    .push(format!("bundle referrer {digest} is listed but not found"));
                continue;
            }
            Err(e) => return Err(GateError::Fetch(e)),
        };
        let shape: Option<ManifestShape> = serde_json::from_slice(&manifest.bytes).ok();
        let Some(shape) = shape else {
            found
                .skipped
                .push(format!("bundle referrer {digest} is not a manifest"));
            continue;
        };
        if shape.subject.as_ref().map(|s| s.digest.as_str()) != Some(subject.to_string().as_str()) {
            found
                .skipped
                .push(format!("bundle referrer {digest} names another subject"));
            continue;
        }
        let Some(layer) = shape
            .layers
            .into_iter()
            .find(|l| BUNDLE_TYPES.contains(&l.media_type.as_str()))
        else {
            found
                .skipped
                .push(format!("bundle referrer {digest} has no bundle layer"));
            continue;
        };
        let Ok(layer_digest) = layer.digest.parse::<Digest>() else {
            found.skipped.push(format!(
                "bundle referrer {digest} has an invalid layer digest"
            ));
            continue;
        };
        match read_blob(cache, sigs, &layer_digest, layer.size, MAX_BUNDLE).await {
            Ok(json) => found.evidence.push(Evidence::Bundle {
                manifest: digest,
                json,
            }),
            Err(GateError::Fetch(e)) if !absent(&e) => return Err(GateError::Fetch(e)),
            Err(e) => found.skipped.push(format!(
                "bundle referrer {digest}: {}",
                crate::error::chain(&e)
            )),
        }
    }
    Ok(())
}

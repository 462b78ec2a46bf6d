//! Finding the signatures offered for a manifest digest, through a [`Source`].
//!
//! Two formats, each looked up on its own so that junk in one never masks a
//! valid signature in the other: the legacy cosign tag `<alg>-<hex>.sig`
//! (every simple-signing layer of it) or, for attestations, `<alg>-<hex>.att`
//! (every DSSE envelope layer), and Sigstore bundles attached as OCI 1.1
//! referrers (through the referrers API or its tag-schema fallback).
//! Manifests arrive parsed by [`crate::manifest`]; this module reads that
//! model and nothing else. Everything is bounded: layers, referrers and sizes
//! are capped, and an artifact over a cap is reported and skipped. A failure
//! to *fetch* (as opposed to a malformed artifact) is an error, so the caller
//! can refuse. Nothing found here is trusted: it is evidence for
//! [`super::verify`]. The same readers turn the layers of a signature
//! artifact into evidence when the artifact itself is served
//! ([`layer_evidence`]).

use bytes::Bytes;

use super::GateError;
use super::source::{Source, SourceError, TooLarge};
use crate::digest::Digest;
use crate::manifest::{Descriptor, Manifest};
use crate::media::{ArtifactLayer, BUNDLE_TYPES, DSSE_ENVELOPE, SIMPLE_SIGNING};
use crate::reference::Reference;
use crate::router::Target;

/// Signature layers read from one `.sig` manifest.
pub const MAX_SIGNATURE_LAYERS: usize = 32;
/// Referrers considered for one digest.
pub const MAX_REFERRERS: usize = 32;
/// Largest simple-signing payload read.
pub const MAX_PAYLOAD: u64 = 64 * 1024;
/// Largest Sigstore bundle read for a signature. Attestations (DSSE
/// envelopes, attestation bundles) are read up to the policy's
/// `max_attestation_size`: SBOMs and scans are large.
pub const MAX_BUNDLE: u64 = 1024 * 1024;

/// How much of one format is read: artifacts and bytes per artifact.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub count: usize,
    pub size: u64,
}

/// The caps for legacy `.sig` signatures.
pub const SIGNATURE_CAPS: Caps = Caps {
    count: MAX_SIGNATURE_LAYERS,
    size: MAX_PAYLOAD,
};

/// The caps for signature bundles attached as referrers.
pub const BUNDLE_CAPS: Caps = Caps {
    count: MAX_REFERRERS,
    size: MAX_BUNDLE,
};

pub const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
pub const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
pub const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

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
    /// A DSSE envelope layer of a legacy `.att` manifest: the signatures are
    /// inside the envelope, the certificate and log entry in annotations.
    Envelope {
        layer: Digest,
        json: Bytes,
        certificate: Option<String>,
        chain: Option<String>,
        rekor_bundle: Option<String>,
    },
    /// A Sigstore bundle (attached as a referrer, or a bundle layer).
    Bundle { manifest: Digest, json: Bytes },
}

impl Evidence {
    /// Where it came from, for reasons and audit lines.
    pub fn origin(&self) -> String {
        match self {
            Evidence::Legacy { layer, .. } => format!(".sig layer {layer}"),
            Evidence::Envelope { layer, .. } => format!("attestation layer {layer}"),
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

/// Read a small blob whole, refusing more than `max` bytes: before fetching
/// when its descriptor declares more, and while reading otherwise.
async fn read_blob(
    source: &dyn Source,
    target: &Target,
    layer: &Descriptor,
    max: u64,
) -> Result<Option<Bytes>, GateError> {
    if layer.size > max {
        return Err(GateError::TooLarge(TooLarge {
            digest: layer.digest.clone(),
            max,
        }));
    }
    source
        .blob(target, &layer.digest, max)
        .await
        .map_err(GateError::from)
}

/// Evidence from one layer of a signature artifact, read through `source`
/// up to `max` bytes: `Ok(Err(why))` when the layer is not usable evidence
/// (no signature annotation, absent, over its cap), `Err` when it could not
/// be fetched.
pub async fn layer_evidence(
    source: &dyn Source,
    target: &Target,
    manifest: &Digest,
    kind: ArtifactLayer,
    layer: &Descriptor,
    max: u64,
) -> Result<Result<Evidence, String>, GateError> {
    let ann = |k: &str| layer.annotations.get(k).cloned();
    let digest = &layer.digest;
    let signature = ann(ANN_SIGNATURE);
    if kind == ArtifactLayer::SimpleSigning && signature.is_none() {
        return Ok(Err(format!(
            "layer {digest} carries no signature annotation"
        )));
    }
    let bytes = match read_blob(source, target, layer, max).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Err(format!("layer {digest} is listed but not found"))),
        Err(e @ (GateError::TooLarge(_) | GateError::Corrupt(_))) => {
            return Ok(Err(format!("layer {digest}: {}", crate::error::chain(&e))));
        }
        Err(e) => return Err(e),
    };
    Ok(Ok(match kind {
        ArtifactLayer::SimpleSigning => Evidence::Legacy {
            layer: digest.clone(),
            payload: bytes,
            signature: signature.unwrap_or_default(),
            certificate: ann(ANN_CERTIFICATE),
            chain: ann(ANN_CHAIN),
            rekor_bundle: ann(ANN_BUNDLE),
        },
        ArtifactLayer::DsseEnvelope => Evidence::Envelope {
            layer: digest.clone(),
            json: bytes,
            certificate: ann(ANN_CERTIFICATE),
            chain: ann(ANN_CHAIN),
            rekor_bundle: ann(ANN_BUNDLE),
        },
        ArtifactLayer::SigstoreBundle => Evidence::Bundle {
            manifest: manifest.clone(),
            json: bytes,
        },
    }))
}

/// Evidence in cosign's legacy tag for `subject`: signatures
/// (`<alg>-<hex>.sig`, simple-signing layers) or attestations
/// (`<alg>-<hex>.att`, DSSE envelope layers), as `kind` says, up to `caps`.
pub async fn legacy(
    source: &dyn Source,
    sigs: &Target,
    subject: &Digest,
    kind: ArtifactLayer,
    caps: Caps,
    found: &mut Found,
) -> Result<(), GateError> {
    let (suffix, media_type) = match kind {
        ArtifactLayer::DsseEnvelope => ("att", DSSE_ENVELOPE),
        _ => ("sig", SIMPLE_SIGNING),
    };
    let tag = format!("{}-{}.{suffix}", subject.algorithm().name(), subject.hex());
    // A sha512 digest makes a tag longer than tags may be: no registry can
    // hold one, so there is nothing to look up.
    let Ok(tag) = tag.parse() else {
        found.skipped.push(format!(
            "no .{suffix} tag can name {}: it would be longer than a tag may be",
            subject.algorithm().name()
        ));
        return Ok(());
    };
    let tag = Reference::Tag(tag);
    let manifest = match source.manifest(sigs, &tag).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(SourceError::Malformed(e)) => {
            found.skipped.push(format!(
                "the .{suffix} manifest is not a valid manifest: {}",
                crate::error::chain(&e)
            ));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let layers = manifest.parsed.layers();
    if manifest.parsed.is_index() {
        found
            .skipped
            .push(format!("{} is not a .{suffix} manifest", manifest.digest));
        return Ok(());
    }
    if layers.len() > caps.count {
        found.skipped.push(format!(
            "{} has {} layers; only the first {} were read",
            manifest.digest,
            layers.len(),
            caps.count
        ));
    }
    for layer in layers.iter().take(caps.count) {
        if layer.media_type != media_type {
            found.skipped.push(format!(
                ".{suffix} layer {} has media type {:?}",
                layer.digest, layer.media_type
            ));
            continue;
        }
        match layer_evidence(source, sigs, &manifest.digest, kind, layer, caps.size).await? {
            Ok(e) => found.evidence.push(e),
            Err(why) => found.skipped.push(format!(".{suffix} {why}")),
        }
    }
    Ok(())
}

/// Sigstore bundles attached to `subject` as referrers, up to `caps`.
pub async fn referrers(
    source: &dyn Source,
    sigs: &Target,
    subject: &Digest,
    caps: Caps,
    found: &mut Found,
) -> Result<(), GateError> {
    let list = match source.referrers(sigs, subject).await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(()),
        Err(SourceError::Malformed(e)) => {
            found.skipped.push(format!(
                "the referrers list is not a valid index: {}",
                crate::error::chain(&e)
            ));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let bundles: Vec<&Descriptor> = list
        .parsed
        .children()
        .iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|t| BUNDLE_TYPES.contains(&t))
        })
        .collect();
    if bundles.len() > caps.count {
        found.skipped.push(format!(
            "{} bundle referrers; only the first {} were read",
            bundles.len(),
            caps.count
        ));
    }
    for d in bundles.into_iter().take(caps.count) {
        let digest = &d.digest;
        let manifest: Manifest = match source
            .manifest(sigs, &Reference::Digest(digest.clone()))
            .await
        {
            Ok(Some(m)) => m,
            Ok(None) => {
                found
                    .skipped
                    .push(format!("bundle referrer {digest} is listed but not found"));
                continue;
            }
            // A referrer that exists but does not parse is junk beside the
            // others, not a reason to stop looking.
            Err(SourceError::Malformed(e)) => {
                found.skipped.push(format!(
                    "bundle referrer {digest} is not a valid manifest: {}",
                    crate::error::chain(&e)
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if manifest.parsed.subject.as_ref().map(|s| &s.digest) != Some(subject) {
            found
                .skipped
                .push(format!("bundle referrer {digest} names another subject"));
            continue;
        }
        let Some(layer) = manifest
            .parsed
            .layers()
            .iter()
            .find(|l| BUNDLE_TYPES.contains(&l.media_type.as_str()))
        else {
            found
                .skipped
                .push(format!("bundle referrer {digest} has no bundle layer"));
            continue;
        };
        match read_blob(source, sigs, layer, caps.size).await {
            Ok(Some(json)) => found.evidence.push(Evidence::Bundle {
                manifest: digest.clone(),
                json,
            }),
            Ok(None) => found.skipped.push(format!(
                "bundle referrer {digest}: its bundle {} is not found",
                layer.digest
            )),
            Err(e @ GateError::TooLarge(_)) => found.skipped.push(format!(
                "bundle referrer {digest}: {}",
                crate::error::chain(&e)
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

//! Verifying a signature or attestation artifact that is itself being served
//! (a `.sig` or `.att` manifest, a Sigstore bundle referrer), so that
//! `cosign verify` through portcullis can read it without the artifact
//! needing a signature of its own.
//!
//! A media type proves nothing (podman unpacks a layer whatever its type
//! says), so an artifact passes only when **every** layer parses as the
//! payload its kind claims (simple-signing JSON, a DSSE envelope, a Sigstore
//! bundle) and carries a signature that verifies, for the subject it names,
//! by a signer of a rule that governs this repository (the rule's signers, or
//! those its attestation requirements name): the rule its reference
//! matches, and any rule whose `signature_repository` it is. A
//! layer that is absent, too large, unparsable, unsigned or signed by
//! anyone else fails the whole artifact, which is then gated like an image.
//! This module must not cache anything.

use std::sync::Arc;

use super::source::Source;
use super::verify::{self, Purpose};
use super::{Verification, discover, image};
use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::media::ArtifactLayer;
use crate::policy::{Policy, SignerSet};
use crate::router::Target;

/// Layers checked in one artifact, at most.
pub const MAX_LAYERS: usize = discover::MAX_SIGNATURE_LAYERS;

/// Verify every layer of `manifest` (claiming to be `kind`) against the
/// signer lists `sets` (see [`Policy::artifact_signers`]).
pub async fn verify(
    source: &dyn Source,
    policy: &Arc<Policy>,
    sets: &[SignerSet],
    target: &Target,
    manifest: &Manifest,
    kind: ArtifactLayer,
) -> Verification {
    let failed = |reason: String, checked| Verification::failed(reason, checked, Vec::new());
    let layers = manifest.parsed.layers();
    if layers.len() > MAX_LAYERS {
        return failed(
            format!("{} layers; at most {MAX_LAYERS} are checked", layers.len()),
            0,
        );
    }
    let max = match kind {
        ArtifactLayer::SimpleSigning => discover::MAX_PAYLOAD,
        ArtifactLayer::DsseEnvelope | ArtifactLayer::SigstoreBundle => policy.max_attestation_size,
    };
    let mut signers: Vec<String> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let evidence = match discover::layer_evidence(
            source,
            target,
            &manifest.digest,
            kind,
            layer,
            max,
        )
        .await
        {
            Ok(Ok(e)) => e,
            Ok(Err(why)) => return failed(why, i),
            Err(e) => {
                return failed(
                    format!(
                        "could not fetch layer {}: {}",
                        layer.digest,
                        crate::error::chain(&e)
                    ),
                    i,
                );
            }
        };
        let subject: Digest = match kind {
            ArtifactLayer::SigstoreBundle => match &manifest.parsed.subject {
                Some(s) => s.digest.clone(),
                None => return failed("a bundle artifact without a subject".into(), i),
            },
            _ => match verify::claimed_subject(&evidence) {
                Ok(d) => d,
                Err(why) => return failed(format!("layer {}: {why}", layer.digest), i),
            },
        };
        let mut why = Vec::new();
        let mut verified = None;
        for &set in sets {
            let checked = match image::check_off_thread(
                policy,
                set,
                vec![evidence.clone()],
                &subject,
                Purpose::Attachment,
            )
            .await
            {
                Ok(mut c) => c.pop().unwrap_or_default(),
                Err(e) => return failed(format!("verification failed to run: {e}"), i),
            };
            if let Some((signer, identity)) = checked.matched.first() {
                verified = Some(policy.signers(set)[*signer].identified(identity));
                break;
            }
            why.extend(checked.rejection);
        }
        match verified {
            Some(s) => {
                if !signers.contains(&s) {
                    signers.push(s);
                }
            }
            None => {
                let why = if why.is_empty() {
                    format!("layer {} is signed by no trusted signer", layer.digest)
                } else {
                    why.join("; ")
                };
                return failed(why, i + 1);
            }
        }
    }
    Verification::Artifact {
        kind: kind.describe().to_owned(),
        signers,
        checked: layers.len(),
    }
}

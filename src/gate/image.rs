//! Verifying that an image digest is signed: discover its signatures through
//! a [`Source`], check each against the rule's signers off the async
//! threads, and count distinct signers toward the threshold.
//!
//! Legacy `.sig` signatures are looked at first, referrer bundles only when
//! the threshold is not met yet. A failure to fetch evidence is a failed
//! verification, never a pass. This is the one implementation: the server,
//! `portcullis verify` and the fixture tests all run it. This module must
//! not cache anything.

use std::sync::Arc;

use super::source::Source;
use super::tally::Tally;
use super::verify::{self, Purpose};
use super::{Verification, discover};
use crate::digest::Digest;
use crate::media::ArtifactLayer;
use crate::policy::{Policy, SignerSet};
use crate::router::Target;

#[derive(Clone, Copy)]
enum Step {
    Legacy,
    Referrers,
}

/// Discover and check the signatures of `digest` in `sigs` (the image's
/// repository, or the rule's `signature_repository`) against rule number
/// `rule` of `policy`, counting `proved` (what the rule's notary signers
/// proved, checked before) first. Cosign signatures are looked for only
/// when the rule has cosign signers and the threshold is not met yet.
pub async fn verify(
    source: &dyn Source,
    policy: &Arc<Policy>,
    rule: usize,
    sigs: &Target,
    digest: &Digest,
    proved: Vec<verify::Checked>,
) -> Verification {
    let threshold = policy.rules[rule].threshold;
    let signers = &policy.rules[rule].signers;
    let mut found = discover::Found::default();
    let mut tally = Tally::default();
    let verified = |tally: &Tally| Verification::Verified {
        signers: tally.signers(),
        checked: tally.checked(),
        attestations: Vec::new(),
        fresh_until: None,
    };
    for c in proved {
        tally.add(signers, c);
    }
    if tally.distinct() >= threshold {
        return verified(&tally);
    }
    let steps: &[Step] = if signers.iter().any(|s| !s.is_notary()) {
        &[Step::Legacy, Step::Referrers]
    } else {
        &[]
    };
    for &step in steps {
        let before = found.evidence.len();
        let fetched = match step {
            Step::Legacy => {
                discover::legacy(
                    source,
                    sigs,
                    digest,
                    ArtifactLayer::SimpleSigning,
                    discover::SIGNATURE_CAPS,
                    &mut found,
                )
                .await
            }
            Step::Referrers => {
                discover::referrers(source, sigs, digest, discover::BUNDLE_CAPS, &mut found).await
            }
        };
        if let Err(e) = fetched {
            return Verification::failed(
                format!("could not fetch signatures: {}", crate::error::chain(&e)),
                tally.checked(),
                tally.signers(),
            );
        }
        let fresh: Vec<discover::Evidence> = found.evidence[before..].to_vec();
        match check_off_thread(
            policy,
            SignerSet::Rule(rule),
            fresh,
            digest,
            Purpose::Signature,
        )
        .await
        {
            Ok(checked) => checked.into_iter().for_each(|c| tally.add(signers, c)),
            Err(e) => {
                return Verification::failed(
                    format!("signature verification failed to run: {e}"),
                    tally.checked(),
                    tally.signers(),
                );
            }
        }
        if tally.distinct() >= threshold {
            return verified(&tally);
        }
    }
    Verification::failed(
        tally.failure_reason(threshold, &found.skipped),
        tally.checked(),
        tally.signers(),
    )
}

/// Check evidence about `subject` against the signers of `set` on the
/// blocking pool: cryptography is CPU work.
pub(super) async fn check_off_thread(
    policy: &Arc<Policy>,
    set: SignerSet,
    evidence: Vec<discover::Evidence>,
    subject: &Digest,
    purpose: Purpose,
) -> Result<Vec<verify::Checked>, tokio::task::JoinError> {
    if evidence.is_empty() {
        return Ok(Vec::new());
    }
    let (p, d) = (policy.clone(), subject.clone());
    tokio::task::spawn_blocking(move || {
        let signers = p.signers(set);
        evidence
            .iter()
            .map(|e| verify::check(e, &d, signers, purpose))
            .collect()
    })
    .await
}

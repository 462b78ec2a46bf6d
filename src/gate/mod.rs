//! The policy gate: decides, for the exact manifest bytes about to be served,
//! whether they may be served.
//!
//! Sits between the API and the cache. For each manifest it finds the rule
//! (first match in file order, else the policy's default), and in enforce or
//! warn mode looks for signatures ([`discover`]) and checks them
//! ([`verify`]) against the rule's signers, counting distinct signers
//! toward the threshold ([`image`]). Nothing passes on its shape: a manifest
//! that claims to be a signature or attestation artifact (the one list is
//! [`crate::media::artifact_layer`]) passes without a signature of its own
//! only once every one of its layers has verified as what it claims, by a
//! signer the policy trusts for its repository ([`artifact`]); anything else
//! is gated like an image. The referrers tag-schema index (`<alg>-<hex>`) is
//! served unchecked, because every manifest it lists is gated on its own
//! when fetched. An index that verifies covers the children it lists, in
//! that repository, unless the rule says `per_platform`.
//!
//! Results are cached as verdicts keyed by (build, policy fingerprint,
//! reference, digest, and the tag where notary signers count: see
//! [`verdicts`]), so neither a changed policy nor a fixed verifier ever
//! reuses an old answer. Everything the gate reads comes through the
//! [`Source`] and [`Verdicts`] interfaces. Every decision is one audit line
//! and one count in `portcullis_policy_decisions_total`. This module must not
//! build HTTP responses.

pub mod artifact;
pub mod attest;
pub mod discover;
pub mod image;
pub mod notary;
mod reload;
pub mod source;
pub mod statement;
pub mod tally;
mod verdicts;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::cache::fill::BoxError;
use crate::clock::Clock;
use crate::config::UpstreamConfig;
use crate::digest::Digest;
use crate::manifest::{Manifest, ManifestError};
use crate::metrics::Metrics;
use crate::policy::{Default, Mode, Policy, Rule};
use crate::reference::Reference;
use crate::router::{RouteError, Router, Target};
pub use attest::AttestationResult;
pub use reload::spawn_reloader;
pub use source::{Source, SourceError, TooLarge, Verdicts};
pub use verdicts::build_id;
use verdicts::{encode, image_kind, verdict_key};

/// Why signatures could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("fetching signatures failed")]
    Fetch(#[source] BoxError),
    #[error(transparent)]
    TooLarge(TooLarge),
    #[error("the bytes of {0} do not match it")]
    Corrupt(Digest),
    #[error("a signature manifest is not valid")]
    Malformed(#[source] ManifestError),
    #[error("the rule's signature_repository cannot be used")]
    SignatureRepository(#[source] RouteError),
}

impl From<SourceError> for GateError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Malformed(m) => GateError::Malformed(m),
            SourceError::TooLarge(t) => GateError::TooLarge(t),
            SourceError::Corrupt { digest } => GateError::Corrupt(digest),
            SourceError::Fetch(f) => GateError::Fetch(f),
        }
    }
}

/// What the gate decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Enough signers verified.
    Verified,
    /// The digest is pinned by the rule's `allow_digests`.
    Pinned,
    /// A verified index lists it.
    Covered,
    /// A rule (or the default) allows it without checks.
    Allowed,
    /// A signature or attestation artifact whose every layer verified, or
    /// the referrers list (tag schema).
    Exempt,
    /// Checks failed, served anyway (warn mode).
    Warned,
    /// Refused.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Pinned => "pinned",
            Outcome::Covered => "covered",
            Outcome::Allowed => "allowed",
            Outcome::Exempt => "exempt",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
        }
    }

    pub fn serves(self) -> bool {
        self != Outcome::Denied
    }
}

/// A decision with the reasons a node operator needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The normalized reference, e.g. `docker.io/library/alpine`.
    pub reference: String,
    pub digest: String,
    /// The rule that applied; `None` when the policy's default did.
    pub rule: Option<String>,
    pub reason: String,
    /// Signers that verified.
    pub signers: Vec<String>,
    /// Signatures examined.
    pub checked: usize,
    /// The requirement that failed: `signature`, or an attestation's name.
    #[serde(default)]
    pub requirement: Option<String>,
    /// Each attestation requirement's result, when they were checked.
    #[serde(default)]
    pub attestations: Vec<AttestationResult>,
}

impl Decision {
    /// The one-line message for refusals and warnings.
    pub fn message(&self) -> String {
        let rule = match &self.rule {
            Some(r) => format!("rule \"{r}\""),
            None => "the policy's default".to_owned(),
        };
        let verb = if self.outcome == Outcome::Denied {
            "refused"
        } else {
            "served"
        };
        format!(
            "image {}@{} {verb} by {rule}: {}",
            self.reference, self.digest, self.reason
        )
    }
}

/// The result of checking a digest's evidence (the mode is applied afresh).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Verification {
    Verified {
        signers: Vec<String>,
        checked: usize,
        /// The rule's attestation requirements, all passed.
        #[serde(default)]
        attestations: Vec<AttestationResult>,
        /// Seconds since the epoch at which a passing attestation ages out
        /// (`max_age`): the verdict is never used from then on.
        #[serde(default)]
        fresh_until: Option<u64>,
    },
    Covered {
        index: String,
        /// As for the index's own verdict.
        #[serde(default)]
        fresh_until: Option<u64>,
    },
    /// A signature or attestation artifact whose every layer verified.
    Artifact {
        kind: String,
        signers: Vec<String>,
        checked: usize,
    },
    Failed {
        reason: String,
        checked: usize,
        /// Signers that did verify, short of the threshold.
        #[serde(default)]
        signers: Vec<String>,
        /// The requirement that failed: `signature`, or an attestation's name.
        #[serde(default)]
        requirement: Option<String>,
        /// Each attestation requirement's result, when they were checked.
        #[serde(default)]
        attestations: Vec<AttestationResult>,
    },
}

/// The requirement name for the image signature.
pub const SIGNATURE: &str = "signature";

impl Verification {
    /// A failed signature verification.
    pub fn failed(reason: String, checked: usize, signers: Vec<String>) -> Verification {
        Verification::Failed {
            reason,
            checked,
            signers,
            requirement: Some(SIGNATURE.to_owned()),
            attestations: Vec::new(),
        }
    }

    /// Until when it may be used, if it ages out.
    fn fresh_until(&self) -> Option<u64> {
        match self {
            Verification::Verified { fresh_until, .. }
            | Verification::Covered { fresh_until, .. } => *fresh_until,
            _ => None,
        }
    }
}

pub(crate) fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Is this the referrers list under the tag schema (`<alg>-<hex>`)?
fn referrers_list(requested: &Reference, manifest: &Manifest) -> bool {
    let Reference::Tag(t) = requested else {
        return false;
    };
    manifest.parsed.is_index()
        && t.as_str().split_once('-').is_some_and(|(alg, hex)| {
            matches!(alg, "sha256" | "sha512")
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// The policy gate.
pub struct Gate {
    policy: RwLock<Arc<Policy>>,
    policy_path: PathBuf,
    upstreams: Vec<UpstreamConfig>,
    source: Arc<dyn Source>,
    verdicts: Arc<dyn Verdicts>,
    router: Arc<Router>,
    notary: Arc<crate::notary::Notary>,
    metrics: Metrics,
    clock: Clock,
    verifying: verdicts::Verifying,
}

/// What a gate is built from.
pub struct GateParts {
    pub policy: Policy,
    /// Where the policy was loaded from (reloads re-read it).
    pub policy_path: PathBuf,
    pub upstreams: Vec<UpstreamConfig>,
    pub source: Arc<dyn Source>,
    pub verdicts: Arc<dyn Verdicts>,
    pub router: Arc<Router>,
    /// Docker Content Trust data for notary signers.
    pub notary: Arc<crate::notary::Notary>,
    pub metrics: Metrics,
    pub clock: Clock,
}

impl Gate {
    /// The gate the server and the commands use: `policy` (loaded from
    /// `policy_path`) over `cache` for both registry content and verdicts.
    /// Computes the build's identity first (it reads the executable).
    pub async fn over_cache(
        policy: Policy,
        policy_path: &std::path::Path,
        config: &crate::config::Config,
        cache: &crate::cache::Cache,
        router: Arc<Router>,
        metrics: Metrics,
        clock: Clock,
    ) -> Gate {
        let _ = tokio::task::spawn_blocking(build_id).await;
        Gate::new(GateParts {
            policy,
            policy_path: policy_path.to_owned(),
            upstreams: config.upstreams.clone(),
            source: Arc::new(cache.clone()),
            verdicts: Arc::new(cache.clone()),
            router,
            notary: Arc::new(crate::notary::Notary::new(
                Arc::new(cache.clone()),
                config.offline,
                metrics.clone(),
                clock.clone(),
            )),
            metrics,
            clock,
        })
    }

    pub fn new(parts: GateParts) -> Gate {
        Gate {
            policy: RwLock::new(Arc::new(parts.policy)),
            policy_path: parts.policy_path,
            upstreams: parts.upstreams,
            source: parts.source,
            verdicts: parts.verdicts,
            router: parts.router,
            notary: parts.notary,
            metrics: parts.metrics,
            clock: parts.clock,
            verifying: verdicts::Verifying::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }

    fn install(&self, policy: Policy) {
        *self.policy.write().expect("policy lock") = Arc::new(policy);
    }

    /// Decide whether `manifest`, asked for as `requested` in `target`, may
    /// be served; `client` is who asked (`[auth]`), for the audit line.
    pub async fn check(
        &self,
        target: &Target,
        requested: &Reference,
        manifest: &Manifest,
        client: Option<&str>,
    ) -> Decision {
        let decision = self.decide(target, requested, manifest).await;
        self.metrics.policy_decision(
            decision.rule.as_deref().unwrap_or("-"),
            decision.outcome.as_str(),
            decision.requirement.as_deref().unwrap_or("-"),
        );
        tracing::info!(
            target: "portcullis::audit",
            reference = %decision.reference,
            digest = %decision.digest,
            requested = %requested,
            rule = decision.rule.as_deref().unwrap_or("-"),
            outcome = decision.outcome.as_str(),
            requirement = decision.requirement.as_deref().unwrap_or("-"),
            reason = %decision.reason,
            signers = %decision.signers.join(", "),
            checked = decision.checked,
            client = client.unwrap_or("-"),
            "policy decision"
        );
        decision
    }

    async fn decide(
        &self,
        target: &Target,
        requested: &Reference,
        manifest: &Manifest,
    ) -> Decision {
        let policy = self.policy();
        let reference = target.reference();
        let digest = &manifest.digest;
        let decision =
            |outcome, rule: Option<&Rule>, reason: String, signers: Vec<String>, checked| {
                Decision {
                    outcome,
                    reference: reference.clone(),
                    digest: digest.to_string(),
                    rule: rule.map(|r| r.name.clone()),
                    reason,
                    signers,
                    checked,
                    requirement: None,
                    attestations: Vec::new(),
                }
            };
        if referrers_list(requested, manifest) {
            return decision(
                Outcome::Exempt,
                None,
                "a referrers list (tag schema): every manifest it lists is checked when fetched"
                    .into(),
                Vec::new(),
                0,
            );
        }
        let rule = policy.rule_for(&reference);
        let mode = rule.map(|r| r.mode_at(self.clock.now()));
        match (rule, mode) {
            (Some(r), Some(Mode::Allow)) => {
                return decision(
                    Outcome::Allowed,
                    Some(r),
                    "the rule allows it without checks".into(),
                    Vec::new(),
                    0,
                );
            }
            (None, _) if policy.default == Default::Allow => {
                return decision(
                    Outcome::Allowed,
                    None,
                    "no rule matches this image; the default is allow".into(),
                    Vec::new(),
                    0,
                );
            }
            _ => {}
        }
        if let Some(r) = rule
            && r.allow_digests.contains(digest)
        {
            // A pinned index vouches for its children as a verified one does.
            self.remember(&policy, r, target, manifest, None, "image")
                .await;
            return decision(
                Outcome::Pinned,
                Some(r),
                "the digest is pinned in allow_digests".into(),
                Vec::new(),
                0,
            );
        }
        // A signature or attestation artifact passes only as verified content.
        let mut artifact_failure = None;
        if let Some(kind) = manifest.parsed.artifact() {
            match self
                .artifact_verification(&policy, target, manifest, kind)
                .await
            {
                Some(Verification::Artifact {
                    kind,
                    signers,
                    checked,
                }) => {
                    let reason = format!("{kind} whose every layer verified");
                    return decision(Outcome::Exempt, rule, reason, signers, checked);
                }
                Some(Verification::Failed { reason, .. }) => {
                    artifact_failure =
                        Some(format!("not verified as {}: {reason}", kind.describe()))
                }
                _ => {}
            }
        }
        let with_artifact = |reason: String| match &artifact_failure {
            Some(a) => format!("{a}; as an image: {reason}"),
            None => reason,
        };
        let (Some(rule), Some(mode)) = (rule, mode) else {
            let (outcome, reason) = match policy.default {
                Default::Warn => (
                    Outcome::Warned,
                    "no rule matches this image; the default is warn",
                ),
                _ => (
                    Outcome::Denied,
                    "no rule matches this image and the default is deny",
                ),
            };
            return decision(
                outcome,
                None,
                with_artifact(reason.to_owned()),
                Vec::new(),
                0,
            );
        };
        let verification = self
            .verification(&policy, rule, target, requested, manifest)
            .await;
        match verification {
            Verification::Verified {
                signers,
                checked,
                attestations,
                ..
            } => {
                let mut reason = if rule.signers.is_empty() {
                    "no signature required".to_owned()
                } else {
                    format!(
                        "{} of {} required signers verified",
                        signers.len(),
                        rule.threshold
                    )
                };
                if !attestations.is_empty() {
                    let names: Vec<&str> = attestations.iter().map(|a| a.name.as_str()).collect();
                    reason.push_str(&format!("; attestations passed: {}", names.join(", ")));
                }
                let mut d = decision(Outcome::Verified, Some(rule), reason, signers, checked);
                d.attestations = attestations;
                d
            }
            Verification::Covered { index, .. } => {
                let reason = format!("listed by the verified index {index}");
                decision(Outcome::Covered, Some(rule), reason, Vec::new(), 0)
            }
            Verification::Artifact { .. } => decision(
                Outcome::Denied,
                Some(rule),
                "an artifact verdict where an image verdict was expected".into(),
                Vec::new(),
                0,
            ),
            Verification::Failed {
                reason,
                checked,
                signers,
                requirement,
                attestations,
            } => {
                let outcome = if mode == Mode::Enforce {
                    Outcome::Denied
                } else {
                    Outcome::Warned
                };
                let reason = with_artifact(reason);
                let reason = match (mode, rule.enforce_from) {
                    (Mode::Warn, Some(_)) => {
                        format!("{reason} (warn only until the rule's enforce_from date)")
                    }
                    _ => reason,
                };
                let mut d = decision(outcome, Some(rule), reason, signers, checked);
                d.requirement = requirement;
                d.attestations = attestations;
                d
            }
        }
    }

    /// The artifact check for a manifest that claims to be a signature
    /// artifact, from the verdict cache or fresh; `None` when no rule could
    /// vouch for artifacts in this repository.
    async fn artifact_verification(
        &self,
        policy: &Arc<Policy>,
        target: &Target,
        manifest: &Manifest,
        kind: crate::media::ArtifactLayer,
    ) -> Option<Verification> {
        let sets = policy.artifact_signers(&target.reference());
        if sets.is_empty() {
            return None;
        }
        let key = verdict_key(policy, "artifact", target, &manifest.digest);
        let fresh = async {
            self.metrics.verification_run("artifact");
            let fresh =
                artifact::verify(&*self.source, policy, &sets, target, manifest, kind).await;
            let ttl = match &fresh {
                Verification::Failed { .. } => policy.failure_ttl,
                _ => policy.verdict_ttl,
            };
            self.put_verdicts(vec![(key.clone(), ttl, encode(&fresh))])
                .await;
            fresh
        };
        Some(self.once(&key, fresh).await)
    }

    /// The verification result for this digest, from the verdict cache or
    /// fresh. Where notary signers count, the result depends on the tag
    /// asked for, and so does its verdict's key.
    async fn verification(
        &self,
        policy: &Arc<Policy>,
        rule: &Rule,
        target: &Target,
        requested: &Reference,
        manifest: &Manifest,
    ) -> Verification {
        let kind = image_kind(rule, requested);
        let key = verdict_key(policy, &kind, target, &manifest.digest);
        let fresh = self.fresh_verification(policy, rule, target, requested, manifest, &kind);
        self.once(&key, fresh).await
    }

    /// [`Gate::verification`] when no verdict is cached and no other
    /// request is verifying: check the evidence, and remember the result.
    async fn fresh_verification(
        &self,
        policy: &Arc<Policy>,
        rule: &Rule,
        target: &Target,
        requested: &Reference,
        manifest: &Manifest,
        kind: &str,
    ) -> Verification {
        self.metrics.verification_run("image");
        let sigs = match &rule.signature_repository {
            None => target.clone(),
            Some(repo) => match self.router.resolve_image(repo) {
                Ok((t, _)) => t,
                Err(e) => {
                    let e = GateError::SignatureRepository(e);
                    return Verification::failed(
                        format!("could not look for signatures: {}", crate::error::chain(&e)),
                        0,
                        Vec::new(),
                    );
                }
            },
        };
        let index = policy
            .rule_index(&rule.name)
            .expect("the rule is in its policy");
        let signature = if rule.signers.is_empty() && !rule.attestations.is_empty() {
            // Only attestations are required (each names its own signers).
            // A rule with neither signers nor attestations (only pinned
            // digests) goes on to the signature check, which fails.
            Verification::Verified {
                signers: Vec::new(),
                checked: 0,
                attestations: Vec::new(),
                fresh_until: None,
            }
        } else {
            let dct = if rule.has_notary() {
                notary::check(&self.notary, rule, target, requested, manifest).await
            } else {
                notary::Proved::default()
            };
            let verified = image::verify(
                &*self.source,
                policy,
                index,
                &sigs,
                &manifest.digest,
                dct.checked,
            )
            .await;
            match (verified, dct.valid_until) {
                // A verdict never outlives the trust data that passed it.
                (
                    Verification::Verified {
                        signers,
                        checked,
                        attestations,
                        fresh_until,
                    },
                    Some(until),
                ) => Verification::Verified {
                    signers,
                    checked,
                    attestations,
                    fresh_until: Some(
                        fresh_until.map_or(unix_secs(until), |f| f.min(unix_secs(until))),
                    ),
                },
                (v, _) => v,
            }
        };
        let fresh = match signature {
            // Attestations are checked once the signature has passed.
            Verification::Verified {
                signers,
                checked,
                fresh_until: signature_until,
                ..
            } if !rule.attestations.is_empty() => {
                let now = self.clock.now();
                let report =
                    attest::verify(&*self.source, policy, index, &sigs, &manifest.digest, now)
                        .await;
                for r in &report.results {
                    self.metrics
                        .attestation_checked(&rule.name, &r.name, r.passed);
                }
                let mut combined = report.with_signature(signers, checked);
                if let (Verification::Verified { fresh_until, .. }, Some(s)) =
                    (&mut combined, signature_until)
                {
                    *fresh_until = Some(fresh_until.map_or(s, |f| f.min(s)));
                }
                combined
            }
            Verification::Failed {
                reason,
                checked,
                signers,
                requirement,
                ..
            } => Verification::Failed {
                reason,
                checked,
                signers,
                requirement,
                attestations: attest::Report::failed_all(
                    &rule.attestations,
                    "not checked: the image signature failed",
                )
                .results,
            },
            other => other,
        };
        self.remember(policy, rule, target, manifest, Some(&fresh), kind)
            .await;
        fresh
    }

    /// The upstream configuration the policy's patterns resolve against.
    fn upstreams(&self) -> &[UpstreamConfig] {
        &self.upstreams
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn manifest(json: &str) -> Manifest {
        let bytes = bytes::Bytes::from(json.to_owned());
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        Manifest::check(&digest, bytes, None).unwrap()
    }

    #[test]
    fn only_an_index_under_the_referrers_tag_is_a_referrers_list() {
        let tag = |t: &str| Reference::Tag(t.parse().unwrap());
        let index = manifest(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        );
        assert!(referrers_list(&tag("sha256-0123abcd"), &index));
        assert!(!referrers_list(&tag("latest"), &index));
        assert!(!referrers_list(&tag("sha256-xyz"), &index));
        assert!(!referrers_list(
            &Reference::Digest(index.digest.clone()),
            &index
        ));
        let d = Digest::of(Algorithm::Sha256, b"c");
        let image = manifest(&format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[]}}"#
        ));
        assert!(!referrers_list(&tag("sha256-0123abcd"), &image));
    }
}

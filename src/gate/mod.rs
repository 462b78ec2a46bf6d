//! The policy gate: decides, for the exact manifest bytes about to be served,
//! whether they may be served.
//!
//! Sits between the API and the cache. For each manifest it finds the rule
//! (first match in file order, else the policy's default), and in enforce or
//! warn mode looks for signatures ([`discover`]) and checks them
//! ([`verify`]) against the rule's signers, counting distinct signers
//! toward the threshold. Results are cached as verdicts keyed by (policy
//! fingerprint, reference, digest), so a changed policy never reuses an old
//! answer. An index that verifies covers the children it lists, in that
//! repository, unless the rule says `per_platform`. Manifests that cannot be
//! run (signature, attestation and SBOM artifacts: no filesystem layers) and
//! the referrers tag-schema index pass unchecked, so `cosign verify` works
//! through portcullis. Every decision is one audit line and one count in
//! `portcullis_policy_decisions_total`. Blobs are not gated: a blob is only
//! reachable through a manifest the client already got. This module must not
//! build HTTP responses.

pub mod discover;
mod reload;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cache::fill::BoxError;
use crate::cache::manifests::Manifest;
use crate::cache::{Cache, CacheError};
use crate::config::UpstreamConfig;
use crate::digest::Digest;
use crate::media::{DOCKER_LIST, OCI_INDEX};
use crate::metrics::Metrics;
use crate::policy::{Default, Mode, Policy, Rule};
use crate::reference::Reference;
use crate::router::{RouteError, Router, Target};
pub use reload::spawn_reloader;

/// Why signatures could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("fetching signatures failed")]
    Fetch(#[source] CacheError),
    #[error("reading a signature artifact failed")]
    Stream(#[source] BoxError),
    #[error("{what} is larger than {max} bytes")]
    TooLarge { what: String, max: u64 },
    #[error("the rule's signature_repository cannot be used")]
    SignatureRepository(#[source] RouteError),
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
    /// A signature or attestation artifact, passed through.
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

/// The cached result of checking signatures (the mode is applied afresh).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Verification {
    Verified {
        signers: Vec<String>,
        checked: usize,
    },
    Covered {
        index: String,
    },
    Failed {
        reason: String,
        checked: usize,
    },
}

/// The policy gate.
pub struct Gate {
    policy: RwLock<Arc<Policy>>,
    policy_path: PathBuf,
    upstreams: Vec<UpstreamConfig>,
    cache: Cache,
    router: Arc<Router>,
    metrics: Metrics,
}

/// Layer media types that unpack to a container filesystem.
fn is_filesystem_layer(media_type: &str) -> bool {
    media_type.contains("tar")
        || media_type.starts_with("application/vnd.oci.image.layer")
        || media_type.starts_with("application/vnd.docker.image.rootfs")
}

/// Why a manifest passes unchecked, if it does.
fn exemption(requested: &Reference, manifest: &Manifest) -> Option<&'static str> {
    let is_index = &*manifest.media_type == OCI_INDEX || &*manifest.media_type == DOCKER_LIST;
    if is_index {
        let referrers_tag = match requested {
            Reference::Tag(t) => t.as_str().split_once('-').is_some_and(|(alg, hex)| {
                matches!(alg, "sha256" | "sha512")
                    && !hex.is_empty()
                    && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }),
            Reference::Digest(_) => false,
        };
        return referrers_tag.then_some("a referrers list (tag schema)");
    }
    #[derive(Deserialize)]
    struct Layer {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        layers: Vec<Layer>,
    }
    let shape: Shape = serde_json::from_slice(&manifest.bytes).ok()?;
    (!shape
        .layers
        .iter()
        .any(|l| is_filesystem_layer(&l.media_type)))
    .then_some("not runnable: a signature, attestation or other artifact without filesystem layers")
}

/// Where a verdict is cached: it depends on the policy, the repository
/// (rules match references) and the digest.
fn verdict_key(policy: &Policy, target: &Target, digest: &Digest) -> String {
    format!("{} {} {digest}", policy.fingerprint, target.reference())
}

/// Children an index lists.
fn index_children(manifest: &Manifest) -> Vec<Digest> {
    #[derive(Deserialize)]
    struct Child {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Child>,
    }
    serde_json::from_slice::<Index>(&manifest.bytes)
        .map(|i| {
            i.manifests
                .iter()
                .filter_map(|c| c.digest.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Gate {
    /// A gate with `policy`, loaded from `policy_path` (reloads re-read it).
    pub fn new(
        policy: Policy,
        policy_path: PathBuf,
        upstreams: Vec<UpstreamConfig>,
        cache: Cache,
        router: Arc<Router>,
        metrics: Metrics,
    ) -> Gate {
        Gate {
            policy: RwLock::new(Arc::new(policy)),
            policy_path,
            upstreams,
            cache,
            router,
            metrics,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }

    fn install(&self, policy: Policy) {
        *self.policy.write().expect("policy lock") = Arc::new(policy);
    }

    /// Decide whether `manifest`, asked for as `requested` in `target`, may be served.
    pub async fn check(
        &self,
        target: &Target,
        requested: &Reference,
        manifest: &Manifest,
    ) -> Decision {
        let decision = self.decide(target, requested, manifest).await;
        self.metrics.policy_decision(
            decision.rule.as_deref().unwrap_or("-"),
            decision.outcome.as_str(),
        );
        tracing::info!(
            target: "portcullis::audit",
            reference = %decision.reference,
            digest = %decision.digest,
            requested = %requested,
            rule = decision.rule.as_deref().unwrap_or("-"),
            outcome = decision.outcome.as_str(),
            reason = %decision.reason,
            signers = %decision.signers.join(", "),
            checked = decision.checked,
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
                }
            };
        if let Some(why) = exemption(requested, manifest) {
            return decision(Outcome::Exempt, None, why.to_owned(), Vec::new(), 0);
        }
        let Some(rule) = policy.rule_for(&reference) else {
            let (outcome, reason) = match policy.default {
                Default::Allow => (
                    Outcome::Allowed,
                    "no rule matches this image; the default is allow",
                ),
                Default::Warn => (
                    Outcome::Warned,
                    "no rule matches this image; the default is warn",
                ),
                Default::Deny => (
                    Outcome::Denied,
                    "no rule matches this image and the default is deny",
                ),
            };
            return decision(outcome, None, reason.to_owned(), Vec::new(), 0);
        };
        let mode = rule.mode_at(SystemTime::now());
        if mode == Mode::Allow {
            return decision(
                Outcome::Allowed,
                Some(rule),
                "the rule allows it without checks".into(),
                Vec::new(),
                0,
            );
        }
        if rule.allow_digests.contains(digest) {
            // A pinned index vouches for its children as a verified one does.
            self.remember(&policy, rule, target, manifest, None).await;
            return decision(
                Outcome::Pinned,
                Some(rule),
                "the digest is pinned in allow_digests".into(),
                Vec::new(),
                0,
            );
        }
        let verification = self.verification(&policy, rule, target, manifest).await;
        match verification {
            Verification::Verified { signers, checked } => {
                let reason = format!(
                    "{} of {} required signers verified",
                    signers.len(),
                    rule.threshold
                );
                decision(Outcome::Verified, Some(rule), reason, signers, checked)
            }
            Verification::Covered { index } => {
                let reason = format!("listed by the verified index {index}");
                decision(Outcome::Covered, Some(rule), reason, Vec::new(), 0)
            }
            Verification::Failed { reason, checked } => {
                let outcome = if mode == Mode::Enforce {
                    Outcome::Denied
                } else {
                    Outcome::Warned
                };
                let reason = match (mode, rule.enforce_from) {
                    (Mode::Warn, Some(_)) => {
                        format!("{reason} (warn only until the rule's enforce_from date)")
                    }
                    _ => reason,
                };
                decision(outcome, Some(rule), reason, Vec::new(), checked)
            }
        }
    }

    /// The verification result for this digest, from the verdict cache or fresh.
    async fn verification(
        &self,
        policy: &Arc<Policy>,
        rule: &Rule,
        target: &Target,
        manifest: &Manifest,
    ) -> Verification {
        let key = verdict_key(policy, target, &manifest.digest);
        if let Some(cached) = self.cache.verdict(&key)
            && let Ok(v) = serde_json::from_slice::<Verification>(&cached)
        {
            return v;
        }
        let fresh = self
            .verify_signatures(policy, rule, target, &manifest.digest)
            .await;
        self.remember(policy, rule, target, manifest, Some(&fresh))
            .await;
        fresh
    }

    /// Cache a verification (if any) and, when the manifest passed (verified
    /// or pinned), the coverage of the children an index lists.
    async fn remember(
        &self,
        policy: &Policy,
        rule: &Rule,
        target: &Target,
        manifest: &Manifest,
        verification: Option<&Verification>,
    ) {
        let encode = |v: &Verification| serde_json::to_vec(v).expect("verdicts serialize");
        let passed = !matches!(verification, Some(Verification::Failed { .. }));
        let mut entries = Vec::new();
        if let Some(v) = verification {
            let ttl = if passed {
                policy.verdict_ttl
            } else {
                policy.failure_ttl
            };
            entries.push((
                verdict_key(policy, target, &manifest.digest),
                ttl,
                encode(v),
            ));
        }
        if passed && !rule.per_platform {
            let covered = Verification::Covered {
                index: manifest.digest.to_string(),
            };
            for child in index_children(manifest) {
                entries.push((
                    verdict_key(policy, target, &child),
                    policy.verdict_ttl,
                    encode(&covered),
                ));
            }
        }
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.cache.put_verdicts(entries).await {
            // The verdict stands; it is only not remembered.
            tracing::warn!(error = %crate::error::chain(&e), "could not cache a policy verdict");
        }
    }

    /// Discover and check signatures: legacy `.sig` first, then referrers
    /// (only when the threshold is not met yet).
    async fn verify_signatures(
        &self,
        policy: &Arc<Policy>,
        rule: &Rule,
        target: &Target,
        digest: &Digest,
    ) -> Verification {
        let sigs = match &rule.signature_repository {
            None => target.clone(),
            Some(repo) => match self.router.resolve_image(repo) {
                Ok((t, _)) => t,
                Err(e) => {
                    let e = GateError::SignatureRepository(e);
                    return Verification::Failed {
                        reason: format!(
                            "could not look for signatures: {}",
                            crate::error::chain(&e)
                        ),
                        checked: 0,
                    };
                }
            },
        };
        let mut found = discover::Found::default();
        let mut tally = verify::Tally::default();
        for step in [Step::Legacy, Step::Referrers] {
            let before = found.evidence.len();
            let fetched = match step {
                Step::Legacy => discover::legacy(&self.cache, &sigs, digest, &mut found).await,
                Step::Referrers => {
                    discover::referrers(&self.cache, &sigs, digest, &mut found).await
                }
            };
            if let Err(e) = fetched {
                return Verification::Failed {
                    reason: format!("could not fetch signatures: {}", crate::error::chain(&e)),
                    checked: tally.checked(),
                };
            }
            // Cryptography is CPU work: keep it off the async threads.
            let fresh: Vec<discover::Evidence> = found.evidence[before..].to_vec();
            let (p, name, d) = (policy.clone(), rule.name.clone(), digest.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let rule = p
                    .rule_index(&name)
                    .map(|i| &p.rules[i])
                    .expect("the rule is in its policy");
                fresh
                    .iter()
                    .map(|e| verify::check(e, &d, &rule.signers))
                    .collect::<Vec<_>>()
            })
            .await;
            match checked {
                Ok(checked) => checked
                    .into_iter()
                    .for_each(|c| tally.add(&rule.signers, c)),
                Err(e) => {
                    return Verification::Failed {
                        reason: format!("signature verification failed to run: {e}"),
                        checked: tally.checked(),
                    };
                }
            }
            if tally.distinct() >= rule.threshold {
                return Verification::Verified {
                    signers: tally.signers(),
                    checked: tally.checked(),
                };
            }
        }
        Verification::Failed {
            reason: tally.failure_reason(rule.threshold, &found.skipped),
            checked: tally.checked(),
        }
    }

    /// The upstream configuration the policy's patterns resolve against.
    fn upstreams(&self) -> &[UpstreamConfig] {
        &self.upstreams
    }
}

#[derive(Clone, Copy)]
enum Step {
    Legacy,
    Referrers,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn manifest(media_type: &str, json: &str) -> Manifest {
        Manifest {
            digest: Digest::of(Algorithm::Sha256, json.as_bytes()),
            media_type: media_type.into(),
            bytes: bytes::Bytes::from(json.to_owned()),
        }
    }

    #[test]
    fn only_unrunnable_artifacts_are_exempt() {
        let tag = |t: &str| Reference::Tag(t.parse().unwrap());
        let sig = manifest(
            crate::media::OCI_MANIFEST,
            r#"{"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json"}]}"#,
        );
        assert!(exemption(&tag("sha256-abc.sig"), &sig).is_some());
        // A runnable image pushed under a signature-looking tag is still gated.
        let image = manifest(
            crate::media::OCI_MANIFEST,
            r#"{"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip"}]}"#,
        );
        assert!(exemption(&tag("sha256-abc.sig"), &image).is_none());
        let docker = manifest(
            crate::media::DOCKER_MANIFEST,
            r#"{"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip"}]}"#,
        );
        assert!(exemption(&tag("latest"), &docker).is_none());
        let helm = manifest(
            crate::media::OCI_MANIFEST,
            r#"{"layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip"}]}"#,
        );
        assert!(
            exemption(&tag("1.0"), &helm).is_none(),
            "anything that unpacks as tar is gated"
        );
        // Indexes are gated, except the referrers list under its tag.
        let index = manifest(OCI_INDEX, r#"{"manifests":[]}"#);
        assert!(exemption(&tag("latest"), &index).is_none());
        assert!(exemption(&tag("sha256-0123abcd"), &index).is_some());
        assert!(exemption(&Reference::Digest(index.digest.clone()), &index).is_none());
    }

    #[test]
    fn index_children_are_listed() {
        let d = Digest::of(Algorithm::Sha256, b"child");
        let index = manifest(
            OCI_INDEX,
            &format!(r#"{{"manifests":[{{"digest":"{d}"}},{{"digest":"junk"}}]}}"#),
        );
        assert_eq!(index_children(&index), vec![d]);
    }
}

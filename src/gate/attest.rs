//! Verifying a rule's attestation requirements for one digest.
//!
//! Attestations are found in both formats, each on its own so that junk in
//! one never masks a valid one in the other: cosign's legacy
//! `<alg>-<hex>.att` tag (every DSSE envelope layer) and Sigstore bundles
//! attached as referrers ([`discover`]), up to the policy's
//! `max_attestations` per format and `max_attestation_size` bytes each.
//! Then, off the async threads, each envelope counts for a requirement only
//! when: its payload type is in-toto; its signature verifies with one of the
//! requirement's signers (the same checks as image signatures, in
//! [`verify`]); the statement, parsed strictly only then, has the
//! requirement's predicate type (the `predicateType` annotation and the
//! payload's unverified claim only sort envelopes, they never make one
//! count) and names the digest being served; every CEL condition is true
//! (an evaluation error counts as false); and, with `max_age`, the
//! attestation's own time (from the predicate, where its type defines one,
//! else the signature's verified time) plus `max_age` is not past. A
//! requirement passes with `threshold` distinct signers. The report says,
//! for each requirement, what was found and why it failed, and until when
//! the passing ones stay fresh. This module must not cache anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Verification;
use super::discover::{self, Caps, Found};
use super::source::Source;
use super::statement::{self, Head, PAYLOAD_TYPE, Statement};
use super::tally::Tally;
use super::verify::{self, Checked, Purpose};
use crate::digest::Digest;
use crate::media::ArtifactLayer;
use crate::policy::{Attestation, Policy, Signer};
use crate::router::Target;

/// How far past now an attestation's own time may be (clock skew).
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Reasons kept in one requirement's detail.
const MAX_DETAILS: usize = 2;

/// The result of one requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationResult {
    pub name: String,
    pub predicate_type: String,
    pub passed: bool,
    /// What was found, who signed it, and why it failed.
    pub detail: String,
    /// Signers whose attestation passed.
    pub signers: Vec<String>,
}

impl AttestationResult {
    /// The form used in refusals: `attestation "scan" (URI): detail`.
    pub fn describe(&self) -> String {
        format!(
            "attestation {:?} ({}): {}",
            self.name, self.predicate_type, self.detail
        )
    }
}

/// Every requirement's result.
#[derive(Debug)]
pub struct Report {
    pub results: Vec<AttestationResult>,
    /// When the first passing requirement with `max_age` stops passing.
    pub fresh_until: Option<SystemTime>,
    /// Envelopes examined.
    pub checked: usize,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.passed)
    }

    /// The verification of an image whose signature passed (by `signers`,
    /// `checked` signatures examined) and whose attestations are this report.
    pub fn with_signature(self, signers: Vec<String>, checked: usize) -> Verification {
        let checked = checked + self.checked;
        let Some(failed) = self.results.iter().find(|r| !r.passed) else {
            return Verification::Verified {
                signers,
                checked,
                attestations: self.results,
                fresh_until: self.fresh_until.map(super::unix_secs),
            };
        };
        let requirement = Some(failed.name.clone());
        let failing: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(AttestationResult::describe)
            .collect();
        Verification::Failed {
            reason: failing.join("; "),
            checked,
            signers,
            requirement,
            attestations: self.results,
        }
    }

    /// Every requirement failed for the same reason.
    pub fn failed_all(attestations: &[Attestation], why: &str) -> Report {
        Report {
            results: attestations
                .iter()
                .map(|a| AttestationResult {
                    name: a.name.clone(),
                    predicate_type: a.predicate_type.clone(),
                    passed: false,
                    detail: why.to_owned(),
                    signers: Vec::new(),
                })
                .collect(),
            fresh_until: None,
            checked: 0,
        }
    }
}

/// Discover the attestations of `digest` in `sigs` and check them against
/// the requirements of rule number `rule`, at `now`.
pub async fn verify(
    source: &dyn Source,
    policy: &Arc<Policy>,
    rule: usize,
    sigs: &Target,
    digest: &Digest,
    now: SystemTime,
) -> Report {
    let attestations = &policy.rules[rule].attestations;
    let caps = Caps {
        count: policy.max_attestations,
        size: policy.max_attestation_size,
    };
    let mut found = Found::default();
    let legacy = discover::legacy(
        source,
        sigs,
        digest,
        ArtifactLayer::DsseEnvelope,
        caps,
        &mut found,
    )
    .await;
    let referrers = discover::referrers(source, sigs, digest, caps, &mut found).await;
    if let Err(e) = legacy.and(referrers) {
        let why = format!("could not fetch attestations: {}", crate::error::chain(&e));
        return Report::failed_all(attestations, &why);
    }
    let (p, d) = (policy.clone(), digest.clone());
    let checked = tokio::task::spawn_blocking(move || evaluate(&p, rule, &found, &d, now)).await;
    checked.unwrap_or_else(|e| {
        Report::failed_all(
            attestations,
            &format!("attestation verification failed to run: {e}"),
        )
    })
}

/// What one requirement gathered.
#[derive(Default)]
struct Gathered {
    /// Envelopes claiming its predicate type.
    found: usize,
    /// Signers whose signature verified, passing or not (described).
    signed: Vec<String>,
    /// Passing envelopes, by signer.
    tally: Tally,
    /// (signing identity, fresh until) of each passing envelope.
    fresh: Vec<(String, Option<SystemTime>)>,
    /// Why signed envelopes failed.
    failures: Vec<String>,
    /// Why envelopes were not signed by a required signer.
    unsigned: Vec<String>,
}

/// How a signer appears after "signed by".
fn signer_name(signer: &Signer, identity: &str) -> String {
    match signer {
        Signer::Key { key, .. } => key.name.clone(),
        Signer::Keyless { .. } | Signer::Notary { .. } => signer.identified(identity),
    }
}

/// The CEL timestamp for a moment.
fn cel_time(t: SystemTime) -> cel::Value {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let utc = chrono::DateTime::from_timestamp(secs, since.subsec_nanos()).unwrap_or_default();
    cel::Value::Timestamp(utc.fixed_offset())
}

/// Check a verified statement against a requirement: `Ok(fresh until)`.
fn judge(
    a: &Attestation,
    st: &Statement,
    signed_at: Option<SystemTime>,
    now: SystemTime,
) -> Result<Option<SystemTime>, String> {
    if !a.conditions.is_empty() {
        // Only what the conditions read is converted: `statement` holds the
        // predicate again, and a large SBOM costs more to convert than to parse.
        let uses = |v: &str| {
            a.conditions
                .iter()
                .any(|c| c.program.references().has_variable(v))
        };
        let mut ctx = cel::Context::default();
        if uses("predicate") {
            ctx.add_variable_from_value("predicate", statement::to_cel(&st.predicate));
        }
        if uses("statement") {
            ctx.add_variable_from_value("statement", statement::to_cel(&st.raw));
        }
        ctx.add_variable_from_value("now", cel_time(now));
        for (j, c) in a.conditions.iter().enumerate() {
            let n = j + 1;
            match c.program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    return Err(format!("condition {n} false: {}", c.source));
                }
                Ok(other) => {
                    return Err(format!(
                        "condition {n} is {:?}, not true or false, so counts as false: {}",
                        other.type_of(),
                        c.source
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "condition {n} could not be evaluated ({e}), so counts as false: {}",
                        c.source
                    ));
                }
            }
        }
    }
    let Some(max_age) = a.max_age else {
        return Ok(None);
    };
    let age_text = a.max_age_text.as_deref().unwrap_or("");
    let (word, time) = match st.time()? {
        Some((field, t)) => (
            if field.ends_with("timestamp") || field.ends_with("created") {
                "created"
            } else {
                "finished"
            },
            t,
        ),
        None => match signed_at {
            Some(t) => ("signed", t),
            None => {
                return Err(format!(
                    "no trustworthy time, so max_age {age_text} cannot be met: the predicate states none and the signature has no verified time (a transparency-log entry or RFC 3161 timestamp)"
                ));
            }
        },
    };
    let shown = statement::format_time(time);
    if now.checked_add(MAX_SKEW).is_some_and(|limit| time > limit) {
        return Err(format!("{word} {shown}: in the future"));
    }
    match time.checked_add(max_age) {
        Some(until) if now > until => Err(format!("too old: {word} {shown}, max_age {age_text}")),
        until => Ok(until),
    }
}

/// Check every envelope found against every requirement of rule `rule`.
fn evaluate(
    policy: &Policy,
    rule: usize,
    found: &Found,
    subject: &Digest,
    now: SystemTime,
) -> Report {
    let rule = &policy.rules[rule];
    let reqs = &rule.attestations;
    let mut gathered: Vec<Gathered> = reqs.iter().map(|_| Gathered::default()).collect();
    let mut unusable: Vec<String> = found.skipped.clone();
    let mut other_types: Vec<String> = Vec::new();
    for e in &found.evidence {
        let (payload_type, payload) = match verify::dsse_payload(e) {
            Ok(p) => p,
            Err(why) => {
                unusable.push(format!("{}: {why}", e.origin()));
                continue;
            }
        };
        if payload_type != PAYLOAD_TYPE {
            unusable.push(format!(
                "{}: payload type {payload_type:?}, not an in-toto statement",
                e.origin()
            ));
            continue;
        }
        let claimed = match Head::parse(&payload) {
            Ok(head) => head.predicate_type,
            Err(why) => {
                unusable.push(format!("{}: {why}", e.origin()));
                continue;
            }
        };
        let wanted: Vec<usize> = (0..reqs.len())
            .filter(|&i| reqs[i].predicate_type == claimed)
            .collect();
        if wanted.is_empty() {
            if !other_types.contains(&claimed) {
                other_types.push(claimed);
            }
            continue;
        }
        // One signature check per signer set (the rule's, or a requirement's own).
        let mut checks: HashMap<Option<usize>, Checked> = HashMap::new();
        let mut parsed: Option<Result<Statement, String>> = None;
        for i in wanted {
            let a = &reqs[i];
            let signers = a.signers(&rule.signers);
            let g = &mut gathered[i];
            g.found += 1;
            let checked = checks
                .entry(a.signers.as_ref().map(|_| i))
                .or_insert_with(|| verify::check(e, subject, signers, Purpose::Attachment));
            if checked.matched.is_empty() {
                g.unsigned.push(
                    checked
                        .rejection
                        .clone()
                        .unwrap_or_else(|| format!("{}: signed by no required signer", e.origin())),
                );
                continue;
            }
            for (s, identity) in &checked.matched {
                let name = signer_name(&signers[*s], identity);
                if !g.signed.contains(&name) {
                    g.signed.push(name);
                }
            }
            let st = parsed.get_or_insert_with(|| {
                let st = Statement::parse(&payload).map_err(|e| crate::error::chain(&e))?;
                if st.predicate_type != claimed {
                    return Err("the statement's predicate type is not what it claims".into());
                }
                if !st.names(subject) {
                    return Err("the statement is about another image".into());
                }
                Ok(st)
            });
            let st = match st {
                Ok(st) => st,
                Err(why) => {
                    g.failures.push(format!("{}: {why}", e.origin()));
                    continue;
                }
            };
            match judge(a, st, checked.time, now) {
                Ok(until) => {
                    for (_, identity) in &checked.matched {
                        g.fresh.push((identity.clone(), until));
                    }
                    g.tally.add(
                        signers,
                        Checked {
                            matched: checked.matched.clone(),
                            ..Checked::default()
                        },
                    );
                }
                Err(why) => g.failures.push(why),
            }
        }
    }
    let mut fresh_until: Option<SystemTime> = None;
    let results = reqs
        .iter()
        .zip(gathered)
        .map(|(a, g)| {
            let passed = g.tally.distinct() >= a.threshold;
            if passed && a.max_age.is_some() {
                // The threshold-th freshest signer's best attestation.
                let mut best: HashMap<&str, Option<SystemTime>> = HashMap::new();
                for (identity, until) in &g.fresh {
                    let e = best.entry(identity.as_str()).or_insert(*until);
                    *e = match (*e, *until) {
                        (Some(x), Some(y)) => Some(x.max(y)),
                        _ => None,
                    };
                }
                let mut untils: Vec<Option<SystemTime>> = best.into_values().collect();
                // `None` (no end) sorts last in reverse: put it first.
                untils.sort_by(|x, y| match (x, y) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, _) => std::cmp::Ordering::Less,
                    (_, None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => y.cmp(x),
                });
                if let Some(Some(until)) = untils.get(a.threshold - 1) {
                    fresh_until = Some(fresh_until.map_or(*until, |f| f.min(*until)));
                }
            }
            let detail = if g.found == 0 {
                let mut d = "none found".to_owned();
                let mut notes = Vec::new();
                if !other_types.is_empty() {
                    notes.push(format!(
                        "attestations of other types: {}",
                        other_types.join(", ")
                    ));
                }
                notes.extend(unusable.iter().take(MAX_DETAILS).cloned());
                if !notes.is_empty() {
                    d.push_str(&format!(" ({})", notes.join("; ")));
                }
                d
            } else {
                let who = if g.signed.is_empty() {
                    "signed by no required signer".to_owned()
                } else {
                    format!("signed by {}", g.signed.join(", "))
                };
                let mut d = format!("{} found, {who}", g.found);
                if passed {
                    d.push_str(", passed");
                } else {
                    let mut reasons: Vec<&str> = Vec::new();
                    for r in g.failures.iter().chain(&g.unsigned) {
                        if reasons.len() < MAX_DETAILS && !reasons.contains(&r.as_str()) {
                            reasons.push(r);
                        }
                    }
                    if reasons.is_empty() || a.threshold > 1 {
                        d.push_str(&format!(
                            ", {} of {} required signers passed",
                            g.tally.distinct(),
                            a.threshold
                        ));
                    }
                    for r in reasons {
                        d.push_str(", ");
                        d.push_str(r);
                    }
                }
                d
            };
            AttestationResult {
                name: a.name.clone(),
                predicate_type: a.predicate_type.clone(),
                passed,
                detail,
                signers: if passed {
                    g.tally.signers()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    Report {
        results,
        fresh_until,
        checked: found.evidence.len(),
    }
}

//! Attestation requirements (`[[rule.attestations]]`): the format as
//! written and its validation into [`Attestation`].
//!
//! Owns the predicate-type short names (as `cosign attest --type` writes
//! them), the compilation of every CEL condition at load (a syntax error is
//! a policy error naming the key), and `max_age`. This module must not
//! fetch, verify or evaluate anything.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::file::{RawSigner, invalid, signer};
use super::{PolicyError, PublicKey, Root, Signer};
use crate::config::units::parse_duration;

/// cosign's short names for predicate types, and the URI each stands for.
pub const SHORT_NAMES: &[(&str, &str)] = &[
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
];

/// Conditions in one requirement, at most.
const MAX_CONDITIONS: usize = 64;
/// Longest condition accepted, in bytes.
const MAX_CONDITION_LEN: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAttestation {
    name: Option<String>,
    #[serde(rename = "type")]
    predicate_type: String,
    signers: Option<Vec<RawSigner>>,
    threshold: Option<usize>,
    #[serde(default)]
    conditions: Vec<String>,
    max_age: Option<String>,
}

/// A compiled CEL condition.
pub struct Condition {
    /// The expression as written (for messages).
    pub source: String,
    pub program: cel::Program,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// One `[[rule.attestations]]`: an attestation of `predicate_type`, signed
/// by `threshold` distinct signers, whose conditions hold and which is no
/// older than `max_age`.
#[derive(Debug)]
pub struct Attestation {
    /// Used in messages, audit lines and metrics (default: the type as written).
    pub name: String,
    /// The full predicate type URI.
    pub predicate_type: String,
    /// Its own signers; `None` means the rule's.
    pub signers: Option<Vec<Signer>>,
    pub threshold: usize,
    pub conditions: Vec<Condition>,
    pub max_age: Option<Duration>,
    /// `max_age` as written, for messages.
    pub max_age_text: Option<String>,
}

impl Attestation {
    /// The signers whose attestations count: its own, or the rule's.
    pub fn signers<'a>(&'a self, rule_signers: &'a [Signer]) -> &'a [Signer] {
        self.signers.as_deref().unwrap_or(rule_signers)
    }
}

/// The full URI for a `type` as written: a short name, or a URI as it is.
fn predicate_type(at: &str, written: &str) -> Result<String, PolicyError> {
    if let Some((_, uri)) = SHORT_NAMES.iter().find(|(n, _)| *n == written) {
        return Ok((*uri).to_owned());
    }
    let is_uri = written.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            && !rest.is_empty()
    }) && !written.chars().any(char::is_whitespace);
    if is_uri {
        Ok(written.to_owned())
    } else {
        let names: Vec<&str> = SHORT_NAMES.iter().map(|(n, _)| *n).collect();
        Err(invalid(
            format!("{at}.type"),
            format!(
                "{written:?} is neither a predicate type URI nor one of cosign's short names ({})",
                names.join(", ")
            ),
        ))
    }
}

/// Validate a rule's attestation requirements. `rule_signers` is how many
/// signers the rule lists.
pub(super) fn attestations(
    at: &str,
    raw: Vec<RawAttestation>,
    rule_signers: usize,
    keys: &HashMap<String, Arc<PublicKey>>,
    roots: &HashMap<String, Arc<Root>>,
) -> Result<Vec<Attestation>, PolicyError> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let aat = format!("{at}.attestations[{i}]");
        let predicate_type = predicate_type(&aat, &a.predicate_type)?;
        let name = a.name.unwrap_or_else(|| a.predicate_type.clone());
        if name.trim().is_empty() {
            return Err(invalid(format!("{aat}.name"), "must not be empty"));
        }
        if name == "signature" || name == "-" {
            return Err(invalid(
                format!("{aat}.name"),
                format!(
                    "{name:?} is reserved (it names the image signature, or nothing, in metrics)"
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                format!("{aat}.name"),
                format!("another attestation of this rule is named {name:?}: give each a name"),
            ));
        }
        let signers = match a.signers {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    format!("{aat}.signers"),
                    "an empty list: leave it out to use the rule's signers",
                ));
            }
            Some(list) => {
                let mut seen = HashSet::new();
                let mut signers = Vec::with_capacity(list.len());
                for (j, s) in list.into_iter().enumerate() {
                    let sat = format!("{aat}.signers[{j}]");
                    let (signer, identity) = signer(&sat, s, keys, roots)?;
                    if !seen.insert(identity) {
                        return Err(invalid(sat, "the same signer is listed twice"));
                    }
                    signers.push(signer);
                }
                Some(signers)
            }
        };
        let available = signers.as_ref().map_or(rule_signers, Vec::len);
        if available == 0 {
            return Err(invalid(
                format!("{aat}.signers"),
                "the rule has no signers: name this attestation's own",
            ));
        }
        let threshold = a.threshold.unwrap_or(1);
        if threshold == 0 {
            return Err(invalid(format!("{aat}.threshold"), "must be at least 1"));
        }
        if threshold > available {
            return Err(invalid(
                format!("{aat}.threshold"),
                format!(
                    "{threshold} distinct signers can never verify: only {available} are listed"
                ),
            ));
        }
        if a.conditions.len() > MAX_CONDITIONS {
            return Err(invalid(
                format!("{aat}.conditions"),
                format!(
                    "{} conditions; at most {MAX_CONDITIONS}",
                    a.conditions.len()
                ),
            ));
        }
        let mut conditions = Vec::with_capacity(a.conditions.len());
        for (j, source) in a.conditions.into_iter().enumerate() {
            let cat = format!("{aat}.conditions[{j}]");
            if source.len() > MAX_CONDITION_LEN {
                return Err(invalid(
                    cat,
                    format!("{} bytes; at most {MAX_CONDITION_LEN}", source.len()),
                ));
            }
            let program = cel::Program::compile(&source)
                .map_err(|e| invalid(cat.clone(), format!("not a valid CEL expression: {e}")))?;
            let refs = program.references();
            if let Some(unknown) = refs
                .variables()
                .into_iter()
                .find(|v| !matches!(*v, "predicate" | "statement" | "now"))
            {
                return Err(invalid(
                    cat,
                    format!(
                        "unknown variable {unknown:?}: the variables are predicate, statement and now"
                    ),
                ));
            }
            conditions.push(Condition { source, program });
        }
        let max_age = match &a.max_age {
            None => None,
            Some(text) => {
                let d = parse_duration(text).map_err(|source| PolicyError::Unit {
                    key: format!("{aat}.max_age"),
                    source,
                })?;
                if d.is_zero() {
                    return Err(invalid(format!("{aat}.max_age"), "must be more than zero"));
                }
                Some(d)
            }
        };
        out.push(Attestation {
            name,
            predicate_type,
            signers,
            threshold,
            conditions,
            max_age,
            max_age_text: a.max_age,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_uris() {
        assert_eq!(
            predicate_type("a", "cyclonedx").unwrap(),
            "https://cyclonedx.org/bom"
        );
        assert_eq!(
            predicate_type("a", "slsaprovenance1").unwrap(),
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(
            predicate_type("a", "https://example.com/p/v1").unwrap(),
            "https://example.com/p/v1"
        );
        for bad in ["sbom", "", "cyclone dx", ":x", "https:"] {
            let e = predicate_type("rule[0] (r).attestations[0]", bad).unwrap_err();
            assert!(
                e.to_string().contains("rule[0] (r).attestations[0].type"),
                "{bad}: {e}"
            );
        }
    }
}

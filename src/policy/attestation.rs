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

/// The variables a condition binds in macros (`x` in `list.exists(x, ...)`):
/// they are not free variables. Only used to catch misspelt variables at
/// load; an unknown variable at evaluation is an error, which counts as false.
fn bound_variables(source: &str) -> Vec<String> {
    static MACRO: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = MACRO.get_or_init(|| {
        regex::Regex::new(
            r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,",
        )
        .expect("the macro pattern compiles")
    });
    re.captures_iter(source).map(|c| c[1].to_owned()).collect()
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
                    if s.is_notary() {
                        return Err(invalid(
                            sat,
                            "Docker Content Trust signs tags, not attestations: name a key or keyless signer",
                        ));
                    }
                    let (signer, identity) = signer(&sat, s, keys, roots, &HashMap::new())?;
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
            let bound = bound_variables(&source);
            if let Some(unknown) = refs.variables().into_iter().find(|v| {
                !matches!(*v, "predicate" | "statement" | "now") && !bound.iter().any(|b| b == v)
            }) {
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

    /// Load `rules` with a `release` key beside them.
    fn load(rules: &str) -> Result<super::super::Policy, PolicyError> {
        const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4Zgzr/fRStByQK5DFDJt4UTRUJr/\nvXpNRuIsqYshN9A5xPRd45PFexybsF3GBGqhslKg+xLVzFh8rLnLAzhMcA==\n-----END PUBLIC KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("release.pub"), KEY).unwrap();
        let upstreams = crate::config::Config::parse(
            "[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\ndefault = true\n",
            "t",
            std::path::Path::new("/"),
        )
        .unwrap()
        .upstreams;
        let text = format!("{rules}\n[keys.release]\npublic_key = \"release.pub\"\n");
        super::super::Policy::parse(&text, &dir.path().join("policy.toml"), &upstreams)
    }

    const RULE: &str =
        "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{ key = \"release\" }]\n";

    #[test]
    fn requirements_load_with_defaults() {
        let p = load(&format!(
            "{RULE}[[rule.attestations]]\ntype = \"vuln\"\nmax_age = \"7d\"\nconditions = [\"predicate.x.exists(v, v == now)\"]\n[[rule.attestations]]\nname = \"prov\"\ntype = \"https://slsa.dev/provenance/v1\"\nthreshold = 1\nsigners = [{{ key = \"release\" }}]\n"
        ))
        .unwrap();
        let a = &p.rules[0].attestations;
        assert_eq!(a[0].name, "vuln");
        assert_eq!(
            a[0].predicate_type,
            "https://cosign.sigstore.dev/attestation/vuln/v1"
        );
        assert_eq!(a[0].max_age, Some(Duration::from_secs(7 * 86_400)));
        assert!(a[0].signers.is_none());
        assert_eq!(a[1].name, "prov");
        assert_eq!(a[1].signers.as_ref().map(Vec::len), Some(1));
        // Attestations alone, each with its own signers.
        let p = load(
            "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\n[[rule.attestations]]\ntype = \"spdx\"\nsigners = [{ key = \"release\" }]\n",
        )
        .unwrap();
        assert!(p.rules[0].signers.is_empty());
    }

    #[test]
    fn errors_name_their_key() {
        let att = |body: &str| format!("{RULE}[[rule.attestations]]\n{body}\n");
        let cases = [
            (att("type = \"sbom\""), "rule[0] (r).attestations[0].type: \"sbom\" is neither"),
            (
                att("type = \"vuln\"\nconditions = [\"predicate.x ==\"]"),
                "rule[0] (r).attestations[0].conditions[0]: not a valid CEL expression",
            ),
            (
                att("type = \"vuln\"\nconditions = [\"predicat.x == 1\"]"),
                "conditions[0]: unknown variable \"predicat\"",
            ),
            (att("type = \"vuln\"\nmax_age = \"soon\""), "attestations[0].max_age"),
            (att("type = \"vuln\"\nthreshold = 2"), "attestations[0].threshold: 2 distinct signers"),
            (att("type = \"vuln\"\nsigners = []"), "attestations[0].signers: an empty list"),
            (att("type = \"vuln\"\nname = \"signature\""), "is reserved"),
            (
                att("type = \"vuln\"\n[[rule.attestations]]\ntype = \"vuln\""),
                "attestations[1].name: another attestation",
            ),
            (att("type = \"vuln\"\ncondition = []"), "unknown field `condition`"),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\n[[rule.attestations]]\ntype = \"vuln\"\n".to_owned(),
                "attestations[0].signers: the rule has no signers",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nmode = \"allow\"\n[[rule.attestations]]\ntype = \"vuln\"\nsigners = [{ key = \"release\" }]\n".to_owned(),
                "rule[0] (r).attestations: mode = \"allow\"",
            ),
            ("max_attestations = 0\n".to_owned(), "max_attestations: 0"),
            ("max_attestation_size = \"1GiB\"\n".to_owned(), "max_attestation_size: 1GiB"),
        ];
        for (policy, expected) in cases {
            let e = load(&policy).expect_err(&policy);
            let m = crate::error::chain(&e);
            assert!(
                m.contains(expected),
                "policy:\n{policy}\nerror: {m}\nexpected: {expected}"
            );
        }
    }

    #[test]
    fn macro_variables_are_bound() {
        assert_eq!(
            bound_variables("p.a.exists(c, c.x) && p.b.all( v ,v > 1) && p.c.map(x, x)"),
            ["c", "v", "x"]
        );
    }

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

//! The signature policy: which images must be signed, by whom, and what
//! happens otherwise.
//!
//! Owns the policy file format (a contract with the docs and tests), its
//! validation into typed values (keys and trusted roots are parsed here, so a
//! bad policy is refused as a whole), the fingerprint that keys cached
//! verdicts, and rule selection: **the first rule in file order whose
//! `images` match the normalized reference applies**; no match means
//! `default`. This module must not fetch or verify anything.

pub mod attestation;
mod file;
mod notary;
pub mod pattern;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::DerPublicKey;

use crate::config::UpstreamConfig;
use crate::config::units::UnitError;
use crate::digest::Digest;
pub use attestation::{Attestation, Condition};
pub use pattern::{ImagePattern, Matcher, PatternError};

/// Why a policy was refused. Every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid policy")]
    Syntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    #[error("{key}: cannot read {path}")]
    File {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: invalid public key in {path}")]
    Key {
        key: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{key}: invalid trusted root in {path}")]
    Root {
        key: String,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{key}: invalid pattern")]
    Pattern {
        key: String,
        #[source]
        source: PatternError,
    },
    #[error("{key}: invalid value")]
    Unit {
        key: String,
        #[source]
        source: UnitError,
    },
}

/// What to do with an image no rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    Deny,
    Warn,
    Allow,
}

/// How a rule acts on what it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve only what verifies.
    Enforce,
    /// Verify, serve anyway, and warn.
    Warn,
    /// Serve without checks.
    Allow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Allow => "allow",
        }
    }
}

/// Whether a key signer's signatures need a transparency-log proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tlog {
    /// Accepted with or without; a proof that is present must verify (when
    /// the policy has any root to check it with).
    Optional,
    Required,
}

/// A named trusted root (Fulcio CAs, Rekor keys, CT logs, TSAs), with its
/// verifier prepared at load (which also checks the trust material).
pub struct Root {
    pub name: String,
    pub trusted_root: TrustedRoot,
    pub verifier: sigstore_verify::Verifier,
}

impl fmt::Debug for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Root({})", self.name)
    }
}

/// A named cosign public key.
pub struct PublicKey {
    pub name: String,
    pub der: DerPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.name)
    }
}

/// Claims from a Fulcio certificate's GitHub workflow extensions, matched exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowClaims {
    /// e.g. `acme/app`
    pub repository: Option<String>,
    /// e.g. `refs/heads/main`
    pub git_ref: Option<String>,
    /// e.g. `push`
    pub trigger: Option<String>,
}

/// A Notary v1 server named in the policy (`[notary.NAME]`).
#[derive(Debug)]
pub struct NotaryServer {
    pub name: String,
    /// URL, TLS trust and credentials, as for an upstream.
    pub transport: UpstreamConfig,
    /// How a normalized reference maps to a GUN (`{registry}`, `{repository}`).
    pub gun: String,
}

impl NotaryServer {
    /// The GUN of `registry`/`repository`.
    pub fn gun(&self, registry: &str, repository: &str) -> String {
        self.gun
            .replace("{registry}", registry)
            .replace("{repository}", repository)
    }
}

/// Who may sign.
#[derive(Debug)]
pub enum Signer {
    Key {
        key: Arc<PublicKey>,
        tlog: Tlog,
        /// The roots whose transparency-log keys check a proof: the one the
        /// signer names, or every root in the policy. A proof present must
        /// verify against one of them.
        roots: Vec<Arc<Root>>,
    },
    Keyless {
        root: Arc<Root>,
        issuer: Matcher,
        subject: Matcher,
        workflow: WorkflowClaims,
    },
    /// Docker Content Trust: the tag signed in a Notary v1 repository whose
    /// root is the pinned key.
    Notary {
        server: Arc<NotaryServer>,
        /// The pinned root key (`[keys.NAME]`).
        root: Arc<PublicKey>,
        pinned: crate::notary::tuf::PublicKey,
        /// The roles that count (empty: `targets` and every delegation).
        delegations: Vec<String>,
    },
}

impl Signer {
    /// How the signer appears in reasons and audit lines.
    pub fn describe(&self) -> String {
        match self {
            Signer::Key { key, .. } => format!("key {}", key.name),
            Signer::Keyless {
                issuer, subject, ..
            } => format!("keyless {subject} from {issuer}"),
            Signer::Notary {
                server,
                root,
                delegations,
                ..
            } => {
                let mut s = format!("notary {} (root {})", server.name, root.name);
                if !delegations.is_empty() {
                    s.push_str(&format!(" in {}", delegations.join(" or ")));
                }
                s
            }
        }
    }

    pub fn is_notary(&self) -> bool {
        matches!(self, Signer::Notary { .. })
    }

    /// How the signer appears once it verified: a key by its description, a
    /// keyless signer with the identity that signed.
    pub fn identified(&self, identity: &str) -> String {
        match self {
            Signer::Key { .. } | Signer::Notary { .. } => self.describe(),
            Signer::Keyless { .. } => format!("{} ({identity})", self.describe()),
        }
    }
}

/// A list of signers in a policy: a rule's (by index), or the own list of
/// one of its attestation requirements (rule, attestation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignerSet {
    Rule(usize),
    Attestation(usize, usize),
}

/// One `[[rule]]`.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub images: Vec<ImagePattern>,
    pub mode: Mode,
    /// Before this moment an enforce rule behaves as warn.
    pub enforce_from: Option<SystemTime>,
    /// Distinct signers that must verify.
    pub threshold: usize,
    pub signers: Vec<Signer>,
    pub allow_digests: HashSet<Digest>,
    /// Each child of an index needs its own signature.
    pub per_platform: bool,
    /// Where signatures are stored, when not beside the image (`registry/repository`).
    pub signature_repository: Option<String>,
    /// Attestations that must verify besides the signature (an empty
    /// `signers` means only the attestations are required).
    pub attestations: Vec<Attestation>,
}

impl Rule {
    /// Does a notary signer count toward this rule's threshold? (Its
    /// verdicts then depend on the tag asked for.)
    pub fn has_notary(&self) -> bool {
        self.signers.iter().any(Signer::is_notary)
    }

    /// The mode in effect at `now` (an enforce rule before `enforce_from` warns).
    pub fn mode_at(&self, now: SystemTime) -> Mode {
        match (self.mode, self.enforce_from) {
            (Mode::Enforce, Some(from)) if now < from => Mode::Warn,
            (m, _) => m,
        }
    }

    pub fn matches(&self, reference: &str) -> bool {
        self.images.iter().any(|p| p.matches(reference))
    }
}

/// A validated policy.
#[derive(Debug)]
pub struct Policy {
    pub default: Default,
    pub rules: Vec<Rule>,
    /// How long a passing verdict is reused.
    pub verdict_ttl: Duration,
    /// How long a failing verdict is reused (short: a new signature should be seen soon).
    pub failure_ttl: Duration,
    /// Attestations read for one image, at most (per format).
    pub max_attestations: usize,
    /// Largest attestation (DSSE envelope or bundle) read, in bytes.
    pub max_attestation_size: u64,
    /// sha256 over the policy file and every file it references.
    pub fingerprint: String,
    /// The policy file and the files it references (watched for changes).
    pub files: Vec<PathBuf>,
}

impl Policy {
    /// Load and validate a policy file. `upstreams` resolve registry aliases
    /// in patterns to the canonical names references use.
    pub fn load(path: &Path, upstreams: &[UpstreamConfig]) -> Result<Policy, PolicyError> {
        file::load(path, upstreams)
    }

    /// Validate policy text as if it were the file `path` (the files it
    /// names resolve against `path`'s directory).
    pub fn parse(
        text: &str,
        path: &Path,
        upstreams: &[UpstreamConfig],
    ) -> Result<Policy, PolicyError> {
        file::parse(text, path, upstreams)
    }

    /// The rule for a normalized reference: the first match in file order.
    pub fn rule_for(&self, reference: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(reference))
    }

    /// The signers of a [`SignerSet`].
    pub fn signers(&self, set: SignerSet) -> &[Signer] {
        match set {
            SignerSet::Rule(r) => &self.rules[r].signers,
            SignerSet::Attestation(r, a) => {
                self.rules[r].attestations[a].signers(&self.rules[r].signers)
            }
        }
    }

    /// The signer lists that vouch for signature and attestation artifacts
    /// stored in `reference`: those of [`Policy::artifact_rules`], each
    /// rule's own and then its attestations' own (empty lists left out).
    pub fn artifact_signers(&self, reference: &str) -> Vec<SignerSet> {
        self.artifact_rules(reference)
            .into_iter()
            .flat_map(|r| {
                let rule = &self.rules[r];
                std::iter::once(SignerSet::Rule(r)).chain(
                    (0..rule.attestations.len())
                        .filter(|&a| rule.attestations[a].signers.is_some())
                        .map(move |a| SignerSet::Attestation(r, a)),
                )
            })
            .filter(|&set| !self.signers(set).is_empty())
            .collect()
    }

    /// The rules whose signers vouch for signature artifacts stored in
    /// `reference`: the rule it matches, then every rule whose
    /// `signature_repository` it is (indexes into `rules`, rules with
    /// signers of their own or of their attestations only).
    pub fn artifact_rules(&self, reference: &str) -> Vec<usize> {
        let own = self.rules.iter().position(|r| r.matches(reference));
        own.into_iter()
            .chain(
                self.rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.signature_repository.as_deref() == Some(reference))
                    .map(|(i, _)| i),
            )
            .filter(|&i| {
                let r = &self.rules[i];
                !r.signers.is_empty() || r.attestations.iter().any(|a| a.signers.is_some())
            })
            .fold(Vec::new(), |mut v, i| {
                if !v.contains(&i) {
                    v.push(i);
                }
                v
            })
    }

    /// The position of the rule named `name`.
    pub fn rule_index(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.name == name)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse `YYYY-MM-DD` as midnight UTC.
pub fn parse_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month[m as usize - 1] {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    let secs = u64::try_from(days).ok()? * 86_400;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(SystemTime::UNIX_EPOCH));
        let d = parse_date("2026-12-15").unwrap();
        assert_eq!(
            d.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_797_292_800
        );
        assert!(parse_date("2024-02-29").is_some());
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-1",
            "2026/01/01",
            "20260101",
            "2026-00-10",
            "2026-04-31",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
    }
}

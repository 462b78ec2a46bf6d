//! The policy file as written, and its validation into [`Policy`].
//!
//! Paths inside are relative to the policy file. Every error names its key,
//! e.g. `rule[0] (acme-apps).signers[1].keyless.subject_regex`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::Digest as _;
use sigstore_verify::crypto::KeyAlgorithm;
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::DerPublicKey;

use super::attestation::{RawAttestation, attestations};
use super::{
    Default, ImagePattern, Matcher, Mode, Policy, PolicyError, PublicKey, Root, Rule, Signer, Tlog,
    WorkflowClaims, parse_date,
};
use crate::config::UpstreamConfig;
use crate::config::units::{parse_duration, parse_size};
use crate::reference::{RegistryHost, RepoName};

const DEFAULT_VERDICT_TTL: &str = "1h";
const DEFAULT_FAILURE_TTL: &str = "30s";
/// Attestations read for one image, by default.
pub const DEFAULT_MAX_ATTESTATIONS: usize = 32;
/// Largest attestation read, by default: SBOMs run to megabytes.
const DEFAULT_MAX_ATTESTATION_SIZE: &str = "16MiB";
/// The caps cannot be raised past these.
const MAX_ATTESTATIONS_LIMIT: usize = 256;
const MAX_ATTESTATION_SIZE_LIMIT: u64 = 256 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<String>,
    verdict_ttl: Option<String>,
    failure_ttl: Option<String>,
    max_attestations: Option<usize>,
    max_attestation_size: Option<String>,
    #[serde(default)]
    keys: BTreeMap<String, RawKey>,
    #[serde(default)]
    roots: BTreeMap<String, RawRoot>,
    #[serde(default)]
    notary: BTreeMap<String, super::notary::RawNotary>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    public_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    trusted_root: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    images: Vec<String>,
    mode: Option<String>,
    enforce_from: Option<toml::Value>,
    threshold: Option<usize>,
    #[serde(default)]
    signers: Vec<RawSigner>,
    #[serde(default)]
    allow_digests: Vec<String>,
    #[serde(default)]
    per_platform: bool,
    signature_repository: Option<String>,
    #[serde(default)]
    attestations: Vec<RawAttestation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigner {
    key: Option<String>,
    tlog: Option<String>,
    root: Option<String>,
    keyless: Option<RawKeyless>,
    notary: Option<super::notary::RawNotarySigner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyless {
    root: String,
    issuer: Option<String>,
    issuer_regex: Option<String>,
    subject: Option<String>,
    subject_regex: Option<String>,
    github_workflow_repository: Option<String>,
    github_workflow_ref: Option<String>,
    github_workflow_trigger: Option<String>,
}

impl RawSigner {
    pub(super) fn is_notary(&self) -> bool {
        self.notary.is_some()
    }
}

pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

pub(super) fn read(key: &str, path: PathBuf) -> Result<(PathBuf, Vec<u8>), PolicyError> {
    match std::fs::read(&path) {
        Ok(b) => Ok((path, b)),
        Err(source) => Err(PolicyError::File {
            key: key.to_owned(),
            path,
            source,
        }),
    }
}

/// Collects the bytes the fingerprint covers, in a fixed order.
pub(super) struct Fingerprint(sha2::Sha256, Vec<PathBuf>);

impl Fingerprint {
    pub(super) fn add(&mut self, label: &str, path: &Path, bytes: &[u8]) {
        self.0.update((label.len() as u64).to_be_bytes());
        self.0.update(label.as_bytes());
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self.1.push(path.to_owned());
    }
}

pub(super) fn load(path: &Path, upstreams: &[UpstreamConfig]) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, upstreams)
}

/// Validate policy text as if read from `path` (files it names resolve
/// against `path`'s directory).
pub(super) fn parse(
    text: &str,
    path: &Path,
    upstreams: &[UpstreamConfig],
) -> Result<Policy, PolicyError> {
    let text = text.to_owned();
    let raw: RawPolicy = toml::from_str(&text).map_err(|source| PolicyError::Syntax {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let mut fp = Fingerprint(sha2::Sha256::new(), Vec::new());
    fp.add("policy", path, text.as_bytes());

    let default = match raw.default.as_deref().unwrap_or("deny") {
        "deny" => Default::Deny,
        "warn" => Default::Warn,
        "allow" => Default::Allow,
        other => {
            return Err(invalid(
                "default",
                format!("{other:?}: use \"deny\", \"warn\" or \"allow\""),
            ));
        }
    };
    let ttl = |key: &str, v: Option<&str>, d: &str| {
        parse_duration(v.unwrap_or(d)).map_err(|source| PolicyError::Unit {
            key: key.to_owned(),
            source,
        })
    };
    let verdict_ttl = ttl(
        "verdict_ttl",
        raw.verdict_ttl.as_deref(),
        DEFAULT_VERDICT_TTL,
    )?;
    let failure_ttl = ttl(
        "failure_ttl",
        raw.failure_ttl.as_deref(),
        DEFAULT_FAILURE_TTL,
    )?;

    let max_attestations = raw.max_attestations.unwrap_or(DEFAULT_MAX_ATTESTATIONS);
    if max_attestations == 0 || max_attestations > MAX_ATTESTATIONS_LIMIT {
        return Err(invalid(
            "max_attestations",
            format!("{max_attestations}: give 1 to {MAX_ATTESTATIONS_LIMIT}"),
        ));
    }
    let size = raw
        .max_attestation_size
        .as_deref()
        .unwrap_or(DEFAULT_MAX_ATTESTATION_SIZE);
    let max_attestation_size = parse_size(size).map_err(|source| PolicyError::Unit {
        key: "max_attestation_size".into(),
        source,
    })?;
    if max_attestation_size == 0 || max_attestation_size > MAX_ATTESTATION_SIZE_LIMIT {
        return Err(invalid(
            "max_attestation_size",
            format!("{size}: give more than 0 and at most 256MiB"),
        ));
    }

    let mut keys = HashMap::new();
    for (name, k) in &raw.keys {
        let key = format!("keys.{name}.public_key");
        let (file, bytes) = read(&key, resolve(&k.public_key))?;
        fp.add(&key, &file, &bytes);
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| PolicyError::Key {
            key: key.clone(),
            path: file.clone(),
            source,
        };
        let pem = String::from_utf8(bytes).map_err(|e| bad(Box::new(e)))?;
        let der = DerPublicKey::from_pem(&pem).map_err(|e| bad(Box::new(e)))?;
        match KeyAlgorithm::from_spki(&der).map_err(|e| bad(Box::new(e)))? {
            KeyAlgorithm::EcdsaP256
            | KeyAlgorithm::EcdsaP384
            | KeyAlgorithm::Ed25519
            | KeyAlgorithm::Rsa => {}
            other => {
                return Err(invalid(
                    key,
                    format!(
                        "{other:?} keys are not supported: use ECDSA P-256/P-384, Ed25519 or RSA"
                    ),
                ));
            }
        }
        keys.insert(
            name.clone(),
            Arc::new(PublicKey {
                name: name.clone(),
                der,
            }),
        );
    }

    let mut roots = HashMap::new();
    for (name, r) in &raw.roots {
        let key = format!("roots.{name}.trusted_root");
        let (file, bytes) = read(&key, resolve(&r.trusted_root))?;
        fp.add(&key, &file, &bytes);
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| PolicyError::Root {
            key: key.clone(),
            path: file.clone(),
            source,
        };
        let json = String::from_utf8(bytes).map_err(|e| bad(Box::new(e)))?;
        let trusted_root = TrustedRoot::from_json(&json).map_err(|e| bad(Box::new(e)))?;
        let verifier =
            sigstore_verify::Verifier::new(&trusted_root).map_err(|e| bad(Box::new(e)))?;
        roots.insert(
            name.clone(),
            Arc::new(Root {
                name: name.clone(),
                trusted_root,
                verifier,
            }),
        );
    }

    let notaries = super::notary::servers(raw.notary, base, &resolve, &mut fp)?;

    let canonical = super::pattern::canonical_in(upstreams);
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = format!("rule[{i}] ({})", r.name);
        if r.name.trim().is_empty() {
            return Err(invalid(format!("rule[{i}].name"), "must not be empty"));
        }
        if !names.insert(r.name.clone()) {
            return Err(invalid(
                format!("{at}.name"),
                "another rule has the same name",
            ));
        }
        rules.push(rule(&at, r, &keys, &roots, &notaries, &canonical)?);
    }
    let fingerprint = fp.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Policy {
        default,
        rules,
        verdict_ttl,
        failure_ttl,
        max_attestations,
        max_attestation_size,
        fingerprint,
        files: fp.1,
    })
}

fn rule(
    at: &str,
    r: RawRule,
    keys: &HashMap<String, Arc<PublicKey>>,
    roots: &HashMap<String, Arc<Root>>,
    notaries: &HashMap<String, Arc<super::NotaryServer>>,
    canonical: &dyn Fn(&str) -> Option<(String, bool)>,
) -> Result<Rule, PolicyError> {
    if r.images.is_empty() {
        return Err(invalid(
            format!("{at}.images"),
            "list at least one image pattern",
        ));
    }
    let images = r
        .images
        .iter()
        .map(|p| ImagePattern::parse(p, canonical))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PolicyError::Pattern {
            key: format!("{at}.images"),
            source,
        })?;
    let mode = match r.mode.as_deref().unwrap_or("enforce") {
        "enforce" => Mode::Enforce,
        "warn" => Mode::Warn,
        "allow" => Mode::Allow,
        other => {
            return Err(invalid(
                format!("{at}.mode"),
                format!("{other:?}: use \"enforce\", \"warn\" or \"allow\""),
            ));
        }
    };
    let enforce_from = match &r.enforce_from {
        None => None,
        Some(v) => {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Datetime(d) if d.time.is_none() && d.offset.is_none() => d.to_string(),
                _ => String::new(),
            };
            let when = parse_date(&text).ok_or_else(|| {
                invalid(
                    format!("{at}.enforce_from"),
                    "write a date as \"YYYY-MM-DD\" (midnight UTC)",
                )
            })?;
            if mode != Mode::Enforce {
                return Err(invalid(
                    format!("{at}.enforce_from"),
                    "only applies to mode = \"enforce\"",
                ));
            }
            Some(when)
        }
    };
    let mut signers = Vec::with_capacity(r.signers.len());
    let mut seen = HashSet::new();
    for (j, s) in r.signers.into_iter().enumerate() {
        let sat = format!("{at}.signers[{j}]");
        let (signer, identity) = signer(&sat, s, keys, roots, notaries)?;
        if !seen.insert(identity) {
            return Err(invalid(
                sat,
                "the same signer is listed twice: it would count once toward threshold",
            ));
        }
        signers.push(signer);
    }
    let threshold = r.threshold.unwrap_or(1);
    if threshold == 0 {
        return Err(invalid(format!("{at}.threshold"), "must be at least 1"));
    }
    if !signers.is_empty() && threshold > signers.len() {
        return Err(invalid(
            format!("{at}.threshold"),
            format!(
                "{threshold} distinct signers can never verify: only {} are listed",
                signers.len()
            ),
        ));
    }
    let allow_digests = r
        .allow_digests
        .iter()
        .map(|d| d.parse())
        .collect::<Result<HashSet<_>, _>>()
        .map_err(|e| invalid(format!("{at}.allow_digests"), format!("{e}")))?;
    let attestations = attestations(
        at,
        r.attestations,
        // Notary signers sign tags, never attestations.
        signers.iter().filter(|s| !s.is_notary()).count(),
        keys,
        roots,
    )?;
    if mode == Mode::Allow && !attestations.is_empty() {
        return Err(invalid(
            format!("{at}.attestations"),
            "mode = \"allow\" serves without checks: its attestations would never be checked",
        ));
    }
    if mode != Mode::Allow
        && signers.is_empty()
        && allow_digests.is_empty()
        && attestations.is_empty()
    {
        return Err(invalid(
            format!("{at}.signers"),
            format!(
                "mode = \"{}\" needs signers (or allow_digests): as written nothing could ever pass",
                mode.as_str()
            ),
        ));
    }
    let signature_repository = match r.signature_repository {
        None => None,
        Some(s) => Some(signature_repo(
            &format!("{at}.signature_repository"),
            &s,
            canonical,
        )?),
    };
    Ok(Rule {
        name: r.name,
        images,
        mode,
        enforce_from,
        threshold,
        signers,
        allow_digests,
        per_platform: r.per_platform,
        signature_repository,
        attestations,
    })
}

fn signature_repo(
    key: &str,
    s: &str,
    canonical: &dyn Fn(&str) -> Option<(String, bool)>,
) -> Result<String, PolicyError> {
    let bad = || {
        invalid(
            key,
            format!("{s:?}: write registry/repository, e.g. \"ghcr.io/acme/signatures\""),
        )
    };
    let (host, repo) = s.split_once('/').ok_or_else(bad)?;
    let host: RegistryHost = host.parse().map_err(|_| bad())?;
    let repo: RepoName = repo.parse().map_err(|_| bad())?;
    let (name, hub) = canonical(host.as_str()).ok_or_else(|| {
        invalid(
            key,
            format!("registry {host} is not an [[upstream]] in the main configuration"),
        )
    })?;
    let repo = if hub && !repo.as_str().contains('/') {
        repo.with_prefix("library").map_err(|_| bad())?
    } else {
        repo
    };
    Ok(format!("{name}/{repo}"))
}

/// A validated signer and a string that identifies it (for duplicate detection).
pub(super) fn signer(
    at: &str,
    s: RawSigner,
    keys: &HashMap<String, Arc<PublicKey>>,
    roots: &HashMap<String, Arc<Root>>,
    notaries: &HashMap<String, Arc<super::NotaryServer>>,
) -> Result<(Signer, String), PolicyError> {
    if let Some(n) = s.notary {
        if s.key.is_some() || s.keyless.is_some() || s.tlog.is_some() || s.root.is_some() {
            return Err(invalid(
                at,
                "a notary signer is notary = { server, root, delegations } alone",
            ));
        }
        return super::notary::signer(&format!("{at}.notary"), n, keys, notaries);
    }
    let find_root = |key: String, name: &str| {
        roots
            .get(name)
            .cloned()
            .ok_or_else(|| invalid(key, format!("no [roots.{name}] in this policy")))
    };
    match (s.key, s.keyless) {
        (Some(name), None) => {
            let key = keys.get(&name).cloned().ok_or_else(|| {
                invalid(
                    format!("{at}.key"),
                    format!("no [keys.{name}] in this policy"),
                )
            })?;
            let tlog = match s.tlog.as_deref().unwrap_or("optional") {
                "optional" => Tlog::Optional,
                "required" => Tlog::Required,
                other => {
                    return Err(invalid(
                        format!("{at}.tlog"),
                        format!("{other:?}: use \"optional\" or \"required\""),
                    ));
                }
            };
            let roots: Vec<Arc<Root>> = match s.root {
                Some(r) => vec![find_root(format!("{at}.root"), &r)?],
                None => {
                    let mut all: Vec<Arc<Root>> = roots.values().cloned().collect();
                    all.sort_by(|a, b| a.name.cmp(&b.name));
                    all
                }
            };
            if tlog == Tlog::Required && roots.is_empty() {
                return Err(invalid(
                    format!("{at}.root"),
                    "tlog = \"required\" needs a trusted root whose transparency log keys check the proof: add a [roots.NAME]",
                ));
            }
            Ok((Signer::Key { key, tlog, roots }, format!("key:{name}")))
        }
        (None, Some(k)) => {
            if s.tlog.is_some() || s.root.is_some() {
                return Err(invalid(
                    at,
                    "tlog and root belong to key signers; a keyless signer names its root inside keyless = { ... }",
                ));
            }
            let kat = format!("{at}.keyless");
            let root = find_root(format!("{kat}.root"), &k.root)?;
            let pick = |exact: Option<String>,
                        re: Option<String>,
                        field: &str|
             -> Result<Matcher, PolicyError> {
                match (exact, re) {
                    (Some(e), None) => Ok(Matcher::Exact(e)),
                    (None, Some(r)) => Matcher::regex(&r).map_err(|source| PolicyError::Pattern {
                        key: format!("{kat}.{field}_regex"),
                        source,
                    }),
                    _ => Err(invalid(
                        kat.clone(),
                        format!("give exactly one of {field} or {field}_regex"),
                    )),
                }
            };
            let issuer = pick(k.issuer, k.issuer_regex, "issuer")?;
            let subject = pick(k.subject, k.subject_regex, "subject")?;
            let workflow = WorkflowClaims {
                repository: k.github_workflow_repository,
                git_ref: k.github_workflow_ref,
                trigger: k.github_workflow_trigger,
            };
            let identity = format!("keyless:{}:{issuer:?}:{subject:?}:{workflow:?}", k.root);
            Ok((
                Signer::Keyless {
                    root,
                    issuer,
                    subject,
                    workflow,
                },
                identity,
            ))
        }
        _ => Err(invalid(
            at,
            "give exactly one of key = \"...\", keyless = { ... } or notary = { ... }",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn upstreams() -> Vec<UpstreamConfig> {
        Config::parse(
            "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\naliases = [\"index.docker.io\"]\ndefault = true\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\n",
            "t",
            Path::new("/"),
        )
        .unwrap()
        .upstreams
    }

    /// A P-256 public key (SPKI PEM).
    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4Zgzr/fRStByQK5DFDJt4UTRUJr/\nvXpNRuIsqYshN9A5xPRd45PFexybsF3GBGqhslKg+xLVzFh8rLnLAzhMcA==\n-----END PUBLIC KEY-----\n";
    /// An Ed25519 public key (SPKI PEM).
    const ED25519_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAD2M15emq4J12T4BSvYi155KKE+M/jGeN83chJGk3WME=\n-----END PUBLIC KEY-----\n";

    fn load_text(policy: &str) -> Result<Policy, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("release.pub"), KEY).unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, policy).unwrap();
        load(&path, &upstreams())
    }

    fn message(e: &PolicyError) -> String {
        crate::error::chain(e)
    }

    const BASE: &str = "[keys.release]\npublic_key = \"release.pub\"\n";

    #[test]
    fn a_keyed_policy_loads_and_first_match_wins() {
        let p = load_text(&format!(
            r#"default = "deny"
[[rule]]
name = "acme"
images = ["ghcr.io/acme/**"]
signers = [{{ key = "release" }}]
[[rule]]
name = "everything-on-ghcr"
images = ["ghcr.io/**"]
mode = "allow"
[[rule]]
name = "alpine"
images = ["index.docker.io/alpine"]
mode = "warn"
allow_digests = ["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]
{BASE}"#
        ))
        .unwrap();
        assert_eq!(p.default, Default::Deny);
        assert_eq!(p.rule_for("ghcr.io/acme/app").unwrap().name, "acme");
        assert_eq!(
            p.rule_for("ghcr.io/other/app").unwrap().name,
            "everything-on-ghcr"
        );
        assert_eq!(
            p.rule_for("docker.io/library/alpine").unwrap().name,
            "alpine"
        );
        assert!(p.rule_for("evil.io/ghcr.io/acme/app").is_none());
        assert_eq!(p.fingerprint.len(), 64);
        assert_eq!(p.files.len(), 2, "the policy and the key it references");
    }

    #[test]
    fn fingerprint_covers_referenced_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, format!("{BASE}[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{{ key = \"release\" }}]\n")).unwrap();
        std::fs::write(dir.path().join("release.pub"), KEY).unwrap();
        let a = load(&path, &upstreams()).unwrap().fingerprint;
        std::fs::write(dir.path().join("release.pub"), ED25519_KEY).unwrap();
        let b = load(&path, &upstreams()).unwrap().fingerprint;
        assert_ne!(a, b, "changing a key file must change the fingerprint");
    }

    #[test]
    fn enforce_from_turns_enforce_into_warn_until_the_date() {
        let p = load_text(&format!(
            "{BASE}[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{{ key = \"release\" }}]\nenforce_from = \"2026-12-15\"\n"
        ))
        .unwrap();
        let r = &p.rules[0];
        let before = parse_date("2026-12-14").unwrap();
        let after = parse_date("2026-12-15").unwrap();
        assert_eq!(r.mode_at(before), Mode::Warn);
        assert_eq!(r.mode_at(after), Mode::Enforce);
        // TOML's own date type works too.
        let p = load_text(&format!(
            "{BASE}[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{{ key = \"release\" }}]\nenforce_from = 2026-12-15\n"
        ))
        .unwrap();
        assert_eq!(p.rules[0].enforce_from, Some(after));
    }

    #[test]
    fn errors_name_their_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\n",
                "rule[0] (r).signers: mode = \"enforce\" needs signers",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"alpine\"]\nmode = \"allow\"\n",
                "rule[0] (r).images: invalid pattern",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{ key = \"nope\" }]\n",
                "rule[0] (r).signers[0].key: no [keys.nope]",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{ key = \"release\" }, { key = \"release\" }]\n",
                "the same signer is listed twice",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nthreshold = 2\nsigners = [{ key = \"release\" }]\n",
                "rule[0] (r).threshold: 2 distinct signers can never verify",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{ key = \"release\", tlog = \"required\" }]\n",
                "rule[0] (r).signers[0].root: tlog = \"required\" needs",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{ keyless = { root = \"x\", issuer = \"i\", subject = \"s\" } }]\n",
                "keyless.root: no [roots.x]",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nmode = \"allow\"\nenforce_from = \"2026-13-01\"\n",
                "rule[0] (r).enforce_from",
            ),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nsigners = [{ key = \"release\" }]\nsignature_repository = \"quay.io/sigs\"\n",
                "quay.io is not an [[upstream]]",
            ),
            ("default = \"maybe\"\n", "default: \"maybe\""),
            (
                "[[rule]]\nname = \"r\"\nimages = [\"ghcr.io/**\"]\nmode = \"allow\"\nunknown = 1\n",
                "unknown",
            ),
            (
                "[keys.bad]\npublic_key = \"missing.pub\"\n",
                "keys.bad.public_key: cannot read",
            ),
            (
                "[roots.pg]\ntrusted_root = \"release.pub\"\n",
                "roots.pg.trusted_root: invalid trusted root",
            ),
        ];
        for (policy, expected) in cases {
            let text = format!("{policy}\n{BASE}");
            let e = load_text(&text).expect_err(policy);
            let m = message(&e);
            assert!(
                m.contains(expected),
                "policy:\n{policy}\nerror: {m}\nexpected: {expected}"
            );
        }
    }

    #[test]
    fn keyless_regexes_are_anchored_and_need_issuer_and_subject() {
        let dir = tempfile::tempdir().unwrap();
        let root = r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}"#;
        std::fs::write(dir.path().join("root.json"), root).unwrap();
        let path = dir.path().join("p.toml");
        let write = |s: &str| {
            std::fs::write(&path, format!("[roots.r]\ntrusted_root = \"root.json\"\n[[rule]]\nname = \"k\"\nimages = [\"ghcr.io/**\"]\nsigners = [{{ keyless = {{ root = \"r\", {s} }} }}]\n")).unwrap()
        };
        write(
            r#"issuer = "https://token.actions.githubusercontent.com", subject_regex = "https://github\\.com/acme/.*""#,
        );
        let p = load(&path, &upstreams()).unwrap();
        let Signer::Keyless { subject, .. } = &p.rules[0].signers[0] else {
            panic!()
        };
        assert!(subject.matches("https://github.com/acme/x"));
        assert!(!subject.matches("x https://github.com/acme/x"));
        write(r#"issuer = "i""#);
        assert!(
            message(&load(&path, &upstreams()).unwrap_err())
                .contains("exactly one of subject or subject_regex")
        );
        write(r#"issuer = "i", issuer_regex = "j", subject = "s""#);
        assert!(
            message(&load(&path, &upstreams()).unwrap_err())
                .contains("exactly one of issuer or issuer_regex")
        );
    }
}

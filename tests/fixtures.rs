//! The policy gate against real signature artifacts: signatures made by real
//! cosign (and skopeo) against the production Sigstore instance, collected in
//! the shared fixture corpus (`/work/shared/fixtures`, see its `INDEX.md`
//! and each case's `SOURCE.txt` for what must pass or fail and why).
//!
//! Every test loads a real policy file (written into a tempdir, pointing at
//! the fixture keys and trusted roots by absolute path), turns the fixture
//! files into the [`Evidence`] discovery would produce from a `.sig`
//! manifest's layers or a bundle referrer, and runs exactly what the gate
//! runs: [`verify::check`] per piece of evidence, [`Tally`] across them, and
//! `distinct() >= threshold`. All of it is offline: no network is touched.
//!
//! The corpus is read at run time from `$PORTCULLIS_FIXTURES`, or
//! `../shared/fixtures` next to the crate; it is never copied into the repo.
//! If it is missing, every test fails saying so.
//!
//! Cases covered: `image-cosign-legacy/*` (all 15) and `image-sigstore-bundle/*`
//! (both). The private-PKI case (`dir-img-cosign-pki-valid`) carries no
//! transparency-log entry, which portcullis requires of every certificate;
//! its test pins that refusal rather than the upstream PASS.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::Digest as _;

use portcullis::config::{Config, UpstreamConfig};
use portcullis::digest::{Algorithm, Digest};
use portcullis::gate::discover::{Evidence, Found, SIMPLE_SIGNING};
use portcullis::gate::verify::{self, Tally};
use portcullis::policy::{Policy, Rule};

// ---------------------------------------------------------------------------
// Locating the corpus
// ---------------------------------------------------------------------------

/// The fixture corpus, or a panic that says how to provide it.
fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (dir, from) = match std::env::var_os("PORTCULLIS_FIXTURES") {
            Some(d) => (PathBuf::from(d), "$PORTCULLIS_FIXTURES"),
            None => (
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
                "the default location (set PORTCULLIS_FIXTURES to override)",
            ),
        };
        assert!(
            dir.join("INDEX.md").is_file(),
            "the signature fixture corpus is missing: no INDEX.md in {} (from {from}). \
             These tests need the real cosign/Sigstore artifacts; CI provides them. \
             Point PORTCULLIS_FIXTURES at the corpus directory.",
            dir.display()
        );
        dir.canonicalize().expect("the fixture directory resolves")
    })
}

/// A file or directory in the corpus, which must exist.
fn fixture(rel: &str) -> PathBuf {
    let p = corpus().join(rel);
    assert!(
        p.exists(),
        "fixture {rel} is missing from {}: the corpus is incomplete",
        corpus().display()
    );
    p
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("cannot read fixture {rel}: {e}"))
}

fn read_text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap_or_else(|_| panic!("fixture {rel} is not UTF-8"))
}

const LEGACY: &str = "image-cosign-legacy";
const BUNDLES: &str = "image-sigstore-bundle";
/// Public-good production root with the TSA (timestamp.sigstore.dev).
const PUBLIC_GOOD: &str = "trust-roots/sigstore-rust__public-good-production/trusted_root.json";
/// The older public-good root embedded in sigstore-rs: no timestamp authority.
const PUBLIC_GOOD_NO_TSA: &str = "trust-roots/sigstore-rs__prod/trusted_root.json";

const KEYLESS_CASE: &str = "image-cosign-legacy/connaisseur__testimage-keyless";
const KEYLESS_DIGEST: &str =
    "sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee";
const GITHUB_OAUTH: &str = "https://github.com/login/oauth";
const PHILIPP: &str = "philipp.belitz@securesystems.de";

const KUBEWARDEN: &str =
    "image-sigstore-bundle/sigstore-rs__kubewarden-controller-v1.34.0-cosign-v3";
const KUBEWARDEN_DIGEST: &str =
    "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const ACTIONS: &str = "https://token.actions.githubusercontent.com";
const KUBEWARDEN_WORKFLOW: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

fn upstreams() -> Vec<UpstreamConfig> {
    Config::parse(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n",
        "t",
        Path::new("/"),
    )
    .expect("the test configuration parses")
    .upstreams
}

/// A TOML string literal for a path.
fn toml_path(p: &Path) -> String {
    let s = p.to_str().expect("fixture paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A policy being written: `[keys]`, `[roots]` and one rule for `docker.io/**`.
struct PolicyText {
    dir: tempfile::TempDir,
    text: String,
}

impl PolicyText {
    fn new() -> PolicyText {
        PolicyText {
            dir: tempfile::tempdir().expect("a tempdir"),
            text: String::new(),
        }
    }

    /// `[keys.NAME]` with a fixture public key (all fixture keys are already
    /// PEM SPKI "PUBLIC KEY" files, so no conversion is needed).
    fn key(mut self, name: &str, rel: &str) -> Self {
        self.text += &format!("[keys.{name}]\npublic_key = {}\n", toml_path(&fixture(rel)));
        self
    }

    /// `[roots.NAME]` with a fixture trusted root.
    fn root(mut self, name: &str, rel: &str) -> Self {
        self.text += &format!(
            "[roots.{name}]\ntrusted_root = {}\n",
            toml_path(&fixture(rel))
        );
        self
    }

    /// `[roots.NAME]` with a trusted root built by the test (written into the tempdir).
    fn built_root(mut self, name: &str, root: &Value) -> Self {
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, root.to_string()).expect("write the built root");
        self.text += &format!("[roots.{name}]\ntrusted_root = {}\n", toml_path(&path));
        self
    }

    /// The one rule, enforcing on every docker.io image.
    fn rule(mut self, threshold: usize, signers: &[&str]) -> Self {
        self.text += &format!(
            "[[rule]]\nname = \"fixtures\"\nimages = [\"docker.io/**\"]\nmode = \"enforce\"\nthreshold = {threshold}\nsigners = [\n  {}\n]\n",
            signers.join(",\n  ")
        );
        self
    }

    fn try_load(self) -> Result<Loaded, String> {
        let path = self.dir.path().join("policy.toml");
        std::fs::write(&path, &self.text).expect("write the policy");
        match Policy::load(&path, &upstreams()) {
            Ok(policy) => Ok(Loaded {
                _dir: self.dir,
                policy,
            }),
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg += &format!(": {s}");
                    src = s.source();
                }
                Err(format!("{msg}\n--- policy ---\n{}", self.text))
            }
        }
    }

    fn load(self) -> Loaded {
        self.try_load()
            .unwrap_or_else(|e| panic!("the policy must load: {e}"))
    }
}

struct Loaded {
    _dir: tempfile::TempDir,
    policy: Policy,
}

impl Loaded {
    fn rule(&self) -> &Rule {
        self.policy
            .rule_for("docker.io/library/alpine")
            .expect("the fixture rule matches docker.io")
    }
}

/// A keyless signer entry, exact issuer and subject.
fn keyless(root: &str, issuer: &str, subject: &str) -> String {
    format!("{{ keyless = {{ root = \"{root}\", issuer = {issuer:?}, subject = {subject:?} }} }}")
}

/// A keyless signer entry with arbitrary matcher fields (TOML inline text).
fn keyless_with(root: &str, fields: &str) -> String {
    format!("{{ keyless = {{ root = \"{root}\", {fields} }} }}")
}

/// TOML basic string for a regex (backslashes doubled).
fn re(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\"))
}

// ---------------------------------------------------------------------------
// Trusted roots built from legacy trust material
// ---------------------------------------------------------------------------

/// DER certificates in a PEM file.
fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = None::<String>;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b = body.take().expect("END without BEGIN");
            out.push(STANDARD.decode(b).expect("PEM body is base64"));
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    assert!(!out.is_empty(), "no certificate in PEM");
    out
}

/// DER SPKI of a PEM "PUBLIC KEY".
fn pem_public_key(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    STANDARD.decode(body).expect("PEM body is base64")
}

/// A transparency log entry of a trusted root for a P-256 key (log ID = sha256 of the SPKI).
fn p256_tlog(spki: &[u8]) -> Value {
    json!({
        "baseUrl": "https://rekor.sigstore.dev",
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": STANDARD.encode(spki),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": { "start": "2021-01-12T11:53:27Z" }
        },
        "logId": { "keyId": STANDARD.encode(sha2::Sha256::digest(spki)) }
    })
}

fn trusted_root(cas: Vec<Value>, tlogs: Vec<Value>) -> Value {
    json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": tlogs,
        "certificateAuthorities": cas,
        "ctlogs": [],
        "timestampAuthorities": []
    })
}

fn ca(chain_pem: &str) -> Value {
    let certs: Vec<Value> = pem_certs(chain_pem)
        .iter()
        .map(|c| json!({ "rawBytes": STANDARD.encode(c) }))
        .collect();
    json!({
        "subject": { "organization": "fixture", "commonName": "fixture" },
        "uri": "https://fulcio.sigstore.dev",
        "certChain": { "certificates": certs },
        "validFor": { "start": "2020-01-01T00:00:00Z" }
    })
}

/// A trusted root made only of the legacy public-good material containers/image
/// uses (fulcio-chain = intermediate + root, rekor.pub), built at run time. It
/// lists no CT logs, so SCTs are not checked (as with containers/image).
fn legacy_keys_root() -> Value {
    let dir = "trust-roots/containers-image__legacy-keys";
    trusted_root(
        vec![ca(&read_text(&format!("{dir}/fulcio-chain")))],
        vec![p256_tlog(&pem_public_key(&read_text(&format!(
            "{dir}/rekor.pub"
        ))))],
    )
}

/// The public-good root with its Rekor v1 key replaced by another key under the
/// same log ID: a SET from the real Rekor must then fail to verify.
fn public_good_with_rekor_key(rel_pub: &str) -> Value {
    let mut root: Value = serde_json::from_slice(&read(PUBLIC_GOOD)).expect("root is JSON");
    let wrong = pem_public_key(&read_text(rel_pub));
    let tlogs = root["tlogs"].as_array_mut().expect("tlogs");
    let mut replaced = 0;
    for t in tlogs.iter_mut() {
        if t["baseUrl"] == "https://rekor.sigstore.dev" {
            t["publicKey"]["rawBytes"] = json!(STANDARD.encode(&wrong));
            replaced += 1;
        }
    }
    assert_eq!(replaced, 1, "the public-good root has one Rekor v1 log");
    root
}

// ---------------------------------------------------------------------------
// Evidence, as discovery would build it
// ---------------------------------------------------------------------------

const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

fn digest(s: &str) -> Digest {
    s.parse().expect("a valid digest")
}

/// The digest portcullis would serve for a fixture manifest: sha256 of its bytes.
fn manifest_digest(rel: &str) -> Digest {
    sha256(&read(rel))
}

/// One layer of a `.sig` manifest, before discovery's filtering.
struct Layer {
    media_type: String,
    payload: Vec<u8>,
    annotations: Value,
}

/// What discovery keeps of `.sig` layers: simple-signing layers with a
/// signature annotation become evidence; anything else is skipped (this mirrors
/// `discover::legacy`, which needs a live cache to call directly).
fn discover(layers: Vec<Layer>) -> Found {
    let mut found = Found::default();
    for l in layers {
        let layer = sha256(&l.payload);
        if l.media_type != SIMPLE_SIGNING {
            found.skipped.push(format!(
                ".sig layer {layer} has media type {:?}",
                l.media_type
            ));
            continue;
        }
        let ann = |k: &str| l.annotations[k].as_str().map(str::to_owned);
        let Some(signature) = ann(ANN_SIGNATURE) else {
            found.skipped.push(format!(
                ".sig layer {layer} carries no signature annotation"
            ));
            continue;
        };
        found.evidence.push(Evidence::Legacy {
            layer,
            signature,
            certificate: ann(ANN_CERTIFICATE),
            chain: ann(ANN_CHAIN),
            rekor_bundle: ann(ANN_BUNDLE),
            payload: l.payload.into(),
        });
    }
    found
}

/// Layers of a connaisseur mock-registry `.sig` manifest; payloads come from
/// `blobs/<digest>.json` and must hash to the layer digest (as the cache enforces).
fn sig_manifest(case: &str, sig_manifest: &str) -> Vec<Layer> {
    let m: Value = serde_json::from_slice(&read(&format!("{case}/manifests/{sig_manifest}")))
        .expect("the .sig manifest is JSON");
    m["layers"]
        .as_array()
        .expect("the .sig manifest has layers")
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().expect("layer digest");
            let payload = read(&format!("{case}/blobs/{d}.json"));
            assert_eq!(
                sha256(&payload).to_string(),
                d,
                "payload blob hashes to its digest"
            );
            Layer {
                media_type: l["mediaType"].as_str().unwrap_or_default().to_owned(),
                payload,
                annotations: l["annotations"].clone(),
            }
        })
        .collect()
}

/// A containers/image `dir:` signature file: `\0sigstore-json\n` + JSON
/// `{mimeType, payload (base64), annotations}` = one `.sig` layer.
fn dir_signature(rel: &str) -> Layer {
    let bytes = read(rel);
    let json = bytes
        .strip_prefix(b"\0sigstore-json\n")
        .unwrap_or_else(|| panic!("{rel} is not a containers/image sigstore signature"));
    let v: Value = serde_json::from_slice(json).expect("signature JSON");
    Layer {
        media_type: v["mimeType"].as_str().expect("mimeType").to_owned(),
        payload: STANDARD
            .decode(v["payload"].as_str().expect("payload"))
            .expect("payload is base64"),
        annotations: v["annotations"].clone(),
    }
}

/// Every `signature-N` of a containers/image case, in order.
fn dir_signatures(case: &str) -> Vec<Layer> {
    let mut out = Vec::new();
    for n in 1.. {
        let rel = format!("{case}/signature-{n}");
        if !corpus().join(&rel).exists() {
            break;
        }
        out.push(dir_signature(&rel));
    }
    assert!(!out.is_empty(), "{case} has no signature-N file");
    out
}

/// The connaisseur keyless case's one signature layer.
fn keyless_evidence() -> Found {
    discover(sig_manifest(
        KEYLESS_CASE,
        "sha256-31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee.sig.json",
    ))
}

/// A bundle attached as a referrer (the referrer manifest's digest is only used in reasons).
fn bundle(rel: &str) -> Found {
    let json = read(rel);
    Found {
        evidence: vec![Evidence::Bundle {
            manifest: sha256(format!("referrer of {rel}").as_bytes()),
            json: json.into(),
        }],
        skipped: Vec::new(),
    }
}

fn kubewarden_bundle() -> Found {
    bundle(&format!("{KUBEWARDEN}/bundle_v03.json"))
}

/// Drop annotations from every legacy evidence (to take a piece of a signature away).
fn without(mut found: Found, annotation: &str) -> Found {
    for e in &mut found.evidence {
        if let Evidence::Legacy {
            certificate,
            chain,
            rekor_bundle,
            ..
        } = e
        {
            match annotation {
                ANN_CERTIFICATE => *certificate = None,
                ANN_CHAIN => *chain = None,
                ANN_BUNDLE => *rekor_bundle = None,
                other => panic!("unknown annotation {other}"),
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Running the gate
// ---------------------------------------------------------------------------

/// What the gate would decide for one digest.
struct Verdict {
    verified: bool,
    distinct: usize,
    threshold: usize,
    signers: Vec<String>,
    /// The refusal message (meaningful when not verified).
    reason: String,
    /// Each piece of evidence's rejection, if it satisfied no signer.
    rejections: Vec<String>,
    checked: usize,
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verified={} distinct={}/{} signers={:?} checked={}\n  reason: {}\n  rejections: {:#?}",
            self.verified,
            self.distinct,
            self.threshold,
            self.signers,
            self.checked,
            self.reason,
            self.rejections
        )
    }
}

/// Check every piece of evidence against the rule and tally, exactly as the gate does.
fn gate(rule: &Rule, served: &Digest, found: &Found) -> Verdict {
    let mut tally = Tally::default();
    let mut rejections = Vec::new();
    for e in &found.evidence {
        let checked = verify::check(e, served, &rule.signers);
        if let Some(r) = &checked.rejection {
            rejections.push(r.clone());
        }
        tally.add(&rule.signers, checked);
    }
    let distinct = tally.distinct();
    Verdict {
        verified: distinct >= rule.threshold,
        distinct,
        threshold: rule.threshold,
        signers: tally.signers(),
        reason: tally.failure_reason(rule.threshold, &found.skipped),
        rejections,
        checked: tally.checked(),
    }
}

#[track_caller]
fn assert_verified(v: &Verdict) {
    assert!(v.verified, "expected to pass the gate: {v:?}");
    assert!(v.distinct >= v.threshold, "{v:?}");
}

#[track_caller]
fn assert_refused(v: &Verdict, because: &str) {
    assert!(!v.verified, "expected the gate to refuse: {v:?}");
    assert!(v.distinct < v.threshold, "{v:?}");
    assert!(
        v.reason.contains(because),
        "the refusal should say {because:?}: {v:?}"
    );
}

// ===========================================================================
// image-cosign-legacy: keyless (Fulcio certificate + Rekor SET)
// ===========================================================================

/// connaisseur keyless: a May 2024 public-good signature verifies with no
/// network, against a trusted root file, for the right email and issuer.
#[test]
fn keyless_legacy_signature_from_public_good_verifies_offline() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, PHILIPP)])
        .load();
    let v = gate(p.rule(), &digest(KEYLESS_DIGEST), &keyless_evidence());
    assert_verified(&v);
    assert_eq!(v.distinct, 1);
    assert!(
        v.signers.iter().any(|s| s.contains(PHILIPP)),
        "the audit line names the verified identity: {v:?}"
    );
}

/// The digest is the sha256 of the exact manifest bytes served for the tag.
#[test]
fn keyless_legacy_signature_names_the_served_manifest_bytes() {
    let served = manifest_digest(&format!("{KEYLESS_CASE}/manifests/keyless.json"));
    assert_eq!(served, digest(KEYLESS_DIGEST));
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, PHILIPP)])
        .load();
    assert_verified(&gate(p.rule(), &served, &keyless_evidence()));
}

/// The older sigstore-rs production root (no TSA) is enough for a legacy SET.
#[test]
fn keyless_legacy_signature_verifies_with_the_sigstore_rs_production_root() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD_NO_TSA)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, PHILIPP)])
        .load();
    assert_verified(&gate(
        p.rule(),
        &digest(KEYLESS_DIGEST),
        &keyless_evidence(),
    ));
}

/// connaisseur's negative: issuer Google / subject bob@gmail.com must not match.
#[test]
fn keyless_legacy_signature_is_refused_for_another_identity() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[&keyless(
                "pg",
                "https://accounts.google.com",
                "bob@gmail.com",
            )],
        )
        .load();
    let v = gate(p.rule(), &digest(KEYLESS_DIGEST), &keyless_evidence());
    assert_refused(&v, "does not match");
    assert!(v.reason.contains("issuer"), "{v:?}");
}

/// Right issuer, wrong email: the subject check alone refuses.
#[test]
fn keyless_legacy_signature_is_refused_for_another_subject_from_the_same_issuer() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, "bob@gmail.com")])
        .load();
    let v = gate(p.rule(), &digest(KEYLESS_DIGEST), &keyless_evidence());
    assert_refused(&v, "does not match");
    assert!(
        v.reason.contains(PHILIPP),
        "names the actual subject: {v:?}"
    );
}

/// A valid keyless signature for image A does not let image B through.
#[test]
fn keyless_legacy_signature_is_refused_for_another_image() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, PHILIPP)])
        .load();
    let other = manifest_digest(&format!(
        "{LEGACY}/containers-image__dir-img-cosign-valid/manifest.json"
    ));
    let v = gate(p.rule(), &other, &keyless_evidence());
    assert_refused(&v, "signed for another image");
}

/// A keyless signature is not a key signature, even for a key that exists.
#[test]
fn keyless_legacy_signature_does_not_satisfy_a_key_signer() {
    let p = PolicyText::new()
        .key(
            "alice",
            &format!("{LEGACY}/connaisseur__testimage-multi-cosigned-alice/alice.key"),
        )
        .rule(1, &[r#"{ key = "alice" }"#])
        .load();
    let v = gate(p.rule(), &digest(KEYLESS_DIGEST), &keyless_evidence());
    assert_refused(&v, "carries a certificate");
}

/// containers-image fulcio-rekor-valid (Jan 2023): passes with public-good
/// trust for mitr@redhat.com / GitHub OAuth.
#[test]
fn keyless_fulcio_rekor_signature_verifies_with_public_good_root() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_verified(&v);
    assert!(v.signers[0].contains("mitr@redhat.com"), "{v:?}");
}

/// The same signature verifies against a root built only from the legacy
/// trust material containers/image names (Fulcio chain PEM + rekor.pub).
#[test]
fn keyless_fulcio_rekor_signature_verifies_with_legacy_pem_trust_material() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .built_root("legacy", &legacy_keys_root())
        .rule(1, &[&keyless("legacy", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    assert_verified(&gate(p.rule(), &served, &discover(dir_signatures(&case))));
}

/// Upstream negative: email this-does-not-match@example.com.
#[test]
fn keyless_fulcio_rekor_signature_is_refused_for_another_email() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[&keyless(
                "pg",
                GITHUB_OAUTH,
                "this-does-not-match@example.com",
            )],
        )
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_refused(&v, "does not match");
    assert!(v.reason.contains("mitr@redhat.com"), "{v:?}");
}

/// Upstream negative: a SET checked with a key that is not the Rekor key
/// (cosign.pub in place of rekor.pub) must fail.
#[test]
fn keyless_fulcio_rekor_signature_is_refused_when_the_root_has_another_rekor_key() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .built_root(
            "forged",
            &public_good_with_rekor_key(&format!(
                "{LEGACY}/containers-image__dir-img-cosign-key-rekor-valid/cosign.pub"
            )),
        )
        .rule(1, &[&keyless("forged", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_refused(&v, "root forged");
}

/// Upstream negative: without the SET (Rekor bundle annotation) a
/// certificate signature is refused: nothing proves when it was made.
#[test]
fn keyless_signature_without_its_rekor_set_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let found = without(discover(dir_signatures(&case)), ANN_BUNDLE);
    let v = gate(p.rule(), &served, &found);
    assert_refused(&v, "without a transparency-log entry");
}

/// Upstream negative: without the certificate annotation it is no keyless signature.
#[test]
fn keyless_signature_without_its_certificate_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let found = without(discover(dir_signatures(&case)), ANN_CERTIFICATE);
    let v = gate(p.rule(), &served, &found);
    assert_refused(&v, "no certificate");
}

/// Without the chain annotation the public-good root still supplies the
/// intermediate (upstream: "unless the intermediate is trusted directly").
#[test]
fn keyless_signature_without_its_chain_verifies_when_the_root_holds_the_intermediate() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-fulcio-rekor-valid");
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let found = without(discover(dir_signatures(&case)), ANN_CHAIN);
    assert_verified(&gate(p.rule(), &served, &found));
}

/// rekor-set-keyless-raw: the pieces of a Dec 2022 keyless signature as raw
/// files, for a digest whose manifest is not in the corpus.
fn raw_keyless_evidence() -> Found {
    let case = format!("{LEGACY}/containers-image__rekor-set-keyless-raw");
    let payload = read(&format!("{case}/rekor-payload"));
    Found {
        evidence: vec![Evidence::Legacy {
            layer: sha256(&payload),
            signature: read_text(&format!("{case}/rekor-sig")).trim().to_owned(),
            certificate: Some(read_text(&format!("{case}/rekor-cert"))),
            chain: Some(read_text(&format!("{case}/fulcio-chain"))),
            rekor_bundle: Some(read_text(&format!("{case}/rekor-set"))),
            payload: payload.into(),
        }],
        skipped: Vec::new(),
    }
}

const RAW_DIGEST: &str = "sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f";

#[test]
fn keyless_raw_pieces_with_rekor_set_verify_offline() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let v = gate(p.rule(), &digest(RAW_DIGEST), &raw_keyless_evidence());
    assert_verified(&v);
}

#[test]
fn keyless_raw_pieces_are_refused_with_another_rekor_key() {
    let p = PolicyText::new()
        .built_root(
            "forged",
            &public_good_with_rekor_key(&format!(
                "{LEGACY}/containers-image__dir-img-cosign-valid/cosign2.pub"
            )),
        )
        .rule(1, &[&keyless("forged", GITHUB_OAUTH, "mitr@redhat.com")])
        .load();
    let v = gate(p.rule(), &digest(RAW_DIGEST), &raw_keyless_evidence());
    assert_refused(&v, "root forged");
}

/// dir-img-cosign-pki-valid: a private (non-Fulcio) PKI certificate with no
/// Rekor entry. containers/image accepts it; portcullis requires a
/// transparency-log entry for every certificate, so it is refused even with
/// the private PKI as the root, and the reason says so.
#[test]
fn private_pki_certificate_without_transparency_log_entry_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-pki-valid");
    let mut chain = read_text(&format!("{case}/pki_intermediate_crts.pem"));
    chain += &read_text(&format!("{case}/pki_root_crts.pem"));
    let p = PolicyText::new()
        .built_root("pki", &trusted_root(vec![ca(&chain)], vec![]))
        .rule(
            1,
            &[&keyless_with(
                "pki",
                r#"issuer_regex = ".*", subject = "qiwan@redhat.com""#,
            )],
        )
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    // This fixture's signature annotation is line-wrapped base64 (76 columns),
    // which portcullis currently refuses as "not base64" (see
    // `line_wrapped_base64_signature_annotation_verifies_like_cosign`); unwrap
    // it so the refusal shown is the one that stands once that is fixed.
    let mut found = discover(dir_signatures(&case));
    for e in &mut found.evidence {
        if let Evidence::Legacy { signature, .. } = e {
            signature.retain(|c| !c.is_ascii_whitespace());
        }
    }
    let v = gate(p.rule(), &served, &found);
    assert_refused(&v, "without a transparency-log entry");
}

/// cosign and containers/image decode the signature annotation with Go's
/// base64, which ignores line breaks; the private-PKI fixture's annotation is
/// wrapped at 76 columns. The same wrapping of dir-img-cosign-valid's
/// (otherwise verifying) signature must still verify.
#[test]
fn line_wrapped_base64_signature_annotation_verifies_like_cosign() {
    let p = PolicyText::new()
        .key("cosign", &format!("{VALID}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let mut found = discover(dir_signatures(VALID));
    for e in &mut found.evidence {
        if let Evidence::Legacy { signature, .. } = e {
            let chars: Vec<char> = signature.chars().collect();
            *signature = chars
                .chunks(76)
                .map(|c| c.iter().collect::<String>() + "\n")
                .collect();
        }
    }
    assert_verified(&gate(p.rule(), &served, &found));
}

// ===========================================================================
// Anchoring of identity matchers
// ===========================================================================

/// A subject_regex that is a prefix of the real identity would match only as
/// a substring: it must not match. The full regex does (the control).
#[test]
fn keyless_subject_regex_matching_only_a_prefix_does_not_match() {
    for (subject_regex, pass) in [
        (r"philipp\.belitz", false),
        (r"philipp\.belitz@securesystems", false),
        (r"securesystems\.de", false),
        (r"philipp\.belitz@securesystems\.de", true),
        (r"[a-z.]+@securesystems\.de", true),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(
                1,
                &[&keyless_with(
                    "pg",
                    &format!(
                        "issuer = {GITHUB_OAUTH:?}, subject_regex = {}",
                        re(subject_regex)
                    ),
                )],
            )
            .load();
        let v = gate(p.rule(), &digest(KEYLESS_DIGEST), &keyless_evidence());
        if pass {
            assert!(v.verified, "{subject_regex:?} must match: {v:?}");
        } else {
            assert!(
                !v.verified,
                "{subject_regex:?} must not match as a substring: {v:?}"
            );
            assert!(
                v.reason.contains("does not match"),
                "{subject_regex:?}: {v:?}"
            );
        }
    }
}

/// Issuers that look like the real one (prefix, suffix, substring regex) must not match.
#[test]
fn keyless_issuer_lookalike_does_not_match() {
    for issuer in [
        format!("issuer = {:?}", "https://github.com/login/oauth/"),
        format!("issuer = {:?}", "https://github.com/login"),
        format!(
            "issuer = {:?}",
            "https://github.com/login/oauth.evil.example"
        ),
        format!("issuer = {:?}", "http://github.com/login/oauth"),
        format!("issuer_regex = {}", re(r"https://github\.com/login")),
        format!("issuer_regex = {}", re(r"github\.com/login/oauth")),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(
                1,
                &[&keyless_with(
                    "pg",
                    &format!("{issuer}, subject = {PHILIPP:?}"),
                )],
            )
            .load();
        let v = gate(p.rule(), &digest(KEYLESS_DIGEST), &keyless_evidence());
        assert!(!v.verified, "{issuer} must not match {GITHUB_OAUTH}: {v:?}");
        assert!(v.reason.contains("issuer"), "{issuer}: {v:?}");
        assert!(v.reason.contains("does not match"), "{issuer}: {v:?}");
    }
}

/// The same anchoring holds for a cosign v3 bundle's GitHub Actions identity.
#[test]
fn bundle_subject_regex_prefix_and_issuer_lookalike_do_not_match() {
    let right_subject = format!("subject = {KUBEWARDEN_WORKFLOW:?}");
    let right_issuer = format!("issuer = {ACTIONS:?}");
    for (fields, pass) in [
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(r"https://github\.com/kubewarden/kubewarden-controller/")
            ),
            false,
        ),
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(r"https://github\.com/kubewarden")
            ),
            false,
        ),
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(
                    r"https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v1\.34"
                )
            ),
            false,
        ),
        (
            format!(
                "issuer = {:?}, {right_subject}",
                "https://token.actions.githubusercontent.co"
            ),
            false,
        ),
        (
            format!(
                "issuer = {:?}, {right_subject}",
                "https://token.actions.githubusercontent.com.evil.example"
            ),
            false,
        ),
        (
            format!(
                "issuer_regex = {}, {right_subject}",
                re(r"token\.actions\.githubusercontent\.com")
            ),
            false,
        ),
        // Controls: whole-identity regexes match.
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(
                    r"https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v.*"
                )
            ),
            true,
        ),
        (
            format!(
                "issuer_regex = {}, {right_subject}",
                re(r"https://token\.actions\.githubusercontent\.com")
            ),
            true,
        ),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(1, &[&keyless_with("pg", &fields)])
            .load();
        let v = gate(p.rule(), &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
        assert_eq!(v.verified, pass, "{fields}: {v:?}");
        if !pass {
            assert!(v.reason.contains("does not match"), "{fields}: {v:?}");
        }
    }
}

// ===========================================================================
// image-cosign-legacy: keyed signatures
// ===========================================================================

const VALID: &str = "image-cosign-legacy/containers-image__dir-img-cosign-valid";

/// dir-img-cosign-valid: a cosign-created keyed signature (no Rekor entry)
/// verifies with cosign.pub when the log proof is optional.
#[test]
fn keyed_signature_verifies_with_its_public_key() {
    let p = PolicyText::new()
        .key("cosign", &format!("{VALID}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(VALID)));
    assert_verified(&v);
    assert_eq!(v.signers, vec!["key cosign".to_owned()]);
}

/// dir-img-cosign-valid negative: cosign2.pub did not make it.
#[test]
fn keyed_signature_is_refused_with_another_key() {
    let p = PolicyText::new()
        .key("cosign2", &format!("{VALID}/cosign2.pub"))
        .rule(1, &[r#"{ key = "cosign2" }"#])
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(VALID)));
    assert_refused(&v, "does not verify with this key");
}

/// A keyed signature with no Rekor entry is refused when the key requires one.
#[test]
fn keyed_signature_without_log_proof_is_refused_when_tlog_is_required() {
    let p = PolicyText::new()
        .key("cosign", &format!("{VALID}/cosign.pub"))
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[r#"{ key = "cosign", tlog = "required", root = "pg" }"#],
        )
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(VALID)));
    assert_refused(&v, "no transparency-log proof");
}

/// dir-img-cosign-valid-2: two signatures by the same key are one signer.
#[test]
fn two_signatures_by_one_key_count_as_one_signer() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-valid-2");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let found = discover(dir_signatures(&case));
    assert_eq!(found.evidence.len(), 2);
    let v = gate(p.rule(), &served, &found);
    assert_verified(&v);
    assert_eq!(v.checked, 2);
    assert!(v.rejections.is_empty(), "both signatures verify: {v:?}");
    assert_eq!(v.distinct, 1, "one key, one signer: {v:?}");

    // Threshold 2 with a second key listed: the two signatures by cosign.pub
    // still count once.
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .key("cosign2", &format!("{VALID}/cosign2.pub"))
        .rule(2, &[r#"{ key = "cosign" }"#, r#"{ key = "cosign2" }"#])
        .load();
    let v = gate(p.rule(), &served, &found);
    assert_refused(&v, "1 of 2 required signers verified");
}

/// dir-img-cosign-valid-with-tag: a skopeo-made cosign-format signature with a
/// tag in docker-reference verifies (portcullis binds to the digest, not the
/// reference, so the upstream ":othertag" negative has no equivalent here).
#[test]
fn keyed_signature_made_by_skopeo_with_a_tag_verifies() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-valid-with-tag");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    assert_verified(&gate(p.rule(), &served, &discover(dir_signatures(&case))));
}

/// dir-img-cosign-mixed: an unknown-key signature first, then a valid one:
/// the invalid one does not mask the valid one.
#[test]
fn an_unknown_key_signature_does_not_mask_a_valid_one() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-mixed");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_verified(&v);
    assert_eq!(v.checked, 2);
    assert_eq!(v.rejections.len(), 1, "signature-1 is rejected: {v:?}");
    assert!(v.rejections[0].contains("does not verify"), "{v:?}");
}

const KEY_REKOR: &str = "image-cosign-legacy/containers-image__dir-img-cosign-key-rekor-valid";

/// dir-img-cosign-key-rekor-valid: a keyed signature uploaded to public-good
/// Rekor verifies with tlog = "required" (SET checked against the root).
#[test]
fn keyed_signature_with_rekor_set_verifies_when_tlog_is_required() {
    let p = PolicyText::new()
        .key("cosign2", &format!("{KEY_REKOR}/cosign2.pub"))
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[r#"{ key = "cosign2", tlog = "required", root = "pg" }"#],
        )
        .load();
    let served = manifest_digest(&format!("{KEY_REKOR}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(KEY_REKOR)));
    assert_verified(&v);
    assert_eq!(v.signers, vec!["key cosign2".to_owned()]);
}

#[test]
fn keyed_signature_with_rekor_set_is_refused_with_another_key() {
    let p = PolicyText::new()
        .key("cosign", &format!("{KEY_REKOR}/cosign.pub"))
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[r#"{ key = "cosign", tlog = "required", root = "pg" }"#],
        )
        .load();
    let served = manifest_digest(&format!("{KEY_REKOR}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(KEY_REKOR)));
    assert_refused(&v, "key cosign");
}

/// Upstream negative: with cosign.pub posing as the Rekor key the SET fails,
/// even though the signature itself is by the right key. A present proof is
/// checked also when tlog is optional.
#[test]
fn keyed_signature_is_refused_when_its_rekor_set_does_not_verify() {
    let forged = public_good_with_rekor_key(&format!("{KEY_REKOR}/cosign.pub"));
    for tlog in ["required", "optional"] {
        let p = PolicyText::new()
            .key("cosign2", &format!("{KEY_REKOR}/cosign2.pub"))
            .built_root("forged", &forged)
            .rule(
                1,
                &[&format!(
                    r#"{{ key = "cosign2", tlog = "{tlog}", root = "forged" }}"#
                )],
            )
            .load();
        let served = manifest_digest(&format!("{KEY_REKOR}/manifest.json"));
        let v = gate(p.rule(), &served, &discover(dir_signatures(KEY_REKOR)));
        assert_refused(&v, "key cosign2");
    }
}

// ===========================================================================
// image-cosign-legacy: thresholds (connaisseur multi-cosigned)
// ===========================================================================

const ALICE: &str = "image-cosign-legacy/connaisseur__testimage-multi-cosigned-alice";
const ABC: &str = "image-cosign-legacy/connaisseur__testimage-multi-cosigned-alice-bob-charlie";

fn alice_evidence() -> Found {
    discover(sig_manifest(
        ALICE,
        "sha256-071bf7a986f1ca9cb2a1f0bc8392822a7777f90d58f2d2c6f271913e08de7c81.sig.json",
    ))
}

fn abc_evidence() -> Found {
    discover(sig_manifest(
        ABC,
        "sha256-bfec161fecb0a887df7cb85e4da327c65986ccda7060cf3cd92171c6c90d7533.sig.json",
    ))
}

/// multi-cosigned-alice: alice's signature verifies (no tlog required).
#[test]
fn keyed_signature_from_a_sig_manifest_verifies_for_its_signer() {
    let p = PolicyText::new()
        .key("alice", &format!("{ALICE}/alice.key"))
        .rule(1, &[r#"{ key = "alice" }"#])
        .load();
    let served = manifest_digest(&format!("{ALICE}/manifests/multi-cosigned-alice.json"));
    let v = gate(p.rule(), &served, &alice_evidence());
    assert_verified(&v);
    assert_eq!(v.signers, vec!["key alice".to_owned()]);
}

/// multi-cosigned-alice negatives: bob required (alone, or with alice at
/// threshold 2) fails, since only alice signed.
#[test]
fn a_required_signer_who_did_not_sign_fails_the_gate() {
    let served = manifest_digest(&format!("{ALICE}/manifests/multi-cosigned-alice.json"));
    let p = PolicyText::new()
        .key("bob", &format!("{ALICE}/bob.key"))
        .rule(1, &[r#"{ key = "bob" }"#])
        .load();
    let v = gate(p.rule(), &served, &alice_evidence());
    assert_refused(&v, "no signature from a required signer");
    assert!(v.reason.contains("key bob"), "{v:?}");

    let p = PolicyText::new()
        .key("alice", &format!("{ALICE}/alice.key"))
        .key("bob", &format!("{ALICE}/bob.key"))
        .rule(2, &[r#"{ key = "alice" }"#, r#"{ key = "bob" }"#])
        .load();
    let v = gate(p.rule(), &served, &alice_evidence());
    assert_refused(&v, "1 of 2 required signers verified");
}

/// multi-cosigned-alice-bob-charlie: threshold 2 of {alice, bob} passes with
/// alice and bob; charlie's layer satisfies nobody.
#[test]
fn threshold_two_of_alice_and_bob_is_met() {
    let p = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .rule(2, &[r#"{ key = "alice" }"#, r#"{ key = "bob" }"#])
        .load();
    let served = manifest_digest(&format!(
        "{ABC}/manifests/multi-cosigned-alice-bob-charlie.json"
    ));
    let v = gate(p.rule(), &served, &abc_evidence());
    assert_verified(&v);
    assert_eq!(v.distinct, 2);
    assert_eq!(v.checked, 3);
    assert_eq!(
        v.rejections.len(),
        1,
        "charlie's layer matches no signer: {v:?}"
    );
    let mut signers = v.signers.clone();
    signers.sort();
    assert_eq!(signers, vec!["key alice".to_owned(), "key bob".to_owned()]);
}

/// connaisseur's "threshold 3 with {alice, bob}": portcullis refuses such a
/// policy at load, since it could never pass.
#[test]
fn threshold_above_the_listed_signers_is_refused_at_load() {
    let e = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .rule(3, &[r#"{ key = "alice" }"#, r#"{ key = "bob" }"#])
        .try_load()
        .err()
        .expect("threshold 3 with two signers must not load");
    assert!(e.contains("3 distinct signers can never verify"), "{e}");
}

/// Threshold 3 of {alice, bob, cosign.pub}: only two of them signed, so the
/// signatures cannot meet it, and the reason counts.
#[test]
fn threshold_the_signatures_cannot_meet_fails_with_a_count() {
    let p = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .key("other", &format!("{VALID}/cosign.pub"))
        .rule(
            3,
            &[
                r#"{ key = "alice" }"#,
                r#"{ key = "bob" }"#,
                r#"{ key = "other" }"#,
            ],
        )
        .load();
    let served = manifest_digest(&format!(
        "{ABC}/manifests/multi-cosigned-alice-bob-charlie.json"
    ));
    let v = gate(p.rule(), &served, &abc_evidence());
    assert_eq!(v.distinct, 2);
    assert_refused(&v, "2 of 3 required signers verified: 3 signatures checked");
}

/// All three keys listed, threshold 3: each layer satisfies its own signer.
#[test]
fn threshold_three_of_alice_bob_and_charlie_is_met() {
    let p = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .key("charlie", &format!("{ABC}/charlie.key"))
        .rule(
            3,
            &[
                r#"{ key = "alice" }"#,
                r#"{ key = "bob" }"#,
                r#"{ key = "charlie" }"#,
            ],
        )
        .load();
    let served = manifest_digest(&format!(
        "{ABC}/manifests/multi-cosigned-alice-bob-charlie.json"
    ));
    let v = gate(p.rule(), &served, &abc_evidence());
    assert_verified(&v);
    assert_eq!(v.distinct, 3);
    assert!(v.rejections.is_empty(), "{v:?}");
}

// ===========================================================================
// image-cosign-legacy: the _fail cases
// ===========================================================================

/// unknown-cosign-key_fail: a well-formed signature by an untrusted key.
#[test]
fn signature_by_an_unknown_key_is_refused() {
    let case = format!("{LEGACY}/containers-image__unknown-cosign-key_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_refused(&v, "the signature does not verify with this key");
}

/// modified-manifest_fail: a valid signature, but the served manifest bytes
/// were altered, so its digest is not the signed one.
#[test]
fn valid_signature_over_a_tampered_manifest_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-modified-manifest_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_refused(&v, "signed for another image");
    assert!(
        v.reason
            .contains("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"),
        "names the digest that was signed: {v:?}"
    );
    // The same signature does pass for the untampered digest (the control).
    let signed = digest("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00");
    assert_verified(&gate(p.rule(), &signed, &discover(dir_signatures(&case))));
}

/// manifest-digest-error_fail: a schema1 manifest with broken signatures. Its
/// served digest (sha256 of its bytes) is not the one the signature names.
#[test]
fn signature_against_an_undigestable_schema1_manifest_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-manifest-digest-error_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(p.rule(), &served, &discover(dir_signatures(&case)));
    assert_refused(&v, "signed for another image");
}

/// other-attachment_fail: a text/plain attachment with a copied signature
/// annotation is not a signature: discovery skips it, and even if its payload
/// reached the verifier it would be refused.
#[test]
fn a_non_signature_attachment_is_not_a_signature() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-other-attachment_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let layers = dir_signatures(&case);
    assert_eq!(layers[0].media_type, "text/plain");

    let found = discover(layers);
    assert!(found.evidence.is_empty());
    let v = gate(p.rule(), &served, &found);
    assert_refused(&v, "has media type \"text/plain\"");
    assert_eq!(v.checked, 0);

    // Bypassing discovery's media-type filter: the verifier still refuses it.
    let layer = dir_signatures(&case).remove(0);
    let forced = Found {
        evidence: vec![Evidence::Legacy {
            layer: sha256(&layer.payload),
            signature: layer.annotations[ANN_SIGNATURE]
                .as_str()
                .unwrap()
                .to_owned(),
            certificate: None,
            chain: None,
            rekor_bundle: None,
            payload: layer.payload.into(),
        }],
        skipped: Vec::new(),
    };
    let v = gate(p.rule(), &served, &forced);
    assert_refused(&v, "the payload is not JSON");
}

// ===========================================================================
// image-sigstore-bundle
// ===========================================================================

/// kubewarden-controller v1.34.0, signed by cosign v3 (bundle v0.3, DSSE with
/// the cosign sign/v1 predicate, Rekor entry + RFC 3161 timestamp): passes
/// with the public-good root that lists the TSA, for the release workflow identity.
#[test]
fn cosign_v3_bundle_verifies_for_the_release_workflow_identity() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let v = gate(p.rule(), &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_verified(&v);
    assert!(v.signers[0].contains(KUBEWARDEN_WORKFLOW), "{v:?}");
}

/// The GitHub workflow claims in the certificate are matched exactly too.
#[test]
fn cosign_v3_bundle_workflow_claims_must_match() {
    let base = format!("issuer = {ACTIONS:?}, subject = {KUBEWARDEN_WORKFLOW:?}");
    for (claims, pass) in [
        (
            r#"github_workflow_repository = "kubewarden/kubewarden-controller", github_workflow_ref = "refs/tags/v1.34.0", github_workflow_trigger = "push""#,
            true,
        ),
        (
            r#"github_workflow_repository = "kubewarden/kubewarden""#,
            false,
        ),
        (r#"github_workflow_ref = "refs/heads/main""#, false),
        (r#"github_workflow_trigger = "pull_request""#, false),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(1, &[&keyless_with("pg", &format!("{base}, {claims}"))])
            .load();
        let v = gate(p.rule(), &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
        assert_eq!(v.verified, pass, "{claims}: {v:?}");
        if !pass {
            assert!(v.reason.contains("does not match"), "{claims}: {v:?}");
        }
    }
}

#[test]
fn cosign_v3_bundle_is_refused_for_a_wrong_identity() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[&keyless(
                "pg",
                ACTIONS,
                "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.33.0",
            )],
        )
        .load();
    let v = gate(p.rule(), &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_refused(&v, "does not match");

    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, KUBEWARDEN_WORKFLOW)])
        .load();
    let v = gate(p.rule(), &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_refused(&v, "does not match");
}

/// Upstream negative: the bundle does not vouch for another digest (sha256:000…0).
#[test]
fn cosign_v3_bundle_is_refused_for_another_digest() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let zero = digest(&format!("sha256:{}", "0".repeat(64)));
    let v = gate(p.rule(), &zero, &kubewarden_bundle());
    assert!(!v.verified, "{v:?}");
    assert_eq!(v.distinct, 0);
}

/// The bundle carries an RFC 3161 timestamp: a root without the TSA
/// (sigstore-rs's older production root) cannot verify it, and says why.
#[test]
fn cosign_v3_bundle_needs_a_root_that_lists_its_timestamp_authority() {
    let p = PolicyText::new()
        .root("old", PUBLIC_GOOD_NO_TSA)
        .rule(1, &[&keyless("old", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let v = gate(p.rule(), &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_refused(&v, "root old");
}

/// cosign attest --new-bundle-format output: a valid Sigstore bundle for the
/// image digest, but its predicate is an attestation, not cosign's signature
/// predicate, so it does not count as a signature whatever the identity.
#[test]
fn cosign_attestation_bundle_is_rejected_as_an_attestation() {
    let case = format!("{BUNDLES}/cosign__oci-attestation-empty-image");
    let p = PolicyText::new()
        .root("pgi", &format!("{case}/trusted_root_pgi.json"))
        .rule(
            1,
            &[&keyless_with(
                "pgi",
                r#"issuer_regex = ".*", subject_regex = ".*""#,
            )],
        )
        .load();
    let subject = digest("sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4");
    let v = gate(
        p.rule(),
        &subject,
        &bundle(&format!("{case}/oci-attestation.sigstore.json")),
    );
    assert_refused(&v, "an attestation");
    assert!(
        v.reason
            .contains("https://cosign.sigstore.dev/attestation/v1"),
        "names the predicate: {v:?}"
    );
}

//! Shared helpers for the fixture tests (`tests/fixtures_*.rs`): the policy
//! gate against real signature artifacts made by real cosign (and skopeo)
//! against the production Sigstore instance, collected in the shared fixture
//! corpus (`/work/shared/fixtures`, see its `INDEX.md` and each case's
//! `SOURCE.txt` for what must pass or fail and why).
//!
//! Every test loads a real policy file ([`PolicyText`], written into a
//! tempdir, pointing at the fixture keys and trusted roots by absolute path),
//! turns the fixture files into the [`Evidence`] discovery would produce from
//! a `.sig` manifest's layers or a bundle referrer ([`discover`], [`bundle`]),
//! and runs exactly what the gate runs ([`gate`]): [`verify::check`] per piece
//! of evidence, [`Tally`] across them, and `distinct() >= threshold`. All of
//! it is offline: no network is touched.
//!
//! The corpus is read at run time from `$PORTCULLIS_FIXTURES`, or
//! `../shared/fixtures` next to the crate; it is never copied into the repo.
//! If it is missing, every test fails saying so ([`corpus`]).
//!
//! The tests using these helpers cover every case of `image-cosign-legacy/*`
//! (all 15: `fixtures_legacy_keyless.rs`, `fixtures_legacy_keyed.rs`) and of
//! `image-sigstore-bundle/*` (both: `fixtures_bundles.rs`), and the anchoring
//! of identity matchers against them (`fixtures_identity_anchoring.rs`).

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
pub fn corpus() -> &'static Path {
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
pub fn fixture(rel: &str) -> PathBuf {
    let p = corpus().join(rel);
    assert!(
        p.exists(),
        "fixture {rel} is missing from {}: the corpus is incomplete",
        corpus().display()
    );
    p
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("cannot read fixture {rel}: {e}"))
}

pub fn read_text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap_or_else(|_| panic!("fixture {rel} is not UTF-8"))
}

pub const LEGACY: &str = "image-cosign-legacy";
pub const BUNDLES: &str = "image-sigstore-bundle";
/// Public-good production root with the TSA (timestamp.sigstore.dev).
pub const PUBLIC_GOOD: &str = "trust-roots/sigstore-rust__public-good-production/trusted_root.json";
/// The older public-good root embedded in sigstore-rs: no timestamp authority.
pub const PUBLIC_GOOD_NO_TSA: &str = "trust-roots/sigstore-rs__prod/trusted_root.json";

pub const KEYLESS_CASE: &str = "image-cosign-legacy/connaisseur__testimage-keyless";
pub const KEYLESS_DIGEST: &str =
    "sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee";
pub const GITHUB_OAUTH: &str = "https://github.com/login/oauth";
pub const PHILIPP: &str = "philipp.belitz@securesystems.de";

/// containers/image's `dir-img-cosign-valid`: a keyed signature by its
/// `cosign.pub` without a Rekor entry (its `cosign2.pub` did not sign).
pub const VALID: &str = "image-cosign-legacy/containers-image__dir-img-cosign-valid";

pub const KUBEWARDEN: &str =
    "image-sigstore-bundle/sigstore-rs__kubewarden-controller-v1.34.0-cosign-v3";
pub const KUBEWARDEN_DIGEST: &str =
    "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
pub const ACTIONS: &str = "https://token.actions.githubusercontent.com";
pub const KUBEWARDEN_WORKFLOW: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";

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
pub struct PolicyText {
    dir: tempfile::TempDir,
    text: String,
}

impl PolicyText {
    pub fn new() -> PolicyText {
        PolicyText {
            dir: tempfile::tempdir().expect("a tempdir"),
            text: String::new(),
        }
    }

    /// `[keys.NAME]` with a fixture public key (all fixture keys are already
    /// PEM SPKI "PUBLIC KEY" files, so no conversion is needed).
    pub fn key(mut self, name: &str, rel: &str) -> Self {
        self.text += &format!("[keys.{name}]\npublic_key = {}\n", toml_path(&fixture(rel)));
        self
    }

    /// `[roots.NAME]` with a fixture trusted root.
    pub fn root(mut self, name: &str, rel: &str) -> Self {
        self.text += &format!(
            "[roots.{name}]\ntrusted_root = {}\n",
            toml_path(&fixture(rel))
        );
        self
    }

    /// `[roots.NAME]` with a trusted root built by the test (written into the tempdir).
    pub fn built_root(mut self, name: &str, root: &Value) -> Self {
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, root.to_string()).expect("write the built root");
        self.text += &format!("[roots.{name}]\ntrusted_root = {}\n", toml_path(&path));
        self
    }

    /// The one rule, enforcing on every docker.io image.
    pub fn rule(mut self, threshold: usize, signers: &[&str]) -> Self {
        self.text += &format!(
            "[[rule]]\nname = \"fixtures\"\nimages = [\"docker.io/**\"]\nmode = \"enforce\"\nthreshold = {threshold}\nsigners = [\n  {}\n]\n",
            signers.join(",\n  ")
        );
        self
    }

    pub fn try_load(self) -> Result<Loaded, String> {
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

    pub fn load(self) -> Loaded {
        self.try_load()
            .unwrap_or_else(|e| panic!("the policy must load: {e}"))
    }
}

pub struct Loaded {
    _dir: tempfile::TempDir,
    policy: Policy,
}

impl Loaded {
    pub fn rule(&self) -> &Rule {
        self.policy
            .rule_for("docker.io/library/alpine")
            .expect("the fixture rule matches docker.io")
    }
}

/// A keyless signer entry, exact issuer and subject.
pub fn keyless(root: &str, issuer: &str, subject: &str) -> String {
    format!("{{ keyless = {{ root = \"{root}\", issuer = {issuer:?}, subject = {subject:?} }} }}")
}

/// A keyless signer entry with arbitrary matcher fields (TOML inline text).
pub fn keyless_with(root: &str, fields: &str) -> String {
    format!("{{ keyless = {{ root = \"{root}\", {fields} }} }}")
}

/// TOML basic string for a regex (backslashes doubled).
pub fn re(s: &str) -> String {
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

pub fn trusted_root(cas: Vec<Value>, tlogs: Vec<Value>) -> Value {
    json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": tlogs,
        "certificateAuthorities": cas,
        "ctlogs": [],
        "timestampAuthorities": []
    })
}

pub fn ca(chain_pem: &str) -> Value {
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
pub fn legacy_keys_root() -> Value {
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
pub fn public_good_with_rekor_key(rel_pub: &str) -> Value {
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

pub const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
pub const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
pub const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

pub fn digest(s: &str) -> Digest {
    s.parse().expect("a valid digest")
}

/// The digest portcullis would serve for a fixture manifest: sha256 of its bytes.
pub fn manifest_digest(rel: &str) -> Digest {
    sha256(&read(rel))
}

/// One layer of a `.sig` manifest, before discovery's filtering.
pub struct Layer {
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: Value,
}

/// What discovery keeps of `.sig` layers: simple-signing layers with a
/// signature annotation become evidence; anything else is skipped (this mirrors
/// `discover::legacy`, which needs a live cache to call directly).
pub fn discover(layers: Vec<Layer>) -> Found {
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
pub fn sig_manifest(case: &str, sig_manifest: &str) -> Vec<Layer> {
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
pub fn dir_signature(rel: &str) -> Layer {
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
pub fn dir_signatures(case: &str) -> Vec<Layer> {
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
pub fn keyless_evidence() -> Found {
    discover(sig_manifest(
        KEYLESS_CASE,
        "sha256-31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee.sig.json",
    ))
}

/// A bundle attached as a referrer (the referrer manifest's digest is only used in reasons).
pub fn bundle(rel: &str) -> Found {
    let json = read(rel);
    Found {
        evidence: vec![Evidence::Bundle {
            manifest: sha256(format!("referrer of {rel}").as_bytes()),
            json: json.into(),
        }],
        skipped: Vec::new(),
    }
}

pub fn kubewarden_bundle() -> Found {
    bundle(&format!("{KUBEWARDEN}/bundle_v03.json"))
}

/// Drop annotations from every legacy evidence (to take a piece of a signature away).
pub fn without(mut found: Found, annotation: &str) -> Found {
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
pub struct Verdict {
    pub verified: bool,
    pub distinct: usize,
    pub threshold: usize,
    pub signers: Vec<String>,
    /// The refusal message (meaningful when not verified).
    pub reason: String,
    /// Each piece of evidence's rejection, if it satisfied no signer.
    pub rejections: Vec<String>,
    pub checked: usize,
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
pub fn gate(rule: &Rule, served: &Digest, found: &Found) -> Verdict {
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
pub fn assert_verified(v: &Verdict) {
    assert!(v.verified, "expected to pass the gate: {v:?}");
    assert!(v.distinct >= v.threshold, "{v:?}");
}

#[track_caller]
pub fn assert_refused(v: &Verdict, because: &str) {
    assert!(!v.verified, "expected the gate to refuse: {v:?}");
    assert!(v.distinct < v.threshold, "{v:?}");
    assert!(
        v.reason.contains(because),
        "the refusal should say {because:?}: {v:?}"
    );
}

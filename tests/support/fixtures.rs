//! Shared helpers for the fixture tests (`tests/fixtures_*.rs`): the policy
//! gate against real signature artifacts made by real cosign (and skopeo)
//! against the production Sigstore instance, collected in the shared fixture
//! corpus (`/work/shared/fixtures`, see its `INDEX.md` and each case's
//! `SOURCE.txt` for what must pass or fail and why).
//!
//! Every test loads a real policy file ([`PolicyText`], written into a
//! tempdir, pointing at the fixture keys and trusted roots by absolute path),
//! puts the fixture files in an in-memory registry ([`Sigs`]: a `.sig`
//! manifest, bundle referrers and their blobs, the way cosign pushes them),
//! and runs the gate's own code over it through the [`Source`] interface:
//! discovery, offline verification and the threshold ([`gate`]), or the whole
//! gate on a served manifest ([`decide`]). All of it is offline: no network
//! is touched.
//!
//! The corpus is read at run time from `$PORTCULLIS_FIXTURES`, or
//! `../shared/fixtures` next to the crate; it is never copied into the repo.
//! If it is missing, every test fails saying so ([`corpus`]).
//!
//! The tests using these helpers cover every case of `image-cosign-legacy/*`
//! (all 15: `fixtures_legacy_keyless.rs`, `fixtures_legacy_keyed.rs`) and of
//! `image-sigstore-bundle/*` (both: `fixtures_bundles.rs`), and the anchoring
//! of identity matchers against them (`fixtures_identity_anchoring.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::Digest as _;

use portcullis::clock::Clock;
use portcullis::config::{Config, UpstreamConfig};
use portcullis::digest::{Algorithm, Digest};
use portcullis::gate::{
    Decision, Gate, GateParts, Source, SourceError, TooLarge, Verdicts, Verification, image,
};
use portcullis::manifest::Manifest;
use portcullis::metrics::Metrics;
use portcullis::policy::Policy;
use portcullis::reference::Reference;
use portcullis::router::{Router, Target};
use portcullis::store::BoxFuture;

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

    /// A `[[rule.attestations]]` of the one rule (call after [`PolicyText::rule`]).
    pub fn attestation(mut self, body: &str) -> Self {
        self.text += &format!("[[rule.attestations]]\n{body}\n");
        self
    }

    /// `[keys.NAME]` with a PEM key built by the test (written into the tempdir).
    pub fn built_key(mut self, name: &str, pem: &str) -> Self {
        let path = self.dir.path().join(format!("{name}.pub"));
        std::fs::write(&path, pem).expect("write the built key");
        self.text += &format!("[keys.{name}]\npublic_key = {}\n", toml_path(&path));
        self
    }

    pub fn try_load(self) -> Result<Loaded, String> {
        let path = self.dir.path().join("policy.toml");
        std::fs::write(&path, &self.text).expect("write the policy");
        match Policy::load(&path, &upstreams()) {
            Ok(policy) => Ok(Loaded {
                _dir: self.dir,
                path,
                policy: Arc::new(policy),
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
    path: PathBuf,
    pub policy: Arc<Policy>,
}

impl Loaded {
    /// The fixture rule's position (it matches docker.io).
    pub fn rule_index(&self) -> usize {
        let rule = self
            .policy
            .rule_for("docker.io/library/alpine")
            .expect("the fixture rule matches docker.io");
        self.policy
            .rule_index(&rule.name)
            .expect("the rule is in its policy")
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
// A registry holding the fixtures, as the gate reads it
// ---------------------------------------------------------------------------

#[allow(unused_imports)]
pub use portcullis::gate::discover::{ANN_BUNDLE, ANN_CERTIFICATE, ANN_CHAIN, ANN_SIGNATURE};

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

/// One layer of a `.sig` manifest: its media type, payload blob and annotations.
#[derive(Clone)]
pub struct Layer {
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: Value,
}

/// What a registry holds about one image: signature manifests, referrers
/// and their blobs, built from fixture files. The gate reads it through the
/// same [`Source`] interface it reads the cache through, so discovery and
/// verification run exactly as in the server.
#[derive(Clone, Default)]
pub struct Sigs {
    /// The `.sig` manifest: real bytes from the corpus, or built from layers.
    sig: Option<SigManifest>,
    /// Sigstore bundle files attached as referrers.
    bundles: Vec<Vec<u8>>,
}

#[derive(Clone)]
enum SigManifest {
    Real { bytes: Vec<u8>, blobs: Vec<Vec<u8>> },
    Layers(Vec<Layer>),
}

impl Sigs {
    /// How many layers the `.sig` manifest has.
    pub fn layers(&self) -> usize {
        match &self.sig {
            None => 0,
            Some(SigManifest::Layers(l)) => l.len(),
            Some(SigManifest::Real { bytes, .. }) => {
                let v: Value = serde_json::from_slice(bytes).expect("JSON");
                v["layers"].as_array().map_or(0, Vec::len)
            }
        }
    }

    /// Change the `.sig` layers (to take a piece of a signature away, or to
    /// damage one), rebuilding the manifest around them.
    pub fn map_layers(mut self, f: impl Fn(&mut Layer)) -> Sigs {
        if let Some(SigManifest::Layers(layers)) = &mut self.sig {
            layers.iter_mut().for_each(f);
        } else {
            panic!("only built .sig manifests can be changed");
        }
        self
    }

    /// The registry content for `served`, and the signature artifacts in it
    /// (the `.sig` manifest, then each bundle referrer manifest), as a
    /// client such as `cosign verify` would fetch them.
    pub fn artifacts(&self, served: &Digest) -> (FixtureSource, Vec<Vec<u8>>) {
        let src = self.source(served);
        let mut out = Vec::new();
        if let Some(m) = src.manifests.get(&format!("sha256-{}.sig", served.hex())) {
            out.push(m.clone());
        }
        for b in &self.bundles {
            out.push(bundle_referrer(served, b).0);
        }
        (src, out)
    }

    /// The registry content for `served`.
    pub fn source(&self, served: &Digest) -> FixtureSource {
        let mut src = FixtureSource::default();
        let sig_tag = format!("sha256-{}.sig", served.hex());
        match &self.sig {
            None => {}
            Some(SigManifest::Real { bytes, blobs }) => {
                src.manifests.insert(sig_tag, bytes.clone());
                for b in blobs {
                    src.blobs.insert(sha256(b), b.clone().into());
                }
            }
            Some(SigManifest::Layers(layers)) => {
                let config = br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
                src.blobs.insert(sha256(config), config.to_vec().into());
                let descriptors: Vec<Value> = layers
                    .iter()
                    .map(|l| {
                        src.blobs
                            .insert(sha256(&l.payload), l.payload.clone().into());
                        let mut d = json!({
                            "mediaType": l.media_type,
                            "size": l.payload.len(),
                            "digest": sha256(&l.payload).to_string(),
                        });
                        if l.annotations.is_object() {
                            d["annotations"] = l.annotations.clone();
                        }
                        d
                    })
                    .collect();
                let m = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "size": config.len(),
                        "digest": sha256(config).to_string(),
                    },
                    "layers": descriptors,
                });
                src.manifests.insert(sig_tag, m.to_string().into_bytes());
            }
        }
        let mut referrers = Vec::new();
        for b in &self.bundles {
            let (m, d) = bundle_referrer(served, b);
            src.blobs.insert(sha256(b), b.clone().into());
            src.blobs.insert(sha256(b"{}"), b"{}".to_vec().into());
            src.manifests.insert(d.to_string(), m.clone());
            referrers.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": m.len(),
                "digest": d.to_string(),
                "artifactType": BUNDLE_V03,
            }));
        }
        if !referrers.is_empty() {
            let index = json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": referrers,
            });
            src.referrers
                .insert(served.clone(), index.to_string().into_bytes());
        }
        src
    }
}

pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A referrer manifest carrying `bundle` for `subject`, as cosign v3 pushes it.
pub fn bundle_referrer(subject: &Digest, bundle: &[u8]) -> (Vec<u8>, Digest) {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BUNDLE_V03,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": sha256(b"{}").to_string()},
        "layers": [{"mediaType": BUNDLE_V03, "size": bundle.len(), "digest": sha256(bundle).to_string()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": subject.to_string()},
    })
    .to_string()
    .into_bytes();
    let d = sha256(&m);
    (m, d)
}

/// Registry content held in memory.
#[derive(Default)]
pub struct FixtureSource {
    /// By tag or digest string.
    manifests: HashMap<String, Vec<u8>>,
    referrers: HashMap<Digest, Vec<u8>>,
    blobs: HashMap<Digest, Bytes>,
}

impl FixtureSource {
    /// Also hold `bytes` as a manifest under its digest (and `tag`, if any).
    pub fn with_manifest(mut self, bytes: &[u8], tag: Option<&str>) -> FixtureSource {
        self.manifests
            .insert(sha256(bytes).to_string(), bytes.to_vec());
        if let Some(t) = tag {
            self.manifests.insert(t.to_owned(), bytes.to_vec());
        }
        self
    }

    pub fn with_blob(mut self, bytes: &[u8]) -> FixtureSource {
        self.blobs.insert(sha256(bytes), bytes.to_vec().into());
        self
    }
}

fn parsed(bytes: &[u8]) -> Result<Option<Manifest>, SourceError> {
    Manifest::check(&sha256(bytes), bytes.to_vec().into(), None)
        .map(Some)
        .map_err(SourceError::Malformed)
}

impl Source for FixtureSource {
    fn manifest<'a>(
        &'a self,
        _target: &'a Target,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<Option<Manifest>, SourceError>> {
        let found = self.manifests.get(&reference.to_string());
        Box::pin(async move { found.map_or(Ok(None), |b| parsed(b)) })
    }

    fn referrers<'a>(
        &'a self,
        _target: &'a Target,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<Manifest>, SourceError>> {
        let found = self.referrers.get(subject);
        Box::pin(async move { found.map_or(Ok(None), |b| parsed(b)) })
    }

    fn blob<'a>(
        &'a self,
        _target: &'a Target,
        digest: &'a Digest,
        max: u64,
    ) -> BoxFuture<'a, Result<Option<Bytes>, SourceError>> {
        let found = self.blobs.get(digest).cloned();
        Box::pin(async move {
            match found {
                Some(b) if b.len() as u64 > max => Err(SourceError::TooLarge(TooLarge {
                    digest: digest.clone(),
                    max,
                })),
                other => Ok(other),
            }
        })
    }
}

/// Verdicts kept in memory.
#[derive(Default)]
pub struct MemoryVerdicts(Mutex<HashMap<String, Arc<[u8]>>>);

impl MemoryVerdicts {
    /// Remember `verdict` (JSON, as the gate stores it) under `key`.
    pub fn seeded(key: String, verdict: &str) -> MemoryVerdicts {
        let v = MemoryVerdicts::default();
        v.0.lock()
            .unwrap()
            .insert(key, Arc::from(verdict.as_bytes()));
        v
    }
}

/// The same map keeps trust state for notary signers (the fixture gate is
/// offline: nothing is ever fetched into it).
impl portcullis::notary::TrustState for MemoryVerdicts {
    fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn put(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), portcullis::cache::fill::BoxError>> {
        self.0.lock().unwrap().insert(key, Arc::from(value));
        Box::pin(async { Ok(()) })
    }
}

impl Verdicts for MemoryVerdicts {
    fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.0.lock().unwrap().get(key).cloned()
    }

    fn put(
        &self,
        entries: Vec<(String, std::time::Duration, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<(), portcullis::cache::fill::BoxError>> {
        let mut m = self.0.lock().unwrap();
        for (k, _, v) in entries {
            m.insert(k, Arc::from(v));
        }
        Box::pin(async { Ok(()) })
    }
}

/// A `.sig` manifest made of `layers` (as cosign pushes them).
pub fn sig_tag(layers: Vec<Layer>) -> Sigs {
    Sigs {
        sig: Some(SigManifest::Layers(layers)),
        bundles: Vec::new(),
    }
}

/// A connaisseur mock-registry `.sig` manifest, served as the real bytes; its
/// payloads come from `blobs/<digest>.json`.
pub fn sig_manifest(case: &str, sig_manifest: &str) -> Sigs {
    let bytes = read(&format!("{case}/manifests/{sig_manifest}"));
    let m: Value = serde_json::from_slice(&bytes).expect("the .sig manifest is JSON");
    let blobs = m["layers"]
        .as_array()
        .expect("the .sig manifest has layers")
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().expect("layer digest");
            read(&format!("{case}/blobs/{d}.json"))
        })
        .collect();
    Sigs {
        sig: Some(SigManifest::Real { bytes, blobs }),
        bundles: Vec::new(),
    }
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

/// The connaisseur keyless case's `.sig` manifest.
pub fn keyless_evidence() -> Sigs {
    sig_manifest(
        KEYLESS_CASE,
        "sha256-31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee.sig.json",
    )
}

/// A bundle attached as a referrer.
pub fn bundle(rel: &str) -> Sigs {
    Sigs {
        sig: None,
        bundles: vec![read(rel)],
    }
}

pub fn kubewarden_bundle() -> Sigs {
    bundle(&format!("{KUBEWARDEN}/bundle_v03.json"))
}

/// Drop an annotation from every `.sig` layer (to take a piece of a signature away).
pub fn without(sigs: Sigs, annotation: &str) -> Sigs {
    let annotation = annotation.to_owned();
    sigs.map_layers(move |l| {
        if let Some(o) = l.annotations.as_object_mut() {
            o.remove(&annotation);
        }
    })
}

// ---------------------------------------------------------------------------
// Running the gate
// ---------------------------------------------------------------------------

/// What the gate decided about the evidence for one digest.
pub struct Verdict {
    pub verified: bool,
    /// Distinct signers that verified.
    pub distinct: usize,
    pub threshold: usize,
    pub signers: Vec<String>,
    /// The refusal message (meaningful when not verified).
    pub reason: String,
    pub checked: usize,
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verified={} distinct={}/{} signers={:?} checked={}\n  reason: {}",
            self.verified, self.distinct, self.threshold, self.signers, self.checked, self.reason,
        )
    }
}

/// The repository the fixtures are served in.
pub fn target() -> Target {
    Router::new(&upstreams())
        .resolve_image("docker.io/library/alpine")
        .expect("the fixture repository resolves")
        .0
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Run the gate's signature verification (discovery through the fixture
/// registry, offline verification, the threshold) for `served`.
pub fn gate(p: &Loaded, served: &Digest, sigs: &Sigs) -> Verdict {
    verify_in(p, served, &sigs.source(served))
}

/// [`gate`] over registry content already built.
pub fn verify_in(p: &Loaded, served: &Digest, source: &FixtureSource) -> Verdict {
    let rule = p.rule_index();
    let threshold = p.policy.rules[rule].threshold;
    let target = target();
    let v = runtime().block_on(image::verify(
        source,
        &p.policy,
        rule,
        &target,
        served,
        Vec::new(),
    ));
    match v {
        Verification::Verified {
            signers, checked, ..
        } => Verdict {
            verified: true,
            distinct: signers.len(),
            threshold,
            signers,
            reason: String::new(),
            checked,
        },
        Verification::Failed {
            reason,
            checked,
            signers,
            ..
        } => Verdict {
            verified: false,
            distinct: signers.len(),
            threshold,
            signers,
            reason,
            checked,
        },
        other => panic!("an image verification gave {other:?}"),
    }
}

/// Run the gate's attestation check (discovery through the fixture
/// registry, offline verification, conditions, freshness at `now`) for `served`.
pub fn attest(
    p: &Loaded,
    served: &Digest,
    source: &FixtureSource,
    now: std::time::SystemTime,
) -> portcullis::gate::attest::Report {
    runtime().block_on(portcullis::gate::attest::verify(
        source,
        &p.policy,
        p.rule_index(),
        &target(),
        served,
        now,
    ))
}

/// Run the whole gate on a manifest held by `source`, as the server does
/// when a client asks for it by digest.
pub fn decide(p: &Loaded, source: FixtureSource, manifest: &[u8]) -> Decision {
    decide_with(p, source, MemoryVerdicts::default(), manifest)
}

/// [`decide`] with verdicts already remembered.
pub fn decide_with(
    p: &Loaded,
    source: FixtureSource,
    verdicts: MemoryVerdicts,
    manifest: &[u8],
) -> Decision {
    let gate = Gate::new(GateParts {
        policy: Policy::load(&p.path, &upstreams()).expect("the policy loads again"),
        policy_path: p.path.clone(),
        upstreams: upstreams(),
        source: Arc::new(source),
        verdicts: Arc::new(verdicts),
        router: Arc::new(Router::new(&upstreams())),
        notary: Arc::new(portcullis::notary::Notary::new(
            Arc::new(MemoryVerdicts::default()),
            true,
            Metrics::new(),
            Clock::system(),
        )),
        metrics: Metrics::new(),
        clock: Clock::system(),
    });
    let m = Manifest::check(&sha256(manifest), manifest.to_vec().into(), None)
        .expect("the manifest parses");
    runtime().block_on(gate.check(&target(), &Reference::Digest(m.digest.clone()), &m, None))
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

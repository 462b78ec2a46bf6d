//! A private Sigstore instance for tests: a Fulcio-like CA, a Rekor-like log
//! key, optionally a CT log key, and a `trusted_root.json` for them that
//! sigstore-verify 0.15 accepts offline.
//!
//! Nothing here talks to a network: every certificate, SCT, SET, inclusion
//! proof and checkpoint is made in-process. Keys are generated fresh each
//! time, so two [`Sigstore`] values are two independent instances (for
//! "untrusted CA" and "SET from an untrusted log" tests).
//!
//! # What is produced
//!
//! * [`Sigstore::leaf`]: leaf certificates with Fulcio extensions (issuer,
//!   GitHub workflow claims) and, with a CT log, an embedded SCT.
//! * [`Sigstore::rekor_bundle`]: Rekor bundle annotations (a hashedrekord
//!   body with a SET), and keyless and key-with-tlog `.sig` layers
//!   ([`Sigstore::sign_keyless`], [`Sigstore::sign_with_key`]).
//! * [`Sigstore::dsse_bundle`]: Sigstore bundles v0.3 (DSSE over an in-toto
//!   statement, with SET, inclusion proof and signed checkpoint).
//!
//! Cosign keys, payloads and [`SigLayer`] are in [`super::signing`], which
//! also re-exports everything public here.
//!
//! # Conventions
//!
//! * Times are Unix seconds ([`now`]). By default a leaf is valid from
//!   `now - 60` to `now + 600` and log entries are integrated at `now - 10`.
//! * The log ID of a log key is sha256 of its DER SPKI (as Rekor does).
//! * The trusted root lists CT logs only when the instance has one
//!   ([`SigstoreOptions::ct_log`]); portcullis skips SCT checks for a root
//!   without CT logs, so leaves need no SCT then.

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber, SigningKey,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::signing::{CosignKey, SigLayer, b64, now, pem};

/// Media type of a Sigstore bundle v0.3 (also the referrer's artifactType).
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// GitHub Actions' OIDC issuer.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const FULCIO_ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 57264, 1];
const SCT_LIST_OID: [u64; 10] = [1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

fn sha256_hex(data: &[u8]) -> String {
    super::hex(&sha256(data))
}

/// Set a certificate's validity from Unix seconds. rcgen takes
/// `time::OffsetDateTime`; this builds them without naming the `time` crate
/// (`OffsetDateTime + std::time::Duration`).
fn set_validity(p: &mut CertificateParams, not_before: i64, not_after: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + Duration::from_secs(not_before.max(0) as u64);
    p.not_after = epoch + Duration::from_secs(not_after.max(0) as u64);
}

// ---------------------------------------------------------------------------
// The Sigstore instance
// ---------------------------------------------------------------------------

/// A certificate authority (self-signed root or intermediate), ECDSA P-256.
pub struct Ca {
    pub key: KeyPair,
    pub params: CertificateParams,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Ca {
    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn ca_params(cn: &str, path_len: Option<u8>, code_signing_eku: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "portcullis-test");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        None => BasicConstraints::Unconstrained,
        Some(n) => BasicConstraints::Constrained(n),
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if code_signing_eku {
        // Fulcio's intermediate carries codeSigning; webpki checks EKUs
        // along the chain.
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    }
    p.serial_number = Some(random_serial());
    set_validity(&mut p, now() - 86_400, now() + 86_400 * 365);
    p
}

fn random_serial() -> SerialNumber {
    // 16 random bytes from a throwaway key's public point; first byte kept
    // positive and non-zero.
    let k = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key generation");
    let mut bytes = sha256(&k.subject_public_key_info())[..16].to_vec();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A transparency-log (Rekor) or CT log key, ECDSA P-256.
pub struct LogKey {
    pub key: KeyPair,
    /// DER SPKI of the public key.
    pub spki: Vec<u8>,
    /// The log ID: sha256 of `spki`.
    pub id: [u8; 32],
}

impl LogKey {
    /// A new random log key.
    pub fn generate() -> LogKey {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
        let spki = key.subject_public_key_info();
        let id = sha256(&spki);
        LogKey { key, spki, id }
    }

    /// The log ID in hex (cosign's `logID`).
    pub fn id_hex(&self) -> String {
        super::hex(&self.id)
    }

    /// ECDSA-SHA256 (DER) over `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).expect("signing")
    }
}

/// The identity a leaf certificate is issued for (its SAN).
#[derive(Clone, Debug)]
pub enum Identity {
    /// A URI SAN, e.g. a GitHub workflow URL.
    Uri(String),
    /// An email SAN.
    Email(String),
}

/// How the OIDC issuer is written into the leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerExtension {
    /// `1.3.6.1.4.1.57264.1.8`, a DER UTF8String (current Fulcio).
    V2,
    /// `1.3.6.1.4.1.57264.1.1`, raw bytes (deprecated Fulcio).
    V1,
    /// Both.
    Both,
    /// Neither (a certificate without an issuer).
    None,
}

/// How GitHub workflow claims are written into the leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimEncoding {
    /// `.1.12` source repository URI (`https://github.com/<repo>`), `.1.14`
    /// source repository ref, `.1.20` build trigger (DER UTF8String).
    Current,
    /// Deprecated `.1.5` repository, `.1.6` ref, `.1.2` trigger (raw strings).
    Deprecated,
    /// Both sets.
    Both,
}

/// GitHub workflow claims for a leaf.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// e.g. `acme/app`
    pub repository: String,
    /// e.g. `refs/heads/main`
    pub git_ref: String,
    /// e.g. `push`
    pub trigger: String,
    pub encoding: ClaimEncoding,
}

/// What a leaf certificate says and how long it is valid.
#[derive(Clone, Debug)]
pub struct LeafOptions {
    pub identity: Identity,
    /// The OIDC issuer, e.g. [`GITHUB_ISSUER`].
    pub issuer: String,
    pub issuer_extension: IssuerExtension,
    pub workflow: Option<Workflow>,
    /// The code-signing EKU (Fulcio always sets it).
    pub code_signing: bool,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Embed an SCT from the instance's CT log (ignored without one).
    pub sct: bool,
}

impl LeafOptions {
    /// A URI identity from `issuer`, valid now for ten minutes.
    pub fn uri(uri: &str, issuer: &str) -> LeafOptions {
        LeafOptions {
            identity: Identity::Uri(uri.to_owned()),
            issuer: issuer.to_owned(),
            issuer_extension: IssuerExtension::V2,
            workflow: None,
            code_signing: true,
            not_before: now() - 60,
            not_after: now() + 600,
            sct: true,
        }
    }

    /// An email identity from `issuer`, valid now for ten minutes.
    pub fn email(email: &str, issuer: &str) -> LeafOptions {
        LeafOptions {
            identity: Identity::Email(email.to_owned()),
            ..LeafOptions::uri("https://unused.test", issuer)
        }
    }

    /// A GitHub Actions identity: SAN
    /// `https://github.com/<repo>/.github/workflows/<workflow>@<git_ref>`,
    /// issuer [`GITHUB_ISSUER`], claims in both encodings.
    pub fn github(
        repository: &str,
        workflow_file: &str,
        git_ref: &str,
        trigger: &str,
    ) -> LeafOptions {
        let san =
            format!("https://github.com/{repository}/.github/workflows/{workflow_file}@{git_ref}");
        LeafOptions {
            workflow: Some(Workflow {
                repository: repository.to_owned(),
                git_ref: git_ref.to_owned(),
                trigger: trigger.to_owned(),
                encoding: ClaimEncoding::Both,
            }),
            ..LeafOptions::uri(&san, GITHUB_ISSUER)
        }
    }

    /// Valid from `not_before` to `not_after` (Unix seconds).
    pub fn validity(mut self, not_before: i64, not_after: i64) -> LeafOptions {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Expired an hour ago (valid for ten minutes, 70 to 60 minutes ago).
    pub fn expired(self) -> LeafOptions {
        let t = now();
        self.validity(t - 4200, t - 3600)
    }

    /// Without the code-signing EKU.
    pub fn without_code_signing(mut self) -> LeafOptions {
        self.code_signing = false;
        self
    }

    pub fn issuer_extension(mut self, e: IssuerExtension) -> LeafOptions {
        self.issuer_extension = e;
        self
    }

    pub fn workflow(mut self, w: Option<Workflow>) -> LeafOptions {
        self.workflow = w;
        self
    }

    /// Do not embed an SCT even when the instance has a CT log.
    pub fn without_sct(mut self) -> LeafOptions {
        self.sct = false;
        self
    }
}

/// A leaf certificate and its (ECDSA P-256) private key.
pub struct Leaf {
    pub key: KeyPair,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Leaf {
    /// The certificate as PEM (the `dev.sigstore.cosign/certificate` annotation).
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    /// ECDSA-SHA256 (DER) over `payload`, with the leaf's key.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.key.sign(payload).expect("signing")
    }
}

/// Options of a [`Sigstore`] instance.
#[derive(Clone, Copy, Debug, Default)]
pub struct SigstoreOptions {
    /// Issue leaves from an intermediate CA (listed in the trusted root
    /// together with the root, as the public-good instance does).
    pub intermediate: bool,
    /// Have a CT log: leaves embed SCTs and the trusted root lists the log.
    pub ct_log: bool,
}

/// Who signs a Sigstore bundle.
pub enum BundleSigner<'a> {
    /// A keyless leaf (the bundle carries the certificate).
    Leaf(&'a Leaf),
    /// A cosign key (the bundle carries a public-key hint).
    Key(&'a CosignKey),
}

/// A private Sigstore deployment: CA, Rekor key, optional CT log.
pub struct Sigstore {
    pub root: Ca,
    pub intermediate: Option<Ca>,
    pub rekor: LogKey,
    pub ct: Option<LogKey>,
    next_log_index: AtomicI64,
}

impl Default for Sigstore {
    fn default() -> Self {
        Sigstore::new()
    }
}

impl Sigstore {
    /// Root CA only, a Rekor key, no CT log.
    pub fn new() -> Sigstore {
        Sigstore::with_options(SigstoreOptions::default())
    }

    pub fn with_options(o: SigstoreOptions) -> Sigstore {
        let root_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
        let root_params = ca_params("test-fulcio-root", None, false);
        let der = root_params
            .self_signed(&root_key)
            .expect("self-signing the root")
            .der()
            .to_vec();
        let root = Ca {
            key: root_key,
            params: root_params,
            der,
        };
        let intermediate = o.intermediate.then(|| {
            let key =
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
            let mut params = ca_params("test-fulcio-intermediate", Some(0), true);
            params.use_authority_key_identifier_extension = true;
            let der = params
                .signed_by(&key, &root.issuer())
                .expect("issuing the intermediate")
                .der()
                .to_vec();
            Ca { key, params, der }
        });
        Sigstore {
            root,
            intermediate,
            rekor: LogKey::generate(),
            ct: o.ct_log.then(LogKey::generate),
            next_log_index: AtomicI64::new(1000),
        }
    }

    /// The CA that issues leaves (the intermediate if any, else the root).
    pub fn issuing_ca(&self) -> &Ca {
        self.intermediate.as_ref().unwrap_or(&self.root)
    }

    /// The issuing chain as PEM, leaf-side first (intermediate, root): the
    /// `dev.sigstore.cosign/chain` annotation.
    pub fn chain_pem(&self) -> String {
        let mut s = String::new();
        if let Some(i) = &self.intermediate {
            s.push_str(&i.pem());
        }
        s.push_str(&self.root.pem());
        s
    }

    /// A `trusted_root.json` (media type `...trustedroot+json;version=0.1`)
    /// trusting this instance's CA chain and Rekor key, and its CT log when it
    /// has one (`ctlogs` is empty otherwise). Validity starts in 2000.
    pub fn trusted_root_json(&self) -> String {
        let start = "2000-01-01T00:00:00Z";
        let log = |l: &LogKey, url: &str| {
            json!({"baseUrl": url, "hashAlgorithm": "SHA2_256",
                   "publicKey": {"rawBytes": b64(&l.spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                 "validFor": {"start": start}},
                   "logId": {"keyId": b64(l.id)}})
        };
        let mut chain = Vec::new();
        if let Some(i) = &self.intermediate {
            chain.push(json!({"rawBytes": b64(&i.der)}));
        }
        chain.push(json!({"rawBytes": b64(&self.root.der)}));
        serde_json::to_string_pretty(&json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor, "https://rekor.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "portcullis-test", "commonName": "test-fulcio"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": chain},
                "validFor": {"start": start}}],
            "ctlogs": self.ct.iter().map(|l| log(l, "https://ctfe.test")).collect::<Vec<_>>(),
            "timestampAuthorities": []
        }))
        .expect("trusted root serializes")
    }

    /// Issue a leaf certificate as Fulcio would.
    pub fn leaf(&self, o: &LeafOptions) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation");
        let ca = self.issuing_ca();
        let serial = random_serial();
        let mut der = leaf_params(o, &serial, None)
            .signed_by(&key, &ca.issuer())
            .expect("issuing a leaf")
            .der()
            .to_vec();
        if let (Some(ct), true) = (&self.ct, o.sct) {
            // The SCT signs the TBS without the SCT extension (a precert);
            // re-issue the same TBS with the SCT list appended last.
            let tbs = der_first_element(&der)
                .expect("a certificate is a SEQUENCE")
                .to_vec();
            let ext = sct_extension(ct, &ca.key.subject_public_key_info(), &tbs, now() * 1000);
            der = leaf_params(o, &serial, Some(ext))
                .signed_by(&key, &ca.issuer())
                .expect("issuing a leaf")
                .der()
                .to_vec();
        }
        Leaf { key, der }
    }

    /// A hashedrekord v0.0.1 body for `payload` signed with `signature` by
    /// `verifier_pem` (a certificate or a public key, PEM).
    pub fn hashedrekord_body(payload: &[u8], signature: &[u8], verifier_pem: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": sha256_hex(payload)}},
                "signature": {"content": b64(signature),
                              "publicKey": {"content": b64(verifier_pem)}}}}))
        .expect("body serializes")
    }

    fn next_index(&self) -> i64 {
        self.next_log_index.fetch_add(1, Ordering::SeqCst)
    }

    /// A Signed Entry Timestamp: this instance's Rekor key over the RFC 8785
    /// canonical JSON of `{body, integratedTime, logID, logIndex}`.
    pub fn set(&self, body_b64: &str, integrated_time: i64, log_index: i64) -> String {
        let canonical = set_payload(body_b64, integrated_time, &self.rekor.id_hex(), log_index);
        b64(self.rekor.sign(canonical.as_bytes()))
    }

    /// A Rekor bundle annotation that claims this instance's log ID but whose
    /// SET is signed by `signer` (another log's key): a forged promise.
    pub fn forged_rekor_bundle(&self, body: &[u8], signer: &LogKey) -> String {
        let body_b64 = b64(body);
        let (t, index) = (now() - 10, self.next_index());
        let canonical = set_payload(&body_b64, t, &self.rekor.id_hex(), index);
        json!({
            "SignedEntryTimestamp": b64(signer.sign(canonical.as_bytes())),
            "Payload": {"body": body_b64, "integratedTime": t,
                        "logIndex": index, "logID": self.rekor.id_hex()}
        })
        .to_string()
    }

    /// The `dev.sigstore.cosign/bundle` annotation for a Rekor entry with
    /// `body` (e.g. [`Sigstore::hashedrekord_body`]), integrated at
    /// `now - 10`, with a SET from this instance's log.
    pub fn rekor_bundle(&self, body: &[u8]) -> String {
        self.rekor_bundle_at(body, now() - 10)
    }

    /// [`Sigstore::rekor_bundle`] integrated at `integrated_time`.
    pub fn rekor_bundle_at(&self, body: &[u8], integrated_time: i64) -> String {
        let body_b64 = b64(body);
        let index = self.next_index();
        json!({
            "SignedEntryTimestamp": self.set(&body_b64, integrated_time, index),
            "Payload": {"body": body_b64, "integratedTime": integrated_time,
                        "logIndex": index, "logID": self.rekor.id_hex()}
        })
        .to_string()
    }

    /// A keyless `.sig` layer as `cosign sign` writes it: `payload` signed by
    /// the leaf, with certificate, chain and a Rekor bundle from this instance.
    pub fn sign_keyless(&self, leaf: &Leaf, payload: &[u8]) -> SigLayer {
        self.sign_keyless_at(leaf, payload, now() - 10)
    }

    /// [`Sigstore::sign_keyless`] with the log entry integrated at `integrated_time`.
    pub fn sign_keyless_at(&self, leaf: &Leaf, payload: &[u8], integrated_time: i64) -> SigLayer {
        self.sign_keyless_with(leaf, &self.chain_pem(), payload, integrated_time)
    }

    /// A keyless `.sig` layer whose leaf and chain may come from elsewhere
    /// (e.g. another instance's CA: `other.leaf(..)`, `other.chain_pem()`),
    /// logged in *this* instance's Rekor at `integrated_time`.
    pub fn sign_keyless_with(
        &self,
        leaf: &Leaf,
        chain_pem: &str,
        payload: &[u8],
        integrated_time: i64,
    ) -> SigLayer {
        let signature = leaf.sign(payload);
        let cert = leaf.pem();
        let body = Sigstore::hashedrekord_body(payload, &signature, &cert);
        SigLayer::new(payload.to_vec(), &signature)
            .with_certificate(&cert)
            .with_chain(chain_pem)
            .with_rekor_bundle(&self.rekor_bundle_at(&body, integrated_time))
    }

    /// A `.sig` layer signed by a cosign key with a Rekor bundle from this
    /// instance (`cosign sign --key` with tlog upload).
    pub fn sign_with_key(&self, key: &CosignKey, payload: &[u8]) -> SigLayer {
        let signature = key.sign(payload);
        let body = Sigstore::hashedrekord_body(payload, &signature, &key.public_key_pem());
        SigLayer::new(payload.to_vec(), &signature).with_rekor_bundle(&self.rekor_bundle(&body))
    }

    /// A Rekor v1 tlog entry for a bundle: SET, and an inclusion proof in a
    /// two-leaf tree (ours at index 1) with a checkpoint signed by this
    /// instance's log key.
    pub fn tlog_entry(&self, kind: &str, body: &[u8]) -> Value {
        self.tlog_entry_at(kind, body, now() - 10)
    }

    /// [`Sigstore::tlog_entry`] integrated at `integrated_time`.
    pub fn tlog_entry_at(&self, kind: &str, body: &[u8], integrated_time: i64) -> Value {
        let body_b64 = b64(body);
        let other = sha256(b"\x00another entry");
        let ours = sha256(&[&[0u8][..], body].concat());
        let root = sha256(&[&[1u8][..], &other, &ours].concat());
        let (index, tree_size) = (1i64, 2u64);
        let note = format!("rekor.test - 42\n{tree_size}\n{}\n", b64(root));
        let signature = self.rekor.sign(note.as_bytes());
        let hint = &self.rekor.id[..4];
        let checkpoint = format!(
            "{note}\n\u{2014} rekor.test {}\n",
            b64([hint, &signature[..]].concat())
        );
        json!({
            "logIndex": index.to_string(),
            "logId": {"keyId": b64(self.rekor.id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": self.set(&body_b64, integrated_time, index)},
            "inclusionProof": {"logIndex": index.to_string(), "rootHash": b64(root),
                               "treeSize": tree_size.to_string(), "hashes": [b64(other)],
                               "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": body_b64,
        })
    }

    /// A Sigstore bundle v0.3 as cosign v3 writes it: a DSSE envelope over
    /// `statement` (see [`super::signing::cosign_sign_statement`],
    /// [`super::signing::in_toto_statement`]) signed by `signer`, with a dsse
    /// v0.0.1 tlog entry from this instance.
    pub fn dsse_bundle(&self, signer: BundleSigner<'_>, statement: &[u8]) -> String {
        let pae = dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement);
        let (signature, verifier_pem, material) = match signer {
            BundleSigner::Leaf(leaf) => (
                leaf.sign(&pae),
                leaf.pem(),
                json!({"certificate": {"rawBytes": b64(&leaf.der)}}),
            ),
            BundleSigner::Key(key) => (
                key.sign(&pae),
                key.public_key_pem(),
                json!({"publicKey": {"hint": ""}}),
            ),
        };
        let envelope = json!({"payload": b64(statement), "payloadType": IN_TOTO_PAYLOAD_TYPE,
                              "signatures": [{"sig": b64(&signature), "keyid": ""}]});
        let body = serde_json::to_vec(&json!({
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256",
                                 "value": sha256_hex(&serde_json::to_vec(&envelope).expect("serializes"))},
                "payloadHash": {"algorithm": "sha256", "value": sha256_hex(statement)},
                "signatures": [{"signature": b64(&signature), "verifier": b64(&verifier_pem)}]}}))
        .expect("body serializes");
        let mut material = material;
        material["tlogEntries"] = json!([self.tlog_entry("dsse", &body)]);
        json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": material,
            "dsseEnvelope": envelope,
        })
        .to_string()
    }
}

/// What a SET signs: the RFC 8785 canonical JSON of the entry's body,
/// integrated time, log ID (hex) and log index (keys in sorted order).
fn set_payload(body_b64: &str, integrated_time: i64, log_id_hex: &str, log_index: i64) -> String {
    format!(
        r#"{{"body":{},"integratedTime":{integrated_time},"logID":"{log_id_hex}","logIndex":{log_index}}}"#,
        serde_json::to_string(body_b64).expect("string serializes"),
    )
}

/// DSSE pre-authentication encoding.
pub fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

fn fulcio_oid(n: u64) -> Vec<u64> {
    let mut o = FULCIO_ARC.to_vec();
    o.push(n);
    o
}

/// DER length octets.
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=127 => vec![n as u8],
        128..=255 => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend(der_len(content.len()));
    v.extend_from_slice(content);
    v
}

/// A DER UTF8String (Fulcio's encoding from `.1.8` on).
fn der_utf8(s: &str) -> Vec<u8> {
    der_tlv(0x0c, s.as_bytes())
}

/// The first element inside the outermost DER SEQUENCE (for a certificate:
/// the TBSCertificate), as its full TLV bytes.
fn der_first_element(der: &[u8]) -> Option<&[u8]> {
    fn header(b: &[u8]) -> Option<(usize, usize)> {
        // (header length, content length)
        let first = *b.get(1)?;
        if first < 0x80 {
            return Some((2, first as usize));
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < 2 + n {
            return None;
        }
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |a, x| (a << 8) | *x as usize);
        Some((2 + n, len))
    }
    let (h, _) = header(der)?;
    let inner = &der[h..];
    let (ih, il) = header(inner)?;
    inner.get(..ih + il)
}

fn leaf_params(
    o: &LeafOptions,
    serial: &SerialNumber,
    sct: Option<CustomExtension>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    // Fulcio leaves have an empty subject.
    p.distinguished_name = DistinguishedName::new();
    let ia5 = |s: &str| Ia5String::try_from(s.to_owned()).expect("an IA5 identity");
    p.subject_alt_names = vec![match &o.identity {
        Identity::Uri(u) => SanType::URI(ia5(u)),
        Identity::Email(e) => SanType::Rfc822Name(ia5(e)),
    }];
    p.serial_number = Some(serial.clone());
    set_validity(&mut p, o.not_before, o.not_after);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if o.code_signing {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    }
    p.use_authority_key_identifier_extension = true;
    let raw =
        |n: u64, s: &str| CustomExtension::from_oid_content(&fulcio_oid(n), s.as_bytes().to_vec());
    let utf8 = |n: u64, s: &str| CustomExtension::from_oid_content(&fulcio_oid(n), der_utf8(s));
    let ext = &mut p.custom_extensions;
    if matches!(
        o.issuer_extension,
        IssuerExtension::V1 | IssuerExtension::Both
    ) {
        ext.push(raw(1, &o.issuer));
    }
    if matches!(
        o.issuer_extension,
        IssuerExtension::V2 | IssuerExtension::Both
    ) {
        ext.push(utf8(8, &o.issuer));
    }
    if let Some(w) = &o.workflow {
        if matches!(w.encoding, ClaimEncoding::Deprecated | ClaimEncoding::Both) {
            ext.push(raw(2, &w.trigger));
            ext.push(raw(5, &w.repository));
            ext.push(raw(6, &w.git_ref));
        }
        if matches!(w.encoding, ClaimEncoding::Current | ClaimEncoding::Both) {
            ext.push(utf8(12, &format!("https://github.com/{}", w.repository)));
            ext.push(utf8(14, &w.git_ref));
            ext.push(utf8(20, &w.trigger));
        }
    }
    if let Some(e) = sct {
        ext.push(e);
    }
    p
}

/// An RFC 6962 embedded SCT list extension for the precert `tbs`, issued by
/// the CA whose SPKI is `issuer_spki`, signed by `ct`.
fn sct_extension(
    ct: &LogKey,
    issuer_spki: &[u8],
    tbs: &[u8],
    timestamp_ms: i64,
) -> CustomExtension {
    let ts = (timestamp_ms as u64).to_be_bytes();
    let mut signed = vec![0u8 /* v1 */, 0u8 /* certificate_timestamp */];
    signed.extend(ts);
    signed.extend(1u16.to_be_bytes()); // precert_entry
    signed.extend(sha256(issuer_spki));
    let n = tbs.len();
    signed.extend([(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    signed.extend(tbs);
    signed.extend(0u16.to_be_bytes()); // no extensions
    let signature = ct.sign(&signed);
    let mut sct = vec![0u8];
    sct.extend(ct.id);
    sct.extend(ts);
    sct.extend(0u16.to_be_bytes());
    sct.extend([4u8 /* sha256 */, 3u8 /* ecdsa */]);
    sct.extend((signature.len() as u16).to_be_bytes());
    sct.extend(&signature);
    let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
    list.extend((sct.len() as u16).to_be_bytes());
    list.extend(sct);
    CustomExtension::from_oid_content(&SCT_LIST_OID, der_tlv(0x04, &list))
}

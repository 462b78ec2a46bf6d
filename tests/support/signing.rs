//! Test-time signing: cosign keys, simple-signing payloads, in-toto
//! statements and legacy `.sig` layers. The private Sigstore instance (CA,
//! leaves, Rekor and CT logs, bundles) lives in [`super::sigstore`] and is
//! re-exported here, so `support::signing::{Sigstore, LeafOptions, ...}`
//! reaches all of the signing support.
//!
//! Nothing here talks to a network: every signature is made in-process, and
//! keys are generated fresh each time.
//!
//! # What is produced
//!
//! * [`CosignKey`]: ECDSA P-256 / P-384, Ed25519, RSA-2048 key pairs. The
//!   public key is a `PUBLIC KEY` (SPKI) PEM for the policy's `[keys.*]`.
//!   `sign` signs like `cosign sign --key`: P-256 ECDSA-SHA256 (DER),
//!   P-384 ECDSA-SHA384 (DER), Ed25519 (pure), RSA PKCS#1 v1.5 SHA-256.
//! * [`simple_signing_payload`]: the legacy `.sig` payload for a digest.
//! * [`in_toto_statement`], [`cosign_sign_statement`]: what a DSSE bundle
//!   signs ([`Sigstore::dsse_bundle`]).
//! * [`SigLayer`]: one layer of a legacy `sha256-<hex>.sig` manifest
//!   (payload + annotations), for `oci_push::push_sig`.
//! * Re-exported from [`super::sigstore`]: [`Sigstore`] and what it takes
//!   and makes ([`LeafOptions`], [`Leaf`], [`BundleSigner`], ...).
//!
//! Times are Unix seconds ([`now`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{KeyPair, PublicKeyData, SigningKey};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

// Each test binary uses its own subset of these (as with `dead_code` in
// `support`), so an unused re-export is expected, not a leftover.
#[allow(unused_imports)]
pub use super::sigstore::{
    BUNDLE_V03, BundleSigner, Ca, ClaimEncoding, GITHUB_ISSUER, Identity, IssuerExtension, Leaf,
    LeafOptions, LogKey, Sigstore, SigstoreOptions, Workflow, dsse_pae,
};

/// Media type of a legacy cosign signature layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature over the layer's payload.
pub const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// Annotation holding the signing certificate (PEM), keyless only.
pub const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// Annotation holding the issuing chain (PEM), keyless only.
pub const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
/// Annotation holding the Rekor bundle (SET) as cosign stores it.
pub const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";
/// The in-toto predicate type of a cosign v3 signature.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Now, in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Base64 (standard alphabet, padded).
pub fn b64(data: impl AsRef<[u8]>) -> String {
    STANDARD.encode(data)
}

/// PEM armour (64-column base64) of `der` under `label`.
pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

// ---------------------------------------------------------------------------
// Cosign keys
// ---------------------------------------------------------------------------

/// The key types cosign supports for `--key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256, signs ECDSA-SHA256 (ASN.1 DER signature).
    P256,
    /// ECDSA P-384, signs ECDSA-SHA384 (ASN.1 DER signature).
    P384,
    /// Ed25519 (pure, over the payload).
    Ed25519,
    /// RSA 2048, signs PKCS#1 v1.5 with SHA-256.
    Rsa,
}

impl KeyKind {
    /// All four, for loops over key types.
    pub const ALL: [KeyKind; 4] = [KeyKind::P256, KeyKind::P384, KeyKind::Ed25519, KeyKind::Rsa];

    /// A short lower-case name (`p256`, `p384`, `ed25519`, `rsa`).
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::P256 => "p256",
            KeyKind::P384 => "p384",
            KeyKind::Ed25519 => "ed25519",
            KeyKind::Rsa => "rsa",
        }
    }
}

/// A cosign signing key pair (fresh random key).
pub struct CosignKey {
    kind: KeyKind,
    key: KeyPair,
}

impl CosignKey {
    /// A new random key of `kind`.
    pub fn generate(kind: KeyKind) -> CosignKey {
        let key = match kind {
            KeyKind::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyKind::Rsa => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        };
        CosignKey {
            kind,
            key: key.expect("key generation"),
        }
    }

    /// `generate(KeyKind::P256)`.
    pub fn p256() -> CosignKey {
        CosignKey::generate(KeyKind::P256)
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The public key as a `-----BEGIN PUBLIC KEY-----` (SPKI) PEM, what
    /// `cosign.pub` holds and the policy's `public_key` file must contain.
    pub fn public_key_pem(&self) -> String {
        pem("PUBLIC KEY", &self.public_key_der())
    }

    /// The public key as DER SPKI.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// Sign `payload` as cosign does for this key type.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.key.sign(payload).expect("signing")
    }

    /// A `.sig` layer for `payload` signed by this key, without a log entry
    /// (`cosign sign --tlog-upload=false`).
    pub fn sign_layer(&self, payload: &[u8]) -> SigLayer {
        SigLayer::new(payload.to_vec(), &self.sign(payload))
    }
}

// ---------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------

/// The cosign simple-signing payload for `digest` (`sha256:<hex>`), with
/// `docker_reference` (e.g. `registry.test/test/img`) as the identity. The
/// bytes are exactly what cosign writes (and what gets signed).
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{docker_reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// An in-toto v1 statement with one subject (`name`, sha256 of `digest`,
/// which is `sha256:<hex>` or bare hex) and `predicate_type`/`predicate`.
pub fn in_toto_statement(
    name: &str,
    digest: &str,
    predicate_type: &str,
    predicate: Value,
) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .expect("statement serializes")
}

/// The statement cosign v3 signs for an image: predicate type
/// [`COSIGN_SIGN_PREDICATE`], empty predicate.
pub fn cosign_sign_statement(name: &str, digest: &str) -> Vec<u8> {
    in_toto_statement(name, digest, COSIGN_SIGN_PREDICATE, json!({}))
}

// ---------------------------------------------------------------------------
// Legacy .sig layers
// ---------------------------------------------------------------------------

/// One layer of a legacy cosign `.sig` manifest: the payload blob and the
/// layer's annotations.
#[derive(Clone, Debug)]
pub struct SigLayer {
    /// Layer media type ([`SIMPLE_SIGNING`] unless changed on purpose).
    pub media_type: String,
    /// The layer blob: the signed payload.
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl SigLayer {
    /// A simple-signing layer with `signature` (raw bytes, base64-encoded
    /// into [`ANN_SIGNATURE`]).
    pub fn new(payload: Vec<u8>, signature: &[u8]) -> SigLayer {
        SigLayer {
            media_type: SIMPLE_SIGNING.to_owned(),
            payload,
            annotations: BTreeMap::from([(ANN_SIGNATURE.to_owned(), b64(signature))]),
        }
    }

    /// The base64 signature annotation.
    pub fn signature_b64(&self) -> &str {
        self.annotations
            .get(ANN_SIGNATURE)
            .map_or("", String::as_str)
    }

    /// Set [`ANN_CERTIFICATE`] (PEM).
    pub fn with_certificate(self, pem: &str) -> SigLayer {
        self.with_annotation(ANN_CERTIFICATE, pem)
    }

    /// Set [`ANN_CHAIN`] (PEM, one or more certificates).
    pub fn with_chain(self, pem: &str) -> SigLayer {
        self.with_annotation(ANN_CHAIN, pem)
    }

    /// Set [`ANN_BUNDLE`] (the JSON of [`Sigstore::rekor_bundle`]).
    pub fn with_rekor_bundle(self, json: &str) -> SigLayer {
        self.with_annotation(ANN_BUNDLE, json)
    }

    /// Set any annotation.
    pub fn with_annotation(mut self, key: &str, value: &str) -> SigLayer {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Remove an annotation.
    pub fn without_annotation(mut self, key: &str) -> SigLayer {
        self.annotations.remove(key);
        self
    }

    /// Replace the payload (the signature stays: a tampered layer).
    pub fn with_payload(mut self, payload: Vec<u8>) -> SigLayer {
        self.payload = payload;
        self
    }
}

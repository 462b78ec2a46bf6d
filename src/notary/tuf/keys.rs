//! Notary key types and signature checks: the keys a role lists, parsed
//! (`ecdsa`, `ecdsa-x509`, `rsa`, `rsa-x509`, `ed25519`) and checked against
//! their ids, and whether a signature by one verifies. Must not do I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use x509_cert::der::{Decode as _, DecodePem as _};

use super::{MAX_KEYS, TufError, canonical, malformed};
use crate::json::Json;

/// A public key of a role, checked against its id.
#[derive(Clone, Debug)]
pub struct Key {
    pub(super) public: PublicKey,
    /// For certificates: when they stop being valid.
    pub(super) not_after: Option<SystemTime>,
}

/// A public key in a form ring verifies with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// The uncompressed P-256 point.
    EcdsaP256(Vec<u8>),
    /// PKCS#1 RSAPublicKey.
    Rsa(Vec<u8>),
    Ed25519(Vec<u8>),
}

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const ED25519: &str = "1.3.101.112";

impl PublicKey {
    /// A key from a DER SubjectPublicKeyInfo.
    pub fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
        let spki = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        Self::from_info(&spki)
    }

    fn from_info(spki: &x509_cert::spki::SubjectPublicKeyInfoRef<'_>) -> Result<PublicKey, String> {
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or("the public key is not whole bytes")?
            .to_vec();
        let oid = spki.algorithm.oid.to_string();
        match oid.as_str() {
            EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok())
                    .map(|o| o.to_string());
                if curve.as_deref() != Some(P256) {
                    return Err("an ECDSA key not on P-256".into());
                }
                Ok(PublicKey::EcdsaP256(bits))
            }
            RSA_ENCRYPTION => Ok(PublicKey::Rsa(bits)),
            ED25519 => Ok(PublicKey::Ed25519(bits)),
            other => Err(format!("an unsupported key algorithm {other}")),
        }
    }

    /// A hex fingerprint of the key.
    pub fn fingerprint(&self) -> String {
        Sha256::digest(self.identity())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The bytes that identify the key (two ids for one key count once).
    pub(super) fn identity(&self) -> &[u8] {
        match self {
            PublicKey::EcdsaP256(b) | PublicKey::Rsa(b) | PublicKey::Ed25519(b) => b,
        }
    }

    /// Does `sig` (base64) by this key verify over `message` with `method`?
    pub(super) fn verifies(&self, method: &str, message: &[u8], sig: &str) -> bool {
        use ring::signature as s;
        let Ok(sig) = STANDARD.decode(sig) else {
            return false;
        };
        let alg: &dyn s::VerificationAlgorithm = match (self, method) {
            (PublicKey::EcdsaP256(_), "ecdsa") if sig.len() == 64 => &s::ECDSA_P256_SHA256_FIXED,
            (PublicKey::EcdsaP256(_), "ecdsa") => &s::ECDSA_P256_SHA256_ASN1,
            (PublicKey::Rsa(_), "rsapss") => &s::RSA_PSS_2048_8192_SHA256,
            (PublicKey::Rsa(_), "rsapkcs1v15") => &s::RSA_PKCS1_2048_8192_SHA256,
            // Notary writes "eddsa"; TUF and older Notary clients "ed25519".
            (PublicKey::Ed25519(_), "eddsa" | "ed25519") => &s::ED25519,
            _ => return false,
        };
        s::UnparsedPublicKey::new(alg, self.identity())
            .verify(message, &sig)
            .is_ok()
    }
}

#[derive(Deserialize, Serialize)]
struct RawKey {
    keytype: String,
    keyval: RawKeyVal,
}

#[derive(Deserialize, Serialize)]
struct RawKeyVal {
    public: String,
    #[serde(default)]
    private: Option<serde_json::Value>,
}

pub(super) fn parse_keys(
    role: &str,
    raw: &BTreeMap<String, serde_json::Value>,
) -> Result<HashMap<String, Key>, TufError> {
    if raw.len() > MAX_KEYS {
        return Err(malformed(role, format!("more than {MAX_KEYS} keys")));
    }
    raw.iter()
        .map(|(id, v)| parse_key(role, id, v).map(|k| (id.clone(), k)))
        .collect()
}

fn parse_key(role: &str, id: &str, value: &serde_json::Value) -> Result<Key, TufError> {
    let bad = |p: String| malformed(role, format!("key {id}: {p}"));
    // The id is the sha256 of the key's canonical JSON.
    let text = serde_json::to_vec(value).map_err(|e| bad(e.to_string()))?;
    let json = Json::parse(&text).map_err(|e| bad(e.to_string()))?;
    let mut canon = Vec::new();
    canonical(&json, &mut canon).map_err(bad)?;
    let computed: String = Sha256::digest(&canon)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if computed != id {
        return Err(bad(format!("its id should be {computed}")));
    }
    let raw: RawKey = serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
    if raw.keyval.private.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(bad("a private key is listed".into()));
    }
    let public = STANDARD
        .decode(&raw.keyval.public)
        .map_err(|e| bad(format!("public is not base64: {e}")))?;
    match raw.keytype.as_str() {
        "ecdsa" | "rsa" => {
            let key = PublicKey::from_spki(&public).map_err(bad)?;
            let fits = matches!(
                (raw.keytype.as_str(), &key),
                ("ecdsa", PublicKey::EcdsaP256(_)) | ("rsa", PublicKey::Rsa(_))
            );
            if !fits {
                return Err(bad(format!("not an {} key", raw.keytype)));
            }
            Ok(Key {
                public: key,
                not_after: None,
            })
        }
        "ecdsa-x509" | "rsa-x509" => {
            let cert = x509_cert::Certificate::from_pem(&public)
                .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
            let tbs = &cert.tbs_certificate;
            let key = PublicKey::from_info(
                &x509_cert::spki::SubjectPublicKeyInfoRef::from_der(
                    &x509_cert::der::Encode::to_der(&tbs.subject_public_key_info)
                        .map_err(|e| bad(e.to_string()))?,
                )
                .map_err(|e| bad(e.to_string()))?,
            )
            .map_err(bad)?;
            let fits = matches!(
                (raw.keytype.as_str(), &key),
                ("ecdsa-x509", PublicKey::EcdsaP256(_)) | ("rsa-x509", PublicKey::Rsa(_))
            );
            if !fits {
                return Err(bad(format!(
                    "the certificate does not hold an {} key",
                    raw.keytype
                )));
            }
            Ok(Key {
                public: key,
                not_after: Some(tbs.validity.not_after.to_system_time()),
            })
        }
        "ed25519" => {
            if public.len() != 32 {
                return Err(bad("an ed25519 key is 32 bytes".into()));
            }
            Ok(Key {
                public: PublicKey::Ed25519(public),
                not_after: None,
            })
        }
        other => Err(bad(format!("unsupported key type {other:?}"))),
    }
}

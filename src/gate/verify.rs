//! Checking one piece of evidence against a rule's signers, offline.
//!
//! Uses `sigstore-verify` for everything cryptographic: certificate chains to
//! the root's Fulcio CAs with the code-signing EKU and validity at the proven
//! time, SCTs (when the root lists CT logs), Rekor SETs, inclusion proofs and
//! checkpoints, RFC 3161 timestamps, and that the log entry is for this very
//! signature and key. Legacy cosign `.sig` layers are assembled into the
//! equivalent v0.1 bundle so they get the same checks. A keyed signature
//! without a log entry is checked with the key alone, as cosign's
//! `--tlog-upload=false` allows, unless the signer says `tlog = "required"`.
//! What the library leaves to callers is done here: the signed payload must
//! name the digest being served, a DSSE bundle counts only with the cosign
//! signature predicate, and identities (issuer, subject, workflow claims) are
//! matched with the policy's anchored matchers on the *verified* certificate.
//! Pure computation: call it off the async threads.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sigstore_verify::crypto::{KeyAlgorithm, SigningScheme, verify_signature};
use sigstore_verify::types::{
    ArtifactDigest, Bundle, DerPublicKey, DsseEnvelope, HashAlgorithm, Sha256Hash, Sha512Hash,
    SignatureBytes, SignatureContent,
};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, VerificationResult};

use super::discover::Evidence;
use super::statement::Head;
use crate::digest::{Algorithm, Digest};
use crate::policy::{Root, Signer, Tlog, WorkflowClaims};

/// The in-toto predicate that makes a DSSE bundle a signature (not an attestation).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// What one piece of evidence proved.
#[derive(Debug, Default)]
pub struct Checked {
    /// (signer index, signing identity) for each signer it satisfied.
    pub matched: Vec<(usize, String)>,
    /// Why it satisfied no signer.
    pub rejection: Option<String>,
    /// The earliest time a transparency log or timestamp authority proved
    /// for it, when a matching signer's verification checked one.
    pub time: Option<SystemTime>,
}

/// What one signer's check proved: the signing identity and the verified time.
struct Proved {
    identity: String,
    time: Option<SystemTime>,
}

/// The earliest authenticated time in a verification result.
fn verified_time(result: &VerificationResult) -> Option<SystemTime> {
    result
        .verified_timestamps()
        .iter()
        .copied()
        .chain(result.integrated_time())
        .map(SystemTime::from)
        .min()
}

/// The signed content a piece of evidence offers, once parsed.
enum Signed {
    /// A signature over detached content, with cosign's legacy annotations:
    /// a simple-signing payload, or a DSSE envelope's pre-authentication
    /// encoding.
    Detached {
        /// What the plain signature is over.
        message: Vec<u8>,
        signature: SignatureBytes,
        /// What the assembled bundle is verified against.
        over: Over,
        /// The v0.1 bundle equivalents, when there is a log entry or a
        /// certificate: declaring a SHA-256 message digest first, then (for
        /// simple-signing payloads) SHA-384, which P-384 keys sign with.
        bundles: Vec<Bundle>,
        has_certificate: bool,
        has_log_entry: bool,
    },
    /// A Sigstore bundle over the subject's digest.
    Bundle(Bundle),
}

/// What an assembled legacy bundle signs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Over {
    /// The payload bytes themselves (a message signature).
    Payload,
    /// The subject's digest, named by a DSSE statement.
    Subject,
}

/// What a piece of evidence must prove about its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// That the subject (an image being served) is signed: only cosign's
    /// signature formats count, attestations do not.
    Signature,
    /// That the evidence itself (a signature or attestation artifact being
    /// served) is signed content about the subject: attestations count.
    Attachment,
}

fn pem_to_der(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        _ => Err("a certificate annotation holds no PEM certificate".into()),
    }
}

/// The hash a bundle declares for the signed message.
#[derive(Clone, Copy)]
enum MessageDigest {
    Sha256,
    Sha384,
}

/// The content of a v0.1 bundle for a legacy simple-signing signature.
fn message_signature(
    digest: MessageDigest,
    payload: &[u8],
    signature_b64: &str,
) -> (&'static str, Value) {
    let (algorithm, digest) = match digest {
        MessageDigest::Sha256 => (
            "SHA2_256",
            sigstore_verify::crypto::sha256(payload).as_bytes().to_vec(),
        ),
        MessageDigest::Sha384 => (
            "SHA2_384",
            sigstore_verify::crypto::sha384(payload).as_bytes().to_vec(),
        ),
    };
    (
        "messageSignature",
        json!({
            "messageDigest": { "algorithm": algorithm, "digest": STANDARD.encode(digest) },
            "signature": signature_b64,
        }),
    )
}

/// Assemble the v0.1 bundle cosign's legacy annotations amount to, around
/// `content` (a message signature or a DSSE envelope).
fn legacy_bundle(
    content: (&'static str, Value),
    certificate: Option<&str>,
    chain: Option<&str>,
    rekor_bundle: Option<&str>,
) -> Result<Bundle, String> {
    let mut material = match certificate {
        Some(pem) => {
            let mut certs = pem_to_der(pem)?;
            if certs.len() != 1 {
                return Err("the certificate annotation must hold exactly one certificate".into());
            }
            if let Some(chain) = chain {
                certs.extend(pem_to_der(chain)?);
            }
            let certs: Vec<Value> = certs
                .iter()
                .map(|c| json!({ "rawBytes": STANDARD.encode(c) }))
                .collect();
            json!({ "x509CertificateChain": { "certificates": certs } })
        }
        None => json!({ "publicKey": { "hint": "" } }),
    };
    let mut entries = Vec::new();
    if let Some(rb) = rekor_bundle {
        let bad = |what: &str| format!("the Rekor bundle annotation is malformed: {what}");
        let rb: Value = serde_json::from_str(rb).map_err(|_| bad("not JSON"))?;
        let p = &rb["Payload"];
        let body_b64 = p["body"].as_str().ok_or_else(|| bad("no body"))?;
        let body: Value = STANDARD
            .decode(body_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("body is not base64 JSON"))?;
        let log_id = p["logID"].as_str().ok_or_else(|| bad("no logID"))?;
        let log_id = (log_id.len() % 2 == 0 && log_id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| {
                (0..log_id.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&log_id[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
            })
            .and_then(Result::ok)
            .ok_or_else(|| bad("logID is not hex"))?;
        entries.push(json!({
            "logIndex": p["logIndex"].as_i64().ok_or_else(|| bad("no logIndex"))?.to_string(),
            "logId": { "keyId": STANDARD.encode(log_id) },
            "kindVersion": { "kind": body["kind"], "version": body["apiVersion"] },
            "integratedTime": p["integratedTime"].as_i64().ok_or_else(|| bad("no integratedTime"))?.to_string(),
            "inclusionPromise": { "signedEntryTimestamp": rb["SignedEntryTimestamp"] },
            "canonicalizedBody": body_b64,
        }));
    }
    material["tlogEntries"] = json!(entries);
    let mut bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": material,
    });
    bundle[content.0] = content.1;
    Bundle::from_json(&bundle.to_string())
        .map_err(|e| format!("the signature does not form a valid bundle: {e}"))
}

/// The digest a piece of evidence says it signs: a legacy payload's
/// `docker-manifest-digest`, a DSSE statement's first sha256 subject. A
/// bundle names its subject in the manifest that carries it, not here.
pub fn claimed_subject(evidence: &Evidence) -> Result<Digest, String> {
    match evidence {
        Evidence::Legacy { payload, .. } => {
            let p: Value = serde_json::from_slice(payload)
                .map_err(|_| "the payload is not JSON".to_owned())?;
            p["critical"]["image"]["docker-manifest-digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| "the payload names no image digest".to_owned())
        }
        Evidence::Envelope { json, .. } => {
            let envelope = envelope(json)?;
            Head::parse(envelope.payload.as_bytes())?
                .sha256_subjects()
                .next()
                .and_then(|h| format!("sha256:{h}").parse().ok())
                .ok_or_else(|| "the statement names no sha256 subject".to_owned())
        }
        Evidence::Bundle { .. } => Err("a bundle's subject is named by its manifest".to_owned()),
    }
}

/// The DSSE envelope an attestation carries, as (payloadType, payload):
/// a `.att` layer's envelope, or a bundle's. Not verified: call it on
/// evidence that [`check`] accepted, or only to sort evidence by type.
pub fn dsse_payload(evidence: &Evidence) -> Result<(String, Vec<u8>), String> {
    let envelope = match evidence {
        Evidence::Envelope { json, .. } => envelope(json)?,
        Evidence::Bundle { json, .. } => {
            let text =
                std::str::from_utf8(json).map_err(|_| "the bundle is not UTF-8".to_owned())?;
            let bundle =
                Bundle::from_json(text).map_err(|e| format!("not a valid Sigstore bundle: {e}"))?;
            match bundle.content {
                SignatureContent::DsseEnvelope(e) => e,
                _ => return Err("a message-signature bundle, not an attestation".into()),
            }
        }
        Evidence::Legacy { .. } => return Err("a signature, not an attestation".into()),
    };
    Ok((
        envelope.payload_type.clone(),
        envelope.payload.as_bytes().to_vec(),
    ))
}

fn envelope(json: &[u8]) -> Result<DsseEnvelope, String> {
    serde_json::from_slice(json).map_err(|e| format!("not a DSSE envelope: {e}"))
}

/// cosign decodes with Go's base64, which skips line breaks.
fn unwrapped(base64: &str) -> String {
    base64
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect()
}

/// Parse evidence and check what it claims to sign, before any cryptography.
fn signed(evidence: &Evidence, subject: &Digest, purpose: Purpose) -> Result<Signed, String> {
    match evidence {
        Evidence::Legacy {
            payload,
            signature,
            certificate,
            chain,
            rekor_bundle,
            ..
        } => {
            let p: Value = serde_json::from_slice(payload)
                .map_err(|_| "the payload is not JSON".to_owned())?;
            if p["critical"]["type"] != SIMPLE_SIGNING_TYPE {
                return Err("the payload is not a cosign container image signature".into());
            }
            let named = p["critical"]["image"]["docker-manifest-digest"]
                .as_str()
                .unwrap_or("");
            if named != subject.to_string() {
                return Err(format!("signed for another image ({named:?})"));
            }
            let signature = unwrapped(signature);
            let sig = SignatureBytes::from_base64(&signature)
                .map_err(|_| "the signature is not base64".to_owned())?;
            let has_certificate = certificate.is_some();
            let has_log_entry = rekor_bundle.is_some();
            let build = |digest| {
                legacy_bundle(
                    message_signature(digest, payload, &signature),
                    certificate.as_deref(),
                    chain.as_deref(),
                    rekor_bundle.as_deref(),
                )
            };
            let bundles = if has_certificate || has_log_entry {
                std::iter::once(build(MessageDigest::Sha256)?)
                    .chain(build(MessageDigest::Sha384).ok())
                    .collect()
            } else {
                Vec::new()
            };
            Ok(Signed::Detached {
                message: payload.to_vec(),
                signature: sig,
                over: Over::Payload,
                bundles,
                has_certificate,
                has_log_entry,
            })
        }
        Evidence::Envelope {
            json,
            certificate,
            chain,
            rekor_bundle,
            ..
        } => {
            if purpose == Purpose::Signature {
                return Err("an attestation, not a signature".into());
            }
            if subject.algorithm() != Algorithm::Sha256 {
                return Err("only sha256 subjects can be checked against attestations".into());
            }
            let parsed = envelope(json)?;
            let names_subject = Head::parse(parsed.payload.as_bytes())?
                .sha256_subjects()
                .any(|h| h == subject.hex());
            if !names_subject {
                return Err("the statement is about another subject".into());
            }
            let has_certificate = certificate.is_some();
            let has_log_entry = rekor_bundle.is_some();
            let value: Value =
                serde_json::from_slice(json).map_err(|e| format!("not a DSSE envelope: {e}"))?;
            let bundles = if has_certificate || has_log_entry {
                vec![legacy_bundle(
                    ("dsseEnvelope", value),
                    certificate.as_deref(),
                    chain.as_deref(),
                    rekor_bundle.as_deref(),
                )?]
            } else {
                Vec::new()
            };
            Ok(Signed::Detached {
                message: parsed.pae(),
                signature: parsed.signature.sig.clone(),
                over: Over::Subject,
                bundles,
                has_certificate,
                has_log_entry,
            })
        }
        Evidence::Bundle { json, .. } => {
            let text =
                std::str::from_utf8(json).map_err(|_| "the bundle is not UTF-8".to_owned())?;
            let bundle =
                Bundle::from_json(text).map_err(|e| format!("not a valid Sigstore bundle: {e}"))?;
            match (&bundle.content, purpose) {
                (SignatureContent::DsseEnvelope(envelope), _) => {
                    let statement = Head::parse(envelope.payload.as_bytes())?;
                    if purpose == Purpose::Signature
                        && statement.predicate_type != COSIGN_SIGN_PREDICATE
                    {
                        return Err(format!(
                            "an attestation (predicate {}), not a signature",
                            statement.predicate_type
                        ));
                    }
                }
                (_, Purpose::Signature) => {
                    return Err(
                        "a message-signature bundle cannot sign an image: expected DSSE".into(),
                    );
                }
                (_, Purpose::Attachment) => {}
            }
            Ok(Signed::Bundle(bundle))
        }
    }
}

/// Plain signature check with a key, trying the schemes cosign uses for its type.
fn verify_with_key(
    key: &DerPublicKey,
    payload: &[u8],
    signature: &SignatureBytes,
) -> Result<(), String> {
    let algorithm = KeyAlgorithm::from_spki(key).map_err(|e| format!("unusable key: {e}"))?;
    let schemes: &[SigningScheme] = match algorithm {
        KeyAlgorithm::EcdsaP256 => &[SigningScheme::EcdsaP256Sha256],
        KeyAlgorithm::EcdsaP384 => &[
            SigningScheme::EcdsaP384Sha384,
            SigningScheme::EcdsaP384Sha256,
        ],
        KeyAlgorithm::Ed25519 => &[SigningScheme::Ed25519],
        KeyAlgorithm::Rsa => &[SigningScheme::RsaPkcs1Sha256, SigningScheme::RsaPssSha256],
        _ => return Err("unsupported key type".into()),
    };
    if schemes
        .iter()
        .any(|s| verify_signature(key, payload, signature, *s).is_ok())
    {
        Ok(())
    } else {
        Err("the signature does not verify with this key".into())
    }
}

fn keyless_policy(root: &Root) -> VerificationPolicy {
    let policy = VerificationPolicy::any_identity();
    // A root without CT logs cannot check SCTs: it is a private deployment's choice.
    if root.trusted_root.ctlogs.is_empty() {
        policy.skip_sct()
    } else {
        policy
    }
}

/// Match a verified certificate's claims against a keyless signer.
fn keyless_identity(
    result: &VerificationResult,
    issuer: &crate::policy::Matcher,
    subject: &crate::policy::Matcher,
    workflow: &WorkflowClaims,
) -> Result<String, String> {
    if !result.certificate_verified() {
        return Err("the certificate was not verified".into());
    }
    let san = result
        .identity()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    let iss = result.issuer().unwrap_or("");
    if !issuer.matches(iss) {
        return Err(format!("issuer {iss:?} does not match {issuer}"));
    }
    if !subject.matches(&san) {
        return Err(format!("subject {san:?} does not match {subject}"));
    }
    let claims = result.certificate().map(|c| &c.ci_claims);
    let github = claims.map(|c| &c.deprecated_github);
    let want =
        |name: &str, expected: &Option<String>, actual: Option<String>| -> Result<(), String> {
            match expected {
                Some(e) if actual.as_deref() != Some(e.as_str()) => Err(format!(
                    "{name} {:?} does not match {e:?}",
                    actual.unwrap_or_default()
                )),
                _ => Ok(()),
            }
        };
    let repository = github
        .and_then(|g| g.workflow_repository.clone())
        .or_else(|| {
            claims
                .and_then(|c| c.source_repository_uri.as_deref())
                .and_then(|u| u.strip_prefix("https://github.com/"))
                .map(str::to_owned)
        });
    want("workflow repository", &workflow.repository, repository)?;
    let git_ref = github
        .and_then(|g| g.workflow_ref.clone())
        .or_else(|| claims.and_then(|c| c.source_repository_ref.clone()));
    want("workflow ref", &workflow.git_ref, git_ref)?;
    let trigger = github
        .and_then(|g| g.workflow_trigger.clone())
        .or_else(|| claims.and_then(|c| c.build_trigger.clone()));
    want("workflow trigger", &workflow.trigger, trigger)?;
    Ok(format!("{iss} {san}"))
}

/// Accept when `verify` succeeds for some root and bundle variant; otherwise
/// the first error.
fn verify_in_any_root<T, E: std::fmt::Display>(
    roots: &[std::sync::Arc<Root>],
    bundles: &[&Bundle],
    verify: impl Fn(&Root, &Bundle) -> Result<T, E>,
) -> Result<T, String> {
    let mut first = None;
    for root in roots {
        for bundle in bundles {
            match verify(root, bundle) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first.get_or_insert_with(|| format!("root {}: {e}", root.name));
                }
            }
        }
    }
    Err(first.unwrap_or_else(|| "no root to check it with".into()))
}

/// The subject as the artifact digest a bundle is verified against.
fn artifact(subject: &Digest) -> Result<ArtifactDigest, String> {
    let bad = |e: sigstore_verify::types::Error| format!("digest {subject}: {e}");
    match subject.algorithm() {
        Algorithm::Sha256 => Sha256Hash::from_hex(subject.hex())
            .map(ArtifactDigest::from)
            .map_err(bad),
        Algorithm::Sha512 => {
            let hash = Sha512Hash::from_hex(subject.hex()).map_err(bad)?;
            ArtifactDigest::new(HashAlgorithm::Sha2512, hash).map_err(bad)
        }
    }
}

/// Verify an assembled legacy bundle against what it signs.
fn verify_detached(
    root: &Root,
    bundle: &Bundle,
    over: Over,
    message: &[u8],
    subject: &Digest,
    policy: &(impl sigstore_verify::Policy + ?Sized),
) -> Result<VerificationResult, String> {
    let verified = match over {
        Over::Payload => root.verifier.verify(message, bundle, policy),
        Over::Subject => root.verifier.verify(artifact(subject)?, bundle, policy),
    };
    verified.map_err(|e| e.to_string())
}

/// Check one signer against parsed evidence: the signing identity and
/// verified time, or why not.
fn check_signer(signer: &Signer, signed: &Signed, subject: &Digest) -> Result<Proved, String> {
    let key_only = |key: &crate::policy::PublicKey, time| Proved {
        identity: format!("key {}", key.name),
        time,
    };
    match (signer, signed) {
        (Signer::Notary { .. }, _) => Err(format!(
            "{} signs tags in its trust data, not artifacts",
            signer.describe()
        )),
        (
            Signer::Key { key, tlog, roots },
            Signed::Detached {
                message,
                signature,
                over,
                bundles,
                has_certificate,
                has_log_entry,
            },
        ) => {
            if *has_certificate {
                return Err(format!(
                    "carries a certificate, not a signature by key {}",
                    key.name
                ));
            }
            if *has_log_entry && !bundles.is_empty() && !roots.is_empty() {
                // A proof that is present must verify against a trusted log.
                // P-384 keys sign simple-signing payloads with SHA-384.
                let p384 = matches!(
                    KeyAlgorithm::from_spki(&key.der),
                    Ok(KeyAlgorithm::EcdsaP384)
                );
                let variants: Vec<&Bundle> = bundles
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i == 0 || p384)
                    .map(|(_, b)| b)
                    .collect();
                let policy = PublicKeyVerificationPolicy::new(key.der.clone());
                let result = verify_in_any_root(roots, &variants, |root, b| {
                    verify_detached(root, b, *over, message, subject, &policy)
                })
                .map_err(|e| format!("key {}: {e}", key.name))?;
                return Ok(key_only(key, verified_time(&result)));
            } else if *tlog == Tlog::Required {
                return Err(format!(
                    "no transparency-log proof, and key {} requires one",
                    key.name
                ));
            } else {
                verify_with_key(&key.der, message, signature)
                    .map_err(|e| format!("key {}: {e}", key.name))?;
            }
            Ok(key_only(key, None))
        }
        (Signer::Key { key, roots, .. }, Signed::Bundle(bundle)) => {
            if roots.is_empty() {
                return Err(format!(
                    "a bundle's log entry needs a trusted root, and the policy has none (key {})",
                    key.name
                ));
            }
            let artifact = artifact(subject)?;
            let result = verify_in_any_root(roots, &[bundle], |root, b| {
                root.verifier.verify(
                    artifact.clone(),
                    b,
                    &PublicKeyVerificationPolicy::new(key.der.clone()),
                )
            })
            .map_err(|e| format!("key {}: {e}", key.name))?;
            Ok(key_only(key, verified_time(&result)))
        }
        (
            Signer::Keyless {
                root,
                issuer,
                subject: who,
                workflow,
            },
            Signed::Detached {
                message,
                over,
                bundles,
                has_certificate,
                has_log_entry,
                ..
            },
        ) => {
            let bundle = match (has_certificate, has_log_entry, bundles.first()) {
                (false, _, _) => return Err("no certificate: not a keyless signature".into()),
                (true, false, _) => {
                    return Err("a keyless signature without a transparency-log entry".into());
                }
                (true, true, Some(b)) => b,
                (true, true, None) => return Err("no bundle".into()),
            };
            let result =
                verify_detached(root, bundle, *over, message, subject, &keyless_policy(root))
                    .map_err(|e| format!("root {}: {e}", root.name))?;
            Ok(Proved {
                identity: keyless_identity(&result, issuer, who, workflow)?,
                time: verified_time(&result),
            })
        }
        (
            Signer::Keyless {
                root,
                issuer,
                subject: who,
                workflow,
            },
            Signed::Bundle(bundle),
        ) => {
            let result = root
                .verifier
                .verify(artifact(subject)?, bundle, &keyless_policy(root))
                .map_err(|e| format!("root {}: {e}", root.name))?;
            Ok(Proved {
                identity: keyless_identity(&result, issuer, who, workflow)?,
                time: verified_time(&result),
            })
        }
    }
}

/// Check one piece of evidence for `purpose` against every signer.
pub fn check(
    evidence: &Evidence,
    subject: &Digest,
    signers: &[Signer],
    purpose: Purpose,
) -> Checked {
    let signed = match signed(evidence, subject, purpose) {
        Ok(s) => s,
        Err(why) => {
            return Checked {
                rejection: Some(format!("{}: {why}", evidence.origin())),
                ..Checked::default()
            };
        }
    };
    let mut checked = Checked::default();
    let mut reasons = Vec::new();
    for (i, signer) in signers.iter().enumerate() {
        // Docker Content Trust is checked on its own (gate::notary): a
        // cosign artifact never satisfies a notary signer.
        if signer.is_notary() {
            continue;
        }
        match check_signer(signer, &signed, subject) {
            Ok(proved) => {
                checked.matched.push((i, proved.identity));
                checked.time = match (checked.time, proved.time) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Err(why) => reasons.push(why),
        }
    }
    if checked.matched.is_empty() {
        checked.rejection = Some(format!("{}: {}", evidence.origin(), reasons.join("; ")));
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_must_name_the_served_digest() {
        let served = Digest::of(Algorithm::Sha256, b"served");
        let other = Digest::of(Algorithm::Sha256, b"other");
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"x"}},"image":{{"docker-manifest-digest":"{other}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let evidence = Evidence::Legacy {
            layer: other.clone(),
            payload: payload.into(),
            signature: STANDARD.encode(b"sig"),
            certificate: None,
            chain: None,
            rekor_bundle: None,
        };
        let c = check(&evidence, &served, &[], Purpose::Signature);
        assert!(c.rejection.unwrap().contains("signed for another image"));
    }

    #[test]
    fn attestations_are_not_signatures() {
        let subject = Digest::of(Algorithm::Sha256, b"s");
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "x", "digest": {"sha256": subject.hex()}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {}
        });
        let bundle = json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": STANDARD.encode(statement.to_string()),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": STANDARD.encode(b"x"), "keyid": ""}]
            }
        });
        let evidence = Evidence::Bundle {
            manifest: Digest::of(Algorithm::Sha256, b"m"),
            json: bundle.to_string().into(),
        };
        let c = check(
            &evidence,
            &Digest::of(Algorithm::Sha256, b"s"),
            &[],
            Purpose::Signature,
        );
        let why = c.rejection.unwrap();
        assert!(
            why.contains("an attestation") || why.contains("not a valid Sigstore bundle"),
            "{why}"
        );
    }
}

//! TUF as Notary v1 implements it: the one parsed model of its role files
//! (root, timestamp, snapshot, targets and delegations), and their
//! verification from a pinned root key down to the signed targets.
//!
//! Role files are read with the strict JSON reader ([`crate::json`]);
//! signatures are checked over the canonical JSON of `signed` as Notary
//! writes it (sorted keys, no whitespace, only `"` and `\` escaped, no
//! floats). Keys are `ecdsa`, `ecdsa-x509`, `rsa`, `rsa-x509` and
//! `ed25519`; every key id must be the sha256 of its canonical key, and a
//! threshold counts distinct public keys. ECDSA P-256 signatures are
//! accepted as raw `r||s` (what Notary writes) and as DER.
//!
//! A file's hash is checked over the bytes received; where those are an
//! equivalent re-encoding of the same document (the pretty-printed copies
//! some tools keep), over the document re-encoded as Notary serves it.
//! Lengths are upper bounds, as Notary's own client applies them. Pure
//! computation: no I/O, no clock (the caller passes `now`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};
use x509_cert::der::{Decode as _, DecodePem as _};

use crate::gate::statement::{format_time, parse_time};
use crate::json::{Json, JsonError};

/// Largest role file read (Notary's own client allows 5 MiB for targets).
pub const MAX_ROLE_SIZE: usize = 4 * 1024 * 1024;
/// Delegated roles walked for one repository, at most.
pub const MAX_DELEGATIONS: usize = 64;
/// Nesting of delegations, at most (`targets/a/b/...`).
pub const MAX_DEPTH: usize = 8;
/// Signatures looked at per role file, at most.
const MAX_SIGNATURES: usize = 32;
/// Keys listed per role file, at most.
const MAX_KEYS: usize = 256;

/// Why trust data was refused. Every variant names the role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TufError {
    #[error("{role}.json is not valid JSON")]
    Json {
        role: String,
        #[source]
        source: JsonError,
    },
    #[error("{role}.json: {problem}")]
    Malformed { role: String, problem: String },
    #[error("{role}.json is larger than {max} bytes")]
    TooLarge { role: String, max: usize },
    #[error("{role}.json is not signed by the pinned root key {key}")]
    NotPinned { role: String, key: String },
    #[error("{role}.json is signed by {valid} of the {threshold} keys {by} requires")]
    Threshold {
        role: String,
        valid: usize,
        threshold: u64,
        by: String,
    },
    #[error("{role} expired {expired}")]
    Expired { role: String, expired: String },
    #[error(
        "{role} version {version} is older than version {seen} already seen (rollback refused)"
    )]
    Rollback {
        role: String,
        version: u64,
        seen: u64,
    },
    #[error("{role}.json does not match the {algorithm} hash {parent} records")]
    Hash {
        role: String,
        parent: String,
        algorithm: &'static str,
    },
    #[error("{role}.json is {actual} bytes, more than the {recorded} {parent} records")]
    Length {
        role: String,
        parent: String,
        actual: usize,
        recorded: u64,
    },
    #[error("{parent} records no hash portcullis can check for {role}")]
    NoHash { role: String, parent: String },
    #[error("{role} is not listed in the snapshot")]
    Unlisted { role: String },
}

fn malformed(role: &str, problem: impl Into<String>) -> TufError {
    TufError::Malformed {
        role: role.to_owned(),
        problem: problem.into(),
    }
}

/// Append the canonical JSON of `v` as Notary signs it.
pub fn canonical(v: &Json, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(n) => {
            if n.is_f64() {
                return Err(format!("the number {n} is not an integer"));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Json::String(s) => string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        Json::Object(fields) => {
            let mut sorted: Vec<&(String, Json)> = fields.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                canonical(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn canonical_bytes(role: &str, v: &Json) -> Result<Vec<u8>, TufError> {
    let mut out = Vec::new();
    canonical(v, &mut out).map_err(|p| malformed(role, p))?;
    Ok(out)
}

/// A role file opened: its signatures and the canonical bytes they sign.
struct Envelope {
    role: String,
    /// The canonical JSON of `signed`: what the signatures are over.
    message: Vec<u8>,
    signatures: Vec<RawSignature>,
    /// The bytes received.
    raw: Vec<u8>,
    /// The document as Notary serves it: `{"signed":…,"signatures":…}`.
    wire: Vec<u8>,
}

#[derive(Deserialize)]
struct RawSignature {
    keyid: String,
    method: String,
    sig: String,
}

fn open(role: &str, bytes: &[u8]) -> Result<Envelope, TufError> {
    if bytes.len() > MAX_ROLE_SIZE {
        return Err(TufError::TooLarge {
            role: role.to_owned(),
            max: MAX_ROLE_SIZE,
        });
    }
    let doc = Json::parse(bytes).map_err(|source| TufError::Json {
        role: role.to_owned(),
        source,
    })?;
    let Json::Object(fields) = &doc else {
        return Err(malformed(role, "not an object"));
    };
    if let Some((k, _)) = fields
        .iter()
        .find(|(k, _)| k != "signed" && k != "signatures")
    {
        return Err(malformed(role, format!("unexpected field {k:?}")));
    }
    let signed = doc
        .get("signed")
        .ok_or_else(|| malformed(role, "no \"signed\""))?;
    let sigs = doc
        .get("signatures")
        .ok_or_else(|| malformed(role, "no \"signatures\""))?;
    let message = canonical_bytes(role, signed)?;
    let sig_bytes = canonical_bytes(role, sigs)?;
    let signatures: Vec<RawSignature> = serde_json::from_slice(&sig_bytes)
        .map_err(|e| malformed(role, format!("signatures: {e}")))?;
    if signatures.len() > MAX_SIGNATURES {
        return Err(malformed(
            role,
            format!("more than {MAX_SIGNATURES} signatures"),
        ));
    }
    let mut wire = Vec::with_capacity(message.len() + sig_bytes.len() + 28);
    wire.extend_from_slice(b"{\"signed\":");
    wire.extend_from_slice(&message);
    wire.extend_from_slice(b",\"signatures\":");
    wire.extend_from_slice(&sig_bytes);
    wire.push(b'}');
    Ok(Envelope {
        role: role.to_owned(),
        message,
        signatures,
        raw: bytes.to_vec(),
        wire,
    })
}

impl Envelope {
    fn body<T: for<'de> Deserialize<'de>>(&self, expected_type: &str) -> Result<T, TufError> {
        #[derive(Deserialize)]
        struct Typed {
            _type: String,
        }
        let typed: Typed = serde_json::from_slice(&self.message)
            .map_err(|e| malformed(&self.role, e.to_string()))?;
        if typed._type != expected_type {
            return Err(malformed(
                &self.role,
                format!("_type is {:?}, not {expected_type:?}", typed._type),
            ));
        }
        serde_json::from_slice(&self.message).map_err(|e| malformed(&self.role, e.to_string()))
    }

    /// The distinct keys among `keyids` (looked up in `keys`) whose
    /// signatures over this file verify.
    fn valid_signers(&self, keys: &HashMap<String, Key>, keyids: &[String]) -> usize {
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for s in &self.signatures {
            if !keyids.contains(&s.keyid) {
                continue;
            }
            let Some(key) = keys.get(&s.keyid) else {
                continue;
            };
            if seen.contains(key.public.identity()) {
                continue;
            }
            if key.public.verifies(&s.method, &self.message, &s.sig) {
                seen.insert(key.public.identity());
            }
        }
        seen.len()
    }

    fn require(
        &self,
        keys: &HashMap<String, Key>,
        role: &RoleKeys,
        by: &str,
    ) -> Result<(), TufError> {
        let valid = self.valid_signers(keys, &role.keyids);
        if role.threshold == 0 || (valid as u64) < role.threshold {
            return Err(TufError::Threshold {
                role: self.role.clone(),
                valid,
                threshold: role.threshold,
                by: by.to_owned(),
            });
        }
        Ok(())
    }

    /// Check this file against the hashes and length its parent records.
    fn check_meta(&self, parent: &str, meta: &Meta) -> Result<(), TufError> {
        let mut known = false;
        let mut matches_raw = true;
        let mut matches_wire = true;
        for (alg, want) in &meta.hashes {
            let Ok(want) = STANDARD.decode(want) else {
                return Err(malformed(
                    parent,
                    format!("the {alg} hash of {} is not base64", self.role),
                ));
            };
            let hash = |b: &[u8]| -> Option<Vec<u8>> {
                match alg.as_str() {
                    "sha256" => Some(Sha256::digest(b).to_vec()),
                    "sha512" => Some(Sha512::digest(b).to_vec()),
                    _ => None,
                }
            };
            let (Some(raw), Some(wire)) = (hash(&self.raw), hash(&self.wire)) else {
                continue;
            };
            known = true;
            matches_raw &= raw == want;
            matches_wire &= wire == want;
            if !matches_raw && !matches_wire {
                return Err(TufError::Hash {
                    role: self.role.clone(),
                    parent: parent.to_owned(),
                    algorithm: if alg == "sha256" { "sha256" } else { "sha512" },
                });
            }
        }
        if !known {
            return Err(TufError::NoHash {
                role: self.role.clone(),
                parent: parent.to_owned(),
            });
        }
        let actual = if matches_raw {
            self.raw.len()
        } else {
            self.wire.len()
        };
        if actual as u64 > meta.length {
            return Err(TufError::Length {
                role: self.role.clone(),
                parent: parent.to_owned(),
                actual,
                recorded: meta.length,
            });
        }
        Ok(())
    }
}

/// A public key of a role, checked against its id.
#[derive(Clone, Debug)]
pub struct Key {
    public: PublicKey,
    /// For certificates: when they stop being valid.
    not_after: Option<SystemTime>,
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
    fn identity(&self) -> &[u8] {
        match self {
            PublicKey::EcdsaP256(b) | PublicKey::Rsa(b) | PublicKey::Ed25519(b) => b,
        }
    }

    /// Does `sig` (base64) by this key verify over `message` with `method`?
    fn verifies(&self, method: &str, message: &[u8], sig: &str) -> bool {
        use ring::signature as s;
        let Ok(sig) = STANDARD.decode(sig) else {
            return false;
        };
        let alg: &dyn s::VerificationAlgorithm = match (self, method) {
            (PublicKey::EcdsaP256(_), "ecdsa") if sig.len() == 64 => &s::ECDSA_P256_SHA256_FIXED,
            (PublicKey::EcdsaP256(_), "ecdsa") => &s::ECDSA_P256_SHA256_ASN1,
            (PublicKey::Rsa(_), "rsapss") => &s::RSA_PSS_2048_8192_SHA256,
            (PublicKey::Rsa(_), "rsapkcs1v15") => &s::RSA_PKCS1_2048_8192_SHA256,
            (PublicKey::Ed25519(_), "ed25519") => &s::ED25519,
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

fn parse_keys(
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

/// Which keys a role needs, and how many.
#[derive(Clone, Debug, Deserialize)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    pub threshold: u64,
}

/// What a parent records about a child file.
#[derive(Clone, Debug, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    pub length: u64,
}

fn expiry(role: &str, expires: &str, now: SystemTime) -> Result<SystemTime, TufError> {
    let at = parse_time(expires)
        .ok_or_else(|| malformed(role, format!("expires {expires:?} is not a time")))?;
    if at <= now {
        return Err(TufError::Expired {
            role: role.to_owned(),
            expired: format_time(at),
        });
    }
    Ok(at)
}

fn not_older(role: &str, version: u64, seen: Option<u64>) -> Result<(), TufError> {
    match seen {
        Some(seen) if version < seen => Err(TufError::Rollback {
            role: role.to_owned(),
            version,
            seen,
        }),
        _ => Ok(()),
    }
}

/// A verified root.
#[derive(Clone, Debug)]
pub struct Root {
    pub version: u64,
    pub expires: SystemTime,
    keys: HashMap<String, Key>,
    roles: HashMap<String, RoleKeys>,
    /// The canonical `signed` (a root of the same version must be this one).
    message: Vec<u8>,
}

#[derive(Deserialize)]
struct RootBody {
    expires: String,
    keys: BTreeMap<String, serde_json::Value>,
    roles: BTreeMap<String, RoleKeys>,
    version: u64,
}

/// What a root is checked against.
pub enum Anchor<'a> {
    /// Nothing verified yet: the pinned key must have signed it.
    Pinned { name: &'a str, key: &'a PublicKey },
    /// A root verified before: a newer one must be signed by its keys.
    Trusted(&'a Root),
}

impl Root {
    fn role(&self, name: &str) -> Result<&RoleKeys, TufError> {
        self.roles
            .get(name)
            .ok_or_else(|| malformed("root", format!("no {name} role")))
    }

    /// The expiry of the root and of every certificate its root role uses.
    pub fn valid_until(&self) -> SystemTime {
        self.expires
    }
}

/// Parse root.json and check it is signed by a threshold of its own root keys.
fn parse_root(bytes: &[u8]) -> Result<(Envelope, Root, String), TufError> {
    let env = open("root", bytes)?;
    let body: RootBody = env.body("Root")?;
    let keys = parse_keys("root", &body.keys)?;
    let root = Root {
        version: body.version,
        expires: parse_time(&body.expires)
            .ok_or_else(|| malformed("root", "expires is not a time"))?,
        keys,
        roles: body.roles.into_iter().collect(),
        message: env.message.clone(),
    };
    for name in ["root", "timestamp", "snapshot", "targets"] {
        let role = root.role(name)?;
        if role.threshold == 0 {
            return Err(malformed(
                "root",
                format!("the {name} role's threshold is 0"),
            ));
        }
        if let Some(missing) = role.keyids.iter().find(|id| !root.keys.contains_key(*id)) {
            return Err(malformed(
                "root",
                format!("the {name} role names the unknown key {missing}"),
            ));
        }
    }
    env.require(&root.keys, root.role("root")?, "its own root role")?;
    Ok((env, root, body.expires))
}

/// A root verified before (kept as the anchor of the next one): its own
/// signatures are checked again, its expiry is not (an expired root still
/// vouches for its successor, as in TUF).
pub fn trusted_root(bytes: &[u8]) -> Result<Root, TufError> {
    parse_root(bytes).map(|(_, root, _)| root)
}

/// Verify `bytes` as root.json against `anchor` at `now`.
pub fn verify_root(bytes: &[u8], anchor: &Anchor<'_>, now: SystemTime) -> Result<Root, TufError> {
    let (env, root, expires) = parse_root(bytes)?;
    match anchor {
        Anchor::Pinned { name, key } => {
            let pinned = env
                .signatures
                .iter()
                .any(|s| key.verifies(&s.method, &env.message, &s.sig));
            if !pinned {
                return Err(TufError::NotPinned {
                    role: "root".into(),
                    key: (*name).to_owned(),
                });
            }
        }
        Anchor::Trusted(old) => {
            not_older("root", root.version, Some(old.version))?;
            if root.version == old.version {
                if root.message != old.message {
                    return Err(malformed(
                        "root",
                        format!(
                            "version {} differs from the root of that version already trusted",
                            root.version
                        ),
                    ));
                }
            } else {
                env.require(&old.keys, old.role("root")?, "the previously trusted root")?;
            }
        }
    }
    expiry("root", &expires, now)?;
    for id in &root.role("root")?.keyids {
        if let Some(until) = root.keys[id].not_after
            && until <= now
        {
            return Err(TufError::Expired {
                role: format!("root certificate {id}"),
                expired: format_time(until),
            });
        }
    }
    Ok(root)
}

/// The delegated roles a snapshot lists (read before it is verified, only
/// to know what to fetch; [`verify`] checks everything). At most
/// [`MAX_DELEGATIONS`], valid names only.
pub fn listed_delegations(snapshot: &[u8]) -> Vec<String> {
    let Ok(env) = open("snapshot", snapshot) else {
        return Vec::new();
    };
    let Ok(body) = env.body::<MetaBody>("Snapshot") else {
        return Vec::new();
    };
    body.meta
        .into_keys()
        .filter(|name| valid_role_name(name))
        .take(MAX_DELEGATIONS)
        .collect()
}

#[derive(Deserialize)]
struct MetaBody {
    expires: String,
    meta: BTreeMap<String, Meta>,
    version: u64,
}

/// A verified timestamp or snapshot: its version and what it records.
#[derive(Clone, Debug)]
pub struct MetaRole {
    pub version: u64,
    pub expires: SystemTime,
    pub meta: BTreeMap<String, Meta>,
}

fn verify_meta_role(
    role: &str,
    type_name: &str,
    bytes: &[u8],
    root: &Root,
    now: SystemTime,
) -> Result<(Envelope, MetaRole), TufError> {
    let env = open(role, bytes)?;
    let body: MetaBody = env.body(type_name)?;
    env.require(&root.keys, root.role(role)?, "the root")?;
    let expires = expiry(role, &body.expires, now)?;
    Ok((
        env,
        MetaRole {
            version: body.version,
            expires,
            meta: body.meta,
        },
    ))
}

/// The signed targets of one role: tag → (sha256, length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets(pub BTreeMap<String, (Vec<u8>, u64)>);

#[derive(Deserialize)]
struct TargetsBody {
    expires: String,
    #[serde(default)]
    targets: BTreeMap<String, Meta>,
    #[serde(default)]
    delegations: Option<DelegationsBody>,
    version: u64,
}

#[derive(Deserialize)]
struct DelegationsBody {
    #[serde(default)]
    keys: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    roles: Vec<DelegatedBody>,
}

#[derive(Deserialize)]
struct DelegatedBody {
    name: String,
    keyids: Vec<String>,
    threshold: u64,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    path_hash_prefixes: Option<Vec<String>>,
}

/// Which target names a delegation may sign.
#[derive(Clone, Debug)]
pub enum Paths {
    Prefixes(Vec<String>),
    HashPrefixes(Vec<String>),
}

impl Paths {
    fn covers(&self, name: &str) -> bool {
        match self {
            Paths::Prefixes(p) => p.iter().any(|p| name.starts_with(p.as_str())),
            Paths::HashPrefixes(p) => {
                let hex: String = Sha256::digest(name.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                p.iter().any(|p| hex.starts_with(&p.to_ascii_lowercase()))
            }
        }
    }
}

/// A role whose signatures, hashes, expiry and version verified.
#[derive(Clone, Debug)]
pub struct VerifiedRole {
    pub name: String,
    pub version: u64,
    pub expires: SystemTime,
    pub targets: Targets,
    /// The paths of every delegation on the way to it (none for `targets`).
    pub chain: Vec<Paths>,
}

impl VerifiedRole {
    fn covers(&self, name: &str) -> bool {
        self.chain.iter().all(|p| p.covers(name))
    }
}

/// The role files of one repository, as fetched or cached.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Files {
    #[serde(with = "b64")]
    pub root: Vec<u8>,
    #[serde(with = "b64")]
    pub timestamp: Vec<u8>,
    #[serde(with = "b64")]
    pub snapshot: Vec<u8>,
    #[serde(with = "b64")]
    pub targets: Vec<u8>,
    /// Delegated roles by name (`targets/releases`).
    #[serde(default, with = "b64map")]
    pub delegations: BTreeMap<String, Vec<u8>>,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64map {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(
        v: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&String, String> = v.iter().map(|(k, v)| (k, STANDARD.encode(v))).collect();
        m.serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let m = BTreeMap::<String, String>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| Ok((k, STANDARD.decode(v).map_err(serde::de::Error::custom)?)))
            .collect()
    }
}

/// The highest version seen of each role of one repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Versions {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
    #[serde(default)]
    pub delegations: BTreeMap<String, u64>,
}

impl Versions {
    /// The larger of each version.
    pub fn merge(&mut self, other: &Versions) {
        self.root = self.root.max(other.root);
        self.timestamp = self.timestamp.max(other.timestamp);
        self.snapshot = self.snapshot.max(other.snapshot);
        self.targets = self.targets.max(other.targets);
        for (k, v) in &other.delegations {
            let e = self.delegations.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// A repository whose trust data verified.
#[derive(Clone, Debug)]
pub struct Repository {
    pub root: Root,
    /// `targets` first, then delegations in the order they were walked.
    pub roles: Vec<VerifiedRole>,
    /// Delegations that could not be used, and why (absent, never a pass).
    pub unusable: Vec<String>,
    /// The versions verified.
    pub versions: Versions,
    /// When the first of its roles expires.
    pub expires: SystemTime,
}

/// What the trust data says about one tag.
#[derive(Debug, PartialEq, Eq)]
pub enum TagLookup {
    /// Signed for these bytes, in this role.
    Signed { role: String },
    /// Not signed in any role that counts.
    Absent,
    /// Signed for other bytes.
    Other {
        sha256: Vec<u8>,
        length: u64,
        role: String,
    },
    /// Roles that count disagree about it.
    Conflict { roles: Vec<String> },
}

fn counts(role: &VerifiedRole, allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.contains(&role.name)
}

impl Repository {
    /// Look `tag` up for a manifest of `sha256` and `length`, in the roles
    /// `allowed` (all roles when empty).
    pub fn tag(&self, tag: &str, sha256: &[u8], length: u64, allowed: &[String]) -> TagLookup {
        let signed: Vec<(&VerifiedRole, &(Vec<u8>, u64))> = self
            .roles
            .iter()
            .filter(|r| counts(r, allowed) && r.covers(tag))
            .filter_map(|r| r.targets.0.get(tag).map(|t| (r, t)))
            .collect();
        let Some((first_role, first)) = signed.first() else {
            return TagLookup::Absent;
        };
        if signed.iter().any(|(_, t)| t != first) {
            return TagLookup::Conflict {
                roles: signed.iter().map(|(r, _)| r.name.clone()).collect(),
            };
        }
        if first.0 == sha256 && first.1 == length {
            TagLookup::Signed {
                role: first_role.name.clone(),
            }
        } else {
            TagLookup::Other {
                sha256: first.0.clone(),
                length: first.1,
                role: first_role.name.clone(),
            }
        }
    }

    /// A tag signed for a manifest of `sha256` and `length` in a role that
    /// counts: (role, tag).
    pub fn digest(
        &self,
        sha256: &[u8],
        length: u64,
        allowed: &[String],
    ) -> Option<(String, String)> {
        self.roles
            .iter()
            .filter(|r| counts(r, allowed))
            .find_map(|r| {
                r.targets
                    .0
                    .iter()
                    .find(|(name, t)| t.0 == sha256 && t.1 == length && r.covers(name))
                    .map(|(name, _)| (r.name.clone(), name.clone()))
            })
    }
}

/// A delegated role name: `targets/` and path segments of `[A-Za-z0-9_.-]`.
pub fn valid_role_name(name: &str) -> bool {
    name.len() <= 255
        && name.strip_prefix("targets/").is_some_and(|rest| {
            rest.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            })
        })
}

fn verify_targets_role(
    name: &str,
    bytes: &[u8],
    keys: &HashMap<String, Key>,
    role_keys: &RoleKeys,
    by: &str,
    snapshot: &MetaRole,
    now: SystemTime,
) -> Result<(TargetsBody, u64, SystemTime), TufError> {
    let env = open(name, bytes)?;
    let meta = snapshot.meta.get(name).ok_or_else(|| TufError::Unlisted {
        role: name.to_owned(),
    })?;
    let body: TargetsBody = env.body("Targets")?;
    env.require(keys, role_keys, by)?;
    let expires = expiry(name, &body.expires, now)?;
    env.check_meta("the snapshot", meta)?;
    let version = body.version;
    Ok((body, version, expires))
}

fn targets_of(role: &str, body: &TargetsBody) -> Result<Targets, TufError> {
    let mut out = BTreeMap::new();
    for (name, meta) in &body.targets {
        let Some(hash) = meta.hashes.get("sha256") else {
            continue;
        };
        let hash = STANDARD
            .decode(hash)
            .ok()
            .filter(|h| h.len() == 32)
            .ok_or_else(|| malformed(role, format!("target {name:?} has a bad sha256")))?;
        out.insert(name.clone(), (hash, meta.length));
    }
    Ok(Targets(out))
}

/// Verify a whole repository's files at `now`: the root against `anchor`,
/// then timestamp → snapshot → targets → delegations, with no version
/// older than `seen`.
pub fn verify(
    files: &Files,
    anchor: &Anchor<'_>,
    seen: &Versions,
    now: SystemTime,
) -> Result<Repository, TufError> {
    let root = verify_root(&files.root, anchor, now)?;
    let seen_root = (seen.root > 0).then_some(seen.root);
    not_older("root", root.version, seen_root)?;
    let (_, timestamp) = verify_meta_role("timestamp", "Timestamp", &files.timestamp, &root, now)?;
    not_older("timestamp", timestamp.version, Some(seen.timestamp))?;
    let snapshot_meta = timestamp
        .meta
        .get("snapshot")
        .ok_or_else(|| malformed("timestamp", "records no snapshot"))?;
    let (snap_env, snapshot) =
        verify_meta_role("snapshot", "Snapshot", &files.snapshot, &root, now)?;
    snap_env.check_meta("the timestamp", snapshot_meta)?;
    not_older("snapshot", snapshot.version, Some(seen.snapshot))?;
    let (body, version, expires) = verify_targets_role(
        "targets",
        &files.targets,
        &root.keys,
        root.role("targets")?,
        "the root",
        &snapshot,
        now,
    )?;
    not_older("targets", version, Some(seen.targets))?;
    let mut versions = Versions {
        root: root.version,
        timestamp: timestamp.version,
        snapshot: snapshot.version,
        targets: version,
        delegations: BTreeMap::new(),
    };
    let mut earliest = root
        .expires
        .min(timestamp.expires)
        .min(snapshot.expires)
        .min(expires);
    let mut roles = vec![VerifiedRole {
        name: "targets".into(),
        version,
        expires,
        targets: targets_of("targets", &body)?,
        chain: Vec::new(),
    }];
    let mut unusable = Vec::new();
    // Walk delegations breadth first from the top-level targets.
    let mut queue: Vec<(String, TargetsBody, Vec<Paths>, usize)> =
        vec![("targets".into(), body, Vec::new(), 0)];
    let mut walked = 0usize;
    while let Some((parent, body, chain, depth)) = queue.pop() {
        let Some(delegations) = &body.delegations else {
            continue;
        };
        if delegations.roles.is_empty() {
            continue;
        }
        let keys = match parse_keys(&parent, &delegations.keys) {
            Ok(k) => k,
            Err(e) => {
                unusable.push(format!("the delegations of {parent}: {e}"));
                continue;
            }
        };
        for d in &delegations.roles {
            walked += 1;
            if walked > MAX_DELEGATIONS {
                unusable.push(format!(
                    "delegations beyond the first {MAX_DELEGATIONS} were not walked"
                ));
                break;
            }
            let prefix = format!("{parent}/");
            if !valid_role_name(&d.name) || !d.name.starts_with(&prefix) {
                unusable.push(format!(
                    "{parent} delegates to an invalid role name {:?}",
                    d.name
                ));
                continue;
            }
            if depth + 1 > MAX_DEPTH {
                unusable.push(format!("{} is nested deeper than {MAX_DEPTH}", d.name));
                continue;
            }
            let paths = match (&d.paths, &d.path_hash_prefixes) {
                (Some(p), None) => Paths::Prefixes(p.clone()),
                (None, Some(h)) => Paths::HashPrefixes(h.clone()),
                _ => {
                    unusable.push(format!(
                        "{} must list paths or path_hash_prefixes, not both or neither",
                        d.name
                    ));
                    continue;
                }
            };
            let Some(bytes) = files.delegations.get(&d.name) else {
                unusable.push(format!("{} is not available", d.name));
                continue;
            };
            let role_keys = RoleKeys {
                keyids: d.keyids.clone(),
                threshold: d.threshold,
            };
            let checked =
                verify_targets_role(&d.name, bytes, &keys, &role_keys, &parent, &snapshot, now)
                    .and_then(|(b, v, e)| {
                        not_older(&d.name, v, seen.delegations.get(&d.name).copied())?;
                        let targets = targets_of(&d.name, &b)?;
                        Ok((b, v, e, targets))
                    });
            match checked {
                Ok((b, v, e, targets)) => {
                    versions.delegations.insert(d.name.clone(), v);
                    earliest = earliest.min(e);
                    let mut chain = chain.clone();
                    chain.push(paths);
                    roles.push(VerifiedRole {
                        name: d.name.clone(),
                        version: v,
                        expires: e,
                        targets,
                        chain: chain.clone(),
                    });
                    queue.insert(0, (d.name.clone(), b, chain, depth + 1));
                }
                Err(e) => unusable.push(e.to_string()),
            }
        }
    }
    Ok(Repository {
        root,
        roles,
        unusable,
        versions,
        expires: earliest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_is_notarys() {
        let v = Json::parse(br#"{ "b": [1, "x\"y\\z<&>"], "a": null, "A": {"k": true} }"#).unwrap();
        let mut out = Vec::new();
        canonical(&v, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"A":{"k":true},"a":null,"b":[1,"x\"y\\z<&>"]}"#
        );
        let float = Json::parse(b"[1.5]").unwrap();
        assert!(canonical(&float, &mut Vec::new()).is_err());
    }

    #[test]
    fn role_names_are_paths_under_targets() {
        for ok in ["targets/releases", "targets/a/b-c_d.e"] {
            assert!(valid_role_name(ok), "{ok}");
        }
        for bad in [
            "targets",
            "targets/",
            "targets/../root",
            "targets//a",
            "root",
            "targets/a b",
            "targets/a?x",
        ] {
            assert!(!valid_role_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths_cover_by_prefix_or_hash_prefix() {
        assert!(Paths::Prefixes(vec![String::new()]).covers("v1"));
        assert!(Paths::Prefixes(vec!["v1".into()]).covers("v1.2"));
        assert!(!Paths::Prefixes(vec!["v2".into()]).covers("v1"));
        assert!(!Paths::Prefixes(vec![]).covers("v1"));
        let hex: String = Sha256::digest(b"v1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(Paths::HashPrefixes(vec![hex[..4].to_owned()]).covers("v1"));
        assert!(!Paths::HashPrefixes(vec!["zz".into()]).covers("v1"));
    }
}

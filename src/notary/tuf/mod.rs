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

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::gate::statement::{format_time, parse_time};
use crate::json::JsonError;

mod envelope;
mod keys;
mod repository;

pub use envelope::canonical;
use envelope::{Envelope, open};
use keys::parse_keys;
pub use keys::{Key, PublicKey};
pub use repository::{
    Files, Paths, Repository, TagLookup, Targets, VerifiedRole, Versions, valid_role_name,
};

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

/// The version a timestamp file claims, read before anything is verified
/// (only to choose between two copies; [`verify`] checks everything).
pub fn claimed_version(timestamp: &[u8]) -> Option<u64> {
    let env = open("timestamp", timestamp).ok()?;
    env.body::<MetaBody>("Timestamp").ok().map(|b| b.version)
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

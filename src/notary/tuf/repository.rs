//! The model of one repository's trust data: its role files as fetched or
//! kept ([`Files`]), the highest versions seen ([`Versions`]), the roles that
//! verified ([`Repository`], [`VerifiedRole`]) and the lookups the gate makes
//! in them (a tag, a digest), counting only the roles allowed and the target
//! names each delegation may sign. Pure computation: no I/O.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Root;

/// The signed targets of one role: tag → (sha256, length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets(pub BTreeMap<String, (Vec<u8>, u64)>);

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

#[cfg(test)]
mod tests {
    use super::*;

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

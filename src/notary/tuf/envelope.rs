//! A role file as Notary signs it: the canonical JSON of `signed` (sorted
//! keys, no whitespace, only `"` and `\` escaped, no floats), the envelope
//! opened from the bytes received, and the checks made on it: its `_type`,
//! a threshold of distinct keys whose signatures verify, and the hashes and
//! length its parent records. Pure computation: no I/O.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};

use super::{Key, MAX_ROLE_SIZE, MAX_SIGNATURES, Meta, RoleKeys, TufError, malformed};
use crate::json::Json;

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
pub(super) struct Envelope {
    role: String,
    /// The canonical JSON of `signed`: what the signatures are over.
    pub(super) message: Vec<u8>,
    pub(super) signatures: Vec<RawSignature>,
    /// The bytes received.
    raw: Vec<u8>,
    /// The document as Notary serves it: `{"signed":…,"signatures":…}`.
    wire: Vec<u8>,
}

#[derive(Deserialize)]
pub(super) struct RawSignature {
    keyid: String,
    pub(super) method: String,
    pub(super) sig: String,
}

pub(super) fn open(role: &str, bytes: &[u8]) -> Result<Envelope, TufError> {
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
    pub(super) fn body<T: for<'de> Deserialize<'de>>(
        &self,
        expected_type: &str,
    ) -> Result<T, TufError> {
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

    pub(super) fn require(
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
    pub(super) fn check_meta(&self, parent: &str, meta: &Meta) -> Result<(), TufError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_is_notarys() {
        let v = Json::parse(br#"{ "b": [1, "x\"y\\z<&>"], "a": null, "Z": {"k": true} }"#).unwrap();
        let mut out = Vec::new();
        canonical(&v, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"Z":{"k":true},"a":null,"b":[1,"x\"y\\z<&>"]}"#
        );
        let float = Json::parse(b"[1.5]").unwrap();
        assert!(canonical(&float, &mut Vec::new()).is_err());
    }
}

//! `[notary.NAME]` servers and `notary = { ... }` signers of the policy
//! file, validated into [`NotaryServer`] and [`Signer::Notary`]. This module
//! must not fetch anything.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::file::{Fingerprint, invalid, read};
use super::{NotaryServer, PolicyError, PublicKey, Signer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotary {
    url: String,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    gun: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotarySigner {
    server: String,
    root: String,
    #[serde(default)]
    delegations: Vec<String>,
}

/// How a reference maps to a GUN unless a server says otherwise.
const DEFAULT_GUN: &str = "{registry}/{repository}";

/// Validate the `[notary.NAME]` tables.
pub(super) fn servers(
    raw: BTreeMap<String, RawNotary>,
    base: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    fp: &mut Fingerprint,
) -> Result<HashMap<String, Arc<NotaryServer>>, PolicyError> {
    let mut notaries = HashMap::new();
    for (name, n) in raw {
        let at = format!("notary.{name}");
        if let Some(ca) = &n.ca_file {
            let key = format!("{at}.ca_file");
            let (file, bytes) = read(&key, resolve(ca))?;
            fp.add(&key, &file, &bytes);
        }
        let transport = crate::config::server_transport(
            &at,
            n.url,
            n.username,
            n.password_file,
            n.ca_file,
            base,
        )
        .map_err(|e| invalid(at.clone(), crate::error::chain(&e)))?;
        let gun = n.gun.unwrap_or_else(|| DEFAULT_GUN.to_owned());
        let rest = gun.replace("{registry}", "").replace("{repository}", "");
        if !gun.contains("{repository}") || rest.contains(['{', '}']) {
            return Err(invalid(
                format!("{at}.gun"),
                format!("{gun:?}: use {{registry}} and {{repository}}, e.g. \"{DEFAULT_GUN}\""),
            ));
        }
        notaries.insert(
            name.clone(),
            Arc::new(NotaryServer {
                name,
                transport,
                gun,
            }),
        );
    }

    Ok(notaries)
}

pub(super) fn signer(
    at: &str,
    n: RawNotarySigner,
    keys: &HashMap<String, Arc<PublicKey>>,
    notaries: &HashMap<String, Arc<NotaryServer>>,
) -> Result<(Signer, String), PolicyError> {
    let server = notaries.get(&n.server).cloned().ok_or_else(|| {
        invalid(
            format!("{at}.server"),
            format!("no [notary.{}] in this policy", n.server),
        )
    })?;
    let root = keys.get(&n.root).cloned().ok_or_else(|| {
        invalid(
            format!("{at}.root"),
            format!("no [keys.{}] in this policy", n.root),
        )
    })?;
    let pinned = crate::notary::tuf::PublicKey::from_spki(root.der.as_bytes()).map_err(|e| {
        invalid(
            format!("{at}.root"),
            format!("[keys.{}] cannot pin a Notary root: {e}", n.root),
        )
    })?;
    let mut delegations = Vec::new();
    for (i, d) in n.delegations.into_iter().enumerate() {
        if !crate::notary::tuf::valid_role_name(&d) {
            return Err(invalid(
                format!("{at}.delegations[{i}]"),
                format!("{d:?}: name a delegated role, e.g. \"targets/releases\""),
            ));
        }
        if !delegations.contains(&d) {
            delegations.push(d);
        }
    }
    let identity = format!("notary:{}:{}:{delegations:?}", server.name, n.root);
    Ok((
        Signer::Notary {
            server,
            root,
            pinned,
            delegations,
        },
        identity,
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::policy::{Policy, Signer};

    /// A P-256 public key (SPKI PEM).
    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4Zgzr/fRStByQK5DFDJt4UTRUJr/\nvXpNRuIsqYshN9A5xPRd45PFexybsF3GBGqhslKg+xLVzFh8rLnLAzhMcA==\n-----END PUBLIC KEY-----\n";
    const HEAD: &str = "[keys.dct]\npublic_key = \"dct.pub\"\n[notary.corp]\nurl = \"https://notary.corp.example:4443\"\n";

    fn load(policy: &str) -> Result<Policy, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dct.pub"), KEY).unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, policy).unwrap();
        let upstreams = Config::parse(
            "[[upstream]]\nname = \"registry.corp.example\"\nurl = \"https://registry.corp.example\"\ndefault = true\n",
            "t",
            dir.path(),
        )
        .unwrap()
        .upstreams;
        Policy::load(&path, &upstreams).map_err(|e| crate::error::chain(&e))
    }

    fn rule(signers: &str) -> String {
        format!(
            "{HEAD}[[rule]]\nname = \"r\"\nimages = [\"registry.corp.example/**\"]\nsigners = [{signers}]\n"
        )
    }

    #[test]
    fn a_notary_signer_loads_with_its_server_and_pinned_root() {
        let p = load(&rule(
            "{ notary = { server = \"corp\", root = \"dct\", delegations = [\"targets/releases\"] } }, { key = \"dct\" }",
        ))
        .unwrap();
        let Signer::Notary {
            server,
            delegations,
            ..
        } = &p.rules[0].signers[0]
        else {
            panic!("a notary signer")
        };
        assert_eq!(
            server.gun("registry.corp.example", "apps/base"),
            "registry.corp.example/apps/base"
        );
        assert_eq!(delegations, &["targets/releases".to_owned()]);
        assert!(p.rules[0].has_notary());
        assert_eq!(
            p.rules[0].signers[0].describe(),
            "notary corp (root dct) in targets/releases"
        );
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        for (policy, want) in [
            (
                rule("{ notary = { server = \"nope\", root = \"dct\" } }"),
                "rule[0] (r).signers[0].notary.server: no [notary.nope]",
            ),
            (
                rule("{ notary = { server = \"corp\", root = \"none\" } }"),
                "signers[0].notary.root: no [keys.none]",
            ),
            (
                rule(
                    "{ notary = { server = \"corp\", root = \"dct\", delegations = [\"releases\"] } }",
                ),
                "delegations[0]: \"releases\": name a delegated role",
            ),
            (
                rule("{ notary = { server = \"corp\", root = \"dct\" }, key = \"dct\" }"),
                "a notary signer is notary = { server, root, delegations } alone",
            ),
            (
                rule("{ notary = { server = \"corp\", root = \"dct\", extra = 1 } }"),
                "unknown field `extra`",
            ),
            (format!("{HEAD}gun = \"{{registry}}\"\n"), "notary.corp.gun"),
            (
                format!("{HEAD}gun = \"{{repository}}/{{tag}}\"\n"),
                "notary.corp.gun",
            ),
            (
                "[notary.corp]\nurl = \"ftp://x\"\n".to_owned(),
                "notary.corp.url",
            ),
            (
                format!(
                    "{}[[rule.attestations]]\ntype = \"slsaprovenance\"\nsigners = [{{ notary = {{ server = \"corp\", root = \"dct\" }} }}]\n",
                    rule("{ key = \"dct\" }")
                ),
                "Docker Content Trust signs tags, not attestations",
            ),
        ] {
            let e = load(&policy).map(|_| ()).unwrap_err();
            assert!(e.contains(want), "{policy}\n=> {e}");
        }
    }

    #[test]
    fn an_attestation_cannot_inherit_only_notary_signers() {
        let policy = format!(
            "{}[[rule.attestations]]\ntype = \"slsaprovenance\"\n",
            rule("{ notary = { server = \"corp\", root = \"dct\" } }")
        );
        let e = load(&policy).map(|_| ()).unwrap_err();
        assert!(e.contains("the rule has no signers"), "{e}");
    }
}

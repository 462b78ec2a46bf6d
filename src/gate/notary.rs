//! What Docker Content Trust proves about the manifest being served: for
//! each notary signer of a rule, whether the repository's verified trust
//! data signs these exact bytes (sha256 and length) under the tag asked
//! for, or, for a request by digest, under any tag, in the roles the
//! signer counts. A tag signed for other bytes (it moved after signing),
//! roles that disagree, and trust data that cannot be had or verified are
//! all refusals that name the GUN. The result is one [`Checked`] per
//! notary signer, counted by the tally like any signature. This module must
//! not fetch anything but through [`Notary`].

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::verify::Checked;
use crate::manifest::Manifest;
use crate::notary::Notary;
use crate::notary::tuf::TagLookup;
use crate::policy::{Rule, Signer};
use crate::reference::Reference;
use crate::router::Target;

/// What the rule's notary signers proved, and until when (the earliest
/// expiry of the trust data that passed).
#[derive(Debug, Default)]
pub struct Proved {
    pub checked: Vec<Checked>,
    pub valid_until: Option<SystemTime>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Check every notary signer of `rule` for `manifest`, asked for as
/// `requested` in `target`.
pub async fn check(
    notary: &Notary,
    rule: &Rule,
    target: &Target,
    requested: &Reference,
    manifest: &Manifest,
) -> Proved {
    let mut proved = Proved::default();
    let sha256 = Sha256::digest(&manifest.bytes).to_vec();
    let length = manifest.bytes.len() as u64;
    for (i, signer) in rule.signers.iter().enumerate() {
        let Signer::Notary {
            server,
            root,
            pinned,
            delegations,
        } = signer
        else {
            continue;
        };
        let gun = server.gun(target.registry.as_str(), target.repo.as_str());
        let shown = signer.describe();
        let verified = match notary.repository(server, &root.name, pinned, &gun).await {
            Ok(v) => v,
            Err(e) => {
                proved.checked.push(Checked {
                    rejection: Some(format!("{shown}: {}", crate::error::chain(&e))),
                    ..Checked::default()
                });
                continue;
            }
        };
        let repo = &verified.repository;
        let roles = if delegations.is_empty() {
            String::new()
        } else {
            format!(" in {}", delegations.join(" or "))
        };
        let unusable = repo
            .unusable
            .first()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        let outcome = match requested {
            Reference::Tag(tag) => match repo.tag(tag.as_str(), &sha256, length, delegations) {
                TagLookup::Signed { role } => Ok(role),
                TagLookup::Absent => Err(format!(
                    "tag {tag} is not signed{roles} in the trust data for {gun}{unusable}"
                )),
                TagLookup::Other {
                    sha256: other,
                    role,
                    ..
                } => Err(format!(
                    "tag {tag} is signed for sha256:{} in {role} of {gun} (not this manifest)",
                    hex(&other)
                )),
                TagLookup::Conflict { roles } => Err(format!(
                    "roles {} of {gun} sign different manifests for tag {tag}",
                    roles.join(", ")
                )),
            },
            Reference::Digest(_) => match repo.digest(&sha256, length, delegations) {
                Some((role, _tag)) => Ok(role),
                None => Err(format!(
                    "no tag{roles} in the trust data for {gun} is signed for this manifest{unusable}"
                )),
            },
        };
        match outcome {
            Ok(_role) => {
                proved.checked.push(Checked {
                    matched: vec![(i, format!("notary root {}", root.name))],
                    ..Checked::default()
                });
                proved.valid_until = Some(
                    proved
                        .valid_until
                        .map_or(repo.expires, |t| t.min(repo.expires)),
                );
            }
            Err(why) => proved.checked.push(Checked {
                rejection: Some(format!("{shown}: {why}")),
                ..Checked::default()
            }),
        }
    }
    proved
}

//! The gate's verdict cache: what a verdict is keyed by (the build, the
//! policy fingerprint, what was checked, the repository and the digest, and
//! for rules with notary signers the tag asked for), reading a verdict back
//! only while it is fresh, and remembering a verification with the coverage
//! of the children an index lists. Verdicts are kept through [`super::Verdicts`];
//! this module must not verify anything.

use super::{Gate, Verification, unix_secs};
use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::policy::{Policy, Rule};
use crate::reference::Reference;
use crate::router::Target;

/// The identity of this build, part of every verdict key: the version and
/// a hash of the executable, so a rebuilt verifier never trusts verdicts an
/// older one made. Computed once (reads the executable: call it from a
/// blocking context first).
pub fn build_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use sha2::Digest as _;
        let exe = std::env::current_exe().and_then(std::fs::read);
        match exe {
            Ok(bytes) => {
                let hash = sha2::Sha256::digest(&bytes);
                let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("{}+{hex}", env!("CARGO_PKG_VERSION"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the executable to identify this build; verdicts are keyed by the version alone");
                env!("CARGO_PKG_VERSION").to_owned()
            }
        }
    })
}

/// Where a verdict is cached: it depends on the build, the policy, the
/// repository (rules match references), what was checked and the digest.
pub(super) fn verdict_key(policy: &Policy, kind: &str, target: &Target, digest: &Digest) -> String {
    format!(
        "{} {} {kind} {} {digest}",
        build_id(),
        policy.fingerprint,
        target.reference()
    )
}

/// What an image verdict checked: the digest alone, or, where notary
/// signers count, the digest under the tag asked for (DCT signs tags).
pub(super) fn image_kind(rule: &Rule, requested: &Reference) -> String {
    match requested {
        Reference::Tag(t) if rule.has_notary() => format!("image tag={t}"),
        _ => "image".to_owned(),
    }
}

pub(super) fn encode(v: &Verification) -> Vec<u8> {
    serde_json::to_vec(v).expect("verdicts serialize")
}

/// Verifications under way, by verdict key: concurrent first requests for
/// one digest wait for one verification instead of each running their own.
pub(super) type Verifying =
    crate::cache::flight::Flights<String, tokio::sync::watch::Receiver<Option<Verification>>>;

/// How many times a request follows a verification that ended without a
/// result (its request was cancelled) before it runs its own.
const FOLLOWS: usize = 3;

impl Gate {
    /// The verification under `key`: cached, another request's under way,
    /// or `fresh` (which stores its verdict before it returns), run by this
    /// request alone.
    pub(super) async fn once(
        &self,
        key: &str,
        fresh: impl std::future::Future<Output = Verification>,
    ) -> Verification {
        use crate::cache::flight::Join;
        let key = key.to_owned();
        for _ in 0..FOLLOWS {
            let join = self.verifying.join(
                &key,
                || self.cached(&key),
                |ticket| {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    (rx, (tx, ticket))
                },
            );
            match join {
                Join::Cached(v) => return v,
                Join::Follow(mut rx) => {
                    if let Ok(v) = rx.wait_for(Option::is_some).await
                        && let Some(v) = v.clone()
                    {
                        return v;
                    }
                }
                Join::Lead(_, (tx, _ticket)) => {
                    let v = fresh.await;
                    tx.send_replace(Some(v.clone()));
                    return v;
                }
            }
        }
        fresh.await
    }

    /// A cached verification, if it can be used: never once an attestation
    /// it relied on has aged out.
    pub(super) fn cached(&self, key: &str) -> Option<Verification> {
        let now = unix_secs(self.clock.now());
        self.verdicts
            .get(key)
            .and_then(|v| serde_json::from_slice::<Verification>(&v).ok())
            .filter(|v| v.fresh_until().is_none_or(|until| now < until))
    }

    pub(super) async fn put_verdicts(&self, entries: Vec<(String, std::time::Duration, Vec<u8>)>) {
        if let Err(e) = self.verdicts.put(entries).await {
            // The verdict stands; it is only not remembered.
            tracing::warn!(error = %crate::error::chain(&*e), "could not cache a policy verdict");
        }
    }

    /// Cache a verification (if any) and, when the manifest passed (verified
    /// or pinned), the coverage of the children an index lists.
    pub(super) async fn remember(
        &self,
        policy: &Policy,
        rule: &Rule,
        target: &Target,
        manifest: &Manifest,
        verification: Option<&Verification>,
        kind: &str,
    ) {
        let passed = !matches!(verification, Some(Verification::Failed { .. }));
        // A verdict that relies on an attestation's freshness lives no longer.
        let fresh_until = verification.and_then(Verification::fresh_until);
        let now = unix_secs(self.clock.now());
        let verdict_ttl = match fresh_until {
            Some(until) => policy
                .verdict_ttl
                .min(std::time::Duration::from_secs(until.saturating_sub(now))),
            None => policy.verdict_ttl,
        };
        if passed && verdict_ttl.is_zero() {
            return;
        }
        let mut entries = Vec::new();
        if let Some(v) = verification {
            let ttl = if passed {
                verdict_ttl
            } else {
                policy.failure_ttl
            };
            entries.push((
                verdict_key(policy, kind, target, &manifest.digest),
                ttl,
                encode(v),
            ));
        }
        if passed && !rule.per_platform {
            let covered = Verification::Covered {
                index: manifest.digest.to_string(),
                fresh_until,
            };
            for child in manifest.parsed.children() {
                entries.push((
                    verdict_key(policy, "image", target, &child.digest),
                    verdict_ttl,
                    encode(&covered),
                ));
            }
        }
        if !entries.is_empty() {
            self.put_verdicts(entries).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_keys_name_the_build() {
        let key = format!("{} ", build_id());
        assert!(key.starts_with(env!("CARGO_PKG_VERSION")));
    }
}

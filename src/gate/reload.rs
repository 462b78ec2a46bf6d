//! Reloading the policy when its files change or on SIGHUP.
//!
//! The policy file and every file it references are polled for changes
//! (modification time and size) every two seconds; SIGHUP reloads at once.
//! A new policy is parsed and validated whole, off the async threads, and
//! installed atomically only if valid and different (by fingerprint); a bad
//! one is refused with a log line and the policy in force stays. Files that
//! change while being read are read again at the next poll, so a policy
//! caught mid-write is never installed; "policy reloaded" is logged only
//! once the new policy is in force. Verdicts
//! need no purge: their keys include the policy fingerprint. This module
//! must not decide anything about images.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Gate;
use crate::policy::Policy;

/// How often the policy files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            (
                f.clone(),
                meta.and_then(|m| Some((m.modified().ok()?, m.len()))),
            )
        })
        .collect()
}

/// Watch the gate's policy files and reload on change or SIGHUP. The
/// SIGHUP handler is installed before this returns (SIGHUP's default action
/// would end the process). Call from within the runtime.
pub fn spawn_reloader(gate: Arc<Gate>) {
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; policy changes are still picked up from the files");
            None
        }
    };
    tokio::spawn(async move {
        let mut seen = {
            let files = gate.policy().files.clone();
            tokio::task::spawn_blocking(move || stamp(&files))
                .await
                .unwrap_or_default()
        };
        loop {
            #[cfg(unix)]
            let signalled = tokio::select! {
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            #[cfg(not(unix))]
            let signalled = {
                tokio::time::sleep(POLL).await;
                false
            };
            let files = gate.policy().files.clone();
            let now = tokio::task::spawn_blocking(move || stamp(&files))
                .await
                .unwrap_or_default();
            if !signalled && now == seen {
                continue;
            }
            let (path, upstreams) = (gate.policy_path.clone(), gate.upstreams().to_vec());
            let files = gate.policy().files.clone();
            // Read whole, then check the files did not change while being
            // read: a policy caught mid-write is never installed, and the
            // next poll reads it again.
            let loaded = tokio::task::spawn_blocking(move || {
                let policy = Policy::load(&path, &upstreams);
                (policy, stamp(&files))
            })
            .await;
            let loaded = match loaded {
                Ok((_, after)) if after != now => {
                    tracing::debug!(
                        "the policy files changed while being read; reading them again"
                    );
                    continue;
                }
                Ok((policy, _)) => Ok(policy),
                Err(e) => Err(e),
            };
            seen = now;
            match loaded {
                Ok(Ok(policy)) => {
                    let old = gate.policy().fingerprint.clone();
                    if policy.fingerprint == old {
                        if signalled {
                            tracing::info!(fingerprint = %old, "SIGHUP: the policy is unchanged");
                        }
                        continue;
                    }
                    let (fingerprint, rules) = (policy.fingerprint.clone(), policy.rules.len());
                    // The new policy may reference other files: watch those from now on.
                    let files = policy.files.clone();
                    // Installed before it is announced: once the line is
                    // logged, every decision uses the new policy.
                    gate.install(policy);
                    tracing::info!(
                        fingerprint = %fingerprint,
                        rules,
                        trigger = if signalled { "SIGHUP" } else { "file change" },
                        "policy reloaded"
                    );
                    seen = tokio::task::spawn_blocking(move || stamp(&files))
                        .await
                        .unwrap_or_default();
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        error = %crate::error::chain(&e),
                        "policy reload refused; the policy in force stays"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy reload task failed; the policy in force stays")
                }
            }
        }
    });
}

//! Docker Content Trust (Notary v1): a repository's trust data, fetched
//! from its Notary server, verified from the pinned root key ([`tuf`]), and
//! remembered.
//!
//! Owns the fetch order (root and timestamp always; snapshot, targets and
//! the delegations the snapshot lists only when the timestamp changed), the
//! trust state kept per (server, GUN) through [`TrustState`] (the highest
//! version seen of every role, so a rollback or freeze is refused even
//! after a restart, and the last files that verified), and the fallback:
//! when the server cannot be reached (or `offline = true`), the kept files
//! decide if they still verify at this moment; with none, nothing passes.
//! A server that answers but serves trust data that does not verify is a
//! refusal, never a fallback. Verification runs on the blocking pool. This
//! module must not decide policy: the gate counts what it proves.

pub mod tuf;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cache::fill::BoxError;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::policy::NotaryServer;
use crate::store::BoxFuture;
use crate::upstream::{Upstream, UpstreamError};
use tuf::{Anchor, Files, Repository, TufError, Versions};

/// Where trust state is kept between requests and restarts (the cache's
/// index implements it). Values are opaque bytes, never expired.
pub trait TrustState: Send + Sync {
    fn get(&self, key: &str) -> Option<Arc<[u8]>>;
    fn put(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), BoxError>>;
}

/// Why a repository's trust data cannot vouch for anything.
#[derive(Debug, thiserror::Error)]
pub enum NotaryError {
    #[error("no trust data for {gun}")]
    NoTrustData { gun: String },
    #[error("trust data for {gun} refused")]
    Invalid {
        gun: String,
        #[source]
        source: TufError,
    },
    #[error(
        "the trust data kept for {gun} does not verify, and the notary server cannot be asked (unreachable or offline)"
    )]
    CachedInvalid {
        gun: String,
        #[source]
        source: TufError,
    },
    #[error("no trust data for {gun}: the notary server is unreachable and none is kept")]
    Unreachable {
        gun: String,
        #[source]
        source: UpstreamError,
    },
    #[error("no trust data for {gun}: offline, and none is kept")]
    Offline { gun: String },
    #[error("fetching trust data for {gun} failed")]
    Fetch {
        gun: String,
        #[source]
        source: UpstreamError,
    },
    #[error("the trust state kept for {gun} cannot be read")]
    State { gun: String },
    #[error("notary server {server} cannot be used")]
    Client {
        server: String,
        #[source]
        source: UpstreamError,
    },
    #[error("trust data verification failed to run")]
    Task(#[source] tokio::task::JoinError),
}

/// What is kept per (server, GUN).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    /// Highest versions ever verified (never lowered).
    versions: Versions,
    /// The last files that verified, and the fingerprint of the pinned key
    /// they verified from.
    files: Option<Files>,
    pin: String,
}

/// A repository that verified, and whether the kept files decided.
#[derive(Debug)]
pub struct Verified {
    pub repository: Repository,
    /// The server could not be asked: kept trust data decided.
    pub from_cache: bool,
    /// Taken from a fetch that began while this caller waited for it.
    pub reused: bool,
}

/// Stripes of the per-GUN update lock.
const STRIPES: usize = 64;
/// Repositories remembered for callers that waited on their fetch, at most.
const RECENT: usize = 4096;

/// The Notary client with its trust state.
pub struct Notary {
    state: Arc<dyn TrustState>,
    offline: bool,
    metrics: Metrics,
    clock: Clock,
    /// One transport per server configuration.
    clients: Mutex<HashMap<String, Arc<Upstream>>>,
    /// Updates of one GUN's state run one at a time (so no version is lost).
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Repositories verified from the server: (the fetch's number, pin,
    /// repository). A caller that arrived before a fetch began takes its
    /// result instead of asking again (a herd of first pulls costs one
    /// round of requests); nothing older is ever reused.
    recent: Mutex<HashMap<String, (u64, String, Repository)>>,
    /// Fetches begun so far.
    fetches: std::sync::atomic::AtomicU64,
}

/// The key of a repository's state.
fn state_key(server: &NotaryServer, gun: &str) -> String {
    format!("notary {} {gun}", server.transport.url)
}

impl Notary {
    pub fn new(
        state: Arc<dyn TrustState>,
        offline: bool,
        metrics: Metrics,
        clock: Clock,
    ) -> Notary {
        Notary {
            state,
            offline,
            metrics,
            clock,
            clients: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            recent: Mutex::new(HashMap::new()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn client(&self, server: &NotaryServer) -> Result<Arc<Upstream>, NotaryError> {
        let t = &server.transport;
        let id = format!(
            "{} {:?} {:?}",
            t.url,
            t.ca_certs,
            t.credentials
                .as_ref()
                .map(|c| (&c.username, c.password.expose()))
        );
        let mut clients = self.clients.lock().expect("notary clients");
        if let Some(c) = clients.get(&id) {
            return Ok(c.clone());
        }
        let client = Arc::new(
            Upstream::new(t, self.metrics.clone(), self.clock.clone()).map_err(|source| {
                NotaryError::Client {
                    server: server.name.clone(),
                    source,
                }
            })?,
        );
        clients.insert(id, client.clone());
        Ok(client)
    }

    fn record(&self, key: &str, gun: &str) -> Result<Record, NotaryError> {
        match self.state.get(key) {
            None => Ok(Record::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| NotaryError::State {
                gun: gun.to_owned(),
            }),
        }
    }

    /// The verified trust data of `gun` on `server`, anchored at the pinned
    /// key `pinned` (named `root_name` in refusals).
    pub async fn repository(
        &self,
        server: &NotaryServer,
        root_name: &str,
        pinned: &tuf::PublicKey,
        gun: &str,
    ) -> Result<Verified, NotaryError> {
        let result = self.lookup(server, root_name, pinned, gun).await;
        let outcome = match &result {
            Ok(v) if v.from_cache => "kept",
            Ok(v) if v.reused => "reused",
            Ok(_) => "fetched",
            Err(_) => "refused",
        };
        self.metrics.notary_trust_data(&server.name, outcome);
        result
    }

    async fn lookup(
        &self,
        server: &NotaryServer,
        root_name: &str,
        pinned: &tuf::PublicKey,
        gun: &str,
    ) -> Result<Verified, NotaryError> {
        let key = state_key(server, gun);
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() as usize) % STRIPES
        };
        use std::sync::atomic::Ordering;
        let arrived = self.fetches.load(Ordering::SeqCst);
        let _one_at_a_time = self.stripes[stripe].lock().await;
        let pin = pinned.fingerprint();
        if let Some(repository) = self.reusable(&key, &pin, arrived) {
            return Ok(Verified {
                repository,
                from_cache: false,
                reused: true,
            });
        }
        let record = self.record(&key, gun)?;
        let kept = record.files.as_ref().filter(|_| record.pin == pin);
        let ticket = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let fetched = if self.offline {
            None
        } else {
            let client = self.client(server)?;
            Some(fetch(&client, gun, kept).await)
        };
        // Kept files decide only when the server cannot be asked.
        let fallback = |none_kept: NotaryError| match kept {
            Some(files) => Ok((files.clone(), true)),
            None => Err(none_kept),
        };
        let gun_owned = || gun.to_owned();
        let (files, from_cache) = match fetched {
            Some(Ok(Some(files))) => (files, false),
            Some(Ok(None)) => return Err(NotaryError::NoTrustData { gun: gun_owned() }),
            Some(Err(e)) if e.is_unavailable() => fallback(NotaryError::Unreachable {
                gun: gun_owned(),
                source: e,
            })?,
            Some(Err(e)) => {
                return Err(NotaryError::Fetch {
                    gun: gun_owned(),
                    source: e,
                });
            }
            None => fallback(NotaryError::Offline { gun: gun_owned() })?,
        };
        let now = self.clock.now();
        let (name, pinned_key) = (root_name.to_owned(), pinned.clone());
        let (seen, previous) = (record.versions.clone(), kept.map(|f| f.root.clone()));
        let (verified, files) = tokio::task::spawn_blocking(move || {
            let verified =
                verify_anchored(&files, &name, &pinned_key, previous.as_deref(), &seen, now);
            (verified, files)
        })
        .await
        .map_err(NotaryError::Task)?;
        let repository = match verified {
            Ok(r) => r,
            Err(source) if from_cache => {
                return Err(NotaryError::CachedInvalid {
                    gun: gun.to_owned(),
                    source,
                });
            }
            Err(source) => {
                return Err(NotaryError::Invalid {
                    gun: gun.to_owned(),
                    source,
                });
            }
        };
        if !from_cache {
            let mut versions = record.versions.clone();
            versions.merge(&repository.versions);
            let updated = Record {
                versions,
                files: Some(files),
                pin: pin.clone(),
            };
            if updated != record {
                let bytes = serde_json::to_vec(&updated).expect("trust state serializes");
                if let Err(e) = self.state.put(key.clone(), bytes).await {
                    // Without the versions kept, a later rollback to this
                    // very state could not be told apart: refuse.
                    tracing::warn!(error = %crate::error::chain(&*e), %gun, "could not keep notary trust state");
                    return Err(NotaryError::State {
                        gun: gun.to_owned(),
                    });
                }
            }
            // Kept: lookups that waited on this fetch may take its result.
            let mut recent = self.recent.lock().expect("recent trust data");
            if recent.len() >= RECENT {
                recent.clear();
            }
            recent.insert(key, (ticket, pin, repository.clone()));
        }
        Ok(Verified {
            repository,
            from_cache,
            reused: false,
        })
    }

    /// A repository verified from the server under `pin` by a fetch that
    /// began after the caller arrived (`arrived` fetches had begun then).
    fn reusable(&self, key: &str, pin: &str, arrived: u64) -> Option<Repository> {
        let recent = self.recent.lock().expect("recent trust data");
        let (fetch, p, repository) = recent.get(key)?;
        (*fetch > arrived && p == pin && repository.expires > self.clock.now())
            .then(|| repository.clone())
    }
}

/// The trust state to keep after importing `imported` (carried across an
/// air gap) over `existing`: the imported files, unless the kept ones are
/// newer; the highest versions seen stay as they are (nothing imported
/// raises or lowers them). The files are verified, from the importing
/// site's pinned key, at every decision. `None`: keep what is there.
pub fn imported(existing: Option<&[u8]>, imported: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let new: Record =
        serde_json::from_slice(imported).map_err(|e| format!("not Notary trust state: {e}"))?;
    let Some(files) = new.files else {
        return Ok(None);
    };
    let old: Record = match existing {
        None => Record::default(),
        Some(b) => serde_json::from_slice(b).map_err(|e| format!("the kept trust state: {e}"))?,
    };
    // Which is newer is read from the (unverified) timestamps only to
    // choose; verification decides later.
    let version = |f: &Files| tuf::claimed_version(&f.timestamp).unwrap_or(0);
    if old
        .files
        .as_ref()
        .is_some_and(|f| version(f) >= version(&files))
    {
        return Ok(None);
    }
    let merged = Record {
        versions: old.versions,
        files: Some(files),
        pin: new.pin,
    };
    Ok(Some(
        serde_json::to_vec(&merged).expect("trust state serializes"),
    ))
}

/// Verify `files` from the pinned key, or (after a root rotation the pin
/// did not sign) from the root that was trusted before.
fn verify_anchored(
    files: &Files,
    root_name: &str,
    pinned: &tuf::PublicKey,
    previous_root: Option<&[u8]>,
    seen: &Versions,
    now: SystemTime,
) -> Result<Repository, TufError> {
    let pinned_anchor = Anchor::Pinned {
        name: root_name,
        key: pinned,
    };
    match tuf::verify(files, &pinned_anchor, seen, now) {
        Err(TufError::NotPinned { role, key }) => {
            let Some(previous) = previous_root.and_then(|b| tuf::trusted_root(b).ok()) else {
                return Err(TufError::NotPinned { role, key });
            };
            tuf::verify(files, &Anchor::Trusted(&previous), seen, now)
        }
        other => other,
    }
}

/// Fetch the role files of `gun`, reusing `kept` ones the timestamp and
/// snapshot say are current. `None` when the server has no trust data.
async fn fetch(
    client: &Upstream,
    gun: &str,
    kept: Option<&Files>,
) -> Result<Option<Files>, UpstreamError> {
    let scope = format!("repository:{gun}:pull");
    let get = |role: String| {
        let scope = scope.clone();
        async move {
            let path = format!("/v2/{gun}/_trust/tuf/{role}.json");
            client.get_document(&path, &scope, tuf::MAX_ROLE_SIZE).await
        }
    };
    let Some(root) = get("root".into()).await? else {
        return Ok(None);
    };
    let Some(timestamp) = get("timestamp".into()).await? else {
        return Ok(None);
    };
    if let Some(k) = kept
        && k.timestamp == timestamp
    {
        return Ok(Some(Files {
            root: root.to_vec(),
            ..k.clone()
        }));
    }
    let Some(snapshot) = get("snapshot".into()).await? else {
        return Ok(None);
    };
    let Some(targets) = get("targets".into()).await? else {
        return Ok(None);
    };
    let mut delegations = std::collections::BTreeMap::new();
    for role in tuf::listed_delegations(&snapshot) {
        // One that is not served counts as absent.
        if let Some(bytes) = get(role.clone()).await? {
            delegations.insert(role, bytes.to_vec());
        }
    }
    Ok(Some(Files {
        root: root.to_vec(),
        timestamp: timestamp.to_vec(),
        snapshot: snapshot.to_vec(),
        targets: targets.to_vec(),
        delegations,
    }))
}

impl TrustState for crate::cache::Cache {
    fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.trust(key)
    }

    fn put(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.put_trust(key, value)
                .await
                .map_err(|e| Box::new(e) as BoxError)
        })
    }
}

//! The cache index: which objects are stored (size, media type, last access)
//! and what tags and referrer lists point to (digest, fetched-at).
//!
//! The durable record is a redb database; an in-memory mirror answers lookups
//! without I/O on the request path. New entries are committed to redb before
//! they appear in memory, so nothing is served that a crash would forget.
//! Readers *pin* an entry for as long as they stream it, and eviction only
//! takes unpinned entries. Access times live in memory and are flushed in
//! batches. It also keeps the policy gate's verdicts (opaque bytes with an
//! expiry), mirrored in memory the same way. Every write goes through the
//! index's own writer thread ([`writer`]), which commits concurrent changes
//! together and recovers from I/O errors; the database is read only when it
//! is opened. Opening never panics: an index redb cannot read is moved aside
//! and a fresh one created, and the caller rebuilds it from the objects on
//! disk. This module must not touch object bytes or upstreams.

mod holdings;
mod tags;
mod trust;
mod verdicts;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::digest::Digest;
use crate::reference::{RegistryHost, RepoName, Tag};
use crate::store::Listing;
use writer::{Op, Writer};

/// digest -> (size, last access in ms since the epoch, media type or "" for blobs)
const OBJECTS: TableDefinition<&str, (u64, u64, &str)> = TableDefinition::new("objects");
/// "registry repo kind name" -> (digest, fetched-at in ms since the epoch)
const TAGS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("tags");
/// verdict key -> (expires at in ms since the epoch, verdict bytes)
const VERDICTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("verdicts");

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database error")]
    Db(#[source] redb::Error),
    #[error("the index could not be written")]
    Write(#[source] Arc<redb::Error>),
    #[error("the index is closed")]
    Closed,
    #[error("cannot start the index writer")]
    Thread(#[source] std::io::Error),
    #[error("cannot move the unreadable index {path} aside")]
    Quarantine {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the cache is in use by another portcullis (its index is locked): stop it first, or rely on its background scrub (cache.scrub_rate)"
    )]
    InUse,
    #[error("index task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl<E: Into<redb::Error>> From<E> for IndexError {
    fn from(e: E) -> Self {
        IndexError::Db(e.into())
    }
}

/// What a tag entry names: a tag, or the referrer list of a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TagName {
    Tag(Tag),
    Referrers(Digest),
}

/// Key of a tag entry: upstream registry, repository, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TagKey {
    pub registry: RegistryHost,
    pub repo: RepoName,
    pub name: TagName,
}

impl TagKey {
    fn encode(&self) -> String {
        match &self.name {
            TagName::Tag(t) => format!("{} {} t {t}", self.registry, self.repo),
            TagName::Referrers(d) => format!("{} {} r {d}", self.registry, self.repo),
        }
    }

    fn decode(s: &str) -> Option<TagKey> {
        let mut parts = s.split(' ');
        let registry = parts.next()?.parse().ok()?;
        let repo = parts.next()?.parse().ok()?;
        let name = match (parts.next()?, parts.next()?) {
            ("t", t) => TagName::Tag(t.parse().ok()?),
            ("r", d) => TagName::Referrers(d.parse().ok()?),
            _ => return None,
        };
        parts.next().is_none().then_some(TagKey {
            registry,
            repo,
            name,
        })
    }
}

/// Where a tag pointed when last checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagEntry {
    pub digest: Digest,
    pub fetched_at: SystemTime,
}

/// What the index knows about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The manifest media type; `None` for blobs.
    pub media_type: Option<Arc<str>>,
}

struct Entry {
    info: ObjectInfo,
    last_access: u64,
    pins: u32,
    dirty: bool,
}

#[derive(Default)]
struct Mem {
    objects: HashMap<Digest, Entry>,
    tags: HashMap<TagKey, TagEntry>,
    verdicts: HashMap<String, (u64, Arc<[u8]>)>,
    /// Trust state (Notary versions and files), never expired.
    trust: HashMap<String, Arc<[u8]>>,
    /// Repositories known to hold each object (`[auth]`).
    holdings: HashMap<Digest, HashSet<Arc<str>>>,
    holding_pairs: usize,
    total: u64,
    /// Strictly increasing access stamp (ms since the epoch, bumped on ties).
    stamp: u64,
    time: Clock,
}

impl Mem {
    fn stamp(&mut self) -> u64 {
        self.stamp = unix_ms(self.time.now()).max(self.stamp.saturating_add(1));
        self.stamp
    }

    /// An object's entry, its access recorded now.
    fn touch(&mut self, digest: &Digest) -> Option<&mut Entry> {
        let stamp = self.stamp();
        let e = self.objects.get_mut(digest)?;
        e.last_access = stamp;
        e.dirty = true;
        Some(e)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Keeps an object from being evicted while it is read.
pub struct PinGuard {
    mem: Arc<Mutex<Mem>>,
    digest: Digest,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut mem = self.mem.lock().expect("index lock");
        if let Some(e) = mem.objects.get_mut(&self.digest) {
            e.pins = e.pins.saturating_sub(1);
        }
    }
}

/// What reconciling the index with the store found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Objects present in both.
    pub kept: usize,
    /// Index entries whose file was missing or the wrong size.
    pub dropped_entries: usize,
    /// Files no index entry names (for example, published just before a crash).
    pub orphans: Vec<Digest>,
}

/// The index: redb on disk, mirrored in memory.
pub struct Index {
    writer: Writer,
    mem: Arc<Mutex<Mem>>,
    time: Clock,
}

/// What opening the index found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Where an index redb could not read was moved (its tags are lost).
    pub quarantined: Option<PathBuf>,
    /// Why it could not be read.
    pub reason: Option<String>,
}

/// Open failures that mean the file is damaged (as opposed to in use, or
/// unreadable for reasons moving it aside would not fix).
fn damaged(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Corrupted(_)
            | redb::Error::UpgradeRequired(_)
            | redb::Error::RepairAborted
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. }
    ) || matches!(e, redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData || io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// Open the database and read it into memory, catching redb's panics.
fn load(path: &Path, time: &Clock) -> Result<(Database, Mem), redb::Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_inner(path, time)))
        .unwrap_or_else(|_| {
            Err(redb::Error::Corrupted(
                "redb panicked reading the index".into(),
            ))
        })
}

impl Index {
    /// Open or create the index and load it. Blocking: call from the
    /// blocking pool, inside the runtime. An index that cannot be read is
    /// moved aside and replaced by an empty one (see [`Opened`]).
    pub fn open(path: &Path, time: Clock) -> Result<(Index, Opened), IndexError> {
        let mut opened = Opened::default();
        let (db, mem) = match load(path, &time) {
            Ok(loaded) => loaded,
            Err(e) if damaged(&e) => {
                let aside =
                    path.with_extension(format!("redb.corrupt-{}", unix_ms(SystemTime::now())));
                std::fs::rename(path, &aside).map_err(|source| IndexError::Quarantine {
                    path: path.to_owned(),
                    source,
                })?;
                opened.quarantined = Some(aside);
                opened.reason = Some(e.to_string());
                load(path, &time)?
            }
            Err(redb::Error::DatabaseAlreadyOpen) => return Err(IndexError::InUse),
            Err(e) => return Err(e.into()),
        };
        let writer = Writer::start(db, path.to_owned())?;
        Ok((
            Index {
                writer,
                mem: Arc::new(Mutex::new(mem)),
                time,
            },
            opened,
        ))
    }

    /// Whether the index accepts writes now (and when that changes).
    pub fn writable(&self) -> watch::Receiver<bool> {
        self.writer.writable()
    }

    /// Commit what is queued and close the database cleanly.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

fn load_inner(path: &Path, time: &Clock) -> Result<(Database, Mem), redb::Error> {
    {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(OBJECTS)?;
        tx.open_table(TAGS)?;
        tx.open_table(VERDICTS)?;
        tx.open_table(trust::TRUST)?;
        tx.open_table(holdings::HOLDINGS)?;
        tx.commit()?;
        let mut mem = Mem {
            time: time.clone(),
            ..Mem::default()
        };
        let tx = db.begin_read()?;
        for row in tx.open_table(OBJECTS)?.iter()? {
            let (k, v) = row?;
            let Ok(digest) = k.value().parse::<Digest>() else {
                continue;
            };
            let (size, last_access, media_type) = v.value();
            mem.total += size;
            mem.stamp = mem.stamp.max(last_access);
            let media_type = (!media_type.is_empty()).then(|| Arc::from(media_type));
            mem.objects.insert(
                digest,
                Entry {
                    info: ObjectInfo { size, media_type },
                    last_access,
                    pins: 0,
                    dirty: false,
                },
            );
        }
        for row in tx.open_table(TAGS)?.iter()? {
            let (k, v) = row?;
            let (digest, fetched) = v.value();
            if let (Some(key), Ok(digest)) = (TagKey::decode(k.value()), digest.parse()) {
                mem.tags.insert(
                    key,
                    TagEntry {
                        digest,
                        fetched_at: from_unix_ms(fetched),
                    },
                );
            }
        }
        let now = unix_ms(time.now());
        for row in tx.open_table(VERDICTS)?.iter()? {
            let (k, v) = row?;
            let (expires, bytes) = v.value();
            if expires > now {
                mem.verdicts
                    .insert(k.value().to_owned(), (expires, Arc::from(bytes)));
            }
        }
        for row in tx.open_table(trust::TRUST)?.iter()? {
            let (k, v) = row?;
            mem.trust.insert(k.value().to_owned(), Arc::from(v.value()));
        }
        holdings::load(&tx, &mut mem)?;
        drop(tx);
        Ok((db, mem))
    }
}

impl Index {
    fn mem(&self) -> MutexGuard<'_, Mem> {
        self.mem.lock().expect("index lock")
    }

    /// Compare with the objects actually stored: drop entries without a
    /// matching file and report files without an entry. When the listing
    /// is not complete (a shared store lists only local copies), an entry
    /// not listed stays: its object may be in the bucket, and is checked
    /// when opened.
    pub async fn reconcile(&self, listing: &Listing) -> Result<Reconciled, IndexError> {
        let stored = &listing.objects;
        let on_disk: HashMap<&Digest, u64> = stored.iter().map(|(d, n)| (d, *n)).collect();
        let mut out = Reconciled::default();
        let mut missing = Vec::new();
        {
            let mut mem = self.mem();
            let Mem { objects, total, .. } = &mut *mem;
            objects.retain(|d, e| {
                let found = on_disk.get(d);
                if found == Some(&e.info.size) || (found.is_none() && !listing.complete) {
                    out.kept += 1;
                    true
                } else {
                    *total -= e.info.size;
                    missing.push(d.to_string());
                    false
                }
            });
            out.orphans = stored
                .iter()
                .filter(|(d, _)| !objects.contains_key(d))
                .map(|(d, _)| d.clone())
                .collect();
        }
        out.dropped_entries = missing.len();
        if !missing.is_empty() {
            self.write(move |tx| {
                let mut t = tx.open_table(OBJECTS)?;
                for d in &missing {
                    t.remove(d.as_str())?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(out)
    }

    async fn write<F>(&self, f: F) -> Result<(), IndexError>
    where
        F: FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let op: Op = Box::new(f);
        self.writer.write(op).await
    }

    /// Look up and pin an object, recording the access.
    pub fn pin(&self, digest: &Digest) -> Option<(ObjectInfo, PinGuard)> {
        let mut mem = self.mem();
        let e = mem.touch(digest)?;
        e.pins += 1;
        Some((
            e.info.clone(),
            PinGuard {
                mem: self.mem.clone(),
                digest: digest.clone(),
            },
        ))
    }

    /// Look up an object without pinning it (records the access).
    pub fn get(&self, digest: &Digest) -> Option<ObjectInfo> {
        self.mem().touch(digest).map(|e| e.info.clone())
    }

    /// Record a published object and return it pinned. Durable before visible.
    pub async fn insert(
        &self,
        digest: &Digest,
        size: u64,
        media_type: Option<&'static str>,
    ) -> Result<PinGuard, IndexError> {
        let (key, mt) = (digest.to_string(), media_type.unwrap_or(""));
        let stamp = self.mem().stamp();
        let known_type = {
            let mem = self.mem();
            mem.objects
                .get(digest)
                .and_then(|e| e.info.media_type.clone())
        };
        // A manifest type, once known, is kept even if the object is stored again as a blob.
        let stored_type: String = known_type.as_deref().unwrap_or(mt).to_owned();
        let db_type = stored_type.clone();
        self.write(move |tx| {
            tx.open_table(OBJECTS)?
                .insert(key.as_str(), (size, stamp, db_type.as_str()))?;
            Ok(())
        })
        .await?;
        let mut mem = self.mem();
        let media_type = (!stored_type.is_empty()).then(|| Arc::from(stored_type.as_str()));
        match mem.objects.get_mut(digest) {
            Some(e) => {
                e.info.media_type = media_type;
                e.last_access = stamp;
                e.pins += 1;
            }
            None => {
                mem.total += size;
                mem.objects.insert(
                    digest.clone(),
                    Entry {
                        info: ObjectInfo { size, media_type },
                        last_access: stamp,
                        pins: 1,
                        dirty: false,
                    },
                );
            }
        }
        Ok(PinGuard {
            mem: self.mem.clone(),
            digest: digest.clone(),
        })
    }

    /// Every object held, with its size (a snapshot, in no order).
    pub fn objects(&self) -> Vec<(Digest, u64)> {
        self.mem()
            .objects
            .iter()
            .map(|(d, e)| (d.clone(), e.info.size))
            .collect()
    }

    /// Bytes and objects held.
    pub fn totals(&self) -> (u64, usize) {
        let mem = self.mem();
        (mem.total, mem.objects.len())
    }

    /// Remove least-recently-used, unpinned objects from memory until the
    /// total is at most `max_total`; returns them. The caller deletes their
    /// bytes and then calls [`Index::forget`].
    pub fn take_lru(&self, max_total: u64) -> Vec<(Digest, u64)> {
        let mut mem = self.mem();
        if mem.total <= max_total {
            return Vec::new();
        }
        let mut candidates: Vec<(u64, Digest, u64)> = mem
            .objects
            .iter()
            .filter(|(_, e)| e.pins == 0)
            .map(|(d, e)| (e.last_access, d.clone(), e.info.size))
            .collect();
        candidates.sort_unstable();
        let mut victims = Vec::new();
        for (_, digest, size) in candidates {
            if mem.total <= max_total {
                break;
            }
            mem.objects.remove(&digest);
            mem.total -= size;
            victims.push((digest, size));
        }
        victims
    }

    /// Drop objects from the index (after their bytes were deleted, or when
    /// their file turned out to be missing).
    pub async fn forget(&self, digests: Vec<Digest>) -> Result<(), IndexError> {
        {
            let mut mem = self.mem();
            for d in &digests {
                if let Some(e) = mem.objects.remove(d) {
                    mem.total -= e.info.size;
                }
            }
            mem.forget_holdings(&digests);
        }
        self.write(move |tx| {
            let mut t = tx.open_table(OBJECTS)?;
            for d in &digests {
                t.remove(d.to_string().as_str())?;
            }
            holdings::forget(tx, &digests)
        })
        .await
    }

    /// Persist access times recorded since the last flush.
    pub async fn flush_access_times(&self) -> Result<usize, IndexError> {
        let dirty: Vec<(String, u64, u64, String)> = {
            let mut mem = self.mem();
            mem.objects
                .iter_mut()
                .filter(|(_, e)| e.dirty)
                .map(|(d, e)| {
                    e.dirty = false;
                    let mt = e.info.media_type.as_deref().unwrap_or("").to_owned();
                    (d.to_string(), e.info.size, e.last_access, mt)
                })
                .collect()
        };
        let n = dirty.len();
        if n > 0 {
            self.write(move |tx| {
                let mut t = tx.open_table(OBJECTS)?;
                for (d, size, at, mt) in &dirty {
                    // Only update entries still present: eviction may have removed some.
                    if t.get(d.as_str())?.is_some() {
                        t.insert(d.as_str(), (*size, *at, mt.as_str()))?;
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn d(s: &str) -> Digest {
        Digest::of(Algorithm::Sha256, s.as_bytes())
    }

    fn key(tag: &str) -> TagKey {
        TagKey {
            registry: "docker.io".parse().unwrap(),
            repo: "library/alpine".parse().unwrap(),
            name: TagName::Tag(tag.parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let idx = Index::open(&path, Clock::system()).unwrap().0;
            drop(idx.insert(&d("a"), 10, None).await.unwrap());
            drop(
                idx.insert(&d("m"), 5, Some(crate::media::OCI_MANIFEST))
                    .await
                    .unwrap(),
            );
            let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            idx.set_tag(
                &key("latest"),
                TagEntry {
                    digest: d("m"),
                    fetched_at: at,
                },
            )
            .await
            .unwrap();
            idx.set_tag(
                &TagKey {
                    name: TagName::Referrers(d("m")),
                    ..key("x")
                },
                TagEntry {
                    digest: d("r"),
                    fetched_at: at,
                },
            )
            .await
            .unwrap();
        }
        let idx = Index::open(&path, Clock::system()).unwrap().0;
        assert_eq!(idx.totals(), (15, 2));
        assert_eq!(
            idx.get(&d("m")).unwrap().media_type.as_deref(),
            Some(crate::media::OCI_MANIFEST)
        );
        assert_eq!(idx.get(&d("a")).unwrap().media_type, None);
        let t = idx.tag(&key("latest")).unwrap();
        assert_eq!(t.digest, d("m"));
        assert_eq!(
            t.fetched_at,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            idx.tags_in(
                &"docker.io".parse().unwrap(),
                &"library/alpine".parse().unwrap()
            )
            .len(),
            1
        );
        idx.remove_tag(&key("latest")).await.unwrap();
        assert!(idx.tag(&key("latest")).is_none());
    }

    #[tokio::test]
    async fn evicts_least_recently_used_and_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.redb"), Clock::system())
            .unwrap()
            .0;
        for name in ["a", "b", "c"] {
            drop(idx.insert(&d(name), 10, None).await.unwrap());
        }
        // Touch "a" so "b" is now the oldest; pin "b" so it cannot go.
        idx.get(&d("a"));
        let (_, pin_b) = idx.pin(&d("b")).unwrap();
        let victims = idx.take_lru(15);
        let names: Vec<_> = victims.iter().map(|(dg, _)| dg.clone()).collect();
        assert_eq!(names, vec![d("c"), d("a")]);
        assert_eq!(idx.totals(), (10, 1));
        drop(pin_b);
        assert_eq!(idx.take_lru(5).len(), 1);
    }

    #[tokio::test]
    async fn reconcile_drops_missing_and_reports_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.redb"), Clock::system())
            .unwrap()
            .0;
        drop(idx.insert(&d("kept"), 3, None).await.unwrap());
        drop(idx.insert(&d("gone"), 3, None).await.unwrap());
        drop(idx.insert(&d("short"), 3, None).await.unwrap());
        let stored = vec![(d("kept"), 3), (d("short"), 2), (d("orphan"), 7)];
        let listing = Listing {
            objects: stored,
            complete: true,
        };
        let r = idx.reconcile(&listing).await.unwrap();
        assert_eq!(r.kept, 1);
        assert_eq!(r.dropped_entries, 2);
        assert_eq!(r.orphans, vec![d("short"), d("orphan")]);
        assert_eq!(idx.totals(), (3, 1));
    }

    #[tokio::test]
    async fn an_incomplete_listing_keeps_entries_it_does_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.redb"), Clock::system())
            .unwrap()
            .0;
        drop(idx.insert(&d("in the bucket"), 3, None).await.unwrap());
        drop(idx.insert(&d("short"), 3, None).await.unwrap());
        // Only local copies are listed: one is the wrong size.
        let listing = Listing {
            objects: vec![(d("short"), 2), (d("orphan"), 7)],
            complete: false,
        };
        let r = idx.reconcile(&listing).await.unwrap();
        assert_eq!(r.kept, 1);
        assert_eq!(r.dropped_entries, 1);
        assert_eq!(r.orphans, vec![d("short"), d("orphan")]);
        assert!(idx.get(&d("in the bucket")).is_some());
    }

    #[tokio::test]
    async fn verdicts_expire_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        {
            let idx = Index::open(&path, Clock::system()).unwrap().0;
            idx.put_verdicts(vec![
                ("long".into(), Duration::from_secs(3600), b"pass".to_vec()),
                ("gone".into(), Duration::ZERO, b"deny".to_vec()),
            ])
            .await
            .unwrap();
            assert_eq!(idx.verdict("long").as_deref(), Some(&b"pass"[..]));
            assert!(
                idx.verdict("gone").is_none(),
                "an expired verdict must not be used"
            );
            assert_eq!(idx.purge_verdicts().await.unwrap(), 1);
        }
        let idx = Index::open(&path, Clock::system()).unwrap().0;
        assert_eq!(idx.verdict("long").as_deref(), Some(&b"pass"[..]));
        assert!(idx.verdict("missing").is_none());
    }

    /// A damaged index file never panics start-up: it is moved aside (or,
    /// if the damage is where redb does not look, read as it is).
    #[tokio::test]
    async fn a_damaged_index_is_moved_aside_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let (idx, _) = Index::open(&path, Clock::system()).unwrap();
            for n in 0..2000 {
                drop(idx.insert(&d(&n.to_string()), 10, None).await.unwrap());
            }
            idx.close().await;
        }
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        // Garbage over the middle of the file, where the tables' pages are.
        for b in &mut bytes[len / 4..3 * len / 4] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (idx, opened) = Index::open(&path, Clock::system()).unwrap();
        let aside = opened.quarantined.expect("the damage was found");
        assert!(aside.exists(), "the damaged file is kept for inspection");
        assert_eq!(idx.totals(), (0, 0), "a fresh index, to be rebuilt");
        drop(idx.insert(&d("after"), 1, None).await.unwrap());
    }

    #[tokio::test]
    async fn concurrent_writes_are_committed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        {
            let (idx, _) = Index::open(&path, Clock::system()).unwrap();
            let idx = Arc::new(idx);
            let mut tasks = Vec::new();
            for n in 0..64 {
                let idx = idx.clone();
                tasks.push(tokio::spawn(async move {
                    drop(idx.insert(&d(&format!("c{n}")), 1, None).await.unwrap());
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        let (idx, opened) = Index::open(&path, Clock::system()).unwrap();
        assert!(opened.quarantined.is_none());
        assert_eq!(idx.totals(), (64, 64));
    }

    #[test]
    fn tag_keys_round_trip() {
        let k = key("v1.2");
        assert_eq!(TagKey::decode(&k.encode()), Some(k));
        assert_eq!(TagKey::decode("docker.io library/alpine t"), None);
        assert_eq!(TagKey::decode("docker.io library/alpine x y"), None);
    }
}

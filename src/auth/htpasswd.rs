//! The htpasswd file: bcrypt entries (`htpasswd -B`, as distribution and
//! nginx read them), checked off the async threads, reloaded on change.
//!
//! Only bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`) is accepted: a file with MD5
//! (`$apr1$`), SHA-1 (`{SHA}`) or crypt entries is refused whole, naming the
//! line, because those hashes are cheap to brute-force. A login for an
//! unknown user still costs one bcrypt so its timing does not say which
//! users exist. Verified credentials are remembered (as a SHA-256 of user
//! and password, never the password) for a short time, so Basic on every
//! request does not cost a bcrypt each; a reload forgets them. bcrypt runs
//! on the blocking pool, a few at a time. This module must not decide
//! access.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// Longest htpasswd file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;
/// Longest user name or password accepted in a login (bcrypt reads 72 bytes).
pub const MAX_CREDENTIAL: usize = 256;
/// How long a verified login is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Verified logins remembered at most.
const REMEMBERED: usize = 4096;
/// bcrypt computations at once (each takes a core for tens of milliseconds).
const CONCURRENT_BCRYPT: usize = 4;
/// Logins waiting for or running a bcrypt, at most; more are turned away.
const MAX_WAITING: usize = 256;
/// How often the file is looked at for changes.
pub const POLL: Duration = Duration::from_secs(2);
/// Highest bcrypt cost accepted: a check at cost 14 already takes about a
/// second of a core, and Basic may come with every request.
const MAX_COST: u32 = 14;

/// Why an htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("htpasswd file {path} is larger than 4 MiB")]
    TooLarge { path: PathBuf },
    #[error("{path} line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The parsed file: user → bcrypt hash.
#[derive(Debug, Default)]
pub struct Entries {
    users: HashMap<String, String>,
    /// What an unknown user's password is checked against: a hash of the
    /// file's first cost, so the answer takes as long as a known user's.
    dummy: String,
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.users == other.users
    }
}

impl Entries {
    pub fn parse(path: &Path, text: &str) -> Result<Entries, HtpasswdError> {
        let mut users = HashMap::new();
        let mut cost = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem: &str| HtpasswdError::Line {
                path: path.to_owned(),
                line: i + 1,
                problem: problem.to_owned(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("expected user:hash"))?;
            if user.is_empty() || user.len() > MAX_CREDENTIAL || user.contains(char::is_whitespace)
            {
                return Err(bad("invalid user name"));
            }
            let bcrypt = ["$2a$", "$2b$", "$2x$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p));
            let parts = hash.parse::<bcrypt::HashParts>().ok().filter(|_| bcrypt);
            let Some(parts) = parts else {
                return Err(bad(
                    "only bcrypt entries are accepted (create them with htpasswd -B)",
                ));
            };
            if parts.get_cost() < 4 {
                return Err(bad("bcrypt cost below 4 is not valid"));
            }
            if parts.get_cost() > MAX_COST {
                return Err(bad(&format!(
                    "bcrypt cost {} is above {MAX_COST}: every login would take seconds",
                    parts.get_cost()
                )));
            }
            cost.get_or_insert(parts.get_cost());
            if users.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(bad(&format!("user {user} appears more than once")));
            }
        }
        let dummy = bcrypt::hash(
            "portcullis: no such user",
            cost.unwrap_or(bcrypt::DEFAULT_COST),
        )
        .expect("bcrypt hashes at a cost it accepts");
        Ok(Entries { users, dummy })
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Read and parse the file (blocking).
pub fn load(path: &Path) -> Result<Entries, HtpasswdError> {
    let read = |source| HtpasswdError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.len() > MAX_FILE {
        return Err(HtpasswdError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    Entries::parse(path, &text)
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    UnknownUser,
    BadPassword,
    /// Too many logins are waiting for a bcrypt: not checked.
    Busy,
}

impl LoginFailure {
    pub fn reason(self) -> &'static str {
        match self {
            LoginFailure::UnknownUser => "unknown_user",
            LoginFailure::BadPassword => "bad_password",
            LoginFailure::Busy => "busy",
        }
    }
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The file in force, the logins verified against it, and its path.
pub struct Htpasswd {
    path: PathBuf,
    entries: RwLock<Arc<Entries>>,
    /// SHA-256 of `user \0 password` → (user, verified at).
    remembered: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    bcrypt: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

/// Counts a login as waiting until dropped (also when its request is).
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn remember_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl Htpasswd {
    /// Load `path` (blocking).
    pub fn open(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        Ok(Htpasswd {
            path: path.to_owned(),
            entries: RwLock::new(Arc::new(load(path)?)),
            remembered: Mutex::new(HashMap::new()),
            bcrypt: Arc::new(Semaphore::new(CONCURRENT_BCRYPT)),
            waiting: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn entries(&self) -> Arc<Entries> {
        self.entries.read().expect("htpasswd lock").clone()
    }

    fn install(&self, entries: Entries) {
        *self.entries.write().expect("htpasswd lock") = Arc::new(entries);
        self.remembered.lock().expect("htpasswd lock").clear();
    }

    /// Whether this exact login verified within the last few minutes (and
    /// the user is still in the file): no bcrypt needed.
    pub fn remembered(&self, user: &str, password: &str, now: Instant) -> bool {
        let key = remember_key(user, password);
        let entries = self.entries();
        let remembered = self.remembered.lock().expect("htpasswd lock");
        remembered.get(&key).is_some_and(|(u, at)| {
            u == user && now.saturating_duration_since(*at) < REMEMBER && entries.contains(user)
        })
    }

    /// Check a login with bcrypt (on the blocking pool, a few at a time);
    /// `now` is the monotonic time (the clock's).
    pub async fn verify(
        &self,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Result<(), LoginFailure> {
        if self.remembered(user, password, now) {
            return Ok(());
        }
        let key = remember_key(user, password);
        let entries = self.entries();
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(LoginFailure::Busy);
        }
        let _waiting = Waiting(self.waiting.clone());
        let (hash, known) = match entries.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (entries.dummy.clone(), false),
        };
        let ok = {
            // The slot goes with the computation: a request that goes away
            // does not free it while its bcrypt still runs.
            let slot = self
                .bcrypt
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let password = password.to_owned();
            tokio::task::spawn_blocking(move || {
                let ok = bcrypt::verify(password, &hash).unwrap_or(false);
                drop(slot);
                ok
            })
            .await
            .unwrap_or(false)
        };
        match (known, ok) {
            (false, _) => Err(LoginFailure::UnknownUser),
            (true, false) => Err(LoginFailure::BadPassword),
            (true, true) => {
                let mut remembered = self.remembered.lock().expect("htpasswd lock");
                if remembered.len() >= REMEMBERED {
                    remembered.retain(|_, (_, at)| now.saturating_duration_since(*at) < REMEMBER);
                    if remembered.len() >= REMEMBERED {
                        remembered.clear();
                    }
                }
                remembered.insert(key, (user.to_owned(), now));
                Ok(())
            }
        }
    }
}

/// Reload `htpasswd` whenever its file changes (modification time or size).
/// A file that does not parse is refused with a log line; the one in force
/// stays. Call from within the runtime.
pub fn spawn_reloader(htpasswd: Arc<Htpasswd>) {
    tokio::spawn(async move {
        let path = htpasswd.path.clone();
        let p = path.clone();
        let mut seen = tokio::task::spawn_blocking(move || stamp(&p))
            .await
            .unwrap_or(None);
        loop {
            tokio::time::sleep(POLL).await;
            let p = path.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let before = stamp(&p);
                if before == seen {
                    return None;
                }
                let entries = load(&p);
                // Changed while being read: read it again at the next poll.
                (stamp(&p) == before).then_some((before, entries))
            })
            .await
            .unwrap_or(None);
            let Some((now, entries)) = loaded else {
                continue;
            };
            seen = now;
            match entries {
                Ok(entries) if *htpasswd.entries() == entries => {}
                Ok(entries) => {
                    let users = entries.len();
                    htpasswd.install(entries);
                    tracing::info!(path = %path.display(), users, "htpasswd reloaded");
                }
                Err(e) => tracing::error!(
                    error = %crate::error::chain(&e),
                    "htpasswd reload refused; the file in force stays"
                ),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        let p = Path::new("/etc/htpasswd");
        let ok = format!("# users\n\nalice:{}\nbob:{}\n", hash("a"), hash("b"));
        let e = Entries::parse(p, &ok).unwrap();
        assert_eq!(e.len(), 2);
        for (text, want) in [
            ("carol:$apr1$abc$def\n".to_owned(), "only bcrypt"),
            (
                "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n".to_owned(),
                "only bcrypt",
            ),
            ("carol\n".to_owned(), "user:hash"),
            (
                format!("alice:{}\nalice:{}\n", hash("a"), hash("b")),
                "more than once",
            ),
            ("carol:$2y$05$short\n".to_owned(), "only bcrypt"),
            (
                format!("carol:{}\n", hash("x").replacen("$04$", "$15$", 1)),
                "cost 15",
            ),
        ] {
            let err = Entries::parse(p, &text).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("line"), "{text}: {err}");
        }
    }

    #[tokio::test]
    async fn logins_are_checked_and_remembered_without_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", hash("s3cret"))).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        let now = Instant::now();
        assert_eq!(h.verify("alice", "s3cret", now).await, Ok(()));
        assert_eq!(
            h.verify("alice", "wrong", now).await,
            Err(LoginFailure::BadPassword)
        );
        assert_eq!(
            h.verify("mallory", "s3cret", now).await,
            Err(LoginFailure::UnknownUser)
        );
        {
            let remembered = h.remembered.lock().unwrap();
            assert_eq!(remembered.len(), 1);
            assert!(remembered.values().all(|(u, _)| u == "alice"));
        }
        // A reload without alice forgets her remembered login at once.
        h.install(Entries::parse(&path, "").unwrap());
        assert_eq!(
            h.verify("alice", "s3cret", now).await,
            Err(LoginFailure::UnknownUser)
        );
    }
}

//! The index's one writer: a thread of its own that owns the redb database.
//!
//! Every change to the index is a job queued here (bounded: callers wait
//! for room). The thread takes whatever is queued, applies it in one write
//! transaction and commits once (group commit: concurrent publishes share
//! one fsync), then answers each job. Nothing on the async threads or the
//! blocking pool ever waits on redb's lock or its fsync.
//!
//! A failed commit (a full disk, an I/O error) leaves redb refusing every
//! later write until it is reopened, so on any failure the thread drops the
//! database, reports the index unwritable, and reopens it before the next
//! batch; while unwritable it probes every [`PROBE_EVERY`] with a small
//! write, and reports it writable again as soon as one commits. A panic
//! inside redb is caught and treated the same way. This module must not
//! know what the index holds.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use redb::{Database, TableDefinition, WriteTransaction};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::IndexError;

/// A change to the index, applied inside a write transaction.
pub(super) type Op = Box<dyn FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send>;

/// Jobs queued at most; more wait.
const QUEUE: usize = 4096;
/// Jobs committed together at most.
const MAX_BATCH: usize = 512;
/// How often an unwritable index is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Where the probe writes (a value large enough to need a new page).
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");

enum Job {
    Write {
        op: Op,
        done: oneshot::Sender<Result<(), IndexError>>,
        _room: OwnedSemaphorePermit,
    },
    Close(oneshot::Sender<()>),
}

/// The handle the index writes through.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    room: Arc<Semaphore>,
    writable: watch::Receiver<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// The thread ends once its queue closes; waiting for it means the
    /// database is closed (and can be opened again) when this returns.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Hand `db` (opened from `path`) to a writer thread of its own.
    pub fn start(db: Database, path: PathBuf) -> Result<Writer, IndexError> {
        let (jobs, rx) = mpsc::channel();
        let (state, writable) = watch::channel(true);
        let thread = std::thread::Builder::new()
            .name("portcullis-index".into())
            .spawn(move || run(Some(db), &path, &rx, &state))
            .map_err(IndexError::Thread)?;
        Ok(Writer {
            jobs: Some(jobs),
            room: Arc::new(Semaphore::new(QUEUE)),
            writable,
            thread: Some(thread),
        })
    }

    /// Apply `op` and commit; resolves once it is durable.
    pub async fn write(&self, op: Op) -> Result<(), IndexError> {
        let room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IndexError::Closed)?;
        let (done, answer) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(IndexError::Closed)?
            .send(Job::Write {
                op,
                done,
                _room: room,
            })
            .map_err(|_| IndexError::Closed)?;
        answer.await.map_err(|_| IndexError::Closed)?
    }

    /// Whether the index accepts writes now, and its changes.
    pub fn writable(&self) -> watch::Receiver<bool> {
        self.writable.clone()
    }

    /// Commit what is queued, close the database cleanly and end the thread.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if let Some(jobs) = &self.jobs
            && jobs.send(Job::Close(done)).is_ok()
        {
            let _ = closed.await;
        }
    }
}

fn run(
    mut db: Option<Database>,
    path: &Path,
    rx: &mpsc::Receiver<Job>,
    state: &watch::Sender<bool>,
) {
    loop {
        let first = if *state.borrow() {
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    probe(&mut db, path, state);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut batch = Vec::new();
        let mut close = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write { op, done, _room } => batch.push((op, done, _room)),
                Job::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let (ops, answers): (Vec<Op>, Vec<_>) = batch
                .into_iter()
                .map(|(op, done, room)| (op, (done, room)))
                .unzip();
            let result = commit(&mut db, path, ops);
            if let (Err(e), true) = (&result, *state.borrow()) {
                tracing::error!(error = %e, "the cache index cannot be written (disk full or failing?); cached content is still served, /readyz answers 503 until a write succeeds");
            }
            state.send_if_modified(|w| {
                let changed = *w != result.is_ok();
                *w = result.is_ok();
                changed
            });
            for (done, _room) in answers {
                let _ = done.send(result.clone().map_err(IndexError::Write));
            }
        }
        if let Some(done) = close {
            drop(db.take());
            let _ = done.send(());
            return;
        }
    }
}

/// Apply `ops` in one transaction on the database, reopening it first if a
/// failure closed it. On failure the database is dropped, to be reopened.
fn commit(db: &mut Option<Database>, path: &Path, ops: Vec<Op>) -> Result<(), Arc<redb::Error>> {
    if db.is_none() {
        *db = Some(reopen(path)?);
    }
    let handle = db.as_ref().expect("opened above");
    let applied = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
        let tx = handle.begin_write()?;
        for op in ops {
            op(&tx)?;
        }
        tx.commit()?;
        Ok(())
    }));
    let failure = match applied {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => redb::Error::Corrupted("redb panicked during a write".into()),
    };
    *db = None;
    Err(Arc::new(failure))
}

fn reopen(path: &Path) -> Result<Database, Arc<redb::Error>> {
    std::panic::catch_unwind(|| Database::create(path))
        .unwrap_or_else(|_| {
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
                "redb panicked while opening".into(),
            )))
        })
        .map_err(|e| Arc::new(redb::Error::from(e)))
}

/// Try a small write; on success the index is writable again.
fn probe(db: &mut Option<Database>, path: &Path, state: &watch::Sender<bool>) {
    let op: Op = Box::new(|tx| {
        tx.open_table(PROBE)?.insert("probe", &[0u8; 8192][..])?;
        Ok(())
    });
    if commit(db, path, vec![op]).is_ok() {
        tracing::info!("the cache index accepts writes again");
        state.send_replace(true);
    }
}

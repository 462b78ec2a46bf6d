//! Reusable read buffers for serving object bytes.
//!
//! Owns a small, bounded pool of fixed-size buffers. A read of a chunk takes
//! one, fills it, and hands it out as [`Bytes`] that return the buffer to the
//! pool when the last reference drops (after the socket write). Reusing
//! buffers avoids a fresh allocation, page faults and zeroing for every
//! chunk served. Reads much smaller than a buffer get an exact allocation,
//! so a small object kept for long (a manifest in memory) never holds a
//! large buffer. This module must not do I/O.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Size of a pooled buffer: the chunk a blob is served in.
pub const CHUNK: usize = 256 * 1024;
/// Buffers kept for reuse, at most: 16 MiB of idle memory.
const KEEP: usize = 64;

/// The pool; cheap to clone.
#[derive(Clone, Default)]
pub struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

/// A buffer on loan: back to the pool when dropped.
struct Loan {
    buf: Vec<u8>,
    len: usize,
    pool: Buffers,
}

impl AsRef<[u8]> for Loan {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        let mut pool = self.pool.0.lock().expect("buffer pool lock");
        if pool.len() < KEEP {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

impl Buffers {
    /// Fill a buffer of at least `max` bytes with `fill` (which returns how
    /// many bytes it wrote) and return those bytes.
    pub fn fill<E>(
        &self,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<Bytes, E> {
        if !(CHUNK / 2..=CHUNK).contains(&max) {
            let mut buf = vec![0u8; max];
            let n = fill(&mut buf)?;
            buf.truncate(n);
            return Ok(Bytes::from(buf));
        }
        let taken = self.0.lock().expect("buffer pool lock").pop();
        let mut buf = taken.unwrap_or_else(|| vec![0u8; CHUNK]);
        let len = fill(&mut buf[..max])?;
        Ok(Bytes::from_owner(Loan {
            buf,
            len,
            pool: self.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reuse_buffers_and_small_reads_do_not_hold_one() {
        let pool = Buffers::default();
        let a = pool
            .fill(CHUNK, |b| {
                b[..3].copy_from_slice(b"abc");
                Ok::<_, ()>(3)
            })
            .unwrap();
        assert_eq!(a.as_ref(), b"abc");
        assert_eq!(pool.0.lock().unwrap().len(), 0);
        let slice = a.slice(1..);
        drop(a);
        assert_eq!(
            pool.0.lock().unwrap().len(),
            0,
            "returned while a slice still reads it"
        );
        drop(slice);
        assert_eq!(pool.0.lock().unwrap().len(), 1);
        // The buffer comes back with old bytes: only what is filled is served.
        let b = pool.fill(CHUNK, |_| Ok::<_, ()>(0)).unwrap();
        assert!(b.is_empty());
        drop(b);
        let small = pool
            .fill(100, |b| {
                b.fill(7);
                Ok::<_, ()>(100)
            })
            .unwrap();
        assert_eq!(small.as_ref(), &[7u8; 100][..]);
        assert_eq!(
            pool.0.lock().unwrap().len(),
            1,
            "a small read took a pooled buffer"
        );
    }
}

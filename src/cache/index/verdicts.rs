//! The gate's verdicts in the index: opaque bytes with an expiry, kept in
//! memory and in redb, written in one transaction per batch and purged once
//! expired. This module must not know what a verdict means.

use std::sync::Arc;
use std::time::Duration;

use super::{Index, IndexError, VERDICTS, unix_ms};

impl Index {
    /// A verdict that has not expired.
    pub fn verdict(&self, key: &str) -> Option<Arc<[u8]>> {
        let now = unix_ms(self.time.now());
        let mem = self.mem();
        mem.verdicts
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v.clone())
    }

    /// Store verdicts, each with its own lifetime, in one transaction.
    pub async fn put_verdicts(
        &self,
        entries: Vec<(String, Duration, Vec<u8>)>,
    ) -> Result<(), IndexError> {
        let now = self.time.now();
        let rows: Vec<(String, u64, Vec<u8>)> = entries
            .into_iter()
            .map(|(k, ttl, v)| {
                let expires = now.checked_add(ttl).map_or(u64::MAX, unix_ms);
                (k, expires, v)
            })
            .collect();
        let mem_rows: Vec<(String, u64, Arc<[u8]>)> = rows
            .iter()
            .map(|(k, e, v)| (k.clone(), *e, Arc::from(v.as_slice())))
            .collect();
        self.write(move |tx| {
            let mut t = tx.open_table(VERDICTS)?;
            for (k, expires, v) in &rows {
                t.insert(k.as_str(), (*expires, v.as_slice()))?;
            }
            Ok(())
        })
        .await?;
        let mut mem = self.mem();
        for (k, e, v) in mem_rows {
            mem.verdicts.insert(k, (e, v));
        }
        Ok(())
    }

    /// Drop expired verdicts; returns how many.
    pub async fn purge_verdicts(&self) -> Result<usize, IndexError> {
        let now = unix_ms(self.time.now());
        let expired: Vec<String> = {
            let mut mem = self.mem();
            let keys: Vec<String> = mem
                .verdicts
                .iter()
                .filter(|(_, (e, _))| *e <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                mem.verdicts.remove(k);
            }
            keys
        };
        let n = expired.len();
        if n > 0 {
            self.write(move |tx| {
                let mut t = tx.open_table(VERDICTS)?;
                for k in &expired {
                    t.remove(k.as_str())?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(n)
    }
}

//! Which repositories hold which objects, for `[auth]`: a blob or manifest
//! cached for one repository is served through another only once that
//! repository is known to hold it too (what counts as holding is
//! `cache/holdings.rs`'s to say). Pairs are forgotten with their object.
//! Kept in memory and in redb. This module must not decide who may pull
//! what.

use std::collections::HashSet;
use std::sync::Arc;

use redb::{ReadableTable as _, TableDefinition};

use super::{Index, IndexError, Mem};
use crate::digest::Digest;

pub(super) const HOLDINGS: TableDefinition<&str, ()> = TableDefinition::new("holdings");

/// Pairs kept at most; past it, pairs of objects no longer cached are
/// dropped, and new ones are not recorded (their repository is then asked
/// upstream again, each time).
const MAX_PAIRS: usize = 2_000_000;

fn key(digest: &Digest, repository: &str) -> String {
    format!("{digest} {repository}")
}

/// Read the table into memory (at open).
pub(super) fn load(tx: &redb::ReadTransaction, mem: &mut Mem) -> Result<(), redb::Error> {
    for row in tx.open_table(HOLDINGS)?.iter()? {
        let (k, _) = row?;
        let k = k.value();
        if let Some((d, repo)) = k.split_once(' ')
            && let Ok(d) = d.parse::<Digest>()
        {
            mem.holdings.entry(d).or_default().insert(Arc::from(repo));
            mem.holding_pairs += 1;
        }
    }
    Ok(())
}

/// Remove the pairs of forgotten objects (inside the forgetting write).
pub(super) fn forget(tx: &redb::WriteTransaction, digests: &[Digest]) -> Result<(), redb::Error> {
    let mut t = tx.open_table(HOLDINGS)?;
    for d in digests {
        let (from, to) = (format!("{d} "), format!("{d}!"));
        t.retain_in(from.as_str()..to.as_str(), |_, ()| false)?;
    }
    Ok(())
}

impl Mem {
    pub(super) fn forget_holdings(&mut self, digests: &[Digest]) {
        for d in digests {
            if let Some(set) = self.holdings.remove(d) {
                self.holding_pairs -= set.len();
            }
        }
    }
}

impl Index {
    /// Is `repository` (normalized) known to hold `digest`?
    pub fn holds(&self, digest: &Digest, repository: &str) -> bool {
        self.mem()
            .holdings
            .get(digest)
            .is_some_and(|s| s.contains(repository))
    }

    /// Record that `repository` holds `digests`; durable when this returns.
    /// Only pairs not known yet are written.
    pub async fn add_holdings(
        &self,
        repository: &str,
        digests: &[Digest],
    ) -> Result<(), IndexError> {
        let new: Vec<Digest> = {
            let mut mem = self.mem();
            let mut new: Vec<Digest> = digests
                .iter()
                .filter(|d| !mem.holdings.get(*d).is_some_and(|s| s.contains(repository)))
                .cloned()
                .collect();
            new.sort();
            new.dedup();
            if new.is_empty() {
                return Ok(());
            }
            if mem.holding_pairs + new.len() > MAX_PAIRS {
                let Mem {
                    holdings, objects, ..
                } = &mut *mem;
                holdings.retain(|d, _| objects.contains_key(d));
                mem.holding_pairs = mem.holdings.values().map(HashSet::len).sum();
                if mem.holding_pairs + new.len() > MAX_PAIRS {
                    tracing::warn!(
                        pairs = mem.holding_pairs,
                        "the index holds the most repository-object pairs it keeps; new ones are checked upstream each time"
                    );
                    return Ok(());
                }
            }
            new
        };
        let keys: Vec<String> = new.iter().map(|d| key(d, repository)).collect();
        self.write(move |tx| {
            let mut t = tx.open_table(HOLDINGS)?;
            for k in &keys {
                t.insert(k.as_str(), ())?;
            }
            Ok(())
        })
        .await?;
        let repo: Arc<str> = Arc::from(repository);
        let mut mem = self.mem();
        for d in new {
            if mem.holdings.entry(d).or_default().insert(repo.clone()) {
                mem.holding_pairs += 1;
            }
        }
        Ok(())
    }
}

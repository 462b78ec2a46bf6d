//! Trust state in the index: opaque values by key (the Notary client's
//! highest versions and last verified files per repository), kept in memory
//! and in redb, never expired and never evicted. This module must not know
//! what the values mean.

use std::sync::Arc;

use redb::TableDefinition;

use super::{Index, IndexError};

pub(super) const TRUST: TableDefinition<&str, &[u8]> = TableDefinition::new("trust");

impl Index {
    /// The trust state kept under `key`.
    pub fn trust(&self, key: &str) -> Option<Arc<[u8]>> {
        self.mem().trust.get(key).cloned()
    }

    /// Keep `value` under `key`; durable when this returns.
    pub async fn put_trust(&self, key: String, value: Vec<u8>) -> Result<(), IndexError> {
        let mem_value: Arc<[u8]> = Arc::from(value.as_slice());
        let k = key.clone();
        self.write(move |tx| {
            tx.open_table(TRUST)?.insert(k.as_str(), value.as_slice())?;
            Ok(())
        })
        .await?;
        self.mem().trust.insert(key, mem_value);
        Ok(())
    }

    /// Every key and value kept (for export).
    pub fn trust_entries(&self) -> Vec<(String, Arc<[u8]>)> {
        self.mem()
            .trust
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

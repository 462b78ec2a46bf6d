//! Tags in the index: a repository's tag (or referrers tag) and the digest
//! it names, with when that was learned; kept in memory and in redb. This
//! module must not decide when a tag is fresh.

use super::{Index, IndexError, TAGS, TagEntry, TagKey, TagName, unix_ms};
use crate::reference::{RegistryHost, RepoName, Tag};

impl Index {
    pub fn tag(&self, key: &TagKey) -> Option<TagEntry> {
        self.mem().tags.get(key).cloned()
    }

    pub async fn set_tag(&self, key: &TagKey, entry: TagEntry) -> Result<(), IndexError> {
        let (k, d, at) = (
            key.encode(),
            entry.digest.to_string(),
            unix_ms(entry.fetched_at),
        );
        self.write(move |tx| {
            tx.open_table(TAGS)?.insert(k.as_str(), (d.as_str(), at))?;
            Ok(())
        })
        .await?;
        self.mem().tags.insert(key.clone(), entry);
        Ok(())
    }

    pub async fn remove_tag(&self, key: &TagKey) -> Result<(), IndexError> {
        self.mem().tags.remove(key);
        let k = key.encode();
        self.write(move |tx| {
            tx.open_table(TAGS)?.remove(k.as_str())?;
            Ok(())
        })
        .await
    }

    /// Tags known for a repository, sorted.
    pub fn tags_in(&self, registry: &RegistryHost, repo: &RepoName) -> Vec<Tag> {
        let mut tags: Vec<Tag> = self
            .mem()
            .tags
            .keys()
            .filter(|k| &k.registry == registry && &k.repo == repo)
            .filter_map(|k| match &k.name {
                TagName::Tag(t) => Some(t.clone()),
                TagName::Referrers(_) => None,
            })
            .collect();
        tags.sort();
        tags
    }
}

//! A throwaway cache in a fresh temporary directory, for commands that
//! fetch through the configured upstreams without touching a server's cache
//! (`verify`, `export`). Removed when closed. This module must not decide
//! anything.

use std::path::PathBuf;

use super::{Cache, CacheError};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::upstream::{UpstreamError, Upstreams};

/// Why a scratch cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("cannot prepare a scratch cache in {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("cannot set up upstream clients")]
    Upstream(#[source] UpstreamError),
    #[error("cannot open a scratch cache")]
    Open(#[source] CacheError),
}

/// A cache over a temporary directory, online whatever `config` says.
pub struct Scratch {
    pub cache: Cache,
    pub metrics: Metrics,
    dir: PathBuf,
}

impl Scratch {
    /// Open one for `purpose` (part of the directory's name).
    pub async fn open(
        config: &Config,
        purpose: &str,
        clock: &Clock,
    ) -> Result<Scratch, ScratchError> {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-{purpose}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| ScratchError::Dir(dir.clone(), e))?;
        let opened = async {
            let scratch_config = Config {
                data_dir: dir.clone(),
                offline: false,
                // Scratch work never touches a shared bucket.
                store: crate::config::StoreConfig::Local,
                ..config.clone()
            };
            let metrics = Metrics::new();
            let upstreams = Upstreams::new(&config.upstreams, &metrics, clock)
                .map_err(ScratchError::Upstream)?;
            let cache = Cache::open(&scratch_config, upstreams, metrics.clone(), clock.clone())
                .await
                .map_err(ScratchError::Open)?;
            Ok((cache, metrics))
        }
        .await;
        match opened {
            Ok((cache, metrics)) => Ok(Scratch {
                cache,
                metrics,
                dir,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Close the cache and remove its directory.
    pub async fn close(self) {
        self.cache.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

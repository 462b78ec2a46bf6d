//! `portcullis import`: put a layout made by [`super::export`] into the
//! cache, so an offline instance serves it.
//!
//! Nothing in a layout is trusted. For each image, in order: every blob is
//! copied through the cache's verified writer (its size and digest must
//! match, or nothing is published); every manifest is read whole (bounded),
//! checked against its digest and parsed strictly, and must have every blob
//! it names in the layout or the cache; only then are the manifests stored
//! and the tags and referrer lists recorded. So a bad object fails its
//! image before any of its manifests or tags is visible, and nothing of that
//! image is served; the images before it stay, each complete. Objects
//! already cached are skipped: importing twice is a no-op, and an
//! interrupted import can be run again. The cache must not be open
//! elsewhere (the server stopped): its index is locked while in use. This
//! module must not fetch anything.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::layout::{self, Extra, Object, blob_path};
use crate::cache::index::IndexError;
use crate::cache::{Cache, CacheError};
use crate::config::Config;
use crate::digest::{Algorithm, Digest};
use crate::manifest::Manifest;
use crate::media::OCI_INDEX;
use crate::metrics::Metrics;
use crate::router::{RouteError, Router};
use crate::upstream::{UpstreamError, Upstreams};

/// Largest manifest read from a layout.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest `portcullis.json` read.
pub const MAX_EXTRA: u64 = 64 << 20;

/// What was imported.
#[derive(Debug, Default)]
pub struct Report {
    /// (image as exported, objects copied, objects already cached)
    pub images: Vec<(String, usize, usize)>,
    pub bytes: u64,
    /// Repositories whose Docker Content Trust data was brought in.
    pub trust: usize,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path} is not an OCI image layout made by portcullis export")]
    NotLayout {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}: this build reads portcullis.json version {v}", v = layout::VERSION)]
    Version(PathBuf),
    #[error("cannot set up upstream clients")]
    Upstream(#[source] UpstreamError),
    #[error(
        "cannot open the cache (is the server running on it? stop it first, or set admin_listen to import through it)"
    )]
    Cache(#[source] CacheError),
    #[error("importing through the server's admin listener {addr} failed: {why}")]
    Admin {
        addr: std::net::SocketAddr,
        why: String,
        bad_content: bool,
    },
    #[error("{image}: {problem}")]
    Invalid { image: String, problem: String },
    #[error("{image}: object {digest} refused")]
    Object {
        image: String,
        digest: String,
        #[source]
        source: Box<CacheError>,
    },
    #[error("{image}: repository {repository} is not one this configuration serves")]
    Route {
        image: String,
        repository: String,
        #[source]
        source: RouteError,
    },
    #[error("{image}: recording it in the cache failed")]
    Record {
        image: String,
        #[source]
        source: Box<CacheError>,
    },
}

impl ImportError {
    /// True when the layout's content was wrong (as opposed to the setup).
    pub fn is_bad_content(&self) -> bool {
        matches!(
            self,
            ImportError::Invalid { .. }
                | ImportError::Object { .. }
                | ImportError::NotLayout { .. }
                | ImportError::Admin {
                    bad_content: true,
                    ..
                }
        )
    }
}

/// Read `portcullis.json` (bounded) after checking `oci-layout`.
async fn read_extra(root: &Path) -> Result<Extra, ImportError> {
    let not_layout = |source: Box<dyn std::error::Error + Send + Sync>| ImportError::NotLayout {
        path: root.to_owned(),
        source,
    };
    let marker = tokio::fs::read(root.join(layout::OCI_LAYOUT))
        .await
        .map_err(|e| not_layout(Box::new(e)))?;
    let marker: serde_json::Value =
        serde_json::from_slice(&marker).map_err(|e| not_layout(Box::new(e)))?;
    if marker["imageLayoutVersion"] != "1.0.0" {
        return Err(not_layout(
            "oci-layout: imageLayoutVersion is not 1.0.0".into(),
        ));
    }
    let path = root.join(layout::EXTRA);
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|e| not_layout(Box::new(e)))?
        .len();
    if size > MAX_EXTRA {
        return Err(not_layout(
            format!("{} is over {MAX_EXTRA} bytes", layout::EXTRA).into(),
        ));
    }
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| not_layout(Box::new(e)))?;
    let extra: Extra = serde_json::from_slice(&bytes).map_err(|e| not_layout(Box::new(e)))?;
    if extra.version != layout::VERSION {
        return Err(ImportError::Version(path));
    }
    Ok(extra)
}

/// Import the layout at `path` (a directory, or a `.tar` of one) into the
/// cache `config` names, opening it (so the server must be stopped).
pub async fn import(config: &Config, path: &Path) -> Result<Report, ImportError> {
    let metrics = Metrics::new();
    let clock = crate::clock::Clock::system();
    let upstreams =
        Upstreams::new(&config.upstreams, &metrics, &clock).map_err(ImportError::Upstream)?;
    let cache = match Cache::open(config, upstreams, metrics, clock).await {
        Ok(c) => c,
        // The server has the cache open: import through it.
        Err(CacheError::Index(IndexError::InUse)) if config.admin_listen.is_some() => {
            let admin = config.admin_listen.expect("checked");
            return import_via_admin(admin, path).await;
        }
        Err(e) => return Err(ImportError::Cache(e)),
    };
    let router = Router::new(&config.upstreams);
    let progress = super::progress::Progress::new("importing");
    let result = import_into(&cache, &router, path, &progress).await;
    progress.finish();
    cache.close().await;
    result
}

/// Import through a running server's admin listener (`POST
/// /admin/import`, answered only to callers on the loopback).
async fn import_via_admin(admin: std::net::SocketAddr, path: &Path) -> Result<Report, ImportError> {
    use http_body_util::BodyExt;
    let path = std::fs::canonicalize(path).map_err(|e| ImportError::NotLayout {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    let addr = super::local_address(admin);
    let query: String = path
        .to_string_lossy()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let uri = format!("http://{addr}/admin/import?path={query}");
    let failed = |why: String| ImportError::Admin {
        addr,
        why,
        bad_content: false,
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::post(&uri)
        .body(http_body_util::Empty::new())
        .map_err(|e| failed(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| failed(crate::error::chain(&e)))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        let why = match v["errors"][0]["message"].as_str() {
            Some(m) => format!("{status}: {m}"),
            None => format!("answered {status}"),
        };
        return Err(ImportError::Admin {
            addr,
            why,
            bad_content: status == http::StatusCode::UNPROCESSABLE_ENTITY,
        });
    }
    let mut report = Report {
        bytes: v["bytes"].as_u64().unwrap_or(0),
        trust: v["trust"].as_u64().unwrap_or(0) as usize,
        ..Report::default()
    };
    for i in v["images"].as_array().into_iter().flatten() {
        report.images.push((
            i["image"].as_str().unwrap_or("").to_owned(),
            i["copied"].as_u64().unwrap_or(0) as usize,
            i["already_cached"].as_u64().unwrap_or(0) as usize,
        ));
    }
    Ok(report)
}

/// Import the layout at `path` into an open `cache` (the server's own,
/// through the admin endpoint). An archive is unpacked first into the
/// cache's data directory (the same disk), removed afterwards.
pub async fn import_into(
    cache: &Cache,
    router: &Router,
    path: &Path,
    progress: &super::progress::Progress,
) -> Result<Report, ImportError> {
    let is_file = tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file());
    if !is_file {
        return import_dir(cache, router, path, progress).await;
    }
    let dir = cache.data_dir().join(format!(
        "import-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let (tar, d) = (path.to_owned(), dir.clone());
    let unpacked = tokio::task::spawn_blocking(move || super::tarball::unpack(&tar, &d))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let result = match unpacked {
        Ok(()) => import_dir(cache, router, &dir, progress).await,
        Err(why) => Err(ImportError::NotLayout {
            path: path.to_owned(),
            source: why.into(),
        }),
    };
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

async fn import_dir(
    cache: &Cache,
    router: &Router,
    root: &Path,
    progress: &super::progress::Progress,
) -> Result<Report, ImportError> {
    let extra = read_extra(root).await?;
    let mut report = Report::default();
    for t in &extra.trust {
        let existing = cache.trust(&t.key);
        let state = serde_json::to_vec(&t.state).expect("JSON values serialize");
        let merged = crate::notary::imported(existing.as_deref(), &state).map_err(|problem| {
            ImportError::Invalid {
                image: format!("trust data {}", t.key),
                problem,
            }
        })?;
        if let Some(merged) = merged {
            cache
                .put_trust(t.key.clone(), merged)
                .await
                .map_err(|source| ImportError::Record {
                    image: format!("trust data {}", t.key),
                    source: Box::new(source),
                })?;
            report.trust += 1;
        }
    }
    for image in &extra.images {
        progress.image(&image.requested);
        let (copied, skipped, bytes) = import_image(cache, router, root, image, progress).await?;
        report
            .images
            .push((image.requested.clone(), copied, skipped));
        report.bytes += bytes;
    }
    Ok(report)
}

fn parse_digest(image: &str, s: &str) -> Result<Digest, ImportError> {
    s.parse().map_err(|e| ImportError::Invalid {
        image: image.to_owned(),
        problem: format!("{s:?} is not a digest: {e}"),
    })
}

/// Import one image: (objects copied, objects already cached, bytes copied).
async fn import_image(
    cache: &Cache,
    router: &Router,
    root: &Path,
    image: &layout::Image,
    progress: &super::progress::Progress,
) -> Result<(usize, usize, u64), ImportError> {
    let name = image.requested.as_str();
    let invalid = |problem: String| ImportError::Invalid {
        image: name.to_owned(),
        problem,
    };
    let refused = |digest: &Digest, source| ImportError::Object {
        image: name.to_owned(),
        digest: digest.to_string(),
        source: Box::new(source),
    };
    let listed: Vec<(Digest, &Object)> = image
        .objects
        .iter()
        .map(|o| parse_digest(name, &o.digest).map(|d| (d, o)))
        .collect::<Result<_, _>>()?;
    let top = parse_digest(name, &image.digest)?;
    let present: HashSet<&Digest> = listed.iter().map(|(d, _)| d).collect();
    if !present.contains(&top) {
        return Err(invalid(format!("its manifest {top} is not in the layout")));
    }
    let (mut copied, mut skipped, mut bytes) = (0, 0, 0u64);
    progress.expect(
        listed
            .iter()
            .fold(0u64, |n, (_, o)| n.saturating_add(o.size)),
    );
    // Blobs first, through the verified writer.
    for (digest, object) in listed.iter().filter(|(_, o)| o.media_type.is_none()) {
        if cache.has_object(digest) {
            // With [auth] the image's repositories will hold it: the layout
            // must prove it has the bytes, not just name them.
            if cache.checks_holdings() && !layout_has(&blob_path(root, digest), digest).await {
                return Err(invalid(format!(
                    "blob {digest} is missing from the layout or does not match its digest"
                )));
            }
            skipped += 1;
            progress.done(object.size, copied + skipped);
            continue;
        }
        let path = blob_path(root, digest);
        if tokio::fs::metadata(&path).await.is_err() {
            return Err(invalid(format!("blob {digest} is missing from the layout")));
        }
        cache
            .import_blob(digest, object.size, &path)
            .await
            .map_err(|e| refused(digest, e))?;
        copied += 1;
        bytes += object.size;
        progress.done(object.size, copied + skipped);
    }
    // Every manifest checked before any is stored.
    let mut manifests = Vec::new();
    for (digest, object) in listed.iter().filter(|(_, o)| o.media_type.is_some()) {
        if object.size > MAX_MANIFEST {
            return Err(invalid(format!(
                "manifest {digest} is {} bytes; at most {MAX_MANIFEST} are read",
                object.size
            )));
        }
        let path = blob_path(root, digest);
        let raw = tokio::fs::read(&path)
            .await
            .map_err(|_| invalid(format!("manifest {digest} is missing from the layout")))?;
        if raw.len() as u64 != object.size {
            return Err(invalid(format!(
                "manifest {digest} is {} bytes, the layout says {}",
                raw.len(),
                object.size
            )));
        }
        let m = Manifest::check(digest, raw.into(), object.media_type.as_deref())
            .map_err(|e| refused(digest, CacheError::ManifestInvalid(e)))?;
        for blob in m.parsed.blobs() {
            if !present.contains(&blob.digest) && !cache.has_object(&blob.digest) {
                return Err(invalid(format!(
                    "manifest {digest} names blob {} that the layout lacks",
                    blob.digest
                )));
            }
        }
        manifests.push(m);
    }
    // Children were listed after their parents: store them first.
    for m in manifests.iter().rev() {
        if cache.has_object(&m.digest) {
            skipped += 1;
        } else {
            copied += 1;
            bytes += m.bytes.len() as u64;
        }
        cache
            .import_manifest(m)
            .await
            .map_err(|e| refused(&m.digest, e))?;
        progress.done(m.bytes.len() as u64, copied + skipped);
    }
    let is_manifest = |d: &Digest| manifests.iter().any(|m| m.digest == *d);
    // What this image's repositories hold: the objects the layout brought
    // for it (not what was merely cached already for someone else).
    let held: Vec<Digest> = present.iter().map(|d| (*d).clone()).collect();
    let record = |source| ImportError::Record {
        image: name.to_owned(),
        source: Box::new(source),
    };
    let route = |repository: &str| {
        router
            .resolve_image(repository)
            .map(|(t, _)| t)
            .map_err(|source| ImportError::Route {
                image: name.to_owned(),
                repository: repository.to_owned(),
                source,
            })
    };
    for t in &image.tags {
        let digest = parse_digest(name, &t.digest)?;
        if !is_manifest(&digest) {
            return Err(invalid(format!(
                "tag {} names {digest}, which the layout does not hold",
                t.tag
            )));
        }
        let tag = t
            .tag
            .parse()
            .map_err(|_| invalid(format!("{:?} is not a tag", t.tag)))?;
        let target = route(&t.repository)?;
        cache
            .import_tag(&target, tag, &digest)
            .await
            .map_err(record)?;
        cache.record_held(&target, &held).await.map_err(record)?;
    }
    for r in &image.referrers {
        let subject = parse_digest(name, &r.subject)?;
        for d in &r.manifests {
            let digest = parse_digest(name, d["digest"].as_str().unwrap_or(""))?;
            if !is_manifest(&digest) {
                return Err(invalid(format!(
                    "referrer {digest} of {subject} is not in the layout"
                )));
            }
        }
        let list = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": r.manifests,
        }))
        .expect("a referrers list serializes");
        let digest = Digest::of(Algorithm::Sha256, &list);
        let list = Manifest::check(&digest, list.into(), Some(OCI_INDEX))
            .map_err(|e| invalid(format!("the referrers of {subject}: {e}")))?;
        let target = route(&r.repository)?;
        cache
            .import_referrers(&target, &subject, &list)
            .await
            .map_err(record)?;
        cache.record_held(&target, &held).await.map_err(record)?;
    }
    Ok((copied, skipped, bytes))
}

/// Whether the layout file at `path` hashes to `digest` (read off the async
/// threads).
async fn layout_has(path: &Path, digest: &Digest) -> bool {
    let (path, digest) = (path.to_owned(), digest.clone());
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let Ok(mut f) = std::fs::File::open(&path) else {
            return false;
        };
        let mut hasher = crate::digest::Hasher::new(digest.algorithm());
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(_) => return false,
            }
        }
        hasher.finish() == digest
    })
    .await
    .unwrap_or(false)
}

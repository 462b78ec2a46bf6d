//! Images crafted the way an attacker would push them to a real registry
//! (distribution 2.8 stores such manifests as pushed): a real gzipped tar
//! layer, so a runtime that accepts the manifest unpacks a filesystem, under
//! whatever media types and JSON spelling the test chooses.

use super::oci_push::{OCI_CONFIG, push_blob, put_manifest};
use super::{Result, err, run, sha256_digest};
use serde_json::{Value, json};
use std::process::Command;

/// What [`push`] wrote.
pub struct Crafted {
    /// Digest of the manifest bytes.
    pub digest: String,
    pub manifest: Vec<u8>,
    /// Digest of the gzipped tar layer.
    pub layer: String,
}

/// A gzipped tar holding `evidence.txt`, and the digest of the tar itself
/// (the config's `diff_id`, which containerd checks when it unpacks).
pub fn tar_gz(content: &str) -> Result<(Vec<u8>, String)> {
    let dir = tempfile::tempdir().map_err(|e| err!("tempdir: {e}"))?;
    let root = dir.path().join("root");
    std::fs::create_dir(&root).map_err(|e| err!("mkdir: {e}"))?;
    std::fs::write(root.join("evidence.txt"), content).map_err(|e| err!("write: {e}"))?;
    let tar = dir.path().join("layer.tar");
    run(Command::new("tar")
        .arg("--mtime=@0")
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let raw = std::fs::read(&tar).map_err(|e| err!("read tar: {e}"))?;
    let gz = run(Command::new("gzip").arg("-n").arg("-c").arg(&tar))?.stdout;
    Ok((gz, sha256_digest(&raw)))
}

/// The OCI manifest JSON of an image with one layer of `layer_media_type`,
/// config and layer already pushed to `repo`.
pub fn manifest(
    host: &str,
    repo: &str,
    layer_media_type: &str,
    content: &str,
) -> Result<(Value, String)> {
    let (layer, diff_id) = tar_gz(content)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .expect("config serializes");
    push_blob(host, repo, &config)?;
    let layer_digest = push_blob(host, repo, &layer)?;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len()},
        "layers": [{"mediaType": layer_media_type, "digest": layer_digest, "size": layer.len()}],
    });
    Ok((m, layer_digest))
}

/// Push `text` (a manifest the test shaped, e.g. from [`manifest`]) under
/// `tag`.
pub fn put(host: &str, repo: &str, tag: &str, text: &str, layer: &str) -> Result<Crafted> {
    let digest = put_manifest(
        host,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        text.as_bytes(),
    )?;
    Ok(Crafted {
        digest,
        manifest: text.as_bytes().to_vec(),
        layer: layer.to_owned(),
    })
}

/// An image whose one (gzipped tar) layer claims `layer_media_type`.
pub fn push(host: &str, repo: &str, tag: &str, layer_media_type: &str) -> Result<Crafted> {
    let (m, layer) = manifest(host, repo, layer_media_type, &format!("{repo}:{tag}"))?;
    put(host, repo, tag, &m.to_string(), &layer)
}

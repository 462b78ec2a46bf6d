//! Pushing signature artifacts to a real registry (distribution 2.8) over
//! the plain HTTP API: monolithic blob uploads (`POST
//! /v2/<repo>/blobs/uploads/`, then `PUT <Location>&digest=...`) and manifest
//! PUTs, with no client tools.
//!
//! * [`push_sig`]: the legacy cosign `sha256-<hex>.sig` tag (one
//!   simple-signing layer per [`SigLayer`]).
//! * [`push_bundle_referrer`]: a Sigstore bundle v0.3 as an OCI 1.1 referrer
//!   of an image, added to the referrers tag-schema index `sha256-<hex>`
//!   (created or extended), as cosign v3 does against a registry without the
//!   referrers API.
//! * [`push_junk_referrer`] / [`push_referrer`]: malformed or unrelated
//!   referrers, for "junk next to a valid signature" tests.
//! * [`copy_image`]: the same image (same digest) under another repository.
//!
//! `host` is always `127.0.0.1:PORT` (a [`super::registry::Registry::host`]).

use super::images::{OCI_INDEX, OCI_MANIFEST, TestImage};
use super::signing::{BUNDLE_V03, SigLayer};
use super::{Result, err, http_request, sha256_digest};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Media type of the OCI empty descriptor's blob (`{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The descriptor of `bytes` with `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The descriptor of what an image's tag points to (its index or its
    /// manifest): the `subject` of signatures for it.
    pub fn of_image(img: &TestImage) -> Descriptor {
        Descriptor::of(img.top_media_type(), img.top_raw())
    }

    /// The JSON form (`mediaType`, `digest`, `size`, then `artifactType` and
    /// `annotations` when set).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size});
        if let Some(t) = &self.artifact_type {
            v["artifactType"] = json!(t);
        }
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }

    /// `sha256-<hex>`: the referrers tag and the prefix of the `.sig` tag.
    pub fn tag_prefix(&self) -> String {
        digest_tag(&self.digest)
    }
}

/// `sha256:<hex>` → `sha256-<hex>`.
pub fn digest_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The legacy cosign signature tag of `digest`: `sha256-<hex>.sig`.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest_tag(digest))
}

fn check(what: &str, r: &super::HttpResponse, ok: &[u16]) -> Result<()> {
    if ok.contains(&r.status) {
        Ok(())
    } else {
        Err(err!(
            "{what}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))
    }
}

/// Upload `bytes` as a blob of `repo` (monolithic: POST, then PUT with the
/// digest), unless the registry already has it. Returns its digest.
pub fn push_blob(host: &str, repo: &str, bytes: &[u8]) -> Result<String> {
    let digest = sha256_digest(bytes);
    let head = http_request(
        "HEAD",
        &format!("http://{host}/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    )?;
    if head.status == 200 {
        return Ok(digest);
    }
    let what = format!("uploading blob {digest} to {host}/{repo}");
    let start = http_request(
        "POST",
        &format!("http://{host}/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )?;
    check(&what, &start, &[202])?;
    let location = start
        .header("location")
        .ok_or_else(|| err!("{what}: no Location in the 202"))?;
    let mut url = if location.starts_with("http://") {
        location.to_owned()
    } else {
        format!("http://{host}{location}")
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={digest}"));
    let put = http_request(
        "PUT",
        &url,
        &[("Content-Type", "application/octet-stream")],
        bytes,
    )?;
    check(&what, &put, &[201])?;
    Ok(digest)
}

/// PUT `bytes` as a manifest of `media_type` at `reference` (a tag or a
/// digest). Returns the digest of `bytes`.
pub fn put_manifest(
    host: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<String> {
    let r = http_request(
        "PUT",
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        bytes,
    )?;
    check(
        &format!("putting manifest {host}/{repo}:{reference}"),
        &r,
        &[201],
    )?;
    Ok(sha256_digest(bytes))
}

/// GET a manifest or index (`None` on 404).
pub fn get_manifest(host: &str, repo: &str, reference: &str) -> Result<Option<Vec<u8>>> {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
    let r = http_request(
        "GET",
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
        &[("Accept", &accept)],
        &[],
    )?;
    match r.status {
        200 => Ok(Some(r.body)),
        404 => Ok(None),
        _ => Err(err!(
            "getting manifest {host}/{repo}:{reference}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
    }
}

/// DELETE a manifest by digest (the registry has deletes enabled).
pub fn delete_manifest(host: &str, repo: &str, digest: &str) -> Result<()> {
    let r = http_request(
        "DELETE",
        &format!("http://{host}/v2/{repo}/manifests/{digest}"),
        &[],
        &[],
    )?;
    check(&format!("deleting {host}/{repo}@{digest}"), &r, &[202])
}

/// Push `img` (same blobs, same manifest bytes, so the same digest) to
/// another repository `repo` under `tag`. Single-platform images only.
pub fn copy_image(host: &str, img: &TestImage, repo: &str, tag: &str) -> Result<String> {
    if img.index.is_some() {
        return Err(err!("copy_image: multi-platform images are not supported"));
    }
    let m = img.manifest();
    for b in std::iter::once(&m.config).chain(&m.layers) {
        push_blob(host, repo, &img.blob_bytes(&b.digest)?)?;
    }
    put_manifest(host, repo, tag, &m.media_type, &m.raw)
}

/// What [`push_sig`] wrote.
#[derive(Clone, Debug)]
pub struct PushedSig {
    /// `sha256-<hex>.sig`
    pub tag: String,
    /// Digest of the `.sig` manifest.
    pub digest: String,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
}

/// Write the legacy cosign signature tag `sha256-<hex>.sig` of
/// `subject_digest` in `repo`: an OCI image manifest with a minimal config
/// and one layer per [`SigLayer`] (its payload as the blob, its media type
/// and annotations on the descriptor). Replaces what the tag held.
pub fn push_sig(
    host: &str,
    repo: &str,
    subject_digest: &str,
    layers: &[SigLayer],
) -> Result<PushedSig> {
    push_layers(host, repo, &sig_tag(subject_digest), layers)
}

/// Write a cosign-style artifact manifest (a minimal config, one layer per
/// [`SigLayer`]) under `tag`: `.sig` signatures, `.att` attestations.
pub fn push_layers(host: &str, repo: &str, tag: &str, layers: &[SigLayer]) -> Result<PushedSig> {
    let mut descriptors = Vec::new();
    for l in layers {
        push_blob(host, repo, &l.payload)?;
        let mut d = Descriptor::of(&l.media_type, &l.payload);
        d.annotations = l.annotations.clone();
        descriptors.push(d);
    }
    // cosign's config: an image config naming the layers as diff_ids.
    let config = serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "created": "0001-01-01T00:00:00Z",
        "rootfs": {"type": "layers",
                   "diff_ids": descriptors.iter().map(|d| d.digest.clone()).collect::<Vec<_>>()},
    }))
    .expect("config serializes");
    push_blob(host, repo, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor::of(OCI_CONFIG, &config).to_json(),
        "layers": descriptors.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
    .expect("manifest serializes");
    let tag = tag.to_owned();
    let digest = put_manifest(host, repo, &tag, OCI_MANIFEST, &manifest)?;
    Ok(PushedSig {
        tag,
        digest,
        manifest,
    })
}

/// An OCI 1.1 artifact manifest that refers to a subject.
#[derive(Clone, Debug)]
pub struct Referrer {
    /// `artifactType` of the manifest (and of its index entry).
    pub artifact_type: String,
    /// Config media type and bytes (usually [`OCI_EMPTY`], `{}`).
    pub config: (String, Vec<u8>),
    /// Layers: media type and bytes.
    pub layers: Vec<(String, Vec<u8>)>,
    /// The manifest's `subject` (normally the image the index is for).
    pub subject: Descriptor,
    /// Manifest annotations (copied onto the index entry, as cosign does).
    pub annotations: BTreeMap<String, String>,
}

impl Referrer {
    /// An artifact of `artifact_type` with one layer, an empty config, for `subject`.
    pub fn new(
        artifact_type: &str,
        layer_media_type: &str,
        layer: &[u8],
        subject: &Descriptor,
    ) -> Referrer {
        Referrer {
            artifact_type: artifact_type.to_owned(),
            config: (OCI_EMPTY.to_owned(), b"{}".to_vec()),
            layers: vec![(layer_media_type.to_owned(), layer.to_vec())],
            subject: subject.clone(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Push `r`'s blobs and manifest (by digest) without listing it anywhere.
/// Returns the manifest's descriptor, carrying `artifactType` and
/// annotations as a referrers index entry does.
pub fn push_referrer_manifest(host: &str, repo: &str, r: &Referrer) -> Result<Descriptor> {
    push_blob(host, repo, &r.config.1)?;
    let mut layers = Vec::new();
    for (mt, bytes) in &r.layers {
        push_blob(host, repo, bytes)?;
        layers.push(Descriptor::of(mt, bytes).to_json());
    }
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": r.artifact_type,
        "config": Descriptor::of(&r.config.0, &r.config.1).to_json(),
        "layers": layers,
        "subject": r.subject.to_json(),
    });
    if !r.annotations.is_empty() {
        m["annotations"] = json!(r.annotations);
    }
    let bytes = serde_json::to_vec(&m).expect("manifest serializes");
    let digest = sha256_digest(&bytes);
    put_manifest(host, repo, &digest, OCI_MANIFEST, &bytes)?;
    let mut d = Descriptor::of(OCI_MANIFEST, &bytes);
    d.artifact_type = Some(r.artifact_type.clone());
    d.annotations = r.annotations.clone();
    Ok(d)
}

/// Add `entry` to the referrers tag-schema index of `subject_digest` (tag
/// `sha256-<hex>` in `repo`), creating the index if the tag is absent. An
/// entry with the same digest is not added twice. Returns the index bytes.
pub fn add_to_referrers_index(
    host: &str,
    repo: &str,
    subject_digest: &str,
    entry: &Descriptor,
) -> Result<Vec<u8>> {
    let tag = digest_tag(subject_digest);
    let mut index = match get_manifest(host, repo, &tag)? {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| err!("the referrers index {host}/{repo}:{tag} is not JSON: {e}"))?,
        None => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| err!("the referrers index {host}/{repo}:{tag} has no manifests"))?;
    if !manifests
        .iter()
        .any(|m| m["digest"] == entry.digest.as_str())
    {
        manifests.push(entry.to_json());
    }
    let bytes = serde_json::to_vec(&index).expect("index serializes");
    put_manifest(host, repo, &tag, OCI_INDEX, &bytes)?;
    Ok(bytes)
}

/// Push `r` and list it in the referrers index of `index_subject` (normally
/// `r.subject.digest`). Returns the referrer's descriptor.
pub fn push_referrer(
    host: &str,
    repo: &str,
    r: &Referrer,
    index_subject: &str,
) -> Result<Descriptor> {
    let d = push_referrer_manifest(host, repo, r)?;
    add_to_referrers_index(host, repo, index_subject, &d)?;
    Ok(d)
}

/// Attach a Sigstore bundle v0.3 (`bundle_json`, e.g. from
/// `Sigstore::dsse_bundle`) to `subject` as cosign v3 does: a referrer
/// manifest with artifactType and layer media type
/// `application/vnd.dev.sigstore.bundle.v0.3+json` and an empty config,
/// listed in the `sha256-<hex>` referrers index. Returns its descriptor.
pub fn push_bundle_referrer(
    host: &str,
    repo: &str,
    subject: &Descriptor,
    bundle_json: &[u8],
) -> Result<Descriptor> {
    let mut r = Referrer::new(BUNDLE_V03, BUNDLE_V03, bundle_json, subject);
    r.annotations
        .insert("dev.sigstore.bundle.content".into(), "dsse-envelope".into());
    if let Some(pt) = serde_json::from_slice::<Value>(bundle_json)
        .ok()
        .and_then(|b| predicate_type(&b))
    {
        r.annotations
            .insert("dev.sigstore.bundle.predicateType".into(), pt);
    }
    push_referrer(host, repo, &r, &subject.digest)
}

fn predicate_type(bundle: &Value) -> Option<String> {
    use base64::Engine as _;
    let payload = bundle["dsseEnvelope"]["payload"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    let st: Value = serde_json::from_slice(&bytes).ok()?;
    st["predicateType"].as_str().map(str::to_owned)
}

/// Kinds of junk referrer.
#[derive(Clone, Debug)]
pub enum Junk {
    /// Bundle artifactType and layer type, but the layer is not JSON.
    BadJson,
    /// Valid JSON that is not a Sigstore bundle, under the bundle types.
    NotABundle,
    /// Bundle artifactType, but no layer of the bundle media type.
    NoBundleLayer,
    /// Another artifactType altogether (e.g. an SBOM): not a signature.
    OtherArtifactType,
    /// A bundle-typed referrer whose manifest names another subject, listed
    /// in this subject's index.
    WrongSubject(Descriptor),
    /// These bytes as the bundle layer, under the bundle types.
    Custom(Vec<u8>),
}

/// Push a junk referrer of `subject` and list it in the subject's referrers
/// index. Returns its descriptor.
pub fn push_junk_referrer(
    host: &str,
    repo: &str,
    subject: &Descriptor,
    junk: Junk,
) -> Result<Descriptor> {
    let r = match junk {
        Junk::BadJson => Referrer::new(BUNDLE_V03, BUNDLE_V03, b"{this is not json", subject),
        Junk::NotABundle => Referrer::new(
            BUNDLE_V03,
            BUNDLE_V03,
            br#"{"hello":"not a sigstore bundle"}"#,
            subject,
        ),
        Junk::NoBundleLayer => Referrer::new(
            BUNDLE_V03,
            "application/octet-stream",
            b"some bytes",
            subject,
        ),
        Junk::OtherArtifactType => Referrer::new(
            "application/spdx+json",
            "application/spdx+json",
            br#"{"spdxVersion":"SPDX-2.3"}"#,
            subject,
        ),
        Junk::WrongSubject(other) => {
            Referrer::new(BUNDLE_V03, BUNDLE_V03, br#"{"mediaType":"x"}"#, &other)
        }
        Junk::Custom(bytes) => Referrer::new(BUNDLE_V03, BUNDLE_V03, &bytes, subject),
    };
    push_referrer(host, repo, &r, &subject.digest)
}

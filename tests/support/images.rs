//! Test images without a Docker engine: layers of random bytes, assembled
//! into an OCI layout with `umoci`, pushed with `skopeo copy`; and pulls into
//! `dir:` with skopeo. Digests are kept by skopeo (checked via
//! `--digestfile` on every push).

use super::{Result, command_line, err, run, sha256_digest};
use serde_json::{Value, json};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A blob referenced by a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// `sha256:<hex>`
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
}

/// One single-platform image manifest as stored in the registry.
#[derive(Clone)]
pub struct ManifestInfo {
    /// `sha256:<hex>` of `raw`.
    pub digest: String,
    /// Its media type (OCI manifest).
    pub media_type: String,
    /// e.g. `linux`
    pub os: String,
    /// e.g. `amd64`
    pub arch: String,
    /// The exact manifest bytes.
    pub raw: Vec<u8>,
    /// The config blob.
    pub config: BlobRef,
    /// The layers, in order (gzip-compressed tars of random bytes).
    pub layers: Vec<BlobRef>,
}

/// The image index of a multi-arch image.
#[derive(Clone)]
pub struct IndexInfo {
    /// `sha256:<hex>` of `raw`.
    pub digest: String,
    /// Its media type (OCI index).
    pub media_type: String,
    /// The exact index bytes.
    pub raw: Vec<u8>,
}

impl fmt::Debug for ManifestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestInfo")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("platform", &format_args!("{}/{}", self.os, self.arch))
            .field("raw", &format_args!("<{} bytes>", self.raw.len()))
            .field("config", &self.config)
            .field("layers", &self.layers)
            .finish()
    }
}

impl fmt::Debug for IndexInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexInfo")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("raw", &String::from_utf8_lossy(&self.raw))
            .finish()
    }
}

/// An image pushed to a registry. Its OCI layout (all blobs) lives in a
/// tempdir as long as this value.
pub struct TestImage {
    /// `HOST/REPO:TAG` as pushed.
    pub reference: String,
    /// Repository, e.g. `test/img`.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// Set for multi-arch images: what the tag points to.
    pub index: Option<IndexInfo>,
    /// The platform manifests (one for single-arch images).
    pub manifests: Vec<ManifestInfo>,
    /// Time spent building the layout (random data, tar, umoci).
    pub build_time: Duration,
    /// Time spent in `skopeo copy`.
    pub push_time: Duration,
    layout: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestImage {
    /// Digest the tag points to (index if any, else the manifest).
    pub fn top_digest(&self) -> &str {
        self.index
            .as_ref()
            .map_or(&self.manifests[0].digest, |i| &i.digest)
    }

    /// Media type of what the tag points to.
    pub fn top_media_type(&self) -> &str {
        self.index
            .as_ref()
            .map_or(&self.manifests[0].media_type, |i| &i.media_type)
    }

    /// Bytes of what the tag points to.
    pub fn top_raw(&self) -> &[u8] {
        self.index
            .as_ref()
            .map_or(&self.manifests[0].raw, |i| &i.raw)
    }

    /// The first (for single-arch: the only) platform manifest.
    pub fn manifest(&self) -> &ManifestInfo {
        &self.manifests[0]
    }

    /// The manifest for `arch` (e.g. `arm64`), if any.
    pub fn manifest_for(&self, arch: &str) -> Option<&ManifestInfo> {
        self.manifests.iter().find(|m| m.arch == arch)
    }

    /// Every config and layer blob of every manifest.
    pub fn blobs(&self) -> Vec<&BlobRef> {
        self.manifests
            .iter()
            .flat_map(|m| std::iter::once(&m.config).chain(&m.layers))
            .collect()
    }

    /// The OCI layout directory.
    pub fn layout(&self) -> &Path {
        &self.layout
    }

    /// Path of the blob `digest` (`sha256:<hex>`) in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.layout, digest)
    }

    /// Content of blob `digest` from the layout.
    pub fn blob_bytes(&self, digest: &str) -> Result<Vec<u8>> {
        std::fs::read(self.blob_path(digest)).map_err(|e| err!("reading blob {digest}: {e}"))
    }
}

/// Builds a single-platform image (`os`/`arch`) whose layers hold random
/// bytes of `layer_sizes` (gzip can't shrink them), and pushes it to
/// `docker://HOST/REPO:TAG` (`repo_tag` = `REPO:TAG`). `creds` is
/// `user:password` for `--dest-creds`. Pushing again to the same tag moves it.
pub fn push_image(
    host: &str,
    repo_tag: &str,
    os: &str,
    arch: &str,
    layer_sizes: &[usize],
    creds: Option<&str>,
) -> Result<TestImage> {
    push_platforms(host, repo_tag, &[(os, arch)], layer_sizes, creds)
}

/// Builds two single-platform images (linux/amd64, linux/arm64, each with its
/// own random layers of `layer_sizes`) and an OCI image index over them, and
/// pushes all with `skopeo copy --all`.
pub fn push_multiarch(
    host: &str,
    repo_tag: &str,
    layer_sizes: &[usize],
    creds: Option<&str>,
) -> Result<TestImage> {
    let platforms = [("linux", "amd64"), ("linux", "arm64")];
    push_platforms(host, repo_tag, &platforms, layer_sizes, creds)
}

/// Builds one single-platform image per `(os, arch)` in `platforms`, each
/// with its own random layers of `layer_sizes`, and pushes it; with more
/// than one platform an OCI index over them is written and pushed with
/// `skopeo copy --all` (platform tags in the layout: `OS-ARCH`).
pub fn push_platforms(
    host: &str,
    repo_tag: &str,
    platforms: &[(&str, &str)],
    layer_sizes: &[usize],
    creds: Option<&str>,
) -> Result<TestImage> {
    let (repo, tag) = repo_tag
        .rsplit_once(':')
        .ok_or_else(|| err!("no tag in {repo_tag:?}"))?;
    let dir = tempfile::Builder::new()
        .prefix("portcullis-image-")
        .tempdir();
    let dir = dir.map_err(|e| err!("creating image tempdir: {e}"))?;
    let started = Instant::now();
    let layout = dir.path().join("layout");
    let umoci = |args: &[&str]| run(Command::new("umoci").args(args)).map(|_| ());
    umoci(&["init", "--layout", &layout.to_string_lossy()])?;
    let mut manifests = Vec::new();
    for (i, (os, arch)) in platforms.iter().enumerate() {
        let single = platforms.len() == 1;
        let r#ref = if single {
            tag.to_string()
        } else {
            format!("{os}-{arch}")
        };
        let image = format!("{}:{}", layout.display(), r#ref);
        umoci(&["new", "--image", &image])?;
        for (j, size) in layer_sizes.iter().enumerate() {
            let tar = dir.path().join(format!("layer-{i}-{j}.tar"));
            write_random_tar(&tar, &format!("data-{i}-{j}.bin"), *size)?;
            umoci(&[
                "raw",
                "add-layer",
                "--image",
                &image,
                &tar.to_string_lossy(),
            ])?;
            std::fs::remove_file(&tar).map_err(|e| err!("removing {}: {e}", tar.display()))?;
        }
        umoci(&[
            "config",
            "--image",
            &image,
            "--os",
            os,
            "--architecture",
            arch,
        ])?;
        manifests.push(read_manifest(&layout, &r#ref, os, arch)?);
    }
    let index = if platforms.len() > 1 {
        Some(write_index(&layout, tag, &manifests)?)
    } else {
        None
    };
    let build_time = started.elapsed();

    let env = SkopeoEnv::new()?;
    let digestfile = dir.path().join("pushed.digest");
    let mut cmd = env.command();
    cmd.args(["copy", "--dest-tls-verify=false", "--digestfile"])
        .arg(&digestfile);
    if index.is_some() {
        cmd.arg("--all");
    }
    if let Some(c) = creds {
        cmd.arg(format!("--dest-creds={c}"));
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()));
    cmd.arg(format!("docker://{host}/{repo}:{tag}"));
    let started = Instant::now();
    run(&mut cmd)?;
    let push_time = started.elapsed();
    let pushed =
        std::fs::read_to_string(&digestfile).map_err(|e| err!("reading digestfile: {e}"))?;
    let img = TestImage {
        reference: format!("{host}/{repo}:{tag}"),
        repo: repo.to_string(),
        tag: tag.to_string(),
        index,
        manifests,
        build_time,
        push_time,
        layout,
        _dir: dir,
    };
    if pushed.trim() != img.top_digest() {
        return Err(err!(
            "skopeo pushed {} as {} but the layout has {}",
            img.reference,
            pushed.trim(),
            img.top_digest()
        ));
    }
    Ok(img)
}

/// Writes a tar holding one file `name` of `size` random bytes.
fn write_random_tar(path: &Path, name: &str, size: usize) -> Result<()> {
    let ctx = |e: std::io::Error| err!("writing {}: {e}", path.display());
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |at: usize, s: String| h[at..at + s.len()].copy_from_slice(s.as_bytes());
    field(100, "0000644\0".into()); // mode
    field(108, "0000000\0".into()); // uid
    field(116, "0000000\0".into()); // gid
    field(124, format!("{size:011o}\0")); // size
    field(136, "00000000000\0".into()); // mtime
    field(148, "        ".into()); // checksum placeholder
    field(156, "0".into()); // regular file
    field(257, "ustar\x0000".into()); // magic + version
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut f = std::io::BufWriter::new(File::create(path).map_err(ctx)?);
    f.write_all(&h).map_err(ctx)?;
    let mut rng = File::open("/dev/urandom").map_err(|e| err!("opening /dev/urandom: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        rng.read_exact(&mut buf[..n])
            .map_err(|e| err!("reading /dev/urandom: {e}"))?;
        f.write_all(&buf[..n]).map_err(ctx)?;
        left -= n;
    }
    let pad = (512 - size % 512) % 512 + 1024; // to a block, then two zero blocks
    f.write_all(&vec![0u8; pad]).map_err(ctx)?;
    f.flush().map_err(ctx)
}

/// `<layout>/blobs/sha256/<hex>`
fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| err!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| err!("parsing {}: {e}", path.display()))
}

fn blob_ref(v: &Value) -> BlobRef {
    BlobRef {
        digest: v["digest"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_u64().unwrap_or_default(),
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
    }
}

/// Reads the manifest that `ref_name` points to in the layout's index.json.
fn read_manifest(layout: &Path, ref_name: &str, os: &str, arch: &str) -> Result<ManifestInfo> {
    let index = read_json(&layout.join("index.json"))?;
    let desc = index["manifests"].as_array().and_then(|ms| {
        ms.iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == ref_name)
    });
    let desc = desc.ok_or_else(|| err!("no ref {ref_name} in {}/index.json", layout.display()))?;
    let digest = desc["digest"].as_str().unwrap_or_default().to_string();
    let raw = std::fs::read(blob_path(layout, &digest))
        .map_err(|e| err!("reading manifest {digest}: {e}"))?;
    if sha256_digest(&raw) != digest {
        return Err(err!("manifest blob {digest} does not hash to its name"));
    }
    let m: Value =
        serde_json::from_slice(&raw).map_err(|e| err!("parsing manifest {digest}: {e}"))?;
    Ok(ManifestInfo {
        digest,
        media_type: desc["mediaType"]
            .as_str()
            .unwrap_or(OCI_MANIFEST)
            .to_string(),
        os: os.to_string(),
        arch: arch.to_string(),
        config: blob_ref(&m["config"]),
        layers: m["layers"]
            .as_array()
            .map(|ls| ls.iter().map(blob_ref).collect())
            .unwrap_or_default(),
        raw,
    })
}

/// Writes an OCI index over `manifests` as a blob and refers to it from the
/// layout's index.json as `ref_name`.
fn write_index(layout: &Path, ref_name: &str, manifests: &[ManifestInfo]) -> Result<IndexInfo> {
    let descs: Vec<Value> = manifests
        .iter()
        .map(|m| {
            json!({"mediaType": m.media_type, "digest": m.digest, "size": m.raw.len(),
                   "platform": {"architecture": m.arch, "os": m.os}})
        })
        .collect();
    let doc = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs});
    let raw = serde_json::to_vec(&doc).unwrap();
    let digest = sha256_digest(&raw);
    std::fs::write(blob_path(layout, &digest), &raw)
        .map_err(|e| err!("writing index blob: {e}"))?;
    let index_path = layout.join("index.json");
    let mut top = read_json(&index_path)?;
    let entry = json!({"mediaType": OCI_INDEX, "digest": digest, "size": raw.len(),
                       "annotations": {"org.opencontainers.image.ref.name": ref_name}});
    top["manifests"]
        .as_array_mut()
        .ok_or_else(|| err!("index.json has no manifests"))?
        .push(entry);
    std::fs::write(&index_path, serde_json::to_vec(&top).unwrap())
        .map_err(|e| err!("writing index.json: {e}"))?;
    Ok(IndexInfo {
        digest,
        media_type: OCI_INDEX.to_string(),
        raw,
    })
}

/// A hermetic skopeo setup: permissive policy, empty auth file, empty
/// registries.conf and registries.d, all in a tempdir.
pub struct SkopeoEnv {
    dir: tempfile::TempDir,
}

impl SkopeoEnv {
    /// Creates the tempdir and files.
    pub fn new() -> Result<SkopeoEnv> {
        SkopeoEnv::with_registries("")
    }

    /// Like [`SkopeoEnv::new`], with `registries` as `registries.conf`
    /// (e.g. a `[[registry.mirror]]` pointing at portcullis).
    pub fn with_registries(registries: &str) -> Result<SkopeoEnv> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-skopeo-")
            .tempdir();
        let dir = dir.map_err(|e| err!("creating skopeo tempdir: {e}"))?;
        let w = |name: &str, body: &str| {
            std::fs::write(dir.path().join(name), body)
                .map_err(|e| err!("writing skopeo {name}: {e}"))
        };
        w(
            "policy.json",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        w("auth.json", r#"{"auths":{}}"#)?;
        w("registries.conf", registries)?;
        std::fs::create_dir(dir.path().join("registries.d"))
            .map_err(|e| err!("mkdir registries.d: {e}"))?;
        Ok(SkopeoEnv { dir })
    }

    /// `skopeo --policy ... --registries.d ...` with the environment set;
    /// add the subcommand and its arguments.
    pub fn command(&self) -> Command {
        let p = self.dir.path();
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy").arg(p.join("policy.json"));
        cmd.arg("--registries.d").arg(p.join("registries.d"));
        cmd.env("REGISTRY_AUTH_FILE", p.join("auth.json"));
        // skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; its hidden global
        // flag is what selects the file.
        cmd.arg("--registries-conf").arg(p.join("registries.conf"));
        cmd
    }
}

/// An image copied into a `dir:` destination by skopeo.
pub struct DirImage {
    /// The directory (a tempdir kept as long as this value).
    pub dir: tempfile::TempDir,
    /// Bytes of `manifest.json` (for a multi-arch source without `--all`:
    /// the manifest skopeo chose for this platform).
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of `manifest`.
    pub manifest_digest: String,
    /// Blob files: (`sha256:<hex>`, path, size). With `--all` also the
    /// per-platform `<hex>.manifest.json` files as (digest, path, size).
    pub blobs: Vec<(String, PathBuf, u64)>,
    /// skopeo's stderr and stdout.
    pub log: String,
    /// How long the copy took.
    pub elapsed: Duration,
}

/// `skopeo copy --src-tls-verify=false EXTRA SRC dir:TMP` (SRC like
/// `docker://127.0.0.1:P/ns/repo:tag`; EXTRA e.g. `--src-creds=u:p`,
/// `--override-arch=arm64`, `--all`). On failure the error carries skopeo's
/// stderr.
pub fn skopeo_copy_to_dir(src: &str, extra_args: &[&str]) -> Result<DirImage> {
    SkopeoEnv::new()?.copy_to_dir(src, extra_args)
}

impl SkopeoEnv {
    /// [`skopeo_copy_to_dir`] in this environment.
    pub fn copy_to_dir(&self, src: &str, extra_args: &[&str]) -> Result<DirImage> {
        let env = self;
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pull-")
            .tempdir();
        let dir = dir.map_err(|e| err!("creating pull tempdir: {e}"))?;
        let mut cmd = env.command();
        cmd.args(["copy", "--src-tls-verify=false"])
            .args(extra_args);
        cmd.arg(src).arg(format!("dir:{}", dir.path().display()));
        let started = Instant::now();
        let out = run(&mut cmd)?;
        let elapsed = started.elapsed();
        let manifest = std::fs::read(dir.path().join("manifest.json"))
            .map_err(|e| err!("`{}` left no manifest.json: {e}", command_line(&cmd)))?;
        let mut blobs = Vec::new();
        let entries = std::fs::read_dir(dir.path()).map_err(|e| err!("listing pull dir: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| err!("listing pull dir: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.strip_suffix(".manifest.json").unwrap_or(&name);
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                let size = entry
                    .metadata()
                    .map_err(|e| err!("stat {name}: {e}"))?
                    .len();
                blobs.push((format!("sha256:{hex}"), entry.path(), size));
            }
        }
        blobs.sort();
        Ok(DirImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            blobs,
            log: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
            elapsed,
            dir,
        })
    }
}

/// `skopeo inspect --raw --tls-verify=false EXTRA REF`: the manifest bytes
/// skopeo gets for `image_ref` (e.g. `docker://127.0.0.1:P/ns/repo:tag`).
pub fn skopeo_inspect_raw(image_ref: &str, extra_args: &[&str]) -> Result<Vec<u8>> {
    let env = SkopeoEnv::new()?;
    let mut cmd = env.command();
    cmd.args(["inspect", "--raw", "--tls-verify=false"])
        .args(extra_args)
        .arg(image_ref);
    Ok(run(&mut cmd)?.stdout)
}

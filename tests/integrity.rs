//! Nothing on the disk is trusted: a damaged or lost index is rebuilt from
//! the objects (each re-hashed), a cached blob whose bytes changed is caught
//! by `verify_reads`, the background scrub or `portcullis fsck`, a manifest
//! edited on disk is fetched again, and a full disk turns /readyz to 503
//! while cached content is still served, until space is freed.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::client;
use support::images::{TestImage, skopeo_copy_to_dir};
use support::portcullis::Portcullis;
use support::registry::Registry;
use support::{http_get, registry_with_image, upstream};

const KIB: usize = 1024;

fn config(reg: &Registry, cache: &str) -> String {
    format!(
        "[cache]\nscrub_rate = \"0\"\n{cache}\n{}",
        upstream("registry.test", &reg.url())
    )
}

/// Pull `img` whole through portcullis and let its fills settle.
fn pull(p: &Portcullis, img: &TestImage) {
    skopeo_copy_to_dir(
        &format!(
            "docker://{}/registry.test/{}:{}",
            p.host(),
            img.repo,
            img.tag
        ),
        &[],
    )
    .unwrap();
    p.wait_fills_settled().unwrap();
}

fn object_path(p: &Portcullis, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    p.data_dir()
        .join("objects/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// Flip one byte in the middle of a stored object.
fn flip(p: &Portcullis, digest: &str) {
    let path = object_path(p, digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
}

fn stop(p: &mut Portcullis) {
    p.terminate().unwrap();
    assert!(p.wait_exit().unwrap().success());
}

fn blob_url(p: &Portcullis, img: &TestImage, digest: &str) -> String {
    format!("{}/v2/registry.test/{}/blobs/{digest}", p.url(), img.repo)
}

fn layer(img: &TestImage) -> String {
    img.manifest().layers[0].digest.clone()
}

#[test]
fn a_damaged_or_lost_index_is_rebuilt_from_the_objects_on_disk() {
    let (reg, img) = registry_with_image("test/img:v1", &[64 * KIB]);
    let mut p = Portcullis::start(&config(&reg, "")).unwrap();
    pull(&p, &img);
    let objects = p.metric("portcullis_cache_objects").unwrap();
    assert!(objects >= 3.0);
    stop(&mut p);

    // Damage the middle of the index file, then start: no panic, the file
    // is moved aside, and every object is adopted again after a re-hash.
    let index = p.data_dir().join("index.redb");
    let mut bytes = std::fs::read(&index).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 4..3 * len / 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&index, &bytes).unwrap();
    p.restart().unwrap();
    p.wait_for_log(|l| l.contains("could not be read") && l.contains("moved aside"))
        .unwrap();
    assert_eq!(p.metric("portcullis_cache_objects").unwrap(), objects);
    reg.clear_requests().unwrap();
    let r = client::get(&blob_url(&p, &img, &layer(&img)), &[]).unwrap();
    assert!(r.complete && r.digest == layer(&img));
    assert_eq!(
        reg.count("GET", "/blobs/"),
        0,
        "served from the rebuilt cache"
    );
    // Tags are lost: the tag goes upstream once more; the digest does not.
    pull(&p, &img);
    assert_eq!(reg.count("GET", "/blobs/"), 0);

    // A lost index: the same.
    stop(&mut p);
    std::fs::remove_file(&index).unwrap();
    p.restart().unwrap();
    assert_eq!(p.metric("portcullis_cache_objects").unwrap(), objects);
    reg.clear_requests().unwrap();
    let r = client::get(&blob_url(&p, &img, &layer(&img)), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(reg.count("GET", "/blobs/"), 0);
}

#[test]
fn a_corrupt_cached_blob_is_cut_with_verify_reads_and_fetched_again() {
    let (reg, img) = registry_with_image("test/img:v1", &[512 * KIB]);
    let mut p = Portcullis::start(&config(&reg, "verify_reads = true")).unwrap();
    pull(&p, &img);
    stop(&mut p);
    flip(&p, &layer(&img));
    p.restart().unwrap();
    reg.clear_requests().unwrap();

    let url = blob_url(&p, &img, &layer(&img));
    let r = client::get(&url, &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.complete, "a corrupt cached blob was served whole");
    p.wait_for_log(|l| l.contains("does not match its digest"))
        .unwrap();
    p.wait_for_metric("portcullis_cache_corrupt_objects_total", |v| v >= 1.0)
        .unwrap();
    // Removed: the next request fetches it again, and it is right.
    let r = client::get(&url, &[]).unwrap();
    assert!(r.complete);
    assert_eq!(r.digest, layer(&img));
    assert_eq!(reg.count("GET", &format!("/blobs/{}", layer(&img))), 1);
}

#[test]
fn the_scrub_finds_a_corrupt_blob_and_it_is_fetched_again() {
    let (reg, img) = registry_with_image("test/img:v1", &[512 * KIB]);
    let mut p = Portcullis::start(&config(&reg, "")).unwrap();
    pull(&p, &img);
    stop(&mut p);
    flip(&p, &layer(&img));
    // Without verify_reads the damage would be served; the scrub finds it.
    p.rewrite_config(&config(&reg, "").replace("scrub_rate = \"0\"", "scrub_rate = \"1GiB\""))
        .unwrap();
    p.restart().unwrap();
    p.wait_for_metric("portcullis_cache_corrupt_objects_total", |v| v >= 1.0)
        .unwrap();
    p.wait_for_log(|l| l.contains("scrub pass done")).unwrap();
    assert!(!object_path(&p, &layer(&img)).exists(), "quarantined");
    reg.clear_requests().unwrap();
    let r = client::get(&blob_url(&p, &img, &layer(&img)), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(r.digest, layer(&img));
    assert_eq!(reg.count("GET", &format!("/blobs/{}", layer(&img))), 1);
}

#[test]
fn a_manifest_edited_on_disk_is_fetched_again() {
    let (reg, img) = registry_with_image("test/img:v1", &[KIB]);
    let mut p = Portcullis::start(&config(&reg, "")).unwrap();
    pull(&p, &img);
    stop(&mut p);
    flip(&p, img.top_digest());
    p.restart().unwrap();
    reg.clear_requests().unwrap();
    let r = http_get(
        &format!(
            "{}/v2/registry.test/test/img/manifests/{}",
            p.url(),
            img.top_digest()
        ),
        &[("Accept", img.top_media_type())],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        img.top_raw(),
        "the upstream's bytes, not the disk's"
    );
    assert_eq!(
        reg.count("GET", &format!("/manifests/{}", img.top_digest())),
        1
    );
}

fn fsck(p: &Portcullis) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("fsck")
        .arg("--config")
        .arg(p.config_dir().join("portcullis.toml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn fsck_removes_and_reports_corrupt_objects_and_refuses_a_cache_in_use() {
    let (reg, img) = registry_with_image("test/img:v1", &[64 * KIB]);
    let mut p = Portcullis::start(&config(&reg, "")).unwrap();
    pull(&p, &img);
    let (code, out) = fsck(&p);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("in use"), "{out}");
    stop(&mut p);

    let (code, out) = fsck(&p);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every object matches its digest"), "{out}");
    flip(&p, &layer(&img));
    let (code, out) = fsck(&p);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "corrupt (removed; fetched again when asked for): {}",
            layer(&img)
        )),
        "{out}"
    );
    assert!(!object_path(&p, &layer(&img)).exists());
    let (code, out) = fsck(&p);
    assert_eq!(code, 0, "{out}");
}

/// A tmpfs of its own (CI runs as root), unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk(dir)
    }

    /// Fill it to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let buf = vec![0u8; 64 * KIB];
        while f.write_all(&buf).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

fn readyz(p: &Portcullis) -> u16 {
    http_get(&format!("{}/readyz", p.url()), &[])
        .unwrap()
        .status
}

#[test]
fn a_full_disk_turns_readyz_503_keeps_serving_the_cache_and_recovers() {
    let disk = SmallDisk::mount("48m");
    let (reg, img) = registry_with_image("test/img:v1", &[64 * KIB]);
    // Every tag request revalidates, so every one writes the index.
    let extra = format!(
        "data_dir = \"{}\"\n{}",
        disk.0.path().join("data").display(),
        config(&reg, "tag_ttl = \"0s\"")
    );
    let p = Portcullis::start(&extra).unwrap();
    pull(&p, &img);
    assert_eq!(readyz(&p), 200);

    let filler = disk.fill();
    let manifest_url = format!("{}/v2/registry.test/test/img/manifests/v1", p.url());
    let accept = [("Accept", img.top_media_type())];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while readyz(&p) == 200 {
        // Revalidating the tag writes the index, and fails.
        let r = http_get(&manifest_url, &accept).unwrap();
        assert_eq!(r.status, 200, "the tag is still served");
        assert!(
            std::time::Instant::now() < deadline,
            "the index never failed"
        );
    }
    assert_eq!(p.metric("portcullis_index_writable").unwrap(), 0.0);
    // What is cached is still served.
    let r = client::get(&blob_url(&p, &img, &layer(&img)), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(http_get(&manifest_url, &accept).unwrap().status, 200);

    // Space comes back: the index recovers on its own, and new content is
    // cached and recorded again.
    std::fs::remove_file(filler).unwrap();
    // The index recovers in the background.
    support::wait_until("/readyz answering 200", || readyz(&p) == 200);
    assert_eq!(p.metric("portcullis_index_writable").unwrap(), 1.0);
    let other =
        support::images::push_image(&reg.host(), "test/other:v1", "linux", "amd64", &[KIB], None)
            .unwrap();
    let before = p.metric("portcullis_cache_objects").unwrap();
    pull(&p, &other);
    assert!(p.metric("portcullis_cache_objects").unwrap() > before);
}

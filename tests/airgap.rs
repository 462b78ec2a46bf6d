//! Air-gapped sites: `portcullis export` from an online instance's
//! configuration against the real registry, the layout read by skopeo, the
//! upstream stopped, `portcullis import` into an offline instance, and
//! pulls through it that still pass the gate offline, or are refused.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::attest::*;
use support::containerd::Containerd;
use support::gate::*;
use support::images::{push_multiarch, skopeo_copy_to_dir, skopeo_inspect_raw};
use support::oci_push::{Descriptor, copy_image, push_bundle_referrer};
use support::podman::Podman;
use support::portcullis::{Portcullis, cli};
use support::registry::Registry;
use support::signing::{BundleSigner, CosignKey, Sigstore};
use support::upstream;

const KIB: usize = 1024;

fn portcullis(args: &[&str], config: &Path) -> Output {
    cli(args[0], config, &args[1..])
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A signed image with an SBOM (`.att`) and a keyed bundle referrer, a
/// signed multi-arch image, and an unsigned one, behind a policy that
/// requires the signature and the SBOM.
struct Site {
    reg: Registry,
    key: CosignKey,
    sigstore: Sigstore,
    img: support::images::TestImage,
    multi: support::images::TestImage,
}

const RULES: &str = "[[rule]]\nname = \"release\"\nimages = [\"registry.test/**\"]\nsigners = [{ key = \"release\" }]\n[[rule.attestations]]\nname = \"sbom\"\ntype = \"cyclonedx\"\n";

fn site() -> Site {
    let (reg, img) = one_image();
    let host = reg.host();
    let key = CosignKey::p256();
    let sigstore = Sigstore::new();
    let digest = img.top_digest();
    sign_image(&host, "test/img", digest, &key);
    let sbom = cyclonedx(&["musl"], &ago(hours(1)));
    push_att(
        &host,
        "test/img",
        digest,
        &[keyed(&key, digest, CYCLONEDX, &sbom)],
    )
    .unwrap();
    let provenance = statement(digest, SLSA_V1, &slsa_v1("refs/heads/main", &ago(hours(1))));
    let bundle = sigstore.dsse_bundle(BundleSigner::Key(&key), &provenance);
    push_bundle_referrer(
        &host,
        "test/img",
        &Descriptor::of_image(&img),
        bundle.as_bytes(),
    )
    .unwrap();
    let multi = push_multiarch(&host, "test/multi:v1", &[KIB], None).unwrap();
    let index = multi.top_digest().to_owned();
    sign_image(&host, "test/multi", &index, &key);
    push_att(
        &host,
        "test/multi",
        &index,
        &[keyed(&key, &index, CYCLONEDX, &sbom)],
    )
    .unwrap();
    copy_image(&host, &img, "test/unsigned", "v1").unwrap();
    Site {
        reg,
        key,
        sigstore,
        img,
        multi,
    }
}

impl Site {
    fn trust(&self) -> Trust {
        Trust::default()
            .key("release", &self.key)
            .root("sigstore", &self.sigstore)
    }

    /// An instance with the policy, online (`extra` appended to its config).
    fn online(&self, extra: &str) -> Portcullis {
        start(&self.reg, self.trust(), RULES, extra, false)
    }
}

#[test]
fn an_export_carries_signatures_and_attestations_to_an_offline_instance() {
    let site = site();
    let online = site.online("");
    let config = online.config_dir().join("portcullis.toml");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let layout_arg = layout.to_str().unwrap();

    let o = portcullis(
        &[
            "export",
            "-o",
            layout_arg,
            "registry.test/test/img:v1",
            "registry.test/test/multi:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!(
        "exported registry.test/test/img:v1 {}",
        site.img.top_digest()
    )));
    // Other tools read the layout.
    let raw =
        skopeo_inspect_raw(&format!("oci:{layout_arg}:registry.test/test/img:v1"), &[]).unwrap();
    assert_eq!(raw, site.img.top_raw());

    // A refused image is not exported, unless --unverified.
    let o = portcullis(
        &["export", "-o", layout_arg, "registry.test/test/unsigned:v1"],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not exported: registry.test/test/unsigned:v1")
            && text(&o).contains("no signature"),
        "{}",
        text(&o)
    );
    let unverified = out.path().join("unverified");
    let o = portcullis(
        &[
            "export",
            "-o",
            unverified.to_str().unwrap(),
            "--unverified",
            "registry.test/test/unsigned:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("UNVERIFIED"), "{}", text(&o));

    // Across the gap: the upstream is gone.
    let reg_url = site.reg.url();
    drop(site.reg);
    let offline_extra = "offline = true";
    let mut offline = start_offline(&reg_url, &site.key, &site.sigstore, offline_extra);
    let offline_config = offline.config_dir().join("portcullis.toml");
    // The cache is in use while the server runs: refused, and why.
    let o = portcullis(&["import", layout_arg], &offline_config);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("stop it first"), "{}", text(&o));
    stop(&mut offline);
    let o = portcullis(&["import", layout_arg], &offline_config);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("imported registry.test/test/img:v1"),
        "{}",
        text(&o)
    );
    // Importing twice is a no-op.
    let o = portcullis(&["import", layout_arg], &offline_config);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(" 0 objects copied"), "{}", text(&o));
    let o = portcullis(&["import", unverified.to_str().unwrap()], &offline_config);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    offline.restart().unwrap();

    // Pulled offline, by tag, with the upstream's digests, through the gate.
    let pulled = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/img:v1", offline.host()),
        &[],
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, site.img.manifests[0].digest);
    let a = audits_for(&offline, "registry.test/test/img", site.img.top_digest());
    assert_eq!(a[0]["outcome"], "verified", "{}", a[0]);
    let all = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/multi:v1", offline.host()),
        &["--all"],
    )
    .unwrap();
    assert_eq!(all.manifest_digest, site.multi.top_digest());
    // The node runtimes, through their mirror configuration.
    let m = offline.host();
    let node = Containerd::start().unwrap();
    node.set_hosts(
        "registry.test",
        &format!("server = \"http://{m}\"\n\n[host.\"http://{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    node.pull("registry.test/test/img:v1", &[]).unwrap();
    assert_eq!(node.check("registry.test/test/img:v1").unwrap(), {
        let n = site.img.manifests[0].layers.len() + 1;
        (format!("complete ({n}/{n})"), "true".into())
    });
    let podman = Podman::new(&format!(
        "[[registry]]\nprefix = \"registry.test\"\nlocation = \"registry.test\"\n\n[[registry.mirror]]\nlocation = \"{m}/registry.test\"\ninsecure = true\n"
    ))
    .unwrap();
    podman
        .pull(
            "registry.test/test/multi:v1",
            &["--platform", "linux/arm64"],
        )
        .unwrap();
    let inspected = podman.inspect("registry.test/test/multi:v1").unwrap();
    assert_eq!(inspected["Architecture"], "arm64");
    // The referrers (the provenance bundle) are answered offline too.
    let r = support::http_get(
        &format!(
            "{}/v2/registry.test/test/img/referrers/{}",
            offline.url(),
            site.img.top_digest()
        ),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", body(&r));
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        list["manifests"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    // The unsigned image was carried, and is still refused.
    let r = pull(&offline, "test/unsigned", "v1");
    assert_eq!(r.status, 403, "{}", body(&r));
}

/// An offline instance whose upstream `registry.test` is `url` (gone).
fn start_offline(url: &str, key: &CosignKey, sigstore: &Sigstore, extra: &str) -> Portcullis {
    let trust = Trust::default()
        .key("release", key)
        .root("sigstore", sigstore);
    let policy = format!("{RULES}\n{}", trust.text);
    let files = trust.files_with_policy(&policy);
    let config = format!(
        "policy = \"policy.toml\"\n{extra}\n{}",
        upstream("registry.test", url)
    );
    Portcullis::start_with_files(&config, &files).unwrap()
}

fn stop(p: &mut Portcullis) {
    p.terminate().unwrap();
    assert!(p.wait_exit().unwrap().success());
}

#[test]
fn a_damaged_layout_is_refused_at_import_and_serves_nothing_of_that_image() {
    let site = site();
    let online = site.online("");
    let config = online.config_dir().join("portcullis.toml");
    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good");
    let o = portcullis(
        &[
            "export",
            "-o",
            good.to_str().unwrap(),
            "registry.test/test/img:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let layer = site.img.manifests[0].layers[0].digest.clone();
    let blob = |root: &Path, d: &str| {
        root.join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let copy = |name: &str| {
        let dst = out.path().join(name);
        let o = Command::new("cp")
            .arg("-a")
            .arg(&good)
            .arg(&dst)
            .output()
            .unwrap();
        assert!(o.status.success());
        dst
    };
    let flipped = copy("flipped");
    let mut bytes = std::fs::read(blob(&flipped, &layer)).unwrap();
    bytes[10] ^= 1;
    std::fs::write(blob(&flipped, &layer), bytes).unwrap();
    let truncated = copy("truncated");
    let bytes = std::fs::read(blob(&truncated, &layer)).unwrap();
    std::fs::write(blob(&truncated, &layer), &bytes[..bytes.len() / 2]).unwrap();
    let missing = copy("missing");
    std::fs::remove_file(blob(&missing, &layer)).unwrap();
    // A manifest that names a blob the layout lacks: the blob gone from
    // both the files and the object list.
    let unlisted = copy("unlisted");
    let extra_path = unlisted.join("portcullis.json");
    let mut extra: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&extra_path).unwrap()).unwrap();
    extra["images"][0]["objects"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["digest"] != layer.as_str());
    std::fs::write(&extra_path, serde_json::to_vec(&extra).unwrap()).unwrap();
    std::fs::remove_file(blob(&unlisted, &layer)).unwrap();

    let reg_url = site.reg.url();
    drop(site.reg);
    for (layout, why) in [
        (&flipped, "does not match its digest"),
        (&truncated, "length does not match"),
        (&missing, "is missing from the layout"),
        (&unlisted, "that the layout lacks"),
    ] {
        let mut p = start_offline(&reg_url, &site.key, &site.sigstore, "offline = true");
        let c = p.config_dir().join("portcullis.toml");
        stop(&mut p);
        let o = portcullis(&["import", layout.to_str().unwrap()], &c);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: {}",
            layout.display(),
            text(&o)
        );
        assert!(
            text(&o).contains("registry.test/test/img:v1") && text(&o).contains(why),
            "{}",
            text(&o)
        );
        p.restart().unwrap();
        let r = pull(&p, "test/img", "v1");
        assert_ne!(
            r.status,
            200,
            "{}: served after a failed import",
            layout.display()
        );
        let r = pull(&p, "test/img", site.img.top_digest());
        assert_ne!(
            r.status,
            200,
            "{}: served by digest after a failed import",
            layout.display()
        );
    }
}

#[test]
fn a_tar_export_round_trips_and_a_hostile_archive_is_refused() {
    let site = site();
    let online = site.online("");
    let config = online.config_dir().join("portcullis.toml");
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("release.tar");
    let o = portcullis(
        &[
            "export",
            "-o",
            tar.to_str().unwrap(),
            "registry.test/test/img:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(tar.is_file());
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the archive is left: {left:?}");
    // tar(1) reads it, and so does skopeo once unpacked.
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.contains("index.json") && listing.contains("blobs/sha256/"),
        "{listing}"
    );

    let reg_url = site.reg.url();
    drop(site.reg);
    let mut p = start_offline(&reg_url, &site.key, &site.sigstore, "offline = true");
    let c = p.config_dir().join("portcullis.toml");
    stop(&mut p);
    // An archive with a path outside the layout is refused before anything is written.
    let evil = out.path().join("evil.tar");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x"), b"x").unwrap();
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&evil)
        .arg("-C")
        .arg(dir.path())
        .arg("--transform=s,^,../,")
        .arg("x")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let o = portcullis(&["import", evil.to_str().unwrap()], &c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is not a file an image layout holds"),
        "{}",
        text(&o)
    );
    let o = portcullis(&["import", tar.to_str().unwrap()], &c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    p.restart().unwrap();
    let r = pull(&p, "test/img", "v1");
    assert_served(&r, &site.img);
}

#[test]
fn warm_pulls_ahead_so_the_first_node_pull_costs_no_upstream_blob_fetch() {
    let site = site();
    let p = site.online("");
    let config = p.config_dir().join("portcullis.toml");
    let url = p.url();
    let o = portcullis(
        &[
            "warm",
            "--url",
            &url,
            "registry.test/test/img:v1",
            "registry.test/test/multi:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "warmed registry.test/test/multi:v1 {}",
            site.multi.top_digest()
        )),
        "{}",
        text(&o)
    );
    site.reg.clear_requests().unwrap();
    let pulled = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/img:v1", p.host()),
        &[],
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, site.img.manifests[0].digest);
    skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/multi:v1", p.host()),
        &["--all"],
    )
    .unwrap();
    assert_eq!(site.reg.count("GET", "/blobs/"), 0, "every blob was warm");
    // An image the policy refuses is reported, not warmed.
    let o = portcullis(
        &["warm", "--url", &url, "registry.test/test/unsigned:v1"],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not warmed: registry.test/test/unsigned:v1"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_import_into_a_running_instance_goes_through_its_admin_listener() {
    let site = site();
    let online = site.online("");
    let config = online.config_dir().join("portcullis.toml");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let o = portcullis(
        &[
            "export",
            "-o",
            layout.to_str().unwrap(),
            "registry.test/test/img:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let multi = out.path().join("multi");
    let o = portcullis(
        &[
            "export",
            "-o",
            multi.to_str().unwrap(),
            "registry.test/test/multi:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let reg_url = site.reg.url();
    drop(site.reg);
    let port = support::free_port().unwrap();
    let p = start_offline(
        &reg_url,
        &site.key,
        &site.sigstore,
        &format!("offline = true\nadmin_listen = \"127.0.0.1:{port}\""),
    );
    assert_ne!(pull(&p, "test/img", "v1").status, 200, "not there yet");
    let c = p.config_dir().join("portcullis.toml");
    let o = portcullis(&["import", layout.to_str().unwrap()], &c);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("imported registry.test/test/img:v1"),
        "{}",
        text(&o)
    );
    // Served at once, without a restart, and still through the gate.
    assert_served(&pull(&p, "test/img", "v1"), &site.img);
    // The endpoint is on the admin listener only, and only for POST.
    let r = support::http_get(&format!("{}/admin/import?path=/tmp", p.url()), &[]).unwrap();
    assert_eq!(r.status, 404);
    let r = support::http_get(
        &format!("http://127.0.0.1:{port}/admin/import?path=/tmp"),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 405);
    // A damaged layout is refused through it too, naming the object, and
    // nothing of that image is served.
    let layer = &site.multi.manifests[0].layers[0].digest;
    let blob = multi
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let o = portcullis(&["import", multi.to_str().unwrap()], &c);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("registry.test/test/multi:v1")
            && text(&o).contains("does not match its digest"),
        "{}",
        text(&o)
    );
    assert_ne!(pull(&p, "test/multi", "v1").status, 200);
}

#[test]
fn platform_filters_carry_only_the_platforms_asked_for() {
    let site = site();
    let online = site.online("");
    let config = online.config_dir().join("portcullis.toml");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("arm");
    let o = portcullis(
        &[
            "export",
            "-o",
            layout.to_str().unwrap(),
            "--platform",
            "linux/arm64",
            "registry.test/test/multi:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let arm = site.multi.manifest_for("arm64").unwrap();
    let amd = site.multi.manifest_for("amd64").unwrap();
    assert!(blob(&arm.layers[0].digest).is_file() && blob(&arm.digest).is_file());
    assert!(!blob(&amd.layers[0].digest).exists() && !blob(&amd.digest).exists());
    assert!(
        blob(site.multi.top_digest()).is_file(),
        "the index itself is carried"
    );
    let o = portcullis(
        &[
            "export",
            "-o",
            layout.to_str().unwrap(),
            "--platform",
            "linux",
            "registry.test/test/multi:v1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("write os/arch"), "{}", text(&o));
}

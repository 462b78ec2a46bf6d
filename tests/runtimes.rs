//! The node runtimes, for real, pulling through portcullis with the mirror
//! configuration docs/runtimes.md gives: a private containerd daemon with a
//! `hosts.toml`, podman (CRI-O's image library) with a `registries.conf`
//! mirror, and skopeo.
//!
//! Images are pulled as `registry.invalid/...`: `.invalid` never resolves
//! (RFC 6761), so the only way their bytes can arrive is through the mirror.

mod support;

use support::containerd::Containerd;
use support::cut_proxy::CutProxy;
use support::images::{SkopeoEnv, TestImage, push_multiarch};
use support::podman::Podman;
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::{registry_with_image, sha256_digest, upstream};

const MIB: usize = 1 << 20;
/// The registry name the runtimes pull from; it never resolves.
const REGISTRY: &str = "registry.invalid";

fn mirror(reg: &Registry) -> Portcullis {
    Portcullis::start(&upstream(REGISTRY, &reg.url())).unwrap()
}

/// The fail-closed hosts.toml of docs/runtimes.md: the mirror is the
/// registry's only host, so there is nothing to fall back to.
fn mirror_only_hosts(mirror: &str) -> String {
    format!(
        "server = \"http://{mirror}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// A fresh containerd whose only host for `registry.invalid` is `mirror`.
fn node_behind(mirror: &str) -> Containerd {
    let node = Containerd::start().unwrap();
    node.set_hosts(REGISTRY, &mirror_only_hosts(mirror))
        .unwrap();
    node
}

/// `registries.conf` with portcullis as a mirror of `registry.invalid`.
fn mirror_registries(mirror: &str) -> String {
    format!(
        "[[registry]]\nprefix = \"{REGISTRY}\"\nlocation = \"{REGISTRY}\"\n\n[[registry.mirror]]\nlocation = \"{mirror}/{REGISTRY}\"\ninsecure = true\n"
    )
}

/// Every digest a full pull of `img` stores: the index (if any), the
/// manifests, configs and layers.
fn all_digests(img: &TestImage) -> Vec<String> {
    let mut v: Vec<String> = img.blobs().iter().map(|b| b.digest.clone()).collect();
    v.extend(img.manifests.iter().map(|m| m.digest.clone()));
    v.extend(img.index.iter().map(|i| i.digest.clone()));
    v.sort();
    v.dedup();
    v
}

/// Access-log lines (JSON) of portcullis whose path contains `needle`.
fn access(p: &Portcullis, needle: &str) -> Vec<serde_json::Value> {
    p.flush_logs()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .filter(|v| v["path"].as_str().is_some_and(|p| p.contains(needle)))
        .collect()
}

#[test]
fn containerd_pulls_and_unpacks_through_a_hosts_toml_mirror() {
    let (reg, img) = registry_with_image("test/img:v1", &[2 * MIB, MIB / 2]);
    let p = mirror(&reg);
    reg.clear_requests().unwrap();

    let node = node_behind(p.host());
    let image = format!("{REGISTRY}/test/img:v1");
    node.pull(&image, &[]).unwrap();

    // containerd verified every digest as it committed it; the image is whole
    // and unpacked.
    assert_eq!(node.content().unwrap(), all_digests(&img));
    assert_eq!(
        node.check(&image).unwrap(),
        ("complete (3/3)".into(), "true".into())
    );
    // It resolved the tag with HEAD, sending ?ns=, and portcullis answered.
    let heads = access(&p, "/v2/test/img/manifests/v1?ns=registry.invalid");
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(
        (heads[0]["method"].as_str(), heads[0]["status"].as_u64()),
        (Some("HEAD"), Some(200))
    );
    assert_eq!(
        reg.count("GET", "/blobs/"),
        img.blobs().len(),
        "each blob fetched once"
    );

    // A second node pulls from the cache: nothing new upstream.
    reg.clear_requests().unwrap();
    let node2 = node_behind(p.host());
    node2.pull(&image, &[]).unwrap();
    assert_eq!(node2.content().unwrap(), all_digests(&img));
    assert_eq!(reg.count("GET", "/blobs/"), 0);
}

#[test]
fn containerd_pulls_every_platform_of_a_multi_arch_index() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let multi = push_multiarch(&reg.host(), "test/multi:v1", &[MIB / 2], None).unwrap();
    let p = mirror(&reg);
    let node = node_behind(p.host());

    node.pull(&format!("{REGISTRY}/test/multi:v1"), &["--all-platforms"])
        .unwrap();
    let content = node.content().unwrap();
    assert_eq!(content, all_digests(&multi));
    assert!(
        content.contains(&multi.top_digest().to_owned()),
        "the index itself"
    );
    for m in &multi.manifests {
        let layer = &m.layers[0];
        assert_eq!(
            sha256_digest(&node.content_bytes(&layer.digest).unwrap()),
            layer.digest,
            "{} layer",
            m.arch
        );
    }
}

#[test]
fn containerd_resumes_a_cut_download_with_a_range_request() {
    let (reg, img) = registry_with_image("test/big:v1", &[6 * MIB]);
    let p = mirror(&reg);
    // The network drops the connection 2 MiB into the layer download.
    let cut = CutProxy::start(p.host(), 2 * MIB).unwrap();
    reg.clear_requests().unwrap();

    let node = node_behind(cut.host());
    let image = format!("{REGISTRY}/test/big:v1");
    node.pull(&image, &[]).unwrap();

    assert_eq!(cut.cuts(), 1, "the download was cut once");
    let layer = &img.manifest().layers[0];
    let lines = access(&p, &format!("/blobs/{}", layer.digest));
    let statuses: Vec<u64> = lines.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(
        statuses,
        [200, 206],
        "a cut GET, then a Range GET for the rest: {lines:?}"
    );
    assert_eq!(lines[0]["complete"], false);
    assert_eq!(lines[1]["complete"], true);
    let resumed = lines[1]["bytes"].as_u64().unwrap();
    assert!(
        resumed < layer.size && resumed > 0,
        "only the missing part is sent again: {resumed} of {}",
        layer.size
    );
    assert_eq!(
        node.check(&image).unwrap(),
        ("complete (2/2)".into(), "true".into())
    );
    assert_eq!(
        reg.count("GET", &format!("/blobs/{}", layer.digest)),
        1,
        "the resumed range came from portcullis, not from upstream again"
    );
}

#[test]
fn podman_pulls_one_platform_of_a_multi_arch_image_through_a_registries_conf_mirror() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let multi = push_multiarch(&reg.host(), "test/multi:v1", &[MIB / 2], None).unwrap();
    let p = mirror(&reg);
    reg.clear_requests().unwrap();

    let podman = Podman::new(&mirror_registries(p.host())).unwrap();
    let image = format!("{REGISTRY}/test/multi:v1");
    podman.pull(&image, &["--platform", "linux/arm64"]).unwrap();

    let arm = multi.manifest_for("arm64").unwrap();
    let amd = multi.manifest_for("amd64").unwrap();
    let inspected = podman.inspect(&image).unwrap();
    assert_eq!(inspected["Architecture"], "arm64");
    assert_eq!(
        format!("sha256:{}", inspected["Id"].as_str().unwrap()),
        arm.config.digest,
        "the image is the arm64 platform's"
    );
    // podman names the registry in the path; only arm64 content moved.
    let arm_layer = access(
        &p,
        &format!("/v2/{REGISTRY}/test/multi/blobs/{}", arm.layers[0].digest),
    );
    assert_eq!(arm_layer.len(), 1);
    assert_eq!(arm_layer[0]["status"], 200);
    assert_eq!(reg.count("GET", &amd.layers[0].digest), 0);
    assert_eq!(reg.count("GET", &arm.layers[0].digest), 1);
}

#[test]
fn skopeo_inspects_and_copies_through_a_registries_conf_mirror() {
    let (reg, img) = registry_with_image("test/img:v1", &[MIB]);
    let p = mirror(&reg);
    let skopeo = SkopeoEnv::with_registries(&mirror_registries(p.host())).unwrap();
    let src = format!("docker://{REGISTRY}/test/img:v1");

    // `--raw` and `--config`: a plain `skopeo inspect` also lists the
    // repository's tags, and skopeo asks only the primary registry for those.
    let raw = support::run(skopeo.command().args(["inspect", "--raw", &src])).unwrap();
    assert_eq!(raw.stdout, img.manifest().raw);
    let config = support::run(
        skopeo
            .command()
            .args(["inspect", "--config", "--raw", &src]),
    )
    .unwrap();
    assert_eq!(sha256_digest(&config.stdout), img.manifest().config.digest);

    let copied = skopeo.copy_to_dir(&src, &[]).unwrap();
    assert_eq!(
        copied.manifest,
        img.manifest().raw,
        "the upstream's manifest bytes"
    );
    for (digest, path, _) in &copied.blobs {
        assert_eq!(&sha256_digest(&std::fs::read(path).unwrap()), digest);
    }
    assert_eq!(copied.blobs.len(), img.blobs().len());
    assert!(!access(&p, &format!("/v2/{REGISTRY}/test/img/manifests/v1")).is_empty());
}

/// The counters an operator watches, around a cold and a warm node pull.
struct Counters {
    hit: f64,
    miss: f64,
    served_hit: f64,
    served_miss: f64,
    fetched: f64,
}

fn counters(p: &Portcullis) -> Counters {
    let m = |s: &str| p.metric(s).unwrap();
    Counters {
        hit: m("portcullis_cache_requests_total{result=\"hit\"}"),
        miss: m("portcullis_cache_requests_total{result=\"miss\"}"),
        served_hit: m("portcullis_served_bytes_total{cache=\"hit\"}"),
        served_miss: m("portcullis_served_bytes_total{cache=\"miss\"}"),
        fetched: m("portcullis_upstream_bytes_total{upstream=\"registry.invalid\"}"),
    }
}

#[test]
fn metrics_count_a_cold_and_a_warm_node_pull_exactly() {
    let (reg, img) = registry_with_image("test/img:v1", &[MIB, MIB / 4]);
    let p = mirror(&reg);
    let blobs = img.blobs();
    let blob_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let manifest_bytes = img.manifest().raw.len() as u64;
    let image = format!("{REGISTRY}/test/img:v1");

    // Cold: containerd's HEAD on the tag fetches the manifest (a miss), its
    // GET by digest is then a hit, and every blob is a miss fetched once.
    let before = counters(&p);
    node_behind(p.host()).pull(&image, &[]).unwrap();
    p.flush_logs().unwrap();
    p.wait_fills_settled().unwrap();
    let cold = counters(&p);
    assert_eq!(cold.miss - before.miss, 1.0 + blobs.len() as f64);
    assert_eq!(cold.hit - before.hit, 1.0);
    assert_eq!(cold.served_miss - before.served_miss, blob_bytes as f64);
    assert_eq!(cold.served_hit - before.served_hit, manifest_bytes as f64);
    assert_eq!(cold.fetched - before.fetched, blob_bytes as f64);

    // Warm: a second node gets everything from the cache.
    node_behind(p.host()).pull(&image, &[]).unwrap();
    p.flush_logs().unwrap();
    let warm = counters(&p);
    assert_eq!(warm.miss, cold.miss);
    assert_eq!(warm.hit - cold.hit, 2.0 + blobs.len() as f64);
    assert_eq!(warm.served_miss, cold.served_miss);
    assert_eq!(
        warm.served_hit - cold.served_hit,
        (manifest_bytes + blob_bytes) as f64
    );
    assert_eq!(warm.fetched, cold.fetched, "nothing fetched upstream");
}

/// dockerd's manifest media types, each on its own `Accept` line as its
/// distribution client sends them (moby v25–v28, classic image store).
const DOCKERD_ACCEPT: [&str; 6] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
];
const DOCKERD_UA: &str = "docker/28.2.2 go/go1.24.3 git-commit/e6534b4 kernel/6.1.0 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))";

/// One request exactly as dockerd sends it to a `registry-mirrors` entry:
/// a new connection each time, its User-Agent, the Accept lines for
/// manifests, `Accept-Encoding: gzip` on blob GETs without a Range.
fn dockerd(method: &str, url: &str, manifest: bool, range: Option<&str>) -> support::HttpResponse {
    let mut headers: Vec<(&str, &str)> = vec![("User-Agent", DOCKERD_UA)];
    if manifest {
        headers.extend(DOCKERD_ACCEPT.iter().map(|t| ("Accept", *t)));
    }
    match range {
        Some(r) => headers.push(("Range", r)),
        None if method == "GET" => headers.push(("Accept-Encoding", "gzip")),
        None => {}
    }
    support::http_request(method, url, &headers, &[]).unwrap()
}

#[test]
fn docker_registry_mirror_requests_pull_a_multi_arch_hub_image() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let busybox = push_multiarch(&reg.host(), "library/busybox:latest", &[MIB], None).unwrap();
    // Docker mirrors only Docker Hub: portcullis's default upstream, here
    // the real registry posing as docker.io.
    let p = Portcullis::start(&format!(
        "{}default = true\n",
        upstream("docker.io", &reg.url())
    ))
    .unwrap();
    let base = format!("{}/v2", p.url());

    // `docker pull busybox`: the ping, then the tag resolved with HEAD.
    assert_eq!(dockerd("GET", &format!("{base}/"), false, None).status, 200);
    let head = dockerd(
        "HEAD",
        &format!("{base}/library/busybox/manifests/latest"),
        true,
        None,
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Docker-Content-Digest"),
        Some(busybox.top_digest())
    );
    assert_eq!(head.header("Content-Type"), Some(busybox.top_media_type()));
    assert_eq!(
        head.header("Content-Length"),
        Some(busybox.top_raw().len().to_string().as_str())
    );

    // The index by digest, then the linux/amd64 manifest by digest.
    let index = dockerd(
        "GET",
        &format!("{base}/library/busybox/manifests/{}", busybox.top_digest()),
        true,
        None,
    );
    assert_eq!(index.body, busybox.top_raw());
    let amd = busybox.manifest_for("amd64").unwrap();
    let index_json: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let listed = index_json["manifests"].as_array().unwrap();
    assert!(listed.iter().any(|m| m["digest"] == amd.digest.as_str()
        && m["platform"]["architecture"] == "amd64"));
    let manifest = dockerd(
        "GET",
        &format!("{base}/library/busybox/manifests/{}", amd.digest),
        true,
        None,
    );
    assert_eq!(manifest.body, amd.raw);
    assert_eq!(
        manifest.header("Content-Type"),
        Some(amd.media_type.as_str())
    );

    // Config and layer, with Accept-Encoding: gzip; the bytes come back
    // as stored (no Content-Encoding), so their digests hold.
    for blob in std::iter::once(&amd.config).chain(&amd.layers) {
        let r = dockerd(
            "GET",
            &format!("{base}/library/busybox/blobs/{}", blob.digest),
            false,
            None,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Encoding"), None);
        assert_eq!(sha256_digest(&r.body), blob.digest);
    }

    // A resumed layer: dockerd insists on 206 and a Content-Range starting
    // where it asked, ending at the blob's end.
    let layer = &amd.layers[0];
    let from = layer.size / 3;
    let r = dockerd(
        "GET",
        &format!("{base}/library/busybox/blobs/{}", layer.digest),
        false,
        Some(&format!("bytes={from}-")),
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes {from}-{}/{}", layer.size - 1, layer.size).as_str())
    );
    let whole = busybox.blob_bytes(&layer.digest).unwrap();
    assert_eq!(r.body, whole[from as usize..]);

    // The short name, as `docker pull busybox` has it, is the same image;
    // so is the name rewritten to the mirror (`mirror:5000/library/busybox`),
    // which reaches portcullis with the same path.
    let short = dockerd(
        "GET",
        &format!("{base}/busybox/manifests/latest"),
        true,
        None,
    );
    assert_eq!(short.body, busybox.top_raw());
}

#[test]
fn parallel_open_ended_range_chunks_on_a_cold_layer_cost_one_upstream_fetch() {
    // containerd 2.1+ with concurrent_layer_fetch_buffer: each worker asks
    // `Range: bytes=<start>-`, reads one chunk and hangs up.
    let (reg, img) = registry_with_image("test/big:v1", &[8 * MIB]);
    let p = mirror(&reg);
    reg.clear_requests().unwrap();
    let layer = &img.manifest().layers[0];
    let whole = img.blob_bytes(&layer.digest).unwrap();
    let url = format!(
        "{}/v2/test/big/blobs/{}?ns={REGISTRY}",
        p.url(),
        layer.digest
    );
    let chunk = 2 * MIB;
    let size = whole.len();
    let workers: Vec<_> = (0..size.div_ceil(chunk))
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let start = i * chunk;
                let len = chunk.min(size - start);
                let range = format!("bytes={start}-");
                let mut r = support::client::open("GET", &url, &[("Range", &range)]).unwrap();
                assert_eq!(r.status, 206, "chunk {i}");
                let expected = format!("bytes {start}-{}/{size}", size - 1);
                assert_eq!(r.header("Content-Range"), Some(expected.as_str()));
                // The final chunk reads to the end, through the verified
                // last byte; the others stop early.
                (start, r.read_bytes(len).unwrap())
            })
        })
        .collect();
    for w in workers {
        let (start, bytes) = w.join().unwrap();
        assert!(
            bytes == whole[start..start + bytes.len()],
            "chunk at {start}"
        );
    }
    assert_eq!(reg.count("GET", &format!("/blobs/{}", layer.digest)), 1);
    let again = support::client::get(&url, &[]).unwrap();
    assert_eq!(again.digest, layer.digest, "the whole layer was cached");
}

//! Pulling through portcullis from a real `docker-registry`: by path prefix
//! (podman/CRI-O mirrors), by `?ns=` (containerd), and plain paths to the
//! default upstream (Docker's registry-mirrors).

mod support;

use support::{registry_with_image, upstream};

use support::client;
use support::images::{push_multiarch, skopeo_copy_to_dir};
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::{http_get, http_request, sha256_digest};

const MIB: usize = 1 << 20;
const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// An upstream named `registry.test` (for prefix and ns routing) and, as
/// the default, the same registry posing as Docker Hub.
fn config_for(reg: &Registry) -> String {
    let url = reg.url();
    format!(
        "{}{}default = true\n",
        upstream("registry.test", &url),
        upstream("docker.io", &url)
    )
}

fn expected_blobs(img: &support::images::TestImage) -> Vec<String> {
    let mut v: Vec<String> = img.blobs().iter().map(|b| b.digest.clone()).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn skopeo_pulls_by_path_prefix_with_upstream_digests_and_second_pull_is_free() {
    let (reg, img) = registry_with_image("test/img:v1", &[MIB, MIB / 2]);
    let multi = push_multiarch(&reg.host(), "test/multi:v1", &[MIB / 4], None).unwrap();
    let p = Portcullis::start(&config_for(&reg)).unwrap();
    reg.clear_requests().unwrap();

    let src = format!("docker://{}/registry.test/test/img:v1", p.host());
    let pulled = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(pulled.manifest_digest, img.manifests[0].digest);
    assert_eq!(
        pulled.manifest, img.manifests[0].raw,
        "manifest bytes must be the upstream's, unchanged"
    );
    let got: Vec<String> = pulled.blobs.iter().map(|(d, _, _)| d.clone()).collect();
    assert_eq!(got, expected_blobs(&img));
    for (digest, path, _) in &pulled.blobs {
        assert_eq!(&sha256_digest(&std::fs::read(path).unwrap()), digest);
    }
    let first_pull_blob_gets = reg.count("GET", "/blobs/");
    assert_eq!(
        first_pull_blob_gets,
        expected_blobs(&img).len(),
        "each blob fetched once"
    );

    // A multi-arch index, every platform.
    let src = format!("docker://{}/registry.test/test/multi:v1", p.host());
    let all = skopeo_copy_to_dir(&src, &["--all"]).unwrap();
    assert_eq!(all.manifest_digest, multi.top_digest());
    for m in &multi.manifests {
        assert!(
            all.blobs.iter().any(|(d, _, _)| d == &m.digest),
            "platform manifest {} missing",
            m.arch
        );
        for layer in &m.layers {
            assert!(all.blobs.iter().any(|(d, _, _)| d == &layer.digest));
        }
    }

    // Second pull: zero blob GETs upstream.
    p.wait_fills_settled().unwrap();
    reg.clear_requests().unwrap();
    let again = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/img:v1", p.host()),
        &[],
    )
    .unwrap();
    assert_eq!(again.manifest_digest, img.manifests[0].digest);
    assert_eq!(
        reg.count("GET", "/blobs/"),
        0,
        "second pull went upstream: {:?}",
        reg.requests()
    );
    assert_eq!(
        reg.count("GET", "/manifests/"),
        0,
        "tag is fresh: no manifest GET"
    );
    assert!(
        p.metric("portcullis_cache_requests_total{result=\"hit\"}")
            .unwrap()
            >= 3.0
    );
}

#[test]
fn containerd_style_requests_route_by_ns() {
    let (reg, img) = registry_with_image("test/img:v1", &[MIB]);
    let p = Portcullis::start(&config_for(&reg)).unwrap();
    let m = img.manifest();

    // containerd resolves with HEAD and needs Content-Length on it.
    let head = http_request(
        "HEAD",
        &format!("{}/v2/test/img/manifests/v1?ns=registry.test", p.url()),
        &[("Accept", CONTAINERD_ACCEPT)],
        &[],
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(m.raw.len().to_string().as_str())
    );
    assert_eq!(
        head.header("Docker-Content-Digest"),
        Some(m.digest.as_str())
    );
    assert_eq!(head.header("Content-Type"), Some(m.media_type.as_str()));
    assert_eq!(head.header("OCI-Namespace"), Some("registry.test"));
    assert_eq!(
        head.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );

    let by_digest = http_get(
        &format!(
            "{}/v2/test/img/manifests/{}?ns=registry.test",
            p.url(),
            m.digest
        ),
        &[("Accept", CONTAINERD_ACCEPT)],
    )
    .unwrap();
    assert_eq!(by_digest.status, 200);
    assert_eq!(by_digest.body, m.raw);

    for blob in img.blobs() {
        let r = client::get(
            &format!(
                "{}/v2/test/img/blobs/{}?ns=registry.test",
                p.url(),
                blob.digest
            ),
            &[],
        )
        .unwrap();
        assert_eq!((r.status, r.complete), (200, true));
        assert_eq!(r.digest, blob.digest);
        assert_eq!(r.bytes, blob.size);
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(blob.digest.as_str())
        );
    }
    // A blob HEAD says its size without fetching.
    let layer = &m.layers[0];
    let h = http_request(
        "HEAD",
        &format!(
            "{}/v2/test/img/blobs/{}?ns=registry.test",
            p.url(),
            layer.digest
        ),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(
        h.header("Content-Length"),
        Some(layer.size.to_string().as_str())
    );

    // The ns value may be escaped the way Go escapes query values.
    let escaped = http_get(
        &format!("{}/v2/test/img/manifests/v1?ns=registry%2Etest", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(escaped.status, 200);

    // A registry nobody configured is refused, not guessed.
    let unknown = http_get(
        &format!("{}/v2/test/img/manifests/v1?ns=quay.io", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(unknown.status, 404);
    let body: serde_json::Value = serde_json::from_slice(&unknown.body).unwrap();
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("quay.io")
    );
}

#[test]
fn docker_registry_mirrors_paths_go_to_the_default_upstream_with_library_rule() {
    let (reg, img) = registry_with_image("library/busybox:latest", &[MIB / 4]);
    let p = Portcullis::start(&config_for(&reg)).unwrap();
    // What dockerd sends to a registry mirror: plain paths, short names.
    for path in [
        "/v2/busybox/manifests/latest",
        "/v2/library/busybox/manifests/latest",
        "/v2/docker.io/busybox/manifests/latest",
    ] {
        let r = http_get(
            &format!("{}{path}", p.url()),
            &[("Accept", CONTAINERD_ACCEPT)],
        )
        .unwrap();
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.body, img.manifest().raw, "{path}");
    }
    // A first segment that looks like an unknown registry is refused.
    let r = http_get(
        &format!("{}/v2/ghcr.io/acme/app/manifests/v1", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("NAME_UNKNOWN"));
}

#[test]
fn bad_requests_get_oci_errors_and_lose_nothing() {
    let (reg, img) = registry_with_image("test/img:v1", &[MIB / 4]);
    let p = Portcullis::start(&config_for(&reg)).unwrap();
    let src = format!("docker://{}/registry.test/test/img:v1", p.host());
    skopeo_copy_to_dir(&src, &[]).unwrap();
    let objects_before = p.stored_objects();

    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "GET",
            "/v2/test/..%2f..%2fetc/manifests/v1",
            400,
            "NAME_INVALID",
        ),
        ("GET", "/v2/Test/img/manifests/v1", 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/test/img/manifests/sha256:1234",
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/test/img/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            400,
            "DIGEST_INVALID",
        ),
        (
            "GET",
            "/v2/test/img/manifests/v1?ns=evil.test%0d%0aX-Injected:%201",
            400,
            "NAME_INVALID",
        ),
        ("PUT", "/v2/test/img/manifests/v1", 405, "UNSUPPORTED"),
        ("DELETE", "/v2/test/img/manifests/v1", 405, "UNSUPPORTED"),
        ("POST", "/v2/test/img/blobs/uploads/", 405, "UNSUPPORTED"),
        (
            "GET",
            "/v2/test/img/manifests/missing",
            404,
            "MANIFEST_UNKNOWN",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = http_request(method, &format!("{}{path}", p.url()), &[], &[]).unwrap();
        assert_eq!(
            r.status,
            *status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["errors"][0]["code"], *code, "{method} {path}");
        assert!(r.header("X-Injected").is_none());
    }
    let long = format!("{}/v2/{}/manifests/v1", p.url(), "a".repeat(300));
    assert_eq!(http_get(&long, &[]).unwrap().status, 400);

    // Nothing cached was lost, and the image still pulls.
    assert_eq!(p.stored_objects(), objects_before);
    let again = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(again.manifest_digest, img.manifests[0].digest);
}

#[test]
fn health_readiness_and_metrics() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let p = Portcullis::start(&format!(
        "admin_listen = \"127.0.0.1:0\"\n{}",
        config_for(&reg)
    ))
    .unwrap();

    // The admin listener answers health and metrics, and nothing else.
    let line = p
        .wait_for_log(|l| l.contains("\"admin listening\""))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    let admin = format!("http://{}", line["addr"].as_str().unwrap());
    assert_eq!(
        http_get(&format!("{admin}/metrics"), &[]).unwrap().status,
        200
    );
    assert_eq!(
        http_get(&format!("{admin}/readyz"), &[]).unwrap().status,
        200
    );
    assert_eq!(http_get(&format!("{admin}/v2/"), &[]).unwrap().status, 404);

    assert_eq!(
        http_get(&format!("{}/healthz", p.url()), &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        http_get(&format!("{}/readyz", p.url()), &[])
            .unwrap()
            .status,
        200
    );
    let base = http_get(&format!("{}/v2/", p.url()), &[]).unwrap();
    assert_eq!(
        (base.status, base.header("Docker-Distribution-API-Version")),
        (200, Some("registry/2.0"))
    );
    let m = http_get(&format!("{}/metrics", p.url()), &[]).unwrap();
    let text = String::from_utf8_lossy(&m.body);
    for series in [
        "portcullis_requests_total{route=\"base\",status=\"200\"}",
        "portcullis_fills_in_flight",
        "portcullis_cache_size_bytes",
        "portcullis_cache_evictions_total",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    // One access-log line per request, with the fields operators filter on.
    let line = p.wait_for_log(|l| l.contains("\"path\":\"/v2/\"")).unwrap();
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    for field in [
        "method",
        "status",
        "bytes",
        "cache",
        "upstream",
        "duration_ms",
    ] {
        assert!(
            line.get(field).is_some(),
            "access log lacks {field}: {line}"
        );
    }
}

//! Tags are trusted for `tag_ttl`, then revalidated with HEAD; cached
//! content is served (with a Warning) when the upstream is down; an
//! `offline = true` mirror never contacts upstream.

mod support;

use support::{registry_with_image, upstream};

use std::time::Duration;

use support::images::{push_image, skopeo_copy_to_dir};
use support::portcullis::{InProcess, Portcullis};
use support::registry::Registry;
use support::{http_get, http_request};

const TTL: Duration = Duration::from_secs(300);

fn config_for(reg: &Registry, extra: &str) -> String {
    format!(
        "{extra}\n[cache]\ntag_ttl = \"{}s\"\n{}",
        TTL.as_secs(),
        upstream("registry.test", &reg.url())
    )
}

fn digest_of_tag(url: &str, repo_tag: &str) -> (u16, Option<String>, Option<String>) {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let r = http_request(
        "HEAD",
        &format!("{url}/v2/registry.test/{repo}/manifests/{tag}"),
        &[],
        &[],
    )
    .unwrap();
    (
        r.status,
        r.header("Docker-Content-Digest").map(str::to_owned),
        r.header("Warning").map(str::to_owned),
    )
}

#[test]
fn a_re_pushed_tag_is_seen_after_tag_ttl() {
    let (reg, v1) = registry_with_image("test/img:latest", &[1024]);
    let p = InProcess::start(&config_for(&reg, "")).unwrap();
    assert_eq!(
        digest_of_tag(&p.url(), "test/img:latest").1.as_deref(),
        Some(v1.top_digest())
    );

    let v2 = push_image(
        &reg.host(),
        "test/img:latest",
        "linux",
        "amd64",
        &[2048],
        None,
    )
    .unwrap();
    assert_ne!(v1.top_digest(), v2.top_digest());
    reg.clear_requests().unwrap();
    // Just inside tag_ttl: answered from cache, upstream not asked.
    p.clock.advance(TTL - Duration::from_secs(1));
    assert_eq!(
        digest_of_tag(&p.url(), "test/img:latest").1.as_deref(),
        Some(v1.top_digest()),
        "a fresh tag must be answered from cache"
    );
    assert_eq!(reg.requests().len(), 0, "a fresh tag must not go upstream");

    // Past it: revalidated with a HEAD, and the moved tag fetched by digest.
    p.clock.advance(Duration::from_secs(2));
    let after = digest_of_tag(&p.url(), "test/img:latest");
    assert_eq!(after.1.as_deref(), Some(v2.top_digest()));
    assert_eq!(
        reg.count("HEAD", "/manifests/latest"),
        1,
        "revalidation uses HEAD: {:?}",
        reg.requests()
    );
    assert_eq!(
        reg.count("GET", "/manifests/latest"),
        0,
        "the moved tag is fetched by digest"
    );
    assert_eq!(
        reg.count("GET", &format!("/manifests/{}", v2.top_digest())),
        1
    );
}

#[test]
fn serves_cached_content_when_the_upstream_is_down() {
    let (mut reg, img) = registry_with_image("test/img:v1", &[64 * 1024]);
    let p = InProcess::start(&config_for(&reg, "")).unwrap();
    let src = format!("docker://{}/registry.test/test/img:v1", p.host());
    skopeo_copy_to_dir(&src, &[]).unwrap();

    reg.stop().unwrap();
    p.clock.advance(TTL + Duration::from_secs(1));
    let (status, digest, warning) = digest_of_tag(&p.url(), "test/img:v1");
    assert_eq!(status, 200);
    assert_eq!(digest.as_deref(), Some(img.top_digest()));
    assert!(
        warning.is_some_and(|w| w.starts_with("110 ")),
        "stale answers carry a Warning"
    );
    let again = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(again.manifest_digest, img.top_digest());
    assert!(
        p.metric("portcullis_cache_requests_total{result=\"stale\"}")
            .unwrap()
            >= 1.0
    );
    // What was never cached cannot be served: a clear error, quickly.
    let r = http_get(
        &format!("{}/v2/registry.test/test/other/manifests/v1", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("unreachable moments ago"));

    // Back up: within the fail-fast hold (5 s) portcullis does not look yet;
    // once it is over, one request probes, revalidation resumes and the
    // warning goes away.
    reg.start_again().unwrap();
    let (status, _, warning) = digest_of_tag(&p.url(), "test/img:v1");
    assert_eq!(status, 200);
    assert!(warning.is_some(), "still failing fast within the hold");
    p.clock.advance(Duration::from_secs(5));
    let (status, digest, warning) = digest_of_tag(&p.url(), "test/img:v1");
    assert_eq!(status, 200);
    assert_eq!(digest.as_deref(), Some(img.top_digest()));
    assert!(warning.is_none(), "revalidated: {warning:?}");
}

#[test]
fn offline_mirror_serves_imported_content_and_never_calls_upstream() {
    let (reg, img) = registry_with_image("test/img:v1", &[64 * 1024]);
    let mut p = Portcullis::start(&config_for(&reg, "")).unwrap();
    let src = format!("docker://{}/registry.test/test/img:v1", p.host());
    skopeo_copy_to_dir(&src, &[]).unwrap();

    p.rewrite_config(&config_for(&reg, "offline = true"))
        .unwrap();
    p.restart().unwrap();
    reg.clear_requests().unwrap();
    // Long after tag_ttl would have expired, the cached tag still answers.
    let src = format!("docker://{}/registry.test/test/img:v1", p.host());
    let pulled = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());
    let missing = http_get(
        &format!("{}/v2/registry.test/test/img/manifests/v2", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(
        reg.requests().len(),
        0,
        "offline mirror contacted upstream: {:?}",
        reg.requests()
    );
}

//! Tags are trusted for `tag_ttl`, then revalidated with HEAD; cached
//! content is served (with a Warning) when the upstream is down; an
//! `offline = true` mirror never contacts upstream.

mod support;

use support::{registry_with_image, upstream};

use std::time::{Duration, Instant};

use support::images::{push_image, skopeo_copy_to_dir};
use support::portcullis::Portcullis;
use support::registry::Registry;
use support::{http_get, http_request};

const TTL: Duration = Duration::from_secs(2);

fn config_for(reg: &Registry, extra: &str) -> String {
    format!(
        "{extra}\n[cache]\ntag_ttl = \"{}s\"\n{}",
        TTL.as_secs(),
        upstream("registry.test", &reg.url())
    )
}

fn digest_of_tag(p: &Portcullis, repo_tag: &str) -> (u16, Option<String>, Option<String>) {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let r = http_request(
        "HEAD",
        &format!("{}/v2/registry.test/{repo}/manifests/{tag}", p.url()),
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
    let p = Portcullis::start(&config_for(&reg, "")).unwrap();
    let fetched = Instant::now();
    assert_eq!(
        digest_of_tag(&p, "test/img:latest").1.as_deref(),
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
    let within_ttl = digest_of_tag(&p, "test/img:latest").1;
    if fetched.elapsed() < TTL {
        assert_eq!(
            within_ttl.as_deref(),
            Some(v1.top_digest()),
            "a fresh tag must be answered from cache"
        );
        assert_eq!(reg.requests().len(), 0, "a fresh tag must not go upstream");
    }

    // Let the TTL run out: this is the behaviour under test, not a wait for a background task.
    std::thread::sleep(TTL.saturating_sub(fetched.elapsed()) + Duration::from_millis(100));
    let after = digest_of_tag(&p, "test/img:latest");
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
    let p = Portcullis::start(&config_for(&reg, "")).unwrap();
    let src = format!("docker://{}/registry.test/test/img:v1", p.host());
    skopeo_copy_to_dir(&src, &[]).unwrap();
    let fetched = Instant::now();

    reg.stop().unwrap();
    std::thread::sleep(TTL.saturating_sub(fetched.elapsed()) + Duration::from_millis(100));
    let (status, digest, warning) = digest_of_tag(&p, "test/img:v1");
    assert_eq!(status, 200);
    assert_eq!(digest.as_deref(), Some(img.top_digest()));
    assert!(
        warning.is_some_and(|w| w.starts_with("110 ")),
        "stale answers carry a Warning"
    );
    let again = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(again.manifest_digest, img.top_digest());
    // Stale serving is logged.
    p.wait_for_log(|l| l.contains("upstream unavailable"))
        .unwrap();
    // What was never cached cannot be served: a clear error, quickly.
    let r = http_get(
        &format!("{}/v2/registry.test/test/other/manifests/v1", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("cannot reach upstream"));

    // While the upstream is known to be down, stale answers do not wait out
    // retries: portcullis fails fast, and says so.
    let (status, _, warning) = digest_of_tag(&p, "test/img:v1");
    assert_eq!(status, 200);
    assert!(warning.is_some());
    p.wait_for_log(|l| {
        l.contains("serving the cached manifest") && l.contains("unreachable moments ago")
    })
    .unwrap();

    // Back up: after the fail-fast hold (5 s) one request probes, revalidation
    // resumes and the warning goes away.
    reg.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, warning) = digest_of_tag(&p, "test/img:v1");
        assert_eq!(status, 200);
        if warning.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "revalidation never resumed");
        std::thread::sleep(Duration::from_millis(100));
    }
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

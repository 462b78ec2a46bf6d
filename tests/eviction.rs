//! `cache.max_size`: least-recently-used objects are evicted in the
//! background, and an evicted blob is fetched again when asked for.

mod support;

use support::{registry_with_image, upstream};

use support::client;
use support::portcullis::Portcullis;

const MIB: usize = 1 << 20;

#[test]
fn least_recently_used_blobs_are_evicted_above_max_size() {
    let (reg, img) = registry_with_image("test/img:v1", &[MIB, MIB, MIB]);
    let layers: Vec<_> = img.manifest().layers.clone();
    let config = format!(
        "[cache]\nmax_size = \"2.5MiB\"\n{}",
        upstream("registry.test", &reg.url())
    );
    let p = Portcullis::start(&config).unwrap();
    let get = |digest: &str| {
        let r = client::get(
            &format!("{}/v2/registry.test/test/img/blobs/{digest}", p.url()),
            &[],
        )
        .unwrap();
        assert!(r.complete);
        assert_eq!(r.digest, digest);
        // Indexed (and its access time set) before the next request.
        p.wait_fills_settled().unwrap();
    };
    get(&layers[0].digest);
    get(&layers[1].digest);
    // Touch the first again: now the second is the least recently used.
    get(&layers[0].digest);
    get(&layers[2].digest);

    p.wait_for_metric("portcullis_cache_evictions_total", |v| v >= 1.0)
        .unwrap();
    assert!(
        !p.has_object(&layers[1].digest),
        "the least recently used blob stayed"
    );
    assert!(
        p.has_object(&layers[0].digest) && p.has_object(&layers[2].digest),
        "a recently used blob was evicted"
    );
    let size = p.metric("portcullis_cache_size_bytes").unwrap();
    assert!(size <= 2.5 * MIB as f64, "cache holds {size} bytes");

    // The evicted blob is fetched again, once.
    reg.clear_requests().unwrap();
    get(&layers[1].digest);
    assert_eq!(reg.count("GET", &layers[1].digest), 1);
}

//! One upstream fetch per digest: concurrent cold requests share one
//! download and stream it as it lands, Range requests included.

mod support;

use support::{registry_with_image, upstream};

use std::sync::{Arc, Barrier};

use support::client;
use support::portcullis::Portcullis;
use support::sha256_digest;

const MIB: usize = 1 << 20;

#[test]
fn sixteen_concurrent_gets_of_a_cold_blob_cost_one_upstream_get() {
    let (reg, img) = registry_with_image("test/big:v1", &[64 * MIB]);
    let layer = img.manifest().layers[0].clone();
    let p = Portcullis::start(&upstream("registry.test", &reg.url())).unwrap();
    reg.clear_requests().unwrap();

    let url = format!(
        "{}/v2/registry.test/test/big/blobs/{}",
        p.url(),
        layer.digest
    );
    let start = Arc::new(Barrier::new(16));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (url, start) = (url.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                client::get(&url, &[]).unwrap()
            })
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.complete, "a client's transfer did not complete");
        assert_eq!(r.bytes, layer.size);
        assert_eq!(r.digest, layer.digest, "a client got the wrong bytes");
    }
    assert_eq!(
        reg.count("GET", &format!("/blobs/{}", layer.digest)),
        1,
        "{:?}",
        reg.requests()
    );
    let misses = p
        .metric("portcullis_cache_requests_total{result=\"miss\"}")
        .unwrap();
    let followers = p
        .metric("portcullis_cache_requests_total{result=\"coalesced\"}")
        .unwrap();
    let hits = p
        .metric("portcullis_cache_requests_total{result=\"hit\"}")
        .unwrap();
    assert_eq!(misses, 1.0);
    assert_eq!(misses + followers + hits, 16.0);
}

#[test]
fn range_request_on_a_cold_blob() {
    let (reg, img) = registry_with_image("test/img:v1", &[4 * MIB]);
    let layer = img.manifest().layers[0].clone();
    let bytes = img.blob_bytes(&layer.digest).unwrap();
    let p = Portcullis::start(&upstream("registry.test", &reg.url())).unwrap();
    reg.clear_requests().unwrap();
    let url = format!(
        "{}/v2/registry.test/test/img/blobs/{}",
        p.url(),
        layer.digest
    );

    let r = client::get(&url, &[("Range", "bytes=1000-1999")]).unwrap();
    assert_eq!(r.status, 206);
    assert!(r.complete);
    assert_eq!(r.digest, sha256_digest(&bytes[1000..2000]));
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 1000-1999/{}", bytes.len()).as_str())
    );

    // The whole blob was filled: further ranges and full reads are local.
    let tail = client::get(&url, &[("Range", "bytes=-100")]).unwrap();
    assert_eq!(tail.digest, sha256_digest(&bytes[bytes.len() - 100..]));
    let full = client::get(&url, &[]).unwrap();
    assert_eq!(full.digest, layer.digest);
    assert_eq!(reg.count("GET", "/blobs/"), 1);

    let beyond = client::get(&url, &[("Range", &format!("bytes={}-", bytes.len()))]).unwrap();
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("Content-Range"),
        Some(format!("bytes */{}", bytes.len()).as_str())
    );
}

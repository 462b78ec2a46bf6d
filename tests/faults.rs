//! Faults a real registry won't produce, from a fake upstream: wrong bytes,
//! cut bodies, rate limiting; and portcullis itself stopped mid-fill, by
//! SIGKILL or by a graceful SIGTERM.

mod support;

use support::upstream;

use support::client;
use support::fake_upstream::{FakeUpstream, Fault};
use support::portcullis::Portcullis;
use support::{http_get, sha256_digest};

const MIB: usize = 1 << 20;

fn random(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut v = vec![0; n];
    std::io::Read::read_exact(&mut f, &mut v).unwrap();
    v
}

fn config(fake: &FakeUpstream) -> String {
    format!(
        "{}read_timeout = \"5s\"\n",
        upstream("fake.test", &fake.url())
    )
}

/// The client did not get the blob: an error status (the fill failed before
/// the response began) or a transfer cut before its end (it failed after).
fn refused(r: &client::Received) -> bool {
    r.status >= 500 || (r.status == 200 && !r.complete)
}

fn blob_url(p: &Portcullis, digest: &str) -> String {
    format!("{}/v2/fake.test/test/img/blobs/{digest}", p.url())
}

#[test]
fn wrong_bytes_never_complete_at_the_client_and_are_never_cached() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(2 * MIB);
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data.clone(), Fault::WrongBytes);
    let p = Portcullis::start(&config(&fake)).unwrap();

    for attempt in 1..=2 {
        let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
        // The response began while bytes were still arriving; the corrupt
        // final byte is exactly what the client never receives.
        assert_eq!(r.status, 200, "attempt {attempt}");
        assert!(
            !r.complete,
            "attempt {attempt}: a transfer of wrong bytes completed"
        );
        assert!(r.bytes < data.len() as u64);
        assert!(!p.has_object(&digest), "wrong bytes were cached");
    }
    assert_eq!(
        fake.count("GET", &digest),
        2,
        "a failed fill must not be cached: each request refetches"
    );

    // Once the upstream serves the right bytes, the same digest fills cleanly.
    fake.set_fault(&digest, Fault::None);
    let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(r.digest, digest);
    p.wait_fills_settled().unwrap();
    assert!(p.has_object(&digest));
}

#[test]
fn a_cut_upstream_body_fails_the_transfer_and_caches_nothing() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(MIB);
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data, Fault::Short(300 * 1024));
    let p = Portcullis::start(&config(&fake)).unwrap();
    let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(refused(&r), "a cut transfer completed: {r:?}");
    assert!(!p.has_object(&digest));
    p.wait_for_log(|l| l.contains("blob fill failed")).unwrap();
}

/// An upstream that drips (a few bytes every 50 ms) never trips the read
/// timeout, but falls below the minimum rate: the fill fails for its leader
/// and its follower alike, and nothing is cached. A manifest drip fails too.
#[test]
fn a_dripping_upstream_fails_the_transfer_below_the_minimum_rate() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(64 * 1024);
    let digest = sha256_digest(&data);
    let drip = Fault::Slow {
        chunk: 16,
        delay: std::time::Duration::from_millis(50),
    };
    fake.set_blob(&digest, data, drip.clone());
    let p = Portcullis::start(&format!(
        "{}read_timeout = \"30s\"\nmin_rate = \"16KiB\"\nmin_rate_window = \"1s\"\n",
        upstream("fake.test", &fake.url())
    ))
    .unwrap();
    let url = blob_url(&p, &digest);
    let follower = std::thread::spawn({
        let url = url.clone();
        move || client::get(&url, &[]).unwrap()
    });
    let leader = client::get(&url, &[]).unwrap();
    let follower = follower.join().unwrap();
    for (who, r) in [("leader", &leader), ("follower", &follower)] {
        assert!(refused(r), "{who} completed a dripping transfer: {r:?}");
    }
    assert_eq!(fake.count("GET", &digest), 1, "one fill for both");
    p.wait_for_log(|l| l.contains("bytes per second")).unwrap();
    p.wait_fills_settled().unwrap();
    assert!(!p.has_object(&digest));

    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"pad":"................................................................................................"}}"#;
    fake.set_manifest(
        "test/img",
        "v1",
        "application/vnd.oci.image.index.v1+json",
        manifest.to_vec(),
    );
    fake.set_manifest_fault(Fault::Slow {
        chunk: 4,
        delay: std::time::Duration::from_millis(100),
    });
    let r = http_get(
        &format!("{}/v2/fake.test/test/img/manifests/v1", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("bytes per second"));
}

/// A fill is keyed by digest but downloads through the repository of the
/// request that started it. When that repository does not have the blob,
/// a follower that asked through one that does retries through its own.
#[test]
fn a_follower_from_another_repository_outlives_the_leaders_refusal() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(256 * 1024);
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data.clone(), Fault::None);
    fake.set_missing_in(&digest, "test/gone");
    fake.set_delay("test/gone", std::time::Duration::from_millis(500));
    let p = Portcullis::start(&config(&fake)).unwrap();
    let leader = std::thread::spawn({
        let url = format!("{}/v2/fake.test/test/gone/blobs/{digest}", p.url());
        move || client::get(&url, &[]).unwrap()
    });
    // The follower joins while the leader's request is still out.
    p.wait_for_metric("portcullis_fills_in_flight", |v| v >= 1.0)
        .unwrap();
    let follower = client::get(&blob_url(&p, &digest), &[]).unwrap();
    let leader = leader.join().unwrap();
    assert_eq!(leader.status, 404);
    assert_eq!(follower.status, 200);
    assert!(follower.complete);
    assert_eq!(follower.digest, digest);
    assert_eq!(fake.count("GET", &format!("test/gone/blobs/{digest}")), 1);
    assert_eq!(fake.count("GET", &format!("test/img/blobs/{digest}")), 1);
}

/// Blob downloads are capped (`cache.max_fills`); the next ones wait in a
/// bounded queue (`cache.fill_queue`), and beyond it are answered 503 with
/// Retry-After instead of piling up.
#[test]
fn fills_beyond_the_cap_wait_in_a_bounded_queue_then_get_503() {
    let fake = FakeUpstream::start().unwrap();
    let blobs: Vec<(Vec<u8>, String)> = (0..3)
        .map(|_| {
            let d = random(64 * 1024);
            let digest = sha256_digest(&d);
            (d, digest)
        })
        .collect();
    // The first holds the only slot until the read timeout ends it.
    fake.set_blob(&blobs[0].1, blobs[0].0.clone(), Fault::Stall(1024));
    fake.set_blob(&blobs[1].1, blobs[1].0.clone(), Fault::None);
    fake.set_blob(&blobs[2].1, blobs[2].0.clone(), Fault::None);
    let p = Portcullis::start(&format!(
        "[cache]\nmax_fills = 1\nfill_queue = 1\n{}read_timeout = \"2s\"\n",
        upstream("fake.test", &fake.url())
    ))
    .unwrap();
    let get = |i: usize| {
        let url = blob_url(&p, &blobs[i].1);
        std::thread::spawn(move || client::get(&url, &[]).unwrap())
    };
    let stalled = get(0);
    p.wait_for_metric("portcullis_fills_in_flight", |v| v >= 1.0)
        .unwrap();
    let queued = get(1);
    p.wait_for_metric("portcullis_fills_waiting", |v| v >= 1.0)
        .unwrap();
    let overflow = client::get(&blob_url(&p, &blobs[2].1), &[]).unwrap();
    assert_eq!(overflow.status, 503);
    assert_eq!(overflow.header("retry-after"), Some("5"));
    assert_eq!(
        fake.count("GET", &blobs[2].1),
        0,
        "refused before going upstream"
    );
    assert_eq!(p.metric("portcullis_fills_refused_total").unwrap(), 1.0);
    assert!(refused(&stalled.join().unwrap()));
    let queued = queued.join().unwrap();
    assert!(queued.complete, "the queued fill ran once a slot was free");
    assert_eq!(queued.digest, blobs[1].1);
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let fake = FakeUpstream::start().unwrap();
    let claimed = sha256_digest(b"{\"schemaVersion\":2}");
    let served = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
    fake.set_manifest(
        "test/img",
        &claimed,
        "application/vnd.oci.image.manifest.v1+json",
        served.to_vec(),
    );
    let p = Portcullis::start(&config(&fake)).unwrap();
    let r = http_get(
        &format!("{}/v2/fake.test/test/img/manifests/{claimed}", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("DIGEST_INVALID"));
    assert!(!p.has_object(&claimed) && !p.has_object(&sha256_digest(served)));
}

#[test]
fn rate_limits_are_honoured_then_passed_on() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(64 * 1024);
    let digest = sha256_digest(&data);
    fake.set_blob(
        &digest,
        data,
        Fault::TooManyRequests {
            times: 1,
            retry_after: 1,
        },
    );
    let p = Portcullis::start(&config(&fake)).unwrap();
    // A short Retry-After is waited out, then the fetch succeeds.
    let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(fake.count("GET", &digest), 2);

    // A long one is passed on to the client, with the upstream's Retry-After.
    let other = random(1024);
    let d2 = sha256_digest(&other);
    fake.set_blob(
        &d2,
        other,
        Fault::TooManyRequests {
            times: 1,
            retry_after: 120,
        },
    );
    let r = http_get(&blob_url(&p, &d2), &[]).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("120"));
    assert!(String::from_utf8_lossy(&r.body).contains("TOOMANYREQUESTS"));
}

#[test]
fn a_fill_killed_by_sigkill_leaves_nothing_visible_and_the_next_start_fetches_cleanly() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(4 * MIB);
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data.clone(), Fault::Stall(MIB));
    let mut p = Portcullis::start(&config(&fake)).unwrap();

    // The client is receiving bytes: the fill is mid-way.
    let mut s = client::open("GET", &blob_url(&p, &digest), &[]).unwrap();
    assert_eq!(s.status, 200);
    assert!(s.read_at_least(512 * 1024).unwrap() >= 512 * 1024);
    assert!(
        !p.partial_files().is_empty(),
        "the fill writes to a temp file"
    );
    assert!(!p.has_object(&digest));

    p.kill9().unwrap();
    assert!(
        !s.finish().complete,
        "a killed fill cannot complete at the client"
    );
    assert!(!p.has_object(&digest), "a partial object became visible");

    fake.set_fault(&digest, Fault::None);
    p.restart().unwrap();
    assert!(
        p.partial_files().is_empty(),
        "start-up must discard partial writes"
    );
    assert!(!p.has_object(&digest));
    let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(r.digest, digest);
    p.wait_fills_settled().unwrap();
    assert!(p.has_object(&digest));
    assert_eq!(fake.count("GET", &digest), 2);
}

#[test]
fn a_damaged_cached_file_is_fetched_again_not_served_short() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(MIB);
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data, Fault::None);
    let p = Portcullis::start(&config(&fake)).unwrap();
    assert!(client::get(&blob_url(&p, &digest), &[]).unwrap().complete);
    p.wait_fills_settled().unwrap();

    // Someone (or a failing disk) truncates the cached file.
    let (_, hex) = digest.split_once(':').unwrap();
    let path = p
        .data_dir()
        .join("objects/sha256")
        .join(&hex[..2])
        .join(hex);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1000)
        .unwrap();

    let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(r.digest, digest);
    assert_eq!(fake.count("GET", &digest), 2);
    p.wait_fills_settled().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MIB as u64);
}

#[test]
fn sigterm_stops_accepting_lets_an_in_flight_fill_finish_and_leaves_it_cached() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(4 * MIB);
    let digest = sha256_digest(&data);
    // About a second of body: the fill is in flight when SIGTERM arrives.
    let slow = Fault::Slow {
        chunk: 256 * 1024,
        delay: std::time::Duration::from_millis(60),
    };
    fake.set_blob(&digest, data, slow);
    let mut p = Portcullis::start(&config(&fake)).unwrap();
    let url = blob_url(&p, &digest);

    let mut s = client::open("GET", &url, &[]).unwrap();
    assert_eq!(s.status, 200);
    s.read_at_least(256 * 1024).unwrap();
    p.terminate().unwrap();
    p.wait_for_log(|l| l.contains("stopped accepting")).unwrap();
    let refused_conn = http_get(&format!("{}/v2/", p.url()), &[]);
    assert!(
        refused_conn.is_err(),
        "no new connections once shutdown began: {refused_conn:?}"
    );

    let r = s.finish();
    assert!(r.complete, "the in-flight download finishes");
    assert_eq!(r.digest, digest);
    assert!(p.wait_exit().unwrap().success(), "a clean exit");
    assert!(p.logs().iter().any(|l| l.contains("\"stopped\"")));

    // The store is consistent: the object is there, nothing half-written.
    p.restart().unwrap();
    assert!(p.partial_files().is_empty());
    assert!(p.has_object(&digest));
    let again = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(again.complete);
    assert_eq!(again.header("Content-Length"), Some("4194304"));
    assert_eq!(fake.count("GET", &digest), 1, "served from the cache");
}

#[test]
fn shutdown_grace_bounds_the_drain_and_a_cut_fill_leaves_nothing_behind() {
    let fake = FakeUpstream::start().unwrap();
    let data = random(4 * MIB);
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data, Fault::Stall(MIB));
    let mut p = Portcullis::start(&format!("shutdown_grace = \"1s\"\n{}", config(&fake))).unwrap();

    let mut s = client::open("GET", &blob_url(&p, &digest), &[]).unwrap();
    s.read_at_least(512 * 1024).unwrap();
    p.terminate().unwrap();
    // The upstream never finishes: the grace period ends the wait.
    assert!(p.wait_exit().unwrap().success());
    assert!(
        p.logs()
            .iter()
            .any(|l| l.contains("shutdown_grace is over"))
    );
    assert!(
        !s.finish().complete,
        "the stalled download is cut, not completed"
    );

    fake.set_fault(&digest, Fault::None);
    p.restart().unwrap();
    assert!(
        p.partial_files().is_empty(),
        "start-up discards the partial fill"
    );
    assert!(!p.has_object(&digest));
    let r = client::get(&blob_url(&p, &digest), &[]).unwrap();
    assert!(r.complete);
    assert_eq!(r.digest, digest);
}

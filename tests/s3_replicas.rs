//! Replicas sharing one bucket (issue 14), against a real Garage node and
//! the real `docker-registry` upstream: what one replica stored costs the
//! others no upstream GET, a herd over two replicas costs at most two, a
//! replica killed mid-fill leaves nothing under the object's key, a lying
//! upstream's bytes never become an object, the bucket going away leaves
//! the local copies served and the rest a clear 503, and `gc` removes only
//! what no replica used for long enough.

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use portcullis::digest::Digest;
use portcullis::metrics::Metrics;
use portcullis::store::s3::client::{S3, S3Settings};
use portcullis::store::s3::objects;
use support::client;
use support::fake_upstream::{FakeUpstream, Fault};
use support::garage::Garage;
use support::portcullis::{Portcullis, cli};
use support::{registry_with_image, sha256_digest, upstream};

const MIB: usize = 1 << 20;
const PREFIX: &str = "cache/";

/// `[store]` for `g`'s bucket, with `extra` keys; the secret is the file
/// `s3-secret` beside the config.
fn store(g: &Garage, extra: &str) -> String {
    format!(
        "[store]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"garage\"\nprefix = \"{PREFIX}\"\naccess_key_id = \"{}\"\nsecret_access_key_file = \"s3-secret\"\ntimeout = \"5s\"\n{extra}\n",
        g.endpoint, g.bucket, g.key_id
    )
}

/// A replica of `upstream_toml` on `g`'s bucket.
fn replica(g: &Garage, upstream_toml: &str, extra_store: &str) -> Portcullis {
    Portcullis::start_with_files(
        &format!("{upstream_toml}\n{}", store(g, extra_store)),
        &[("s3-secret", &g.secret)],
    )
    .unwrap()
}

/// A client of `g`'s bucket, to look inside it.
fn bucket(g: &Garage) -> S3 {
    S3::new(
        &S3Settings {
            endpoint: g.endpoint.parse().unwrap(),
            bucket: g.bucket.clone(),
            region: "garage".into(),
            path_style: true,
            access_key_id: g.key_id.clone(),
            secret_access_key: g.secret.clone(),
            ca_certs: Vec::new(),
            timeout: Duration::from_secs(10),
        },
        Metrics::new(),
    )
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The size of `digest`'s object in the bucket, if there is one.
fn in_bucket(s3: &S3, digest: &str) -> Option<u64> {
    let d: Digest = digest.parse().unwrap();
    runtime()
        .block_on(s3.head(&objects::key(PREFIX, &d)))
        .unwrap()
}

fn blob_url(p: &Portcullis, repo: &str, digest: &str) -> String {
    format!("{}/v2/registry.test/{repo}/blobs/{digest}", p.url())
}

#[test]
fn a_pull_through_one_replica_costs_the_next_no_upstream_blob_get() {
    let g = Garage::start().unwrap();
    let (reg, img) = registry_with_image("test/app:v1", &[3 * MIB, 12 * MIB]);
    let up = upstream("registry.test", &reg.url());
    let a = replica(&g, &up, "");
    let b = replica(&g, &up, "local_cache = \"1GiB\"");
    let s3 = bucket(&g);
    let image = |p: &Portcullis| format!("docker://{}/registry.test/test/app:v1", p.host());

    let via_a = support::images::skopeo_copy_to_dir(&image(&a), &[]).unwrap();
    a.wait_fills_settled().unwrap();
    for layer in &img.manifest().layers {
        assert_eq!(
            in_bucket(&s3, &layer.digest),
            Some(layer.size),
            "{}",
            layer.digest
        );
    }
    reg.clear_requests().unwrap();

    let via_b = support::images::skopeo_copy_to_dir(&image(&b), &[]).unwrap();
    assert_eq!(via_a.manifest_digest, via_b.manifest_digest);
    assert_eq!(via_a.blobs.len(), via_b.blobs.len());
    for ((da, _, na), (db, pb, nb)) in via_a.blobs.iter().zip(&via_b.blobs) {
        assert_eq!((da, na), (db, nb));
        assert_eq!(&sha256_digest(&std::fs::read(pb).unwrap()), db);
    }
    let blob_gets = reg
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 0, "{:?}", reg.requests());
    // B read them from the bucket and kept local copies.
    assert!(
        b.metric("portcullis_store_reads_total{tier=\"bucket\"}")
            .unwrap()
            >= 2.0
    );
    b.wait_fills_settled().unwrap();
    let layer = &img.manifest().layers[1];
    let again = client::get(&blob_url(&b, "test/app", &layer.digest), &[]).unwrap();
    assert_eq!(again.digest, layer.digest);
    assert!(
        b.metric("portcullis_store_reads_total{tier=\"local\"}")
            .unwrap()
            >= 1.0
    );
    assert!(
        b.metric("portcullis_s3_requests_total{op=\"GET\"}")
            .unwrap()
            >= 2.0
    );
}

#[test]
fn sixteen_cold_gets_over_two_replicas_cost_at_most_two_upstream_gets() {
    let g = Garage::start().unwrap();
    let (reg, img) = registry_with_image("test/big:v1", &[40 * MIB]);
    let layer = img.manifest().layers[0].clone();
    let up = upstream("registry.test", &reg.url());
    let a = replica(&g, &up, "");
    let b = replica(&g, &up, "");
    reg.clear_requests().unwrap();
    let urls = [
        blob_url(&a, "test/big", &layer.digest),
        blob_url(&b, "test/big", &layer.digest),
    ];
    let start = Arc::new(Barrier::new(16));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (url, start) = (urls[i % 2].clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                client::get(&url, &[]).unwrap()
            })
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.complete);
        assert_eq!(r.digest, layer.digest, "a client got the wrong bytes");
    }
    let gets = reg.count("GET", &format!("/blobs/{}", layer.digest));
    assert!(
        (1..=2).contains(&gets),
        "{gets} upstream GETs: {:?}",
        reg.requests()
    );
    a.wait_fills_settled().unwrap();
    b.wait_fills_settled().unwrap();
    assert_eq!(in_bucket(&bucket(&g), &layer.digest), Some(layer.size));
}

#[test]
fn a_replica_killed_mid_fill_leaves_no_object_and_the_next_fetches_cleanly() {
    let g = Garage::start().unwrap();
    let fake = FakeUpstream::start().unwrap();
    let data: Vec<u8> = (0..256 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha256_digest(&data);
    // Slow enough that the fill is still running when A dies.
    fake.set_blob(
        &digest,
        data,
        Fault::Slow {
            chunk: 2 * MIB,
            delay: Duration::from_millis(40),
        },
    );
    let up = upstream("registry.test", &fake.url());
    let mut a = replica(&g, &up, "");
    let s3 = bucket(&g);
    let mut first = client::open("GET", &blob_url(&a, "test/huge", &digest), &[]).unwrap();
    // Parts are going up: the upload is under way.
    a.wait_for_metric("portcullis_s3_requests_total{op=\"UploadPart\"}", |n| {
        n >= 2.0
    })
    .unwrap();
    first.read_at_least(16 * MIB as u64).unwrap();
    a.kill9().unwrap();
    assert_eq!(
        in_bucket(&s3, &digest),
        None,
        "a partial object under its key"
    );

    fake.set_fault(&digest, Fault::None);
    let b = replica(&g, &up, "");
    let r = client::get(&blob_url(&b, "test/huge", &digest), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.digest, digest);
    b.wait_fills_settled().unwrap();
    assert_eq!(in_bucket(&s3, &digest), Some(256 * MIB as u64));
}

#[test]
fn a_lying_upstream_never_becomes_an_object_in_the_bucket() {
    let g = Garage::start().unwrap();
    let fake = FakeUpstream::start().unwrap();
    // More than a part: the first half goes up before the lie shows.
    let data: Vec<u8> = (0..20 * MIB).map(|i| (i % 253) as u8).collect();
    let digest = sha256_digest(&data);
    fake.set_blob(&digest, data.clone(), Fault::WrongBytes);
    let up = upstream("registry.test", &fake.url());
    let a = replica(&g, &up, "local_cache = \"1GiB\"");
    let r = client::get(&blob_url(&a, "test/lie", &digest), &[]).unwrap();
    assert!(
        !r.complete,
        "a client completed a response with wrong bytes"
    );
    a.wait_fills_settled().unwrap();
    assert_eq!(in_bucket(&bucket(&g), &digest), None);
    assert!(
        a.metric("portcullis_s3_requests_total{op=\"CreateMultipartUpload\"}")
            .unwrap()
            >= 1.0,
        "the upload had begun before the lie showed"
    );
    // A second replica asks the bucket, finds nothing, and gets the lie
    // refused too; with honest bytes the object appears.
    let b = replica(&g, &up, "");
    let r = client::get(&blob_url(&b, "test/lie", &digest), &[]).unwrap();
    assert!(!r.complete);
    fake.set_fault(&digest, Fault::None);
    let r = client::get(&blob_url(&b, "test/lie", &digest), &[]).unwrap();
    assert_eq!(r.digest, digest);
    b.wait_fills_settled().unwrap();
    assert_eq!(in_bucket(&bucket(&g), &digest), Some(data.len() as u64));
}

#[test]
fn with_the_bucket_down_local_copies_are_served_and_the_rest_is_a_clear_503() {
    let mut g = Garage::start().unwrap();
    let (reg, img) = registry_with_image("test/app:v1", &[2 * MIB, 3 * MIB]);
    let [kept, other] = [&img.manifest().layers[0], &img.manifest().layers[1]];
    let up = upstream("registry.test", &reg.url());
    let a = replica(&g, &up, "local_cache = \"1GiB\"");
    let r = client::get(&blob_url(&a, "test/app", &kept.digest), &[]).unwrap();
    assert_eq!(r.digest, kept.digest);
    a.wait_fills_settled().unwrap();

    g.stop();
    reg.clear_requests().unwrap();
    let r = client::get(&blob_url(&a, "test/app", &kept.digest), &[]).unwrap();
    assert_eq!((r.status, r.digest.as_str()), (200, kept.digest.as_str()));
    let refused = support::http_get(&blob_url(&a, "test/app", &other.digest), &[]).unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("5"));
    let body = String::from_utf8_lossy(&refused.body).to_lowercase();
    assert!(body.contains("shared object store"), "{body}");
    assert!(!body.contains(&g.secret), "{body}");
    assert_eq!(
        reg.count("GET", "/blobs/"),
        0,
        "went upstream with nowhere to store"
    );
    assert!(a.metric("portcullis_s3_errors_total{op=\"HEAD\"}").unwrap() >= 1.0);
    assert!(a.logs().iter().all(|l| !l.contains(&g.secret)));

    g.start_again().unwrap();
    let r = client::get(&blob_url(&a, "test/app", &other.digest), &[]).unwrap();
    assert_eq!((r.status, r.digest.as_str()), (200, other.digest.as_str()));
}

#[test]
fn gc_removes_only_what_no_replica_used_lately() {
    let g = Garage::start().unwrap();
    let (reg, img) = registry_with_image("test/app:v1", &[MIB, MIB + 1, MIB + 2]);
    let layers = &img.manifest().layers;
    let (old, used, fresh) = (&layers[0], &layers[1], &layers[2]);
    let up = upstream("registry.test", &reg.url());
    let a = replica(&g, &up, "access_interval = \"1s\"");
    let b = replica(&g, &up, "access_interval = \"1s\"");
    for l in [old, used] {
        assert_eq!(
            client::get(&blob_url(&a, "test/app", &l.digest), &[])
                .unwrap()
                .digest,
            l.digest
        );
    }
    let manifest_url = format!(
        "{}/v2/registry.test/test/app/manifests/{}",
        a.url(),
        img.manifest().digest
    );
    let accept = [("Accept", img.manifest().media_type.as_str())];
    assert_eq!(
        support::http_get(&manifest_url, &accept).unwrap().status,
        200
    );
    a.wait_fills_settled().unwrap();
    let s3 = bucket(&g);
    runtime()
        .block_on(s3.put(
            &format!("{PREFIX}notes/readme"),
            bytes::Bytes::from_static(b"ours"),
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    // B uses one of the old objects (its access marker counts), and a new
    // one is stored.
    assert_eq!(
        client::get(&blob_url(&b, "test/app", &used.digest), &[])
            .unwrap()
            .digest,
        used.digest
    );
    assert_eq!(
        client::get(&blob_url(&a, "test/app", &fresh.digest), &[])
            .unwrap()
            .digest,
        fresh.digest
    );
    // The manifest, served from A's memory, is in use too.
    assert_eq!(
        support::http_get(&manifest_url, &accept).unwrap().status,
        200
    );
    a.wait_fills_settled().unwrap();
    b.wait_fills_settled().unwrap();
    for (what, digest) in [
        ("B's", &used.digest),
        ("the manifest's", &img.manifest().digest),
    ] {
        support::wait_until(&format!("{what} access marker"), || {
            let d: Digest = digest.parse().unwrap();
            runtime()
                .block_on(s3.head(&portcullis::store::s3::access::marker_key(PREFIX, &d)))
                .unwrap()
                .is_some()
        });
    }

    let config = a.config_dir().join("portcullis.toml");
    let too_soon = cli("gc", &config, &["--older-than", "1s"]);
    assert_eq!(too_soon.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&too_soon.stderr).contains("access_interval"));

    let dry = cli("gc", &config, &["--older-than", "3s", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        out.contains("4 objects") && out.contains("would delete 1 "),
        "{out}"
    );
    assert_eq!(in_bucket(&s3, &old.digest), Some(old.size));

    let done = cli("gc", &config, &["--older-than", "3s"]);
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(out.contains("deleted 1 "), "{out}");
    assert_eq!(in_bucket(&s3, &old.digest), None);
    assert_eq!(in_bucket(&s3, &used.digest), Some(used.size));
    assert_eq!(in_bucket(&s3, &fresh.digest), Some(fresh.size));
    assert!(in_bucket(&s3, &img.manifest().digest).is_some());
    assert!(
        runtime()
            .block_on(s3.head(&format!("{PREFIX}notes/readme")))
            .unwrap()
            .is_some(),
        "gc deleted a key that is not portcullis's"
    );
    // A replica that still indexes the deleted object fetches it again.
    reg.clear_requests().unwrap();
    let r = client::get(&blob_url(&a, "test/app", &old.digest), &[]).unwrap();
    assert_eq!(r.digest, old.digest);
    assert_eq!(reg.count("GET", &format!("/blobs/{}", old.digest)), 1);
}

#[test]
fn with_auth_a_shared_object_is_served_only_through_a_repository_that_holds_it() {
    let g = Garage::start().unwrap();
    let (reg, private) = registry_with_image("team/app:v1", &[2 * MIB]);
    support::images::push_image(&reg.host(), "public/app:v1", "linux", "amd64", &[MIB], None)
        .unwrap();
    let layer = private.manifest().layers[0].digest.clone();
    let up = format!(
        "{}\n[auth]\nanonymous = [\"registry.test/**\"]\n",
        upstream("registry.test", &reg.url())
    );
    let a = replica(&g, &up, "");
    let b = replica(&g, &up, "");
    assert_eq!(
        client::get(&blob_url(&a, "team/app", &layer), &[])
            .unwrap()
            .digest,
        layer
    );
    a.wait_fills_settled().unwrap();
    assert!(in_bucket(&bucket(&g), &layer).is_some());

    // B has it in the bucket, but the public repository does not hold it:
    // the upstream says so, and nothing of the bucket's copy shows.
    reg.clear_requests().unwrap();
    let r = support::http_get(&blob_url(&b, "public/app", &layer), &[]).unwrap();
    assert_eq!(r.status, 404);
    let r = support::http_request("HEAD", &blob_url(&b, "public/app", &layer), &[], &[]).unwrap();
    assert_eq!(r.status, 404);
    // Through the private repository: confirmed by a HEAD, copied from the
    // bucket, no upstream GET.
    let r = client::get(&blob_url(&b, "team/app", &layer), &[]).unwrap();
    assert_eq!(r.digest, layer);
    reg.settle().unwrap();
    assert_eq!(
        reg.count("GET", &format!("/blobs/{layer}")),
        0,
        "{:?}",
        reg.requests()
    );
    assert!(reg.count("HEAD", &format!("team/app/blobs/{layer}")) >= 1);
}

#[test]
fn credentials_come_from_the_file_or_the_environment_and_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[store]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"portcullis\"\nregion = \"garage\"\n\
         [[upstream]]\nname = \"registry.test\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("check-config").arg(&config);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("store.access_key_id") && out.contains("AWS_ACCESS_KEY_ID"),
        "{out}"
    );
    let (code, out) = check(&[("AWS_ACCESS_KEY_ID", "GKfromenv")]);
    assert_eq!(code, Some(2));
    assert!(out.contains("AWS_SECRET_ACCESS_KEY"), "{out}");
    let (code, out) = check(&[
        ("AWS_ACCESS_KEY_ID", "GKfromenv"),
        ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("store s3 http://127.0.0.1:9/ bucket portcullis"),
        "{out}"
    );
    assert!(!out.contains("very-secret-value"), "{out}");
}

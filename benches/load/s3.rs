//! The shared-bucket scenarios (`PORTCULLIS_BENCH_ONLY=s3`): portcullis
//! with `[store] backend = "s3"` on a real Garage node, beside portcullis
//! on local files (the "direct" column: the anchor) and distribution's
//! proxy with its `s3` storage driver on the same node. Every round uses
//! fresh key prefixes, so cold means cold for every server.

use crate::client::{herd, herd_over};
use crate::report::Results;
use crate::support::garage::Garage;
use crate::support::images::TestImage;
use crate::support::portcullis::Portcullis;
use crate::support::registry::{Mode, Registry, S3Storage};
use crate::support::upstream;
use crate::{blob_path, mb_per_s, portcullis};

/// portcullis on `g`'s bucket under `prefix`, with `extra` `[store]` keys.
fn on_bucket(up: &Registry, g: &Garage, prefix: &str, extra: &str) -> Portcullis {
    Portcullis::start_with_files(
        &format!(
            "{}default = true\n[store]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"garage\"\nprefix = \"{prefix}\"\naccess_key_id = \"{}\"\nsecret_access_key_file = \"s3-secret\"\n{extra}\n",
            upstream("registry.bench", &up.url()),
            g.endpoint,
            g.bucket,
            g.key_id
        ),
        &[("s3-secret", &g.secret)],
    )
    .unwrap()
}

/// distribution's proxy with its storage in `g`'s bucket under `root`.
fn distribution_on_bucket(up: &Registry, g: &Garage, root: &str) -> Registry {
    Registry::start_on(
        Mode::Proxy {
            remoteurl: up.url(),
            creds: None,
        },
        Some(S3Storage {
            endpoint: g.endpoint.clone(),
            bucket: g.bucket.clone(),
            region: "garage".into(),
            access_key: g.key_id.clone(),
            secret_key: g.secret.clone(),
            root: root.into(),
        }),
    )
    .unwrap()
}

/// One round of the shared-bucket scenarios, with prefixes named by `round`.
pub fn scenarios(res: &mut Results, up: &Registry, g: &Garage, img: &TestImage, round: usize) {
    let path = blob_path(img);
    let digest = &img.manifest().layers[0].digest;
    let size = img.manifest().layers[0].size as usize;
    let local = portcullis(up);
    let a = on_bucket(up, g, &format!("r{round}/"), "");
    let d = distribution_on_bucket(up, g, &format!("/dist-r{round}"));
    let servers = [
        ("direct", local.host().to_owned()),
        ("portcullis", a.host().to_owned()),
        ("distribution", d.host()),
    ];

    // Cold: from the upstream, stored as the bytes go by.
    for (name, host) in &servers {
        let t = herd(host, &path, 1);
        res.add(
            "s3: cold blob GET, 1 client (64 MiB; direct = local files)",
            "MB/s",
            true,
            name,
            mb_per_s(size, t),
        );
    }
    a.wait_fills_settled().unwrap();
    // Warm: portcullis keeps no local copy (local_cache = 0), so every
    // read is ranged GETs of the bucket, as distribution's are.
    for (clients, row) in [
        (1, "s3: warm blob GET from the bucket, 1 client"),
        (16, "s3: warm blob GET from the bucket, 16 clients"),
    ] {
        for (name, host) in &servers {
            let t = herd(host, &path, clients);
            res.add(row, "MB/s", true, name, mb_per_s(clients * size, t));
        }
    }
    // A second replica's first GET: from the bucket, not the upstream.
    up.clear_requests().unwrap();
    let b = on_bucket(up, g, &format!("r{round}/"), "");
    let d2 = distribution_on_bucket(up, g, &format!("/dist-r{round}"));
    let fresh = portcullis(up);
    for (name, host) in [
        ("direct", fresh.host().to_owned()),
        ("portcullis", b.host().to_owned()),
        ("distribution", d2.host()),
    ] {
        let t = herd(&host, &path, 1);
        res.add(
            "s3: a new replica's first GET (direct = a new local cache)",
            "MB/s",
            true,
            name,
            mb_per_s(size, t),
        );
    }
    // With a local copy of what it served (local_cache): warm reads are
    // local again.
    let c = on_bucket(
        up,
        g,
        &format!("r{round}-copies/"),
        "local_cache = \"1GiB\"",
    );
    herd(c.host(), &path, 1);
    c.wait_fills_settled().unwrap();
    for (name, host) in [
        ("direct", local.host().to_owned()),
        ("portcullis", c.host().to_owned()),
    ] {
        let t = herd(&host, &path, 16);
        res.add(
            "s3 + local_cache: warm blob GET, 16 clients",
            "MB/s",
            true,
            name,
            mb_per_s(16 * size, t),
        );
    }
    // A herd of 32 on a cold blob, half on each of two replicas.
    let (h1, h2) = (
        on_bucket(up, g, &format!("r{round}-herd/"), ""),
        on_bucket(up, g, &format!("r{round}-herd/"), ""),
    );
    let one = portcullis(up);
    up.clear_requests().unwrap();
    let t = herd(one.host(), &path, 32);
    res.add(
        "s3: herd of 32 on a cold blob over 2 replicas: all done (direct = 1 local)",
        "s",
        false,
        "direct",
        t.as_secs_f64(),
    );
    up.clear_requests().unwrap();
    let t = herd_over(&[h1.host().to_owned(), h2.host().to_owned()], &path, 32);
    res.add(
        "s3: herd of 32 on a cold blob over 2 replicas: all done (direct = 1 local)",
        "s",
        false,
        "portcullis",
        t.as_secs_f64(),
    );
    res.add(
        "  s3: upstream GETs for that blob (2 replicas)",
        "GETs",
        false,
        "portcullis",
        up.count("GET", &format!("/blobs/{digest}")) as f64,
    );
}

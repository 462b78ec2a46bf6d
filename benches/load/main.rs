//! The load benchmark: portcullis beside the systems a user would pick
//! instead, on this machine, in one run, driven by the same client.
//!
//! `cargo bench --bench load` starts on 127.0.0.1 one real upstream (Debian's
//! `docker-registry` with test images built by umoci and pushed by skopeo)
//! and, in front of it or beside it:
//! - **direct**: the upstream itself, the floor for a cold pull;
//! - **nginx**: the same files served with sendfile, the near-physical
//!   limit for a warm hit;
//! - **distribution**: the CNCF registry in proxy mode (`proxy.remoteurl`),
//!   the common self-hosted pull-through cache;
//! - **portcullis**: the release build, default settings (access log on).
//!
//! Variants of portcullis run beside the plain one in the same round (in the
//! "direct" column: the anchor): `cache.verify_reads` for warm blobs, `[auth]`
//! with a bearer token on every request for warm manifests, and another
//! build (`PORTCULLIS_BENCH_BASELINE`).
//!
//! Every scenario runs `PORTCULLIS_BENCH_ROUNDS` times (default 5), the
//! servers taking turns within a round; the table shows medians and
//! portcullis's ratio to each anchor. Cold scenarios start each cache
//! afresh (new process, empty storage). `PORTCULLIS_BENCH_ONLY` picks
//! scenario groups (comma-separated: warm, manifests, cold, herd, rss,
//! skopeo, s3). The `s3` group ([`s3`]) runs portcullis on a real Garage
//! node (`cargo install garage --locked`) beside portcullis on local files
//! and distribution's proxy with its S3 driver. `PORTCULLIS_BENCH_BASELINE=/path/to/portcullis` adds another
//! build of portcullis to the warm scenarios, beside this one, to measure a
//! change. Nothing here asserts a time: the numbers go into
//! docs/benchmarks.md.
//!
//! Needs `docker-registry skopeo umoci nginx-light` (apt-get) and `garage`.

#[path = "../../tests/support/mod.rs"]
mod support;

mod client;
mod report;
mod s3;
mod servers;

use client::{get_blob, hammer, hammer_with, herd};
use report::Results;
use servers::{Nginx, cpu_seconds, peak_rss_mib};
use support::images::{TestImage, push_image, skopeo_copy_to_dir};
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::upstream;

const MIB: usize = 1 << 20;
const WARM_BLOB: usize = 256 * MIB;
const COLD_BLOB: usize = 64 * MIB;
const HERD: usize = 32;
const CONCURRENT: usize = 16;
const CONNS: usize = 64;
const LOAD_SECS: f64 = 4.0;

fn portcullis(up: &Registry) -> Portcullis {
    portcullis_with(up, "")
}

/// portcullis with `cache` (a `[cache]` table's keys) set.
fn portcullis_with(up: &Registry, cache: &str) -> Portcullis {
    Portcullis::start(&format!(
        "[cache]\n{cache}\n{}default = true\n",
        upstream("registry.bench", &up.url())
    ))
    .unwrap()
}

fn proxy(up: &Registry) -> Registry {
    Registry::start(Mode::Proxy {
        remoteurl: up.url(),
        creds: None,
    })
    .unwrap()
}

fn mb_per_s(bytes: usize, d: std::time::Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn blob_path(img: &TestImage) -> String {
    format!("/v2/{}/blobs/{}", img.repo, img.manifest().layers[0].digest)
}

/// The servers of the warm scenarios, all holding the warm image.
struct Warm {
    hosts: Vec<(&'static str, String, Vec<u32>)>,
    /// portcullis with `cache.verify_reads`: what re-hashing costs.
    verifying: (String, Vec<u32>),
    /// Another build (`PORTCULLIS_BENCH_BASELINE`), if given.
    baseline: Option<(String, Vec<u32>)>,
    /// portcullis with `[auth]`, and the `Authorization` line (a bearer
    /// token) its clients send: what client authentication costs.
    auth: (String, Vec<u32>, String),
    _keep: (
        Nginx,
        Portcullis,
        Registry,
        Portcullis,
        Option<Portcullis>,
        Portcullis,
    ),
}

/// portcullis with `[auth]` (one htpasswd user allowed everything), and a
/// bearer token for `repo` from its `/token`, as an `Authorization` line.
fn portcullis_with_auth(up: &Registry, repo: &str) -> (Portcullis, String) {
    let htpasswd = format!("bench:{}\n", bcrypt::hash("bench-pw", 4).unwrap());
    let p = Portcullis::start_with_files(
        &format!(
            "{}default = true\n[auth]\nhtpasswd = \"htpasswd\"\ntoken_ttl = \"1h\"\n[[auth.access]]\nusers = [\"bench\"]\nimages = [\"registry.bench/**\"]\n",
            upstream("registry.bench", &up.url())
        ),
        &[("htpasswd", &htpasswd)],
    )
    .unwrap();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bench:bench-pw")
    );
    let r = support::http_get(
        &format!(
            "{}/token?service=portcullis&scope=repository:{repo}:pull",
            p.url()
        ),
        &[("Authorization", &basic)],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let header = format!("Authorization: Bearer {}\r\n", v["token"].as_str().unwrap());
    (p, header)
}

impl Warm {
    fn start(up: &Registry, img: &TestImage) -> Warm {
        let nginx = Nginx::start();
        let layer = &img.manifest().layers[0].digest;
        nginx.serve(&blob_path(img), &img.blob_path(layer));
        let manifest = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(manifest.path(), &img.manifest().raw).unwrap();
        for reference in ["v1", img.manifest().digest.as_str()] {
            nginx.serve(
                &format!("/v2/{}/manifests/{reference}", img.repo),
                manifest.path(),
            );
        }
        let p = portcullis(up);
        let d = proxy(up);
        let pv = portcullis_with(up, "verify_reads = true");
        let base = std::env::var_os("PORTCULLIS_BENCH_BASELINE").map(|bin| {
            Portcullis::start_binary(
                std::path::Path::new(&bin),
                &format!("{}default = true\n", upstream("registry.bench", &up.url())),
                &[],
            )
            .unwrap()
        });
        let (pa, bearer) = portcullis_with_auth(up, &img.repo);
        for reference in ["v1", img.manifest().digest.as_str()] {
            let path = format!("/v2/{}/manifests/{reference}", img.repo);
            hammer_with(pa.host(), "GET", &path, 1, 0.05, &bearer);
        }
        let mut fill = vec![p.host().to_owned(), d.host(), pv.host().to_owned()];
        fill.extend(base.as_ref().map(|b| b.host().to_owned()));
        for host in fill {
            // Fill both caches: the blob, the tag, the manifest by digest.
            get_blob(&host, &blob_path(img));
            for reference in ["v1", img.manifest().digest.as_str()] {
                hammer(
                    &host,
                    "GET",
                    &format!("/v2/{}/manifests/{reference}", img.repo),
                    1,
                    0.05,
                );
            }
        }
        let hosts = vec![
            ("direct", up.host(), vec![up.pid().unwrap()]),
            ("nginx", nginx.host.clone(), nginx.pids()),
            ("distribution", d.host(), vec![d.pid().unwrap()]),
            ("portcullis", p.host().to_owned(), vec![p.pid()]),
        ];
        Warm {
            hosts,
            verifying: (pv.host().to_owned(), vec![pv.pid()]),
            baseline: base.as_ref().map(|b| (b.host().to_owned(), vec![b.pid()])),
            auth: (pa.host().to_owned(), vec![pa.pid()], bearer),
            _keep: (nginx, p, d, pv, base, pa),
        }
    }
}

fn warm_blobs(res: &mut Results, warm: &Warm, img: &TestImage) {
    let path = blob_path(img);
    let size = img.manifest().layers[0].size as usize;
    // One client is the noisiest figure on a shared machine: three samples.
    for _ in 0..3 {
        for (name, host, _) in &warm.hosts {
            let t = herd(host, &path, 1);
            res.add(
                "warm blob GET, 1 client (256 MiB)",
                "MB/s",
                true,
                name,
                mb_per_s(size, t),
            );
        }
    }
    for (name, host, pids) in &warm.hosts {
        let cpu = cpu_seconds(pids);
        let t = herd(host, &path, CONCURRENT);
        let cpu = cpu_seconds(pids) - cpu;
        res.add(
            "warm blob GET, 16 clients (256 MiB each)",
            "MB/s",
            true,
            name,
            mb_per_s(CONCURRENT * size, t),
        );
        let gib = (CONCURRENT * size) as f64 / (1u64 << 30) as f64;
        res.add(
            "  server CPU per GiB served (16 clients)",
            "s",
            false,
            name,
            cpu / gib,
        );
    }
    // Beside plain portcullis in the same round (in the "direct" column:
    // the anchor), portcullis with cache.verify_reads (every whole read
    // re-hashed: the ratio is the option's cost), and the baseline build.
    let plain = warm
        .hosts
        .iter()
        .find(|(n, _, _)| *n == "portcullis")
        .map(|(_, h, p)| (h.clone(), p.clone()))
        .expect("portcullis is a warm server");
    let mut variants = vec![("verify_reads", warm.verifying.clone())];
    variants.extend(warm.baseline.clone().map(|b| ("baseline build", b)));
    for (variant, other) in variants {
        for (name, (host, pids)) in [("direct", plain.clone()), ("portcullis", other)] {
            let t = herd(&host, &path, 1);
            res.add(
                &format!("{variant}: warm blob, 1 client (direct = this build)"),
                "MB/s",
                true,
                name,
                mb_per_s(size, t),
            );
            let cpu = cpu_seconds(&pids);
            let t = herd(&host, &path, CONCURRENT);
            let cpu = cpu_seconds(&pids) - cpu;
            res.add(
                &format!("{variant}: warm blob, 16 clients (direct = this build)"),
                "MB/s",
                true,
                name,
                mb_per_s(CONCURRENT * size, t),
            );
            let gib = (CONCURRENT * size) as f64 / (1u64 << 30) as f64;
            res.add(
                &format!("  {variant}: CPU per GiB (direct = this build)"),
                "s",
                false,
                name,
                cpu / gib,
            );
        }
    }
}

fn warm_manifests(res: &mut Results, warm: &Warm, img: &TestImage) {
    let by_tag = format!("/v2/{}/manifests/v1", img.repo);
    let by_digest = format!("/v2/{}/manifests/{}", img.repo, img.manifest().digest);
    let runs = [
        ("HEAD", "HEAD by tag", &by_tag),
        ("GET", "GET by digest", &by_digest),
    ];
    for (name, host, _) in &warm.hosts {
        for (method, what, path) in runs {
            let l = hammer(host, method, path, CONNS, LOAD_SECS);
            let rate = format!("warm manifest {what}, 64 conns");
            res.add(&rate, "req/s", true, name, l.per_second);
            res.add(&format!("  p50 of {what}"), "ms", false, name, l.p50_ms);
            res.add(&format!("  p99 of {what}"), "ms", false, name, l.p99_ms);
        }
    }
    // Beside plain portcullis in the same round (in the "direct" column:
    // the anchor), portcullis with [auth], every request carrying a bearer
    // token: the ratio is what client authentication costs.
    let plain = warm
        .hosts
        .iter()
        .find(|(n, _, _)| *n == "portcullis")
        .map(|(_, h, _)| h.clone())
        .expect("portcullis is a warm server");
    let (auth_host, _, bearer) = &warm.auth;
    for (method, what, path) in runs {
        for (name, host, headers) in [
            ("direct", &plain, ""),
            ("portcullis", auth_host, bearer.as_str()),
        ] {
            let l = hammer_with(host, method, path, CONNS, LOAD_SECS, headers);
            let rate = format!("[auth] bearer: warm manifest {what} (direct = no [auth])");
            res.add(&rate, "req/s", true, name, l.per_second);
            res.add(
                &format!("  [auth] bearer: p99 of {what}"),
                "ms",
                false,
                name,
                l.p99_ms,
            );
        }
    }
}

fn cold_blob(res: &mut Results, up: &Registry, img: &TestImage) {
    let path = blob_path(img);
    let size = img.manifest().layers[0].size as usize;
    let gib = size as f64 / (1u64 << 30) as f64;
    const ROW: &str = "cold blob GET, 1 client (64 MiB)";
    const CPU: &str = "  server CPU per GiB (cold; direct: the upstream's)";
    // One cold GET against server `pids`, with the CPU they spent on it.
    let mut measure = |name: &'static str, host: &str, pids: &[u32]| {
        let cpu = cpu_seconds(pids);
        let t = herd(host, &path, 1);
        let cpu = cpu_seconds(pids) - cpu;
        res.add(ROW, "MB/s", true, name, mb_per_s(size, t));
        res.add(CPU, "s", false, name, cpu / gib);
    };
    measure("direct", &up.host(), &[up.pid().unwrap()]);
    let p = portcullis(up);
    measure("portcullis", p.host(), &[p.pid()]);
    let d = proxy(up);
    measure("distribution", &d.host(), &[d.pid().unwrap()]);
}

fn cold_herd(res: &mut Results, up: &Registry, img: &TestImage) {
    let path = blob_path(img);
    let digest = &img.manifest().layers[0].digest;
    const ROW: &str = "herd of 32 on a cold blob (64 MiB): all done";
    res.add(
        ROW,
        "s",
        false,
        "direct",
        herd(&up.host(), &path, HERD).as_secs_f64(),
    );
    for name in ["distribution", "portcullis"] {
        up.clear_requests().unwrap();
        let (t, rss) = if name == "portcullis" {
            let p = portcullis(up);
            (herd(p.host(), &path, HERD), peak_rss_mib(&[p.pid()]))
        } else {
            let d = proxy(up);
            (
                herd(&d.host(), &path, HERD),
                peak_rss_mib(&[d.pid().unwrap()]),
            )
        };
        res.add(ROW, "s", false, name, t.as_secs_f64());
        let gets = up.count("GET", &format!("/blobs/{digest}"));
        res.add(
            "  upstream GETs for that blob",
            "GETs",
            false,
            name,
            gets as f64,
        );
        res.add("  peak RSS of the server (VmHWM)", "MiB", false, name, rss);
    }
}

/// RSS must not grow with blob size: one cold GET of 64 MiB, one of 256 MiB.
fn rss_by_size(res: &mut Results, up: &Registry, small: &TestImage, large: &TestImage) {
    for (row, img) in [
        ("peak RSS, one cold 64 MiB GET", small),
        ("peak RSS, one cold 256 MiB GET", large),
    ] {
        let p = portcullis(up);
        herd(p.host(), &blob_path(img), 1);
        res.add(row, "MiB", false, "portcullis", peak_rss_mib(&[p.pid()]));
        let d = proxy(up);
        herd(&d.host(), &blob_path(img), 1);
        res.add(
            row,
            "MiB",
            false,
            "distribution",
            peak_rss_mib(&[d.pid().unwrap()]),
        );
    }
}

fn skopeo(res: &mut Results, up: &Registry) {
    let copy = |host: &str| {
        skopeo_copy_to_dir(&format!("docker://{host}/bench/multi:v1"), &[])
            .unwrap()
            .elapsed
            .as_secs_f64()
    };
    const COLD: &str = "skopeo copy, 6×16 MiB image, cold";
    const WARM: &str = "skopeo copy, 6×16 MiB image, warm";
    res.add(COLD, "s", false, "direct", copy(&up.host()));
    let p = portcullis(up);
    res.add(COLD, "s", false, "portcullis", copy(p.host()));
    res.add(WARM, "s", false, "portcullis", copy(p.host()));
    let d = proxy(up);
    res.add(COLD, "s", false, "distribution", copy(&d.host()));
    res.add(WARM, "s", false, "distribution", copy(&d.host()));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness=false targets
    }
    let rounds: usize = std::env::var("PORTCULLIS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("PORTCULLIS_BENCH_ONLY").unwrap_or_default();
    let run = |group: &str| only.is_empty() || only.split(',').any(|g| g.trim() == group);
    eprintln!("building images and starting the upstream...");
    let up = Registry::start(Mode::Plain).unwrap();
    let push = |repo: &str, layers: &[usize]| {
        push_image(&up.host(), repo, "linux", "amd64", layers, None).unwrap()
    };
    let warm = push("bench/warm:v1", &[WARM_BLOB]);
    let cold = push("bench/cold:v1", &[COLD_BLOB]);
    if run("skopeo") {
        push("bench/multi:v1", &[16 * MIB; 6]);
    }
    let mut res = Results::default();
    let warm_servers = (run("warm") || run("manifests")).then(|| Warm::start(&up, &warm));
    let garage = run("s3").then(|| support::garage::Garage::start().unwrap());
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        if let Some(w) = &warm_servers {
            if run("warm") {
                warm_blobs(&mut res, w, &warm);
            }
            if run("manifests") {
                warm_manifests(&mut res, w, &warm);
            }
        }
        if run("cold") {
            cold_blob(&mut res, &up, &cold);
        }
        if run("herd") {
            cold_herd(&mut res, &up, &cold);
        }
        if run("rss") {
            rss_by_size(&mut res, &up, &cold, &warm);
        }
        if run("skopeo") {
            skopeo(&mut res, &up);
        }
        if let Some(g) = &garage {
            s3::scenarios(&mut res, &up, g, &cold, round);
        }
    }
    println!("\n{}", res.table());
}

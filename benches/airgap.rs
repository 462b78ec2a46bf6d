//! The air-gap benchmark: `cargo bench --bench airgap` (not in CI).
//!
//! One real upstream (Debian's `docker-registry`) holds a 256 MiB image of
//! random bytes. Each round times, on this machine, in the same run:
//! - **anchor**: `skopeo copy docker://… oci:DIR` writing the same OCI layout
//!   from the same registry;
//! - `portcullis export` of the image into a fresh layout (no policy: the
//!   transfer alone);
//! - **anchors**: `cp -r` of that layout (copying the bytes, nothing
//!   checked) and `sha256sum` of its blobs (hashing them, nothing written);
//! - `portcullis import` of the layout into a fresh data directory (every
//!   object re-hashed through the verified writer, fsynced).
//!
//! It prints the median and the spread (fastest–slowest) over
//! `PORTCULLIS_BENCH_ROUNDS` (default 3) rounds, with each command's ratio
//! to its anchor.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::images::{SkopeoEnv, push_image};
use support::registry::{Mode, Registry};
use support::upstream;

const MIB: usize = 1 << 20;

fn timed(what: &str, cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("PORTCULLIS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let reg = Registry::start(Mode::Plain).unwrap();
    let img = push_image(
        &reg.host(),
        "bench/big:v1",
        "linux",
        "amd64",
        &[256 * MIB],
        None,
    )
    .unwrap();
    let size: u64 = img.blobs().iter().map(|b| b.size).sum();
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let skopeo = SkopeoEnv::new().unwrap();
    let (mut anchor_export, mut export, mut anchor_import, mut import) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut anchor_hash = Vec::new();
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{}",
                upstream("registry.test", &reg.url())
            ),
        )
        .unwrap();
        let sk = dir.path().join("skopeo");
        anchor_export.push(timed(
            "skopeo copy",
            skopeo
                .command()
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{}/bench/big:v1", reg.host()))
                .arg(format!("oci:{}:registry.test/bench/big:v1", sk.display())),
        ));
        let layout = dir.path().join("layout");
        export.push(timed(
            "portcullis export",
            Command::new(bin)
                .args(["export", "--config"])
                .arg(&config)
                .arg("-o")
                .arg(&layout)
                .arg("registry.test/bench/big:v1"),
        ));
        anchor_import.push(timed(
            "cp -r",
            Command::new("cp")
                .arg("-r")
                .arg(&layout)
                .arg(dir.path().join("copy")),
        ));
        anchor_hash.push(timed(
            "sha256sum",
            Command::new("sh")
                .arg("-c")
                .arg("sha256sum blobs/sha256/* >/dev/null")
                .current_dir(&layout),
        ));
        import.push(timed(
            "portcullis import",
            Command::new(bin)
                .args(["import", "--config"])
                .arg(&config)
                .arg(&layout),
        ));
        eprintln!("round {round} done");
    }
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    let spread = |v: &[Duration]| {
        let (lo, hi) = (v.iter().min().unwrap(), v.iter().max().unwrap());
        format!("{:.2}–{:.2} s", lo.as_secs_f64(), hi.as_secs_f64())
    };
    let rows = [
        (
            "skopeo copy docker:// → oci: (anchor)",
            &anchor_export,
            None,
        ),
        ("portcullis export", &export, Some(&anchor_export)),
        ("cp -r of the layout (anchor)", &anchor_import, None),
        ("sha256sum of its blobs (anchor)", &anchor_hash, None),
        ("portcullis import", &import, Some(&anchor_import)),
        (
            "portcullis import, vs sha256sum",
            &import,
            Some(&anchor_hash),
        ),
    ];
    println!(
        "| {} MiB image, {rounds} rounds | median | spread | MB/s (median) | vs anchor (medians) |",
        size >> 20
    );
    println!("|---|---|---|---|---|");
    for (name, v, anchor) in rows {
        let d = median(v.clone());
        let ratio = anchor.map_or("1×".to_owned(), |a| {
            format!(
                "{:.2}× the time",
                d.as_secs_f64() / median(a.clone()).as_secs_f64()
            )
        });
        println!(
            "| {name} | {:.2} s | {} | {:.0} | {ratio} |",
            d.as_secs_f64(),
            spread(v),
            rate(d)
        );
    }
}

//! The soak benchmark: `cargo bench --bench soak` (not in CI).
//!
//! Runs portcullis (release build) against the real docker-registry and a
//! fault-injecting fake upstream for `PORTCULLIS_SOAK_SECS` (default 600)
//! seconds of mixed load: pulls of warm and cold images (a small cache, so
//! eviction runs), Range reads, slow clients that hang up mid-blob,
//! connections that never send a request, and fills that fail (wrong bytes,
//! stalls, drips under the minimum rate, 429s). It samples the process's
//! resident memory, open file descriptors and threads after a warm-up and
//! again once the load has stopped and settled, prints them with the
//! request counts, and fails when any grew beyond a small allowance: all
//! three must be flat.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::client;
use support::fake_upstream::{FakeUpstream, Fault};
use support::images::{TestImage, push_image};
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::{sha256_digest, upstream};

const KIB: usize = 1024;
const MIB: usize = 1 << 20;
/// Growth allowed between the two samples.
const RSS_SLACK_KIB: u64 = 32 * 1024;
const FD_SLACK: u64 = 16;
const THREAD_SLACK: u64 = 8;

/// One reading of the process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    Sample {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
}

/// A small xorshift: the load's choices, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random(n: usize, rng: &mut Rng) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

#[derive(Default)]
struct Counts {
    pulls: AtomicU64,
    failed_pulls: AtomicU64,
    ranges: AtomicU64,
    slow: AtomicU64,
    idle: AtomicU64,
    faults: AtomicU64,
    cold: AtomicU64,
}

fn pull(base: &str, img: &TestImage) -> bool {
    let m = support::http_get(
        &format!("{base}/v2/registry.test/{}/manifests/{}", img.repo, img.tag),
        &[("Accept", img.top_media_type())],
    );
    if !m.is_ok_and(|r| r.status == 200) {
        return false;
    }
    img.blobs().iter().all(|b| {
        client::get(
            &format!("{base}/v2/registry.test/{}/blobs/{}", img.repo, b.digest),
            &[],
        )
        .is_ok_and(|r| r.complete && r.digest == b.digest)
    })
}

fn main() {
    let secs: u64 = std::env::var("PORTCULLIS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let reg = Registry::start(Mode::Plain).unwrap();
    let images: Vec<TestImage> = (0..8)
        .map(|i| {
            push_image(
                &reg.host(),
                &format!("soak/img{i}:v1"),
                "linux",
                "amd64",
                &[MIB, 256 * KIB],
                None,
            )
            .unwrap()
        })
        .collect();
    let fake = FakeUpstream::start().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let faults = [
        Fault::WrongBytes,
        Fault::Stall(64 * KIB),
        Fault::Short(100 * KIB),
        Fault::Slow {
            chunk: 64,
            delay: Duration::from_millis(100),
        },
        Fault::TooManyRequests {
            times: 1_000_000,
            retry_after: 60,
        },
    ];
    let fault_blobs: Vec<String> = faults
        .iter()
        .map(|f| {
            let data = random(256 * KIB, &mut rng);
            let d = sha256_digest(&data);
            fake.set_blob(&d, data, f.clone());
            d
        })
        .collect();
    let config = format!(
        "[cache]\nmax_size = \"24MiB\"\nscrub_rate = \"64MiB\"\n{}{}read_timeout = \"3s\"\nmin_rate = \"64KiB\"\nmin_rate_window = \"2s\"\n",
        upstream("registry.test", &reg.url()),
        upstream("fake.test", &fake.url()),
    );
    let p = Portcullis::start(&config).unwrap();
    let base = p.url();
    let pid = p.pid();
    println!("soak: {secs} s of mixed load against portcullis (pid {pid})");

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let images = Arc::new(images);
    let mut workers = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| std::thread::spawn(f);
    for seed in 0..4u64 {
        let (stop, counts, images, base) =
            (stop.clone(), counts.clone(), images.clone(), base.clone());
        workers.push(spawn(Box::new(move || {
            let mut rng = Rng(seed + 1);
            while !stop.load(Ordering::Relaxed) {
                let img = &images[rng.below(images.len())];
                if pull(&base, img) {
                    counts.pulls.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.failed_pulls.fetch_add(1, Ordering::Relaxed);
                }
                let b = &img.blobs()[0];
                let range = format!("bytes={}-{}", rng.below(1000), 1000 + rng.below(100_000));
                let _ = client::get(
                    &format!("{base}/v2/registry.test/{}/blobs/{}", img.repo, b.digest),
                    &[("Range", range.as_str())],
                );
                counts.ranges.fetch_add(1, Ordering::Relaxed);
            }
        })));
    }
    {
        // Slow clients that hang up part-way through a blob.
        let (stop, counts, images, base) =
            (stop.clone(), counts.clone(), images.clone(), base.clone());
        workers.push(spawn(Box::new(move || {
            let mut rng = Rng(99);
            while !stop.load(Ordering::Relaxed) {
                let img = &images[rng.below(images.len())];
                let b = &img.blobs()[0];
                if let Ok(mut s) = client::open(
                    "GET",
                    &format!("{base}/v2/registry.test/{}/blobs/{}", img.repo, b.digest),
                    &[],
                ) {
                    for _ in 0..4 {
                        let _ = s.read_at_least(16 * KIB as u64);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                counts.slow.fetch_add(1, Ordering::Relaxed);
            }
        })));
    }
    {
        // Connections that never send a request.
        let (stop, counts, host) = (stop.clone(), counts.clone(), p.host().to_owned());
        workers.push(spawn(Box::new(move || {
            while !stop.load(Ordering::Relaxed) {
                let held: Vec<TcpStream> = (0..16)
                    .filter_map(|_| TcpStream::connect(&host).ok())
                    .collect();
                std::thread::sleep(Duration::from_secs(2));
                drop(held);
                counts.idle.fetch_add(16, Ordering::Relaxed);
            }
        })));
    }
    {
        // Fills that fail, every way the fake can make them.
        let (stop, counts, base, blobs) = (
            stop.clone(),
            counts.clone(),
            base.clone(),
            fault_blobs.clone(),
        );
        workers.push(spawn(Box::new(move || {
            let mut rng = Rng(7);
            while !stop.load(Ordering::Relaxed) {
                let d = &blobs[rng.below(blobs.len())];
                let _ = client::get(&format!("{base}/v2/fake.test/soak/x/blobs/{d}"), &[]);
                counts.faults.fetch_add(1, Ordering::Relaxed);
            }
        })));
    }
    {
        // New images all the time: cold fills, and eviction of old objects.
        let (stop, counts, base, host) = (stop.clone(), counts.clone(), base.clone(), reg.host());
        workers.push(spawn(Box::new(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if let Ok(img) = push_image(
                    &host,
                    &format!("soak/cold{n}:v1"),
                    "linux",
                    "amd64",
                    &[512 * KIB],
                    None,
                ) && pull(&base, &img)
                {
                    counts.cold.fetch_add(1, Ordering::Relaxed);
                }
            }
        })));
    }

    let warm_up = Duration::from_secs(secs.min(60) / 6 + 5);
    std::thread::sleep(warm_up);
    let start = sample(pid);
    println!("after {warm_up:?} of warm-up: {start:?}");
    let began = Instant::now();
    let mut peak = start;
    while began.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(30).min(Duration::from_secs(secs)));
        let s = sample(pid);
        peak = Sample {
            rss_kib: peak.rss_kib.max(s.rss_kib),
            fds: peak.fds.max(s.fds),
            threads: peak.threads.max(s.threads),
        };
        println!("  {:>4} s: {s:?}", began.elapsed().as_secs());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    // Let timeouts close what the load left open, then read again.
    std::thread::sleep(Duration::from_secs(8));
    p.wait_fills_settled().unwrap();
    let end = sample(pid);

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "requests: {} pulls ({} failed), {} ranges, {} slow clients, {} idle connections, {} faulty fills, {} cold images",
        c(&counts.pulls),
        c(&counts.failed_pulls),
        c(&counts.ranges),
        c(&counts.slow),
        c(&counts.idle),
        c(&counts.faults),
        c(&counts.cold)
    );
    println!("| | start | peak | end | end / start |");
    println!("|---|---|---|---|---|");
    for (name, s, pk, e) in [
        ("RSS (KiB)", start.rss_kib, peak.rss_kib, end.rss_kib),
        ("open fds", start.fds, peak.fds, end.fds),
        ("threads", start.threads, peak.threads, end.threads),
    ] {
        println!(
            "| {name} | {s} | {pk} | {e} | {:.2} |",
            e as f64 / s.max(1) as f64
        );
    }
    let flat = end.rss_kib <= start.rss_kib + RSS_SLACK_KIB
        && end.fds <= start.fds + FD_SLACK
        && end.threads <= start.threads + THREAD_SLACK;
    // Keep the peer processes alive until here.
    let _ = (&reg, &fake);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", if flat { "flat: yes" } else { "flat: NO" });
    if !flat {
        std::process::exit(1);
    }
}

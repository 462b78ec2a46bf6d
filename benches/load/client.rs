//! The one client every server is driven with: plain HTTP/1.1 over
//! loopback, written here so that it costs the same for each server.
//!
//! Blob bodies are discarded in the kernel (`recv` with `MSG_TRUNC`, see
//! tcp(7)): on this 2-core machine the client shares the CPU with the
//! servers, and in production the nodes' CPU is not the cache's, so the
//! cheaper the client, the closer the numbers are to what the server alone
//! can do. Manifest load runs 64 keep-alive connections on two threads (as
//! `wrk -t2 -c64` would; wrk itself cannot time `HEAD`) and records every
//! request's latency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Manifest media types, as containerd asks for them.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A response head: status, `Content-Length`, and whether the server
/// closes the connection after it.
struct Head {
    status: u16,
    length: Option<u64>,
    close: bool,
}

fn parse_head(head: &[u8]) -> Head {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse().ok();
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.trim().eq_ignore_ascii_case("close");
        }
    }
    Head {
        status,
        length,
        close,
    }
}

/// GET `path` from `host` on a new connection and receive the whole body.
/// Panics unless the status is 200 and the body has its announced length.
pub fn get_blob(host: &str, path: &str) -> u64 {
    let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    let body_start = loop {
        let n = s.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "GET {host}{path}: connection closed in the head");
        have += n;
        if let Some(end) = find_header_end(&buf[..have]) {
            break end;
        }
        assert!(have < buf.len(), "GET {host}{path}: head too long");
    };
    let head = parse_head(&buf[..body_start]);
    assert_eq!(head.status, 200, "GET {host}{path}");
    let length = head
        .length
        .unwrap_or_else(|| panic!("GET {host}{path}: no Content-Length"));
    let mut got = (have - body_start) as u64;
    while got < length {
        let want = (length - got).min(1 << 24) as usize;
        // SAFETY: with MSG_TRUNC a TCP socket discards up to `want` bytes
        // without writing to the (null) buffer; the fd is open and ours.
        let n = unsafe { libc::recv(s.as_raw_fd(), std::ptr::null_mut(), want, libc::MSG_TRUNC) };
        assert!(
            n > 0,
            "GET {host}{path}: body cut at {got} of {length} bytes"
        );
        got += n as u64;
    }
    got
}

/// `clients` GETs of `path` at once, released together; the wall time until
/// the last one finished.
pub fn herd(host: &str, path: &str, clients: usize) -> Duration {
    herd_over(&[host.to_owned()], path, clients)
}

/// [`herd`] with the clients spread over `hosts` in turn.
pub fn herd_over(hosts: &[String], path: &str, clients: usize) -> Duration {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (host, path, barrier) = (
                hosts[i % hosts.len()].clone(),
                path.to_owned(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                get_blob(&host, &path)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("a client failed");
    }
    start.elapsed()
}

/// What a manifest load run measured.
pub struct Load {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `conns` keep-alive connections sending `method path` back to back for
/// `secs` seconds. Panics on any answer but 200.
pub fn hammer(host: &str, method: &'static str, path: &str, conns: usize, secs: f64) -> Load {
    hammer_with(host, method, path, conns, secs, "")
}

/// [`hammer`] with `headers` (whole `Name: value\r\n` lines) on every request.
pub fn hammer_with(
    host: &str,
    method: &'static str,
    path: &str,
    conns: usize,
    secs: f64,
    headers: &str,
) -> Load {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request: Arc<[u8]> =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {ACCEPT}\r\n{headers}\r\n")
            .into_bytes()
            .into();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut latencies: Vec<u32> = rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let (host, request) = (host.to_owned(), request.clone());
                tokio::spawn(connection(host, method, request, deadline))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("a load connection failed"));
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i] as f64 / 1000.0
    };
    Load {
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

async fn connect(host: &str) -> tokio::net::TcpStream {
    let s = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_nodelay(true).unwrap();
    s
}

/// One connection's requests until `deadline`: their latencies in µs. A
/// server that closes the connection (nginx after `keepalive_requests`) is
/// connected to again; that request is not counted.
async fn connection(
    host: String,
    method: &'static str,
    request: Arc<[u8]>,
    deadline: Instant,
) -> Vec<u32> {
    let mut s = connect(&host).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut latencies = Vec::new();
    'requests: while Instant::now() < deadline {
        let t0 = Instant::now();
        if s.write_all(&request).await.is_err() {
            s = connect(&host).await;
            continue;
        }
        let mut have = 0;
        let body_start = loop {
            let n = s.read(&mut buf[have..]).await.unwrap_or(0);
            if n == 0 {
                assert_eq!(
                    have, 0,
                    "{method} {host}: connection closed in a response head"
                );
                s = connect(&host).await;
                continue 'requests;
            }
            have += n;
            if let Some(end) = find_header_end(&buf[..have]) {
                break end;
            }
        };
        let head = parse_head(&buf[..body_start]);
        assert_eq!(head.status, 200, "{method} on {host}");
        let body = if method == "HEAD" {
            0
        } else {
            head.length.expect("a Content-Length") as usize
        };
        assert!(body_start + body <= buf.len(), "a manifest over 64 KiB");
        while have - body_start < body {
            let n = s.read(&mut buf[have..]).await.unwrap();
            assert!(n > 0, "{method} {host}: body cut");
            have += n;
        }
        latencies.push(t0.elapsed().as_micros() as u32);
        if head.close {
            s = connect(&host).await;
        }
    }
    latencies
}

//! Connection limits: a client that connects and says nothing is closed once
//! the header-read timeout (from accept) ends; past `max_connections`, health
//! checks are still answered and everything else gets 503 until connections
//! close.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::portcullis::Portcullis;
use support::{http_get, upstream};

/// Read until the server closes (an end of stream, or a reset when it
/// closed with our bytes unread); false if it was still open after a bound
/// far beyond the timeout under test.
fn closed_by_server(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn silent_and_stalled_connections_are_closed_after_the_header_read_timeout() {
    let p = Portcullis::start(&format!(
        "header_read_timeout = \"1s\"\n{}",
        upstream("registry.test", "http://127.0.0.1:9")
    ))
    .unwrap();
    // Nothing at all: no protocol to detect, no request to time.
    let silent = TcpStream::connect(p.host()).unwrap();
    // Part of a request line, then nothing.
    let mut partial = TcpStream::connect(p.host()).unwrap();
    partial.write_all(b"GET /v2/ HT").unwrap();
    // Part of the HTTP/2 preface, then nothing.
    let mut preface = TcpStream::connect(p.host()).unwrap();
    preface.write_all(b"PRI * HTTP/2").unwrap();
    for (what, s) in [
        ("silent", silent),
        ("partial", partial),
        ("preface", preface),
    ] {
        assert!(closed_by_server(s), "the {what} connection was kept open");
    }
    // A prompt client is served as usual.
    assert_eq!(
        http_get(&format!("{}/v2/", p.url()), &[]).unwrap().status,
        200
    );
}

#[test]
fn over_max_connections_health_checks_are_answered_and_the_rest_get_503() {
    let p = Portcullis::start(&format!(
        "max_connections = 4\nheader_read_timeout = \"30s\"\n{}",
        upstream("registry.test", "http://127.0.0.1:9")
    ))
    .unwrap();
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(p.host()).unwrap())
        .collect();
    let base = format!("{}/v2/", p.url());
    // The accept loop takes the idle ones first (they are already queued).
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let r = http_get(&base, &[]).unwrap();
        if r.status == 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "the cap was never reached");
    };
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&refused.body).contains("max_connections"));
    let health = http_get(&format!("{}/healthz", p.url()), &[]).unwrap();
    assert_eq!(health.status, 200, "health checks are still answered");
    p.wait_for_log(|l| l.contains("max_connections reached"))
        .unwrap();

    // The idle connections go: new ones are served again.
    drop(idle);
    support::wait_until("service resuming", || {
        http_get(&base, &[]).unwrap().status == 200
    });
    assert!(p.metric("portcullis_connections_refused_total").unwrap() >= 1.0);
}

//! A streaming HTTP/1.1 reader for large bodies: hashes as it reads, reports
//! whether the body completed, and can stop after the first bytes (to act
//! while a transfer is in flight).

use super::{Result, err, hex};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response whose body is being read.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    /// Content-Length, when sent.
    pub length: Option<u64>,
    received: u64,
    hasher: Sha256,
}

/// How a body read ended.
#[derive(Debug)]
pub struct Received {
    pub status: u16,
    pub bytes: u64,
    /// `sha256:<hex>` of what arrived.
    pub digest: String,
    /// Every announced byte arrived.
    pub complete: bool,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send a request and read the status line and headers.
pub fn open(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Streaming> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err!("not http: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let ctx = |e: std::io::Error| err!("{method} {url}: {e}");
    let mut s = TcpStream::connect(authority).map_err(ctx)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(ctx)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(ctx)?;
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(ctx)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err!("{method} {url}: bad status line {line:?}"))?;
    let mut hdrs = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(ctx)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            hdrs.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length = hdrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok());
    Ok(Streaming {
        status,
        headers: hdrs,
        reader,
        length: if method == "HEAD" { Some(0) } else { length },
        received: 0,
        hasher: Sha256::new(),
    })
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Read until at least `n` body bytes have arrived (or the body ends).
    pub fn read_at_least(&mut self, n: u64) -> Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.received < n {
            let want = self.length.map_or(buf.len() as u64, |l| {
                (l - self.received).min(buf.len() as u64)
            });
            if want == 0 {
                break;
            }
            match self.reader.read(&mut buf[..want as usize]) {
                Ok(0) => break,
                Ok(k) => {
                    self.hasher.update(&buf[..k]);
                    self.received += k as u64;
                }
                Err(e) => return Err(err!("reading body: {e}")),
            }
        }
        Ok(self.received)
    }

    /// Read exactly the next `n` body bytes and return them (then drop the
    /// response to hang up, as a client reading one chunk of a large body
    /// does).
    pub fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = vec![0u8; n];
        self.reader
            .read_exact(&mut out)
            .map_err(|e| err!("reading {n} body bytes after {}: {e}", self.received))?;
        self.hasher.update(&out);
        self.received += n as u64;
        Ok(out)
    }

    /// Read to the end; a cut or short body is reported, not an error.
    pub fn finish(mut self) -> Received {
        let _ = self.read_at_least(u64::MAX);
        let complete = self.length.is_some_and(|l| l == self.received);
        Received {
            status: self.status,
            bytes: self.received,
            digest: format!("sha256:{}", hex(&self.hasher.finalize())),
            complete,
            headers: self.headers,
        }
    }
}

/// GET `url` and read the whole body, hashing it.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Received> {
    Ok(open("GET", url, headers)?.finish())
}

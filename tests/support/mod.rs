#![allow(dead_code)]
//! Integration-test support for portcullis: real upstream registries
//! (`docker-registry`), test images built with `umoci` + `skopeo`, and a token
//! server for distribution's `auth.token`. The node runtimes as real clients:
//! a private containerd (`containerd`) and podman (`podman`), plus a proxy
//! that cuts a download mid-way (`cut_proxy`). Also test-time signing (`signing`,
//! with the private Sigstore instance in `sigstore`) and the helpers of the
//! tests over the real signature fixture corpus (`fixtures`).
//!
//! Everything binds to 127.0.0.1 only. Every child process is killed on drop.
//! Set `PORTCULLIS_TEST_VERBOSE=1` to echo the registries' output to stderr.

pub mod attest;
pub mod client;
pub mod containerd;
pub mod crafted;
pub mod cut_proxy;
pub mod fake_upstream;
pub mod fixtures;
pub mod garage;
pub mod gate;
pub mod images;
pub mod notary;
pub mod oci_push;
pub mod pki;
pub mod podman;
pub mod portcullis;
pub mod process;
pub mod registry;
pub mod signing;
pub mod sigstore;
pub mod token_server;

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Command, Output};
use std::time::Duration;

/// Error of the support code: a human-readable message saying what failed,
/// including the stderr of any external command involved.
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Debug prints the raw message so `.unwrap()` shows multi-line stderr readably.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Result of the support code.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error`] from a format string.
macro_rules! err {
    ($($arg:tt)*) => { $crate::support::Error(format!($($arg)*)) };
}
pub(crate) use err;

/// An `[[upstream]]` table for portcullis's config.
pub fn upstream(name: &str, url: &str) -> String {
    format!("[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\n")
}

/// A plain registry with one linux/amd64 image (random layers of
/// `layer_sizes`) pushed to it as `repo_tag`.
pub fn registry_with_image(
    repo_tag: &str,
    layer_sizes: &[usize],
) -> (registry::Registry, images::TestImage) {
    let reg = registry::Registry::start(registry::Mode::Plain).unwrap();
    let img =
        images::push_image(&reg.host(), repo_tag, "linux", "amd64", layer_sizes, None).unwrap();
    (reg, img)
}

/// `"sha256:<hex>"` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Poll `ok` (bounded, 20 s) until it holds: for effects that happen in the
/// background (a connection closing, an index recovering). Panics saying
/// `what` never happened.
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound, then released).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| err!("binding 127.0.0.1:0: {e}"))?;
    Ok(l.local_addr().map_err(|e| err!("local_addr: {e}"))?.port())
}

/// Renders a command line for messages.
pub fn command_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; an error names the command and carries its
/// exit status, stderr and stdout.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = command_line(cmd);
    let out = cmd.output().map_err(|e| {
        err!("could not run `{line}`: {e} (is it installed? CI installs it with apt-get)")
    })?;
    if !out.status.success() {
        return Err(err!(
            "`{line}` failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end()
        ));
    }
    Ok(out)
}

/// A response of [`http_request`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked; empty for HEAD).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let h = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name));
        h.map(|(_, v)| v.as_str())
    }
}

/// A tiny blocking HTTP/1.1 client (`Connection: close`) for plain `http://`
/// URLs; usable from sync tests and from inside a tokio runtime alike.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| err!("not an http:// URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let ctx = |e: std::io::Error| err!("{method} {url}: {e}");
    let addr = authority.to_socket_addrs().map_err(ctx)?.next();
    let addr = addr.ok_or_else(|| err!("{method} {url}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(ctx)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(ctx)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(ctx)?;
    s.write_all(body).map_err(ctx)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(ctx)?;
    parse_response(method, &raw).map_err(|e| err!("{method} {url}: {e}"))
}

/// `GET url` with the given headers.
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    http_request("GET", url, headers, &[])
}

fn parse_response(method: &str, raw: &[u8]) -> std::result::Result<HttpResponse, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let end = end.ok_or_else(|| format!("incomplete response ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    resp.body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if resp.body.len() < len {
            return Err(format!(
                "body truncated: {} of {len} bytes",
                resp.body.len()
            ));
        }
        resp.body.truncate(len);
    }
    Ok(resp)
}

fn dechunk(mut data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_str = String::from_utf8_lossy(&data[..nl]);
        let size_str = size_str
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let size = usize::from_str_radix(&size_str, 16).map_err(|_| "bad chunk size")?;
        data = &data[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

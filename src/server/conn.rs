//! One client connection, from accept to close: its time limits, its
//! protocol, and hyper serving it.
//!
//! The header-read timeout runs from accept: a client that connects and
//! sends nothing is closed when it ends, TLS handshake included (hyper's own
//! timer only starts once it reads a request, and protocol detection would
//! otherwise wait for the first bytes forever). The protocol comes from ALPN
//! under TLS and from the first bytes otherwise (the HTTP/2 preface or not),
//! so each connection is served by hyper's HTTP/1.1 or h2 machinery
//! directly, with the header-read timeout on every HTTP/1.1 request (idle
//! keep-alive connections close too) and keep-alive pings on h2. The
//! process-wide connection cap lives in the accept loop; this module must
//! not interpret requests.

use std::time::Duration;

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::api::Body;
use crate::auth::Peer;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often to look again at a client that sent part of the h2 preface.
const PREFACE_POLL: Duration = Duration::from_millis(10);
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection is served.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From accept to a request's headers, and between requests.
    pub header_read_timeout: Duration,
    /// Whether to keep an HTTP/1.1 connection open after a response.
    pub keep_alive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Http1,
    H2,
}

/// Look at the first bytes (without consuming them) until they are or are
/// not the h2 preface; `None` if the client says nothing by `deadline`.
async fn sniff(stream: &TcpStream, deadline: Instant) -> Option<Proto> {
    let mut buf = [0u8; 24];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(Proto::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Proto::H2);
        }
        // Part of the preface so far: wait for the rest.
        if Instant::now() + PREFACE_POLL >= deadline {
            return None;
        }
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// Puts the connection's [`Peer`] on every request it carries.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S> Service<Request<Incoming>> for WithPeer<S>
where
    S: Service<Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}

/// Serve `stream` with `service` until it closes (or graceful shutdown).
pub async fn serve<S>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    service: S,
    limits: Limits,
    watcher: Watcher,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let deadline = Instant::now() + limits.header_read_timeout;
    let mut peer = Peer {
        addr: stream.peer_addr().ok(),
        certificate_cn: None,
    };
    match tls {
        None => {
            let Some(proto) = sniff(&stream, deadline).await else {
                return;
            };
            let service = WithPeer {
                inner: service,
                peer,
            };
            run(stream, proto, service, limits, watcher).await;
        }
        Some(acceptor) => {
            let Ok(Ok(stream)) = tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
            else {
                return;
            };
            let session = stream.get_ref().1;
            let proto = match session.alpn_protocol() {
                Some(b"h2") => Proto::H2,
                _ => Proto::Http1,
            };
            // Present only when the handshake verified it against client_ca.
            peer.certificate_cn = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(super::tls::certificate_cn);
            let service = WithPeer {
                inner: service,
                peer,
            };
            run(stream, proto, service, limits, watcher).await;
        }
    }
}

async fn run<I, S>(io: I, proto: Proto, service: S, limits: Limits, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    match proto {
        Proto::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(limits.keep_alive)
                .serve_connection(io, service);
            let _ = watcher.watch(conn).await;
        }
        Proto::H2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(H2_PING_EVERY)
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .serve_connection(io, service);
            let _ = watcher.watch(conn).await;
        }
    }
}

/// Three quarters of the soft file descriptor limit (what the rest of the
/// process needs, upstream connections and open objects, keeps the other
/// quarter), between 64 and 65536; 768 when the limit cannot be read.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<u64>().ok());
    match soft {
        Some(n) => usize::try_from(n / 4 * 3)
            .unwrap_or(usize::MAX)
            .clamp(64, 65536),
        None => 768,
    }
}

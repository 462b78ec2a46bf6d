//! A fake upstream registry for the faults a real one won't produce: wrong
//! bytes, short bodies, stalls, cut connections, 429s.
//!
//! It serves blobs (and manifests by tag) registered with [`FakeUpstream::set_blob`]
//! and [`FakeUpstream::set_manifest`], with a [`Fault`] applied to blob
//! bodies. It runs on its own thread with its own runtime, on 127.0.0.1, and
//! records every request. Use it only for faults: everything else is tested
//! against the real `docker-registry`.

use super::{Result, err};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What goes wrong when a blob is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve the blob correctly.
    None,
    /// Same length, the last byte flipped; sent in two halves 100 ms apart,
    /// so the response is under way before the last byte arrives.
    WrongBytes,
    /// Announce the full length, send only the first `n` bytes, then close.
    Short(usize),
    /// Send the first `n` bytes, then hang until the fake is dropped.
    Stall(usize),
    /// Answer 429 with `Retry-After` (seconds) to the next `times` blob GETs.
    TooManyRequests { times: usize, retry_after: u64 },
    /// Send in chunks of `chunk` bytes with `delay` between them.
    Slow { chunk: usize, delay: Duration },
}

#[derive(Default)]
struct State {
    blobs: HashMap<String, (Vec<u8>, Fault)>,
    manifests: HashMap<String, (String, Vec<u8>)>,
    /// Applied to manifest GETs (`None`: served whole).
    manifest_fault: Option<Fault>,
    /// Repositories whose requests are answered only after a delay.
    delays: HashMap<String, Duration>,
    /// (digest, repository) pairs answered 404: the blob is not in that repository.
    missing: Vec<(String, String)>,
    requests: Vec<(String, String)>,
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The fake registry.
pub struct FakeUpstream {
    addr: String,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeUpstream {
    pub fn start() -> Result<FakeUpstream> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| err!("bind: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err!("nonblocking: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err!("addr: {e}"))?
            .to_string();
        let state: Arc<Mutex<State>> = Arc::default();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                        _ = &mut stopped => break,
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let st = st.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let delay =
                                    st.lock().unwrap().delays.iter().find_map(|(repo, d)| {
                                        path.starts_with(&format!("/v2/{repo}/")).then_some(*d)
                                    });
                                if let Some(d) = delay {
                                    tokio::time::sleep(d).await;
                                }
                                Ok::<_, Infallible>(answer(&st, req))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        Ok(FakeUpstream {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `data` as the blob `digest` with `fault`.
    pub fn set_blob(&self, digest: &str, data: Vec<u8>, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(digest.to_owned(), (data, fault));
    }

    /// Change the fault of a registered blob.
    pub fn set_fault(&self, digest: &str, fault: Fault) {
        if let Some(b) = self.state.lock().unwrap().blobs.get_mut(digest) {
            b.1 = fault;
        }
    }

    /// Serve `bytes` for `/v2/<repo>/manifests/<reference>`.
    pub fn set_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: Vec<u8>) {
        self.state.lock().unwrap().manifests.insert(
            format!("{repo}/{reference}"),
            (media_type.to_owned(), bytes),
        );
    }

    /// Answer requests about `repo` only after `delay`.
    pub fn set_delay(&self, repo: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .delays
            .insert(repo.to_owned(), delay);
    }

    /// Answer 404 for blob `digest` asked for in `repo`.
    pub fn set_missing_in(&self, digest: &str, repo: &str) {
        self.state
            .lock()
            .unwrap()
            .missing
            .push((digest.to_owned(), repo.to_owned()));
    }

    /// Serve every manifest GET with `fault` (only `Slow` is meaningful).
    pub fn set_manifest_fault(&self, fault: Fault) {
        self.state.lock().unwrap().manifest_fault = Some(fault);
    }

    /// Requests seen: (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Count requests with `method` whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p.contains(part))
            .count()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn full(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|n| match n {})
            .boxed(),
    )
    .unwrap()
}

fn answer(state: &Arc<Mutex<State>>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let mut st = state.lock().unwrap();
    st.requests.push((method.clone(), path.clone()));
    let json = ("Content-Type", "application/json".to_owned());
    if path == "/v2/" {
        return full(200, &[json], b"{}".to_vec());
    }
    let not_found = || {
        full(
            404,
            std::slice::from_ref(&json),
            br#"{"errors":[{"code":"NOT_FOUND"}]}"#.to_vec(),
        )
    };
    if let Some((name, reference)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.rsplit_once("/manifests/"))
    {
        let Some((ty, bytes)) = st.manifests.get(&format!("{name}/{reference}")).cloned() else {
            return not_found();
        };
        let digest = super::sha256_digest(&bytes);
        if let (Some(Fault::Slow { chunk, delay }), "GET") = (&st.manifest_fault, method.as_str()) {
            let mut r = streamed(
                ("Content-Length", bytes.len().to_string()),
                bytes,
                *chunk,
                Some(*delay),
                false,
            );
            r.headers_mut().insert("content-type", ty.parse().unwrap());
            r.headers_mut()
                .insert("docker-content-digest", digest.parse().unwrap());
            return r;
        }
        let headers = [("Content-Type", ty), ("Docker-Content-Digest", digest)];
        return full(
            200,
            &headers,
            if method == "HEAD" { Vec::new() } else { bytes },
        );
    }
    let Some((repo_path, digest)) = path.rsplit_once("/blobs/") else {
        return not_found();
    };
    let repo = repo_path.strip_prefix("/v2/").unwrap_or(repo_path);
    if st.missing.iter().any(|(d, r)| d == digest && r == repo) {
        return not_found();
    }
    let Some((data, fault)) = st.blobs.get(digest).cloned() else {
        return not_found();
    };
    let len = ("Content-Length", data.len().to_string());
    if method == "HEAD" {
        return full(200, &[len], Vec::new());
    }
    match fault {
        Fault::None => full(200, &[len], data),
        Fault::WrongBytes => {
            let mut bad = data;
            let last = bad.len() - 1;
            bad[last] ^= 0xff;
            let half = bad.len().div_ceil(2);
            streamed(len, bad, half, Some(Duration::from_millis(100)), false)
        }
        Fault::TooManyRequests { times, retry_after } => {
            if times > 0 {
                st.blobs.get_mut(digest).unwrap().1 = if times > 1 {
                    Fault::TooManyRequests {
                        times: times - 1,
                        retry_after,
                    }
                } else {
                    Fault::None
                };
                full(429, &[("Retry-After", retry_after.to_string())], Vec::new())
            } else {
                full(200, &[len], data)
            }
        }
        Fault::Short(n) => streamed(len, data, n, None, false),
        Fault::Stall(n) => streamed(len, data, n, None, true),
        Fault::Slow { chunk, delay } => streamed(len, data, chunk, Some(delay), false),
    }
}

/// A body sent in pieces: `first` bytes, then (with a delay) the rest in
/// chunks of `first`, or a stall, or an early end.
fn streamed(
    len: (&str, String),
    data: Vec<u8>,
    first: usize,
    delay: Option<Duration>,
    stall: bool,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<std::result::Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        let data = Bytes::from(data);
        let head = data.slice(..first.min(data.len()));
        if tx.send(Ok(Frame::data(head))).await.is_err() {
            return;
        }
        if stall {
            // Hold the connection open without sending anything more.
            tx.closed().await;
            return;
        }
        let Some(delay) = delay else {
            // Short: end the body early; hyper closes the connection.
            let _ = tx.send(Err(std::io::Error::other("cut"))).await;
            return;
        };
        let mut pos = first;
        while pos < data.len() {
            tokio::time::sleep(delay).await;
            let end = (pos + first).min(data.len());
            if tx
                .send(Ok(Frame::data(data.slice(pos..end))))
                .await
                .is_err()
            {
                return;
            }
            pos = end;
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Response::builder()
        .status(200)
        .header(len.0, len.1)
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

//! One log line and the request metrics per request, as a tower layer.
//!
//! The line is written when the response body ends, so it carries the bytes
//! actually sent and whether the transfer completed (a client that hangs up,
//! or a blob whose verification fails mid-stream, shows `complete=false`).
//! Fields: method, path, status, bytes, cache (hit/miss/coalesced/stale/...),
//! upstream, duration. Request headers are never logged, so credentials and
//! tokens cannot leak here. This module must not change responses.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service};

use crate::api::{Body, RequestInfo};
use crate::cache::fill::BoxError;
use crate::metrics::Metrics;

/// Longest path written to a log line.
const MAX_LOGGED_PATH: usize = 512;

#[derive(Clone)]
pub struct AccessLogLayer {
    metrics: Metrics,
}

impl AccessLogLayer {
    pub fn new(metrics: Metrics) -> AccessLogLayer {
        AccessLogLayer { metrics }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, RB> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: HttpBody<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().to_string();
        let mut path = req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.to_string());
        if path.len() > MAX_LOGGED_PATH {
            let mut cut = MAX_LOGGED_PATH;
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
        }
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let (parts, body) = resp.into_parts();
            let info = parts.extensions.get::<RequestInfo>().cloned();
            // hyper stops polling once Content-Length bytes are out: that is completion.
            let expected = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let line = Line {
                start,
                method,
                path,
                status: parts.status,
                info,
                metrics,
            };
            let body = LoggedBody {
                inner: body.map_err(Into::into).boxed_unsync(),
                bytes: 0,
                expected,
                line: Some(line),
            };
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        })
    }
}

struct Line {
    start: Instant,
    method: String,
    path: String,
    status: StatusCode,
    info: Option<RequestInfo>,
    metrics: Metrics,
}

impl Line {
    fn emit(self, bytes: u64, complete: bool) {
        let route = self.info.as_ref().map_or("unrouted", |i| i.route);
        let cache = self.info.as_ref().and_then(|i| i.cache);
        let elapsed = self.start.elapsed();
        self.metrics
            .request(route, self.status, cache, bytes, elapsed);
        let upstream = self
            .info
            .as_ref()
            .and_then(|i| i.upstream.as_ref())
            .map(|u| u.to_string());
        let error = self.info.as_ref().and_then(|i| i.error.as_deref());
        let client = self.info.as_ref().and_then(|i| i.client.as_deref());
        tracing::info!(
            target: "portcullis::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            bytes,
            complete,
            cache = cache.map_or("-", |c| c.as_str()),
            upstream = upstream.as_deref().unwrap_or("-"),
            client = client.unwrap_or("-"),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error,
            "request"
        );
    }
}

/// A body that counts what it sends and logs when it ends or is dropped.
struct LoggedBody {
    inner: Body,
    bytes: u64,
    /// The response's Content-Length, if it has one.
    expected: Option<u64>,
    line: Option<Line>,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(line) = self.line.take() {
                    line.emit(self.bytes, false);
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.emit(self.bytes, true);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            // Dropped before its end was polled: complete if every promised
            // byte went out (or an empty body was never polled).
            let complete = self.inner.is_end_stream() || self.expected == Some(self.bytes);
            line.emit(self.bytes, complete);
        }
    }
}

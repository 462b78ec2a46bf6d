//! The HTTP client one upstream uses: connection pool, TLS, timeouts,
//! retries, redirects, and attaching credentials.
//!
//! Owns the transport rules: rustls with the webpki roots plus the upstream's
//! own CA file, HTTP/1.1 and h2 by ALPN, plain HTTP only when the configured
//! URL says so (and never as a redirect from HTTPS), retries with backoff for
//! connect errors and 5xx, `Retry-After` on 429, and the origin check that
//! keeps credentials away from redirect targets on other hosts (blob
//! downloads redirect to CDNs). All requests portcullis makes upstream are
//! GET or HEAD, so all are idempotent. This module must not interpret
//! registry semantics (status codes beyond transport, manifests, digests).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT, AUTHORIZATION, HeaderMap, LOCATION, RETRY_AFTER, USER_AGENT, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::UpstreamError;
use super::auth::{Auth, Challenge};
use super::breaker::Breaker;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Attempts for one request, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// First retry delay; doubled for each further attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// A 429 asking to wait longer than this is passed on instead of waited out.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: u32 = 5;
/// Error bodies drained (for connection reuse) up to this size.
const DRAIN_LIMIT: usize = 64 * 1024;
const AGENT: &str = concat!("portcullis/", env!("CARGO_PKG_VERSION"));

/// Build the pooled HTTP client for one upstream.
pub fn build_client(cfg: &UpstreamConfig) -> Result<HttpClient, UpstreamError> {
    let https =
        crate::https::connector(&cfg.ca_certs, cfg.connect_timeout, true).map_err(|source| {
            UpstreamError::Tls {
                upstream: cfg.name.to_string(),
                source,
            }
        })?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

/// Percent-encode a query value (everything but unreserved characters).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The pace an upstream body must keep: no silence longer than `timeout`,
/// and (unless `min_rate` is 0) at least `min_rate` bytes per second over
/// every `window`, so that a drip of a byte a second cannot hold a fill and
/// its followers forever.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub timeout: Duration,
    pub min_rate: u64,
    pub window: Duration,
}

/// Reads a body frame by frame under a [`Pace`].
pub struct PacedBody {
    body: Incoming,
    pace: Pace,
    upstream: String,
    window_start: tokio::time::Instant,
    in_window: u64,
}

impl PacedBody {
    pub fn new(body: Incoming, pace: Pace, upstream: &str) -> PacedBody {
        PacedBody {
            body,
            pace,
            upstream: upstream.to_owned(),
            window_start: tokio::time::Instant::now(),
            in_window: 0,
        }
    }

    /// Bytes the window must have brought.
    fn floor(&self) -> u64 {
        let per_ms = u128::from(self.pace.min_rate) * self.pace.window.as_millis() / 1000;
        u64::try_from(per_ms).unwrap_or(u64::MAX)
    }

    /// When a window is over: fail if it moved too little, else start the next.
    fn end_window(&mut self, now: tokio::time::Instant) -> Result<(), UpstreamError> {
        if self.pace.min_rate == 0 || now < self.window_start + self.pace.window {
            return Ok(());
        }
        if self.in_window < self.floor() {
            return Err(UpstreamError::TooSlow {
                upstream: self.upstream.clone(),
                min_rate: self.pace.min_rate,
                window: self.pace.window,
            });
        }
        self.window_start = now;
        self.in_window = 0;
        Ok(())
    }

    /// The next data frame; `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            let now = tokio::time::Instant::now();
            let silence = now + self.pace.timeout;
            let deadline = if self.pace.min_rate == 0 {
                silence
            } else {
                silence.min(self.window_start + self.pace.window)
            };
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(None) => return Ok(None),
                Ok(Some(Err(source))) => {
                    return Err(UpstreamError::Body {
                        upstream: self.upstream.clone(),
                        source,
                    });
                }
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.in_window = self.in_window.saturating_add(data.len() as u64);
                    self.end_window(tokio::time::Instant::now())?;
                    if data.is_empty() {
                        continue;
                    }
                    return Ok(Some(data));
                }
                Err(_) if deadline < silence => self.end_window(deadline)?,
                Err(_) => {
                    return Err(UpstreamError::Timeout {
                        upstream: self.upstream.clone(),
                        timeout: self.pace.timeout,
                    });
                }
            }
        }
    }
}

/// Read a whole body at `pace`, refusing more than `limit` bytes.
pub async fn read_limited(
    body: Incoming,
    limit: usize,
    pace: Pace,
    upstream: &str,
) -> Result<Bytes, UpstreamError> {
    let mut buf = BytesMut::new();
    let mut body = PacedBody::new(body, pace, upstream);
    while let Some(data) = body.next().await? {
        if buf.len().saturating_add(data.len()) > limit {
            return Err(UpstreamError::TooLarge {
                upstream: upstream.to_owned(),
                limit,
            });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme() && a.authority() == b.authority()
}

fn backoff(attempt: u32) -> Duration {
    // Deterministic spread instead of randomness: enough to de-synchronise
    // retries from many fills without another dependency.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = BACKOFF_BASE * 2u32.pow(attempt.saturating_sub(1));
    base + Duration::from_millis(u64::from(nanos % 100))
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Where to go next for a redirect, or why not.
fn redirect_target(from: &Uri, headers: &HeaderMap) -> Result<Uri, &'static str> {
    let loc = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("redirect without a Location")?;
    let next: Uri = if loc.starts_with('/') && !loc.starts_with("//") {
        let mut parts = from.clone().into_parts();
        parts.path_and_query = Some(loc.parse().map_err(|_| "invalid Location")?);
        Uri::from_parts(parts).map_err(|_| "invalid Location")?
    } else {
        loc.parse().map_err(|_| "invalid Location")?
    };
    match (from.scheme_str(), next.scheme_str()) {
        (Some("https"), Some("https")) | (Some("http"), Some("http" | "https")) => {}
        (Some("https"), Some("http")) => return Err("redirect from https to plain http"),
        _ => return Err("redirect to an unsupported URL"),
    }
    if next.authority().is_none_or(|a| a.as_str().contains('@')) {
        return Err("redirect to a URL without a host or with user-info");
    }
    Ok(next)
}

/// Drain a small error body so the connection can be reused.
async fn drain(resp: Response<Incoming>) {
    let mut body = resp.into_body();
    let mut seen = 0;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(1), body.frame()).await
    {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// One upstream's transport: client, auth and limits.
pub struct Transport {
    pub name: String,
    pub base: Uri,
    pub client: HttpClient,
    pub auth: Auth,
    pub read_timeout: Duration,
    pub pace: Pace,
    pub metrics: Metrics,
    pub breaker: Breaker,
}

impl Transport {
    /// Send a GET or HEAD for `path_and_query` on this upstream, answering
    /// auth challenges, following redirects and retrying transient failures.
    /// Returns the final response, whatever its status (429 excepted).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let admission = self
            .breaker
            .admit()
            .map_err(|retry_in| UpstreamError::Down {
                upstream: self.name.clone(),
                retry_in,
            })?;
        let result = self.send_inner(method, path_and_query, accept, scope).await;
        match &result {
            Ok(resp) => self.metrics.upstream_response(&self.name, resp.status()),
            Err(_) => self.metrics.upstream_error(&self.name),
        }
        match &result {
            Err(UpstreamError::Connect { .. } | UpstreamError::Timeout { .. }) => {
                tracing::warn!(upstream = %self.name, hold = ?super::breaker::HOLD, "upstream unreachable; failing fast for a while");
                admission.unreachable();
            }
            _ => admission.reachable(),
        }
        result
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let invalid_path = || UpstreamError::Invalid {
            upstream: self.name.clone(),
            what: "request path",
        };
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| invalid_path())?);
        let mut uri = Uri::from_parts(parts).map_err(|_| invalid_path())?;
        let mut auth = self.auth.cached(scope);
        let mut answered = false;
        let mut redirects = 0;
        let mut attempt = 1;
        loop {
            let on_upstream = same_origin(&uri, &self.base);
            let mut req = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .header(USER_AGENT, AGENT);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let (true, Some(h)) = (on_upstream, &auth) {
                req = req.header(AUTHORIZATION, h.clone());
            }
            let req = req.body(Empty::new()).map_err(|_| invalid_path())?;
            let resp = match tokio::time::timeout(self.read_timeout, self.client.request(req)).await
            {
                Err(_) => {
                    return Err(UpstreamError::Timeout {
                        upstream: self.name.clone(),
                        timeout: self.read_timeout,
                    });
                }
                Ok(Err(source)) => {
                    if attempt < MAX_ATTEMPTS {
                        tracing::debug!(upstream = %self.name, attempt, error = %source, "retrying after a transport error");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(UpstreamError::Connect {
                        upstream: self.name.clone(),
                        source,
                    });
                }
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && on_upstream && !answered {
                let challenge = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(Challenge::parse)
                    .next();
                drain(resp).await;
                let challenge = challenge.ok_or_else(|| UpstreamError::Unauthorized {
                    upstream: self.name.clone(),
                })?;
                auth = Some(
                    self.auth
                        .answer(&challenge, scope, &self.client, self.pace)
                        .await?,
                );
                answered = true;
                continue;
            }
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                redirects += 1;
                let next = if redirects > MAX_REDIRECTS {
                    Err("too many redirects")
                } else {
                    redirect_target(&uri, resp.headers())
                };
                drain(resp).await;
                uri = next.map_err(|reason| UpstreamError::Redirect {
                    upstream: self.name.clone(),
                    reason,
                })?;
                continue;
            }
            if status.is_server_error() && attempt < MAX_ATTEMPTS {
                drain(resp).await;
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let asked = retry_after(resp.headers());
                let wait = asked.unwrap_or_else(|| backoff(attempt));
                drain(resp).await;
                if attempt < MAX_ATTEMPTS && wait <= MAX_RETRY_AFTER {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
                return Err(UpstreamError::TooManyRequests {
                    upstream: self.name.clone(),
                    retry_after: asked,
                });
            }
            return Ok(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode_query_value("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(encode_query_value("v1.0-rc_1~"), "v1.0-rc_1~");
    }

    #[test]
    fn redirects_keep_https() {
        let from: Uri = "https://r.io/v2/a/blobs/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(LOCATION, "https://cdn.example/blob?sig=1".parse().unwrap());
        assert_eq!(
            redirect_target(&from, &h).unwrap().host(),
            Some("cdn.example")
        );
        h.insert(LOCATION, "/v2/other".parse().unwrap());
        assert_eq!(
            redirect_target(&from, &h).unwrap().to_string(),
            "https://r.io/v2/other"
        );
        h.insert(LOCATION, "http://cdn.example/blob".parse().unwrap());
        assert!(redirect_target(&from, &h).is_err());
        h.insert(LOCATION, "https://user:pw@cdn.example/".parse().unwrap());
        assert!(redirect_target(&from, &h).is_err());
        h.insert(LOCATION, "file:///etc/passwd".parse().unwrap());
        assert!(redirect_target(&from, &h).is_err());
    }

    #[test]
    fn credentials_stay_on_the_upstream_origin() {
        let base: Uri = "https://r.io/".parse().unwrap();
        assert!(same_origin(&"https://r.io/v2/x".parse().unwrap(), &base));
        assert!(!same_origin(
            &"https://r.io:8443/v2/x".parse().unwrap(),
            &base
        ));
        assert!(!same_origin(
            &"https://cdn.r.io/v2/x".parse().unwrap(),
            &base
        ));
        assert!(!same_origin(&"http://r.io/v2/x".parse().unwrap(), &base));
    }

    #[test]
    fn parses_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}

//! The pull side of the OCI Distribution API, as HTTP.
//!
//! Owns the HTTP semantics of each endpoint: headers registries send
//! (`Docker-Content-Digest`, `Content-Type`, `Content-Length` on HEAD too,
//! `Docker-Distribution-API-Version`, `ETag`, `OCI-Namespace`), `Accept`
//! negotiation, `Range`, conditional requests, `Warning` on stale answers,
//! and health and metrics endpoints. Requests arrive routed by
//! [`crate::router`]; content comes from [`crate::cache`], and every
//! manifest passes the policy [`crate::gate`] (when a policy is configured)
//! before a byte of it is served. Errors are rendered by [`crate::error`],
//! and nowhere else. This module must not fetch, store or verify content
//! itself.

mod access;
mod blobs;
mod lists;
mod manifests;

pub use blobs::{Part, RangeRequest, parse_range};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;

use crate::auth::Auth;
use crate::cache::fill::{BoxError, ByteStream};
use crate::cache::{Cache, CacheError};
use crate::error::{Rendered, render};
use crate::gate::{Decision, Gate};
use crate::metrics::{CacheResult, Metrics};
use crate::reference::RegistryHost;
use crate::router::{Endpoint, Route, RouteError, Router};
use access::Admitted;

/// Response body type of the whole server.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request refused")]
    Route(#[source] RouteError),
    #[error("cannot serve this request")]
    Cache(#[source] CacheError),
    #[error("the manifest's media type {0} is not in the request's Accept header")]
    NotAcceptable(&'static str),
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{}", .0.message())]
    Denied(Box<Decision>),
    #[error("too many connections (max_connections): try again shortly")]
    Overloaded,
    #[error("import failed")]
    Import(#[source] Box<crate::airgap::import::ImportError>),
    #[error("not allowed")]
    Auth(#[source] crate::auth::AuthError),
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        ApiError::Cache(e)
    }
}

/// What the access log records about a response (a response extension).
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub route: &'static str,
    pub cache: Option<CacheResult>,
    pub upstream: Option<RegistryHost>,
    /// Who asked (`[auth]`): a user, `cn:<CN>`, or `None` for nobody.
    pub client: Option<String>,
    /// The error chain, for failed requests.
    pub error: Option<String>,
}

/// A handler's answer.
struct Reply {
    response: Response<Body>,
    cache: Option<CacheResult>,
}

impl Reply {
    fn new(response: Response<Body>, cache: Option<CacheResult>) -> Reply {
        Reply { response, cache }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn streaming(stream: ByteStream) -> Body {
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

fn header(value: impl std::fmt::Display) -> HeaderValue {
    HeaderValue::from_str(&value.to_string()).expect("values written here are valid header text")
}

/// `Warning` for an answer served from cache because upstream failed.
fn stale_warning() -> HeaderValue {
    HeaderValue::from_static("110 portcullis \"Response is stale: upstream unavailable\"")
}

fn route_label(endpoint: Option<&Endpoint>) -> &'static str {
    match endpoint {
        None => "unrouted",
        Some(Endpoint::Healthz) => "healthz",
        Some(Endpoint::Readyz) => "readyz",
        Some(Endpoint::Metrics) => "metrics",
        Some(Endpoint::ApiBase) => "base",
        Some(Endpoint::Token) => "token",
        Some(Endpoint::Manifest(_)) => "manifest",
        Some(Endpoint::Blob(_)) => "blob",
        Some(Endpoint::TagsList) => "tags",
        Some(Endpoint::Referrers(_)) => "referrers",
    }
}

/// `Warning` for an answer the policy would refuse in enforce mode.
fn policy_warning(decision: &Decision) -> HeaderValue {
    // A quoted-string of visible ASCII only.
    let text: String = decision
        .message()
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '\''
            } else {
                c
            }
        })
        .collect();
    header(format!("199 portcullis \"{text}\""))
}

/// The application: routes requests and answers them.
pub struct App {
    router: Arc<Router>,
    cache: Cache,
    gate: Option<Arc<Gate>>,
    auth: Option<Arc<Auth>>,
    metrics: Metrics,
    draining: AtomicBool,
}

/// Which listener a request came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Main,
    Admin,
}

impl App {
    pub fn new(
        router: Arc<Router>,
        cache: Cache,
        gate: Option<Arc<Gate>>,
        auth: Option<Arc<Auth>>,
        metrics: Metrics,
    ) -> App {
        App {
            router,
            cache,
            gate,
            auth,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// From now on `/readyz` answers 503 so load balancers stop sending traffic.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Answer one request on the main listener. Never fails: errors
    /// become OCI error responses.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        self.answer(req, Listener::Main).await
    }

    async fn answer<B>(&self, req: Request<B>, listener: Listener) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        let routed = self.router.route(&parts.method, &parts.uri);
        let mut client = None;
        let (route, result) = match routed {
            Ok(route) => {
                let result = match self.admit(&route, &parts, listener).await {
                    Ok(Admitted::Caller(c)) => {
                        client = c.identity().map(str::to_owned);
                        self.dispatch(&route, &parts.method, &parts.headers, client.as_deref())
                            .await
                    }
                    Ok(Admitted::Answered(reply, c)) => {
                        client = c.identity().map(str::to_owned);
                        Ok(reply)
                    }
                    Err(e) => Err(e),
                };
                (Some(route), result)
            }
            Err(e) => (None, Err(ApiError::Route(e))),
        };
        let endpoint = route.as_ref().map(|r| &r.endpoint);
        let target = route.as_ref().and_then(|r| r.target.as_ref());
        let mut info = RequestInfo {
            route: route_label(endpoint),
            cache: None,
            upstream: target.map(|t| t.registry.clone()),
            client,
            error: None,
        };
        let mut response = match result {
            Ok(reply) => {
                info.cache = reply.cache;
                reply.response
            }
            Err(err) => {
                let rendered = render(&err, endpoint);
                info.error = Some(rendered.message.clone());
                error_response(&rendered, parts.method == Method::HEAD)
            }
        };
        let is_api = parts.uri.path().starts_with("/v2");
        let headers = response.headers_mut();
        if is_api {
            headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        }
        if let Some(ns) = target.and_then(|t| t.ns.as_ref()) {
            headers.insert(OCI_NAMESPACE, header(ns));
        }
        response.extensions_mut().insert(info);
        response
    }

    /// Answer a request on the admin listener: health and metrics; and,
    /// for a caller on the loopback (`local`), `POST /admin/import?path=`
    /// (a layout directory or `.tar` on this machine), which imports it
    /// into the running cache. Anyone else gets 404 for it.
    pub async fn handle_admin<B>(&self, req: Request<B>, local: bool) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        match req.uri().path() {
            "/metrics" | "/healthz" | "/readyz" => self.answer(req, Listener::Admin).await,
            "/admin/import" if local => match self.admin_import(&req).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %crate::error::chain(&e), "import refused");
                    error_response(&render(&e, None), head)
                }
            },
            _ => error_response(&render(&ApiError::Route(RouteError::NotFound), None), head),
        }
    }

    async fn admin_import<B>(&self, req: &Request<B>) -> Result<Response<Body>, ApiError> {
        if req.method() != Method::POST {
            return Err(ApiError::Route(RouteError::MethodNotAllowed(
                req.method().clone(),
            )));
        }
        let path = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("path="))
            .and_then(crate::router::percent_decode)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or(ApiError::Route(RouteError::BadQuery("path")))?;
        let progress = crate::airgap::progress::Progress::hidden();
        let report =
            crate::airgap::import::import_into(&self.cache, &self.router, &path, &progress)
                .await
                .map_err(|e| ApiError::Import(Box::new(e)))?;
        tracing::info!(path = %path.display(), images = report.images.len(), bytes = report.bytes, "imported");
        let images: Vec<serde_json::Value> = report
            .images
            .iter()
            .map(|(image, copied, skipped)| {
                serde_json::json!({"image": image, "copied": copied, "already_cached": skipped})
            })
            .collect();
        let body = serde_json::to_vec(
            &serde_json::json!({"images": images, "bytes": report.bytes, "trust": report.trust}),
        )
        .expect("the report serializes");
        let mut r = Response::new(full(Bytes::from(body)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(r)
    }

    /// Answer a request on a connection over `max_connections`: health
    /// checks as usual (a load balancer must still see the process), 503
    /// for anything else.
    pub async fn handle_overflow<B>(&self, req: Request<B>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" | "/readyz" => self.handle(req).await,
            _ => {
                let rendered = render(&ApiError::Overloaded, None);
                error_response(&rendered, req.method() == Method::HEAD)
            }
        }
    }

    async fn dispatch(
        &self,
        route: &Route,
        method: &Method,
        headers: &http::HeaderMap,
        client: Option<&str>,
    ) -> Result<Reply, ApiError> {
        let head = method == Method::HEAD;
        match (&route.endpoint, &route.target) {
            (Endpoint::Healthz, _) => Ok(Reply::new(text(StatusCode::OK, "ok\n"), None)),
            (Endpoint::Readyz, _) => Ok(Reply::new(
                if self.draining.load(Ordering::SeqCst) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
                } else if !self.cache.is_writable() {
                    // Cached content is still served; new content cannot be
                    // recorded: send new pulls elsewhere until it can.
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the cache index cannot be written (disk full or failing)\n",
                    )
                } else {
                    text(StatusCode::OK, "ready\n")
                },
                None,
            )),
            (Endpoint::Metrics, _) => {
                let mut r = Response::new(full(self.metrics.encode()));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(Reply::new(r, None))
            }
            (Endpoint::ApiBase, _) => {
                let mut r = Response::new(if head { empty() } else { full("{}") });
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
                Ok(Reply::new(r, None))
            }
            (Endpoint::Manifest(reference), Some(t)) => {
                self.manifest(t, reference, head, headers, client).await
            }
            // Answered by `admit` when [auth] exists.
            (Endpoint::Token, _) => Err(ApiError::Route(RouteError::NotFound)),
            (Endpoint::Blob(digest), Some(t)) => self.blob(t, digest, head, headers, client).await,
            (Endpoint::TagsList, Some(t)) => self.tags(t, &route.query).await,
            (Endpoint::Referrers(digest), Some(t)) => self.referrers(t, digest, &route.query).await,
            (_, None) => Err(ApiError::Route(RouteError::NotFound)),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn error_response(rendered: &Rendered, head: bool) -> Response<Body> {
    let body = rendered.body();
    let len = body.len();
    let mut r = Response::new(if head { empty() } else { full(body) });
    *r.status_mut() = rendered.status;
    let (k, v) = Rendered::content_type();
    let headers = r.headers_mut();
    headers.insert(k, v);
    headers.insert(CONTENT_LENGTH, header(len));
    for (k, v) in &rendered.headers {
        headers.insert(k.clone(), v.clone());
    }
    r
}

/// True if an `If-None-Match` header matches `etag`.
fn not_modified(headers: &http::HeaderMap, etag: &str) -> bool {
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

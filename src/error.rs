//! The one place errors become HTTP responses.
//!
//! Every module has its own error enum with its causes attached as sources;
//! this module maps them, once, to an HTTP status and the OCI error JSON
//! (`{"errors":[{"code","message"}]}`) with the spec's codes. The code for
//! "not found"-like failures depends on what was asked for (a manifest, a
//! blob, a repository). Messages carry the whole cause chain; no error in this
//! crate ever holds a secret. This module must not decide anything else about
//! a request.

use std::error::Error;
use std::fmt::Write as _;

use http::header::{CONTENT_RANGE, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::api::ApiError;
use crate::auth::AuthError;
use crate::cache::CacheError;
use crate::manifest::ManifestError;
use crate::router::{Endpoint, RouteError};
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// The error codes of the OCI Distribution Spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Denied,
    Unauthorized,
    Unsupported,
    TooManyRequests,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Denied => "DENIED",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
        }
    }
}

/// An error, rendered with all its sources: `a: b: c`.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let _ = write!(s, ": {e}");
        cur = e.source();
    }
    s
}

/// A rendered error response: status, code, message and extra headers.
#[derive(Debug)]
pub struct Rendered {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Rendered {
    /// The OCI error JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message }]
        })
        .to_string()
    }

    pub fn content_type() -> (http::HeaderName, HeaderValue) {
        (CONTENT_TYPE, HeaderValue::from_static("application/json"))
    }
}

/// The "unknown" code for what the request asked for.
fn unknown(endpoint: Option<&Endpoint>) -> Code {
    match endpoint {
        Some(Endpoint::Manifest(_) | Endpoint::Referrers(_)) => Code::ManifestUnknown,
        Some(Endpoint::Blob(_)) => Code::BlobUnknown,
        _ => Code::NameUnknown,
    }
}

/// Map an error to status, code and headers.
pub fn render(err: &ApiError, endpoint: Option<&Endpoint>) -> Rendered {
    let mut headers = Vec::new();
    let (status, code) = match err {
        ApiError::Route(e) => match e {
            RouteError::NotFound => (StatusCode::NOT_FOUND, Code::Unsupported),
            RouteError::MethodNotAllowed(_) | RouteError::Upload => {
                (StatusCode::METHOD_NOT_ALLOWED, Code::Unsupported)
            }
            RouteError::BadName(_) | RouteError::BadTag(_) | RouteError::BadNamespace(_) => {
                (StatusCode::BAD_REQUEST, Code::NameInvalid)
            }
            RouteError::BadDigest(_) => (StatusCode::BAD_REQUEST, Code::DigestInvalid),
            RouteError::BadQuery(_) => (StatusCode::BAD_REQUEST, Code::Unsupported),
            RouteError::UnknownRegistry(_) | RouteError::NoDefault => {
                (StatusCode::NOT_FOUND, Code::NameUnknown)
            }
        },
        ApiError::NotAcceptable(_) => (StatusCode::NOT_FOUND, Code::ManifestUnknown),
        ApiError::Denied(_) => (StatusCode::FORBIDDEN, Code::Denied),
        ApiError::Overloaded => {
            headers.push((RETRY_AFTER, HeaderValue::from_static("1")));
            (StatusCode::SERVICE_UNAVAILABLE, Code::TooManyRequests)
        }
        ApiError::RangeNotSatisfiable { size } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.push((CONTENT_RANGE, v));
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, Code::SizeInvalid)
        }
        ApiError::Cache(e) => cache_status(e.root(), endpoint, &mut headers),
        ApiError::Import(e) if e.is_bad_content() => {
            (StatusCode::UNPROCESSABLE_ENTITY, Code::ManifestInvalid)
        }
        ApiError::Import(_) => (StatusCode::INTERNAL_SERVER_ERROR, Code::Unsupported),
        ApiError::Auth(e) => match e {
            AuthError::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.push((WWW_AUTHENTICATE, v));
                }
                (StatusCode::UNAUTHORIZED, Code::Unauthorized)
            }
            AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, Code::Denied),
            AuthError::RateLimited { retry_after } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    headers.push((RETRY_AFTER, v));
                }
                (StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests)
            }
            AuthError::Busy => {
                headers.push((RETRY_AFTER, HeaderValue::from_static("1")));
                (StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests)
            }
        },
    };
    Rendered {
        status,
        code,
        message: chain(err),
        headers,
    }
}

fn cache_status(
    err: &CacheError,
    endpoint: Option<&Endpoint>,
    headers: &mut Vec<(http::HeaderName, HeaderValue)>,
) -> (StatusCode, Code) {
    let unknown = unknown(endpoint);
    match err {
        CacheError::ManifestUnknown => (StatusCode::NOT_FOUND, Code::ManifestUnknown),
        CacheError::BlobUnknown => (StatusCode::NOT_FOUND, Code::BlobUnknown),
        CacheError::Offline => (StatusCode::NOT_FOUND, unknown),
        CacheError::ManifestInvalid(ManifestError::Digest { .. }) => {
            (StatusCode::BAD_GATEWAY, Code::DigestInvalid)
        }
        CacheError::ManifestInvalid(_) | CacheError::BadReferrers => {
            (StatusCode::BAD_GATEWAY, Code::ManifestInvalid)
        }
        CacheError::NoLength => (StatusCode::BAD_GATEWAY, unknown),
        CacheError::Store(e) if e.is_integrity() => (StatusCode::BAD_GATEWAY, Code::DigestInvalid),
        CacheError::Store(StoreError::Shared(_) | StoreError::Upload(_)) => {
            headers.push((RETRY_AFTER, HeaderValue::from_static("5")));
            (StatusCode::SERVICE_UNAVAILABLE, unknown)
        }
        CacheError::Upstream(e) => match e {
            UpstreamError::NotFound { .. } => (StatusCode::NOT_FOUND, unknown),
            UpstreamError::Unauthorized { .. } => (StatusCode::FORBIDDEN, Code::Denied),
            UpstreamError::TooManyRequests { retry_after, .. } => {
                if let Some(v) = retry_after
                    .and_then(|d| HeaderValue::from_str(&d.as_secs().max(1).to_string()).ok())
                {
                    headers.push((RETRY_AFTER, v));
                }
                (StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests)
            }
            UpstreamError::Timeout { .. } | UpstreamError::TooSlow { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, unknown)
            }
            UpstreamError::TooLarge { .. } if matches!(endpoint, Some(Endpoint::Manifest(_))) => {
                (StatusCode::BAD_GATEWAY, Code::ManifestInvalid)
            }
            _ => (StatusCode::BAD_GATEWAY, unknown),
        },
        CacheError::Busy { .. } => {
            headers.push((RETRY_AFTER, HeaderValue::from_static("5")));
            (StatusCode::SERVICE_UNAVAILABLE, Code::TooManyRequests)
        }
        CacheError::Store(_)
        | CacheError::Index(_)
        | CacheError::Task(_)
        | CacheError::FillAbandoned => (StatusCode::INTERNAL_SERVER_ERROR, unknown),
        CacheError::Shared(inner) => cache_status(inner.root(), endpoint, headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Digest};
    use crate::reference::Reference;
    use std::sync::Arc;
    use std::time::Duration;

    fn manifest_endpoint() -> Endpoint {
        Endpoint::Manifest(Reference::Tag("v1".parse().unwrap()))
    }

    #[test]
    fn not_found_codes_follow_the_endpoint() {
        let e = ApiError::Cache(CacheError::Upstream(UpstreamError::NotFound {
            upstream: "u".into(),
        }));
        assert_eq!(
            render(&e, Some(&manifest_endpoint())).code,
            Code::ManifestUnknown
        );
        let blob = Endpoint::Blob(Digest::of(Algorithm::Sha256, b""));
        let r = render(&e, Some(&blob));
        assert_eq!(
            (r.status, r.code),
            (StatusCode::NOT_FOUND, Code::BlobUnknown)
        );
        assert_eq!(
            render(&e, Some(&Endpoint::TagsList)).code,
            Code::NameUnknown
        );
    }

    #[test]
    fn shared_errors_map_like_their_root() {
        let root = CacheError::Upstream(UpstreamError::TooManyRequests {
            upstream: "u".into(),
            retry_after: Some(Duration::from_secs(30)),
        });
        let e = ApiError::Cache(CacheError::Shared(Arc::new(CacheError::Shared(Arc::new(
            root,
        )))));
        let r = render(&e, Some(&manifest_endpoint()));
        assert_eq!(
            (r.status, r.code),
            (StatusCode::TOO_MANY_REQUESTS, Code::TooManyRequests)
        );
        assert_eq!(
            r.headers,
            vec![(RETRY_AFTER, HeaderValue::from_static("30"))]
        );
        assert!(r.message.contains("rate limiting"), "{}", r.message);
    }

    #[test]
    fn body_is_oci_error_json() {
        let e = ApiError::Route(RouteError::UnknownRegistry("quay.io".into()));
        let r = render(&e, None);
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_str(&r.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("quay.io")
        );
    }

    #[test]
    fn integrity_failures_are_bad_gateway() {
        let d = Digest::of(Algorithm::Sha256, b"a");
        let e = ApiError::Cache(CacheError::ManifestInvalid(ManifestError::Digest {
            expected: d.clone(),
            actual: d,
        }));
        let r = render(&e, Some(&manifest_endpoint()));
        assert_eq!(
            (r.status, r.code),
            (StatusCode::BAD_GATEWAY, Code::DigestInvalid)
        );
    }
}

//! `GET`/`HEAD /v2/<name>/manifests/<reference>` and `Accept` negotiation.

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderMap, WARNING};

use crate::gate::Outcome;
use http::{HeaderValue, Response, StatusCode};

use super::{
    ApiError, App, CONTENT_DIGEST, Reply, empty, full, header, not_modified, policy_warning,
    stale_warning,
};
use crate::metrics::CacheResult;
use crate::reference::Reference;
use crate::router::Target;

/// Does the request's `Accept` allow `media_type`? No `Accept` allows anything;
/// `*/*` and `type/*` match; `q=0` excludes.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut any_header = false;
    let mut allowed = false;
    for value in headers.get_all(ACCEPT).iter() {
        any_header = true;
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if range.is_empty() {
                continue;
            }
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            let (ty, _) = media_type.split_once('/').unwrap_or((media_type, ""));
            let matches = range == "*/*"
                || range.eq_ignore_ascii_case(media_type)
                || range
                    .strip_suffix("/*")
                    .is_some_and(|t| t.eq_ignore_ascii_case(ty));
            if matches {
                if refused {
                    return false;
                }
                allowed = true;
            }
        }
    }
    !any_header || allowed
}

impl App {
    pub(super) async fn manifest(
        &self,
        target: &Target,
        reference: &Reference,
        head: bool,
        headers: &HeaderMap,
        client: Option<&str>,
    ) -> Result<Reply, ApiError> {
        let (m, result) = self.cache.manifest(target, reference).await?;
        if !accepts(headers, m.media_type()) {
            return Err(ApiError::NotAcceptable(m.media_type()));
        }
        // The gate sees the exact bytes about to be served.
        let decision = match &self.gate {
            Some(gate) => Some(gate.check(target, reference, &m, client).await),
            None => None,
        };
        if let Some(d) = &decision
            && !d.outcome.serves()
        {
            return Err(ApiError::Denied(Box::new(d.clone())));
        }
        let etag = format!("\"{}\"", m.digest);
        let status = if not_modified(headers, &etag) {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        let send_body = !head && status == StatusCode::OK;
        let len = m.bytes.len();
        let media_type = m.media_type();
        let mut r = Response::new(if send_body { full(m.bytes) } else { empty() });
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
        if status == StatusCode::OK {
            h.insert(CONTENT_LENGTH, header(len));
        }
        h.insert(CONTENT_DIGEST, header(&m.digest));
        h.insert(ETAG, header(etag));
        if result == CacheResult::Stale {
            h.append(WARNING, stale_warning());
        }
        if let Some(d) = decision.filter(|d| d.outcome == Outcome::Warned) {
            h.append(WARNING, policy_warning(&d));
        }
        Ok(Reply::new(r, Some(result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

    fn with_accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn negotiates_like_registries() {
        assert!(accepts(&HeaderMap::new(), OCI_INDEX));
        // containerd sends the list in one header; Go clients often send several headers.
        let containerd = with_accept(&[
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
        ]);
        assert!(accepts(&containerd, OCI_INDEX));
        let split = with_accept(&[OCI_MANIFEST, DOCKER_MANIFEST]);
        assert!(accepts(&split, DOCKER_MANIFEST));
        assert!(
            !accepts(&split, OCI_INDEX),
            "served an index the client did not accept"
        );
        assert!(accepts(&with_accept(&["application/*"]), OCI_INDEX));
        assert!(!accepts(
            &with_accept(&["application/vnd.oci.image.index.v1+json;q=0, */*"]),
            OCI_INDEX
        ));
        assert!(accepts(
            &with_accept(&["APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON; q=0.5"]),
            OCI_INDEX
        ));
        assert!(!accepts(&with_accept(&["text/html"]), OCI_MANIFEST));
    }
}

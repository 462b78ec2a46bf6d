//! `GET /v2/<name>/tags/list` (with `n`/`last`) and
//! `GET /v2/<name>/referrers/<digest>` (with `artifactType`).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK, WARNING};
use http::{HeaderValue, Response};

use super::{ApiError, App, OCI_FILTERS_APPLIED, Reply, full, header, stale_warning};
use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::media::OCI_INDEX;
use crate::metrics::CacheResult;
use crate::router::{Query, Target};
use crate::upstream::client::encode_query_value;

/// Keep only the descriptors whose `artifactType` is `wanted`. Which ones is
/// decided on the parsed index; the JSON is only edited to drop the others
/// (the strict parse guarantees both read the same `manifests` array).
fn filter_referrers(index: &Manifest, wanted: &str) -> Option<Bytes> {
    let keep: Vec<bool> = index
        .parsed
        .children()
        .iter()
        .map(|d| d.artifact_type.as_deref() == Some(wanted))
        .collect();
    let mut v: serde_json::Value = serde_json::from_slice(&index.bytes).ok()?;
    let manifests = v.get_mut("manifests")?.as_array_mut()?;
    if manifests.len() != keep.len() {
        return None;
    }
    let mut i = 0;
    manifests.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

impl App {
    pub(super) async fn tags(&self, target: &Target, query: &Query) -> Result<Reply, ApiError> {
        let list = self
            .cache
            .tags(target, query.n, query.last.as_ref())
            .await?;
        let body = serde_json::json!({
            "name": target.client_name,
            "tags": list.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        })
        .to_string();
        let len = body.len();
        let mut r = Response::new(full(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, header(len));
        if list.result == CacheResult::Stale {
            h.insert(WARNING, stale_warning());
        }
        if let (true, Some(last)) = (list.more, list.tags.last()) {
            // Our own Link, in the client's namespace: never the upstream's text.
            let mut next = format!(
                "/v2/{}/tags/list?last={}",
                target.client_name,
                encode_query_value(last.as_str())
            );
            if let Some(n) = query.n {
                next.push_str(&format!("&n={n}"));
            }
            if let Some(ns) = &target.ns {
                next.push_str(&format!("&ns={}", encode_query_value(ns.as_str())));
            }
            h.insert(LINK, header(format!("<{next}>; rel=\"next\"")));
        }
        Ok(Reply::new(r, Some(list.result)))
    }

    pub(super) async fn referrers(
        &self,
        target: &Target,
        subject: &Digest,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let (index, result) = self.cache.referrers(target, subject).await?;
        let (body, filtered) = match &query.artifact_type {
            Some(wanted) => match filter_referrers(&index, wanted) {
                Some(b) => (b, true),
                None => (index.bytes, false),
            },
            None => (index.bytes, false),
        };
        let len = body.len();
        let mut r = Response::new(full(body));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
        h.insert(CONTENT_LENGTH, header(len));
        if filtered {
            h.insert(
                OCI_FILTERS_APPLIED,
                HeaderValue::from_static("artifactType"),
            );
        }
        if result == CacheResult::Stale {
            h.insert(WARNING, stale_warning());
        }
        Ok(Reply::new(r, Some(result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_artifact_type_and_keeps_other_fields() {
        let d = |s: &str| Digest::of(crate::digest::Algorithm::Sha256, s.as_bytes());
        let (a, b, c) = (d("a"), d("b"), d("c"));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{a}","size":1,"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json","annotations":{{"k":"v"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{b}","size":1,"artifactType":"application/spdx+json"}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{c}","size":1}}
        ]}}"#
        );
        let bytes = Bytes::from(index);
        let index = Manifest::check(&d_of(&bytes), bytes, None).unwrap();
        let out =
            filter_referrers(&index, "application/vnd.dev.sigstore.bundle.v0.3+json").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let m = v["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["digest"], a.to_string());
        assert_eq!(m[0]["annotations"]["k"], "v");
        assert_eq!(v["mediaType"], OCI_INDEX);
    }

    fn d_of(b: &[u8]) -> Digest {
        Digest::of(crate::digest::Algorithm::Sha256, b)
    }
}

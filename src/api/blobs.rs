//! `GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range` (206, 416) and `ETag`.

use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap, IF_RANGE, RANGE,
};
use http::{HeaderValue, Response, StatusCode};

use super::{ApiError, App, CONTENT_DIGEST, Reply, empty, header, not_modified, streaming};
use crate::cache::Held;
use crate::digest::Digest;
use crate::media::OCTET_STREAM;
use crate::reference::Reference;
use crate::router::Target;

/// A `Range` header that parsed (RFC 9110 byte ranges, checked arithmetic:
/// the `http-range-header` crate).
pub struct RangeRequest(http_range_header::ParsedRanges);

/// Parse `Range`. Absent or malformed headers yield `None`: the whole blob
/// is served, as RFC 9110 allows.
pub fn parse_range(headers: &HeaderMap) -> Option<RangeRequest> {
    let v = headers.get(RANGE)?.to_str().ok()?;
    http_range_header::parse_range_header(v)
        .ok()
        .map(RangeRequest)
}

/// What a `Range` asks of a blob of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Serve it all (several ranges: no multipart; or ranges to ignore).
    Whole,
    /// Bytes `start..end`, `end` exclusive.
    Bytes { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

impl RangeRequest {
    /// Resolve against the blob's size; a last position past the end is
    /// clamped to it, as RFC 9110 says.
    pub fn resolve(&self, size: u64) -> Part {
        match self.0.validate(size) {
            Ok(ranges) => match ranges.as_slice() {
                [one] => match one.end().checked_add(1) {
                    Some(end) => Part::Bytes {
                        start: *one.start(),
                        end,
                    },
                    None => Part::Unsatisfiable,
                },
                [] => Part::Unsatisfiable,
                _ => Part::Whole,
            },
            Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => Part::Unsatisfiable,
            // Overlapping or excessive ranges: ignored, as RFC 9110 allows.
            Err(_) => Part::Whole,
        }
    }
}

impl App {
    pub(super) async fn blob(
        &self,
        target: &Target,
        digest: &Digest,
        head: bool,
        headers: &HeaderMap,
        client: Option<&str>,
    ) -> Result<Reply, ApiError> {
        // The blob endpoint is no way around the gate: a digest the cache
        // holds as a manifest is served here only if that manifest would be
        // served as one, in this repository.
        if let Some(gate) = &self.gate
            && let Some(m) = self.cache.cached_manifest(digest).await?
        {
            // Not even the decision says anything about another repository's content.
            self.cache.check_held(target, digest, Held::Blob).await?;
            let decision = gate
                .check(target, &Reference::Digest(digest.clone()), &m, client)
                .await;
            if !decision.outcome.serves() {
                return Err(ApiError::Denied(Box::new(decision)));
            }
        }
        let etag = format!("\"{digest}\"");
        let base = |status: StatusCode| {
            let mut r = Response::new(empty());
            *r.status_mut() = status;
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
            h.insert(CONTENT_DIGEST, header(digest));
            h.insert(ETAG, header(&etag));
            h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            r
        };
        if head {
            let (size, result) = self.cache.blob_size(target, digest).await?;
            let mut r = base(StatusCode::OK);
            r.headers_mut().insert(CONTENT_LENGTH, header(size));
            return Ok(Reply::new(r, Some(result)));
        }
        if not_modified(headers, &etag) {
            // The digest is the content: an unchanged ETag needs no lookup.
            return Ok(Reply::new(base(StatusCode::NOT_MODIFIED), None));
        }
        let blob = self.cache.blob(target, digest).await?;
        let result = blob.result;
        let if_range_ok = headers
            .get(IF_RANGE)
            .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == etag));
        let range = parse_range(headers).filter(|_| if_range_ok);
        let part = match range {
            None => Part::Whole,
            Some(spec) => {
                let size = blob.size_when_done().await?;
                spec.resolve(size)
            }
        };
        let (start, end) = match part {
            Part::Bytes { start, end } => (start, end),
            Part::Unsatisfiable => {
                let size = blob.size_when_done().await?;
                return Err(ApiError::RangeNotSatisfiable { size });
            }
            Part::Whole => {
                let mut r = base(StatusCode::OK);
                if let Some(size) = blob.size {
                    r.headers_mut().insert(CONTENT_LENGTH, header(size));
                }
                *r.body_mut() = streaming(blob.stream(0, None));
                return Ok(Reply::new(r, Some(result)));
            }
        };
        let size = blob.size_when_done().await?;
        let mut r = base(StatusCode::PARTIAL_CONTENT);
        let h = r.headers_mut();
        h.insert(CONTENT_LENGTH, header(end - start));
        h.insert(
            CONTENT_RANGE,
            header(format!("bytes {start}-{}/{size}", end - 1)),
        );
        *r.body_mut() = streaming(blob.stream(start, Some(end)));
        Ok(Reply::new(r, Some(result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(v: &str, size: u64) -> Option<Part> {
        let mut h = HeaderMap::new();
        h.insert(RANGE, v.parse().unwrap());
        parse_range(&h).map(|r| r.resolve(size))
    }

    #[test]
    fn single_ranges_resolve_with_the_end_clamped() {
        assert_eq!(
            resolve("bytes=0-99", 1000),
            Some(Part::Bytes { start: 0, end: 100 })
        );
        assert_eq!(
            resolve("bytes=100-", 1000),
            Some(Part::Bytes {
                start: 100,
                end: 1000
            })
        );
        assert_eq!(
            resolve("bytes=-5", 100),
            Some(Part::Bytes {
                start: 95,
                end: 100
            })
        );
        assert_eq!(
            resolve("bytes=-1000", 100),
            Some(Part::Bytes { start: 0, end: 100 })
        );
        assert_eq!(
            resolve("bytes=90-500", 100),
            Some(Part::Bytes {
                start: 90,
                end: 100
            })
        );
        // The largest last position a client can write: clamped, never wrapped.
        assert_eq!(
            resolve("bytes=0-18446744073709551615", 100),
            Some(Part::Bytes { start: 0, end: 100 })
        );
        assert_eq!(
            resolve("bytes=18446744073709551615-", 100),
            Some(Part::Unsatisfiable)
        );
        assert_eq!(resolve("bytes=100-", 100), Some(Part::Unsatisfiable));
        assert_eq!(resolve("bytes=-0", 100), Some(Part::Unsatisfiable));
    }

    #[test]
    fn malformed_or_multiple_ranges_serve_the_whole_blob() {
        for ignored in [
            "bytes=5-1",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "0-1",
        ] {
            assert_eq!(resolve(ignored, 100), None, "{ignored}");
        }
        assert_eq!(resolve("bytes=0-1,3-4", 100), Some(Part::Whole));
        assert_eq!(
            resolve("bytes=0-99999999999999999999999", 100),
            Some(Part::Bytes { start: 0, end: 100 }),
            "a last position beyond any u64 is clamped too"
        );
    }
}

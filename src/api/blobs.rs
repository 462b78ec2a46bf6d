//! `GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range` (206, 416) and `ETag`.

use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap, IF_RANGE, RANGE,
};
use http::{HeaderValue, Response, StatusCode};

use super::{ApiError, App, CONTENT_DIGEST, Reply, empty, header, not_modified, streaming};
use crate::digest::Digest;
use crate::media::OCTET_STREAM;
use crate::router::Target;

/// A single byte range as a client asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=start-` or `bytes=start-last`
    From { start: u64, last: Option<u64> },
    /// `bytes=-n`: the final n bytes.
    Suffix(u64),
}

/// Parse `Range`. Absent, malformed or multi-range headers yield `None`: the
/// whole blob is served, as RFC 9110 allows.
pub fn parse_range(headers: &HeaderMap) -> Option<RangeSpec> {
    let v = headers.get(RANGE)?.to_str().ok()?.trim();
    let spec = v.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Some(RangeSpec::Suffix(num(b)?)),
        (false, true) => Some(RangeSpec::From {
            start: num(a)?,
            last: None,
        }),
        (false, false) => {
            let (start, last) = (num(a)?, num(b)?);
            (start <= last).then_some(RangeSpec::From {
                start,
                last: Some(last),
            })
        }
        (true, true) => None,
    }
}

impl RangeSpec {
    /// Resolve against the blob's size: `start..end` (end exclusive), or
    /// `None` if unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            RangeSpec::From { start, .. } if start >= size => None,
            RangeSpec::From { start, last } => {
                Some((start, last.map_or(size, |l| (l + 1).min(size))))
            }
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(n) => Some((size.saturating_sub(n), size)),
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
    ) -> Result<Reply, ApiError> {
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
        let Some(spec) = range else {
            let mut r = base(StatusCode::OK);
            if let Some(size) = blob.size {
                r.headers_mut().insert(CONTENT_LENGTH, header(size));
            }
            *r.body_mut() = streaming(blob.stream(0, None));
            return Ok(Reply::new(r, Some(result)));
        };
        let size = blob.size_when_done().await?;
        let (start, end) = spec
            .resolve(size)
            .ok_or(ApiError::RangeNotSatisfiable { size })?;
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

    fn range(v: &str) -> Option<RangeSpec> {
        let mut h = HeaderMap::new();
        h.insert(RANGE, v.parse().unwrap());
        parse_range(&h)
    }

    #[test]
    fn parses_single_ranges() {
        assert_eq!(
            range("bytes=0-99"),
            Some(RangeSpec::From {
                start: 0,
                last: Some(99)
            })
        );
        assert_eq!(
            range("bytes=100-"),
            Some(RangeSpec::From {
                start: 100,
                last: None
            })
        );
        assert_eq!(range("bytes=-5"), Some(RangeSpec::Suffix(5)));
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "0-1",
        ] {
            assert_eq!(range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn resolves_against_size() {
        let r = |s: RangeSpec| s.resolve(100);
        assert_eq!(
            r(RangeSpec::From {
                start: 0,
                last: Some(9)
            }),
            Some((0, 10))
        );
        assert_eq!(
            r(RangeSpec::From {
                start: 90,
                last: Some(500)
            }),
            Some((90, 100))
        );
        assert_eq!(
            r(RangeSpec::From {
                start: 99,
                last: None
            }),
            Some((99, 100))
        );
        assert_eq!(
            r(RangeSpec::From {
                start: 100,
                last: None
            }),
            None
        );
        assert_eq!(r(RangeSpec::Suffix(10)), Some((90, 100)));
        assert_eq!(r(RangeSpec::Suffix(1000)), Some((0, 100)));
        assert_eq!(r(RangeSpec::Suffix(0)), None);
    }
}

//! `Range` headers against blob sizes: none may panic, and a satisfiable
//! range always lies inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Ok(value) = http::HeaderValue::from_bytes(&data[8..]) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::RANGE, value);
    if let Some(r) = portcullis::api::parse_range(&headers)
        && let portcullis::api::Part::Bytes { start, end } = r.resolve(size)
    {
        assert!(start < end && end <= size, "{start}..{end} of {size}");
    }
});

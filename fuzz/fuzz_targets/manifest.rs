//! The one manifest model: any bytes, with and without a Content-Type.
//! None may panic; what parses is an image or an index, never both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::manifest::Parsed;

fuzz_target!(|data: &[u8]| {
    for ct in [
        None,
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.oci.image.index.v1+json"),
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    ] {
        if let Ok(p) = Parsed::parse(data, ct) {
            assert!(p.layers().is_empty() || p.children().is_empty());
            let _ = p.artifact();
        }
    }
});

//! DSSE envelopes (legacy `.att` layers) through the verifier, with and
//! without the annotations that carry a certificate and a log entry: none
//! may panic, and with no signer nothing verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::digest::{Algorithm, Digest};
use portcullis::gate::discover::Evidence;
use portcullis::gate::verify::{Purpose, check, claimed_subject};

fuzz_target!(|data: &[u8]| {
    let (head, rest) = data.split_at(data.len().min(1));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let with_annotations = head.first().is_some_and(|b| b & 1 == 1);
    let evidence = Evidence::Envelope {
        layer: Digest::of(Algorithm::Sha256, rest),
        json: bytes::Bytes::copy_from_slice(rest),
        certificate: with_annotations.then(|| text(rest)),
        chain: None,
        rekor_bundle: with_annotations.then(|| text(rest)),
    };
    let subject = claimed_subject(&evidence).unwrap_or_else(|_| Digest::of(Algorithm::Sha256, b"x"));
    let c = check(&evidence, &subject, &[], Purpose::Attachment);
    assert!(c.matched.is_empty());
});

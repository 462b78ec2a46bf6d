//! Sigstore bundles and legacy simple-signing layers through the verifier:
//! none may panic, and with no signer nothing verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::digest::{Algorithm, Digest};
use portcullis::gate::discover::Evidence;
use portcullis::gate::verify::{Purpose, check};

fuzz_target!(|data: &[u8]| {
    let subject = Digest::of(Algorithm::Sha256, b"subject");
    let bytes = bytes::Bytes::copy_from_slice(data);
    let bundle = Evidence::Bundle {
        manifest: Digest::of(Algorithm::Sha256, data),
        json: bytes.clone(),
    };
    let text = String::from_utf8_lossy(data).into_owned();
    let legacy = Evidence::Legacy {
        layer: Digest::of(Algorithm::Sha256, data),
        payload: bytes,
        signature: text.clone(),
        certificate: Some(text.clone()),
        chain: Some(text.clone()),
        rekor_bundle: Some(text),
    };
    for e in [bundle, legacy] {
        for purpose in [Purpose::Signature, Purpose::Attachment] {
            assert!(check(&e, &subject, &[], purpose).matched.is_empty());
        }
    }
});

//! `WWW-Authenticate` challenges from upstreams: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::upstream::auth::Challenge;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Challenge::parse(s);
    }
});

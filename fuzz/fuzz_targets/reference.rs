//! The name grammar: repository names, tags, digests, registry hosts, and
//! image references as people write them. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::digest::Digest;
use portcullis::reference::{Reference, RegistryHost, RepoName, Tag};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = s.parse::<RepoName>();
    let _ = s.parse::<Tag>();
    let _ = s.parse::<Digest>();
    let _ = s.parse::<RegistryHost>();
    if let Ok(r) = s.parse::<Reference>() {
        // What parses prints back as itself.
        assert_eq!(r.to_string().parse::<Reference>().ok(), Some(r));
    }
    let upstreams = portcullis::config::Config::parse(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n",
        "fuzz",
        std::path::Path::new("/nonexistent"),
    )
    .expect("the fuzz config parses")
    .upstreams;
    let router = portcullis::router::Router::new(&upstreams);
    let _ = router.resolve_image(s);
    if let Ok(uri) = format!("/v2/{s}").parse::<http::Uri>() {
        let _ = router.route(&http::Method::GET, &uri);
    }
});

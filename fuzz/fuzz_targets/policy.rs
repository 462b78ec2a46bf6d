//! Policy files: any text is a policy or an error naming its key, never a
//! panic (the files it names do not exist, so key and root loading fail
//! cleanly too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let upstreams = portcullis::config::Config::parse(
        "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\ndefault = true\n",
        "fuzz",
        std::path::Path::new("/nonexistent"),
    )
    .expect("the fuzz config parses")
    .upstreams;
    if let Ok(p) = Policy::parse(text, std::path::Path::new("/nonexistent/policy.toml"), &upstreams) {
        let _ = p.rule_for("docker.io/library/alpine");
    }
});

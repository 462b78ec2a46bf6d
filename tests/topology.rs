//! Enforcement topology, with the real runtimes: every runtime falls back to
//! the original registry when a mirror refuses, so a mirror configuration
//! with a fallback walks around the gate, and only the fail-closed
//! configurations of docs/runtimes.md enforce it. Both are shown here, for
//! containerd (hosts.toml) and podman/CRI-O (registries.conf).
//!
//! The "original registry" is the real upstream on 127.0.0.1, reachable on
//! purpose: that is the bypass these tests demonstrate. The signed image
//! still passes the fail-closed configurations.

mod support;

use support::containerd::Containerd;
use support::gate::Trust;
use support::images::TestImage;
use support::oci_push::push_sig;
use support::podman::Podman;
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::signing::{CosignKey, simple_signing_payload};
use support::{images::push_image, upstream};

const KIB: usize = 1024;
const REGISTRY: &str = "registry.invalid";

struct Setup {
    reg: Registry,
    p: Portcullis,
    signed: TestImage,
}

/// An upstream with `test/signed:v1` (signed with the policy's key) and
/// `test/unsigned:v1`, and portcullis in front of it as `registry.invalid`
/// with a policy that denies everything but the signed repository's
/// signed images.
fn setup() -> Setup {
    let reg = Registry::start(Mode::Plain).unwrap();
    let push =
        |repo_tag: &str| push_image(&reg.host(), repo_tag, "linux", "amd64", &[KIB], None).unwrap();
    let signed = push("test/signed:v1");
    push("test/unsigned:v1");
    let key = CosignKey::p256();
    let payload = simple_signing_payload(&format!("{REGISTRY}/test/signed"), signed.top_digest());
    push_sig(
        &reg.host(),
        "test/signed",
        signed.top_digest(),
        &[key.sign_layer(&payload)],
    )
    .unwrap();
    let trust = Trust::default().key("release", &key);
    let policy = format!(
        "default = \"deny\"\n[[rule]]\nname = \"signed\"\nimages = [\"{REGISTRY}/test/signed\"]\nsigners = [{{ key = \"release\" }}]\n{}",
        trust.text
    );
    let files = trust.files_with_policy(&policy);
    let config = format!(
        "policy = \"policy.toml\"\n{}",
        upstream(REGISTRY, &reg.url())
    );
    let p = Portcullis::start_with_files(&config, &files).unwrap();
    Setup { reg, p, signed }
}

/// How many requests for `repo`'s manifests portcullis refused with 403.
fn refusals(p: &Portcullis, repo: &str) -> usize {
    p.flush_logs()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request" && v["status"] == 403)
        .filter(|v| {
            v["path"]
                .as_str()
                .is_some_and(|p| p.contains(&format!("{repo}/manifests/")))
        })
        .count()
}

/// Requests for `test/unsigned:v1`'s manifest that reached the registry
/// from a runtime, not from portcullis.
fn direct_manifest_requests(reg: &Registry, method: &str) -> usize {
    reg.requests()
        .iter()
        .filter(|e| e.method == method && e.path.starts_with("/v2/test/unsigned/manifests/v1"))
        .filter(|e| !e.user_agent.starts_with("portcullis/"))
        .count()
}

/// After a runtime pulled `test/unsigned:v1` with a fallback configured:
/// portcullis refused it, and the runtime then asked the registry directly
/// (with `method`). Returns the number of refusals so far.
fn assert_walked_around(s: &Setup, method: &str) -> usize {
    let refused = refusals(&s.p, "test/unsigned");
    assert!(refused >= 1, "portcullis refused it");
    assert!(
        direct_manifest_requests(&s.reg, method) >= 1,
        "and the runtime got it from the registry anyway"
    );
    refused
}

/// A fresh containerd whose hosts.toml for `registry.invalid` tries `host`
/// first and then `server`.
fn node_with_hosts(server: &str, host: &str) -> Containerd {
    let node = Containerd::start().unwrap();
    let hosts = format!(
        "server = \"{server}\"\n\n[host.\"{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    node.set_hosts(REGISTRY, &hosts).unwrap();
    node
}

#[test]
fn containerd_walks_around_a_refusal_through_a_fallback_host_and_not_with_the_mirror_as_server() {
    let s = setup();
    let unsigned = format!("{REGISTRY}/test/unsigned:v1");
    let mirror = format!("http://{}", s.p.host());

    // The usual mirror config: portcullis as a [host], the real registry as
    // `server`. containerd takes portcullis's 403 and asks the registry.
    let node = node_with_hosts(&s.reg.url(), &mirror);
    node.pull(&unsigned, &[]).unwrap();
    // (containerd retries a refused HEAD as a GET before moving on.)
    let refused = assert_walked_around(&s, "HEAD");

    // Fail closed: portcullis is the server, there is no other host.
    let node = node_with_hosts(&mirror, &mirror);
    let err = node.pull_fails(&unsigned).unwrap();
    assert!(err.contains("403"), "{err}");
    assert!(refusals(&s.p, "test/unsigned") > refused);
    assert!(node.content().unwrap().is_empty(), "nothing of it landed");
    // The signed image still pulls.
    node.pull(&format!("{REGISTRY}/test/signed:v1"), &[])
        .unwrap();
    assert!(
        node.content()
            .unwrap()
            .contains(&s.signed.top_digest().to_owned())
    );
}

#[test]
fn podman_walks_around_a_refusal_through_the_primary_location_and_not_with_the_mirror_as_location()
{
    let s = setup();
    let unsigned = format!("{REGISTRY}/test/unsigned:v1");

    // The usual mirror config: the registry as `location`, portcullis as a
    // mirror. podman takes portcullis's 403 and pulls from `location`.
    let weak = Podman::new(&format!(
        "[[registry]]\nprefix = \"{REGISTRY}\"\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}/{REGISTRY}\"\ninsecure = true\n",
        s.reg.host(),
        s.p.host()
    ))
    .unwrap();
    weak.pull(&unsigned, &[]).unwrap();
    let refused = assert_walked_around(&s, "GET");

    // Fail closed, two ways. Portcullis as the location itself, with no
    // mirrors:
    let as_location = format!(
        "[[registry]]\nprefix = \"{REGISTRY}\"\nlocation = \"{}/{REGISTRY}\"\ninsecure = true\n",
        s.p.host()
    );
    // or the registry `blocked`, with portcullis as its mirror. `blocked`
    // guards only a location equal to the prefix (containers/image checks
    // the rewritten reference), so this pulls the registry by its own
    // (reachable) name; the mirror location names it `registry.invalid` to
    // portcullis.
    let up = s.reg.host();
    let blocked = format!(
        "[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\ninsecure = true\nblocked = true\n\n[[registry.mirror]]\nlocation = \"{}/{REGISTRY}\"\ninsecure = true\n",
        s.p.host()
    );
    let mut refused = refused;
    for (conf, registry) in [(as_location, REGISTRY), (blocked, up.as_str())] {
        let closed = Podman::new(&conf).unwrap();
        let err = match closed.pull(&format!("{registry}/test/unsigned:v1"), &[]) {
            Ok(_) => panic!("podman pulled an unsigned image through:\n{conf}"),
            Err(e) => e.0,
        };
        assert!(
            err.contains("refused by the policy"),
            "podman shows portcullis's reason: {err}"
        );
        let now = refusals(&s.p, "test/unsigned");
        assert!(now > refused);
        refused = now;
        closed
            .pull(&format!("{registry}/test/signed:v1"), &[])
            .unwrap();
    }
    assert_eq!(
        direct_manifest_requests(&s.reg, "GET"),
        1,
        "only the fallback configuration reached the registry directly"
    );
}

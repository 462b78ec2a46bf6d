//! The policy gate in the flows nodes and operators hit: multi-arch images,
//! policy reloads, rollouts with `enforce_from`, upstream trouble while
//! looking for signatures, Docker Hub short names, junk signatures beside
//! good ones, lookalike identities, and `portcullis verify`.

mod support;

use std::process::Command;

use support::gate::*;
use support::images::{TestImage, push_image, push_multiarch};
use support::oci_push::{self, Descriptor, Junk, copy_image, push_bundle_referrer, push_sig};
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::signing::{
    BundleSigner, CosignKey, LeafOptions, Sigstore, cosign_sign_statement, simple_signing_payload,
};
use support::{http_get, upstream};

const KIB: usize = 1024;

fn enforce(images: &str) -> String {
    format!(
        "[[rule]]\nname = \"signed\"\nimages = [\"{images}\"]\nsigners = [{{ key = \"release\" }}]\n"
    )
}

fn last_outcome(p: &Portcullis, reference: &str, digest: &str) -> String {
    let lines = audits_for(p, reference, digest);
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no audit line for {reference}@{digest}"));
    last["outcome"].as_str().unwrap_or("").to_owned()
}

fn multiarch() -> (Registry, TestImage) {
    let reg = Registry::start(Mode::Plain).unwrap();
    let img = push_multiarch(&reg.host(), "test/multi:v1", &[KIB], None).unwrap();
    (reg, img)
}

#[test]
fn a_signed_index_covers_the_children_it_lists_unless_per_platform() {
    let (reg, img) = multiarch();
    let key = CosignKey::p256();
    push_sig(
        &reg.host(),
        "test/multi",
        img.top_digest(),
        &[key.sign_layer(&payload("test/multi", &img))],
    )
    .unwrap();
    let child = &img.manifests[0];

    // What containerd does: the index by tag, then a platform manifest by digest.
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &enforce("registry.test/test/**"),
        "",
        false,
    );
    assert_served(&pull(&p, "test/multi", "v1"), &img);
    let r = pull(&p, "test/multi", &child.digest);
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(r.body, child.raw);
    assert_eq!(
        last_outcome(&p, "registry.test/test/multi", &child.digest),
        "covered"
    );

    // per_platform: the child needs its own signature.
    let rules = format!("{}per_platform = true\n", enforce("registry.test/test/**"));
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &rules,
        "",
        false,
    );
    assert_served(&pull(&p, "test/multi", "v1"), &img);
    assert_refused(
        &pull(&p, "test/multi", &child.digest),
        "registry.test/test/multi",
        "signed",
        "no signature from a required signer",
    );
}

#[test]
fn an_unsigned_index_covers_nothing_and_children_stand_on_their_own() {
    let (reg, img) = multiarch();
    let key = CosignKey::p256();
    let (signed, unsigned) = (&img.manifests[0], &img.manifests[1]);
    let child_payload = simple_signing_payload("registry.test/test/multi", &signed.digest);
    push_sig(
        &reg.host(),
        "test/multi",
        &signed.digest,
        &[key.sign_layer(&child_payload)],
    )
    .unwrap();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &enforce("registry.test/test/**"),
        "",
        false,
    );

    assert_refused(
        &pull(&p, "test/multi", "v1"),
        "registry.test/test/multi",
        "signed",
        "0 matched",
    );
    let r = pull(&p, "test/multi", &signed.digest);
    assert_eq!(r.status, 200, "{}", body(&r));
    assert_eq!(
        last_outcome(&p, "registry.test/test/multi", &signed.digest),
        "verified"
    );
    assert_refused(
        &pull(&p, "test/multi", &unsigned.digest),
        "registry.test/test/multi",
        "signed",
        "0 matched",
    );
}

#[test]
fn policy_changes_are_reloaded_and_a_bad_policy_is_refused() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let allow = "[[rule]]\nname = \"open\"\nimages = [\"registry.test/**\"]\nmode = \"allow\"\n";
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        allow,
        "",
        false,
    );
    assert_served(&pull(&p, "test/img", "v1"), &img);

    let policy = p.config_dir().join("policy.toml");
    let keys = "[keys.release]\npublic_key = \"release.pub\"\n";
    std::fs::write(&policy, format!("{}{keys}", enforce("registry.test/**"))).unwrap();
    p.wait_for_log(|l| l.contains("\"policy reloaded\""))
        .unwrap();
    assert_refused(
        &pull(&p, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "0 matched",
    );

    // A broken policy is refused as a whole; the one in force stays.
    std::fs::write(
        &policy,
        format!("{}{keys}signers = \"oops\"\n", enforce("registry.test/**")),
    )
    .unwrap();
    p.wait_for_log(|l| l.contains("policy reload refused"))
        .unwrap();
    assert_refused(
        &pull(&p, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "0 matched",
    );
}

#[test]
fn enforce_from_warns_before_the_date_and_refuses_after() {
    let (reg, img) = one_image();
    for repo in ["future/img", "past/img"] {
        copy_image(&reg.host(), &img, repo, "v1").unwrap();
    }
    let key = CosignKey::p256();
    let rules = "[[rule]]\nname = \"rollout\"\nimages = [\"registry.test/future/*\"]\nenforce_from = \"2999-01-01\"\nsigners = [{ key = \"release\" }]\n\
                 [[rule]]\nname = \"enforced\"\nimages = [\"registry.test/past/*\"]\nenforce_from = \"2000-01-01\"\nsigners = [{ key = \"release\" }]\n";
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        rules,
        "",
        false,
    );
    let r = pull(&p, "future/img", "v1");
    assert_served(&r, &img);
    let warning = r.header("Warning").unwrap_or_default();
    assert!(warning.starts_with("199 portcullis"), "{warning}");
    assert!(
        warning.contains("rollout") && warning.contains("warn only until"),
        "{warning}"
    );
    assert_refused(
        &pull(&p, "past/img", "v1"),
        "registry.test/past/img",
        "enforced",
        "0 matched",
    );
}

#[test]
fn an_upstream_error_while_fetching_signatures_refuses() {
    let (mut reg, _img) = one_image();
    let key = CosignKey::p256();
    // Failures are not reused, and the image's tag stays fresh in the cache.
    let rules = format!("failure_ttl = \"0s\"\n{}", enforce("registry.test/**"));
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &rules,
        "[cache]\ntag_ttl = \"1h\"\n",
        false,
    );
    assert_refused(
        &pull(&p, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "0 matched",
    );
    reg.stop().unwrap();
    let m = assert_refused(
        &pull(&p, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "could not fetch signatures",
    );
    assert!(m.contains("cannot reach upstream"), "{m}");
}

#[test]
fn docker_hub_short_names_match_normalized_patterns() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let busybox = push_image(
        &reg.host(),
        "library/busybox:latest",
        "linux",
        "amd64",
        &[KIB],
        None,
    )
    .unwrap();
    push_image(
        &reg.host(),
        "library/other:latest",
        "linux",
        "amd64",
        &[KIB],
        None,
    )
    .unwrap();
    let key = CosignKey::p256();
    let signed = simple_signing_payload("docker.io/library/busybox", busybox.top_digest());
    push_sig(
        &reg.host(),
        "library/busybox",
        busybox.top_digest(),
        &[key.sign_layer(&signed)],
    )
    .unwrap();
    let policy = "[keys.release]\npublic_key = \"release.pub\"\n[[rule]]\nname = \"hub\"\nimages = [\"docker.io/busybox\"]\nsigners = [{ key = \"release\" }]\n";
    let config = format!(
        "policy = \"policy.toml\"\n{}default = true\n",
        upstream("docker.io", &reg.url())
    );
    let p = Portcullis::start_with_files(
        &config,
        &[
            ("policy.toml", policy),
            ("release.pub", &key.public_key_pem()),
        ],
    )
    .unwrap();

    // What dockerd sends to a registry mirror.
    let r = http_get(
        &format!("{}/v2/busybox/manifests/latest", p.url()),
        &[("Accept", ACCEPT)],
    )
    .unwrap();
    assert_served(&r, &busybox);
    assert_eq!(
        last_outcome(&p, "docker.io/library/busybox", busybox.top_digest()),
        "verified"
    );
    let r = http_get(
        &format!("{}/v2/library/other/manifests/latest", p.url()),
        &[("Accept", ACCEPT)],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", body(&r));
    let (_, message) = oci_error(&r);
    assert!(
        message.contains("docker.io/library/other") && message.contains("default is deny"),
        "{message}"
    );
}

#[test]
fn junk_in_one_signature_format_does_not_mask_a_valid_signature_in_the_other() {
    let (reg, img) = one_image();
    let host = reg.host();
    let key = CosignKey::p256();
    let sigstore = Sigstore::new();
    let subject = Descriptor::of_image(&img);

    // A valid .sig beside junk referrers.
    copy_image(&host, &img, "mix/sig-ok", "v1").unwrap();
    push_sig(
        &host,
        "mix/sig-ok",
        img.top_digest(),
        &[key.sign_layer(&payload("mix/sig-ok", &img))],
    )
    .unwrap();
    for junk in [Junk::BadJson, Junk::NotABundle] {
        oci_push::push_junk_referrer(&host, "mix/sig-ok", &subject, junk).unwrap();
    }
    // A valid bundle referrer beside a .sig signed by a stranger.
    copy_image(&host, &img, "mix/bundle-ok", "v1").unwrap();
    let stranger = CosignKey::p256();
    push_sig(
        &host,
        "mix/bundle-ok",
        img.top_digest(),
        &[stranger.sign_layer(&payload("mix/bundle-ok", &img))],
    )
    .unwrap();
    let statement = cosign_sign_statement("registry.test/mix/bundle-ok", img.top_digest());
    let bundle = sigstore.dsse_bundle(BundleSigner::Key(&key), &statement);
    push_bundle_referrer(&host, "mix/bundle-ok", &subject, bundle.as_bytes()).unwrap();

    let trust = Trust::default()
        .key("release", &key)
        .root("test", &sigstore);
    let p = start(&reg, trust, &enforce("registry.test/mix/*"), "", false);
    assert_served(&pull(&p, "mix/sig-ok", "v1"), &img);
    assert_served(&pull(&p, "mix/bundle-ok", "v1"), &img);
    let line = audits_for(&p, "registry.test/mix/bundle-ok", img.top_digest())
        .pop()
        .unwrap();
    assert_eq!(line["checked"], 2, "both formats were examined: {line}");
}

#[test]
fn a_lookalike_identity_never_matches_an_anchored_regex() {
    let (reg, img) = one_image();
    let host = reg.host();
    let sigstore = Sigstore::new();
    let issuer = "https://accounts.example";
    for (repo, email) in [
        ("id/real", "release@acme.com"),
        ("id/lookalike", "release@acme.com.evil"),
    ] {
        copy_image(&host, &img, repo, "v1").unwrap();
        let leaf = sigstore.leaf(&LeafOptions::email(email, issuer));
        push_sig(
            &host,
            repo,
            img.top_digest(),
            &[sigstore.sign_keyless(&leaf, &payload(repo, &img))],
        )
        .unwrap();
    }
    let rules = format!(
        "[[rule]]\nname = \"acme\"\nimages = [\"registry.test/id/*\"]\nsigners = [{{ keyless = {{ root = \"test\", issuer = \"{issuer}\", subject_regex = \"release@acme\\\\.com\" }} }}]\n"
    );
    let p = start(
        &reg,
        Trust::default().root("test", &sigstore),
        &rules,
        "",
        false,
    );
    assert_served(&pull(&p, "id/real", "v1"), &img);
    let m = assert_refused(
        &pull(&p, "id/lookalike", "v1"),
        "registry.test/id/lookalike",
        "acme",
        "0 matched",
    );
    assert!(
        m.contains("release@acme.com.evil") && m.contains("does not match"),
        "{m}"
    );
}

#[test]
fn the_verify_command_reports_decisions_and_exits_accordingly() {
    let (reg, img) = one_image();
    copy_image(&reg.host(), &img, "cli/unsigned", "v1").unwrap();
    let key = CosignKey::p256();
    push_sig(
        &reg.host(),
        "test/img",
        img.top_digest(),
        &[key.sign_layer(&payload("test/img", &img))],
    )
    .unwrap();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &enforce("registry.test/**"),
        "",
        false,
    );
    let config = p.config_dir().join("portcullis.toml");
    let verify = |image: &str, json: bool| {
        let args: &[&str] = if json {
            &["--output", "json", image]
        } else {
            &[image]
        };
        support::portcullis::cli("verify", &config, args)
    };

    let ok = verify("registry.test/test/img:v1", false);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.contains("decision: verified") && text.contains("key release"),
        "{text}"
    );

    let refused = verify("registry.test/cli/unsigned:v1", true);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(v["outcome"], "denied");
    assert_eq!(v["rule"], "signed");
    assert!(v["reason"].as_str().unwrap().contains("0 matched"));

    let unknown = verify("quay.io/nope/x:1", false);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("quay.io"));
}

#[test]
fn sighup_reloads_the_policy_and_does_not_stop_the_server() {
    let (reg, _img) = one_image();
    let key = CosignKey::p256();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &enforce("registry.test/**"),
        "",
        false,
    );
    let hup = Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    p.wait_for_log(|l| l.contains("SIGHUP: the policy is unchanged"))
        .unwrap();
    assert_refused(
        &pull(&p, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "0 matched",
    );
}

#[test]
fn signatures_can_live_in_a_separate_repository() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    // Signatures pushed to sigs/store instead of beside the image.
    push_sig(
        &reg.host(),
        "sigs/store",
        img.top_digest(),
        &[key.sign_layer(&payload("test/img", &img))],
    )
    .unwrap();
    let elsewhere = format!(
        "{}signature_repository = \"registry.test/sigs/store\"\n",
        enforce("registry.test/test/**")
    );
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &elsewhere,
        "",
        false,
    );
    assert_served(&pull(&p, "test/img", "v1"), &img);
    let beside = start(
        &reg,
        Trust::default().key("release", &key),
        &enforce("registry.test/test/**"),
        "",
        false,
    );
    assert_refused(
        &pull(&beside, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "0 matched",
    );
}

#[test]
fn signature_work_is_bounded() {
    let (reg, img) = one_image();
    let (key, stranger) = (CosignKey::p256(), CosignKey::p256());
    let pl = payload("test/img", &img);
    // 32 strangers' signatures first: the valid one is the 33rd layer.
    let mut layers: Vec<_> = (0..32).map(|_| stranger.sign_layer(&pl)).collect();
    layers.push(key.sign_layer(&pl));
    push_sig(&reg.host(), "test/img", img.top_digest(), &layers).unwrap();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &enforce("registry.test/**"),
        "",
        false,
    );
    let m = assert_refused(
        &pull(&p, "test/img", "v1"),
        "registry.test/test/img",
        "signed",
        "32 signatures checked, 0 matched",
    );
    assert!(m.contains("only the first 32 were read"), "{m}");
}

#[test]
fn pinned_digests_pass_and_nothing_else_does_under_a_rule_without_signers() {
    let (reg, img) = one_image();
    let other = push_image(
        &reg.host(),
        "test/other:v1",
        "linux",
        "amd64",
        &[2 * KIB],
        None,
    )
    .unwrap();
    let rules = format!(
        "[[rule]]\nname = \"pinned\"\nimages = [\"registry.test/**\"]\nallow_digests = [\"{}\"]\n",
        img.top_digest()
    );
    let p = start(&reg, Trust::default(), &rules, "", false);
    assert_served(&pull(&p, "test/img", "v1"), &img);
    assert_eq!(
        last_outcome(&p, "registry.test/test/img", img.top_digest()),
        "pinned"
    );
    assert_refused(
        &pull(&p, "test/other", "v1"),
        "registry.test/test/other",
        "pinned",
        "no signature from a required signer",
    );
    assert_eq!(
        last_outcome(&p, "registry.test/test/other", other.top_digest()),
        "denied"
    );
}

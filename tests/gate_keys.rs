//! The policy gate with cosign keys, end to end: signatures made at test
//! time (`support::signing`), pushed to a real `docker-registry`
//! (`support::oci_push`), pulled through portcullis by HTTP and by skopeo.
//!
//! Also proves the rest of the signing support against portcullis: keyless
//! `.sig` signatures from a private Sigstore instance, and Sigstore bundle
//! v0.3 referrers in the tag schema, next to junk referrers.

mod support;

use support::images::skopeo_copy_to_dir;
use support::oci_push::{self, Descriptor, Junk, copy_image, push_bundle_referrer, push_sig};
use support::registry_with_image;
use support::signing::{
    BundleSigner, ClaimEncoding, CosignKey, IssuerExtension, KeyKind, LeafOptions, SigLayer,
    Sigstore, SigstoreOptions, Workflow, cosign_sign_statement, in_toto_statement,
    simple_signing_payload,
};

const KIB: usize = 1024;

use support::gate::*;

const REF: &str = "registry.test/test/img";

#[test]
fn concurrent_first_pulls_of_one_digest_wait_for_one_verification() {
    let (reg, img) = one_image();
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
        "[[rule]]\nname = \"signed\"\nimages = [\"registry.test/test/**\"]\nsigners = [{ key = \"release\" }]\n",
        "",
        false,
    );
    let start = std::sync::Arc::new(std::sync::Barrier::new(12));
    let pulls: Vec<_> = (0..12)
        .map(|_| {
            let (url, start) = (p.url(), start.clone());
            let digest = img.top_digest().to_owned();
            let accept = img.top_media_type().to_owned();
            std::thread::spawn(move || {
                start.wait();
                support::http_get(
                    &format!("{url}/v2/registry.test/test/img/manifests/{digest}"),
                    &[("Accept", &accept)],
                )
                .unwrap()
            })
        })
        .collect();
    for pull in pulls {
        assert_served(&pull.join().unwrap(), &img);
    }
    assert_eq!(
        p.metric("portcullis_gate_verifications_total{kind=\"image\"}")
            .unwrap(),
        1.0,
        "12 concurrent first pulls ran their own verifications"
    );
    let decisions = audits_for(&p, REF, img.top_digest());
    assert_eq!(decisions.len(), 12);
    assert!(
        decisions.iter().all(|d| d["outcome"] == "verified"),
        "{decisions:?}"
    );
}

#[test]
fn signed_with_the_rules_key_passes_and_the_verdict_is_cached() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let sig = push_sig(
        &reg.host(),
        "test/img",
        img.top_digest(),
        &[key.sign_layer(&payload("test/img", &img))],
    )
    .unwrap();
    // tag_ttl 0: every tag (the image's and the .sig's) is revalidated
    // upstream, so only the verdict cache can spare a second discovery.
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        "[[rule]]\nname = \"signed\"\nimages = [\"registry.test/test/**\"]\nsigners = [{ key = \"release\" }]\n",
        "[cache]\ntag_ttl = \"0s\"\n",
        false,
    );
    reg.clear_requests().unwrap();

    assert_served(&pull(&p, "test/img", "v1"), &img);
    let first = audits_for(&p, REF, img.top_digest());
    assert_eq!(first.len(), 1, "one decision: {first:?}");
    assert_eq!(first[0]["outcome"], "verified");
    assert_eq!(first[0]["rule"], "signed");
    assert_eq!(first[0]["checked"], 1);
    assert!(
        first[0]["signers"]
            .as_str()
            .unwrap()
            .contains("key release"),
        "{}",
        first[0]
    );
    assert_eq!(first[0]["reason"], "1 of 1 required signers verified");
    assert_eq!(reg.count("GET", &format!("/manifests/{}", sig.tag)), 1);

    // The signature disappears upstream; the second pull still verifies, and
    // never looks for it: the verdict is cached.
    oci_push::delete_manifest(&reg.host(), "test/img", &sig.digest).unwrap();
    reg.clear_requests().unwrap();
    let pulled = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/img:v1", p.host()),
        &[],
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());
    let lookups: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|e| e.path.contains(".sig"))
        .collect();
    assert!(
        lookups.is_empty(),
        "no signature lookup on the second pull: {lookups:?}"
    );
    let all = audits_for(&p, REF, img.top_digest());
    assert!(all.len() >= 2, "{all:?}");
    assert!(all.iter().all(|v| v["outcome"] == "verified"), "{all:?}");
    let series =
        "portcullis_policy_decisions_total{rule=\"signed\",outcome=\"verified\",requirement=\"-\"}";
    assert_eq!(p.metric(series).unwrap(), all.len() as f64);
}

#[test]
fn every_key_type_verifies() {
    let (reg, img) = one_image();
    let mut trust = Trust::default();
    let mut rules = String::new();
    let mut keys = Vec::new();
    for kind in KeyKind::ALL {
        let key = CosignKey::generate(kind);
        let repo = format!("keys/{}", kind.name());
        copy_image(&reg.host(), &img, &repo, "v1").unwrap();
        push_sig(
            &reg.host(),
            &repo,
            img.top_digest(),
            &[key.sign_layer(&payload(&repo, &img))],
        )
        .unwrap();
        trust = trust.key(kind.name(), &key);
        rules += &format!(
            "[[rule]]\nname = \"{0}\"\nimages = [\"registry.test/keys/{0}\"]\nsigners = [{{ key = \"{0}\" }}]\n",
            kind.name()
        );
        keys.push(key);
    }
    let p = start(&reg, trust, &rules, "", false);
    for kind in KeyKind::ALL {
        let repo = format!("keys/{}", kind.name());
        let r = pull(&p, &repo, "v1");
        assert_served(&r, &img);
        let a = audits_for(&p, &format!("registry.test/{repo}"), img.top_digest());
        assert_eq!(a[0]["outcome"], "verified", "{kind:?}: {}", a[0]);
        assert!(
            a[0]["signers"]
                .as_str()
                .unwrap()
                .contains(&format!("key {}", kind.name())),
            "{}",
            a[0]
        );
        let series = format!(
            "portcullis_policy_decisions_total{{rule=\"{}\",outcome=\"verified\",requirement=\"-\"}}",
            kind.name()
        );
        assert_eq!(p.metric(&series).unwrap(), 1.0, "{series}");
    }
    // And through skopeo, for one of them.
    let pulled = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/keys/ed25519:v1", p.host()),
        &[],
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());
}

const ONE_KEY_RULE: &str = "[[rule]]\nname = \"signed\"\nimages = [\"registry.test/**\"]\nsigners = [{ key = \"release\" }]\n";

#[test]
fn unsigned_is_refused_with_a_reason() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        ONE_KEY_RULE,
        "",
        false,
    );
    let r = pull(&p, "test/img", "v1");
    let message = assert_refused(
        &r,
        REF,
        "signed",
        "no signature from a required signer: 0 signatures checked, 0 matched",
    );
    assert!(message.contains(img.top_digest()), "{message}");
    let a = audits_for(&p, REF, img.top_digest());
    assert_eq!(a[0]["outcome"], "denied");
    assert_eq!(a[0]["rule"], "signed");
    assert_eq!(a[0]["checked"], 0);
    let series = "portcullis_policy_decisions_total{rule=\"signed\",outcome=\"denied\",requirement=\"signature\"}";
    assert_eq!(p.metric(series).unwrap(), 1.0);

    let e = skopeo_copy_to_dir(
        &format!("docker://{}/registry.test/test/img:v1", p.host()),
        &[],
    )
    .err()
    .expect("skopeo must fail on a refused image");
    assert!(
        e.0.contains("no signature from a required signer"),
        "skopeo shows the reason: {e}"
    );
}

#[test]
fn wrong_key_other_digest_and_tampered_payload_are_refused() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let other_key = CosignKey::p256();
    let host = reg.host();
    let digest = img.top_digest();

    // Signed with a key the rule does not name.
    copy_image(&host, &img, "bad/wrong-key", "v1").unwrap();
    let wrong = other_key.sign_layer(&payload("bad/wrong-key", &img));
    push_sig(&host, "bad/wrong-key", digest, &[wrong]).unwrap();

    // The rule's key, but the payload names another image.
    copy_image(&host, &img, "bad/other-digest", "v1").unwrap();
    let other_digest = support::sha256_digest(b"another manifest");
    let p_other = simple_signing_payload("registry.test/bad/other-digest", &other_digest);
    push_sig(
        &host,
        "bad/other-digest",
        digest,
        &[key.sign_layer(&p_other)],
    )
    .unwrap();

    // The rule's key over this digest, then the payload changed.
    copy_image(&host, &img, "bad/tampered", "v1").unwrap();
    let good = key.sign_layer(&payload("bad/tampered", &img));
    let tampered_payload = String::from_utf8(good.payload.clone())
        .unwrap()
        .replace("registry.test/bad/tampered", "registry.test/bad/tampere")
        .into_bytes();
    let tampered = good.with_payload(tampered_payload);
    push_sig(&host, "bad/tampered", digest, &[tampered]).unwrap();

    let p = start(
        &reg,
        Trust::default().key("release", &key),
        ONE_KEY_RULE,
        "",
        false,
    );
    let one_checked = "no signature from a required signer: 1 signatures checked, 0 matched";
    let m = assert_refused(
        &pull(&p, "bad/wrong-key", "v1"),
        "registry.test/bad/wrong-key",
        "signed",
        one_checked,
    );
    assert!(
        m.contains("key release: the signature does not verify with this key"),
        "{m}"
    );
    let m = assert_refused(
        &pull(&p, "bad/other-digest", "v1"),
        "registry.test/bad/other-digest",
        "signed",
        one_checked,
    );
    assert!(
        m.contains(&format!("signed for another image (\"{other_digest}\")")),
        "{m}"
    );
    let m = assert_refused(
        &pull(&p, "bad/tampered", "v1"),
        "registry.test/bad/tampered",
        "signed",
        one_checked,
    );
    assert!(
        m.contains("the signature does not verify with this key"),
        "{m}"
    );
    let series = "portcullis_policy_decisions_total{rule=\"signed\",outcome=\"denied\",requirement=\"signature\"}";
    assert_eq!(p.metric(series).unwrap(), 3.0);
}

#[test]
fn a_threshold_of_two_needs_two_distinct_keys() {
    let (reg, img) = one_image();
    let (k1, k2) = (CosignKey::p256(), CosignKey::generate(KeyKind::Ed25519));
    let host = reg.host();
    let digest = img.top_digest();
    copy_image(&host, &img, "two/same-key", "v1").unwrap();
    let pl = payload("two/same-key", &img);
    // Two signatures (ECDSA is randomized: two distinct layers) by one key.
    push_sig(
        &host,
        "two/same-key",
        digest,
        &[k1.sign_layer(&pl), k1.sign_layer(&pl)],
    )
    .unwrap();
    copy_image(&host, &img, "two/two-keys", "v1").unwrap();
    let pl = payload("two/two-keys", &img);
    push_sig(
        &host,
        "two/two-keys",
        digest,
        &[k1.sign_layer(&pl), k2.sign_layer(&pl)],
    )
    .unwrap();

    let p = start(
        &reg,
        Trust::default().key("a", &k1).key("b", &k2),
        "[[rule]]\nname = \"two\"\nimages = [\"registry.test/two/*\"]\nthreshold = 2\nsigners = [{ key = \"a\" }, { key = \"b\" }]\n",
        "",
        false,
    );
    assert_refused(
        &pull(&p, "two/same-key", "v1"),
        "registry.test/two/same-key",
        "two",
        "1 of 2 required signers verified: 2 signatures checked",
    );
    assert_served(&pull(&p, "two/two-keys", "v1"), &img);
    let a = audits_for(&p, "registry.test/two/two-keys", digest);
    assert_eq!(a[0]["outcome"], "verified");
    assert_eq!(a[0]["reason"], "2 of 2 required signers verified");
    let signers = a[0]["signers"].as_str().unwrap();
    assert!(
        signers.contains("key a") && signers.contains("key b"),
        "{signers}"
    );
}

#[test]
fn tlog_required_needs_a_set_from_the_trusted_log() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let (trusted, untrusted) = (Sigstore::new(), Sigstore::new());
    let host = reg.host();
    let digest = img.top_digest();
    copy_image(&host, &img, "tlog/none", "v1").unwrap();
    push_sig(
        &host,
        "tlog/none",
        digest,
        &[key.sign_layer(&payload("tlog/none", &img))],
    )
    .unwrap();
    copy_image(&host, &img, "tlog/trusted", "v1").unwrap();
    let pl = payload("tlog/trusted", &img);
    push_sig(
        &host,
        "tlog/trusted",
        digest,
        &[trusted.sign_with_key(&key, &pl)],
    )
    .unwrap();
    copy_image(&host, &img, "tlog/untrusted", "v1").unwrap();
    let pl = payload("tlog/untrusted", &img);
    push_sig(
        &host,
        "tlog/untrusted",
        digest,
        &[untrusted.sign_with_key(&key, &pl)],
    )
    .unwrap();
    // The trusted log's SET, but over another signature's entry: the body
    // names a different signature than the layer carries.
    copy_image(&host, &img, "tlog/mismatch", "v1").unwrap();
    let pl = payload("tlog/mismatch", &img);
    let logged = trusted.sign_with_key(&key, &pl);
    let other = key.sign_layer(&pl); // a fresh ECDSA signature
    let swapped = other.with_rekor_bundle(&logged.annotations[support::signing::ANN_BUNDLE]);
    push_sig(&host, "tlog/mismatch", digest, &[swapped]).unwrap();
    // A SET that claims the trusted log's ID, signed by another log's key.
    copy_image(&host, &img, "tlog/forged", "v1").unwrap();
    let pl = payload("tlog/forged", &img);
    let signature = key.sign(&pl);
    let body = Sigstore::hashedrekord_body(&pl, &signature, &key.public_key_pem());
    let forged = SigLayer::new(pl, &signature)
        .with_rekor_bundle(&trusted.forged_rekor_bundle(&body, &untrusted.rekor));
    push_sig(&host, "tlog/forged", digest, &[forged]).unwrap();

    let p = start(
        &reg,
        Trust::default()
            .key("release", &key)
            .root("public", &trusted),
        "[[rule]]\nname = \"logged\"\nimages = [\"registry.test/tlog/*\"]\nsigners = [{ key = \"release\", tlog = \"required\", root = \"public\" }]\n",
        "",
        false,
    );
    let m = assert_refused(
        &pull(&p, "tlog/none", "v1"),
        "registry.test/tlog/none",
        "logged",
        "1 signatures checked, 0 matched",
    );
    assert!(
        m.contains("no transparency-log proof, and key release requires one"),
        "{m}"
    );
    assert_served(&pull(&p, "tlog/trusted", "v1"), &img);
    for (repo, why) in [
        // No key of the trusted root has that log ID.
        (
            "tlog/untrusted",
            "invalid inclusion promise: No log key valid",
        ),
        (
            "tlog/forged",
            "invalid inclusion promise: SET verification failed",
        ),
        (
            "tlog/mismatch",
            "signature in bundle does not match signature in Rekor entry",
        ),
    ] {
        let m = assert_refused(
            &pull(&p, repo, "v1"),
            &format!("registry.test/{repo}"),
            "logged",
            "1 signatures checked, 0 matched",
        );
        assert!(m.contains("key release: "), "{repo}: {m}");
        assert!(m.contains(why), "{repo}: expected {why:?} in {m}");
    }
}

/// Reproduces an inconsistency in src/gate/verify.rs (see the report): a
/// P-384 ECDSA-SHA384 signature verifies with the key alone, but the same
/// signature with a valid Rekor bundle is refused, because the v0.1 bundle
/// assembled for legacy signatures always declares a SHA2_256 message
/// digest, and sigstore-verify then checks ECDSA_P384_SHA256.
#[test]
fn p384_key_signature_with_a_rekor_bundle_verifies() {
    let (reg, img) = one_image();
    let key = CosignKey::generate(KeyKind::P384);
    let sigstore = Sigstore::new();
    let layer = sigstore.sign_with_key(&key, &payload("test/img", &img));
    push_sig(&reg.host(), "test/img", img.top_digest(), &[layer]).unwrap();
    let p = start(
        &reg,
        Trust::default()
            .key("release", &key)
            .root("public", &sigstore),
        ONE_KEY_RULE,
        "",
        false,
    );
    assert_served(&pull(&p, "test/img", "v1"), &img);
}

#[test]
fn warn_mode_serves_with_a_warning() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        "[[rule]]\nname = \"soft\"\nimages = [\"registry.test/**\"]\nmode = \"warn\"\nsigners = [{ key = \"release\" }]\n",
        "",
        false,
    );
    let r = pull(&p, "test/img", "v1");
    assert_served(&r, &img);
    let warning = r.header("Warning").expect("a Warning header");
    assert!(warning.starts_with("199 portcullis \""), "{warning}");
    assert!(warning.contains(REF), "{warning}");
    assert!(warning.contains("served by rule 'soft'"), "{warning}");
    assert!(
        warning.contains("no signature from a required signer: 0 signatures checked, 0 matched"),
        "{warning}"
    );
    let a = audits_for(&p, REF, img.top_digest());
    assert_eq!(a[0]["outcome"], "warned");
    let series = "portcullis_policy_decisions_total{rule=\"soft\",outcome=\"warned\",requirement=\"signature\"}";
    assert_eq!(p.metric(series).unwrap(), 1.0);
}

#[test]
fn a_rule_for_one_registry_does_not_apply_under_another_registrys_prefix() {
    // The registry holds the repository `registry.test/x`: reached through
    // upstream `registry.test` it is registry.test/registry.test/x, through
    // `evil.test` it is evil.test/registry.test/x.
    let (reg, img) = registry_with_image("registry.test/x:v1", &[KIB]);
    let key = CosignKey::p256();
    let pl = simple_signing_payload("registry.test/x", img.top_digest());
    push_sig(
        &reg.host(),
        "registry.test/x",
        img.top_digest(),
        &[key.sign_layer(&pl)],
    )
    .unwrap();
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        "default = \"deny\"\n[[rule]]\nname = \"trusted\"\nimages = [\"registry.test/**\"]\nsigners = [{ key = \"release\" }]\n",
        "",
        true,
    );
    let r = pull_from(&p, "evil.test", "registry.test/x", "v1");
    assert_eq!(r.status, 403, "{}", body(&r));
    let (code, message) = oci_error(&r);
    assert_eq!(code, "DENIED");
    assert!(message.contains("evil.test/registry.test/x"), "{message}");
    assert!(message.contains("the policy's default"), "{message}");
    assert!(
        message.contains("no rule matches this image and the default is deny"),
        "{message}"
    );
    let a = audits_for(&p, "evil.test/registry.test/x", img.top_digest());
    assert_eq!(a[0]["rule"], "-");
    assert_eq!(a[0]["outcome"], "denied");
    let series =
        "portcullis_policy_decisions_total{rule=\"-\",outcome=\"denied\",requirement=\"-\"}";
    assert_eq!(p.metric(series).unwrap(), 1.0);

    // The same bytes under the rule's own registry verify.
    assert_served(
        &pull_from(&p, "registry.test", "registry.test/x", "v1"),
        &img,
    );
}

// ---------------------------------------------------------------------------
// The rest of the signing support, through portcullis
// ---------------------------------------------------------------------------

const WORKFLOW: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";

fn keyless_rule(extra: &str) -> String {
    format!(
        "[[rule]]\nname = \"ci\"\nimages = [\"registry.test/**\"]\nsigners = [{{ keyless = {{ root = \"sigstore\", issuer = \"https://token.actions.githubusercontent.com\", subject = \"{WORKFLOW}\"{extra} }} }}]\n"
    )
}

#[test]
fn keyless_sig_signatures_from_a_private_sigstore() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    // Intermediate CA and a CT log: leaves embed SCTs, the root lists the log.
    let sigstore = Sigstore::with_options(SigstoreOptions {
        intermediate: true,
        ct_log: true,
    });
    let other = Sigstore::new();
    let opts = LeafOptions::github("acme/app", "release.yml", "refs/heads/main", "push");
    let sign = |s: &Sigstore, o: &LeafOptions, repo: &str| -> SigLayer {
        copy_image(&host, &img, repo, "v1").unwrap();
        let layer = s.sign_keyless(&s.leaf(o), &payload(repo, &img));
        push_sig(&host, repo, digest, std::slice::from_ref(&layer)).unwrap();
        layer
    };
    sign(&sigstore, &opts, "kl/good");
    sign(&sigstore, &opts.clone().expired(), "kl/expired");
    sign(&sigstore, &opts.clone().without_code_signing(), "kl/no-eku");
    let wrong_ref = LeafOptions::github("acme/app", "release.yml", "refs/heads/dev", "push");
    sign(&sigstore, &wrong_ref, "kl/other-ref");
    let wrong_trigger =
        LeafOptions::github("acme/app", "release.yml", "refs/heads/main", "pull_request");
    sign(&sigstore, &wrong_trigger, "kl/other-trigger");
    // Another instance's CA (and chain), logged in the trusted log.
    copy_image(&host, &img, "kl/other-ca", "v1").unwrap();
    let layer = sigstore.sign_keyless_with(
        &other.leaf(&opts),
        &other.chain_pem(),
        &payload("kl/other-ca", &img),
        support::signing::now() - 10,
    );
    push_sig(&host, "kl/other-ca", digest, &[layer]).unwrap();
    // Another instance altogether (its CA and its log).
    sign(&other, &opts, "kl/other-instance");
    // An email identity with the deprecated issuer extension and the
    // deprecated workflow claims only (checked by the first rule).
    let mut email = LeafOptions::email("dev@acme.test", "https://accounts.google.com")
        .issuer_extension(IssuerExtension::V1);
    email.workflow = Some(Workflow {
        repository: "acme/app".into(),
        git_ref: "refs/heads/main".into(),
        trigger: "push".into(),
        encoding: ClaimEncoding::Deprecated,
    });
    sign(&sigstore, &email, "kl/email");

    let email_rule = "[[rule]]\nname = \"people\"\nimages = [\"registry.test/kl/email\"]\nsigners = [{ keyless = { root = \"sigstore\", issuer = \"https://accounts.google.com\", subject_regex = \".*@acme\\\\.test\", github_workflow_repository = \"acme/app\", github_workflow_ref = \"refs/heads/main\" } }]\n";
    let p = start(
        &reg,
        Trust::default().root("sigstore", &sigstore),
        &format!(
            "{email_rule}{}",
            keyless_rule(
                ", github_workflow_repository = \"acme/app\", github_workflow_trigger = \"push\"",
            )
        ),
        "",
        false,
    );
    assert_served(&pull(&p, "kl/email", "v1"), &img);
    let a = audits_for(&p, "registry.test/kl/email", digest);
    assert_eq!(a[0]["rule"], "people", "{}", a[0]);
    assert!(
        a[0]["signers"].as_str().unwrap().contains("dev@acme.test"),
        "{}",
        a[0]
    );
    assert_served(&pull(&p, "kl/good", "v1"), &img);
    let a = audits_for(&p, "registry.test/kl/good", digest);
    assert_eq!(a[0]["outcome"], "verified", "{}", a[0]);
    assert!(
        a[0]["signers"].as_str().unwrap().contains(WORKFLOW),
        "{}",
        a[0]
    );
    let one = "1 signatures checked, 0 matched";
    for (repo, why) in [
        ("kl/expired", "certificate chain is invalid"),
        ("kl/no-eku", "certificate chain is invalid"),
        ("kl/other-ca", "certificate chain is invalid"),
        ("kl/other-instance", "invalid inclusion promise"),
        (
            "kl/other-ref",
            "subject \"https://github.com/acme/app/.github/workflows/release.yml@refs/heads/dev\" does not match",
        ),
        (
            "kl/other-trigger",
            "workflow trigger \"pull_request\" does not match \"push\"",
        ),
    ] {
        let m = assert_refused(
            &pull(&p, repo, "v1"),
            &format!("registry.test/{repo}"),
            "ci",
            one,
        );
        assert!(m.contains(why), "{repo}: {m}");
    }
}

#[test]
fn sigstore_bundle_referrers_next_to_junk() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let sigstore = Sigstore::new();
    let key = CosignKey::p256();
    let leaf = sigstore.leaf(&LeafOptions::uri(WORKFLOW, support::signing::GITHUB_ISSUER));
    let subject = Descriptor::of_image(&img);

    // Keyless bundle, with junk around it.
    copy_image(&host, &img, "b/keyless", "v1").unwrap();
    for junk in [
        Junk::BadJson,
        Junk::NotABundle,
        Junk::NoBundleLayer,
        Junk::OtherArtifactType,
    ] {
        oci_push::push_junk_referrer(&host, "b/keyless", &subject, junk).unwrap();
    }
    let statement = cosign_sign_statement("registry.test/b/keyless", digest);
    let bundle = sigstore.dsse_bundle(BundleSigner::Leaf(&leaf), &statement);
    push_bundle_referrer(&host, "b/keyless", &subject, bundle.as_bytes()).unwrap();

    // Junk only (details are capped at three in the message).
    copy_image(&host, &img, "b/junk-only", "v1").unwrap();
    for junk in [Junk::BadJson, Junk::NotABundle, Junk::NoBundleLayer] {
        oci_push::push_junk_referrer(&host, "b/junk-only", &subject, junk).unwrap();
    }

    // Key-signed bundle.
    copy_image(&host, &img, "b/key", "v1").unwrap();
    let statement = cosign_sign_statement("registry.test/b/key", digest);
    let bundle = sigstore.dsse_bundle(BundleSigner::Key(&key), &statement);
    push_bundle_referrer(&host, "b/key", &subject, bundle.as_bytes()).unwrap();

    // An attestation (another predicate) only: not a signature.
    copy_image(&host, &img, "b/attestation", "v1").unwrap();
    let statement = in_toto_statement(
        "registry.test/b/attestation",
        digest,
        "https://slsa.dev/provenance/v1",
        serde_json::json!({"buildType": "test"}),
    );
    let bundle = sigstore.dsse_bundle(BundleSigner::Leaf(&leaf), &statement);
    push_bundle_referrer(&host, "b/attestation", &subject, bundle.as_bytes()).unwrap();

    let p = start(
        &reg,
        Trust::default().key("release", &key).root("sigstore", &sigstore),
        &format!(
            "{}[[rule]]\nname = \"keyed\"\nimages = [\"registry.test/b/key\"]\nsigners = [{{ key = \"release\", root = \"sigstore\" }}]\n",
            keyless_rule("").replace("registry.test/**", "registry.test/b/keyless\", \"registry.test/b/junk-only\", \"registry.test/b/attestation")
        ),
        "",
        false,
    );
    assert_served(&pull(&p, "b/keyless", "v1"), &img);
    let a = audits_for(&p, "registry.test/b/keyless", digest);
    assert_eq!(a[0]["outcome"], "verified", "{}", a[0]);
    // The bad-JSON and not-a-bundle junk were examined too; the layerless
    // one is skipped and the SBOM is not a signature at all.
    assert_eq!(a[0]["checked"], 3, "{}", a[0]);
    let m = assert_refused(
        &pull(&p, "b/junk-only", "v1"),
        "registry.test/b/junk-only",
        "ci",
        "no signature from a required signer: 2 signatures checked, 0 matched",
    );
    assert!(m.contains("not a valid Sigstore bundle"), "{m}");
    assert_served(&pull(&p, "b/key", "v1"), &img);
    let m = assert_refused(
        &pull(&p, "b/attestation", "v1"),
        "registry.test/b/attestation",
        "ci",
        "1 signatures checked, 0 matched",
    );
    assert!(
        m.contains("an attestation (predicate https://slsa.dev/provenance/v1)"),
        "{m}"
    );
}

/// With several roots and a key signer that names none, a proof that is
/// present must still verify against one of them: adding an unrelated root
/// must never make an untrusted log's SET acceptable.
#[test]
fn a_present_proof_is_checked_against_every_root_when_the_signer_names_none() {
    let (reg, img) = one_image();
    let key = CosignKey::p256();
    let (trusted, other, untrusted) = (Sigstore::new(), Sigstore::new(), Sigstore::new());
    let host = reg.host();
    let digest = img.top_digest();
    for (repo, layer) in [
        (
            "roots/untrusted",
            untrusted.sign_with_key(&key, &payload("roots/untrusted", &img)),
        ),
        (
            "roots/trusted",
            trusted.sign_with_key(&key, &payload("roots/trusted", &img)),
        ),
        ("roots/none", key.sign_layer(&payload("roots/none", &img))),
    ] {
        copy_image(&host, &img, repo, "v1").unwrap();
        push_sig(&host, repo, digest, &[layer]).unwrap();
    }
    let p = start(
        &reg,
        Trust::default()
            .key("release", &key)
            .root("public", &trusted)
            .root("unrelated", &other),
        "[[rule]]\nname = \"optional\"\nimages = [\"registry.test/roots/*\"]\nsigners = [{ key = \"release\" }]\n",
        "",
        false,
    );
    let m = assert_refused(
        &pull(&p, "roots/untrusted", "v1"),
        "registry.test/roots/untrusted",
        "optional",
        "1 signatures checked, 0 matched",
    );
    assert!(m.contains("No log key valid"), "{m}");
    assert_served(&pull(&p, "roots/trusted", "v1"), &img);
    // tlog is optional: a signature without a proof still verifies with the key.
    assert_served(&pull(&p, "roots/none", "v1"), &img);
}

//! Attestation policies at pull time, against the real registry: signed
//! SBOMs, vulnerability scans and provenance made at test time with keys
//! and the private Sigstore, pushed as cosign's legacy `.att` and as
//! Sigstore bundle referrers, and the refusals a node operator sees.

mod support;

use std::time::Duration;

use serde_json::json;
use support::attest::*;
use support::gate::*;
use support::oci_push::{self, Descriptor, Junk, copy_image, push_bundle_referrer};
use support::portcullis::InProcess;
use support::signing::{
    BundleSigner, CosignKey, LeafOptions, SigLayer, Sigstore, cosign_sign_statement,
};
use support::{http_get, upstream};

const NO_BANNED: &str = "!predicate.components.exists(c, c.name == 'banned-package')";
const NO_CRITICAL: &str = "!predicate.scanner.result.Results.exists(r, r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))";
const FROM_MAIN: &str =
    "predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'";

/// The issue's policy: a signed image with an SBOM without banned
/// packages, a scan younger than 7 days without CRITICAL findings, and
/// provenance from main.
fn prod_rule(images: &str, mode: &str) -> String {
    format!(
        r#"[[rule]]
name = "prod"
images = ["{images}"]
mode = "{mode}"
signers = [{{ key = "release" }}]

[[rule.attestations]]
name = "sbom"
type = "cyclonedx"
conditions = ["{NO_BANNED}"]

[[rule.attestations]]
name = "scan"
type = "vuln"
max_age = "7d"
conditions = ["{NO_CRITICAL}"]

[[rule.attestations]]
type = "slsaprovenance1"
conditions = ["{FROM_MAIN}"]
"#
    )
}

/// What a passing release carries besides its signature.
fn good_attestations(key: &CosignKey, digest: &str) -> Vec<SigLayer> {
    vec![
        keyed(
            key,
            digest,
            CYCLONEDX,
            &cyclonedx(&["musl", "busybox"], &ago(hours(2))),
        ),
        keyed(
            key,
            digest,
            VULN,
            &trivy_vuln(Some(&["LOW", "MEDIUM"]), &ago(hours(1))),
        ),
        keyed(
            key,
            digest,
            SLSA_V1,
            &slsa_v1("refs/heads/main", &ago(hours(2))),
        ),
    ]
}

fn refusal(r: &support::HttpResponse) -> String {
    assert_eq!(r.status, 403, "expected a refusal: {}", body(r));
    oci_error(r).1
}

#[test]
fn signed_sbom_scan_and_provenance_are_required_and_each_failure_is_named() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let key = CosignKey::p256();
    let other = CosignKey::generate(support::signing::KeyKind::Ed25519);
    let good = good_attestations(&key, digest);
    let with = |i: usize, layer: SigLayer| {
        let mut l = good.clone();
        l[i] = layer;
        l
    };
    let cases: Vec<(&str, bool, Vec<SigLayer>)> = vec![
        ("a/good", true, good.clone()),
        ("a/no-sbom", true, good[1..].to_vec()),
        (
            "a/banned",
            true,
            with(
                0,
                keyed(
                    &key,
                    digest,
                    CYCLONEDX,
                    &cyclonedx(&["musl", "banned-package"], &ago(hours(2))),
                ),
            ),
        ),
        (
            "a/critical",
            true,
            with(
                1,
                keyed(
                    &key,
                    digest,
                    VULN,
                    &trivy_vuln(Some(&["LOW", "CRITICAL"]), &ago(hours(1))),
                ),
            ),
        ),
        (
            "a/old-scan",
            true,
            with(
                1,
                keyed(
                    &key,
                    digest,
                    VULN,
                    &trivy_vuln(Some(&["LOW"]), "2026-01-20T10:00:00Z"),
                ),
            ),
        ),
        (
            "a/wrong-signer",
            true,
            with(
                0,
                keyed(
                    &other,
                    digest,
                    CYCLONEDX,
                    &cyclonedx(&["musl"], &ago(hours(2))),
                ),
            ),
        ),
        (
            "a/other-digest",
            true,
            with(
                0,
                keyed(
                    &key,
                    &support::sha256_digest(b"another image"),
                    CYCLONEDX,
                    &cyclonedx(&["musl"], &ago(hours(2))),
                ),
            ),
        ),
        (
            // An SPDX SBOM where CycloneDX is required, its layer annotated
            // as CycloneDX: the annotation is never trusted.
            "a/spdx-for-cyclonedx",
            true,
            with(0, {
                let mut l = keyed(&key, digest, SPDX, &spdx(&["musl"], &ago(hours(2))));
                l.annotations
                    .insert("predicateType".into(), CYCLONEDX.into());
                l
            }),
        ),
        ("a/unsigned-image", false, good.clone()),
        (
            "a/feature-branch",
            true,
            with(
                2,
                keyed(
                    &key,
                    digest,
                    SLSA_V1,
                    &slsa_v1("refs/heads/feature", &ago(hours(2))),
                ),
            ),
        ),
        (
            // Trivy leaves `Vulnerabilities` out of a clean target: the
            // condition cannot be evaluated, which counts as false.
            "a/cel-error",
            true,
            with(
                1,
                keyed(&key, digest, VULN, &trivy_vuln(None, &ago(hours(1)))),
            ),
        ),
    ];
    for (repo, signed, layers) in &cases {
        copy_image(&host, &img, repo, "v1").unwrap();
        if *signed {
            sign_image(&host, repo, digest, &key);
        }
        push_att(&host, repo, digest, layers).unwrap();
    }
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &prod_rule("registry.test/a/**", "enforce"),
        "",
        false,
    );

    let r = pull(&p, "a/good", "v1");
    assert_served(&r, &img);
    let a = audits_for(&p, "registry.test/a/good", digest);
    assert_eq!(a[0]["outcome"], "verified", "{}", a[0]);
    assert!(
        a[0]["reason"]
            .as_str()
            .unwrap()
            .contains("attestations passed: sbom, scan, slsaprovenance1"),
        "{}",
        a[0]
    );
    let passed = "portcullis_attestations_checked_total{rule=\"prod\",attestation=\"sbom\",outcome=\"passed\"}";
    assert_eq!(p.metric(passed).unwrap(), 1.0);

    let m = refusal(&pull(&p, "a/no-sbom", "v1"));
    assert!(
        m.contains("attestation \"sbom\" (https://cyclonedx.org/bom): none found"),
        "{m}"
    );
    let denied =
        "portcullis_policy_decisions_total{rule=\"prod\",outcome=\"denied\",requirement=\"sbom\"}";
    assert_eq!(p.metric(denied).unwrap(), 1.0);
    let a = audits_for(&p, "registry.test/a/no-sbom", digest);
    assert_eq!(a[0]["requirement"], "sbom", "{}", a[0]);

    let m = refusal(&pull(&p, "a/banned", "v1"));
    assert!(
        m.contains(&format!("attestation \"sbom\" (https://cyclonedx.org/bom): 1 found, signed by release, condition 1 false: {NO_BANNED}")),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/critical", "v1"));
    assert!(
        m.contains(&format!("attestation \"scan\" (https://cosign.sigstore.dev/attestation/vuln/v1): 1 found, signed by release, condition 1 false: {NO_CRITICAL}")),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/old-scan", "v1"));
    assert!(
        m.contains("attestation \"scan\" (https://cosign.sigstore.dev/attestation/vuln/v1): 1 found, signed by release, too old: finished 2026-01-20T10:00:00Z, max_age 7d"),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/wrong-signer", "v1"));
    assert!(
        m.contains("attestation \"sbom\" (https://cyclonedx.org/bom): 1 found, signed by no required signer")
            && m.contains("the signature does not verify with this key"),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/other-digest", "v1"));
    assert!(
        m.contains("attestation \"sbom\"") && m.contains("about another subject"),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/spdx-for-cyclonedx", "v1"));
    assert!(
        m.contains("attestation \"sbom\" (https://cyclonedx.org/bom): none found (attestations of other types: https://spdx.dev/Document)"),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/unsigned-image", "v1"));
    assert!(m.contains("no signature from a required signer"), "{m}");
    let a = audits_for(&p, "registry.test/a/unsigned-image", digest);
    assert_eq!(a[0]["requirement"], "signature", "{}", a[0]);
    let m = refusal(&pull(&p, "a/feature-branch", "v1"));
    assert!(
        m.contains(&format!("attestation \"slsaprovenance1\" (https://slsa.dev/provenance/v1): 1 found, signed by release, condition 1 false: {FROM_MAIN}")),
        "{m}"
    );
    let m = refusal(&pull(&p, "a/cel-error", "v1"));
    assert!(
        m.contains("attestation \"scan\"")
            && m.contains("condition 1 could not be evaluated")
            && m.contains("counts as false"),
        "{m}"
    );

    // `portcullis verify` prints each requirement.
    let config = p.config_dir().join("portcullis.toml");
    let verify = |image: &str, json: bool| {
        let args: &[&str] = if json {
            &["--output", "json", image]
        } else {
            &[image]
        };
        support::portcullis::cli("verify", &config, args)
    };
    let out = verify("registry.test/a/good:v1", false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        "  signature: passed",
        "  attestation \"sbom\" (https://cyclonedx.org/bom): passed: 1 found, signed by release, passed",
        "  attestation \"scan\" (https://cosign.sigstore.dev/attestation/vuln/v1): passed",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let out = verify("registry.test/a/critical:v1", true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requirement"], "scan");
    let results = v["attestations"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{v}");
    assert_eq!(results[0]["passed"], true);
    assert_eq!(results[1]["name"], "scan");
    assert_eq!(results[1]["passed"], false);
}

#[test]
fn bundles_keyless_and_junk_in_one_format_never_mask_the_other() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let subject = Descriptor::of_image(&img);
    let sigstore = Sigstore::new();
    let key = CosignKey::generate(support::signing::KeyKind::P384);
    let workflow =
        "https://github.com/example/services/.github/workflows/release.yml@refs/heads/main";
    let leaf = sigstore.leaf(&LeafOptions::uri(workflow, support::signing::GITHUB_ISSUER));
    let sbom = |digest: &str| statement(digest, CYCLONEDX, &cyclonedx(&["musl"], &ago(hours(1))));
    let sign_keyless = |repo: &str| {
        let s = cosign_sign_statement(&format!("registry.test/{repo}"), digest);
        let bundle = sigstore.dsse_bundle(BundleSigner::Leaf(&leaf), &s);
        push_bundle_referrer(&host, repo, &subject, bundle.as_bytes()).unwrap();
    };
    let junk_att = att_layer(b"{not json".to_vec(), CYCLONEDX);

    // Keyless image signature and keyless SBOM bundle.
    copy_image(&host, &img, "b/keyless", "v1").unwrap();
    sign_keyless("b/keyless");
    let bundle = sigstore.dsse_bundle(BundleSigner::Leaf(&leaf), &sbom(digest));
    push_bundle_referrer(&host, "b/keyless", &subject, bundle.as_bytes()).unwrap();
    // A junk `.att` beside a valid bundle.
    copy_image(&host, &img, "b/junk-att", "v1").unwrap();
    sign_keyless("b/junk-att");
    push_att(&host, "b/junk-att", digest, std::slice::from_ref(&junk_att)).unwrap();
    push_bundle_referrer(&host, "b/junk-att", &subject, bundle.as_bytes()).unwrap();
    // Junk bundles beside a valid keyed `.att`.
    copy_image(&host, &img, "b/junk-bundle", "v1").unwrap();
    sign_keyless("b/junk-bundle");
    for junk in [Junk::BadJson, Junk::NotABundle] {
        oci_push::push_junk_referrer(&host, "b/junk-bundle", &subject, junk).unwrap();
    }
    push_att(
        &host,
        "b/junk-bundle",
        digest,
        &[att_layer(envelope(&key, &sbom(digest)), CYCLONEDX)],
    )
    .unwrap();
    // Junk in both formats only.
    copy_image(&host, &img, "b/junk-only", "v1").unwrap();
    sign_keyless("b/junk-only");
    push_att(&host, "b/junk-only", digest, &[junk_att]).unwrap();
    oci_push::push_junk_referrer(&host, "b/junk-only", &subject, Junk::BadJson).unwrap();
    // A bundle from a lookalike workflow identity.
    copy_image(&host, &img, "b/other-identity", "v1").unwrap();
    sign_keyless("b/other-identity");
    let feature = sigstore.leaf(&LeafOptions::uri(
        &workflow.replace("refs/heads/main", "refs/heads/feature"),
        support::signing::GITHUB_ISSUER,
    ));
    let bundle = sigstore.dsse_bundle(BundleSigner::Leaf(&feature), &sbom(digest));
    push_bundle_referrer(&host, "b/other-identity", &subject, bundle.as_bytes()).unwrap();

    // Keyed bundles carry a verified log time: enough for max_age when the
    // predicate states none; a keyed `.att` without a log entry is not.
    for repo in ["c/bundle", "c/att"] {
        copy_image(&host, &img, repo, "v1").unwrap();
        sign_image(&host, repo, digest, &key);
    }
    let custom = statement(digest, CUSTOM, &json!({"data": "tested", "timestamp": ""}));
    let bundle = sigstore.dsse_bundle(BundleSigner::Key(&key), &custom);
    push_bundle_referrer(&host, "c/bundle", &subject, bundle.as_bytes()).unwrap();
    push_att(
        &host,
        "c/att",
        digest,
        &[att_layer(envelope(&key, &custom), CUSTOM)],
    )
    .unwrap();

    let keyless = format!(
        r#"{{ keyless = {{ root = "sigstore", issuer = "{}", subject = "{workflow}" }} }}"#,
        support::signing::GITHUB_ISSUER
    );
    let rules = format!(
        r#"[[rule]]
name = "ci"
images = ["registry.test/b/**"]
signers = [{keyless}]

[[rule.attestations]]
name = "sbom"
type = "cyclonedx"
signers = [{{ key = "release" }}, {keyless}]

[[rule]]
name = "timed"
images = ["registry.test/c/**"]
signers = [{{ key = "release" }}]

[[rule.attestations]]
name = "tested"
type = "custom"
max_age = "1h"
"#
    );
    let p = start(
        &reg,
        Trust::default()
            .key("release", &key)
            .root("sigstore", &sigstore),
        &rules,
        "",
        false,
    );
    for repo in ["b/keyless", "b/junk-att", "b/junk-bundle"] {
        let r = pull(&p, repo, "v1");
        assert_eq!(r.status, 200, "{repo}: {}", body(&r));
    }
    // `cosign verify-attestation` through portcullis reads the `.att`: it is
    // served as an artifact, signed by the attestation's own signer.
    let att_tag = format!("{}.att", oci_push::digest_tag(digest));
    let r = pull(&p, "b/junk-bundle", &att_tag);
    assert_eq!(r.status, 200, "{}", body(&r));
    let m = refusal(&pull(&p, "b/junk-only", "v1"));
    assert!(
        m.contains("attestation \"sbom\" (https://cyclonedx.org/bom): none found ("),
        "{m}"
    );
    let m = refusal(&pull(&p, "b/other-identity", "v1"));
    assert!(
        m.contains("1 found, signed by no required signer") && m.contains("refs/heads/feature"),
        "{m}"
    );
    assert_served(&pull(&p, "c/bundle", "v1"), &img);
    let m = refusal(&pull(&p, "c/att", "v1"));
    assert!(
        m.contains("attestation \"tested\" (https://cosign.sigstore.dev/attestation/v1): 1 found, signed by release, no trustworthy time, so max_age 1h cannot be met"),
        "{m}"
    );
}

#[test]
fn a_verdict_expires_as_its_scan_ages_without_a_policy_change() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let key = CosignKey::p256();
    sign_image(&host, "test/img", digest, &key);
    let scan = keyed(
        &key,
        digest,
        VULN,
        &trivy_vuln(Some(&["LOW"]), &ago(hours(1))),
    );
    push_att(&host, "test/img", digest, &[scan]).unwrap();
    let trust = Trust::default().key("release", &key);
    // Verdicts would be kept a day: only the scan's age ends this one.
    let policy = format!(
        "verdict_ttl = \"24h\"\n[[rule]]\nname = \"fresh\"\nimages = [\"registry.test/**\"]\nsigners = [{{ key = \"release\" }}]\n[[rule.attestations]]\nname = \"scan\"\ntype = \"vuln\"\nmax_age = \"2h\"\n{}",
        trust.text
    );
    let p = InProcess::start_with_files(
        &format!(
            "policy = \"policy.toml\"\n{}",
            upstream("registry.test", &reg.url())
        ),
        &trust.files_with_policy(&policy),
    )
    .unwrap();
    let get = || {
        http_get(
            &format!("{}/v2/registry.test/test/img/manifests/v1", p.url()),
            &[("Accept", ACCEPT)],
        )
        .unwrap()
    };
    assert_eq!(get().status, 200);
    let checked = "portcullis_attestations_checked_total{rule=\"fresh\",attestation=\"scan\",outcome=\"passed\"}";
    assert_eq!(p.metric(checked).unwrap(), 1.0);
    // 50 minutes on the scan is 1h50m old: the cached verdict still serves.
    p.clock.advance(Duration::from_secs(50 * 60));
    assert_eq!(get().status, 200);
    assert_eq!(
        p.metric(checked).unwrap(),
        1.0,
        "answered from the verdict cache"
    );
    // 15 more and it is past max_age: refused on the next request.
    p.clock.advance(Duration::from_secs(15 * 60));
    let r = get();
    let m = refusal(&r);
    assert!(
        m.contains("too old: finished") && m.contains("max_age 2h"),
        "{m}"
    );
}

#[test]
fn warn_rules_serve_with_a_warning_and_the_caps_bound_the_work() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let key = CosignKey::p256();
    // Warn: no SBOM, served with a warning naming the requirement.
    copy_image(&host, &img, "w/app", "v1").unwrap();
    sign_image(&host, "w/app", digest, &key);
    let good = good_attestations(&key, digest);
    push_att(&host, "w/app", digest, &good[1..]).unwrap();
    // More envelopes than max_attestations: the valid one is never read.
    copy_image(&host, &img, "d/many", "v1").unwrap();
    sign_image(&host, "d/many", digest, &key);
    let spare = keyed(&key, digest, SPDX, &spdx(&["musl"], &ago(hours(1))));
    push_att(
        &host,
        "d/many",
        digest,
        &[spare.clone(), spare, good[0].clone()],
    )
    .unwrap();
    // An SBOM larger than max_attestation_size.
    copy_image(&host, &img, "d/big", "v1").unwrap();
    sign_image(&host, "d/big", digest, &key);
    let names: Vec<String> = (0..200).map(|i| format!("package-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = keyed(&key, digest, CYCLONEDX, &cyclonedx(&names, &ago(hours(1))));
    assert!(big.payload.len() > 64 * 1024);
    push_att(&host, "d/big", digest, &[big]).unwrap();

    let rules = format!(
        "max_attestations = 2\nmax_attestation_size = \"64KiB\"\n{}[[rule]]\nname = \"capped\"\nimages = [\"registry.test/d/**\"]\nsigners = [{{ key = \"release\" }}]\n[[rule.attestations]]\nname = \"sbom\"\ntype = \"cyclonedx\"\n",
        prod_rule("registry.test/w/**", "warn")
    );
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &rules,
        "",
        false,
    );
    let r = pull(&p, "w/app", "v1");
    assert_served(&r, &img);
    let warning = r.header("Warning").unwrap_or_default();
    assert!(
        warning.starts_with("199 portcullis")
            && warning.contains("attestation 'sbom' (https://cyclonedx.org/bom): none found"),
        "{warning}"
    );
    let m = refusal(&pull(&p, "d/many", "v1"));
    assert!(
        m.contains("none found") && m.contains("only the first 2 were read"),
        "{m}"
    );
    let m = refusal(&pull(&p, "d/big", "v1"));
    assert!(m.contains("none found") && m.contains("65536"), "{m}");
}

#[test]
fn every_key_type_attests_and_a_threshold_needs_distinct_signers() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let release = CosignKey::p256();
    let keys: Vec<CosignKey> = support::signing::KeyKind::ALL
        .iter()
        .map(|k| CosignKey::generate(*k))
        .collect();
    let sbom = cyclonedx(&["musl"], &ago(hours(1)));
    for (key, kind) in keys.iter().zip(support::signing::KeyKind::ALL) {
        let repo = format!("k/{}", kind.name());
        copy_image(&host, &img, &repo, "v1").unwrap();
        sign_image(&host, &repo, digest, &release);
        push_att(
            &host,
            &repo,
            digest,
            &[keyed(key, digest, CYCLONEDX, &sbom)],
        )
        .unwrap();
    }
    // Threshold 2 of the SBOM team's keys: one is not enough, two are,
    // and one key's two attestations count once.
    for (repo, by) in [
        ("t/one", vec![0]),
        ("t/same-twice", vec![0, 0]),
        ("t/two", vec![0, 1]),
    ] {
        copy_image(&host, &img, repo, "v1").unwrap();
        sign_image(&host, repo, digest, &release);
        let layers: Vec<SigLayer> = by
            .iter()
            .map(|&i| keyed(&keys[i], digest, CYCLONEDX, &sbom))
            .collect();
        push_att(&host, repo, digest, &layers).unwrap();
    }
    let mut trust = Trust::default().key("release", &release);
    for (key, kind) in keys.iter().zip(support::signing::KeyKind::ALL) {
        trust = trust.key(kind.name(), key);
    }
    let own: Vec<String> = support::signing::KeyKind::ALL
        .iter()
        .map(|k| format!("{{ key = \"{}\" }}", k.name()))
        .collect();
    let rules = format!(
        "[[rule]]\nname = \"kinds\"\nimages = [\"registry.test/k/**\"]\nsigners = [{{ key = \"release\" }}]\n[[rule.attestations]]\nname = \"sbom\"\ntype = \"cyclonedx\"\nsigners = [{}]\n\
         [[rule]]\nname = \"two\"\nimages = [\"registry.test/t/**\"]\nsigners = [{{ key = \"release\" }}]\n[[rule.attestations]]\nname = \"sbom\"\ntype = \"cyclonedx\"\nthreshold = 2\nsigners = [{}]\n",
        own.join(", "),
        own[..2].join(", ")
    );
    let p = start(&reg, trust, &rules, "", false);
    for kind in support::signing::KeyKind::ALL {
        let r = pull(&p, &format!("k/{}", kind.name()), "v1");
        assert_eq!(r.status, 200, "{}: {}", kind.name(), body(&r));
    }
    for repo in ["t/one", "t/same-twice"] {
        let m = refusal(&pull(&p, repo, "v1"));
        assert!(m.contains("1 of 2 required signers passed"), "{repo}: {m}");
    }
    assert_served(&pull(&p, "t/two", "v1"), &img);
}

#[test]
fn an_index_whose_attestations_pass_covers_its_children_unless_per_platform() {
    let reg = support::registry::Registry::start(support::registry::Mode::Plain).unwrap();
    let img = support::images::push_multiarch(&reg.host(), "test/multi:v1", &[1024], None).unwrap();
    let host = reg.host();
    let index = img.top_digest().to_owned();
    let child = img.manifests[0].digest.clone();
    let key = CosignKey::p256();
    sign_image(&host, "test/multi", &index, &key);
    let sbom = cyclonedx(&["musl"], &ago(hours(1)));
    push_att(
        &host,
        "test/multi",
        &index,
        &[keyed(&key, &index, CYCLONEDX, &sbom)],
    )
    .unwrap();
    let rule = |extra: &str| {
        format!(
            "[[rule]]\nname = \"multi\"\nimages = [\"registry.test/**\"]\nsigners = [{{ key = \"release\" }}]\n{extra}[[rule.attestations]]\nname = \"sbom\"\ntype = \"cyclonedx\"\n"
        )
    };
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &rule(""),
        "",
        false,
    );
    assert_eq!(pull(&p, "test/multi", "v1").status, 200);
    let r = pull(&p, "test/multi", &child);
    assert_eq!(r.status, 200, "{}", body(&r));
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &rule("per_platform = true\n"),
        "",
        false,
    );
    assert_eq!(pull(&p, "test/multi", "v1").status, 200);
    // The child is signed, but its attestations are looked up on its own digest.
    sign_image(&host, "test/multi", &child, &key);
    let m = refusal(&pull(&p, "test/multi", &child));
    assert!(
        m.contains("attestation \"sbom\" (https://cyclonedx.org/bom): none found"),
        "{m}"
    );
    push_att(
        &host,
        "test/multi",
        &child,
        &[keyed(&key, &child, CYCLONEDX, &sbom)],
    )
    .unwrap();
    // A fresh gate sees it (the failure above is cached for failure_ttl).
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        &rule("per_platform = true\n"),
        "",
        false,
    );
    assert_eq!(pull(&p, "test/multi", &child).status, 200);
}

#[test]
fn attestations_are_found_in_the_rules_signature_repository() {
    let (reg, img) = one_image();
    let host = reg.host();
    let digest = img.top_digest();
    let key = CosignKey::p256();
    // Signature and SBOM live in registry.test/sigs, not beside the image.
    copy_image(&host, &img, "sigs", "placeholder").unwrap();
    sign_image(&host, "sigs", digest, &key);
    let sbom = cyclonedx(&["musl"], &ago(hours(1)));
    push_att(
        &host,
        "sigs",
        digest,
        &[keyed(&key, digest, CYCLONEDX, &sbom)],
    )
    .unwrap();
    let rules = "[[rule]]\nname = \"elsewhere\"\nimages = [\"registry.test/test/**\"]\nsigners = [{ key = \"release\" }]\nsignature_repository = \"registry.test/sigs\"\n[[rule.attestations]]\nname = \"sbom\"\ntype = \"cyclonedx\"\n";
    let p = start(
        &reg,
        Trust::default().key("release", &key),
        rules,
        "",
        false,
    );
    assert_served(&pull(&p, "test/img", "v1"), &img);
    // Another image signed in registry.test/sigs, its SBOM beside it only:
    // not looked at.
    let other =
        support::images::push_image(&host, "test/other:v1", "linux", "amd64", &[2048], None)
            .unwrap();
    let other_digest = other.top_digest();
    sign_image(&host, "sigs", other_digest, &key);
    push_att(
        &host,
        "test/other",
        other_digest,
        &[keyed(&key, other_digest, CYCLONEDX, &sbom)],
    )
    .unwrap();
    let m = refusal(&pull(&p, "test/other", "v1"));
    assert!(
        m.contains("attestation \"sbom\" (https://cyclonedx.org/bom): none found"),
        "{m}"
    );
}

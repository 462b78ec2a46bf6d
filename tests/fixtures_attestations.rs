//! Real attestations from the fixture corpus (`../shared/fixtures`), made by
//! real cosign, GitHub Actions and npm, checked offline by the gate's own
//! attestation code against requirements as users write them: keyless
//! identities, SLSA provenance conditions, and `max_age` from the verified
//! log or timestamp time, since none of these predicates states one.

mod support;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use support::fixtures::*;

const DSSE: &str = "attestation-dsse";
const SIGSTORE_JS: &str = "attestation-dsse/sigstore-go__sigstore.js-2.0.0-provenance";
const SIGSTORE_JS_DIGEST: &str = "sha512:46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c";
const NPM_DIGEST: &str = "sha512:76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751";
const SLSA02_DIGEST: &str = "sha512:bbfd372fc9beeb777fe35d05bb10c0c70a9733d366a75fed7dd18866c7391de3ee7e88ba74dd47abf3e15c845e547fcf0e5c3da80854c751554224d3a6d4e55f";
const RELEASE_WORKFLOW: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";

fn at(unix: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
}

const DAY: u64 = 86_400;

/// GitHub's SLSA v1 provenance for sigstore-js 2.0.0 (Rekor integrated
/// 1692374735): built from main, by the release workflow, within 7 days.
#[test]
fn github_slsa_v1_provenance_from_main_verifies_and_ages_out() {
    let served = digest(SIGSTORE_JS_DIGEST);
    let source = bundle(&format!(
        "{SIGSTORE_JS}/sigstore.js@2.0.0-provenance.sigstore.json"
    ))
    .source(&served);
    let policy = |condition: &str| {
        PolicyText::new()
            .root("pg", &format!("{SIGSTORE_JS}/public-good.json"))
            .rule(1, &[&keyless("pg", ACTIONS, RELEASE_WORKFLOW)])
            .attestation(&format!(
                "name = \"provenance\"\ntype = \"slsaprovenance1\"\nmax_age = \"7d\"\nconditions = [{condition:?}, \"predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/sigstore/sigstore-js'\"]"
            ))
            .load()
    };
    let main =
        policy("predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'");
    let r = attest(&main, &served, &source, at(1_692_374_735 + DAY));
    assert!(r.passed(), "{:?}", r.results);
    assert_eq!(
        r.fresh_until,
        Some(at(1_692_374_735 + 7 * DAY)),
        "fresh until the log time plus max_age"
    );
    let r = attest(&main, &served, &source, at(1_692_374_735 + 8 * DAY));
    assert!(!r.passed());
    assert!(
        r.results[0]
            .detail
            .contains("too old: signed 2023-08-18T16:05:35Z, max_age 7d"),
        "{:?}",
        r.results
    );
    let dev =
        policy("predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/dev'");
    let r = attest(&dev, &served, &source, at(1_692_374_735 + DAY));
    assert!(
        r.results[0].detail.contains("condition 1 false"),
        "{:?}",
        r.results
    );
    // Another artifact's digest: the statement is not about it.
    let other = digest(NPM_DIGEST);
    let r = attest(
        &main,
        &other,
        &bundle(&format!(
            "{SIGSTORE_JS}/sigstore.js@2.0.0-provenance.sigstore.json"
        ))
        .source(&other),
        at(1_692_374_735 + DAY),
    );
    assert!(!r.passed());
    assert!(
        r.results[0].detail.contains("signed by no required signer"),
        "{:?}",
        r.results
    );
    // The right digest, the wrong workflow identity.
    let lookalike = PolicyText::new()
        .root("pg", &format!("{SIGSTORE_JS}/public-good.json"))
        .rule(
            1,
            &[&keyless(
                "pg",
                ACTIONS,
                &RELEASE_WORKFLOW.replace("main", "dev"),
            )],
        )
        .attestation("type = \"slsaprovenance1\"")
        .load();
    let r = attest(&lookalike, &served, &source, at(1_692_374_735 + DAY));
    assert!(!r.passed(), "{:?}", r.results);
}

/// npm's SLSA v0.2 provenance (keyless, GitHub Actions) and its publish
/// attestation (signed with the npm registry's key, logged in Rekor).
#[test]
fn npm_provenance_and_the_registry_signed_publish_attestation_verify() {
    let served = digest(NPM_DIGEST);
    let case = format!("{DSSE}/sigstore-go__npm-provenance-sigstore-1.3.0");
    let source = bundle(&format!("{case}/bundle-provenance.json")).source(&served);
    let p = PolicyText::new()
        .root("pg", &format!("{case}/trusted-root-public-good.json"))
        .rule(1, &[&keyless("pg", ACTIONS, RELEASE_WORKFLOW)])
        .attestation(
            "type = \"slsaprovenance\"\nconditions = [\"predicate.buildType == 'https://github.com/npm/cli/gha/v2'\", \"predicate.invocation.configSource.uri == 'git+https://github.com/sigstore/sigstore-js@refs/heads/main'\"]",
        )
        .load();
    let r = attest(&p, &served, &source, SystemTime::now());
    assert!(r.passed(), "{:?}", r.results);

    let case = format!("{DSSE}/sigstore-go__npm-publish-attestation-sigstore-1.3.0");
    let keys: serde_json::Value =
        serde_json::from_slice(&read(&format!("{case}/registry.npmjs.org.keys.json"))).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(keys["keys"][0]["publicKey"]["rawBytes"].as_str().unwrap())
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
    let source = bundle(&format!("{case}/bundle-publish.json")).source(&served);
    let p = PolicyText::new()
        .root("pg", &format!("{case}/trusted-root-public-good.json"))
        .built_key("npm", &pem)
        .rule(1, &[r#"{ key = "npm" }"#])
        .attestation(
            "type = \"https://github.com/npm/attestation/tree/main/specs/publish/v0.1\"\nmax_age = \"1h\"\nconditions = [\"predicate.name == 'sigstore' && predicate.version == '1.3.0'\"]",
        )
        .load();
    // Logged at 1681839916: fresh for an hour from then.
    let r = attest(&p, &served, &source, at(1_681_839_916 + 600));
    assert!(r.passed(), "{:?}", r.results);
    let r = attest(&p, &served, &source, at(1_681_839_916 + 7200));
    assert!(
        r.results[0].detail.contains("too old: signed"),
        "{:?}",
        r.results
    );
}

/// sigstore-go's SLSA v0.2 bundle passes; the same provenance with two
/// signatures in its envelope does not.
#[test]
fn a_dsse_envelope_with_two_signatures_is_refused() {
    let served = digest(SLSA02_DIGEST);
    for (case, file, passes) in [
        ("sigstore-go__dsse-slsa-v0.2", "dsse.sigstore.json", true),
        (
            "sigstore-go__dsse-2sigs_fail",
            "dsse-2sigs.sigstore.json",
            false,
        ),
    ] {
        let case = format!("{DSSE}/{case}");
        let p = PolicyText::new()
            .root("pg", &format!("{case}/public-good.json"))
            .rule(1, &[&keyless("pg", GITHUB_OAUTH, "brian@dehamer.com")])
            .attestation("type = \"slsaprovenance02\"")
            .load();
        let source = bundle(&format!("{case}/{file}")).source(&served);
        let r = attest(&p, &served, &source, SystemTime::now());
        assert_eq!(r.passed(), passes, "{case}: {:?}", r.results);
    }
}

/// A GitHub artifact attestation: no transparency log, one RFC 3161
/// timestamp from GitHub's authority. sigstore-verify 0.15 requires an
/// inclusion proof in every v0.3 bundle, so it is refused, with the reason,
/// rather than accepted on the timestamp alone.
#[test]
fn a_github_attestation_without_a_log_entry_is_refused_with_the_reason() {
    let case = format!("{DSSE}/sigstore-rust__github-attestation-communique");
    let served = digest("sha256:76f1fe8593bf227cca2c089e3c16dc95014a8d3e89c5dd220530469ca043c428");
    let source = bundle(&format!("{case}/bundle_v3_jdx_communique.json")).source(&served);
    let p = PolicyText::new()
        .root("github", &format!("{case}/trusted_root_github.json"))
        .rule(
            1,
            &[&keyless_with(
                "github",
                r#"issuer_regex = ".*", subject = "https://dotcom.releases.github.com""#,
            )],
        )
        .attestation("name = \"release\"\ntype = \"https://in-toto.io/attestation/release/v0.2\"")
        .load();
    let r = attest(&p, &served, &source, SystemTime::now());
    assert!(!r.passed());
    assert!(
        r.results[0]
            .detail
            .contains("1 found, signed by no required signer")
            && r.results[0].detail.contains("must have an inclusion proof"),
        "{:?}",
        r.results
    );
}

/// `cosign attest --new-bundle-format` for an image: the custom predicate,
/// keyless, logged 1740770291.
#[test]
fn cosign_attestation_bundle_for_an_image_verifies_offline() {
    let case = format!("{BUNDLES}/cosign__oci-attestation-empty-image");
    let served = digest("sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4");
    let file = format!("{case}/oci-attestation.sigstore.json");
    let policy = |subject: &str| {
        PolicyText::new()
            .root("pgi", &format!("{case}/trusted_root_pgi.json"))
            .rule(1, &[&keyless("pgi", GITHUB_OAUTH, subject)])
            .attestation("type = \"custom\"\nmax_age = \"1d\"")
            .load()
    };
    let p = policy("cody@soyland.com");
    let r = attest(
        &p,
        &served,
        &bundle(&file).source(&served),
        at(1_740_770_291 + 3600),
    );
    assert!(r.passed(), "{:?}", r.results);
    assert!(
        r.results[0].signers[0].contains("cody@soyland.com"),
        "{:?}",
        r.results
    );
    let r = attest(
        &p,
        &served,
        &bundle(&file).source(&served),
        at(1_740_770_291 + 2 * DAY),
    );
    assert!(r.results[0].detail.contains("too old"), "{:?}", r.results);
    let r = attest(
        &policy("someone@else.example"),
        &served,
        &bundle(&file).source(&served),
        at(1_740_770_291 + 3600),
    );
    assert!(!r.passed());
    let other = sha256(b"another image");
    let r = attest(
        &p,
        &other,
        &bundle(&file).source(&other),
        at(1_740_770_291 + 3600),
    );
    assert!(!r.passed());
}

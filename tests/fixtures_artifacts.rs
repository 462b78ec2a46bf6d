//! Signature and attestation artifacts served themselves, as `cosign verify`
//! fetches them through portcullis: real `.sig` manifests and Sigstore
//! bundles from the fixture corpus, checked by the whole gate
//! (`support::fixtures::decide`). An artifact passes without a signature of
//! its own only when every layer verifies, for the subject it names, by a
//! signer the policy trusts; anything else is gated like an image.

mod support;

use portcullis::gate::Outcome;

use support::fixtures::{
    ACTIONS, BUNDLES, FixtureSource, KUBEWARDEN_DIGEST, KUBEWARDEN_WORKFLOW, LEGACY,
    MemoryVerdicts, PUBLIC_GOOD, PolicyText, bundle, decide, decide_with, digest, dir_signatures,
    keyless, keyless_with, kubewarden_bundle, manifest_digest, sha256, sig_manifest, sig_tag,
};

const ALICE: &str = "image-cosign-legacy/connaisseur__testimage-multi-cosigned-alice";
const ALICE_SIG: &str =
    "sha256-071bf7a986f1ca9cb2a1f0bc8392822a7777f90d58f2d2c6f271913e08de7c81.sig.json";

/// alice's real `.sig` manifest, asked for by digest: with alice trusted it
/// is served as a verified signature artifact; with only bob trusted it is
/// gated like an image, and refused.
#[test]
fn a_sig_manifest_passes_only_when_its_signature_verifies_for_a_trusted_signer() {
    let served = manifest_digest(&format!("{ALICE}/manifests/multi-cosigned-alice.json"));
    let (source, artifacts) = sig_manifest(ALICE, ALICE_SIG).artifacts(&served);
    let p = PolicyText::new()
        .key("alice", &format!("{ALICE}/alice.key"))
        .rule(1, &[r#"{ key = "alice" }"#])
        .load();
    let d = decide(&p, source, &artifacts[0]);
    assert_eq!(d.outcome, Outcome::Exempt, "{d:?}");
    assert_eq!(d.signers, vec!["key alice".to_owned()]);

    let (source, artifacts) = sig_manifest(ALICE, ALICE_SIG).artifacts(&served);
    let p = PolicyText::new()
        .key("bob", &format!("{ALICE}/bob.key"))
        .rule(1, &[r#"{ key = "bob" }"#])
        .load();
    let d = decide(&p, source, &artifacts[0]);
    assert_eq!(d.outcome, Outcome::Denied, "{d:?}");
    assert!(
        d.reason.contains("not verified as a cosign signature"),
        "{d:?}"
    );
}

/// dir-img-cosign-mixed: one layer by an unknown key beside a valid one.
/// As a signature of the image it verifies; served itself, a layer that no
/// trusted signer made keeps it from passing as an artifact.
#[test]
fn a_sig_manifest_with_a_layer_no_trusted_signer_made_is_gated_like_an_image() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-mixed");
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let (source, artifacts) = sig_tag(dir_signatures(&case)).artifacts(&served);
    let d = decide(&p, source, &artifacts[0]);
    assert_eq!(d.outcome, Outcome::Denied, "{d:?}");
    assert!(d.reason.contains("does not verify"), "{d:?}");
    // Its valid layer alone passes.
    let (source, artifacts) = sig_tag(dir_signatures(&case)[1..].to_vec()).artifacts(&served);
    assert_eq!(decide(&p, source, &artifacts[0]).outcome, Outcome::Exempt);
}

/// The cosign v3 signature bundle of kubewarden-controller as a referrer
/// artifact: it verifies for the release workflow, so it is served; for a
/// policy that trusts another identity it is refused.
#[test]
fn a_bundle_referrer_passes_for_the_identity_that_signed_it() {
    let served = digest(KUBEWARDEN_DIGEST);
    let (source, artifacts) = kubewarden_bundle().artifacts(&served);
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let d = decide(&p, source, &artifacts[0]);
    assert_eq!(d.outcome, Outcome::Exempt, "{d:?}");
    assert!(d.signers[0].contains(KUBEWARDEN_WORKFLOW), "{d:?}");

    let (source, artifacts) = kubewarden_bundle().artifacts(&served);
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[&keyless(
                "pg",
                ACTIONS,
                "https://github.com/acme/app/.github/workflows/r.yml@refs/heads/main",
            )],
        )
        .load();
    let d = decide(&p, source, &artifacts[0]);
    assert_eq!(d.outcome, Outcome::Denied, "{d:?}");
    assert!(
        d.reason.contains("not verified as a Sigstore bundle"),
        "{d:?}"
    );
}

/// `cosign attest --new-bundle-format`: an attestation is no signature of the
/// image, but attached as a referrer it is signed content about it, and
/// passes as an artifact for the identity that made it.
#[test]
fn an_attestation_bundle_passes_as_an_artifact_though_it_is_no_signature() {
    let case = format!("{BUNDLES}/cosign__oci-attestation-empty-image");
    let subject = digest("sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4");
    let (source, artifacts) =
        bundle(&format!("{case}/oci-attestation.sigstore.json")).artifacts(&subject);
    let p = PolicyText::new()
        .root("pgi", &format!("{case}/trusted_root_pgi.json"))
        .rule(
            1,
            &[&keyless_with(
                "pgi",
                r#"issuer_regex = ".*", subject_regex = ".*""#,
            )],
        )
        .load();
    let d = decide(&p, source, &artifacts[0]);
    assert_eq!(d.outcome, Outcome::Exempt, "{d:?}");
}

/// Verdicts are keyed by the build: a passing verdict an older (perhaps
/// buggy) verifier left behind is never reused by this one, while this
/// build's own verdict is.
#[test]
fn a_verdict_from_another_build_is_not_reused() {
    let p = PolicyText::new()
        .key("alice", &format!("{ALICE}/alice.key"))
        .rule(1, &[r#"{ key = "alice" }"#])
        .load();
    // An unsigned manifest: on its own it is refused.
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
        sha256(b"{}")
    );
    let digest = sha256(manifest.as_bytes());
    let verified = r#"{"Verified":{"signers":["key alice"],"checked":1}}"#;
    let key = |build: &str| {
        format!(
            "{build} {} image docker.io/library/alpine {digest}",
            p.policy.fingerprint
        )
    };
    let old = MemoryVerdicts::seeded(key("0.0.1+0123456789abcdef"), verified);
    let d = decide_with(&p, FixtureSource::default(), old, manifest.as_bytes());
    assert_eq!(d.outcome, Outcome::Denied, "{d:?}");
    let own = MemoryVerdicts::seeded(key(portcullis::gate::build_id()), verified);
    let d = decide_with(&p, FixtureSource::default(), own, manifest.as_bytes());
    assert_eq!(
        d.outcome,
        Outcome::Verified,
        "the key format is the gate's: {d:?}"
    );
}

//! Sigstore bundles from the fixture corpus (`image-sigstore-bundle/*`, both
//! cases): kubewarden-controller v1.34.0 signed by cosign v3 (bundle v0.3,
//! DSSE, Rekor entry and RFC 3161 timestamp) with its identity, workflow
//! claims, digest and timestamp-authority checks; and a `cosign attest`
//! bundle, which is an attestation and not a signature.
//!
//! The helpers are in `support::fixtures`.

mod support;

use support::fixtures::{
    ACTIONS, BUNDLES, GITHUB_OAUTH, KUBEWARDEN_DIGEST, KUBEWARDEN_WORKFLOW, PUBLIC_GOOD,
    PUBLIC_GOOD_NO_TSA, PolicyText, assert_refused, assert_verified, bundle, digest, gate, keyless,
    keyless_with, kubewarden_bundle,
};

/// kubewarden-controller v1.34.0, signed by cosign v3 (bundle v0.3, DSSE with
/// the cosign sign/v1 predicate, Rekor entry + RFC 3161 timestamp): passes
/// with the public-good root that lists the TSA, for the release workflow identity.
#[test]
fn cosign_v3_bundle_verifies_for_the_release_workflow_identity() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let v = gate(&p, &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_verified(&v);
    assert!(v.signers[0].contains(KUBEWARDEN_WORKFLOW), "{v:?}");
}

/// The GitHub workflow claims in the certificate are matched exactly too.
#[test]
fn cosign_v3_bundle_workflow_claims_must_match() {
    let base = format!("issuer = {ACTIONS:?}, subject = {KUBEWARDEN_WORKFLOW:?}");
    for (claims, pass) in [
        (
            r#"github_workflow_repository = "kubewarden/kubewarden-controller", github_workflow_ref = "refs/tags/v1.34.0", github_workflow_trigger = "push""#,
            true,
        ),
        (
            r#"github_workflow_repository = "kubewarden/kubewarden""#,
            false,
        ),
        (r#"github_workflow_ref = "refs/heads/main""#, false),
        (r#"github_workflow_trigger = "pull_request""#, false),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(1, &[&keyless_with("pg", &format!("{base}, {claims}"))])
            .load();
        let v = gate(&p, &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
        assert_eq!(v.verified, pass, "{claims}: {v:?}");
        if !pass {
            assert!(v.reason.contains("does not match"), "{claims}: {v:?}");
        }
    }
}

#[test]
fn cosign_v3_bundle_is_refused_for_a_wrong_identity() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[&keyless(
                "pg",
                ACTIONS,
                "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.33.0",
            )],
        )
        .load();
    let v = gate(&p, &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_refused(&v, "does not match");

    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, KUBEWARDEN_WORKFLOW)])
        .load();
    let v = gate(&p, &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_refused(&v, "does not match");
}

/// Upstream negative: the bundle does not vouch for another digest (sha256:000…0).
#[test]
fn cosign_v3_bundle_is_refused_for_another_digest() {
    let p = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let zero = digest(&format!("sha256:{}", "0".repeat(64)));
    let v = gate(&p, &zero, &kubewarden_bundle());
    assert!(!v.verified, "{v:?}");
    assert_eq!(v.distinct, 0);
}

/// The bundle carries an RFC 3161 timestamp: a root without the TSA
/// (sigstore-rs's older production root) cannot verify it, and says why.
#[test]
fn cosign_v3_bundle_needs_a_root_that_lists_its_timestamp_authority() {
    let p = PolicyText::new()
        .root("old", PUBLIC_GOOD_NO_TSA)
        .rule(1, &[&keyless("old", ACTIONS, KUBEWARDEN_WORKFLOW)])
        .load();
    let v = gate(&p, &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
    assert_refused(&v, "root old");
}

/// cosign attest --new-bundle-format output: a valid Sigstore bundle for the
/// image digest, but its predicate is an attestation, not cosign's signature
/// predicate, so it does not count as a signature whatever the identity.
#[test]
fn cosign_attestation_bundle_is_rejected_as_an_attestation() {
    let case = format!("{BUNDLES}/cosign__oci-attestation-empty-image");
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
    let subject = digest("sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4");
    let v = gate(
        &p,
        &subject,
        &bundle(&format!("{case}/oci-attestation.sigstore.json")),
    );
    assert_refused(&v, "an attestation");
    assert!(
        v.reason
            .contains("https://cosign.sigstore.dev/attestation/v1"),
        "names the predicate: {v:?}"
    );
}

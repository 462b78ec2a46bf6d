//! Identity matchers are anchored, against real certificates from the
//! fixture corpus: an `issuer`/`subject` (or `*_regex`) that only looks like
//! the certificate's identity (a prefix, a suffix, a substring) must not
//! match, while the whole-identity control does.
//!
//! Checked for the legacy keyless signature (connaisseur `testimage-keyless`,
//! an email from GitHub OAuth) and for the cosign v3 Sigstore bundle
//! (kubewarden-controller, a GitHub Actions workflow identity).
//!
//! The helpers are in `support::fixtures`.

mod support;

use support::fixtures::{
    ACTIONS, GITHUB_OAUTH, KEYLESS_DIGEST, KUBEWARDEN_DIGEST, KUBEWARDEN_WORKFLOW, PHILIPP,
    PUBLIC_GOOD, PolicyText, digest, gate, keyless_evidence, keyless_with, kubewarden_bundle, re,
};

/// A subject_regex that is a prefix of the real identity would match only as
/// a substring: it must not match. The full regex does (the control).
#[test]
fn keyless_subject_regex_matching_only_a_prefix_does_not_match() {
    for (subject_regex, pass) in [
        (r"philipp\.belitz", false),
        (r"philipp\.belitz@securesystems", false),
        (r"securesystems\.de", false),
        (r"philipp\.belitz@securesystems\.de", true),
        (r"[a-z.]+@securesystems\.de", true),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(
                1,
                &[&keyless_with(
                    "pg",
                    &format!(
                        "issuer = {GITHUB_OAUTH:?}, subject_regex = {}",
                        re(subject_regex)
                    ),
                )],
            )
            .load();
        let v = gate(&p, &digest(KEYLESS_DIGEST), &keyless_evidence());
        if pass {
            assert!(v.verified, "{subject_regex:?} must match: {v:?}");
        } else {
            assert!(
                !v.verified,
                "{subject_regex:?} must not match as a substring: {v:?}"
            );
            assert!(
                v.reason.contains("does not match"),
                "{subject_regex:?}: {v:?}"
            );
        }
    }
}

/// Issuers that look like the real one (prefix, suffix, substring regex) must not match.
#[test]
fn keyless_issuer_lookalike_does_not_match() {
    for issuer in [
        format!("issuer = {:?}", "https://github.com/login/oauth/"),
        format!("issuer = {:?}", "https://github.com/login"),
        format!(
            "issuer = {:?}",
            "https://github.com/login/oauth.evil.example"
        ),
        format!("issuer = {:?}", "http://github.com/login/oauth"),
        format!("issuer_regex = {}", re(r"https://github\.com/login")),
        format!("issuer_regex = {}", re(r"github\.com/login/oauth")),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(
                1,
                &[&keyless_with(
                    "pg",
                    &format!("{issuer}, subject = {PHILIPP:?}"),
                )],
            )
            .load();
        let v = gate(&p, &digest(KEYLESS_DIGEST), &keyless_evidence());
        assert!(!v.verified, "{issuer} must not match {GITHUB_OAUTH}: {v:?}");
        assert!(v.reason.contains("issuer"), "{issuer}: {v:?}");
        assert!(v.reason.contains("does not match"), "{issuer}: {v:?}");
    }
}

/// The same anchoring holds for a cosign v3 bundle's GitHub Actions identity.
#[test]
fn bundle_subject_regex_prefix_and_issuer_lookalike_do_not_match() {
    let right_subject = format!("subject = {KUBEWARDEN_WORKFLOW:?}");
    let right_issuer = format!("issuer = {ACTIONS:?}");
    for (fields, pass) in [
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(r"https://github\.com/kubewarden/kubewarden-controller/")
            ),
            false,
        ),
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(r"https://github\.com/kubewarden")
            ),
            false,
        ),
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(
                    r"https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v1\.34"
                )
            ),
            false,
        ),
        (
            format!(
                "issuer = {:?}, {right_subject}",
                "https://token.actions.githubusercontent.co"
            ),
            false,
        ),
        (
            format!(
                "issuer = {:?}, {right_subject}",
                "https://token.actions.githubusercontent.com.evil.example"
            ),
            false,
        ),
        (
            format!(
                "issuer_regex = {}, {right_subject}",
                re(r"token\.actions\.githubusercontent\.com")
            ),
            false,
        ),
        // Controls: whole-identity regexes match.
        (
            format!(
                "{right_issuer}, subject_regex = {}",
                re(
                    r"https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v.*"
                )
            ),
            true,
        ),
        (
            format!(
                "issuer_regex = {}, {right_subject}",
                re(r"https://token\.actions\.githubusercontent\.com")
            ),
            true,
        ),
    ] {
        let p = PolicyText::new()
            .root("pg", PUBLIC_GOOD)
            .rule(1, &[&keyless_with("pg", &fields)])
            .load();
        let v = gate(&p, &digest(KUBEWARDEN_DIGEST), &kubewarden_bundle());
        assert_eq!(v.verified, pass, "{fields}: {v:?}");
        if !pass {
            assert!(v.reason.contains("does not match"), "{fields}: {v:?}");
        }
    }
}

//! Keyed legacy cosign signatures from the fixture corpus
//! (`image-cosign-legacy/*`): `.sig` layers signed with a cosign key, with or
//! without a Rekor SET.
//!
//! Cases: containers/image `dir-img-cosign-valid`, `-valid-2`,
//! `-valid-with-tag`, `-mixed` and `-key-rekor-valid`; thresholds over
//! connaisseur's `multi-cosigned-alice` and `multi-cosigned-alice-bob-charlie`;
//! and the `_fail` cases (`unknown-cosign-key`, `modified-manifest`,
//! `manifest-digest-error`, `other-attachment`).
//!
//! The helpers are in `support::fixtures`.

mod support;

use portcullis::media::SIMPLE_SIGNING;

use support::fixtures::{
    LEGACY, PUBLIC_GOOD, PolicyText, Sigs, VALID, assert_refused, assert_verified, digest,
    dir_signatures, gate, manifest_digest, public_good_with_rekor_key, sig_manifest, sig_tag,
};

// ===========================================================================
// image-cosign-legacy: keyed signatures
// ===========================================================================

/// dir-img-cosign-valid: a cosign-created keyed signature (no Rekor entry)
/// verifies with cosign.pub when the log proof is optional.
#[test]
fn keyed_signature_verifies_with_its_public_key() {
    let p = PolicyText::new()
        .key("cosign", &format!("{VALID}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(VALID)));
    assert_verified(&v);
    assert_eq!(v.signers, vec!["key cosign".to_owned()]);
}

/// dir-img-cosign-valid negative: cosign2.pub did not make it.
#[test]
fn keyed_signature_is_refused_with_another_key() {
    let p = PolicyText::new()
        .key("cosign2", &format!("{VALID}/cosign2.pub"))
        .rule(1, &[r#"{ key = "cosign2" }"#])
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(VALID)));
    assert_refused(&v, "does not verify with this key");
}

/// A keyed signature with no Rekor entry is refused when the key requires one.
#[test]
fn keyed_signature_without_log_proof_is_refused_when_tlog_is_required() {
    let p = PolicyText::new()
        .key("cosign", &format!("{VALID}/cosign.pub"))
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[r#"{ key = "cosign", tlog = "required", root = "pg" }"#],
        )
        .load();
    let served = manifest_digest(&format!("{VALID}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(VALID)));
    assert_refused(&v, "no transparency-log proof");
}

/// dir-img-cosign-valid-2: two signatures by the same key are one signer.
#[test]
fn two_signatures_by_one_key_count_as_one_signer() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-valid-2");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let found = sig_tag(dir_signatures(&case));
    assert_eq!(found.layers(), 2);
    let v = gate(&p, &served, &found);
    assert_verified(&v);
    assert_eq!(v.checked, 2);
    assert_eq!(v.distinct, 1, "one key, one signer: {v:?}");

    // Threshold 2 with a second key listed: the two signatures by cosign.pub
    // still count once.
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .key("cosign2", &format!("{VALID}/cosign2.pub"))
        .rule(2, &[r#"{ key = "cosign" }"#, r#"{ key = "cosign2" }"#])
        .load();
    let v = gate(&p, &served, &found);
    assert_refused(&v, "1 of 2 required signers verified");
}

/// dir-img-cosign-valid-with-tag: a skopeo-made cosign-format signature with a
/// tag in docker-reference verifies (portcullis binds to the digest, not the
/// reference, so the upstream ":othertag" negative has no equivalent here).
#[test]
fn keyed_signature_made_by_skopeo_with_a_tag_verifies() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-valid-with-tag");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    assert_verified(&gate(&p, &served, &sig_tag(dir_signatures(&case))));
}

/// dir-img-cosign-mixed: an unknown-key signature first, then a valid one:
/// the invalid one does not mask the valid one.
#[test]
fn an_unknown_key_signature_does_not_mask_a_valid_one() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-mixed");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(&case)));
    assert_verified(&v);
    assert_eq!(v.checked, 2);
    // signature-1 alone: the unknown key's signature is what fails.
    let first = sig_tag(dir_signatures(&case)[..1].to_vec());
    assert_refused(&gate(&p, &served, &first), "does not verify");
}

const KEY_REKOR: &str = "image-cosign-legacy/containers-image__dir-img-cosign-key-rekor-valid";

/// dir-img-cosign-key-rekor-valid: a keyed signature uploaded to public-good
/// Rekor verifies with tlog = "required" (SET checked against the root).
#[test]
fn keyed_signature_with_rekor_set_verifies_when_tlog_is_required() {
    let p = PolicyText::new()
        .key("cosign2", &format!("{KEY_REKOR}/cosign2.pub"))
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[r#"{ key = "cosign2", tlog = "required", root = "pg" }"#],
        )
        .load();
    let served = manifest_digest(&format!("{KEY_REKOR}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(KEY_REKOR)));
    assert_verified(&v);
    assert_eq!(v.signers, vec!["key cosign2".to_owned()]);
}

#[test]
fn keyed_signature_with_rekor_set_is_refused_with_another_key() {
    let p = PolicyText::new()
        .key("cosign", &format!("{KEY_REKOR}/cosign.pub"))
        .root("pg", PUBLIC_GOOD)
        .rule(
            1,
            &[r#"{ key = "cosign", tlog = "required", root = "pg" }"#],
        )
        .load();
    let served = manifest_digest(&format!("{KEY_REKOR}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(KEY_REKOR)));
    assert_refused(&v, "key cosign");
}

/// Upstream negative: with cosign.pub posing as the Rekor key the SET fails,
/// even though the signature itself is by the right key. A present proof is
/// checked also when tlog is optional.
#[test]
fn keyed_signature_is_refused_when_its_rekor_set_does_not_verify() {
    let forged = public_good_with_rekor_key(&format!("{KEY_REKOR}/cosign.pub"));
    for tlog in ["required", "optional"] {
        let p = PolicyText::new()
            .key("cosign2", &format!("{KEY_REKOR}/cosign2.pub"))
            .built_root("forged", &forged)
            .rule(
                1,
                &[&format!(
                    r#"{{ key = "cosign2", tlog = "{tlog}", root = "forged" }}"#
                )],
            )
            .load();
        let served = manifest_digest(&format!("{KEY_REKOR}/manifest.json"));
        let v = gate(&p, &served, &sig_tag(dir_signatures(KEY_REKOR)));
        assert_refused(&v, "key cosign2");
    }
}

// ===========================================================================
// image-cosign-legacy: thresholds (connaisseur multi-cosigned)
// ===========================================================================

const ALICE: &str = "image-cosign-legacy/connaisseur__testimage-multi-cosigned-alice";
const ABC: &str = "image-cosign-legacy/connaisseur__testimage-multi-cosigned-alice-bob-charlie";

fn alice_evidence() -> Sigs {
    sig_manifest(
        ALICE,
        "sha256-071bf7a986f1ca9cb2a1f0bc8392822a7777f90d58f2d2c6f271913e08de7c81.sig.json",
    )
}

fn abc_evidence() -> Sigs {
    sig_manifest(
        ABC,
        "sha256-bfec161fecb0a887df7cb85e4da327c65986ccda7060cf3cd92171c6c90d7533.sig.json",
    )
}

/// multi-cosigned-alice: alice's signature verifies (no tlog required).
#[test]
fn keyed_signature_from_a_sig_manifest_verifies_for_its_signer() {
    let p = PolicyText::new()
        .key("alice", &format!("{ALICE}/alice.key"))
        .rule(1, &[r#"{ key = "alice" }"#])
        .load();
    let served = manifest_digest(&format!("{ALICE}/manifests/multi-cosigned-alice.json"));
    let v = gate(&p, &served, &alice_evidence());
    assert_verified(&v);
    assert_eq!(v.signers, vec!["key alice".to_owned()]);
}

/// multi-cosigned-alice negatives: bob required (alone, or with alice at
/// threshold 2) fails, since only alice signed.
#[test]
fn a_required_signer_who_did_not_sign_fails_the_gate() {
    let served = manifest_digest(&format!("{ALICE}/manifests/multi-cosigned-alice.json"));
    let p = PolicyText::new()
        .key("bob", &format!("{ALICE}/bob.key"))
        .rule(1, &[r#"{ key = "bob" }"#])
        .load();
    let v = gate(&p, &served, &alice_evidence());
    assert_refused(&v, "no signature from a required signer");
    assert!(v.reason.contains("key bob"), "{v:?}");

    let p = PolicyText::new()
        .key("alice", &format!("{ALICE}/alice.key"))
        .key("bob", &format!("{ALICE}/bob.key"))
        .rule(2, &[r#"{ key = "alice" }"#, r#"{ key = "bob" }"#])
        .load();
    let v = gate(&p, &served, &alice_evidence());
    assert_refused(&v, "1 of 2 required signers verified");
}

/// multi-cosigned-alice-bob-charlie: threshold 2 of {alice, bob} passes with
/// alice and bob; charlie's layer satisfies nobody.
#[test]
fn threshold_two_of_alice_and_bob_is_met() {
    let p = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .rule(2, &[r#"{ key = "alice" }"#, r#"{ key = "bob" }"#])
        .load();
    let served = manifest_digest(&format!(
        "{ABC}/manifests/multi-cosigned-alice-bob-charlie.json"
    ));
    let v = gate(&p, &served, &abc_evidence());
    assert_verified(&v);
    assert_eq!(v.distinct, 2);
    assert_eq!(
        v.checked, 3,
        "charlie's layer is checked too, and matches no signer"
    );
    let mut signers = v.signers.clone();
    signers.sort();
    assert_eq!(signers, vec!["key alice".to_owned(), "key bob".to_owned()]);
}

/// connaisseur's "threshold 3 with {alice, bob}": portcullis refuses such a
/// policy at load, since it could never pass.
#[test]
fn threshold_above_the_listed_signers_is_refused_at_load() {
    let e = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .rule(3, &[r#"{ key = "alice" }"#, r#"{ key = "bob" }"#])
        .try_load()
        .err()
        .expect("threshold 3 with two signers must not load");
    assert!(e.contains("3 distinct signers can never verify"), "{e}");
}

/// Threshold 3 of {alice, bob, cosign.pub}: only two of them signed, so the
/// signatures cannot meet it, and the reason counts.
#[test]
fn threshold_the_signatures_cannot_meet_fails_with_a_count() {
    let p = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .key("other", &format!("{VALID}/cosign.pub"))
        .rule(
            3,
            &[
                r#"{ key = "alice" }"#,
                r#"{ key = "bob" }"#,
                r#"{ key = "other" }"#,
            ],
        )
        .load();
    let served = manifest_digest(&format!(
        "{ABC}/manifests/multi-cosigned-alice-bob-charlie.json"
    ));
    let v = gate(&p, &served, &abc_evidence());
    assert_eq!(v.distinct, 2);
    assert_refused(&v, "2 of 3 required signers verified: 3 signatures checked");
}

/// All three keys listed, threshold 3: each layer satisfies its own signer.
#[test]
fn threshold_three_of_alice_bob_and_charlie_is_met() {
    let p = PolicyText::new()
        .key("alice", &format!("{ABC}/alice.key"))
        .key("bob", &format!("{ABC}/bob.key"))
        .key("charlie", &format!("{ABC}/charlie.key"))
        .rule(
            3,
            &[
                r#"{ key = "alice" }"#,
                r#"{ key = "bob" }"#,
                r#"{ key = "charlie" }"#,
            ],
        )
        .load();
    let served = manifest_digest(&format!(
        "{ABC}/manifests/multi-cosigned-alice-bob-charlie.json"
    ));
    let v = gate(&p, &served, &abc_evidence());
    assert_verified(&v);
    assert_eq!(v.distinct, 3);
}

// ===========================================================================
// image-cosign-legacy: the _fail cases
// ===========================================================================

/// unknown-cosign-key_fail: a well-formed signature by an untrusted key.
#[test]
fn signature_by_an_unknown_key_is_refused() {
    let case = format!("{LEGACY}/containers-image__unknown-cosign-key_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(&case)));
    assert_refused(&v, "the signature does not verify with this key");
}

/// modified-manifest_fail: a valid signature, but the served manifest bytes
/// were altered, so its digest is not the signed one.
#[test]
fn valid_signature_over_a_tampered_manifest_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-modified-manifest_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(&case)));
    assert_refused(&v, "signed for another image");
    assert!(
        v.reason
            .contains("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"),
        "names the digest that was signed: {v:?}"
    );
    // The same signature does pass for the untampered digest (the control).
    let signed = digest("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00");
    assert_verified(&gate(&p, &signed, &sig_tag(dir_signatures(&case))));
}

/// manifest-digest-error_fail: a schema1 manifest with broken signatures. Its
/// served digest (sha256 of its bytes) is not the one the signature names.
#[test]
fn signature_against_an_undigestable_schema1_manifest_is_refused() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-manifest-digest-error_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let v = gate(&p, &served, &sig_tag(dir_signatures(&case)));
    assert_refused(&v, "signed for another image");
}

/// other-attachment_fail: a text/plain attachment with a copied signature
/// annotation is not a signature: discovery skips it, and even if its payload
/// reached the verifier it would be refused.
#[test]
fn a_non_signature_attachment_is_not_a_signature() {
    let case = format!("{LEGACY}/containers-image__dir-img-cosign-other-attachment_fail");
    let p = PolicyText::new()
        .key("cosign", &format!("{case}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let served = manifest_digest(&format!("{case}/manifest.json"));
    let layers = dir_signatures(&case);
    assert_eq!(layers[0].media_type, "text/plain");

    let v = gate(&p, &served, &sig_tag(layers));
    assert_refused(&v, "has media type \"text/plain\"");
    assert_eq!(v.checked, 0);

    // The same layer under the signature media type: the verifier still
    // refuses it, for what it holds.
    let relabelled =
        sig_tag(dir_signatures(&case)).map_layers(|l| l.media_type = SIMPLE_SIGNING.to_owned());
    let v = gate(&p, &served, &relabelled);
    assert_refused(&v, "the payload is not JSON");
}

//! Real Docker Content Trust data from the fixture corpus
//! (`../shared/fixtures/notary-v1`): Connaisseur's test repositories and
//! repositories written by Notary's own 0.1 and 0.3 clients, verified
//! offline by portcullis's TUF code (`notary::tuf`) from the pinned root
//! key each case's SOURCE.txt names, with the results it gives.
//!
//! Where a case disagrees with its SOURCE.txt, the test says why: three
//! Connaisseur cases were re-signed by hand and their snapshots still record
//! the old length of targets.json (523 bytes for a 1300–1477 byte file).
//! Notary's own client reads a role file only up to the length its parent
//! records, so `docker pull` with DCT refuses them too; Connaisseur does not
//! check lengths. Their signatures and hashes do verify (asserted below).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use portcullis::notary::tuf::{self, Anchor, Files, PublicKey, TagLookup, TufError, Versions};
use x509_cert::der::{DecodePem as _, Encode as _};

fn dir(case: &str) -> PathBuf {
    support::fixtures::corpus().join("notary-v1").join(case)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The role files of a case (`metadata/` for Notary's own fixtures).
fn files(case: &str) -> Files {
    let mut d = dir(case);
    if d.join("metadata").is_dir() {
        d = d.join("metadata");
    }
    let mut delegations = std::collections::BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(d.join("targets")) {
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_str().unwrap().to_owned();
            delegations.insert(format!("targets/{name}"), read(&p));
        }
    }
    Files {
        root: read(&d.join("root.json")),
        timestamp: read(&d.join("timestamp.json")),
        snapshot: read(&d.join("snapshot.json")),
        targets: read(&d.join("targets.json")),
        delegations,
    }
}

fn pem_key(pem: &str) -> PublicKey {
    let der = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    PublicKey::from_spki(&der).unwrap()
}

/// Connaisseur's pinned key (`keys/root.pub`).
fn connaisseur_pin(case: &str) -> PublicKey {
    pem_key(&String::from_utf8(read(&dir(case).join("root.pub"))).unwrap())
}

/// The public key of a pinned root certificate, as `openssl x509 -pubkey`
/// prints it (the docs' recipe).
fn cert_key(pem: &[u8]) -> PublicKey {
    let cert = x509_cert::Certificate::from_pem(pem).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    PublicKey::from_spki(&spki).unwrap()
}

/// The root key of a root.json read out of the file itself (its one
/// root-role certificate), for cases that ship no separate pin.
fn key_in_root(root: &[u8]) -> PublicKey {
    let v: serde_json::Value = serde_json::from_slice(root).unwrap();
    let id = v["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap();
    let public = v["signed"]["keys"][id]["keyval"]["public"]
        .as_str()
        .unwrap();
    cert_key(
        &base64::engine::general_purpose::STANDARD
            .decode(public)
            .unwrap(),
    )
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn at(rfc3339: &str) -> SystemTime {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp() as u64)
}

fn verify(files: &Files, key: &PublicKey, when: SystemTime) -> Result<tuf::Repository, TufError> {
    tuf::verify(
        files,
        &Anchor::Pinned { name: "pin", key },
        &Versions::default(),
        when,
    )
}

fn sha(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

const SIGN: &str = "a154797b8300165956ee1f16d98f3a1426301c1168f0462c73ce9bc03361cabf";
const V1: &str = "799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7";

#[test]
fn never_expire_image_signs_its_tags_by_tag_and_by_digest() {
    let case = "connaisseur__never-expire-image";
    let repo = verify(&files(case), &connaisseur_pin(case), now()).expect("verifies");
    let (sign, sign_len) = repo.roles[0].targets.0["sign"].clone();
    assert_eq!(sign, sha(SIGN));
    assert_eq!(
        repo.tag("sign", &sha(SIGN), sign_len, &[]),
        TagLookup::Signed {
            role: "targets".into()
        }
    );
    let v1_len = repo.roles[0].targets.0["v1"].1;
    assert_eq!(
        repo.tag("v1", &sha(V1), v1_len, &[]),
        TagLookup::Signed {
            role: "targets".into()
        }
    );
    // The tag moved: signed for another manifest.
    assert!(matches!(
        repo.tag("v1", &sha(SIGN), sign_len, &[]),
        TagLookup::Other { .. }
    ));
    // Same hash, other length: not these bytes.
    assert!(matches!(
        repo.tag("sign", &sha(SIGN), sign_len + 1, &[]),
        TagLookup::Other { .. }
    ));
    assert_eq!(repo.tag("v9", &sha(SIGN), sign_len, &[]), TagLookup::Absent);
    assert_eq!(
        repo.digest(&sha(V1), v1_len, &[]),
        Some(("targets".into(), "v1".into()))
    );
    // A delegation required that does not exist: nothing counts.
    assert_eq!(
        repo.tag("sign", &sha(SIGN), sign_len, &["targets/releases".into()]),
        TagLookup::Absent
    );
}

#[test]
fn a_wrong_pin_is_refused_naming_the_key() {
    let case = "connaisseur__never-expire-image";
    let other = pem_key(
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEtR5kwrDK22SyCu7WMF8tCjVgeORA\nS2PWacRcBN/VQdVK4PVk1w4pMWlz9AHQthDGl+W2k3elHkPbR+gNkK2PCA==\n-----END PUBLIC KEY-----\n",
    );
    let e = tuf::verify(
        &files(case),
        &Anchor::Pinned {
            name: "acme-dct-root",
            key: &other,
        },
        &Versions::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "root.json is not signed by the pinned root key acme-dct-root"
    );
}

#[test]
fn sample_image_root_verifies_with_its_key_and_the_repository_has_expired() {
    let case = "connaisseur__sample-image-expired";
    // The key quoted in SOURCE.txt (from Connaisseur's repo_test.go).
    let key = pem_key(
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEtR5kwrDK22SyCu7WMF8tCjVgeORA\nS2PWacRcBN/VQdVK4PVk1w4pMWlz9AHQthDGl+W2k3elHkPbR+gNkK2PCA==\n-----END PUBLIC KEY-----\n",
    );
    let f = files(case);
    let root = tuf::verify_root(
        &f.root,
        &Anchor::Pinned {
            name: "sample",
            key: &key,
        },
        at("2019-11-01T00:00:00Z"),
    );
    assert!(root.is_ok(), "{root:?}");
    let wrong = connaisseur_pin("connaisseur__never-expire-image");
    assert!(matches!(
        tuf::verify_root(
            &f.root,
            &Anchor::Pinned {
                name: "x",
                key: &wrong
            },
            at("2019-11-01T00:00:00Z")
        ),
        Err(TufError::NotPinned { .. })
    ));
    let e = verify(&f, &key, now()).unwrap_err();
    assert!(
        matches!(&e, TufError::Expired { role, .. } if role == "timestamp"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("timestamp expired 2019-11-11"),
        "{e}"
    );
    // Before anything expired, the whole repository verifies.
    verify(&f, &key, at("2019-11-01T00:00:00Z")).expect("verifies before it expired");
}

#[test]
fn alice_image_verifies_with_its_delegations_until_it_expired() {
    let case = "connaisseur__alice-image-expired";
    let f = files(case);
    let key = key_in_root(&f.root);
    let e = verify(&f, &key, now()).unwrap_err();
    assert!(
        e.to_string().starts_with("timestamp expired 2019-10-24"),
        "{e}"
    );
    let repo = verify(&f, &key, at("2019-10-20T00:00:00Z")).expect("all signatures valid");
    let names: Vec<&str> = repo.roles.iter().map(|r| r.name.as_str()).collect();
    for d in ["targets/releases", "targets/chamsen", "targets/phbelitz"] {
        assert!(names.contains(&d), "{names:?}");
    }
    assert!(repo.unusable.is_empty(), "{:?}", repo.unusable);
}

#[test]
fn notarys_own_0_1_and_0_3_repositories_verify_from_their_pinned_certificates() {
    let d = dir("notary__compat-notary0.1/trusted_certificates");
    let cert = std::fs::read_dir(&d)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let repo = verify(
        &files("notary__compat-notary0.1"),
        &cert_key(&read(&cert)),
        now(),
    )
    .expect("notary 0.1 repository verifies");
    let license = sha("9395bac6fccb26bcb55efb083d1b4b0fe72a1c25f959f056c016120b3bb56a62");
    assert_eq!(
        repo.tag("LICENSE", &license, 11309, &[]),
        TagLookup::Signed {
            role: "targets".into()
        }
    );
    assert_eq!(repo.roles[0].targets.0.len(), 1);

    // The 0.3 repository's metadata expires in 2116, but its root
    // certificate expired on 2026-07-25: Notary's client, like portcullis,
    // refuses a root whose certificate has expired. Before that, it passes.
    let f = files("notary__compat-notary0.3");
    let e = verify(&f, &key_in_root(&f.root), now()).unwrap_err();
    assert!(
        e.to_string().starts_with("root certificate 354e203b")
            && e.to_string().ends_with("expired 2026-07-25T22:56:32Z"),
        "{e}"
    );
    let repo = verify(&f, &key_in_root(&f.root), at("2026-07-01T00:00:00Z"))
        .expect("notary 0.3 repository verifies while its certificate is valid");
    let empty = sha("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(
        repo.tag("hello", &empty, 0, &["targets/releases".into()]),
        TagLookup::Signed {
            role: "targets/releases".into()
        }
    );
    assert_eq!(
        repo.tag("LICENSE", &license, 11309, &["targets/releases".into()]),
        TagLookup::Absent,
        "LICENSE is signed in targets only"
    );
    let all: usize = repo.roles.iter().map(|r| r.targets.0.len()).sum();
    assert_eq!(all, 3, "Test0Dot3RepoFormat lists 3 targets");
}

/// Connaisseur's single-role substitutions into never-expire-image.
#[test]
fn single_role_negatives_fail_and_a_root_with_two_signatures_passes() {
    let neg = dir("connaisseur__single-role-negatives");
    let base = files("connaisseur__single-role-negatives");
    let key = connaisseur_pin("connaisseur__single-role-negatives");
    verify(&base, &key, now()).expect("the unmodified set verifies");
    let with = |f: &dyn Fn(&mut Files)| {
        let mut files = base.clone();
        f(&mut files);
        verify(&files, &key, now())
    };
    let e = with(&|f| f.root = read(&neg.join("01_expired_root.json"))).unwrap_err();
    assert!(
        matches!(&e, TufError::Expired { role, .. } if role == "root"),
        "{e}"
    );
    let e =
        with(&|f| f.targets = read(&neg.join("02_invalid_signature_targets.json"))).unwrap_err();
    assert!(
        matches!(&e, TufError::Threshold { role, valid: 0, .. } if role == "targets"),
        "{e}"
    );
    let e = with(&|f| f.snapshot = read(&neg.join("03_expired_snapshot.json"))).unwrap_err();
    assert!(
        matches!(&e, TufError::Expired { role, .. } if role == "snapshot"),
        "{e}"
    );
    let e = with(&|f| f.root = read(&neg.join("06_no_signature_root.json"))).unwrap_err();
    assert!(
        matches!(&e, TufError::Threshold { role, valid: 0, .. } if role == "root"),
        "{e}"
    );
    with(&|f| f.root = read(&neg.join("07_root_multiple_signatures.json")))
        .expect("a root signed by two keys passes");
}

/// The three cases whose snapshot records a stale targets.json length are
/// refused as Notary's client refuses them (SOURCE.txt: PASS/FAIL from
/// Connaisseur, which reads no lengths), with the lengths named.
#[test]
fn stale_lengths_are_refused_as_notarys_client_refuses_them() {
    for (case, actual) in [
        ("connaisseur__never-expire-with-delegations-image", 1300),
        (
            "connaisseur__never-expire-with-conflicting-delegations-image_fail",
            1300,
        ),
        ("connaisseur__edge-case-image", 1477),
        ("connaisseur__edge-case-err-image_fail", 1477),
    ] {
        let e = verify(&files(case), &connaisseur_pin(case), now()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("targets.json is {actual} bytes, more than the 523 the snapshot records"),
            "{case}"
        );
    }
}

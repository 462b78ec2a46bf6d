//! The gate fails closed, tried as an attacker would with the real runtimes
//! behind portcullis (fail-closed mirror configurations): unsigned images
//! whose layers claim unusual media types, manifests a Go client reads
//! differently from a strict parser, images shaped like signature
//! artifacts, and the blobs endpoint as a way around a refusal. Each image
//! here has a real gzipped tar layer, so a runtime that accepted it would
//! unpack a filesystem: the podman controls show it does, straight from the
//! registry.

mod support;

use support::containerd::Containerd;
use support::crafted;
use support::gate::{Trust, audits_for, oci_error};
use support::http_request;
use support::images::push_image;
use support::oci_push::{push_layers, push_sig};
use support::podman::Podman;
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::signing::{
    ANN_SIGNATURE, CosignKey, SIMPLE_SIGNING, SigLayer, b64, in_toto_statement,
    simple_signing_payload,
};
use support::upstream;

const KIB: usize = 1024;
const REGISTRY: &str = "registry.invalid";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// portcullis in front of `reg` as `registry.invalid`, enforcing the
/// `release` key on every image.
fn gate(reg: &Registry, key: &CosignKey) -> Portcullis {
    let trust = Trust::default().key("release", key);
    let policy = format!(
        "default = \"deny\"\n[[rule]]\nname = \"signed\"\nimages = [\"{REGISTRY}/**\"]\nsigners = [{{ key = \"release\" }}]\n{}",
        trust.text
    );
    let files = trust.files_with_policy(&policy);
    let config = format!(
        "policy = \"policy.toml\"\n{}",
        upstream(REGISTRY, &reg.url())
    );
    Portcullis::start_with_files(&config, &files).unwrap()
}

fn get(p: &Portcullis, path: &str) -> support::HttpResponse {
    http_request(
        "GET",
        &format!("{}/v2/{REGISTRY}/{path}", p.url()),
        &[("Accept", ACCEPT)],
        &[],
    )
    .unwrap()
}

/// containerd whose only host for registry.invalid is portcullis.
fn containerd_behind(p: &Portcullis) -> Containerd {
    let node = Containerd::start().unwrap();
    let mirror = format!("http://{}", p.host());
    node.set_hosts(
        REGISTRY,
        &format!("server = \"{mirror}\"\n\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    node
}

/// podman with portcullis as registry.invalid's location (no fallback).
fn podman_behind(p: &Portcullis) -> Podman {
    Podman::new(&format!(
        "[[registry]]\nprefix = \"{REGISTRY}\"\nlocation = \"{}/{REGISTRY}\"\ninsecure = true\n",
        p.host()
    ))
    .unwrap()
}

/// podman pulling `registry.invalid/...` straight from the registry.
fn podman_direct(reg: &Registry) -> Podman {
    Podman::new(&format!(
        "[[registry]]\nprefix = \"{REGISTRY}\"\nlocation = \"{}\"\ninsecure = true\n",
        reg.host()
    ))
    .unwrap()
}

#[test]
fn unsigned_images_whose_layers_claim_unusual_media_types_are_refused() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let p = gate(&reg, &CosignKey::p256());
    let types = [
        "application/octet-stream",
        "application/vnd.acme.rootfs.v1",
        "application/wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
    ];
    for (i, t) in types.iter().enumerate() {
        let img = crafted::push(&reg.host(), "test/odd", &format!("t{i}"), t).unwrap();
        let r = get(&p, &format!("test/odd/manifests/t{i}"));
        assert_eq!(r.status, 403, "{t}: {}", String::from_utf8_lossy(&r.body));
        let (code, message) = oci_error(&r);
        assert_eq!(code, "DENIED");
        assert!(message.contains("no signature"), "{t}: {message}");
        assert!(
            audits_for(&p, &format!("{REGISTRY}/test/odd"), &img.digest)
                .iter()
                .all(|a| a["outcome"] == "denied"),
            "{t}"
        );
    }
    // Straight from the registry, podman unpacks such a layer: the threat.
    podman_direct(&reg)
        .pull(&format!("{REGISTRY}/test/odd:t0"), &["--tls-verify=false"])
        .unwrap();
    // Through portcullis, neither runtime gets it.
    let err = containerd_behind(&p)
        .pull_fails(&format!("{REGISTRY}/test/odd:t0"))
        .unwrap();
    assert!(err.contains("403"), "{err}");
    for i in 0..types.len() {
        let podman = podman_behind(&p);
        let pulled = podman.pull(&format!("{REGISTRY}/test/odd:t{i}"), &[]);
        let err = pulled
            .expect_err("podman pulled an unsigned image through the gate")
            .0;
        assert!(err.contains("refused by rule \"signed\""), "{err}");
    }
}

#[test]
fn manifests_a_go_client_reads_differently_are_refused_naming_the_key() {
    let reg = Registry::start(Mode::Plain).unwrap();
    // No policy at all: the strict parse protects every mirror.
    let p = Portcullis::start(&upstream(REGISTRY, &reg.url())).unwrap();
    let (m, layer) = crafted::manifest(
        &reg.host(),
        "test/keys",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "keys",
    )
    .unwrap();
    let text = m.to_string();
    let layers_at = text.find("\"layers\":[").unwrap();
    let variants = [
        ("Layers", text.replace("\"layers\"", "\"Layers\"")),
        (
            "Layers",
            text.replace("\"layers\":[", "\"layers\":[],\"Layers\":["),
        ),
        (
            "MediaType",
            format!(
                "{}{}",
                &text[..layers_at],
                text[layers_at..].replace("\"mediaType\"", "\"MediaType\"")
            ),
        ),
        (
            "layers",
            text.replace("\"layers\":[", "\"layers\":[],\"layers\":["),
        ),
    ];
    for (i, (key, v)) in variants.iter().enumerate() {
        crafted::put(&reg.host(), "test/keys", &format!("v{i}"), v, &layer).unwrap();
        let r = get(&p, &format!("test/keys/manifests/v{i}"));
        assert_eq!(r.status, 502, "variant {i}: {v}");
        let (code, message) = oci_error(&r);
        assert_eq!(code, "MANIFEST_INVALID", "{message}");
        assert!(
            message.contains(key),
            "variant {i} names {key:?}: {message}"
        );
    }
    // containerd reads "Layers" as its layers and would unpack them; through
    // portcullis the pull stops at the manifest.
    let err = containerd_behind(&p)
        .pull_fails(&format!("{REGISTRY}/test/keys:v1"))
        .unwrap();
    assert!(err.contains("502"), "{err}");
    // The plain spelling is served.
    crafted::put(&reg.host(), "test/keys", "plain", &text, &layer).unwrap();
    assert_eq!(get(&p, "test/keys/manifests/plain").status, 200);
}

#[test]
fn an_image_shaped_like_a_signature_passes_only_when_its_layers_verify() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let key = CosignKey::p256();
    let p = gate(&reg, &key);

    // A `.sig`-shaped manifest: simple-signing layer type, a signature
    // annotation, and a gzipped tar as the layer.
    let (mut m, layer) =
        crafted::manifest(&reg.host(), "test/sigshape", SIMPLE_SIGNING, "sigshape").unwrap();
    m["layers"][0]["annotations"] = serde_json::json!({ ANN_SIGNATURE: b64(b"not a signature") });
    crafted::put(&reg.host(), "test/sigshape", "v1", &m.to_string(), &layer).unwrap();
    // podman unpacks it straight from the registry ...
    podman_direct(&reg)
        .pull(
            &format!("{REGISTRY}/test/sigshape:v1"),
            &["--tls-verify=false"],
        )
        .unwrap();
    // ... and through portcullis it is gated like an image, and refused.
    let r = get(&p, "test/sigshape/manifests/v1");
    assert_eq!(r.status, 403);
    let (_, message) = oci_error(&r);
    assert!(
        message.contains("not verified as a cosign signature"),
        "{message}"
    );
    let err = podman_behind(&p)
        .pull(&format!("{REGISTRY}/test/sigshape:v1"), &[])
        .expect_err("podman pulled a signature-shaped image through the gate")
        .0;
    assert!(err.contains("refused by rule \"signed\""), "{err}");

    // A real signature by the trusted key is served as an artifact (so
    // `cosign verify` works through portcullis), and so is the image.
    let img = push_image(
        &reg.host(),
        "test/signed:v1",
        "linux",
        "amd64",
        &[KIB],
        None,
    )
    .unwrap();
    let payload = simple_signing_payload(&format!("{REGISTRY}/test/signed"), img.top_digest());
    let sig = push_sig(
        &reg.host(),
        "test/signed",
        img.top_digest(),
        &[key.sign_layer(&payload)],
    )
    .unwrap();
    assert_eq!(
        get(&p, &format!("test/signed/manifests/{}", sig.tag)).status,
        200
    );
    let audits = audits_for(&p, &format!("{REGISTRY}/test/signed"), &sig.digest);
    assert_eq!(audits.last().unwrap()["outcome"], "exempt", "{audits:?}");
    assert_eq!(get(&p, "test/signed/manifests/v1").status, 200);

    // A signature by a key the policy does not trust is not let through.
    let other = push_image(&reg.host(), "test/other:v1", "linux", "amd64", &[KIB], None).unwrap();
    let payload = simple_signing_payload(&format!("{REGISTRY}/test/other"), other.top_digest());
    let forged = push_sig(
        &reg.host(),
        "test/other",
        other.top_digest(),
        &[CosignKey::p256().sign_layer(&payload)],
    )
    .unwrap();
    let r = get(&p, &format!("test/other/manifests/{}", forged.tag));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn the_blobs_endpoint_serves_a_stored_manifest_only_where_it_would_pass() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let key = CosignKey::p256();
    let p = gate(&reg, &key);
    let unsigned = push_image(
        &reg.host(),
        "test/unsigned:v1",
        "linux",
        "amd64",
        &[KIB],
        None,
    )
    .unwrap();
    // Refused as a manifest (the cache now holds its bytes as one) ...
    assert_eq!(get(&p, "test/unsigned/manifests/v1").status, 403);
    // ... and so as a blob, under its own name or any other, GET or HEAD.
    for repo in ["test/unsigned", "no/such/repo"] {
        let path = format!("{repo}/blobs/{}", unsigned.top_digest());
        let r = get(&p, &path);
        assert_eq!(
            r.status,
            403,
            "{repo}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_ne!(r.body, unsigned.top_raw());
        let head = http_request(
            "HEAD",
            &format!("{}/v2/{REGISTRY}/{path}", p.url()),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(head.status, 403, "HEAD {repo}");
    }
    // A signed image's manifest is served through the blobs endpoint too.
    let img = push_image(
        &reg.host(),
        "test/signed:v1",
        "linux",
        "amd64",
        &[KIB],
        None,
    )
    .unwrap();
    let payload = simple_signing_payload(&format!("{REGISTRY}/test/signed"), img.top_digest());
    push_sig(
        &reg.host(),
        "test/signed",
        img.top_digest(),
        &[key.sign_layer(&payload)],
    )
    .unwrap();
    assert_eq!(get(&p, "test/signed/manifests/v1").status, 200);
    let r = get(&p, &format!("test/signed/blobs/{}", img.top_digest()));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, img.top_raw());
}

/// A DSSE envelope as cosign `attest --tlog-upload=false` writes it: the
/// statement as payload, one signature over its pre-authentication encoding.
fn envelope(key: &CosignKey, statement: &[u8]) -> Vec<u8> {
    let ty = "application/vnd.in-toto+json";
    let mut pae = format!("DSSEv1 {} {ty} {} ", ty.len(), statement.len()).into_bytes();
    pae.extend_from_slice(statement);
    serde_json::to_vec(&serde_json::json!({
        "payloadType": ty,
        "payload": b64(statement),
        "signatures": [{"keyid": "", "sig": b64(key.sign(&pae))}],
    }))
    .unwrap()
}

#[test]
fn an_attestation_passes_as_an_artifact_only_when_its_envelope_verifies() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let key = CosignKey::p256();
    let p = gate(&reg, &key);
    let img = push_image(&reg.host(), "test/app:v1", "linux", "amd64", &[KIB], None).unwrap();
    let statement = in_toto_statement(
        "app",
        img.top_digest(),
        "https://cyclonedx.org/bom",
        serde_json::json!({"components": []}),
    );
    let att_tag = format!("{}.att", support::oci_push::digest_tag(img.top_digest()));
    let layer = |signer: &CosignKey| SigLayer {
        media_type: "application/vnd.dsse.envelope.v1+json".to_owned(),
        payload: envelope(signer, &statement),
        annotations: Default::default(),
    };
    // Signed by the trusted key: served, so `cosign verify-attestation` works.
    let att = push_layers(&reg.host(), "test/app", &att_tag, &[layer(&key)]).unwrap();
    let r = get(&p, &format!("test/app/manifests/{}", att.digest));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let audits = audits_for(&p, &format!("{REGISTRY}/test/app"), &att.digest);
    assert_eq!(audits.last().unwrap()["outcome"], "exempt", "{audits:?}");

    // By anyone else, or with the statement changed under the signature: gated
    // like an image, and refused.
    let forged = push_layers(
        &reg.host(),
        "test/app",
        "forged",
        &[layer(&CosignKey::p256())],
    )
    .unwrap();
    let r = get(&p, &format!("test/app/manifests/{}", forged.digest));
    assert_eq!(r.status, 403);
    let (_, message) = oci_error(&r);
    assert!(
        message.contains("not verified as a cosign attestation"),
        "{message}"
    );
    let mut tampered = layer(&key);
    let text = String::from_utf8(tampered.payload.clone()).unwrap();
    let other = in_toto_statement(
        "app",
        img.top_digest(),
        "https://cyclonedx.org/bom",
        serde_json::json!({"components": [{"name": "added"}]}),
    );
    tampered.payload = text.replace(&b64(&statement), &b64(&other)).into_bytes();
    let t = push_layers(&reg.host(), "test/app", "tampered", &[tampered]).unwrap();
    assert_eq!(
        get(&p, &format!("test/app/manifests/{}", t.digest)).status,
        403
    );
}

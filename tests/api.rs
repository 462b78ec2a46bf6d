//! HTTP semantics of the pull API through portcullis, against a real
//! `docker-registry`: Accept negotiation, tag lists with pagination,
//! referrers through the tag schema (distribution 2.8 has no referrers API).

mod support;

use support::{registry_with_image, upstream};

use support::images::{OCI_INDEX, OCI_MANIFEST, push_image, push_multiarch};
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::{http_get, http_request};

#[test]
fn never_serves_a_manifest_type_the_client_did_not_accept() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let multi = push_multiarch(&reg.host(), "test/multi:v1", &[4096], None).unwrap();
    let p = Portcullis::start(&upstream("registry.test", &reg.url())).unwrap();
    let url = format!("{}/v2/registry.test/test/multi/manifests/v1", p.url());

    let only_manifests = http_get(&url, &[("Accept", OCI_MANIFEST)]).unwrap();
    assert_eq!(only_manifests.status, 404);
    assert!(String::from_utf8_lossy(&only_manifests.body).contains("MANIFEST_UNKNOWN"));

    let index = http_get(&url, &[("Accept", OCI_MANIFEST), ("Accept", OCI_INDEX)]).unwrap();
    assert_eq!(index.status, 200);
    assert_eq!(index.header("Content-Type"), Some(OCI_INDEX));
    assert_eq!(index.body, multi.index.as_ref().unwrap().raw);

    // Conditional GET by ETag.
    let etag = index.header("ETag").unwrap().to_owned();
    let again = http_get(&url, &[("Accept", OCI_INDEX), ("If-None-Match", &etag)]).unwrap();
    assert_eq!(again.status, 304);
}

#[test]
fn tag_lists_paginate_in_the_clients_namespace() {
    let reg = Registry::start(Mode::Plain).unwrap();
    for tag in ["a", "b", "c"] {
        push_image(
            &reg.host(),
            &format!("test/tags:{tag}"),
            "linux",
            "amd64",
            &[1024],
            None,
        )
        .unwrap();
    }
    let p = Portcullis::start(&upstream("registry.test", &reg.url())).unwrap();
    let all = http_get(
        &format!("{}/v2/registry.test/test/tags/tags/list", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(all.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&all.body).unwrap();
    assert_eq!(v["name"], "registry.test/test/tags");
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c"]));

    let first = http_get(
        &format!("{}/v2/registry.test/test/tags/tags/list?n=2", p.url()),
        &[],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    let link = first.header("Link").expect("a Link to the next page");
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .map(|(u, _)| u)
        .unwrap();
    assert!(
        next.starts_with("/v2/registry.test/test/tags/tags/list?"),
        "{link}"
    );
    let second = http_get(&format!("{}{next}", p.url()), &[]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c"]));
    assert!(second.header("Link").is_none());
}

#[test]
fn referrers_fall_back_to_the_tag_schema_and_filter_by_artifact_type() {
    let (reg, img) = registry_with_image("test/img:v1", &[1024]);
    let sig = push_image(&reg.host(), "test/img:sig", "linux", "amd64", &[512], None).unwrap();
    let subject = &img.manifest().digest;
    // What a referrers-aware client pushes to a registry without the API:
    // an index tagged <alg>-<hex> listing the referring manifests.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sig.manifest().digest,
            "size": sig.manifest().raw.len(),
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"
        }]
    })
    .to_string();
    let tag = subject.replace(':', "-");
    let put = http_request(
        "PUT",
        &format!("{}/v2/test/img/manifests/{tag}", reg.url()),
        &[("Content-Type", OCI_INDEX)],
        index.as_bytes(),
    )
    .unwrap();
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let p = Portcullis::start(&upstream("registry.test", &reg.url())).unwrap();
    let base = format!("{}/v2/registry.test/test/img/referrers/{subject}", p.url());

    let r = http_get(&base, &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some(OCI_INDEX));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["manifests"][0]["digest"], sig.manifest().digest.as_str());

    let filtered = http_get(
        &format!("{base}?artifactType=application%2Fvnd.dev.sigstore.bundle.v0.3%2Bjson"),
        &[],
    )
    .unwrap();
    assert_eq!(filtered.header("OCI-Filters-Applied"), Some("artifactType"));
    let v: serde_json::Value = serde_json::from_slice(&filtered.body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    let other = http_get(
        &format!("{base}?artifactType=application%2Fspdx%2Bjson"),
        &[],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&other.body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 0);

    // A subject nothing refers to: an empty index, not an error.
    let lonely = &sig.manifest().digest;
    let r = http_get(
        &format!("{}/v2/registry.test/test/img/referrers/{lonely}", p.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
}

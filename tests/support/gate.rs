//! Shared helpers for the policy gate's end-to-end tests: a policy with its
//! key and root files, starting portcullis with it in front of a real
//! registry, pulling, and asserting refusals and audit lines.

use super::images::TestImage;
use super::portcullis::Portcullis;
use super::registry::Registry;
use super::signing::{CosignKey, Sigstore, simple_signing_payload};
use super::{HttpResponse, http_get, registry_with_image, upstream};
use serde_json::Value;

/// What clients accept for manifests.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";
const KIB: usize = 1024;

/// Key and root files for a policy: `[keys.NAME]` with `NAME.pub`,
/// `[roots.NAME]` with `NAME.root.json`.
#[derive(Default)]
pub struct Trust {
    pub text: String,
    pub files: Vec<(String, String)>,
}

impl Trust {
    pub fn key(mut self, name: &str, key: &CosignKey) -> Trust {
        self.text += &format!("[keys.{name}]\npublic_key = \"{name}.pub\"\n");
        self.files
            .push((format!("{name}.pub"), key.public_key_pem()));
        self
    }

    /// The key and root files plus `policy.toml` holding `policy`, for
    /// [`Portcullis::start_with_files`].
    pub fn files_with_policy<'a>(&'a self, policy: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut files: Vec<(&str, &str)> = self
            .files
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        files.push(("policy.toml", policy));
        files
    }

    pub fn root(mut self, name: &str, sigstore: &Sigstore) -> Trust {
        self.text += &format!("[roots.{name}]\ntrusted_root = \"{name}.root.json\"\n");
        self.files
            .push((format!("{name}.root.json"), sigstore.trusted_root_json()));
        self
    }
}

/// Start portcullis with `policy.toml` = `rules` + trust, the registry as
/// upstream `registry.test` (and as `evil.test` when `evil`), and `cache`
/// (e.g. a `[cache]` table) appended.
pub fn start(reg: &Registry, trust: Trust, rules: &str, cache: &str, evil: bool) -> Portcullis {
    // Top-level keys (`default`, ...) in `rules` must come before any table.
    let policy = format!("{rules}\n{}", trust.text);
    let files = trust.files_with_policy(&policy);
    let mut config = format!(
        "policy = \"policy.toml\"\n{cache}\n{}",
        upstream("registry.test", &reg.url())
    );
    if evil {
        config += &upstream("evil.test", &reg.url());
    }
    Portcullis::start_with_files(&config, &files).unwrap()
}

/// `GET /v2/registry.test/<repo>/manifests/<reference>` through portcullis.
pub fn pull(p: &Portcullis, repo: &str, reference: &str) -> HttpResponse {
    pull_from(p, "registry.test", repo, reference)
}

pub fn pull_from(p: &Portcullis, registry: &str, repo: &str, reference: &str) -> HttpResponse {
    http_get(
        &format!("{}/v2/{registry}/{repo}/manifests/{reference}", p.url()),
        &[("Accept", ACCEPT)],
    )
    .unwrap()
}

pub fn body(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `(code, message)` of an OCI error body.
pub fn oci_error(r: &HttpResponse) -> (String, String) {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", body(r)));
    (
        v["errors"][0]["code"].as_str().unwrap_or("").to_owned(),
        v["errors"][0]["message"].as_str().unwrap_or("").to_owned(),
    )
}

/// The audit lines (`policy decision`) logged so far, as JSON.
pub fn audits(p: &Portcullis) -> Vec<Value> {
    p.flush_logs()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "policy decision")
        .collect()
}

/// The audit lines for `digest` requested as `reference` (normalized).
pub fn audits_for(p: &Portcullis, reference: &str, digest: &str) -> Vec<Value> {
    audits(p)
        .into_iter()
        .filter(|v| v["reference"] == reference && v["digest"] == digest)
        .collect()
}

/// The simple-signing payload for `img` in `registry.test/<repo>`.
pub fn payload(repo: &str, img: &TestImage) -> Vec<u8> {
    simple_signing_payload(&format!("registry.test/{repo}"), img.top_digest())
}

pub fn assert_served(r: &HttpResponse, img: &TestImage) {
    assert_eq!(
        r.status,
        200,
        "expected the manifest to be served: {}",
        body(r)
    );
    assert_eq!(r.body, img.top_raw(), "the upstream's manifest bytes");
}

/// Assert a 403 DENIED whose message names the image, the rule and `reason`.
pub fn assert_refused(r: &HttpResponse, reference: &str, rule: &str, reason: &str) -> String {
    assert_eq!(r.status, 403, "expected a refusal: {}", body(r));
    let (code, message) = oci_error(r);
    assert_eq!(code, "DENIED", "{message}");
    assert!(message.contains(reference), "names the image: {message}");
    assert!(
        message.contains(&format!("rule \"{rule}\"")),
        "names the rule: {message}"
    );
    assert!(
        message.contains(reason),
        "expected {reason:?} in: {message}"
    );
    message
}

/// One image with a 1 KiB layer in `test/img:v1`.
pub fn one_image() -> (Registry, TestImage) {
    registry_with_image("test/img:v1", &[KIB])
}

/// Push a legacy `.sig` for `digest` in `registry.test/<repo>`, signed by `key`.
pub fn sign_image(host: &str, repo: &str, digest: &str, key: &CosignKey) {
    let payload = simple_signing_payload(&format!("registry.test/{repo}"), digest);
    super::oci_push::push_sig(host, repo, digest, &[key.sign_layer(&payload)]).unwrap();
}

//! TLS on both sides: portcullis serving HTTPS, and portcullis pulling from
//! an HTTPS upstream whose certificate chains to a private CA (`ca_file`).
//! The upstream here is a second portcullis, as in a regional mirror in
//! front of a central one.

mod support;

use support::{registry_with_image, upstream};

use support::http_get;
use support::images::skopeo_copy_to_dir;
use support::pki::Pki;
use support::portcullis::Portcullis;

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
fn make_pki() -> (Pki, String, String, String) {
    let pki = Pki::new();
    let (ca, cert, key) = (
        pki.read("ca.pem"),
        pki.read("leaf.pem"),
        pki.read("leaf.key"),
    );
    (pki, ca, cert, key)
}

#[test]
fn serves_https_and_pulls_from_an_https_upstream_with_a_private_ca() {
    let (_pki, ca, cert, key) = make_pki();
    let (reg, img) = registry_with_image("test/img:v1", &[256 * 1024]);

    let central = Portcullis::start_with_files(
        &format!(
            "[tls]\ncert = \"leaf.pem\"\nkey = \"leaf.key\"\n{}",
            upstream("registry.test", &reg.url())
        ),
        &[("leaf.pem", &cert), ("leaf.key", &key)],
    )
    .unwrap();
    assert!(central.logs().iter().any(|l| l.contains("\"tls\":true")));

    let through_central = |ca_file: &str| {
        let url = format!("https://{}", central.host());
        format!("{}{ca_file}\n", upstream("registry.test", &url))
    };
    let regional =
        Portcullis::start_with_files(&through_central("ca_file = \"ca.pem\""), &[("ca.pem", &ca)])
            .unwrap();
    // The regional mirror routes by prefix; the central one by the same prefix.
    let src = format!(
        "docker://{}/registry.test/registry.test/test/img:v1",
        regional.host()
    );
    let pulled = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());

    // Without the CA, the upstream's certificate is not trusted: refused.
    let untrusting = Portcullis::start(&through_central("")).unwrap();
    let r = http_get(
        &format!(
            "{}/v2/registry.test/registry.test/test/img/manifests/v1",
            untrusting.url()
        ),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

//! TLS on both sides: portcullis serving HTTPS, and portcullis pulling from
//! an HTTPS upstream whose certificate chains to a private CA (`ca_file`).
//! The upstream here is a second portcullis, as in a regional mirror in
//! front of a central one.

mod support;

use support::{registry_with_image, upstream};

use std::path::Path;
use std::process::Command;

use support::images::skopeo_copy_to_dir;
use support::portcullis::Portcullis;
use support::{http_get, run};

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
fn make_pki(dir: &Path) -> (String, String, String) {
    let sh = |script: &str| {
        run(Command::new("sh").arg("-c").arg(script).current_dir(dir)).unwrap();
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=portcullis-test-ca -keyout ca.key -out ca.pem 2>&1",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout leaf.key -out leaf.csr 2>&1",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && \
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out leaf.pem 2>&1",
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read("ca.pem"), read("leaf.pem"), read("leaf.key"))
}

#[test]
fn serves_https_and_pulls_from_an_https_upstream_with_a_private_ca() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_pki(pki.path());
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

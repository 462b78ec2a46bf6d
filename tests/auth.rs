//! Upstream authentication: distribution's `auth.token` with a real token
//! server, with the mirror's own credentials, anonymous, and wrong ones.

mod support;

use support::upstream;

use support::images::{push_image, skopeo_copy_to_dir};
use support::portcullis::Portcullis;
use support::registry::{Mode, Registry};
use support::token_server::{TokenServer, TokenServerOptions};
use support::{http_get, http_request};

fn config(reg: &Registry, credentials: &str) -> String {
    format!("{}{credentials}\n", upstream("registry.test", &reg.url()))
}

#[test]
fn pulls_with_bearer_tokens_obtained_with_the_mirrors_credentials() {
    let tokens = TokenServer::start(TokenServerOptions::default()).unwrap();
    let reg = Registry::start(Mode::Token(tokens.registry_auth())).unwrap();
    let img = push_image(
        &reg.host(),
        "private/app:v1",
        "linux",
        "amd64",
        &[256 * 1024],
        Some(&tokens.creds()),
    )
    .unwrap();
    let p = Portcullis::start_with_files(
        &config(
            &reg,
            "username = \"testuser\"\npassword_file = \"upstream.password\"",
        ),
        &[("upstream.password", "testpass\n")],
    )
    .unwrap();
    let pushes = tokens.request_count();

    // The client sends no credentials of its own: portcullis uses its own.
    let src = format!("docker://{}/registry.test/private/app:v1", p.host());
    let pulled = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());

    let during_pull: Vec<_> = tokens.requests().into_iter().skip(pushes).collect();
    assert!(!during_pull.is_empty(), "no token was requested");
    assert!(
        during_pull.iter().all(|r| r.authenticated),
        "every token request carried the credentials: {during_pull:?}"
    );
    assert!(
        during_pull
            .iter()
            .all(|r| r.scopes.iter().any(|s| s == "repository:private/app:pull")),
        "{during_pull:?}"
    );
    // Tokens are cached per scope: one pull needs at most one per scope.
    assert_eq!(
        during_pull.len(),
        1,
        "tokens were not reused: {during_pull:?}"
    );

    // A client's own Authorization header is never forwarded upstream.
    let r = http_get(
        &format!("{}/v2/registry.test/private/app/manifests/v1", p.url()),
        &[("Authorization", "Bearer client-token-must-not-travel")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    // No secret reaches the logs.
    assert!(
        p.flush_logs()
            .unwrap()
            .iter()
            .all(|l| !l.contains("testpass"))
    );
}

#[test]
fn anonymous_or_wrong_credentials_are_denied_clearly() {
    let tokens = TokenServer::start(TokenServerOptions::default()).unwrap();
    let reg = Registry::start(Mode::Token(tokens.registry_auth())).unwrap();
    push_image(
        &reg.host(),
        "private/app:v1",
        "linux",
        "amd64",
        &[1024],
        Some(&tokens.creds()),
    )
    .unwrap();

    // No credentials configured: the token server refuses anonymous pulls.
    let anon = Portcullis::start(&config(&reg, "")).unwrap();
    let r = http_get(
        &format!("{}/v2/registry.test/private/app/manifests/v1", anon.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("DENIED"));

    // Wrong password.
    let wrong = Portcullis::start_with_files(
        &config(&reg, "username = \"testuser\"\npassword_file = \"pw\""),
        &[("pw", "not-the-password")],
    )
    .unwrap();
    let r = http_request(
        "HEAD",
        &format!("{}/v2/registry.test/private/app/manifests/v1", wrong.url()),
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 403);
    let logs = wrong.flush_logs().unwrap();
    assert!(
        logs.iter().any(|l| l.contains("denied access")),
        "the failure is logged"
    );
    assert!(logs.iter().all(|l| !l.contains("not-the-password")));
}

/// `testuser:testpass`, bcrypt with cost 4 (what `htpasswd -B -C 4` writes).
const HTPASSWD: &str = "testuser:$2b$04$ILCrwYltBQMNR.jPbei6XO0bKv1Z5BvcmEnzeTcQR6t5rLA09e9vq\n";

#[test]
fn answers_basic_challenges_with_the_mirrors_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, HTPASSWD).unwrap();
    let reg = Registry::start(Mode::Htpasswd(htpasswd)).unwrap();
    let img = push_image(
        &reg.host(),
        "private/app:v1",
        "linux",
        "amd64",
        &[64 * 1024],
        Some("testuser:testpass"),
    )
    .unwrap();

    let p = Portcullis::start_with_files(
        &config(&reg, "username = \"testuser\"\npassword_file = \"pw\""),
        &[("pw", "testpass\n")],
    )
    .unwrap();
    let src = format!("docker://{}/registry.test/private/app:v1", p.host());
    let pulled = skopeo_copy_to_dir(&src, &[]).unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());

    // Without credentials the Basic challenge cannot be answered.
    let anon = Portcullis::start(&config(&reg, "")).unwrap();
    let r = http_get(
        &format!("{}/v2/registry.test/private/app/manifests/v1", anon.url()),
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 403);
}

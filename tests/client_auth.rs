//! Client authentication and per-repository access (`[auth]`), with the real
//! clients: skopeo `--creds`, `podman login` + pull, `ctr --user` and ctr with
//! client certificates from `hosts.toml`; and the token flow, bound scopes,
//! expiry, the private-blob-through-a-public-path case, anonymous access,
//! htpasswd reload and the failed-login limit over plain HTTP.
//!
//! Upstream is the real `docker-registry`; what it is asked is read from its
//! access log, so "a refused pull costs no upstream request" is measured.

mod support;

use std::time::Duration;

use base64::Engine as _;
use support::containerd::Containerd;
use support::images::{TestImage, push_image, skopeo_copy_to_dir};
use support::pki::Pki;
use support::podman::Podman;
use support::portcullis::{InProcess, Portcullis};
use support::registry::{Mode, Registry};
use support::{HttpResponse, http_get, http_request, run, upstream};

const REGISTRY: &str = "registry.invalid";
const KIB: usize = 1024;

fn htpasswd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// alice may pull `team/**`, bob `other/**`, anyone `public/**`.
fn auth_config(reg: &Registry, extra: &str) -> String {
    auth_config_for(&reg.url(), extra)
}

fn auth_config_for(url: &str, extra: &str) -> String {
    format!(
        "{}\n[auth]\nhtpasswd = \"htpasswd\"\nanonymous = [\"{REGISTRY}/public/**\"]\n{extra}\n\
         [[auth.access]]\nusers = [\"alice\"]\nimages = [\"{REGISTRY}/team/**\"]\n\
         [[auth.access]]\nusers = [\"bob\", \"cn:node-*\"]\nimages = [\"{REGISTRY}/other/**\", \"{REGISTRY}/team/app\"]\n",
        upstream(REGISTRY, url)
    )
}

/// A linux/amd64 image with one random layer of `size` bytes.
fn push(reg: &Registry, repo_tag: &str, size: usize) -> TestImage {
    push_image(&reg.host(), repo_tag, "linux", "amd64", &[size], None).unwrap()
}

fn users() -> String {
    htpasswd(&[("alice", "alice-pw"), ("bob", "bob-pw")])
}

fn token(p: &str, scope: &str, auth: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    http_get(
        &format!("{p}/token?service=portcullis&scope=repository:{scope}:pull"),
        &headers,
    )
    .unwrap()
}

fn token_of(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["token"], v["access_token"]);
    v["token"].as_str().unwrap().to_owned()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn get(url: &str, auth: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    http_get(url, &headers).unwrap()
}

fn code(r: &HttpResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["errors"][0]["code"].as_str().unwrap_or("").to_owned()
}

#[test]
fn skopeo_pulls_with_creds_and_refusals_cost_no_upstream_request() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let img = push(&reg, "team/app:v1", 64 * KIB);
    push(&reg, "secret/app:v1", 64 * KIB);
    let policy = "default = \"allow\"\n";
    let p = Portcullis::start_with_files(
        &format!("policy = \"policy.toml\"\n{}", auth_config(&reg, "")),
        &[("htpasswd", &users()), ("policy.toml", policy)],
    )
    .unwrap();
    let src = |repo: &str| format!("docker://{}/{REGISTRY}/{repo}:v1", p.host());

    let pulled = skopeo_copy_to_dir(&src("team/app"), &["--src-creds", "alice:alice-pw"]).unwrap();
    assert_eq!(pulled.manifest_digest, img.top_digest());

    reg.clear_requests().unwrap();
    for (repo, creds, why) in [
        ("team/app", Some("alice:wrong"), "wrong password"),
        ("team/app", Some("mallory:alice-pw"), "unknown user"),
        (
            "secret/app",
            Some("alice:alice-pw"),
            "outside alice's images",
        ),
        ("secret/app", None, "anonymous, not allowed"),
    ] {
        let args: Vec<&str> = creds.iter().flat_map(|c| ["--src-creds", c]).collect();
        let e = skopeo_copy_to_dir(&src(repo), &args).err();
        assert!(e.is_some(), "{why}: skopeo pulled {repo}");
    }
    reg.settle().unwrap();
    assert_eq!(
        reg.requests().len(),
        0,
        "refused pulls reached the upstream: {:?}",
        reg.requests()
    );
    assert!(
        p.metric("portcullis_auth_failures_total{reason=\"bad_password\"}")
            .unwrap()
            >= 1.0
    );
    assert!(
        p.metric("portcullis_auth_failures_total{reason=\"unknown_user\"}")
            .unwrap()
            >= 1.0
    );

    let logs = p.flush_logs().unwrap();
    assert!(
        logs.iter()
            .all(|l| !l.contains("alice-pw") && !l.contains("wrong"))
    );
    let json: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        json.iter()
            .any(|v| v["message"] == "policy decision" && v["client"] == "alice"),
        "audit lines carry the identity"
    );
    assert!(
        json.iter()
            .any(|v| v["message"] == "request" && v["client"] == "alice" && v["status"] == 200),
        "access lines carry the identity"
    );
    assert!(
        json.iter()
            .any(|v| v["message"] == "login failed" && v["user"] == "mallory")
    );
}

#[test]
fn tokens_are_bound_to_their_repositories_and_expire() {
    let reg = Registry::start(Mode::Plain).unwrap();
    push(&reg, "team/app:v1", 16 * KIB);
    push(&reg, "team/tool:v1", 16 * KIB);
    let admin = format!("127.0.0.1:{}", support::free_port().unwrap());
    let p = InProcess::start_with_files(
        &format!(
            "admin_listen = \"{admin}\"\n{}",
            auth_config(&reg, "health_on_listen = false")
        ),
        &[("htpasswd", &users())],
    )
    .unwrap();
    let base = p.url();
    let manifest = |repo: &str| format!("{base}/v2/{REGISTRY}/{repo}/manifests/v1");

    // The ping and an anonymous request start the flow.
    let r = get(&format!("{base}/v2/"), None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!(
            "Bearer realm=\"http://{}/token\",service=\"portcullis\"",
            p.host()
        )
    );
    let r = get(&manifest("team/app"), None);
    assert_eq!(r.status, 401);
    assert_eq!(code(&r), "UNAUTHORIZED");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .ends_with(&format!(",scope=\"repository:{REGISTRY}/team/app:pull\"")),
        "{:?}",
        r.header("www-authenticate")
    );

    // A token for team/app, asked the way path-prefix clients name it.
    let alice = basic("alice", "alice-pw");
    let t = token_of(&token(&base, &format!("{REGISTRY}/team/app"), Some(&alice)));
    assert_eq!(get(&manifest("team/app"), Some(&bearer(&t))).status, 200);
    assert_eq!(get(&format!("{base}/v2/"), Some(&bearer(&t))).status, 200);
    // Not for team/tool, which alice may pull, but this token does not grant.
    let r = get(&manifest("team/tool"), Some(&bearer(&t)));
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    // A token asked by someone not allowed grants nothing.
    let mallory = token_of(&token(&base, &format!("{REGISTRY}/team/tool"), None));
    assert_eq!(
        get(&manifest("team/tool"), Some(&bearer(&mallory))).status,
        401
    );
    // Bad credentials get no token at all.
    assert_eq!(
        token(&base, "x/y", Some(&basic("alice", "nope"))).status,
        401
    );
    // A token altered to grant more.
    let (body, tag) = t.split_once('.').unwrap();
    let forged = format!("{}X.{tag}", &body[..body.len() - 1]);
    assert_eq!(
        get(&manifest("team/app"), Some(&bearer(&forged))).status,
        401
    );

    // Expired after the default 5 minutes.
    p.clock.advance(Duration::from_secs(301));
    let r = get(&manifest("team/app"), Some(&bearer(&t)));
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));

    // Plain Basic on every request works too.
    assert_eq!(get(&manifest("team/app"), Some(&alice)).status, 200);
    // Signed in, not allowed: 403, the same for an image that does not exist.
    let bob = basic("bob", "bob-pw");
    let r = get(&manifest("team/tool"), Some(&bob));
    assert_eq!((r.status, code(&r)), (403, "DENIED".to_owned()));
    let r = get(&manifest("team/does-not-exist"), Some(&bob));
    assert_eq!((r.status, code(&r)), (403, "DENIED".to_owned()));

    // health_on_listen = false: health and metrics are closed on listen,
    // open (without credentials) on admin_listen.
    assert_eq!(get(&format!("{base}/healthz"), None).status, 404);
    assert_eq!(get(&format!("{base}/metrics"), None).status, 404);
    assert_eq!(get(&format!("http://{admin}/healthz"), None).status, 200);
    let metrics = get(&format!("http://{admin}/metrics"), None);
    let text = String::from_utf8_lossy(&metrics.body);
    for reason in ["expired_token", "bad_token", "scope", "forbidden"] {
        assert!(
            text.contains(&format!(
                "portcullis_auth_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason} is counted"
        );
    }
}

#[test]
fn a_private_blob_does_not_come_out_through_a_public_repository() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let private = push(&reg, "team/app:v1", 64 * KIB);
    let public = push(&reg, "public/app:v1", 32 * KIB);
    let p =
        Portcullis::start_with_files(&auth_config(&reg, ""), &[("htpasswd", &users())]).unwrap();
    let base = p.url();
    let alice = basic("alice", "alice-pw");
    let layer = &private.manifest().layers[0].digest;
    let blob = |repo: &str, d: &str| format!("{base}/v2/{REGISTRY}/{repo}/blobs/{d}");

    // Cold: through the public path, the upstream is asked in the public
    // repository and says no.
    let cold = get(&blob("public/app", layer), None);
    assert_eq!((cold.status, code(&cold)), (404, "BLOB_UNKNOWN".to_owned()));
    assert!(!p.has_object(layer));

    // alice pulls the private image: its layer is cached now.
    let pulled = skopeo_copy_to_dir(
        &format!("docker://{}/{REGISTRY}/team/app:v1", p.host()),
        &["--src-creds", "alice:alice-pw"],
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, private.top_digest());
    p.wait_fills_settled().unwrap();
    assert!(p.has_object(layer));

    // Cached, and still not through the public path: not for anonymous,
    // not for alice, not by HEAD, not as a manifest by digest.
    for auth in [None, Some(alice.as_str())] {
        let r = get(&blob("public/app", layer), auth);
        assert_eq!(
            (r.status, code(&r)),
            (404, "BLOB_UNKNOWN".to_owned()),
            "{auth:?}"
        );
        assert_eq!(r.body, cold.body, "the answer does not say it is cached");
        let r = http_request("HEAD", &blob("public/app", layer), &[], &[]).unwrap();
        assert_eq!(r.status, 404);
        let r = get(
            &format!(
                "{base}/v2/{REGISTRY}/public/app/manifests/{}",
                private.top_digest()
            ),
            auth,
        );
        assert_eq!(r.status, 404, "{auth:?}");
    }
    // The private path is refused to strangers before anything is looked up.
    reg.clear_requests().unwrap();
    let r = get(&blob("team/app", layer), None);
    assert_eq!(r.status, 401);
    reg.settle().unwrap();
    assert_eq!(reg.count("", "team/app"), 0);
    // alice gets it through her repository, from the cache.
    let r = get(&blob("team/app", layer), Some(&alice));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, private.blob_bytes(layer).unwrap());

    // Anonymous pulls of what `anonymous` allows need no credentials.
    let pulled = skopeo_copy_to_dir(
        &format!("docker://{}/{REGISTRY}/public/app:v1", p.host()),
        &[],
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, public.top_digest());
    // And a restart keeps what each repository holds (offline would need it).
    let mut p = p;
    p.restart().unwrap();
    let r = get(
        &format!("{}/v2/{REGISTRY}/team/app/blobs/{layer}", p.url()),
        Some(&alice),
    );
    assert_eq!(r.status, 200);
    let r = get(
        &format!("{}/v2/{REGISTRY}/public/app/blobs/{layer}", p.url()),
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn htpasswd_changes_are_picked_up_and_revoke_tokens() {
    let reg = Registry::start(Mode::Plain).unwrap();
    push(&reg, "team/app:v1", 16 * KIB);
    let p = Portcullis::start_with_files(
        &auth_config(&reg, ""),
        &[("htpasswd", &htpasswd(&[("alice", "alice-pw")]))],
    )
    .unwrap();
    let base = p.url();
    let manifest = format!("{base}/v2/{REGISTRY}/team/app/manifests/v1");
    let t = token_of(&token(
        &base,
        &format!("{REGISTRY}/team/app"),
        Some(&basic("alice", "alice-pw")),
    ));
    assert_eq!(get(&manifest, Some(&bearer(&t))).status, 200);
    assert_eq!(get(&manifest, Some(&basic("bob", "bob-pw"))).status, 401);

    // bob is added, alice removed.
    std::fs::write(
        p.config_dir().join("htpasswd"),
        htpasswd(&[("bob", "bob-pw")]),
    )
    .unwrap();
    // (Polling with logins would trip the failed-login limit.)
    p.wait_for_log(|l| l.contains("htpasswd reloaded")).unwrap();
    assert_eq!(get(&manifest, Some(&basic("bob", "bob-pw"))).status, 200);
    assert_eq!(
        get(&manifest, Some(&basic("alice", "alice-pw"))).status,
        401
    );
    assert_eq!(
        get(&manifest, Some(&bearer(&t))).status,
        401,
        "alice's token is revoked"
    );

    // A file that does not parse is refused; the one in force stays.
    std::fs::write(p.config_dir().join("htpasswd"), "carol:$apr1$x$y\n").unwrap();
    p.wait_for_log(|l| l.contains("htpasswd reload refused"))
        .unwrap();
    assert_eq!(get(&manifest, Some(&basic("bob", "bob-pw"))).status, 200);
}

#[test]
fn failed_logins_are_rate_limited_per_address() {
    let reg = Registry::start(Mode::Plain).unwrap();
    push(&reg, "team/app:v1", 16 * KIB);
    let p = InProcess::start_with_files(&auth_config(&reg, ""), &[("htpasswd", &users())]).unwrap();
    let manifest = format!("{}/v2/{REGISTRY}/team/app/manifests/v1", p.url());
    for _ in 0..10 {
        assert_eq!(get(&manifest, Some(&basic("alice", "guess"))).status, 401);
    }
    // Now even the right password is not checked from this address.
    let r = get(&manifest, Some(&basic("alice", "alice-pw")));
    assert_eq!((r.status, code(&r)), (429, "TOOMANYREQUESTS".to_owned()));
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        p.metric("portcullis_auth_failures_total{reason=\"rate_limited\"}")
            .unwrap(),
        1.0
    );
    // A minute later the address may try again.
    p.clock.advance(Duration::from_secs(61));
    assert_eq!(
        get(&manifest, Some(&basic("alice", "alice-pw"))).status,
        200
    );
}

#[test]
fn podman_logs_in_to_the_mirror_and_pulls() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let img = push(&reg, "team/app:v1", 128 * KIB);
    let p =
        Portcullis::start_with_files(&auth_config(&reg, ""), &[("htpasswd", &users())]).unwrap();
    let node = Podman::new(&format!(
        "[[registry]]\nprefix = \"{REGISTRY}\"\nlocation = \"{REGISTRY}\"\n\n[[registry.mirror]]\nlocation = \"{}/{REGISTRY}\"\ninsecure = true\n",
        p.host()
    ))
    .unwrap();
    let image = format!("{REGISTRY}/team/app:v1");
    // Not signed in: the mirror refuses, and podman does not get it elsewhere.
    assert!(node.pull(&image, &[]).is_err());
    let e = run(node.command().args([
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "wrong",
        p.host(),
    ]))
    .err()
    .unwrap();
    assert!(
        e.0.contains("invalid username/password") || e.0.to_lowercase().contains("unauthorized"),
        "{}",
        e.0
    );
    run(node.command().args([
        "login",
        "--tls-verify=false",
        "-u",
        "alice",
        "-p",
        "alice-pw",
        p.host(),
    ]))
    .unwrap();
    node.pull(&image, &[]).unwrap();
    let inspected = node.inspect(&image).unwrap();
    assert_eq!(
        inspected["Digest"].as_str().unwrap(),
        img.top_digest(),
        "{inspected}"
    );
}

#[test]
fn ctr_pulls_with_user_and_with_client_certificates() {
    let reg = Registry::start(Mode::Plain).unwrap();
    push(&reg, "team/app:v1", 128 * KIB);
    push(&reg, "secret/app:v1", 16 * KIB);
    let pki = Pki::new();
    let (node_cert, node_key) = pki.client("node", "node-7", false);
    let (other_cert, other_key) = pki.client("other", "laptop", false);
    let (foreign_cert, foreign_key) = pki.client("foreign", "node-8", true);
    let p = Portcullis::start_with_files(
        &format!(
            "[tls]\ncert = \"leaf.pem\"\nkey = \"leaf.key\"\n{}",
            auth_config(&reg, "client_ca = \"ca.pem\"")
        ),
        &[
            ("htpasswd", &users()),
            ("leaf.pem", &pki.read("leaf.pem")),
            ("leaf.key", &pki.read("leaf.key")),
            ("ca.pem", &pki.read("ca.pem")),
        ],
    )
    .unwrap();
    let server = format!("https://{}", p.host());
    let ca = pki.path("ca.pem");
    let hosts = |client: Option<(&std::path::Path, &std::path::Path)>| {
        let client = client.map_or(String::new(), |(c, k)| {
            format!("client = [[\"{}\", \"{}\"]]\n", c.display(), k.display())
        });
        // The mirror is the only host, and the server too (nothing to fall back to).
        format!(
            "server = \"{server}\"\nca = \"{ca}\"\n{client}\n[host.\"{server}\"]\ncapabilities = [\"pull\", \"resolve\"]\nca = \"{ca}\"\n{client}",
            ca = ca.display()
        )
    };
    let image = format!("{REGISTRY}/team/app:v1");

    // With --user and no certificate.
    let node = Containerd::start().unwrap();
    node.set_hosts(REGISTRY, &hosts(None)).unwrap();
    // Anonymous: the token it gets grants nothing, and ctr gives up.
    let e = node.pull_fails(&image).unwrap();
    assert!(e.contains("insufficient_scope"), "{e}");
    node.pull(&image, &["--user", "alice:alice-pw"]).unwrap();
    assert!(
        node.pull(
            &format!("{REGISTRY}/secret/app:v1"),
            &["--user", "alice:alice-pw"]
        )
        .is_err()
    );

    // With a client certificate: cn:node-7 may pull team/app.
    let node = Containerd::start().unwrap();
    node.set_hosts(REGISTRY, &hosts(Some((&node_cert, &node_key))))
        .unwrap();
    node.pull(&image, &[]).unwrap();
    assert!(
        node.pull(&format!("{REGISTRY}/secret/app:v1"), &[])
            .is_err()
    );

    // A certificate of this CA whose CN no rule names, and one of another CA.
    for (cert, key, why) in [
        (&other_cert, &other_key, "CN no rule names"),
        (&foreign_cert, &foreign_key, "another CA"),
    ] {
        let node = Containerd::start().unwrap();
        node.set_hosts(REGISTRY, &hosts(Some((cert, key)))).unwrap();
        assert!(node.pull_fails(&image).is_ok(), "{why}");
    }
    let logs = p.logs();
    assert!(logs.iter().any(|l| l.contains("\"client\":\"cn:node-7\"")));
}

#[test]
fn imported_images_are_held_by_their_repositories_offline() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let private = push(&reg, "team/app:v1", 32 * KIB);
    push(&reg, "public/app:v1", 16 * KIB);
    let policy = [("policy.toml", "default = \"allow\"\n")];
    let online = Portcullis::start_with_files(
        &format!(
            "policy = \"policy.toml\"\n{}",
            upstream(REGISTRY, &reg.url())
        ),
        &policy,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let o = support::portcullis::cli(
        "export",
        &online.config_dir().join("portcullis.toml"),
        &[
            "-o",
            layout.to_str().unwrap(),
            &format!("{REGISTRY}/team/app:v1"),
            &format!("{REGISTRY}/public/app:v1"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reg_url = reg.url();
    drop(reg);

    let mut offline = Portcullis::start_with_files(
        &format!("offline = true\n{}", auth_config_for(&reg_url, "")),
        &[("htpasswd", &users())],
    )
    .unwrap();
    offline.terminate().unwrap();
    assert!(offline.wait_exit().unwrap().success());
    let o = support::portcullis::cli(
        "import",
        &offline.config_dir().join("portcullis.toml"),
        &[layout.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    offline.restart().unwrap();

    // By digest alone, with no tag asked first: held by team/app.
    let alice = basic("alice", "alice-pw");
    let base = offline.url();
    let r = get(
        &format!(
            "{base}/v2/{REGISTRY}/team/app/manifests/{}",
            private.top_digest()
        ),
        Some(&alice),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let layer = &private.manifest().layers[0].digest;
    let r = get(
        &format!("{base}/v2/{REGISTRY}/team/app/blobs/{layer}"),
        Some(&alice),
    );
    assert_eq!(r.status, 200);
    // Not through the public repository, which the upstream cannot be asked about.
    for auth in [None, Some(alice.as_str())] {
        let r = get(
            &format!("{base}/v2/{REGISTRY}/public/app/blobs/{layer}"),
            auth,
        );
        assert_eq!(r.status, 404, "{auth:?}");
    }
}

#[test]
fn warm_signs_in_to_an_instance_with_auth() {
    let reg = Registry::start(Mode::Plain).unwrap();
    let img = push(&reg, "team/app:v1", 64 * KIB);
    let p = Portcullis::start_with_files(
        &auth_config(&reg, ""),
        &[("htpasswd", &users()), ("alice.pw", "alice-pw\n")],
    )
    .unwrap();
    let config = p.config_dir().join("portcullis.toml");
    let image = format!("{REGISTRY}/team/app:v1");
    let url = p.url();
    // Without credentials the instance refuses, and says so.
    let o = support::portcullis::cli("warm", &config, &["--url", &url, &image]);
    assert_ne!(o.status.code(), Some(0));
    let pw = p.config_dir().join("alice.pw");
    let o = support::portcullis::cli(
        "warm",
        &config,
        &[
            "--url",
            &url,
            "--username",
            "alice",
            "--password-file",
            pw.to_str().unwrap(),
            &image,
        ],
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!("warmed {image} {}", img.top_digest())),
        "{out}"
    );
    // Published once the last byte was sent: wait for the fill to settle.
    p.wait_fills_settled().unwrap();
    assert!(p.has_object(&img.manifest().layers[0].digest));
}

/// A registry that accepts a manifest naming blobs the repository does not
/// hold (foreign layers, unchecked index children) must not unlock another
/// repository's cached layer: what a manifest references is not held.
#[test]
fn a_manifest_naming_a_private_layer_does_not_unlock_it() {
    use support::fake_upstream::{FakeUpstream, Fault};
    let fake = FakeUpstream::start().unwrap();
    let layer: Vec<u8> = (0..64 * KIB).map(|i| (i * 7 % 251) as u8).collect();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let (l, c) = (
        support::sha256_digest(&layer),
        support::sha256_digest(&config),
    );
    fake.set_blob(&l, layer.clone(), Fault::None);
    fake.set_blob(&c, config.clone(), Fault::None);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let oci = "application/vnd.oci.image.manifest.v1+json";
    fake.set_manifest("team/app", "v1", oci, manifest.clone());
    // The same manifest in a public repository that does not hold the layer.
    fake.set_manifest("public/evil", "v1", oci, manifest);
    fake.set_missing_in(&l, "public/evil");
    let p =
        Portcullis::start_with_files(&auth_config_for(&fake.url(), ""), &[("htpasswd", &users())])
            .unwrap();
    let base = p.url();
    let alice = basic("alice", "alice-pw");
    assert_eq!(
        get(
            &format!("{base}/v2/{REGISTRY}/team/app/manifests/v1"),
            Some(&alice)
        )
        .status,
        200
    );
    let r = get(
        &format!("{base}/v2/{REGISTRY}/team/app/blobs/{l}"),
        Some(&alice),
    );
    assert_eq!((r.status, r.body.len()), (200, layer.len()));
    p.wait_fills_settled().unwrap();
    assert!(p.has_object(&l));

    // Anyone may pull public/evil's manifest; its layer stays team/app's.
    assert_eq!(
        get(
            &format!("{base}/v2/{REGISTRY}/public/evil/manifests/v1"),
            None
        )
        .status,
        200
    );
    let r = get(&format!("{base}/v2/{REGISTRY}/public/evil/blobs/{l}"), None);
    assert_eq!((r.status, code(&r)), (404, "BLOB_UNKNOWN".to_owned()));
    // The config, which public/evil does hold upstream, is served (confirmed once).
    let r = get(&format!("{base}/v2/{REGISTRY}/public/evil/blobs/{c}"), None);
    assert_eq!(r.status, 200);
}

#[test]
fn parallel_guesses_cannot_outrun_the_login_limit() {
    let reg = Registry::start(Mode::Plain).unwrap();
    push(&reg, "team/app:v1", 16 * KIB);
    let p = InProcess::start_with_files(&auth_config(&reg, ""), &[("htpasswd", &users())]).unwrap();
    let manifest = format!("{}/v2/{REGISTRY}/team/app/manifests/v1", p.url());
    // 40 guesses at once, each a bcrypt: attempts count when they start.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let url = manifest.clone();
                s.spawn(move || get(&url, Some(&basic("alice", &format!("guess-{i}")))).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + limited, 40, "{statuses:?}");
    assert!(
        checked <= 10,
        "{checked} guesses were checked: {statuses:?}"
    );
}

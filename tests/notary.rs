//! Docker Content Trust end to end: images in a real registry, trust data
//! published by the real `notary` client to a real `notary-server`, pulled
//! through portcullis with `notary` signers. Rollback is served by a fake
//! Notary, because a real one never serves old metadata.

mod support;

use support::gate::{
    Trust, assert_refused, assert_served, audits_for, body, pull, sign_image, start,
};
use support::images::{TestImage, push_image};
use support::notary::{FakeNotary, NotaryClient, NotaryServer, snapshot_of};
use support::portcullis::{InProcess, Portcullis, cli};
use support::registry::{Mode, Registry};
use support::signing::CosignKey;
use support::{http_get, upstream};

const KIB: usize = 1024;
const GUN: &str = "registry.test/apps/base";

/// Registry with `apps/base:v1` and `apps/base:v2` (different images).
fn images() -> (Registry, TestImage, TestImage) {
    let reg = Registry::start(Mode::Plain).unwrap();
    let v1 = push_image(&reg.host(), "apps/base:v1", "linux", "amd64", &[KIB], None).unwrap();
    let v2 = push_image(
        &reg.host(),
        "apps/base:v2",
        "linux",
        "amd64",
        &[2 * KIB],
        None,
    )
    .unwrap();
    (reg, v1, v2)
}

/// Notary server with `GUN` initialised by a client.
fn notary() -> (NotaryServer, NotaryClient) {
    let server = NotaryServer::start().unwrap();
    let client = server.client().unwrap();
    client.init(GUN).unwrap();
    (server, client)
}

/// `[keys.dct-root]` pinned to `root_pem`, `[notary.corp]` at `url`.
fn trust(root_pem: &str, url: &str, ca: Option<&str>) -> Trust {
    let mut t = Trust::default();
    t.text += "[keys.dct-root]\npublic_key = \"dct-root.pub\"\n";
    t.files.push(("dct-root.pub".into(), root_pem.to_owned()));
    t.text += &format!("[notary.corp]\nurl = \"{url}\"\n");
    if let Some(ca) = ca {
        t.text += "ca_file = \"notary-ca.crt\"\n";
        t.files.push(("notary-ca.crt".into(), ca.to_owned()));
    }
    t
}

fn rule(signer: &str, extra: &str) -> String {
    format!(
        "verdict_ttl = \"0s\"\nfailure_ttl = \"0s\"\n[[rule]]\nname = \"dct\"\nimages = [\"registry.test/apps/**\"]\nsigners = [{signer}]\n{extra}"
    )
}

const DCT: &str = "{ notary = { server = \"corp\", root = \"dct-root\" } }";

fn start_dct(
    reg: &Registry,
    server: &NotaryServer,
    client: &NotaryClient,
    signer: &str,
) -> Portcullis {
    start_pinned(reg, &client.root_public_key_pem(GUN), server, signer)
}

/// Portcullis with the notary root pinned to `pin`.
fn start_pinned(reg: &Registry, pin: &str, server: &NotaryServer, signer: &str) -> Portcullis {
    start(
        reg,
        trust(pin, &server.url(), Some(&server.ca_pem())),
        &rule(signer, ""),
        "",
        false,
    )
}

#[test]
fn a_signed_tag_passes_by_tag_and_by_digest_and_what_is_not_signed_is_refused() {
    let (reg, v1, v2) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    // v2's tag is signed for v1's manifest: the tag moved after signing.
    client.sign(GUN, "v2", v1.top_raw(), &[]).unwrap();
    let p = start_dct(&reg, &server, &client, DCT);

    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    assert_served(&pull(&p, "apps/base", v1.top_digest()), &v1);
    let audit = audits_for(&p, GUN, v1.top_digest());
    assert_eq!(audit.last().unwrap()["outcome"], "verified", "{audit:?}");
    assert!(
        audit.last().unwrap()["signers"]
            .as_str()
            .unwrap()
            .contains("notary corp (root dct-root)")
    );

    let moved = assert_refused(
        &pull(&p, "apps/base", "v2"),
        GUN,
        "dct",
        "tag v2 is signed for sha256:",
    );
    assert!(
        moved.contains(&format!("of {GUN} (not this manifest)")),
        "{moved}"
    );
    assert_refused(
        &pull(&p, "apps/base", v2.top_digest()),
        GUN,
        "dct",
        &format!("no tag in the trust data for {GUN} is signed for this manifest"),
    );

    // A tag absent from the trust data.
    push_image(
        &reg.host(),
        "apps/base:v3",
        "linux",
        "amd64",
        &[3 * KIB],
        None,
    )
    .unwrap();
    assert_refused(
        &pull(&p, "apps/base", "v3"),
        GUN,
        "dct",
        &format!("tag v3 is not signed in the trust data for {GUN}"),
    );

    // A repository with no trust data at all.
    let other = push_image(&reg.host(), "apps/none:v1", "linux", "amd64", &[KIB], None).unwrap();
    let _ = other;
    assert_refused(
        &pull(&p, "apps/none", "v1"),
        "registry.test/apps/none",
        "dct",
        "no trust data for registry.test/apps/none",
    );
}

#[test]
fn the_wrong_pinned_root_is_refused_naming_the_key() {
    let (reg, v1, _) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let stranger = CosignKey::p256();
    let p = start(
        &reg,
        trust(
            &stranger.public_key_pem(),
            &server.url(),
            Some(&server.ca_pem()),
        ),
        &rule(DCT, ""),
        "",
        false,
    );
    assert_refused(
        &pull(&p, "apps/base", "v1"),
        GUN,
        "dct",
        &format!(
            "trust data for {GUN} refused: root.json is not signed by the pinned root key dct-root"
        ),
    );
}

#[test]
fn a_required_delegation_must_hold_the_tag() {
    let (reg, v1, v2) = images();
    let (server, client) = notary();
    client.add_delegation(GUN, "targets/releases").unwrap();
    client
        .sign(GUN, "v1", v1.top_raw(), &["targets/releases"])
        .unwrap();
    client.sign(GUN, "v2", v2.top_raw(), &[]).unwrap();
    let releases = "{ notary = { server = \"corp\", root = \"dct-root\", delegations = [\"targets/releases\"] } }";
    let p = start_dct(&reg, &server, &client, releases);
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    // Signed, but only in the top-level targets role.
    assert_refused(
        &pull(&p, "apps/base", "v2"),
        GUN,
        "dct",
        &format!("tag v2 is not signed in targets/releases in the trust data for {GUN}"),
    );
    // Without delegations, either role counts.
    let p = start_dct(&reg, &server, &client, DCT);
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    assert_served(&pull(&p, "apps/base", "v2"), &v2);
}

#[test]
fn a_rotated_root_is_followed_from_the_pinned_key() {
    let (reg, v1, v2) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let old_root = client.root_public_key_pem(GUN);
    let p = start_pinned(&reg, &old_root, &server, DCT);
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    client.rotate_root(GUN).unwrap();
    client.sign(GUN, "v2", v2.top_raw(), &[]).unwrap();
    assert_ne!(
        client.root_public_key_pem(GUN),
        old_root,
        "the root key changed"
    );
    // The new root is signed by the old (pinned) key and its own.
    assert_served(&pull(&p, "apps/base", "v2"), &v2);
    // So a fresh instance pinned to the old key follows it too, and one
    // pinned to the new key as well.
    for pin in [old_root, client.root_public_key_pem(GUN)] {
        let fresh = start_pinned(&reg, &pin, &server, DCT);
        assert_served(&pull(&fresh, "apps/base", "v2"), &v2);
    }
}

#[test]
fn an_unreachable_notary_server_decides_from_kept_trust_data_or_refuses() {
    let (reg, v1, _) = images();
    let (mut server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let kept = start_dct(&reg, &server, &client, DCT);
    let never = start_dct(&reg, &server, &client, DCT);
    assert_served(&pull(&kept, "apps/base", "v1"), &v1);
    server.stop();
    // Verdicts are not reused (verdict_ttl = 0s): the kept files decide.
    assert_served(&pull(&kept, "apps/base", "v1"), &v1);
    assert_served(&pull(&kept, "apps/base", v1.top_digest()), &v1);
    assert_refused(
        &pull(&never, "apps/base", "v1"),
        GUN,
        "dct",
        &format!("no trust data for {GUN}: the notary server is unreachable and none is kept"),
    );
}

#[test]
fn dct_or_cosign_with_threshold_1_and_both_with_threshold_2() {
    let (reg, v1, v2) = images();
    let (server, client) = notary();
    let cosign = CosignKey::p256();
    // v1: DCT only. v2: cosign only.
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    sign_image(&reg.host(), "apps/base", v2.top_digest(), &cosign);
    let both = format!("{DCT}, {{ key = \"release\" }}");
    let trust = || {
        let mut t = trust(
            &client.root_public_key_pem(GUN),
            &server.url(),
            Some(&server.ca_pem()),
        )
        .key("release", &cosign);
        t.text += "";
        t
    };
    let either = start(&reg, trust(), &rule(&both, "threshold = 1\n"), "", false);
    assert_served(&pull(&either, "apps/base", "v1"), &v1);
    assert_served(&pull(&either, "apps/base", "v2"), &v2);

    let all = start(&reg, trust(), &rule(&both, "threshold = 2\n"), "", false);
    assert_refused(
        &pull(&all, "apps/base", "v1"),
        GUN,
        "dct",
        "1 of 2 required signers verified",
    );
    assert_refused(
        &pull(&all, "apps/base", "v2"),
        GUN,
        "dct",
        "1 of 2 required signers verified",
    );
    // Both: DCT signs v2 too.
    client.sign(GUN, "v2", v2.top_raw(), &[]).unwrap();
    let r = pull(&all, "apps/base", "v2");
    assert_served(&r, &v2);
    let audit = audits_for(&all, GUN, v2.top_digest());
    assert_eq!(audit.last().unwrap()["outcome"], "verified", "{}", body(&r));
}

/// A fake Notary first serves the current trust data, then an older
/// (validly signed) copy: the rollback is refused, even after a restart.
#[test]
fn a_rollback_to_older_trust_data_is_refused() {
    let (reg, v1, v2) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let old = snapshot_of(&server, GUN, &[]);
    client.sign(GUN, "v2", v2.top_raw(), &[]).unwrap();
    let new = snapshot_of(&server, GUN, &[]);
    let fake = FakeNotary::start().unwrap();
    fake.serve(GUN, &new);
    let mut p = start(
        &reg,
        trust(&client.root_public_key_pem(GUN), &fake.url(), None),
        &rule(DCT, ""),
        "",
        false,
    );
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    fake.serve(GUN, &old);
    let m = assert_refused(&pull(&p, "apps/base", "v1"), GUN, "dct", "rollback refused");
    assert!(m.contains("older than version"), "{m}");
    p.restart().unwrap();
    assert_refused(&pull(&p, "apps/base", "v1"), GUN, "dct", "rollback refused");
    // Served the current data again, it passes.
    fake.serve(GUN, &new);
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
}

/// Trust data that has expired (portcullis's clock driven past the
/// timestamp's 14 days) is refused, naming the role and when.
#[test]
fn expired_trust_data_is_refused() {
    let (reg, v1, _) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let t = trust(
        &client.root_public_key_pem(GUN),
        &server.url(),
        Some(&server.ca_pem()),
    );
    let policy = format!("{}\n{}", rule(DCT, ""), t.text);
    let files = t.files_with_policy(&policy);
    let p = InProcess::start_with_files(
        &format!(
            "policy = \"policy.toml\"\n{}",
            upstream("registry.test", &reg.url())
        ),
        &files,
    )
    .unwrap();
    let get = |reference: &str| {
        http_get(
            &format!(
                "{}/v2/registry.test/apps/base/manifests/{reference}",
                p.url()
            ),
            &[("Accept", support::gate::ACCEPT)],
        )
        .unwrap()
    };
    assert_eq!(get("v1").status, 200);
    p.clock.advance(std::time::Duration::from_secs(15 * 86_400));
    let r = get("v1");
    assert_eq!(r.status, 403, "{}", body(&r));
    let m = body(&r);
    assert!(
        m.contains(&format!("trust data for {GUN} refused: timestamp expired")),
        "{m}"
    );
}

/// `portcullis export` carries the trust data the gate decided with;
/// `import` brings it into an offline instance, whose gate verifies it
/// again from its own pin at every pull, with the Notary server gone.
#[test]
fn an_export_carries_trust_data_across_the_air_gap() {
    let (reg, v1, v2) = images();
    let (mut server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let online = start_dct(&reg, &server, &client, DCT);
    let config = online.config_dir().join("portcullis.toml");
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    let layout_arg = layout.to_str().unwrap();
    let o = cli(
        "export",
        &config,
        &["-o", layout_arg, "registry.test/apps/base:v1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // v2 is not signed: not exported.
    let o = cli(
        "export",
        &config,
        &["-o", layout_arg, "registry.test/apps/base:v2"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let extra: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("portcullis.json")).unwrap()).unwrap();
    assert_eq!(extra["trust"].as_array().map(Vec::len), Some(1), "{extra}");

    // Across the gap: neither the registry nor the Notary server.
    server.stop();
    let offline = |pin: &str| {
        let t = trust(pin, &server.url(), Some(&server.ca_pem()));
        let policy = format!("{}\n{}", rule(DCT, ""), t.text);
        let files = t.files_with_policy(&policy);
        Portcullis::start_with_files(
            &format!(
                "policy = \"policy.toml\"\noffline = true\n{}",
                upstream("registry.test", &reg.url())
            ),
            &files,
        )
        .unwrap()
    };
    let pin = client.root_public_key_pem(GUN);
    // An offline instance, stopped, the layout imported, started again.
    let imported = || {
        let mut p = offline(&pin);
        p.terminate().unwrap();
        p.wait_exit().unwrap();
        let o = cli(
            "import",
            &p.config_dir().join("portcullis.toml"),
            &[layout_arg],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            text(&o).contains("Docker Content Trust data for 1 repositories"),
            "{}",
            text(&o)
        );
        p.restart().unwrap();
        p
    };
    let p = imported();
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    assert_served(&pull(&p, "apps/base", v1.top_digest()), &v1);

    // Trust data altered in the layout is imported (it is opaque there) but
    // never trusted: the offline gate verifies it and refuses.
    let mut extra = extra;
    let state = &mut extra["trust"][0]["state"]["files"];
    let targets = state["targets"].as_str().unwrap().to_owned();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let forged = String::from_utf8(b64.decode(targets).unwrap())
        .unwrap()
        .replace("\"v1\"", "\"v2\"");
    state["targets"] = b64.encode(forged).into();
    std::fs::write(layout.join("portcullis.json"), extra.to_string()).unwrap();
    let q = imported();
    let m = assert_refused(
        &pull(&q, "apps/base", "v1"),
        GUN,
        "dct",
        "the trust data kept for registry.test/apps/base does not verify",
    );
    assert!(
        m.contains("targets.json is signed by 0 of the 1 keys"),
        "{m}"
    );
    drop(reg);
    let _ = v2;
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A herd of first pulls of one tag costs about one round of requests to
/// the Notary server: lookups that arrive while a fetch for the same GUN
/// runs take its result (never an older one).
#[test]
fn a_herd_of_first_pulls_asks_the_notary_server_about_once() {
    let (reg, v1, _) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let fake = FakeNotary::start().unwrap();
    fake.serve(GUN, &snapshot_of(&server, GUN, &[]));
    let p = start(
        &reg,
        trust(&client.root_public_key_pem(GUN), &fake.url(), None),
        &rule(DCT, ""),
        "",
        false,
    );
    const HERD: usize = 16;
    let barrier = std::sync::Barrier::new(HERD);
    std::thread::scope(|s| {
        for _ in 0..HERD {
            s.spawn(|| {
                barrier.wait();
                assert_served(&pull(&p, "apps/base", "v1"), &v1);
            });
        }
    });
    let asked = fake.requests("/root.json");
    eprintln!("{HERD} first pulls asked for root.json {asked} times");
    assert!(
        asked <= 3,
        "{HERD} first pulls asked for root.json {asked} times"
    );
    let reused = p
        .metric("portcullis_notary_trust_data_total{server=\"corp\",outcome=\"reused\"}")
        .unwrap();
    // The herd waits for one verification of the digest; every lookup
    // the gate made fetched or reused.
    let verifications = p
        .metric("portcullis_gate_verifications_total{kind=\"image\"}")
        .unwrap();
    assert!(
        verifications >= 1.0 && verifications < HERD as f64,
        "{verifications}"
    );
    assert_eq!(
        reused as usize + asked,
        verifications as usize,
        "each lookup fetched or reused"
    );
    // Sequential pulls each ask again (nothing older than the pull is reused).
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    assert_eq!(fake.requests("/root.json"), asked + 1);
}

/// `portcullis verify` runs the notary signers by hand; `check-config`
/// refuses a notary signer naming a server the policy lacks.
#[test]
fn verify_and_check_config_cover_notary_signers() {
    let (reg, v1, v2) = images();
    let (server, client) = notary();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    client.sign(GUN, "v2", v1.top_raw(), &[]).unwrap();
    let p = start_dct(&reg, &server, &client, DCT);
    let config = p.config_dir().join("portcullis.toml");
    let o = cli("verify", &config, &["registry.test/apps/base:v1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("notary corp (root dct-root)"),
        "{}",
        text(&o)
    );
    let o = cli("verify", &config, &["registry.test/apps/base:v2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "tag v2 is signed for sha256:{}",
            &v1.top_digest()[7..]
        )),
        "{}",
        text(&o)
    );
    let _ = v2;

    let policy = p.config_dir().join("policy.toml");
    let text_before = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text_before.replace("server = \"corp\"", "server = \"elsewhere\""),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("signers[0].notary.server: no [notary.elsewhere] in this policy"),
        "{}",
        text(&o)
    );
}

/// A Notary server behind token auth (distribution's `auth.token`, as
/// Docker's and Harbor's Notary deployments run it): portcullis logs in with
/// the `[notary.NAME]` credentials; without them it is refused, naming why.
#[test]
fn a_notary_server_with_token_auth_is_read_with_its_credentials() {
    use support::token_server::{TokenServer, TokenServerOptions};
    let (reg, v1, _) = images();
    let tokens = TokenServer::start(TokenServerOptions::default()).unwrap();
    let server = NotaryServer::start_with_token(tokens.registry_auth(), &tokens.creds()).unwrap();
    let client = server.client().unwrap();
    client.init(GUN).unwrap();
    client.sign(GUN, "v1", v1.top_raw(), &[]).unwrap();
    let pin = client.root_public_key_pem(GUN);
    let (user, password) = tokens
        .creds()
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .unwrap();

    let mut t = trust(&pin, &server.url(), Some(&server.ca_pem()));
    t.text += &format!("username = \"{user}\"\npassword_file = \"notary-password\"\n");
    t.files
        .push(("notary-password".into(), format!("{password}\n")));
    let p = start(&reg, t, &rule(DCT, ""), "", false);
    let before = tokens.authenticated_count();
    assert_served(&pull(&p, "apps/base", "v1"), &v1);
    assert!(
        tokens.authenticated_count() > before,
        "portcullis logged in"
    );
    assert!(
        !p.logs().iter().any(|l| l.contains(&password)),
        "the password is never logged"
    );

    let anonymous = start_pinned(&reg, &pin, &server, DCT);
    assert_refused(
        &pull(&anonymous, "apps/base", "v1"),
        GUN,
        "dct",
        &format!("fetching trust data for {GUN} failed"),
    );
    let m = body(&pull(&anonymous, "apps/base", "v1"));
    assert!(m.contains("denied access"), "{m}");
}

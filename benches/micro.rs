//! Micro-benchmarks of the hot paths (`cargo bench --bench micro`).
//!
//! Each group carries its own anchor, measured in the same run, so results
//! read as ratios: the hashing tee against SHA-256 alone and a plain file
//! write alone; an index lookup against a bare `HashMap` lookup; parsing and
//! routing against `http::Uri` parsing of the same request line. The
//! signature groups time the first (uncached) verification of a real cosign
//! signature from the shared fixture corpus (`../shared/fixtures`, or
//! `$PORTCULLIS_FIXTURES`), keyed and keyless, and the gate's answer once a
//! verdict is cached. The attestation groups time the strict parse of a
//! large SBOM statement and a CEL condition over it, against a plain
//! `serde_json::Value` parse of the same bytes, and a real keyless SLSA
//! attestation end to end. The notary group verifies a real Notary v1
//! repository against bare ECDSA verifications. The client authentication
//! group times what `[auth]` adds to each request (a bearer token, a Basic
//! login already verified) against a bare HMAC-SHA256 verification, and one
//! bcrypt verification (what Basic would cost without remembered logins).
//! No network is used: the gate's upstream is a closed port on 127.0.0.1.

#[allow(dead_code)]
#[path = "../tests/support/fixtures.rs"]
mod fixtures;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{Method, Uri};

use portcullis::cache::Cache;
use portcullis::cache::index::Index;
use portcullis::cache::manifests::Manifest;
use portcullis::config::Config;
use portcullis::digest::{Algorithm, Digest, Hasher};

use portcullis::gate::{Gate, GateParts, Outcome};
use portcullis::metrics::Metrics;
use portcullis::policy::Policy;
use portcullis::reference::Reference;
use portcullis::router::Router;
use portcullis::store::ObjectStore;
use portcullis::store::local::LocalStore;
use portcullis::upstream::Upstreams;

const DIGEST: &str = "sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A configuration with one default upstream on a closed local port.
fn config(dir: &Path, extra: &str) -> Config {
    Config::parse(
        &format!(
            "data_dir = \"{}\"\n{extra}\n[[upstream]]\nname = \"docker.io\"\nurl = \"http://127.0.0.1:1\"\ndefault = true\n",
            dir.join("data").display()
        ),
        "bench",
        dir,
    )
    .unwrap()
}

fn parsing_and_routing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::new(&config(dir.path(), "").upstreams);
    let manifest = format!("/v2/library/alpine/manifests/{DIGEST}?ns=docker.io");
    let blob = format!("/v2/docker.io/library/alpine/blobs/{DIGEST}");
    let mut g = c.benchmark_group("parse and route");
    g.bench_function("anchor: http::Uri parse of the manifest path", |b| {
        b.iter(|| black_box(manifest.parse::<Uri>().unwrap()))
    });
    g.bench_function("digest parse", |b| {
        b.iter(|| black_box(DIGEST.parse::<Digest>().unwrap()))
    });
    g.bench_function("reference parse (tag)", |b| {
        b.iter(|| black_box("v1.2.3-rc1".parse::<Reference>().unwrap()))
    });
    for (name, path) in [
        ("route manifest by digest, ?ns=", &manifest),
        ("route blob, registry prefix", &blob),
    ] {
        let uri: Uri = path.parse().unwrap();
        g.bench_function(name, |b| {
            b.iter(|| black_box(router.route(&Method::GET, &uri).unwrap()))
        });
    }
    g.finish();
}

fn digests(n: usize) -> Vec<Digest> {
    (0..n)
        .map(|i| Digest::of(Algorithm::Sha256, &i.to_le_bytes()))
        .collect()
}

fn index(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(
        &dir.path().join("index.redb"),
        portcullis::clock::Clock::system(),
    )
    .unwrap()
    .0;
    let known = digests(10_000);
    rt.block_on(async {
        for d in &known {
            drop(idx.insert(d, 1024, None).await.unwrap());
        }
    });
    let map: HashMap<Digest, u64> = known.iter().map(|d| (d.clone(), 1024)).collect();
    let mut g = c.benchmark_group("index (10k objects)");
    g.bench_function("anchor: HashMap lookup", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % known.len();
            black_box(map.get(&known[i]))
        })
    });
    g.bench_function("lookup (hit)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % known.len();
            black_box(idx.get(&known[i]))
        })
    });
    let absent = Digest::of(Algorithm::Sha256, b"absent");
    g.bench_function("lookup (miss)", |b| b.iter(|| black_box(idx.get(&absent))));
    let mut fresh = digests(2_000_000).into_iter().skip(10_000);
    g.bench_function("insert (durable redb commit)", |b| {
        b.iter(|| {
            let d = fresh.next().expect("enough digests for the run");
            rt.block_on(async { drop(idx.insert(&d, 1024, None).await.unwrap()) })
        })
    });
    let verdicts: Vec<(String, Duration, Vec<u8>)> = (0..10_000)
        .map(|i| {
            (
                format!("fp docker.io/library/app{i} {DIGEST}"),
                Duration::from_secs(3600),
                b"{}".to_vec(),
            )
        })
        .collect();
    let keys: Vec<String> = verdicts.iter().map(|v| v.0.clone()).collect();
    rt.block_on(idx.put_verdicts(verdicts)).unwrap();
    g.bench_function("verdict lookup (10k verdicts)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(idx.verdict(&keys[i]))
        })
    });
    g.finish();
}

/// The hashing tee: bytes through the store's verified writer (hash + file
/// write on its own thread), against its two halves alone.
fn hashing_tee(c: &mut Criterion) {
    const SIZE: usize = 64 << 20;
    const PIECE: usize = 256 << 10;
    let rt = runtime();
    let data: Vec<Bytes> = (0..SIZE / PIECE)
        .map(|p| {
            Bytes::from(
                (0..PIECE)
                    .map(|i| ((p * 31 + i * 7) % 251) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    let mut hasher = Hasher::new(Algorithm::Sha256);
    for piece in &data {
        hasher.update(piece);
    }
    let digest = hasher.finish();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let mut g = c.benchmark_group("hashing tee (64 MiB in 256 KiB pieces)");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(20);
    g.bench_function("anchor: sha256 alone", |b| {
        b.iter(|| {
            let mut h = Hasher::new(Algorithm::Sha256);
            for piece in &data {
                h.update(piece);
            }
            black_box(h.finish())
        })
    });
    g.bench_function("anchor: file write alone", |b| {
        use std::io::Write;
        b.iter_batched(
            || tempfile::tempfile_in(dir.path()).unwrap(),
            |mut f| {
                for piece in &data {
                    f.write_all(piece).unwrap();
                }
                f
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("verified writer: write + hash + verify", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut w = store.create(&digest, Some(SIZE as u64)).await.unwrap();
                for piece in &data {
                    w.append(piece.clone()).await.unwrap();
                }
                // Verified, not published: the temp file is dropped.
                black_box(w.finish().await.unwrap())
            })
        })
    });
    g.finish();
}

/// The gate's answer for a manifest whose verdict is cached: rule lookup,
/// verdict lookup and decoding, the decision (without a log subscriber).
fn gate_cached(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let key = fixtures::fixture(&format!("{}/cosign.pub", fixtures::VALID));
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "[keys.k]\npublic_key = \"{}\"\n[[rule]]\nname = \"signed\"\nimages = [\"docker.io/**\"]\nmode = \"enforce\"\nsigners = [{{ key = \"k\" }}]\n",
            key.display()
        ),
    )
    .unwrap();
    let cfg = config(dir.path(), "");
    let metrics = Metrics::new();
    let (gate, target, manifest) = rt.block_on(async {
        let upstreams = Upstreams::new(&cfg.upstreams, &metrics, &portcullis::clock::Clock::system()).unwrap();
        let cache = Cache::open(&cfg, upstreams, metrics.clone(), portcullis::clock::Clock::system()).await.unwrap();
        let router = Arc::new(Router::new(&cfg.upstreams));
        let policy = Policy::load(&policy_path, &cfg.upstreams).unwrap();
        let gate = Gate::new(GateParts {
            policy,
            policy_path: policy_path.clone(),
            upstreams: cfg.upstreams.clone(),
            source: Arc::new(cache.clone()),
            verdicts: Arc::new(cache.clone()),
            router: router.clone(),
            notary: Arc::new(portcullis::notary::Notary::new(Arc::new(cache), false, metrics.clone(), portcullis::clock::Clock::system())),
            metrics: metrics.clone(),
            clock: portcullis::clock::Clock::system(),
        });
        let uri: Uri = "/v2/library/app/manifests/v1".parse().unwrap();
        let target = router.route(&Method::GET, &uri).unwrap().target.unwrap();
        let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:31dc72a13a0c34b40eb95419d2b2fd67320c856baf3b72da518023ee8d370aee","size":2}]}"#);
        let manifest = Manifest::check(&Digest::of(Algorithm::Sha256, &bytes), bytes, None).unwrap();
        // The first check cannot reach the (closed) upstream for signatures:
        // it is refused, and that verdict is cached for failure_ttl.
        let first = gate.check(&target, &Reference::Tag("v1".parse().unwrap()), &manifest, None).await;
        assert_eq!(first.outcome, Outcome::Denied, "{}", first.message());
        (gate, target, manifest)
    });
    let reference = Reference::Tag("v1".parse().unwrap());
    let mut g = c.benchmark_group("policy gate");
    g.bench_function("check with a cached verdict", |b| {
        b.iter(|| {
            let d = rt.block_on(gate.check(&target, &reference, &manifest, None));
            assert_eq!(d.outcome, Outcome::Denied);
            black_box(d)
        })
    });
    g.finish();
}

/// The first verification of one real cosign signature: what a cold verdict costs.
fn first_verification(c: &mut Criterion) {
    use fixtures::*;
    let keyed = PolicyText::new()
        .key("cosign", &format!("{VALID}/cosign.pub"))
        .rule(1, &[r#"{ key = "cosign" }"#])
        .load();
    let keyed_digest = manifest_digest(&format!("{VALID}/manifest.json"));
    let keyed_found = sig_tag(dir_signatures(VALID)).source(&keyed_digest);
    let keyless_policy = PolicyText::new()
        .root("pg", PUBLIC_GOOD)
        .rule(1, &[&keyless("pg", GITHUB_OAUTH, PHILIPP)])
        .load();
    let keyless_digest = digest(KEYLESS_DIGEST);
    let keyless_found = keyless_evidence().source(&keyless_digest);
    // Both verify: the bench times success, not an early rejection.
    assert_verified(&verify_in(&keyed, &keyed_digest, &keyed_found));
    assert_verified(&verify_in(&keyless_policy, &keyless_digest, &keyless_found));
    let mut g = c.benchmark_group("first verification");
    g.bench_function("keyed cosign signature (ECDSA P-256)", |b| {
        b.iter(|| black_box(verify_in(&keyed, &keyed_digest, &keyed_found)))
    });
    g.bench_function(
        "keyless cosign signature (Fulcio chain, SCT, Rekor SET)",
        |b| b.iter(|| black_box(verify_in(&keyless_policy, &keyless_digest, &keyless_found))),
    );
    g.finish();
}

/// A CycloneDX SBOM statement of `n` components, as Syft lists Alpine packages.
fn sbom_statement(n: usize) -> Vec<u8> {
    let components: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "bom-ref": format!("pkg:apk/alpine/package-{i}@1.0-r0?arch=x86_64&distro=alpine-3.20.3"),
                "type": "library", "name": format!("package-{i}"), "version": "1.0-r0",
                "licenses": [{"license": {"id": "MIT"}}],
                "purl": format!("pkg:apk/alpine/package-{i}@1.0-r0?arch=x86_64&distro=alpine-3.20.3"),
                "properties": [{"name": "syft:package:type", "value": "apk"}],
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://cyclonedx.org/bom",
        "subject": [{"name": "registry.test/app", "digest": {"sha256": "a".repeat(64)}}],
        "predicate": {"bomFormat": "CycloneDX", "specVersion": "1.5",
                      "metadata": {"timestamp": "2026-11-30T10:00:00Z"}, "components": components},
    }))
    .unwrap()
}

fn attestations(c: &mut Criterion) {
    use fixtures::*;
    use portcullis::gate::statement::{Statement, to_cel};
    let statement = sbom_statement(5000);
    let program =
        cel::Program::compile("!predicate.components.exists(c, c.name == 'banned-package')")
            .unwrap();
    let evaluate = |bytes: &[u8]| {
        let st = Statement::parse(bytes).unwrap();
        let mut ctx = cel::Context::default();
        ctx.add_variable_from_value("predicate", to_cel(&st.predicate));
        program.execute(&ctx).unwrap()
    };
    assert_eq!(evaluate(&statement), cel::Value::Bool(true));
    let mut g = c.benchmark_group(format!(
        "attestation statement ({} KiB CycloneDX SBOM, 5000 components)",
        statement.len() / 1024
    ));
    g.throughput(Throughput::Bytes(statement.len() as u64));
    g.sample_size(20);
    g.bench_function("anchor: serde_json::Value parse", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(&statement).unwrap()))
    });
    g.bench_function("strict statement parse", |b| {
        b.iter(|| black_box(Statement::parse(&statement).unwrap()))
    });
    g.bench_function("strict parse + conversion to CEL values", |b| {
        b.iter(|| black_box(to_cel(&Statement::parse(&statement).unwrap().predicate)))
    });
    g.bench_function("strict parse + CEL condition over every component", |b| {
        b.iter(|| black_box(evaluate(&statement)))
    });
    g.finish();

    // A real attestation end to end: GitHub's SLSA v1 provenance for
    // sigstore-js, keyless with a Rekor entry, and two conditions.
    let case = "attestation-dsse/sigstore-go__sigstore.js-2.0.0-provenance";
    let served = digest(
        "sha512:46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c",
    );
    let source = bundle(&format!(
        "{case}/sigstore.js@2.0.0-provenance.sigstore.json"
    ))
    .source(&served);
    let policy = PolicyText::new()
        .root("pg", &format!("{case}/public-good.json"))
        .rule(1, &[&keyless("pg", ACTIONS, "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main")])
        .attestation("type = \"slsaprovenance1\"\nconditions = [\"predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'\", \"predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/sigstore/sigstore-js'\"]")
        .load();
    let now = std::time::SystemTime::now();
    assert!(attest(&policy, &served, &source, now).passed());
    let mut g = c.benchmark_group("first verification");
    g.bench_function(
        "keyless SLSA v1 attestation (Fulcio chain, Rekor SET, 2 conditions)",
        |b| b.iter(|| black_box(attest(&policy, &served, &source, now))),
    );
    g.finish();
}

/// Docker Content Trust: verifying a real Notary repository (Connaisseur's
/// alice-image: root, timestamp, snapshot, targets and three delegations)
/// from its pinned root, against the same number of bare ECDSA P-256
/// verifications with ring (what the signatures alone cost).
fn notary_trust_data(c: &mut Criterion) {
    use portcullis::notary::tuf::{self, Anchor, Files, Versions};
    use ring::signature::{self, KeyPair as _};
    let dir = fixtures::corpus().join("notary-v1/connaisseur__alice-image-expired");
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap();
    let mut files = Files {
        root: read("root.json"),
        timestamp: read("timestamp.json"),
        snapshot: read("snapshot.json"),
        targets: read("targets.json"),
        delegations: Default::default(),
    };
    for d in ["releases", "chamsen", "phbelitz"] {
        files
            .delegations
            .insert(format!("targets/{d}"), read(&format!("targets/{d}.json")));
    }
    // The root key, read out of root.json (its root-role certificate).
    let v: serde_json::Value = serde_json::from_slice(&files.root).unwrap();
    let id = v["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap();
    use base64::Engine as _;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(
            v["signed"]["keys"][id]["keyval"]["public"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    use x509_cert::der::{DecodePem as _, Encode as _};
    let cert = x509_cert::Certificate::from_pem(&pem).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let pin = tuf::PublicKey::from_spki(&spki).unwrap();
    let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_571_529_600); // 2019-10-20
    let verify = || {
        tuf::verify(
            &files,
            &Anchor::Pinned {
                name: "alice",
                key: &pin,
            },
            &Versions::default(),
            at,
        )
        .unwrap()
    };
    assert_eq!(verify().roles.len(), 4);
    let signatures: usize = std::iter::once(&files.root)
        .chain([&files.timestamp, &files.snapshot, &files.targets])
        .chain(files.delegations.values())
        .map(|f| {
            serde_json::from_slice::<serde_json::Value>(f).unwrap()["signatures"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
    let pair = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let message = files.targets.clone();
    let sig = pair.sign(&rng, &message).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        pair.public_key().as_ref().to_vec(),
    );
    let mut g = c.benchmark_group(format!(
        "notary trust data (7 roles, {signatures} signatures)"
    ));
    g.bench_function(
        format!("anchor: {signatures} bare ECDSA P-256 verifications (ring)"),
        |b| {
            b.iter(|| {
                for _ in 0..signatures {
                    public.verify(&message, sig.as_ref()).unwrap();
                }
            })
        },
    );
    g.bench_function("verify the repository from the pinned root", |b| {
        b.iter(|| black_box(verify()))
    });
    g.finish();
}

fn client_auth(c: &mut Criterion) {
    use portcullis::auth::{Auth, Peer};
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let cfg = config(
        dir.path(),
        "[auth]\nhtpasswd = \"htpasswd\"\n[[auth.access]]\nusers = [\"alice\"]\nimages = [\"docker.io/library/**\"]\n",
    );
    let auth = Auth::new(
        cfg.auth.as_ref().unwrap(),
        &cfg.upstreams,
        false,
        Metrics::new(),
        portcullis::clock::Clock::system(),
    )
    .unwrap();
    let peer = Peer {
        addr: Some("127.0.0.1:40000".parse().unwrap()),
        certificate_cn: None,
    };
    let reference = "docker.io/library/alpine";
    let header = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    };
    let basic = header(&format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret")
    ));
    let issued = rt
        .block_on(auth.issue(&basic, &peer, None, &[reference.to_owned()]))
        .unwrap();
    let bearer = header(&format!("Bearer {}", issued.token));
    // The same work's crypto floor: one HMAC-SHA256 verification of a
    // token-sized message.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
    let (body, _) = issued.token.split_once('.').unwrap();
    let tag = ring::hmac::sign(&key, body.as_bytes());
    let mut g = c.benchmark_group("client authentication");
    g.bench_function(
        "anchor: HMAC-SHA256 verification of a token-sized message",
        |b| b.iter(|| ring::hmac::verify(&key, body.as_bytes(), tag.as_ref()).unwrap()),
    );
    g.bench_function("authorize a bearer token for a repository", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(auth.authorize(&bearer, &peer, None, reference))
                    .unwrap(),
            )
        })
    });
    // Warm the remembered login first.
    rt.block_on(auth.authorize(&basic, &peer, None, reference))
        .unwrap();
    g.bench_function("authorize Basic (login remembered)", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(auth.authorize(&basic, &peer, None, reference))
                    .unwrap(),
            )
        })
    });
    g.sample_size(10);
    g.bench_function("anchor: one bcrypt verification (cost 10)", |b| {
        b.iter(|| assert!(bcrypt::verify("s3cret", &hash).unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    parsing_and_routing,
    index,
    hashing_tee,
    gate_cached,
    first_verification,
    attestations,
    notary_trust_data,
    client_auth
);
criterion_main!(benches);

//! Attestations as the pipelines our users run make them, for the gate's
//! attestation tests: predicates modelled on what Syft (CycloneDX, SPDX),
//! Trivy (`--format cosign-vuln`) and GitHub's SLSA v1 provenance emit,
//! wrapped in in-toto statements, signed as DSSE envelopes and pushed to a
//! real registry as cosign's legacy `.att` tag or as Sigstore bundle
//! referrers (with [`super::sigstore::Sigstore::dsse_bundle`]).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::Result;
use super::oci_push::{PushedSig, digest_tag, push_layers};
use super::signing::{CosignKey, SigLayer, b64, dsse_pae};

pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
pub const SPDX: &str = "https://spdx.dev/Document";
pub const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
pub const CUSTOM: &str = "https://cosign.sigstore.dev/attestation/v1";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";

/// RFC 3339 (UTC, seconds) of `ago` before now.
pub fn ago(ago: Duration) -> String {
    portcullis::gate::statement::format_time(SystemTime::now() - ago)
}

pub fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// A CycloneDX 1.5 SBOM as `syft -o cyclonedx-json` writes it, listing
/// `components` (Alpine packages).
pub fn cyclonedx(components: &[&str], timestamp: &str) -> Value {
    let components: Vec<Value> = components
        .iter()
        .map(|name| {
            json!({
                "bom-ref": format!("pkg:apk/alpine/{name}@1.0-r0?arch=x86_64&distro=alpine-3.20.3&package-id=5c1e2e0b"),
                "type": "library",
                "publisher": "Natanael Copa <ncopa@alpinelinux.org>",
                "name": name,
                "version": "1.0-r0",
                "licenses": [{"license": {"id": "MIT"}}],
                "cpe": format!("cpe:2.3:a:{name}:{name}:1.0-r0:*:*:*:*:*:*:*"),
                "purl": format!("pkg:apk/alpine/{name}@1.0-r0?arch=x86_64&distro=alpine-3.20.3"),
                "properties": [{"name": "syft:package:type", "value": "apk"}],
            })
        })
        .collect();
    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:7f2c1c52-54d0-4b5c-9d39-5a3c5b0c3f2e",
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "author": "anchore", "name": "syft", "version": "1.14.0"}]},
            "component": {"bom-ref": "af63bd4c8601b7f1", "type": "container", "name": "registry.test/app", "version": "sha256:0"},
        },
        "components": components,
    })
}

/// An SPDX 2.3 document as `syft -o spdx-json` writes it.
pub fn spdx(packages: &[&str], created: &str) -> Value {
    let packages: Vec<Value> = packages
        .iter()
        .map(|name| {
            json!({
                "name": name, "SPDXID": format!("SPDXRef-Package-apk-{name}"),
                "versionInfo": "1.0-r0", "supplier": "Person: Natanael Copa",
                "downloadLocation": "NOASSERTION", "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION", "licenseDeclared": "MIT",
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                  "referenceLocator": format!("pkg:apk/alpine/{name}@1.0-r0")}],
            })
        })
        .collect();
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "registry.test/app",
        "documentNamespace": "https://anchore.com/syft/image/registry.test/app-3f1c1a5e",
        "creationInfo": {"licenseListVersion": "3.25", "creators": ["Organization: Anchore, Inc", "Tool: syft-1.14.0"], "created": created},
        "packages": packages,
    })
}

/// A scan as `trivy image --format cosign-vuln` writes it: one finding
/// per severity in `severities` (`None`: Trivy's JSON for a target with no
/// findings, which has no `Vulnerabilities` key at all).
pub fn trivy_vuln(severities: Option<&[&str]>, finished: &str) -> Value {
    let mut result = json!({"Target": "registry.test/app (alpine 3.20.3)", "Class": "os-pkgs", "Type": "alpine"});
    if let Some(severities) = severities {
        result["Vulnerabilities"] = severities
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "VulnerabilityID": format!("CVE-2024-{:04}", 4000 + i),
                    "PkgName": "openssl", "InstalledVersion": "3.3.1-r0", "FixedVersion": "3.3.2-r0",
                    "Status": "fixed", "SeveritySource": "nvd", "Severity": s,
                })
            })
            .collect();
    }
    json!({
        "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.56.2",
            "version": "0.56.2",
            "db": {"uri": "", "version": ""},
            "result": {
                "SchemaVersion": 2,
                "CreatedAt": finished,
                "ArtifactName": "registry.test/app",
                "ArtifactType": "container_image",
                "Metadata": {"OS": {"Family": "alpine", "Name": "3.20.3"}},
                "Results": [result],
            },
        },
        "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished},
    })
}

/// SLSA v1 provenance as GitHub's `actions/attest-build-provenance`
/// writes it, for a build from `git_ref`.
pub fn slsa_v1(git_ref: &str, finished: &str) -> Value {
    json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"ref": git_ref, "repository": "https://github.com/example/services", "path": ".github/workflows/release.yml"}},
            "internalParameters": {"github": {"event_name": "push", "repository_id": "706421", "repository_owner_id": "1042"}},
            "resolvedDependencies": [{"uri": format!("git+https://github.com/example/services@{git_ref}"), "digest": {"gitCommit": "7d5b1f0c3f0ad4b4f1e8c1a9d6e5b2c3a4f5e6d7"}}],
        },
        "runDetails": {
            "builder": {"id": format!("https://github.com/example/services/.github/workflows/release.yml@{git_ref}")},
            "metadata": {"invocationId": "https://github.com/example/services/actions/runs/11/attempts/1", "startedOn": finished, "finishedOn": finished},
        },
    })
}

/// An in-toto v0.1 statement (what cosign v2 writes) about `digest`.
pub fn statement(digest: &str, predicate_type: &str, predicate: &Value) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": predicate_type,
        "subject": [{"name": "registry.test/app", "digest": {"sha256": hex}}],
        "predicate": predicate,
    }))
    .expect("statement serializes")
}

/// A DSSE envelope as `cosign attest --key --tlog-upload=false` writes it.
pub fn envelope(key: &CosignKey, statement: &[u8]) -> Vec<u8> {
    let signature = key.sign(&dsse_pae(IN_TOTO, statement));
    serde_json::to_vec(&json!({
        "payloadType": IN_TOTO,
        "payload": b64(statement),
        "signatures": [{"keyid": "", "sig": b64(signature)}],
    }))
    .expect("envelope serializes")
}

/// A `.att` layer holding `envelope`, annotated with `claimed_type` as
/// cosign annotates it (the annotation proves nothing).
pub fn att_layer(envelope: Vec<u8>, claimed_type: &str) -> SigLayer {
    let mut layer = SigLayer {
        media_type: DSSE.to_owned(),
        payload: envelope,
        annotations: Default::default(),
    };
    layer
        .annotations
        .insert("predicateType".into(), claimed_type.into());
    layer
}

/// Write the legacy `<alg>-<hex>.att` manifest for `subject` in `repo`.
pub fn push_att(host: &str, repo: &str, subject: &str, layers: &[SigLayer]) -> Result<PushedSig> {
    push_layers(host, repo, &format!("{}.att", digest_tag(subject)), layers)
}

/// Sign `predicate` about `digest` with `key` into a `.att` layer.
pub fn keyed(key: &CosignKey, digest: &str, predicate_type: &str, predicate: &Value) -> SigLayer {
    att_layer(
        envelope(key, &statement(digest, predicate_type, predicate)),
        predicate_type,
    )
}

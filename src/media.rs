//! Media types portcullis knows: the manifest types it serves and asks
//! upstreams for, and the one list of signature artifact kinds.
//!
//! A media type is a claim, never a proof: podman unpacks a layer whatever
//! its type says. The artifact kinds listed here only tell the gate which
//! check to run on a manifest's layers ([`crate::manifest::Parsed::artifact`]);
//! nothing passes because of them alone. This module must not do I/O.

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The manifest types portcullis serves, and asks upstreams for.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// `Accept` sent upstream for manifests: every type we serve, nothing else.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A legacy cosign signature layer (`.sig` tag): simple-signing JSON.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// A legacy cosign attestation layer (`.att` tag): a DSSE envelope.
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Sigstore bundles, as layer media type or referrer artifact type (the
/// second is the older spelling).
pub const BUNDLE_TYPES: [&str; 2] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
];

/// The kinds of signature artifact layer the gate knows how to verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactLayer {
    /// cosign simple-signing payload, signature in the layer's annotations.
    SimpleSigning,
    /// DSSE envelope (in-toto statement), as cosign `attest` stores it.
    DsseEnvelope,
    /// A Sigstore bundle (cosign v3 signatures and attestations).
    SigstoreBundle,
}

impl ArtifactLayer {
    pub fn describe(self) -> &'static str {
        match self {
            ArtifactLayer::SimpleSigning => "a cosign signature",
            ArtifactLayer::DsseEnvelope => "a cosign attestation",
            ArtifactLayer::SigstoreBundle => "a Sigstore bundle",
        }
    }
}

/// The artifact kind a layer media type claims, if any (exact match).
pub fn artifact_layer(media_type: &str) -> Option<ArtifactLayer> {
    match media_type {
        SIMPLE_SIGNING => Some(ArtifactLayer::SimpleSigning),
        DSSE_ENVELOPE => Some(ArtifactLayer::DsseEnvelope),
        t if BUNDLE_TYPES.contains(&t) => Some(ArtifactLayer::SigstoreBundle),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_kinds_match_exactly() {
        assert_eq!(
            artifact_layer(SIMPLE_SIGNING),
            Some(ArtifactLayer::SimpleSigning)
        );
        assert_eq!(
            artifact_layer(BUNDLE_TYPES[1]),
            Some(ArtifactLayer::SigstoreBundle)
        );
        for other in [
            "application/vnd.dev.cosign.simplesigning.v1+json ",
            "APPLICATION/VND.DEV.COSIGN.SIMPLESIGNING.V1+JSON",
            "application/octet-stream",
            "",
        ] {
            assert_eq!(artifact_layer(other), None, "{other:?}");
        }
    }
}

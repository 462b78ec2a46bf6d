//! Media types portcullis knows, and how a manifest's type is determined.
//!
//! Owns the list of manifest media types served and requested upstream, and
//! the rule that a manifest's own `mediaType` field (inside the verified
//! bytes) wins over an upstream's `Content-Type` header. It must not do I/O.

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

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestTypeError {
    #[error("manifest is not a JSON object")]
    NotJson,
    #[error("Docker schema 1 manifests are not supported")]
    Schema1,
    #[error("manifest media type {0:?} is not supported")]
    Unsupported(String),
    #[error("manifest declares media type {declared:?} but was served as {served:?}")]
    Mismatch { declared: String, served: String },
}

/// Determine the media type of manifest bytes. The `mediaType` field inside
/// the bytes is authoritative; `content_type` (from upstream) is used only
/// when the field is absent, as OCI allows.
pub fn manifest_type(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<&'static str, ManifestTypeError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|_| ManifestTypeError::NotJson)?;
    if probe.schema_version == Some(1) {
        return Err(ManifestTypeError::Schema1);
    }
    let served = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let chosen = match (&probe.media_type, &served) {
        (Some(declared), Some(served))
            if MANIFEST_TYPES.contains(&served.as_str()) && served != declared =>
        {
            return Err(ManifestTypeError::Mismatch {
                declared: declared.clone(),
                served: served.clone(),
            });
        }
        (Some(declared), _) => declared.clone(),
        (None, Some(served)) => served.clone(),
        (None, None) => return Err(ManifestTypeError::Unsupported(String::new())),
    };
    if chosen == DOCKER_SCHEMA1 || chosen == DOCKER_SCHEMA1_SIGNED {
        return Err(ManifestTypeError::Schema1);
    }
    MANIFEST_TYPES
        .iter()
        .find(|t| **t == chosen)
        .copied()
        .ok_or(ManifestTypeError::Unsupported(chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_type_wins_and_must_agree() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(manifest_type(m, None), Ok(OCI_INDEX));
        assert_eq!(
            manifest_type(m, Some("application/octet-stream")),
            Ok(OCI_INDEX)
        );
        assert!(matches!(
            manifest_type(m, Some(OCI_MANIFEST)),
            Err(ManifestTypeError::Mismatch { .. })
        ));
    }

    #[test]
    fn header_used_when_field_absent() {
        let m = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            manifest_type(
                m,
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            ),
            Ok(OCI_MANIFEST)
        );
        assert!(manifest_type(m, None).is_err());
    }

    #[test]
    fn refuses_schema1_and_junk() {
        assert_eq!(
            manifest_type(br#"{"schemaVersion":1}"#, Some(DOCKER_SCHEMA1_SIGNED)),
            Err(ManifestTypeError::Schema1)
        );
        assert_eq!(
            manifest_type(b"not json", Some(OCI_MANIFEST)),
            Err(ManifestTypeError::NotJson)
        );
        assert!(matches!(
            manifest_type(br#"{"mediaType":"text/html"}"#, None),
            Err(ManifestTypeError::Unsupported(_))
        ));
    }
}

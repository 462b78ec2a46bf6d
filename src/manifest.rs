//! The one model of manifests and indexes, parsed once, strictly.
//!
//! Owns how manifest bytes become a [`Manifest`]: checked against their
//! digest, then parsed the way Go's `encoding/json` would read them
//! (containerd, podman/CRI-O via containers/image and Docker all do), with
//! every input on which portcullis and a runtime could disagree refused.
//! The bytes are read by [`crate::json`], which refuses keys a Go decoder
//! would merge (two keys equal ignoring ASCII case or byte for byte, a key
//! with letters Go folds onto ASCII, `"layerſ"`); on top of that a key that
//! is a known field only ignoring case (`"Layers"`), or a `mediaType` that disagrees with the
//! document's shape (an image with `manifests`, an index with `layers`) is
//! refused with an error naming the key. Everything downstream (the gate,
//! signature discovery, coverage of an index's children, the referrers
//! list) reads the [`Parsed`] value made here, and nothing else parses
//! manifest JSON. This module must not do I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::digest::Digest;
use crate::json::{Json, JsonError};
use crate::media::{
    self, ArtifactLayer, DOCKER_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, MANIFEST_TYPES,
    OCI_INDEX,
};
use bytes::Bytes;

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest does not match its digest: expected {expected}, got {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("manifest is not a JSON object")]
    NotObject,
    #[error(
        "{path}: key {key:?} is {field:?} only ignoring case: Go clients would read it as {field:?}"
    )]
    CaseVariant {
        path: String,
        key: String,
        field: &'static str,
    },
    #[error("{path}: {problem}")]
    Field { path: String, problem: String },
    #[error("Docker schema 1 manifests are not supported")]
    Schema1,
    #[error("manifest media type {0:?} is not supported")]
    Unsupported(String),
    #[error("manifest declares media type {declared:?} but was served as {served:?}")]
    Mismatch { declared: String, served: String },
    #[error("a manifest of type {media_type} must not have the key {key:?}")]
    Shape {
        media_type: &'static str,
        key: &'static str,
    },
}

/// A verified, parsed manifest or index: its bytes match its digest and
/// [`Parsed`] is what those bytes mean. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub bytes: Bytes,
    pub parsed: Arc<Parsed>,
}

impl Manifest {
    /// Check `bytes` against `digest` and parse them. `content_type` (the
    /// upstream's header) decides the type only when the bytes name none.
    pub fn check(
        digest: &Digest,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<Manifest, ManifestError> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            return Err(ManifestError::Digest {
                expected: digest.clone(),
                actual,
            });
        }
        let parsed = Parsed::parse(&bytes, content_type)?;
        Ok(Manifest {
            digest: actual,
            bytes,
            parsed: Arc::new(parsed),
        })
    }

    pub fn media_type(&self) -> &'static str {
        self.parsed.media_type
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
}

/// What a manifest holds, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

/// The meaning of manifest bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// One of [`MANIFEST_TYPES`].
    pub media_type: &'static str,
    pub artifact_type: Option<String>,
    pub subject: Option<Descriptor>,
    pub annotations: BTreeMap<String, String>,
    pub body: Body,
}

impl Parsed {
    /// Parse manifest or index bytes strictly (see the module docs).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, ManifestError> {
        let json = Json::parse(bytes)?;
        let Json::Object(root) = &json else {
            return Err(ManifestError::NotObject);
        };
        let root = Obj::new("manifest".into(), root, ROOT_FIELDS)?;
        match root.get("schemaVersion") {
            Some(Json::Number(n)) if n.as_u64() == Some(2) => {}
            Some(Json::Number(n)) if n.as_u64() == Some(1) => return Err(ManifestError::Schema1),
            Some(_) => return Err(root.problem("schemaVersion", "must be 2")),
            None => return Err(root.problem("schemaVersion", "is missing")),
        }
        let declared = root.string("mediaType")?;
        let media_type = choose_type(declared.as_deref(), content_type)?;
        let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
        let forbidden: &[&'static str] = if is_index {
            &["config", "layers", "fsLayers"]
        } else {
            &["manifests", "fsLayers"]
        };
        for key in forbidden {
            if root.has(key) {
                return Err(ManifestError::Shape { media_type, key });
            }
        }
        let body = if is_index {
            Body::Index {
                manifests: root
                    .descriptors("manifests")?
                    .ok_or_else(|| root.problem("manifests", "is missing"))?,
            }
        } else {
            Body::Image {
                config: root
                    .descriptor("config")?
                    .ok_or_else(|| root.problem("config", "is missing"))?,
                layers: root.descriptors("layers")?.unwrap_or_default(),
            }
        };
        Ok(Parsed {
            media_type,
            artifact_type: root.string("artifactType")?,
            subject: root.descriptor("subject")?,
            annotations: root.annotations("annotations")?,
            body,
        })
    }

    pub fn is_index(&self) -> bool {
        matches!(self.body, Body::Index { .. })
    }

    /// The blobs an image needs (its config, then its layers; none for an index).
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match &self.body {
            Body::Image { config, layers } => std::iter::once(config).chain(layers).collect(),
            Body::Index { .. } => Vec::new(),
        }
    }

    /// An image's layers (none for an index).
    pub fn layers(&self) -> &[Descriptor] {
        match &self.body {
            Body::Image { layers, .. } => layers,
            Body::Index { .. } => &[],
        }
    }

    /// An index's entries (none for an image).
    pub fn children(&self) -> &[Descriptor] {
        match &self.body {
            Body::Index { manifests } => manifests,
            Body::Image { .. } => &[],
        }
    }

    /// The kind of signature artifact this claims to be: an image manifest
    /// with at least one layer, every layer of one artifact kind
    /// ([`media::artifact_layer`]). A claim only: the gate lets it through
    /// only once every layer has verified as what it claims.
    pub fn artifact(&self) -> Option<ArtifactLayer> {
        let layers = self.layers();
        let first = media::artifact_layer(&layers.first()?.media_type)?;
        layers
            .iter()
            .all(|l| media::artifact_layer(&l.media_type) == Some(first))
            .then_some(first)
    }
}

/// The manifest type: the `mediaType` inside the bytes wins; the upstream's
/// `Content-Type` is used only when the bytes name none, and must agree when
/// it names a manifest type.
fn choose_type(
    declared: Option<&str>,
    content_type: Option<&str>,
) -> Result<&'static str, ManifestError> {
    let served = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let chosen = match (declared, &served) {
        (Some(declared), Some(served))
            if MANIFEST_TYPES.contains(&served.as_str()) && served != declared =>
        {
            return Err(ManifestError::Mismatch {
                declared: declared.to_owned(),
                served: served.clone(),
            });
        }
        (Some(declared), _) => declared.to_owned(),
        (None, Some(served)) => served.clone(),
        (None, None) => return Err(ManifestError::Unsupported(String::new())),
    };
    if chosen == DOCKER_SCHEMA1 || chosen == DOCKER_SCHEMA1_SIGNED {
        return Err(ManifestError::Schema1);
    }
    MANIFEST_TYPES
        .iter()
        .find(|t| **t == chosen)
        .copied()
        .ok_or(ManifestError::Unsupported(chosen))
}

// Known keys at each level, as the Go types of containerd, containers/image
// and distribution spell them (plus `fsLayers`, which containerd's media
// type check reads).
const ROOT_FIELDS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "artifactType",
    "config",
    "layers",
    "manifests",
    "subject",
    "annotations",
    "fsLayers",
];
const DESCRIPTOR_FIELDS: &[&str] = &[
    "mediaType",
    "digest",
    "size",
    "urls",
    "annotations",
    "data",
    "artifactType",
    "platform",
];
const PLATFORM_FIELDS: &[&str] = &[
    "architecture",
    "os",
    "os.version",
    "os.features",
    "variant",
    "features",
];

/// A JSON object with its location, its keys checked against `known`.
struct Obj<'a> {
    path: String,
    fields: &'a [(String, Json)],
}

impl<'a> Obj<'a> {
    fn new(
        path: String,
        fields: &'a [(String, Json)],
        known: &[&'static str],
    ) -> Result<Obj<'a>, ManifestError> {
        for (key, _) in fields {
            if known.contains(&key.as_str()) {
                continue;
            }
            if let Some(field) = known.iter().find(|f| f.eq_ignore_ascii_case(key)) {
                return Err(ManifestError::CaseVariant {
                    path,
                    key: key.clone(),
                    field,
                });
            }
        }
        Ok(Obj { path, fields })
    }

    /// A field by its exact name; `null` reads as absent, as in Go.
    fn get(&self, name: &str) -> Option<&'a Json> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Json::Null))
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn problem(&self, name: &str, problem: &str) -> ManifestError {
        ManifestError::Field {
            path: format!("{}.{name}", self.path),
            problem: problem.to_owned(),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, ManifestError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.problem(name, "must be a string")),
        }
    }

    fn annotations(&self, name: &str) -> Result<BTreeMap<String, String>, ManifestError> {
        match self.get(name) {
            None => Ok(BTreeMap::new()),
            Some(Json::Object(entries)) => entries
                .iter()
                .filter(|(_, v)| !matches!(v, Json::Null))
                .map(|(k, v)| match v {
                    Json::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(self.problem(name, &format!("value of {k:?} must be a string"))),
                })
                .collect(),
            Some(_) => Err(self.problem(name, "must be an object of strings")),
        }
    }

    fn descriptor(&self, name: &str) -> Result<Option<Descriptor>, ManifestError> {
        self.get(name)
            .map(|v| descriptor(format!("{}.{name}", self.path), v))
            .transpose()
    }

    fn descriptors(&self, name: &str) -> Result<Option<Vec<Descriptor>>, ManifestError> {
        match self.get(name) {
            None => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| descriptor(format!("{}.{name}[{i}]", self.path), v))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.problem(name, "must be an array")),
        }
    }
}

fn descriptor(path: String, value: &Json) -> Result<Descriptor, ManifestError> {
    let Json::Object(fields) = value else {
        return Err(ManifestError::Field {
            path,
            problem: "must be an object".into(),
        });
    };
    let d = Obj::new(path, fields, DESCRIPTOR_FIELDS)?;
    let media_type = d
        .string("mediaType")?
        .ok_or_else(|| d.problem("mediaType", "is missing"))?;
    let digest = d
        .string("digest")?
        .ok_or_else(|| d.problem("digest", "is missing"))?
        .parse::<Digest>()
        .map_err(|e| d.problem("digest", &e.to_string()))?;
    let size = match d.get("size") {
        // Go reads sizes as int64.
        Some(Json::Number(n)) => n
            .as_u64()
            .filter(|s| i64::try_from(*s).is_ok())
            .ok_or_else(|| d.problem("size", "must be a non-negative 64-bit integer"))?,
        Some(_) => return Err(d.problem("size", "must be a number")),
        None => return Err(d.problem("size", "is missing")),
    };
    if let Some(urls) = d.get("urls") {
        let Json::Array(items) = urls else {
            return Err(d.problem("urls", "must be an array of strings"));
        };
        if !items.iter().all(|u| matches!(u, Json::String(_))) {
            return Err(d.problem("urls", "must be an array of strings"));
        }
    }
    if d.get("data").is_some_and(|v| !matches!(v, Json::String(_))) {
        return Err(d.problem("data", "must be a string"));
    }
    let platform = match d.get("platform") {
        None => None,
        Some(Json::Object(fields)) => {
            let p = Obj::new(format!("{}.platform", d.path), fields, PLATFORM_FIELDS)?;
            for list in ["os.features", "features"] {
                match p.get(list) {
                    None => {}
                    Some(Json::Array(items))
                        if items.iter().all(|v| matches!(v, Json::String(_))) => {}
                    Some(_) => return Err(p.problem(list, "must be an array of strings")),
                }
            }
            Some(Platform {
                os: p.string("os")?.unwrap_or_default(),
                architecture: p.string("architecture")?.unwrap_or_default(),
                variant: p.string("variant")?,
                os_version: p.string("os.version")?,
            })
        }
        Some(_) => return Err(d.problem("platform", "must be an object")),
    };
    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type: d.string("artifactType")?,
        annotations: d.annotations("annotations")?,
        platform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::media::{DOCKER_MANIFEST, OCI_MANIFEST};

    fn d(s: &str) -> String {
        Digest::of(Algorithm::Sha256, s.as_bytes()).to_string()
    }

    fn image(layers: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{layers}]}}"#,
            d("config")
        )
    }

    fn layer(media_type: &str) -> String {
        format!(
            r#"{{"mediaType":"{media_type}","digest":"{}","size":10}}"#,
            d(media_type)
        )
    }

    fn parse(s: &str) -> Result<Parsed, ManifestError> {
        Parsed::parse(s.as_bytes(), None)
    }

    #[test]
    fn parses_images_and_indexes() {
        let m = parse(&image(&layer(
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )))
        .unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.layers().len(), 1);
        assert_eq!(m.layers()[0].size, 10);
        assert!(m.artifact().is_none());
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d("child")
        );
        let i = parse(&index).unwrap();
        assert!(i.is_index());
        assert_eq!(
            i.children()[0].platform.as_ref().unwrap().architecture,
            "arm64"
        );
        assert!(i.layers().is_empty());
    }

    #[test]
    fn refuses_keys_go_would_read_differently() {
        let l = layer("application/vnd.oci.image.layer.v1.tar+gzip");
        let cases = [
            // A case variant of a known field, alone.
            image(&l).replace("\"layers\"", "\"Layers\""),
            // Empty layers, then the real ones under another spelling.
            image(&l).replace("\"layers\":[", "\"layers\":[],\"Layers\":["),
            // A layer's media type spelled differently.
            image(&l).replace(
                "\"mediaType\":\"application/vnd.oci.image.layer",
                "\"MediaType\":\"application/vnd.oci.image.layer",
            ),
            // An exact duplicate: Go takes the last.
            image(&l).replace("\"layers\":[", "\"layers\":[],\"layers\":["),
            // A non-ASCII letter Go folds onto "s".
            image(&l).replace("\"layers\"", "\"layer\u{17f}\""),
            // Two annotation keys that differ only in case.
            image(&l).replace(
                "\"layers\"",
                "\"annotations\":{\"a.b\":\"1\",\"A.B\":\"2\"},\"layers\"",
            ),
        ];
        for (i, c) in cases.iter().enumerate() {
            let e = parse(c).expect_err(&format!("case {i} accepted: {c}"));
            let msg = e.to_string();
            assert!(
                msg.contains("ayer") || msg.contains("ediaType") || msg.contains("A.B"),
                "case {i}: the error names the key: {msg}"
            );
        }
    }

    #[test]
    fn media_type_must_agree_with_the_shape() {
        let l = layer("application/vnd.oci.image.layer.v1.tar+gzip");
        let with_manifests = image(&l).replace("\"layers\"", "\"manifests\":[],\"layers\"");
        assert!(matches!(
            parse(&with_manifests),
            Err(ManifestError::Shape {
                key: "manifests",
                ..
            })
        ));
        let index_with_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"layers":[{l}]}}"#
        );
        assert!(matches!(
            parse(&index_with_layers),
            Err(ManifestError::Shape { key: "layers", .. })
        ));
        let no_config =
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","layers":[]}}"#);
        assert!(parse(&no_config).is_err());
    }

    #[test]
    fn the_declared_type_wins_and_must_agree_with_the_header() {
        let m = image("");
        assert!(Parsed::parse(m.as_bytes(), Some("application/octet-stream")).is_ok());
        assert!(matches!(
            Parsed::parse(m.as_bytes(), Some(OCI_INDEX)),
            Err(ManifestError::Mismatch { .. })
        ));
        let bare = m.replace(&format!("\"mediaType\":\"{OCI_MANIFEST}\","), "");
        assert_eq!(
            Parsed::parse(
                bare.as_bytes(),
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            )
            .unwrap()
            .media_type,
            OCI_MANIFEST
        );
        assert!(Parsed::parse(bare.as_bytes(), None).is_err());
        assert_eq!(
            parse(r#"{"schemaVersion":1,"name":"x"}"#),
            Err(ManifestError::Schema1)
        );
        assert!(matches!(parse("not json"), Err(ManifestError::Json(_))));
        assert!(matches!(parse("[]"), Err(ManifestError::NotObject)));
        assert!(
            parse(&format!("{} x", image(""))).is_err(),
            "trailing bytes"
        );
    }

    #[test]
    fn descriptors_are_checked() {
        let bad = [
            layer("x").replace("\"size\":10", "\"size\":-1"),
            layer("x").replace("\"size\":10", "\"size\":1.5"),
            layer("x").replace("\"size\":10", "\"size\":\"10\""),
            layer("x").replace("sha256:", "md5:"),
            layer("x").replace("\"mediaType\":\"x\",", ""),
            layer("x").replace("\"size\":10", "\"size\":10,\"annotations\":{\"a\":1}"),
        ];
        for b in bad {
            assert!(parse(&image(&b)).is_err(), "{b}");
        }
        // null reads as absent, as in Go.
        let nulls = layer("x").replace(
            "\"size\":10",
            "\"size\":10,\"annotations\":null,\"urls\":null",
        );
        assert!(parse(&image(&nulls)).is_ok());
        // Unknown keys are ignored, as Go does.
        let extra = layer("x").replace("\"size\":10", "\"size\":10,\"vendor.thing\":{\"a\":[1]}");
        assert!(parse(&image(&extra)).is_ok());
    }

    #[test]
    fn artifacts_are_recognised_only_when_every_layer_is_of_one_kind() {
        let sig = layer(media::SIMPLE_SIGNING);
        assert_eq!(
            parse(&image(&sig)).unwrap().artifact(),
            Some(ArtifactLayer::SimpleSigning)
        );
        let mixed = format!(
            "{sig},{}",
            layer("application/vnd.oci.image.layer.v1.tar+gzip")
        );
        assert_eq!(parse(&image(&mixed)).unwrap().artifact(), None);
        assert_eq!(parse(&image("")).unwrap().artifact(), None);
        for unknown in [
            "application/octet-stream",
            "application/wasm",
            "application/vnd.acme.thing",
        ] {
            assert_eq!(
                parse(&image(&layer(unknown))).unwrap().artifact(),
                None,
                "{unknown}"
            );
        }
    }

    #[test]
    fn manifests_are_checked_against_their_digest() {
        let bytes = Bytes::from(image(""));
        let good = Digest::of(Algorithm::Sha256, &bytes);
        assert!(Manifest::check(&good, bytes.clone(), None).is_ok());
        let other = Digest::of(Algorithm::Sha256, b"other");
        assert!(matches!(
            Manifest::check(&other, bytes, None),
            Err(ManifestError::Digest { .. })
        ));
    }
}

//! The one model of in-toto statements (the payload of an attestation's
//! DSSE envelope), read strictly through [`crate::json`], and what the gate
//! reads from them: the subjects, the predicate type, the attestation's own
//! time for `max_age`, and the values CEL conditions see.
//!
//! Parse a statement only once its envelope's signature has verified: a
//! predicate can be megabytes. This module must not verify signatures.

use std::time::{Duration, SystemTime};

use crate::digest::{Algorithm, Digest};
use crate::json::{Json, JsonError};

/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement types accepted (`_type`).
pub const STATEMENT_TYPES: &[&str] = &[
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v1",
];

/// Where each predicate type keeps its own time (a path in the predicate).
pub const TIME_FIELDS: &[(&str, &str)] = &[
    (
        "https://cosign.sigstore.dev/attestation/vuln/v1",
        "metadata.scanFinishedOn",
    ),
    (
        "https://slsa.dev/provenance/v1",
        "runDetails.metadata.finishedOn",
    ),
    (
        "https://slsa.dev/provenance/v0.2",
        "metadata.buildFinishedOn",
    ),
    ("https://cyclonedx.org/bom", "metadata.timestamp"),
    ("https://spdx.dev/Document", "creationInfo.created"),
];

/// Why a payload is not a usable statement.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("the statement is not valid")]
    Json(#[from] JsonError),
    #[error("the statement {0}")]
    Shape(String),
}

/// What is read from a statement before its signature is checked: the
/// predicate type and the subjects' sha256 digests, never the predicate
/// (which can be megabytes; [`Statement::parse`] reads it once verified).
/// It only sorts and pre-checks evidence: a claim never makes anything pass.
#[derive(Debug, serde::Deserialize)]
pub struct Head {
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    #[serde(rename = "subject")]
    subjects: Vec<SubjectHead>,
}

#[derive(Debug, serde::Deserialize)]
struct SubjectHead {
    digest: DigestHead,
}

#[derive(Debug, serde::Deserialize)]
struct DigestHead {
    sha256: Option<String>,
}

impl Head {
    pub fn parse(payload: &[u8]) -> Result<Head, String> {
        serde_json::from_slice(payload)
            .map_err(|_| "the DSSE payload is not an in-toto statement".to_owned())
    }

    /// The sha256 hex digests of the subjects.
    pub fn sha256_subjects(&self) -> impl Iterator<Item = &str> {
        self.subjects
            .iter()
            .filter_map(|s| s.digest.sha256.as_deref())
    }
}

/// A parsed in-toto statement.
#[derive(Debug)]
pub struct Statement {
    pub predicate_type: String,
    /// (algorithm, lowercase hex) of each subject digest.
    pub subjects: Vec<(String, String)>,
    pub predicate: Json,
    /// The whole statement, for CEL's `statement`.
    pub raw: Json,
}

impl Statement {
    pub fn parse(payload: &[u8]) -> Result<Statement, StatementError> {
        let raw = Json::parse(payload)?;
        let shape = |what: &str| StatementError::Shape(what.to_owned());
        if !matches!(raw, Json::Object(_)) {
            return Err(shape("is not a JSON object"));
        }
        let kind = raw
            .get("_type")
            .and_then(Json::as_str)
            .ok_or_else(|| shape("has no _type"))?;
        if !STATEMENT_TYPES.contains(&kind) {
            return Err(StatementError::Shape(format!(
                "has _type {kind:?}, not an in-toto statement"
            )));
        }
        let predicate_type = raw
            .get("predicateType")
            .and_then(Json::as_str)
            .ok_or_else(|| shape("has no predicateType"))?
            .to_owned();
        let Some(Json::Array(list)) = raw.get("subject") else {
            return Err(shape("has no subject list"));
        };
        let mut subjects = Vec::new();
        for s in list {
            let Some(Json::Object(digests)) = s.get("digest") else {
                return Err(shape("has a subject without a digest object"));
            };
            for (alg, hex) in digests {
                let Json::String(hex) = hex else {
                    return Err(shape("has a subject digest that is not a string"));
                };
                subjects.push((alg.clone(), hex.clone()));
            }
        }
        let predicate = match raw.get("predicate") {
            Some(p @ Json::Object(_)) => p.clone(),
            Some(_) => return Err(shape("has a predicate that is not an object")),
            None => return Err(shape("has no predicate")),
        };
        Ok(Statement {
            predicate_type,
            subjects,
            predicate,
            raw,
        })
    }

    /// Does one of the subjects have exactly `digest`?
    pub fn names(&self, digest: &Digest) -> bool {
        let alg = match digest.algorithm() {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        };
        self.subjects
            .iter()
            .any(|(a, h)| a == alg && h == digest.hex())
    }

    /// The attestation's own time, where its predicate type defines one
    /// and the predicate has it: `Ok(Some((field, time)))`; `Ok(None)` when
    /// the type defines no time or the field is absent; `Err` when the
    /// field is there but not an RFC 3339 time.
    pub fn time(&self) -> Result<Option<(&'static str, SystemTime)>, String> {
        let Some((_, field)) = TIME_FIELDS.iter().find(|(t, _)| *t == self.predicate_type) else {
            return Ok(None);
        };
        let value = field.split('.').try_fold(&self.predicate, |v, k| v.get(k));
        match value {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(text)) => parse_time(text)
                .map(|t| Some((*field, t)))
                .ok_or_else(|| format!("the predicate's {field} {text:?} is not an RFC 3339 time")),
            Some(_) => Err(format!("the predicate's {field} is not a string")),
        }
    }
}

/// Parse an RFC 3339 time (any offset).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let secs = t.timestamp();
    let nanos = t.timestamp_subsec_nanos();
    let since = Duration::new(u64::try_from(secs).ok()?, nanos);
    SystemTime::UNIX_EPOCH.checked_add(since)
}

/// Format a time as RFC 3339 UTC with seconds.
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{secs}s after the epoch"))
}

/// The CEL value of a JSON value: integers that fit are `int`, others
/// `uint` or `double`, as Kubernetes' CEL reads JSON.
pub fn to_cel(v: &Json) -> cel::Value {
    use std::collections::HashMap;
    use std::sync::Arc;
    match v {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(fields) => {
            let map: HashMap<cel::objects::Key, cel::Value> = fields
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(predicate_type: &str, predicate: &str, subject: &str) -> String {
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"{predicate_type}","subject":[{{"name":"x","digest":{{"sha256":"{subject}"}}}}],"predicate":{predicate}}}"#
        )
    }

    #[test]
    fn reads_subjects_type_and_time() {
        let d = Digest::of(Algorithm::Sha256, b"image");
        let s = Statement::parse(
            statement(
                "https://cosign.sigstore.dev/attestation/vuln/v1",
                r#"{"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}"#,
                d.hex(),
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(s.names(&d));
        assert!(!s.names(&Digest::of(Algorithm::Sha256, b"other")));
        let (field, t) = s.time().unwrap().unwrap();
        assert_eq!(field, "metadata.scanFinishedOn");
        assert_eq!(format_time(t), "2026-11-20T10:00:00Z");
        let custom =
            Statement::parse(statement("https://e.com/x", "{}", d.hex()).as_bytes()).unwrap();
        assert_eq!(custom.time(), Ok(None));
        let absent =
            Statement::parse(statement("https://cyclonedx.org/bom", "{}", d.hex()).as_bytes())
                .unwrap();
        assert_eq!(absent.time(), Ok(None));
        let bad_time = Statement::parse(
            statement(
                "https://slsa.dev/provenance/v1",
                r#"{"runDetails":{"metadata":{"finishedOn":"yesterday"}}}"#,
                d.hex(),
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(
            bad_time
                .time()
                .unwrap_err()
                .contains("not an RFC 3339 time")
        );
    }

    #[test]
    fn refuses_what_go_would_read_differently_and_wrong_shapes() {
        let d = Digest::of(Algorithm::Sha256, b"image");
        let good = statement("https://cyclonedx.org/bom", "{}", d.hex());
        for bad in [
            good.replace(
                "\"predicateType\"",
                "\"PredicateType\":\"x\",\"predicateType\"",
            ),
            good.replace(
                "\"predicate\":{}",
                "\"predicate\":{},\"predicate\":{\"a\":1}",
            ),
            good.replace("Statement/v0.1", "Statement/v9"),
            good.replace("\"predicate\":{}", "\"predicate\":[]"),
            good.replace(",\"predicate\":{}", ""),
            "[]".to_owned(),
        ] {
            assert!(Statement::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_becomes_cel_values() {
        let v = Json::parse(br#"{"a":[1,-2,18446744073709551615,1.5,true,null,"s"]}"#).unwrap();
        let program = cel::Program::compile(
            "p.a[0] == 1 && p.a[1] < 0 && p.a[2] > 0u && p.a[3] > 1.0 && p.a[4] && p.a[5] == null && p.a[6] == 's'",
        )
        .unwrap();
        let mut ctx = cel::Context::default();
        ctx.add_variable_from_value("p", to_cel(&v));
        assert_eq!(program.execute(&ctx), Ok(cel::Value::Bool(true)));
    }

    /// Trivy leaves `Vulnerabilities` out of a clean target: `has()` guards
    /// the field, and without the guard the condition is an error.
    #[test]
    fn has_guards_an_absent_field() {
        let scan = Json::parse(
            br#"{"scanner":{"result":{"Results":[{"Target":"a"},{"Target":"b","Vulnerabilities":[{"Severity":"LOW"}]}]}}}"#,
        )
        .unwrap();
        let mut ctx = cel::Context::default();
        ctx.add_variable_from_value("predicate", to_cel(&scan));
        let guarded = cel::Program::compile(
            "!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))",
        )
        .unwrap();
        assert_eq!(guarded.execute(&ctx), Ok(cel::Value::Bool(true)));
        let unguarded = cel::Program::compile(
            "!predicate.scanner.result.Results.exists(r, r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))",
        )
        .unwrap();
        assert!(unguarded.execute(&ctx).is_err());
    }
}

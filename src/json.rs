//! Strict JSON: parsing bytes the way Go's `encoding/json` would read them,
//! and refusing every document on which a Go reader and portcullis could
//! disagree.
//!
//! Go matches object keys to struct fields ignoring case and lets the last
//! of two keys that fold together win; serde matches keys exactly. So an
//! object holding two keys that are equal ignoring ASCII case (or byte for
//! byte), or a key with a non-ASCII letter Go folds onto ASCII (`"layerſ"`),
//! is refused with an error naming the key. Objects keep their keys in
//! order. The manifest model ([`crate::manifest`]) and in-toto statements
//! ([`crate::gate::statement`]) are read through this, and nothing else
//! reads untrusted JSON that a Go tool also reads. This module must not do
//! I/O.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why JSON bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("duplicate key {key:?} in one object")]
    DuplicateKey { key: String },
    #[error(
        "keys {first:?} and {second:?} in one object differ only in case: Go clients read them as one"
    )]
    CaseCollision { first: String, second: String },
    #[error("key {key:?} holds a letter that Go folds onto another: refused")]
    FoldingKey { key: String },
}

/// A JSON value whose objects keep their keys in order and were checked
/// for keys a Go decoder would merge.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parse strictly (see the module docs).
    pub fn parse(bytes: &[u8]) -> Result<Json, JsonError> {
        let refused = RefCell::new(None);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = JsonSeed { refused: &refused }.deserialize(&mut de);
        // A key refusal travels through serde as a custom error; the
        // refusal itself waits here.
        if let Some(e) = refused.into_inner() {
            return Err(e);
        }
        let value = parsed.map_err(|e| JsonError::Syntax(e.to_string()))?;
        de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
        Ok(value)
    }
}

/// Go folds keys with Unicode simple case folding, so `ſ` matches `s` and
/// the Kelvin sign matches `k`. A key with a non-ASCII letter that has case
/// could be folded onto a field name: such keys are refused outright, which
/// leaves ASCII case folding as the only folding to check.
fn has_folding_letter(key: &str) -> bool {
    key.chars().any(|c| {
        !c.is_ascii()
            && (c.to_lowercase().ne(std::iter::once(c)) || c.to_uppercase().ne(std::iter::once(c)))
    })
}

/// Builds a [`Json`], refusing keys a Go decoder would merge.
#[derive(Clone, Copy)]
struct JsonSeed<'a> {
    refused: &'a RefCell<Option<JsonError>>,
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl JsonSeed<'_> {
    fn refuse<E: de::Error>(&self, e: JsonError) -> E {
        let msg = e.to_string();
        *self.refused.borrow_mut() = Some(e);
        E::custom(msg)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if has_folding_letter(&key) {
                return Err(self.refuse(JsonError::FoldingKey { key }));
            }
            if let Some((other, _)) = fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                let e = if *other == key {
                    JsonError::DuplicateKey { key }
                } else {
                    JsonError::CaseCollision {
                        first: other.clone(),
                        second: key,
                    }
                };
                return Err(self.refuse(e));
            }
            let value = map.next_value_seed(self)?;
            fields.push((key, value));
        }
        Ok(Json::Object(fields))
    }
}

impl Json {
    /// The value of `key` in an object (exact match; keys were checked not
    /// to collide ignoring case).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_would_merge_are_refused() {
        for (text, want) in [
            (r#"{"a":1,"a":2}"#, "duplicate key \"a\""),
            (r#"{"x":{"Type":1,"type":2}}"#, "\"Type\" and \"type\""),
            ("{\"predicate\u{17f}type\":1}", "Go folds"),
            ("{", "not valid JSON"),
            (r#"{"a":1} x"#, "not valid JSON"),
        ] {
            let e = Json::parse(text.as_bytes()).expect_err(text);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        let ok = Json::parse(br#"{"a":[true,null,"s",1.5],"b":{"A":false}}"#).unwrap();
        assert_eq!(
            ok.get("a"),
            Some(&Json::Array(vec![
                Json::Bool(true),
                Json::Null,
                Json::String("s".into()),
                Json::Number(serde_json::Number::from_f64(1.5).unwrap()),
            ]))
        );
        assert_eq!(
            ok.get("b").and_then(|b| b.get("A")),
            Some(&Json::Bool(false))
        );
    }
}

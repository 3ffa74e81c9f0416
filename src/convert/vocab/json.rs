//! Python-like access to the JSON files convert reads (`dict.get`, truthiness, `int`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

/// The largest tokenizer JSON read (real tokenizer.json files stay under 40 MB).
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// Reads and parses `path` (one clear exit-2 error when it is not JSON).
pub fn read(path: &Path) -> Result<Value> {
    let bytes = read_bytes(path, MAX_JSON_BYTES)?;
    parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// Parses JSON bytes (exit 2 when invalid).
pub fn parse(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| crate::invalid!(kind: BadEncoding, "invalid JSON: {e}"))
}

/// Reads `path` if it is a file, `None` when it is absent.
pub fn read_if_file(path: &Path) -> Result<Option<Value>> {
    if path.is_file() {
        read(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The bytes of `path`, refusing files over `limit` bytes.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > limit {
        crate::bail_invalid!(kind: Implausible,
            "{}: {len} bytes is larger than the {limit} supported",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The object behind `v`, or an error naming `what` (Python's `.get` on a non-dict raises).
pub fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| crate::invalid!("{what} is not a JSON object"))
}

/// `d.get(key)` where `d` must be an object; JSON null reads as absent (Python `None`).
pub fn get<'a>(v: &'a Value, key: &str, what: &str) -> Result<Option<&'a Value>> {
    Ok(obj(v, what)?.get(key).filter(|x| !x.is_null()))
}

/// Python truthiness of a JSON value (`None`, `False`, `0`, `""`, `[]`, `{}` are false).
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `isinstance(v, int)` (Python's `bool` is an `int`): the integer, if it is one.
pub fn py_int(v: Option<&Value>) -> Option<i128> {
    match v? {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// The string of a token entry that is either a string or `{"content": "..."}` (an
/// `AddedToken` as transformers saves it).
pub fn token_content(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// A Python `bool`-typed flag: `None` when absent or null, an error when it is not a bool
/// (convert would write garbage or raise).
pub fn opt_bool(v: Option<&Value>, what: &str) -> Result<Option<bool>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(crate::invalid!("{what} is not a bool: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_follows_python() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(Some(&v)), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!("a"),
            json!([0]),
            json!({"a": 1}),
        ] {
            assert!(truthy(Some(&v)), "{v}");
        }
        assert!(!truthy(None));
    }

    #[test]
    fn ints_and_contents() {
        assert_eq!(py_int(Some(&json!(7))), Some(7));
        assert_eq!(py_int(Some(&json!(true))), Some(1));
        assert_eq!(py_int(Some(&json!(1.0))), None);
        assert_eq!(py_int(Some(&json!([1]))), None);
        assert_eq!(token_content(Some(&json!({"content": "<s>"}))), Some("<s>"));
        assert_eq!(token_content(Some(&json!("</s>"))), Some("</s>"));
        assert_eq!(token_content(Some(&json!({"x": 1}))), None);
        assert!(get(&json!([1]), "a", "x").is_err());
        assert_eq!(get(&json!({"a": null}), "a", "x").unwrap(), None);
    }
}

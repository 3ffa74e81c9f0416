//! Typed GGUF metadata carried in QNAT metadata (`gguf_metadata`, docs/QNAT.md §4), so a
//! QNAT file made from a GGUF keeps the hyperparameters (and tokenizer) a GGUF loader
//! needs, with their GGUF types.
//!
//! Each entry is `{"key", "type", "value"}` with a GGUF type name (`u32`, `f32`, `string`,
//! ...); arrays add `"element_type"` and hold their elements as a JSON array. Floats are
//! JSON numbers (f32 round-trips exactly through f64), or the strings `"NaN"`, `"inf"`,
//! `"-inf"`. Strings are UTF-8 (invalid bytes replaced). Arrays of arrays are not carried.

use crate::formats::gguf::{Value, ValueType};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// One typed GGUF key/value as QNAT metadata stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GgufKvJson {
    key: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    element_type: Option<String>,
    value: Json,
}

fn scalar_json(v: &Value) -> Option<Json> {
    let float = |x: f64| {
        if x.is_nan() {
            Json::from("NaN")
        } else if x.is_infinite() {
            Json::from(if x > 0.0 { "inf" } else { "-inf" })
        } else {
            Json::from(x)
        }
    };
    Some(match v {
        Value::U8(x) => Json::from(*x),
        Value::I8(x) => Json::from(*x),
        Value::U16(x) => Json::from(*x),
        Value::I16(x) => Json::from(*x),
        Value::U32(x) => Json::from(*x),
        Value::I32(x) => Json::from(*x),
        Value::U64(x) => Json::from(*x),
        Value::I64(x) => Json::from(*x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::Bool(x) => Json::from(*x),
        Value::String(b) => Json::from(String::from_utf8_lossy(b).into_owned()),
        Value::Array(..) | Value::RawArray(_) => return None,
    })
}

/// The JSON entry for `key = v`; `None` for an array of arrays (not carried).
pub(crate) fn to_json(key: &str, v: &Value) -> Option<GgufKvJson> {
    if let Value::RawArray(a) = v {
        return to_json(key, &a.parse().ok()?);
    }
    let (element_type, value) = match v {
        Value::Array(elem, items) => (
            Some(elem.name().to_owned()),
            Json::Array(items.iter().map(scalar_json).collect::<Option<_>>()?),
        ),
        other => (None, scalar_json(other)?),
    };
    Some(GgufKvJson {
        key: key.to_owned(),
        ty: v.value_type().name().to_owned(),
        element_type,
        value,
    })
}

fn type_named(name: &str) -> Option<ValueType> {
    (0..=12)
        .filter_map(ValueType::from_id)
        .find(|t| t.name() == name)
}

fn scalar(key: &str, ty: ValueType, j: &Json) -> Result<Value> {
    let bad = || invalid!(kind: BadEncoding, "gguf_metadata {key:?}: {j} is not a {}", ty.name());
    let int = |j: &Json| j.as_i64().map(i128::from).or(j.as_u64().map(i128::from));
    let float = |j: &Json| match j {
        Json::String(s) if s == "NaN" => Some(f64::NAN),
        Json::String(s) if s == "inf" => Some(f64::INFINITY),
        Json::String(s) if s == "-inf" => Some(f64::NEG_INFINITY),
        other => other.as_f64(),
    };
    let i = || int(j).ok_or_else(bad);
    Ok(match ty {
        ValueType::U8 => Value::U8(i()?.try_into().map_err(|_| bad())?),
        ValueType::I8 => Value::I8(i()?.try_into().map_err(|_| bad())?),
        ValueType::U16 => Value::U16(i()?.try_into().map_err(|_| bad())?),
        ValueType::I16 => Value::I16(i()?.try_into().map_err(|_| bad())?),
        ValueType::U32 => Value::U32(i()?.try_into().map_err(|_| bad())?),
        ValueType::I32 => Value::I32(i()?.try_into().map_err(|_| bad())?),
        ValueType::U64 => Value::U64(i()?.try_into().map_err(|_| bad())?),
        ValueType::I64 => Value::I64(i()?.try_into().map_err(|_| bad())?),
        ValueType::F32 => Value::F32(float(j).ok_or_else(bad)? as f32),
        ValueType::F64 => Value::F64(float(j).ok_or_else(bad)?),
        ValueType::Bool => Value::Bool(j.as_bool().ok_or_else(bad)?),
        ValueType::String => Value::string(j.as_str().ok_or_else(bad)?),
        ValueType::Array => {
            bail_invalid!(kind: BadEncoding, "gguf_metadata {key:?}: arrays of arrays are not carried")
        }
    })
}

/// The typed value of a JSON entry.
pub(crate) fn from_json(e: &GgufKvJson) -> Result<(String, Value)> {
    let key = &e.key;
    let ty = type_named(&e.ty).ok_or_else(
        || invalid!(kind: UnknownType, "gguf_metadata {key:?}: unknown type {:?}", e.ty),
    )?;
    let value = if ty == ValueType::Array {
        let elem = e
            .element_type
            .as_deref()
            .and_then(type_named)
            .ok_or_else(|| invalid!(kind: UnknownType, "gguf_metadata {key:?}: array without a known element_type"))?;
        let items = e.value.as_array().ok_or_else(
            || invalid!(kind: BadEncoding, "gguf_metadata {key:?}: value is not an array"),
        )?;
        Value::Array(
            elem,
            items
                .iter()
                .map(|j| scalar(key, elem, j))
                .collect::<Result<_>>()?,
        )
    } else {
        scalar(key, ty, &e.value)?
    };
    Ok((key.clone(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scalar_type_and_arrays_round_trip() {
        let values = [
            Value::U8(200),
            Value::I8(-5),
            Value::U16(65535),
            Value::I16(-300),
            Value::U32(4_000_000_000),
            Value::I32(-7),
            Value::U64(u64::MAX),
            Value::I64(i64::MIN),
            Value::F32(1e-5),
            Value::F32(f32::NEG_INFINITY),
            Value::F64(0.1),
            Value::Bool(true),
            Value::string("llama"),
            Value::Array(
                ValueType::String,
                vec![Value::string("a"), Value::string("b")],
            ),
            Value::Array(ValueType::F32, vec![Value::F32(0.5), Value::F32(-2.25)]),
        ];
        for v in values {
            let j = to_json("k", &v).unwrap();
            let text = serde_json::to_string(&j).unwrap();
            let back: GgufKvJson = serde_json::from_str(&text).unwrap();
            assert_eq!(from_json(&back).unwrap(), ("k".to_owned(), v));
        }
        let nan = from_json(&to_json("k", &Value::F32(f32::NAN)).unwrap()).unwrap();
        assert!(matches!(nan.1, Value::F32(x) if x.is_nan()));
    }

    #[test]
    fn wrong_types_are_invalid_input() {
        let j: GgufKvJson = serde_json::from_str(r#"{"key":"k","type":"u8","value":300}"#).unwrap();
        assert!(from_json(&j).is_err());
        let j: GgufKvJson = serde_json::from_str(r#"{"key":"k","type":"q9","value":1}"#).unwrap();
        assert!(from_json(&j).is_err());
        let nested = Value::Array(ValueType::Array, vec![]);
        assert!(to_json("k", &Value::Array(ValueType::Array, vec![nested])).is_none());
    }
}

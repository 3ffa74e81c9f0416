//! Hex, SHA-256 and canonical JSON.
//!
//! Canonical JSON recipe (used for every profile digest): serialize the value
//! with serde to a `serde_json::Value`, then write it with
//! * object keys sorted by their UTF-8 bytes, ascending;
//! * no whitespace at all (`,` and `:` separators only);
//! * strings escaped exactly as `serde_json::to_string` escapes them;
//! * numbers written by serde_json (`itoa` for integers, shortest round-trip
//!   `ryu` form for floats, e.g. `0.5`, `1e-7`, `2.0`);
//! * `null`, `true`, `false` literally; arrays in their order.
//!
//! The digest of a part is the lowercase hex SHA-256 of those UTF-8 bytes.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case, even length, no separators).
pub fn from_hex(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        bail!("hex string has odd length {}", b.len());
    }
    fn nib(c: u8, at: usize) -> Result<u8> {
        Ok(match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => bail!("invalid hex character {:?} at offset {at}", c as char),
        })
    }
    b.chunks_exact(2)
        .enumerate()
        .map(|(i, p)| Ok(nib(p[0], 2 * i)? << 4 | nib(p[1], 2 * i + 1)?))
        .collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// SHA-256 (hex) of a tagged f32 stream: the ASCII `tag`, one `0x00` byte, each
/// of `dims` as u64 little-endian, then every value of every chunk as f32
/// little-endian, in order.
pub fn f32_stream_digest<'a>(
    tag: &str,
    dims: &[u64],
    chunks: impl IntoIterator<Item = &'a [f32]>,
) -> String {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0u8]);
    for d in dims {
        h.update(d.to_le_bytes());
    }
    let mut buf = Vec::with_capacity(4096);
    for c in chunks {
        for part in c.chunks(1024) {
            buf.clear();
            part.iter()
                .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
            h.update(&buf);
        }
    }
    to_hex(&h.finalize())
}

/// Canonical JSON text of a JSON value (see module docs).
pub fn canonical_json_value(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// Canonical JSON text of any serializable value.
pub fn canonical_json<T: Serialize>(v: &T) -> Result<String> {
    let value = serde_json::to_value(v).context("serializing to JSON")?;
    Ok(canonical_json_value(&value))
}

/// SHA-256 (hex) of the canonical JSON of `v`.
pub fn canonical_digest<T: Serialize>(v: &T) -> Result<String> {
    Ok(sha256_hex(canonical_json(v)?.as_bytes()))
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn f32_stream_digest_recipe() {
        let mut bytes = b"t\0".to_vec();
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&(-2.0f32).to_le_bytes());
        let a: &[f32] = &[1.5];
        let b: &[f32] = &[-2.0];
        assert_eq!(f32_stream_digest("t", &[2], [a, b]), sha256_hex(&bytes));
    }

    #[test]
    fn canonical_json_sorts_and_compacts() {
        let v: Value = serde_json::from_str(
            r#"{ "b": [1, 2.5, {"z": null, "a": "x\"y"}], "a": true, "c": 1e-7 }"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json_value(&v),
            r#"{"a":true,"b":[1,2.5,{"a":"x\"y","z":null}],"c":1e-7}"#
        );
    }
}

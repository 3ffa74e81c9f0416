//! Safetensors reader: single files and sharded folders (`*.safetensors.index.json`).
//!
//! Header parsing and validation (header size limit, contiguous in-bounds offsets, size
//! = shape x dtype, exact file length) is the `safetensors` crate's; we map its errors
//! to one clear line and add the sharding layer: the index's `weight_map` must name
//! plain file names inside the model folder, every tensor must be in the shard the index
//! says, and no name may appear twice.

use super::gguf::Value;
use super::{SourceFile, TensorInfo, TensorType};
use crate::error::{InvalidInput, InvalidKind};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};

/// Bytes of the little-endian header-length prefix.
const LEN_PREFIX: u64 = 8;

/// Tensors and metadata of one safetensors file, in data-offset order.
#[derive(Debug)]
pub struct ShardContents {
    /// Tensor infos with absolute offsets, `file` set to `file_index`.
    pub tensors: Vec<TensorInfo>,
    /// `__metadata__` entries, sorted by key (the format has no order).
    pub metadata: Vec<(String, Value)>,
}

/// Parses the header of one safetensors file mapped in `data`.
pub fn read_shard(data: &[u8], file_index: usize) -> Result<ShardContents> {
    let (header_len, meta) = SafeTensors::read_metadata(data).map_err(|e| {
        let (kind, text) = describe(&e, data.len());
        anyhow::Error::new(InvalidInput::new(
            kind,
            format!("invalid safetensors header: {text}"),
        ))
    })?;
    let data_start = LEN_PREFIX + header_len as u64;
    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let info = meta
            .info(&name)
            .expect("offset_keys come from the same metadata");
        let (start, end) = info.data_offsets;
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        check_element_count(&name, &shape)?;
        tensors.push(TensorInfo {
            ty: TensorType::Safetensors(info.dtype),
            shape,
            file: file_index,
            offset: data_start + start as u64,
            bytes: (end - start) as u64,
            name,
        });
    }
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(ShardContents {
        tensors,
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k, Value::String(v.into_bytes())))
            .collect(),
    })
}

/// Rejects shapes whose non-zero dimensions multiply past `i64::MAX` (ggml's `ne` type):
/// with a zero dimension first the crate's check passes, but other orders overflow.
fn check_element_count(name: &str, shape: &[u64]) -> Result<()> {
    let fits = shape.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(d.max(1)).filter(|&p| p <= i64::MAX as u64)
    });
    if fits.is_none() {
        bail_invalid!(kind: Overflow, "tensor {name:?}: element count overflows (shape {shape:?})");
    }
    Ok(())
}

/// The kind and message of a safetensors header error.
fn describe(e: &safetensors::SafeTensorError, file_len: usize) -> (InvalidKind, String) {
    use safetensors::SafeTensorError as E;
    use InvalidKind as K;
    match e {
        E::HeaderTooSmall => (
            K::Truncated,
            format!("file of {file_len} bytes is too small to hold a header"),
        ),
        E::HeaderTooLarge => (K::Implausible, "header length is larger than 100 MB".into()),
        E::InvalidHeaderLength => (
            K::Truncated,
            format!("header length runs past the end of the file ({file_len} bytes)"),
        ),
        E::InvalidHeader(_) => (K::BadEncoding, "header is not valid UTF-8".into()),
        E::InvalidHeaderDeserialization(j) => {
            (K::BadEncoding, format!("header is not valid JSON: {j}"))
        }
        E::InvalidOffset(name) => (
            K::BadLayout,
            format!("tensor {name:?}: data offsets are not contiguous and in order"),
        ),
        E::TensorInvalidInfo => (
            K::BadShape,
            "a tensor's byte size does not match its shape and dtype".into(),
        ),
        E::MetadataIncompleteBuffer => (
            K::BadLayout,
            "tensor data does not exactly fill the file (truncated or trailing bytes)".into(),
        ),
        E::ValidationOverflow => (K::Overflow, "a tensor's shape overflows".into()),
        other => (K::Other, other.to_string()),
    }
}

/// The parsed `model.safetensors.index.json` of a sharded checkpoint.
#[derive(Debug)]
pub struct ShardIndex {
    /// Shard file names in first-appearance order.
    pub shards: Vec<String>,
    /// Tensor name -> index into `shards`.
    pub weight_map: HashMap<String, usize>,
    /// The index's `metadata` object, flattened to strings, sorted by key.
    pub metadata: Vec<(String, Value)>,
}

/// Parses a sharded-checkpoint index, rejecting shard paths that leave the folder.
pub fn read_index(text: &[u8]) -> Result<ShardIndex> {
    let json: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| invalid!(kind: BadEncoding, "index is not valid JSON: {e}"))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid!("index has no \"weight_map\" object"))?;
    let mut shards: Vec<String> = Vec::new();
    let mut weight_map = HashMap::with_capacity(map.len());
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| invalid!("weight_map[{tensor:?}] is not a string"))?;
        check_shard_name(file)?;
        let idx = match shards.iter().position(|s| s == file) {
            Some(i) => i,
            None => {
                shards.push(file.to_string());
                shards.len() - 1
            }
        };
        weight_map.insert(tensor.clone(), idx);
    }
    let mut metadata: Vec<(String, Value)> = json
        .get("metadata")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    (k.clone(), Value::String(s.into_bytes()))
                })
                .collect()
        })
        .unwrap_or_default();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ShardIndex {
        shards,
        weight_map,
        metadata,
    })
}

/// A shard must be a plain relative path inside the model folder: no `..`, no root.
fn check_shard_name(file: &str) -> Result<()> {
    let path = Path::new(file);
    let plain = !file.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || file.chars().any(char::is_control) {
        bail_invalid!("shard path {file:?} in the index must be a file inside the model folder");
    }
    Ok(())
}

/// Opens every shard of an index, checking each tensor lives where the index says.
pub fn open_sharded(
    dir: &Path,
    index: &ShardIndex,
    files: &mut Vec<SourceFile>,
) -> Result<Vec<TensorInfo>> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let mut tensors = Vec::new();
    let mut found = HashMap::new();
    for (shard_idx, shard) in index.shards.iter().enumerate() {
        let path = dir.join(shard);
        let real = path
            .canonicalize()
            .map_err(|e| invalid!("shard {shard:?} listed in the index: {e}"))?;
        if !real.starts_with(&root) {
            bail_invalid!("shard {shard:?} resolves outside the model folder (symlink?)");
        }
        let file_index = files.len();
        files.push(SourceFile::open(&path)?);
        let contents = read_shard(files[file_index].data(), file_index)
            .with_context(|| format!("shard {shard}"))?;
        for t in contents.tensors {
            match index.weight_map.get(&t.name) {
                Some(&i) if i == shard_idx => {}
                Some(&i) => bail_invalid!(
                    "tensor {:?} is in {shard} but the index says {}",
                    t.name,
                    index.shards[i]
                ),
                None => bail_invalid!("tensor {:?} in {shard} is missing from the index", t.name),
            }
            if found.insert(t.name.clone(), shard_idx).is_some() {
                bail_invalid!(kind: Duplicate, "tensor {:?} appears in more than one shard", t.name);
            }
            tensors.push(t);
        }
    }
    if let Some(missing) = index.weight_map.keys().find(|k| !found.contains_key(*k)) {
        bail_invalid!(
            "tensor {missing:?} is in the index but not in {}",
            index.shards[index.weight_map[missing]]
        );
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_tensors_in_offset_order_with_absolute_offsets() {
        let h = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"z":"1","format":"pt"}}"#;
        let f = file(h, &[0u8; 12]);
        let s = read_shard(&f, 0).unwrap();
        assert_eq!(s.tensors[0].name, "a");
        assert_eq!(s.tensors[0].offset, 8 + h.len() as u64);
        assert_eq!(s.tensors[1].bytes, 8);
        assert_eq!(s.metadata[0].0, "format");
    }

    #[test]
    fn broken_headers_give_clear_errors() {
        let kind = |bytes: &[u8]| crate::error::invalid_kind(&read_shard(bytes, 0).unwrap_err());
        let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        assert_eq!(kind(&file(h, &[0u8; 8])), Some(InvalidKind::BadLayout));
        let mut huge = (1u64 << 60).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert_eq!(kind(&huge), Some(InvalidKind::Implausible));
        assert_eq!(kind(&file("{nope", &[])), Some(InvalidKind::BadEncoding));
        assert_eq!(kind(&[1, 0]), Some(InvalidKind::Truncated));
    }

    /// A zero dimension makes the crate's product 0; the other dimensions still must not
    /// overflow (`quantize` aborted trying to allocate 2.6e18 bytes for this shape).
    #[test]
    fn zero_dimension_does_not_hide_an_overflowing_shape() {
        for shape in [
            "[0,4611686018427387904,4611686018427387904]",
            "[9223372036854775808,0]",
        ] {
            let h = format!(r#"{{"a":{{"dtype":"F16","shape":{shape},"data_offsets":[0,0]}}}}"#);
            let err = read_shard(&file(&h, &[]), 0).unwrap_err();
            assert_eq!(crate::error::exit_code(&err), 2);
            assert_eq!(
                crate::error::invalid_kind(&err),
                Some(InvalidKind::Overflow),
                "{err}"
            );
        }
        let h = r#"{"a":{"dtype":"F16","shape":[0,1099511627776],"data_offsets":[0,0]}}"#;
        assert_eq!(read_shard(&file(h, &[]), 0).unwrap().tensors[0].bytes, 0);
    }

    #[test]
    fn index_rejects_escaping_shard_paths() {
        for bad in [
            "../x.safetensors",
            "/etc/passwd",
            "a/../../b",
            "",
            "a\u{7}b",
        ] {
            let text = serde_json::json!({"weight_map": {"t": bad}}).to_string();
            assert!(read_index(text.as_bytes()).is_err(), "{bad}");
        }
        let ok = r#"{"metadata":{"total_size":10},"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors","c":"m-1.safetensors"}}"#;
        let idx = read_index(ok.as_bytes()).unwrap();
        assert_eq!(idx.shards, ["m-1.safetensors", "m-2.safetensors"]);
        assert_eq!(idx.weight_map["c"], 0);
        assert_eq!(idx.metadata[0].1, Value::string("10"));
    }
}

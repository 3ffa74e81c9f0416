//! GGUF v2/v3 header reader over a memory map.
//!
//! Only the header is parsed (magic, counts, metadata, tensor infos); tensor data is
//! never touched, so inspecting a multi-GB file reads a few pages. Every count, length
//! and offset is validated against the file size before it is used.

use super::value::{read_utf8, Value, ValueType};
use super::{GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::formats::cursor::Cursor;
use crate::formats::ggml_type::GgmlType;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::collections::HashSet;

/// Most dimensions a ggml tensor can have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// A parsed GGUF header.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// File format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

/// One tensor info record of a GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name.
    pub name: String,
    /// ggml dimensions `ne`, innermost (row length) first, as stored.
    pub ne: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Size in bytes derived from `ne` and `ty`.
    pub bytes: u64,
}

impl GgufHeader {
    /// Looks a metadata key up.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// How [`read_header_with`] keeps metadata arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrays {
    /// Parsed into [`Value::Array`]s.
    #[default]
    Parsed,
    /// Checked but kept as their bytes ([`Value::RawArray`]): for a caller that only
    /// writes them back (quantize), as the tokenizer's arrays, most of a file's header,
    /// cost one walk instead of an allocation per string.
    Raw,
}

/// Parses the header of a GGUF file held entirely in `data` (a memory map).
pub fn read_header(data: &[u8]) -> Result<GgufHeader> {
    read_header_with(data, Arrays::Parsed)
}

/// [`read_header`], with metadata arrays kept as `arrays` says; the same checks and errors.
pub fn read_header_with(data: &[u8], arrays: Arrays) -> Result<GgufHeader> {
    let mut c = Cursor::new(data);
    let magic = c.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        bail_invalid!(kind: BadMagic, "bad magic {magic:02x?}: not a GGUF file");
    }
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        1 => bail_invalid!(kind: UnsupportedVersion,
            "GGUF version 1 is not supported (only 2 and 3); convert it with a current llama.cpp"
        ),
        v if v.swap_bytes() <= 3 && v != 0 => {
            bail_invalid!(kind: UnsupportedVersion, "big-endian GGUF (version bytes {v:#010x}) is not supported")
        }
        v => bail_invalid!(kind: UnsupportedVersion, "unsupported GGUF version {v} (only 2 and 3)"),
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info
    // at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
    c.check_count(n_kv, 13, "metadata key/value")?;
    c.check_count(n_tensors, 32, "tensor")?;

    let mut metadata = Vec::with_capacity(c.capacity_for(n_kv, 13));
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let at = c.position();
        let key = read_utf8(&mut c, "metadata key")?.to_owned();
        if !seen.insert(key.clone()) {
            bail_invalid!(kind: Duplicate, "duplicate metadata key {key:?} at offset {at}");
        }
        let ty_id = c.u32("metadata value type")?;
        let ty = ValueType::from_id(ty_id).ok_or_else(
            || invalid!(kind: UnknownType, "metadata #{i} {key:?}: unknown value type {ty_id}"),
        )?;
        let value = match (ty, arrays) {
            (ValueType::Array, Arrays::Raw) => Value::read_raw_array(&mut c, 0),
            _ => Value::read(&mut c, ty, 0),
        }
        .map_err(|e| e.context(format!("metadata {key:?}")))?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => GGUF_DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => bail_invalid!(kind: BadLayout,
            "general.alignment must be a u32 power of two, found {}",
            v.to_display(4)
        ),
    };

    let mut tensors = Vec::with_capacity(c.capacity_for(n_tensors, 32));
    let mut names = HashSet::new();
    for _ in 0..n_tensors {
        let info = read_tensor_info(&mut c, alignment)?;
        if !names.insert(info.name.clone()) {
            bail_invalid!(kind: Duplicate, "duplicate tensor name {:?}", info.name);
        }
        tensors.push(info);
    }

    let header_end = c.position() as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_len = data.len() as u64;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => bail_invalid!(kind: OutOfBounds,
                "tensor {:?}: data at offset {} + {} bytes runs past the end of the file ({file_len} bytes)",
                t.name,
                data_offset.saturating_add(t.offset),
                t.bytes
            ),
        }
    }
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn read_tensor_info(c: &mut Cursor<'_>, alignment: u64) -> Result<GgufTensorInfo> {
    let at = c.position();
    let name = read_utf8(c, "tensor name")?.to_owned();
    let n_dims = c.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        bail_invalid!(kind: BadShape,
            "tensor {name:?} at offset {at}: {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"
        );
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    // The product of the non-zero dimensions bounds every partial product in any order,
    // so a zero dimension cannot hide an overflow from code that multiplies the shape in
    // another order (`TensorInfo::elements` goes outermost first).
    let mut nonzero: u64 = 1;
    for _ in 0..n_dims {
        let d = c.u64("tensor dimension")?;
        nonzero = nonzero
            .checked_mul(d.max(1))
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| {
                invalid!(kind: Overflow, "tensor {name:?}: element count overflows (shape {ne:?} x {d})")
            })?;
        ne.push(d);
    }
    let elements = if ne.contains(&0) { 0 } else { nonzero };
    let ty_id = c.u32("tensor type")?;
    let ty = GgmlType::from_id(ty_id).ok_or_else(
        || invalid!(kind: UnknownType, "tensor {name:?}: unknown or removed ggml type id {ty_id}"),
    )?;
    if ne[0] % ty.block_size() != 0 {
        bail_invalid!(kind: BadShape,
            "tensor {name:?}: row length {} is not a multiple of the {ty} block size {}",
            ne[0],
            ty.block_size()
        );
    }
    let offset = c.u64("tensor data offset")?;
    if offset % alignment != 0 {
        bail_invalid!(kind: BadLayout,
            "tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}"
        );
    }
    let bytes = (elements / ty.block_size())
        .checked_mul(ty.type_size())
        .ok_or_else(|| invalid!(kind: Overflow, "tensor {name:?}: byte size overflows"))?;
    Ok(GgufTensorInfo {
        name,
        ne,
        ty,
        offset,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 header with one F32 tensor of dimensions `ne` and 64 bytes of data.
    fn one_tensor(ne: &[u64]) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.push(b'w');
        v.extend_from_slice(&(ne.len() as u32).to_le_bytes());
        ne.iter()
            .for_each(|d| v.extend_from_slice(&d.to_le_bytes()));
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.resize(v.len().div_ceil(32) * 32 + 64, 0);
        v
    }

    /// Found by the gguf_header fuzz target: a zero dimension made the shape valid (0
    /// elements) while `TensorInfo::elements` overflowed multiplying the other ones.
    #[test]
    fn zero_dimension_does_not_hide_an_overflowing_shape() {
        for ne in [&[0, 1 << 62, 1 << 62][..], &[1 << 40, 0, 1 << 40]] {
            let err = read_header(&one_tensor(ne)).unwrap_err();
            let kind = crate::error::invalid_kind(&err);
            assert_eq!(
                kind,
                Some(crate::error::InvalidKind::Overflow),
                "{ne:?}: {err}"
            );
        }
        let h = read_header(&one_tensor(&[0, 1 << 40])).unwrap();
        assert_eq!(h.tensors[0].bytes, 0);
        assert_eq!(
            read_header(&one_tensor(&[4, 2])).unwrap().tensors[0].bytes,
            32
        );
    }
}

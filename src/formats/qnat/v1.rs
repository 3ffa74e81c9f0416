//! QNAT v1 (qlora-rs `native.rs`, "Candle native" export): a sequential reader and the
//! migration to v2.
//!
//! v1 as qlora-rs writes it (all little-endian; see `docs/QNAT.md` for its faults):
//!
//! ```text
//! header, 28 bytes (documented as 32): "QNAT", u32 version = 1, u32 flags = 0,
//!     u64 metadata size (always written as 0), u32 tensor count, u32 reserved = 0
//! metadata: u32 len + model name, u32 len + model type, u8 compute dtype (0 f32, 1 f16, 2 bf16)
//! per tensor: u32 len + name, u32 n_dims, n_dims x u64 shape, u32 block size,
//!     u64 offset (wrong: computed from a fixed 32 + 28-byte estimate), u32 number of blocks
//! per tensor, in order: codes (blocks x ceil(block_size / 2) bytes, each block packed on
//!     its own, first element in the LOW nibble), blocks x f32 scales,
//!     [blocks x f32 zero points], [blocks x u8 double-quantized scales, 1 x f32 factor]
//! ```
//!
//! Nothing records whether the optional zero points and double-quantization bytes are
//! present (and older qlora-rs never wrote the latter), so the reader walks the records
//! in order and decides per tensor from the sizes: the difference of consecutive stored
//! offsets (wrong as absolute positions, but computed from the same per-tensor sizes the
//! writer wrote) must match exactly one layout, and the last tensor must end exactly at
//! the end of the file; failing that, one layout for all tensors must fill the data
//! exactly. Stored offsets are never used as positions.

use super::layout::{
    ComputeDtype, ModelInfo, Scheme, SectionDtype, SectionRole, SourceDigest, TensorHeader,
};
use super::writer::QnatWriter;
use super::MAGIC;
use crate::formats::cursor::Cursor;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::io::{Seek, Write};
use std::ops::Range;

/// Real size of the v1 header (qlora-rs documents 32).
pub const V1_HEADER_SIZE: u64 = 28;

/// Bytes of tensor header and fixed metadata qlora-rs assumes before the first tensor's
/// data: 32 (header) + 28 (its metadata estimate), plus the tensor headers.
pub const V1_OFFSET_BASE: u64 = 32 + 28;

/// Which optional per-tensor blocks a v1 tensor's data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Extras {
    /// blocks x f32 zero points after the scales (`use_zero_point`).
    pub zero_points: bool,
    /// blocks x u8 quantized scales and one f32 factor (`double_quant`, newer qlora-rs).
    pub double_quant: bool,
}

impl V1Extras {
    const ALL: [V1Extras; 4] = [
        V1Extras {
            zero_points: false,
            double_quant: false,
        },
        V1Extras {
            zero_points: true,
            double_quant: false,
        },
        V1Extras {
            zero_points: false,
            double_quant: true,
        },
        V1Extras {
            zero_points: true,
            double_quant: true,
        },
    ];
}

/// How the optional blocks were told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Resolution {
    /// Per tensor, from the differences of consecutive stored offsets.
    OffsetDeltas,
    /// One layout for all tensors, the only one that fills the data exactly.
    Uniform,
}

/// One tensor of a v1 file; ranges are absolute byte ranges of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Tensor {
    /// Tensor name.
    pub name: String,
    /// Row-major shape (candle order).
    pub shape: Vec<u64>,
    /// Elements per block (the channel size for qlora-rs per-channel quantization).
    pub block_size: u32,
    /// Number of blocks (= number of f32 scales).
    pub num_blocks: u32,
    /// The offset stored in the file (not trusted).
    pub stored_offset: u64,
    /// Optional blocks present.
    pub extras: V1Extras,
    /// Packed NF4 codes, per block, low nibble first.
    pub codes: Range<usize>,
    /// f32 scale (absmax) per block.
    pub scales: Range<usize>,
    /// f32 zero point per block.
    pub zero_points: Option<Range<usize>>,
    /// u8 double-quantized scale per block (redundant with `scales`).
    pub dq_codes: Option<Range<usize>>,
    /// f32 factor of the double-quantized scales.
    pub dq_factor: Option<Range<usize>>,
}

impl V1Tensor {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        u64::from(self.num_blocks) * u64::from(self.block_size)
    }

    /// The v2 header this tensor migrates to: NF4, same block size, no double
    /// quantization (the exact f32 scales are kept; v1's 8-bit copies are dropped).
    pub fn v2_header(&self) -> TensorHeader {
        TensorHeader::new(self.name.clone(), self.shape.clone(), Scheme::Nf4)
            .with_block_size(u64::from(self.block_size))
    }
}

fn v1_size(blocks: u64, block_size: u64, extras: V1Extras) -> Option<u64> {
    let codes = blocks.checked_mul(block_size.div_ceil(2))?;
    let mut size = codes.checked_add(blocks.checked_mul(4)?)?;
    if extras.zero_points {
        size = size.checked_add(blocks * 4)?;
    }
    if extras.double_quant && blocks > 0 {
        size = size.checked_add(blocks + 4)?;
    }
    Some(size)
}

/// A parsed v1 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1File {
    /// Header flags (qlora-rs writes 0).
    pub flags: u32,
    /// The header's metadata size (qlora-rs always writes 0).
    pub declared_metadata_size: u64,
    /// Model name.
    pub model_name: String,
    /// Model type.
    pub model_type: String,
    /// Compute dtype.
    pub compute_dtype: ComputeDtype,
    /// Tensors in file order.
    pub tensors: Vec<V1Tensor>,
    /// Absolute offset where the first tensor's data really starts.
    pub data_start: u64,
    /// How the optional blocks were told apart.
    pub resolution: V1Resolution,
}

impl V1File {
    /// How far the first stored offset is from the real data start (`stored - real`),
    /// the v1 offset fault; `None` without tensors.
    pub fn offset_skew(&self) -> Option<i128> {
        self.tensors
            .first()
            .map(|t| i128::from(t.stored_offset) - i128::from(self.data_start))
    }

    /// The v2 model info for this file.
    pub fn model_info(&self, tool: &str, source: Vec<SourceDigest>) -> ModelInfo {
        let mut kv = BTreeMap::new();
        kv.insert(
            "qnat.migrated_from".to_owned(),
            "qnat-v1 (qlora-rs)".to_owned(),
        );
        ModelInfo {
            name: self.model_name.clone(),
            architecture: self.model_type.clone(),
            compute_dtype: self.compute_dtype,
            tool: tool.to_owned(),
            source,
            kv,
        }
    }
}

fn read_string(c: &mut Cursor<'_>, what: &str) -> Result<String> {
    let at = c.position();
    let len = c.u32(what)?;
    let bytes = c.take(u64::from(len), what)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| invalid!(kind: BadEncoding, "{what} at offset {at} is not valid UTF-8"))
}

struct RawTensor {
    name: String,
    shape: Vec<u64>,
    block_size: u32,
    num_blocks: u32,
    stored_offset: u64,
}

/// Reads a v1 file sequentially: header, metadata, tensor headers, then each tensor's
/// data in order. Every length is checked against the file; stored offsets are only
/// compared with each other.
pub fn read_v1(data: &[u8]) -> Result<V1File> {
    let mut c = Cursor::new(data);
    let magic = c.take(4, "magic")?;
    if magic != MAGIC {
        bail_invalid!(kind: BadMagic, "bad magic {magic:02x?}: not a QNAT file");
    }
    match c.u32("version")? {
        1 => {}
        2 => {
            bail_invalid!(kind: UnsupportedVersion, "this is a QNAT version 2 file, not version 1")
        }
        v => bail_invalid!(kind: UnsupportedVersion, "unsupported QNAT version {v} (expected 1)"),
    }
    let flags = c.u32("v1 flags")?;
    let declared_metadata_size = c.u64("v1 metadata size")?;
    let count = c.u32("v1 tensor count")?;
    let _reserved = c.u32("v1 reserved")?;
    let model_name = read_string(&mut c, "model name")?;
    let model_type = read_string(&mut c, "model type")?;
    let compute_dtype = match c.u8("compute dtype")? {
        0 => ComputeDtype::F32,
        1 => ComputeDtype::F16,
        2 => ComputeDtype::Bf16,
        b => {
            bail_invalid!(kind: UnknownType, "v1 compute dtype byte {b} (expected 0 f32, 1 f16 or 2 bf16)")
        }
    };
    // A tensor header takes at least 4 (name length) + 4 (n_dims) + 4 (block size) +
    // 8 (offset) + 4 (blocks) bytes.
    c.check_count(u64::from(count), 24, "v1 tensor")?;
    let mut raw = Vec::with_capacity(c.capacity_for(u64::from(count), 24));
    let mut names = HashSet::with_capacity(raw.capacity());
    for _ in 0..count {
        let at = c.position();
        let name = read_string(&mut c, "tensor name")?;
        let n_dims = c.u32("tensor dimension count")?;
        c.check_count(u64::from(n_dims), 8, "dimension")?;
        let mut shape = Vec::with_capacity(c.capacity_for(u64::from(n_dims), 8));
        for _ in 0..n_dims {
            shape.push(c.u64("tensor dimension")?);
        }
        let block_size = c.u32("block size")?;
        let stored_offset = c.u64("tensor offset")?;
        let num_blocks = c.u32("block count")?;
        let elements = super::layout::elements_of(&name, &shape)?;
        if block_size == 0 {
            bail_invalid!(kind: BadShape, "v1 tensor {name:?} at offset {at}: block size 0");
        }
        if u64::from(num_blocks) * u64::from(block_size) != elements {
            bail_invalid!(kind: BadShape,
                "v1 tensor {name:?}: {num_blocks} blocks of {block_size} do not cover its {elements} elements (shape {shape:?})"
            );
        }
        if !names.insert(name.clone()) {
            bail_invalid!(kind: Duplicate, "duplicate v1 tensor name {name:?}");
        }
        raw.push(RawTensor {
            name,
            shape,
            block_size,
            num_blocks,
            stored_offset,
        });
    }
    let data_start = c.position() as u64;
    let (layouts, resolution) = match by_offset_deltas(data, &raw, data_start) {
        Some(l) => (l, V1Resolution::OffsetDeltas),
        None => (uniform(data, &raw, data_start)?, V1Resolution::Uniform),
    };
    let mut tensors = Vec::with_capacity(raw.len());
    for (t, extras) in raw.into_iter().zip(layouts) {
        let blocks = u64::from(t.num_blocks);
        let mut take = |n: u64, what: &str| -> Result<Range<usize>> {
            let start = c.position();
            c.take(n, what)
                .map_err(|e| e.context(format!("v1 tensor {:?}", t.name)))?;
            Ok(start..c.position())
        };
        let codes = take(blocks * u64::from(t.block_size).div_ceil(2), "codes")?;
        let scales = take(blocks * 4, "scales")?;
        let zero_points = if extras.zero_points {
            Some(take(blocks * 4, "zero points")?)
        } else {
            None
        };
        let (dq_codes, dq_factor) = if extras.double_quant && blocks > 0 {
            (
                Some(take(blocks, "double-quantized scales")?),
                Some(take(4, "double-quantization factor")?),
            )
        } else {
            (None, None)
        };
        tensors.push(V1Tensor {
            name: t.name,
            shape: t.shape,
            block_size: t.block_size,
            num_blocks: t.num_blocks,
            stored_offset: t.stored_offset,
            extras,
            codes,
            scales,
            zero_points,
            dq_codes,
            dq_factor,
        });
    }
    if c.remaining() != 0 {
        bail_invalid!(kind: BadLayout,
            "{} unexpected bytes after the last v1 tensor",
            c.remaining()
        );
    }
    Ok(V1File {
        flags,
        declared_metadata_size,
        model_name,
        model_type,
        compute_dtype,
        tensors,
        data_start,
        resolution,
    })
}

/// Whether `extras` at `pos` gives values qlora-rs could have written: every scale
/// positive (it stores 1.0 for an all-zero block), every zero point `-min / scale` within
/// [-1, 1], and a double-quantization factor equal to `max(scales) / k` for the `k` of
/// some qlora-rs version (127, 255 or 256). This tells layouts apart where sizes alone
/// cannot, e.g. zero points misread as double-quantized scales.
fn plausible(data: &[u8], pos: u64, t: &RawTensor, extras: V1Extras) -> bool {
    let blocks = u64::from(t.num_blocks);
    let f32s = |at: u64, n: u64| -> Option<Vec<f32>> {
        let end = at.checked_add(n.checked_mul(4)?)?;
        let bytes = data.get(usize::try_from(at).ok()?..usize::try_from(end).ok()?)?;
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    let Some(scales_at) = blocks
        .checked_mul(u64::from(t.block_size).div_ceil(2))
        .and_then(|c| pos.checked_add(c))
    else {
        return false;
    };
    let Some(scales) = f32s(scales_at, blocks) else {
        return false;
    };
    if !scales.iter().all(|&s| s > 0.0) {
        return false;
    }
    let mut at = scales_at + blocks * 4;
    if extras.zero_points {
        match f32s(at, blocks) {
            Some(zp) if zp.iter().all(|z| z.abs() <= 1.0 || z.is_nan()) => at += blocks * 4,
            _ => return false,
        }
    }
    if extras.double_quant && blocks > 0 {
        let max = scales.iter().fold(0.0f32, |m, &s| m.max(s));
        match f32s(at + blocks, 1) {
            Some(f) if [127.0f32, 255.0, 256.0].iter().any(|k| f[0] == max / k) => {}
            _ => return false,
        }
    }
    true
}

/// Per tensor, walking from `data_start`: the layout whose size equals the next stored
/// offset minus this one (for the last tensor, the bytes left) and whose values are
/// plausible. `None` when some tensor has no such layout.
fn by_offset_deltas(data: &[u8], raw: &[RawTensor], data_start: u64) -> Option<Vec<V1Extras>> {
    let total = data.len() as u64 - data_start;
    let mut used = 0u64;
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.iter().enumerate() {
        let target = match raw.get(i + 1) {
            Some(next) => next.stored_offset.checked_sub(t.stored_offset)?,
            None => total.checked_sub(used)?,
        };
        // Sizes of distinct layouts differ whenever the tensor has blocks; without
        // blocks all are 0 and the first (no extras) is taken.
        let extras = V1Extras::ALL.into_iter().find(|&e| {
            v1_size(u64::from(t.num_blocks), u64::from(t.block_size), e) == Some(target)
                && plausible(data, data_start + used, t, e)
        })?;
        used = used.checked_add(target)?;
        out.push(extras);
    }
    (used == total).then_some(out)
}

/// One layout for every tensor: the only one whose sizes add up to the data and whose
/// values are plausible.
fn uniform(data: &[u8], raw: &[RawTensor], data_start: u64) -> Result<Vec<V1Extras>> {
    let total = data.len() as u64 - data_start;
    let size = |t: &RawTensor, e| v1_size(u64::from(t.num_blocks), u64::from(t.block_size), e);
    let mut fits = Vec::new();
    let mut sums = Vec::new();
    for e in V1Extras::ALL {
        let sum = raw
            .iter()
            .try_fold(0u64, |a, t| size(t, e).and_then(|s| a.checked_add(s)));
        sums.push(sum);
        if sum != Some(total) {
            continue;
        }
        let mut pos = data_start;
        let ok = raw.iter().all(|t| {
            let ok = plausible(data, pos, t, e);
            pos += size(t, e).unwrap_or(0);
            ok
        });
        if ok {
            fits.push(e);
        }
    }
    let distinct = |a: V1Extras, b: V1Extras| raw.iter().any(|t| size(t, a) != size(t, b));
    match fits.as_slice() {
        [] => bail_invalid!(kind: BadLayout,
            "v1 tensor data ({total} bytes) matches no layout qlora-rs writes (all tensors without/with zero points, without/with double-quantized scales would take {} bytes, or hold implausible scales)",
            sums.iter()
                .map(|s| s.map_or("overflow".to_owned(), |s| s.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        [one] => Ok(vec![*one; raw.len()]),
        [first, rest @ ..] if rest.iter().all(|&e| !distinct(*first, e)) => {
            Ok(vec![*first; raw.len()])
        }
        _ => bail_invalid!(kind: BadLayout,
            "v1 tensor data ({total} bytes) fits more than one layout (zero points or double-quantized scales); the file is ambiguous"
        ),
    }
}

/// Output bytes per repacking chunk.
const CHUNK: usize = 1 << 16;

/// Converts v1 codes (each block packed on its own, first element in the low nibble) to
/// v2 codes (packed contiguously, first element in the high nibble), chunk by chunk.
pub fn repack_v1_codes(
    src: &[u8],
    block_size: u64,
    elements: u64,
    mut emit: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let per_block = block_size.div_ceil(2);
    let blocks = elements.checked_div(block_size).unwrap_or(0);
    if blocks.checked_mul(block_size).unwrap_or(0) != elements {
        bail_invalid!(kind: BadShape, "{elements} elements are not a whole number of blocks of {block_size}");
    }
    if blocks.checked_mul(per_block) != Some(src.len() as u64) {
        bail_invalid!(kind: BadShape,
            "v1 codes are {} bytes, expected {blocks} blocks x {per_block}",
            src.len()
        );
    }
    if block_size.is_multiple_of(2) {
        // Blocks are whole bytes: only the nibble order differs.
        let mut buf = Vec::with_capacity(CHUNK.min(src.len()));
        for chunk in src.chunks(CHUNK) {
            buf.clear();
            buf.extend(chunk.iter().map(|b| b.rotate_left(4)));
            emit(&buf)?;
        }
        return Ok(());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK.min(elements.div_ceil(2) as usize));
    let mut high: Option<u8> = None;
    for block in src.chunks(per_block as usize) {
        for k in 0..block_size as usize {
            let byte = block[k / 2];
            let code = if k % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            match high.take() {
                None => high = Some(code),
                Some(h) => {
                    buf.push((h << 4) | code);
                    if buf.len() == CHUNK {
                        emit(&buf)?;
                        buf.clear();
                    }
                }
            }
        }
    }
    if let Some(h) = high {
        buf.push(h << 4);
    }
    if !buf.is_empty() {
        emit(&buf)?;
    }
    Ok(())
}

/// Writes every tensor of a parsed v1 file (`data` is the whole v1 file) into an open v2
/// writer: NF4 codes repacked, f32 scales as `absmax`, zero points (if any) as
/// `zero_points`; v1's redundant 8-bit scale copies are dropped.
pub fn migrate_v1<W: Write + Seek>(
    data: &[u8],
    v1: &V1File,
    writer: &mut QnatWriter<W>,
) -> Result<()> {
    let slice = |r: &Range<usize>| {
        data.get(r.clone())
            .ok_or_else(|| invalid!(kind: OutOfBounds, "v1 byte range {r:?} is outside the file"))
    };
    for t in &v1.tensors {
        let elements = t.elements();
        let blocks = u64::from(t.num_blocks);
        writer.begin_tensor(t.v2_header())?;
        writer.begin_section(
            SectionRole::Codes,
            SectionDtype::U4,
            elements,
            elements.div_ceil(2),
        )?;
        repack_v1_codes(
            slice(&t.codes)?,
            u64::from(t.block_size),
            elements,
            |chunk| writer.write(chunk),
        )?;
        writer.write_section(
            SectionRole::Absmax,
            SectionDtype::F32,
            blocks,
            slice(&t.scales)?,
        )?;
        if let Some(zp) = &t.zero_points {
            writer.write_section(
                SectionRole::ZeroPoints,
                SectionDtype::F32,
                blocks,
                slice(zp)?,
            )?;
        }
        writer.end_tensor()?;
    }
    Ok(())
}

/// Migrates a whole v1 file (`data`) to a v2 file written to `out`.
pub fn migrate_v1_file<W: Write + Seek>(
    data: &[u8],
    out: W,
    tool: &str,
    source: Vec<SourceDigest>,
) -> Result<W> {
    let v1 = read_v1(data)?;
    let mut writer = QnatWriter::new(out, v1.model_info(tool, source))?;
    migrate_v1(data, &v1, &mut writer)?;
    writer.finish()
}

//! The QNAT files of the crate qlora-rs (`native.rs`, "Candle native" export), read as
//! they are: a sequential reader, a decoder equal to qlora-rs's own `dequantize_nf4`,
//! checks for `inspect --verify`, and the migration to QNAT v2.
//!
//! qlora-rs wrote two layouts, both starting `"QNAT"`, u32 version (all little-endian; see
//! `docs/QNAT.md` §8 for their faults):
//!
//! ```text
//! header, 28 bytes (documented as 32): "QNAT", u32 version (1: qlora-rs 1.0, 2: 1.1+),
//!     u32 format flags = 0, u64 metadata size (always written as 0), u32 tensor count,
//!     u32 reserved = 0
//! metadata: u32 len + model name, u32 len + model type, u8 compute dtype (0 f32, 1 f16, 2 bf16)
//! per tensor: u32 len + name, u32 n_dims, n_dims x u64 shape, u32 block size,
//!     u64 offset (wrong: computed from a fixed estimate of what precedes the data),
//!     u32 number of blocks, [version 2: u32 flags: 1 double quant, 2 zero points, 4 per channel]
//! per tensor, in order: codes (blocks x ceil(block_size / 2) bytes, each block packed on
//!     its own, first element in the LOW nibble), then
//!   version 1: blocks x f32 scales, [blocks x f32 zero points],
//!              [blocks x u8 double-quantized scales, 1 x f32 factor]
//!   version 2: double quant ? (blocks x u8 scales, 1 x f32 factor) : blocks x f32 scales,
//!              [blocks x f32 zero points]
//! ```
//!
//! qlora-rs's version 2 is told apart from qforge's QNAT v2 by its bytes: at offset 8
//! qforge writes `header_size` = 128, qlora-rs its format flags = 0 ([`detect`]).
//!
//! Version 1 records neither whether the optional zero points and double-quantization
//! bytes are present (older qlora-rs never wrote the latter), so the reader walks the
//! records in order and decides per tensor from the sizes: the difference of consecutive
//! stored offsets (wrong as absolute positions, but computed from the same per-tensor
//! sizes the writer wrote) must match exactly one layout, and the last tensor must end
//! exactly at the end of the file; failing that, one layout for all tensors must fill the
//! data exactly. Version 2 says it in each tensor's flags. Stored offsets are never used
//! as positions.

use super::layout::{
    ComputeDtype, ModelInfo, Scheme, SectionDtype, SectionRole, SourceDigest, TensorHeader,
};
use super::writer::QnatWriter;
use super::MAGIC;
use crate::formats::cursor::Cursor;
use crate::quant::bnb::{code_table, FourBit};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::io::{Seek, Write};
use std::ops::Range;

/// Real size of the qlora-rs header (qlora-rs documents 32).
pub const V1_HEADER_SIZE: u64 = 28;

/// Bytes of tensor header and fixed metadata qlora-rs 1.0 assumes before the first
/// tensor's data: 32 (header) + 28 (its metadata estimate), plus the tensor headers.
pub const V1_OFFSET_BASE: u64 = 32 + 28;

/// qlora-rs version 2 tensor flag: double-quantized scales instead of f32 scales.
pub const FLAG_DOUBLE_QUANT: u32 = 1;
/// qlora-rs version 2 tensor flag: f32 zero points after the scales.
pub const FLAG_ZERO_POINTS: u32 = 2;
/// qlora-rs version 2 tensor flag: per-channel quantization (block = channel size).
pub const FLAG_PER_CHANNEL: u32 = 4;

/// Which of qlora-rs's layouts a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QloraLayout {
    /// qlora-rs 1.0's version 1 (no per-tensor flags).
    V1,
    /// qlora-rs 1.1+'s "version 2" (28-byte header, per-tensor flags).
    V2,
}

impl QloraLayout {
    /// The version number the file stores.
    pub fn version(self) -> u32 {
        match self {
            QloraLayout::V1 => 1,
            QloraLayout::V2 => 2,
        }
    }

    /// Short name used in reports (`qlora-rs-v1`, `qlora-rs-v2`).
    pub fn name(self) -> &'static str {
        match self {
            QloraLayout::V1 => "qlora-rs-v1",
            QloraLayout::V2 => "qlora-rs-v2",
        }
    }
}

/// The qlora-rs layout of `data`, from its first 12 bytes: `"QNAT"`, version 1, or
/// version 2 with qlora-rs's format flags (0) where qforge's v2 has `header_size` (128)
/// at offset 8. `None` for anything else (qforge's v2 included).
pub fn detect(data: &[u8]) -> Option<QloraLayout> {
    if !data.starts_with(MAGIC) {
        return None;
    }
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (u32_at(4)?, u32_at(8)) {
        (1, _) => Some(QloraLayout::V1),
        (2, Some(0)) => Some(QloraLayout::V2),
        _ => None,
    }
}

/// Which optional per-tensor blocks a tensor's data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Extras {
    /// blocks x f32 zero points after the scales (`use_zero_point`).
    pub zero_points: bool,
    /// blocks x u8 quantized scales and one f32 factor (`double_quant`).
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
    /// Per tensor, from the differences of consecutive stored offsets (version 1).
    OffsetDeltas,
    /// One layout for all tensors, the only one that fills the data exactly (version 1).
    Uniform,
    /// From each tensor's flags (version 2).
    Flags,
}

/// Which scales decode a double-quantized qlora-rs tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScalesChoice {
    /// The 8-bit scales as stored, `(code - 128) * factor`: what qlora-rs's own
    /// `dequantize_nf4` uses (the default).
    #[default]
    Stored,
    /// The exact f32 scales, which only qlora-rs 1.0 files keep beside the 8-bit copy.
    Exact,
}

impl ScalesChoice {
    /// `stored` or `exact`.
    pub fn name(self) -> &'static str {
        match self {
            ScalesChoice::Stored => "stored",
            ScalesChoice::Exact => "exact",
        }
    }
}

/// One tensor of a qlora-rs file; ranges are absolute byte ranges of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Tensor {
    /// Tensor name.
    pub name: String,
    /// Row-major shape (candle order).
    pub shape: Vec<u64>,
    /// Elements per block (the channel size for qlora-rs per-channel quantization).
    pub block_size: u32,
    /// Number of blocks (= number of scales).
    pub num_blocks: u32,
    /// The offset stored in the file (not trusted).
    pub stored_offset: u64,
    /// The version 2 tensor flags (`None` in version 1).
    pub flags: Option<u32>,
    /// Optional blocks present.
    pub extras: V1Extras,
    /// Packed NF4 codes, per block, low nibble first.
    pub codes: Range<usize>,
    /// f32 scale (absmax) per block; absent for double-quantized version 2 tensors.
    pub scales: Option<Range<usize>>,
    /// f32 zero point per block.
    pub zero_points: Option<Range<usize>>,
    /// u8 double-quantized scale per block.
    pub dq_codes: Option<Range<usize>>,
    /// f32 factor of the double-quantized scales.
    pub dq_factor: Option<Range<usize>>,
}

fn f32s_at(data: &[u8], r: &Range<usize>) -> Result<Vec<f32>> {
    let bytes = data
        .get(r.clone())
        .ok_or_else(|| invalid!(kind: OutOfBounds, "byte range {r:?} is outside the file"))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl V1Tensor {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        u64::from(self.num_blocks) * u64::from(self.block_size)
    }

    /// Bytes of this tensor's data in the file.
    pub fn bytes(&self) -> u64 {
        [
            Some(&self.codes),
            self.scales.as_ref(),
            self.zero_points.as_ref(),
            self.dq_codes.as_ref(),
            self.dq_factor.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|r| (r.end - r.start) as u64)
        .sum()
    }

    /// Whether the version 2 flags mark per-channel quantization (`None` in version 1).
    pub fn per_channel(&self) -> Option<bool> {
        self.flags.map(|f| f & FLAG_PER_CHANNEL != 0)
    }

    /// The v2 header this tensor migrates to: NF4, same block size, no double
    /// quantization (the chosen scales are stored as f32 `absmax`).
    pub fn v2_header(&self) -> TensorHeader {
        TensorHeader::new(self.name.clone(), self.shape.clone(), Scheme::Nf4)
            .with_block_size(u64::from(self.block_size))
    }

    /// The per-block scales `choice` selects (`data` is the whole file): the f32 scales of
    /// a plain tensor either way; for a double-quantized one the stored 8-bit scales as
    /// qlora-rs decodes them, `(f32(code) - 128) * factor`, or the exact f32 scales,
    /// which only version 1 files hold.
    pub fn scales(&self, data: &[u8], choice: ScalesChoice) -> Result<Vec<f32>> {
        match (&self.dq_codes, &self.dq_factor, &self.scales, choice) {
            (Some(codes), Some(factor), _, ScalesChoice::Stored) => {
                let factor = f32s_at(data, factor)?[0];
                let codes = data.get(codes.clone()).ok_or_else(
                    || invalid!(kind: OutOfBounds, "byte range {codes:?} is outside the file"),
                )?;
                Ok(codes
                    .iter()
                    .map(|&q| (f32::from(q) - 128.0) * factor)
                    .collect())
            }
            (_, _, Some(scales), _) => f32s_at(data, scales),
            (_, _, None, ScalesChoice::Exact) => bail_invalid!(kind: BadArgument,
                "tensor {:?}: qlora-rs 1.1+ (its QNAT version 2) keeps only the 8-bit scales of a double-quantized tensor, so there are no exact scales; use --scales stored",
                self.name
            ),
            (_, _, None, ScalesChoice::Stored) => {
                // No scales at all: a tensor without blocks.
                Ok(Vec::new())
            }
        }
    }

    /// The per-block zero points (`data` is the whole file), or `None`.
    pub fn zero_point_values(&self, data: &[u8]) -> Result<Option<Vec<f32>>> {
        self.zero_points
            .as_ref()
            .map(|r| f32s_at(data, r))
            .transpose()
    }

    /// Decodes the tensor into `out` (its elements) as qlora-rs's `dequantize_nf4`
    /// does: `(NF4[code] + zero_point) * scale` per element, codes read per block, low
    /// nibble first. (qlora-rs itself indexes codes as `block * B / 2`, which misreads
    /// every block after the first when `B` is odd; this reads what its encoder wrote.)
    pub fn decode(&self, data: &[u8], choice: ScalesChoice, out: &mut [f32]) -> Result<()> {
        let b = self.block_size as usize;
        if out.len() as u64 != self.elements() {
            bail_invalid!(kind: BadShape,
                "tensor {:?}: {} output values for {} elements",
                self.name,
                out.len(),
                self.elements()
            );
        }
        let scales = self.scales(data, choice)?;
        let zps = self.zero_point_values(data)?;
        let codes = data.get(self.codes.clone()).ok_or_else(
            || invalid!(kind: OutOfBounds, "tensor {:?}: codes outside the file", self.name),
        )?;
        let table = code_table(FourBit::Nf4);
        let per_block = b.div_ceil(2);
        for (i, ob) in out.chunks_mut(b.max(1)).enumerate() {
            let block = &codes[i * per_block..(i + 1) * per_block];
            let s = scales[i];
            let z = zps.as_ref().map_or(0.0, |z| z[i]);
            for (k, o) in ob.iter_mut().enumerate() {
                let byte = block[k / 2];
                let code = if k % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                *o = (table[usize::from(code)] + z) * s;
            }
        }
        Ok(())
    }

    /// What `inspect --verify` finds wrong with this tensor's values (`data` is the whole
    /// file): scales not finite and positive (qlora-rs stores the absmax, 1.0 for an
    /// all-zero block), a double-quantization factor not finite and positive, 8-bit
    /// scales that are not qlora-rs's quantization of the f32 scales stored beside them
    /// (version 1), zero points not finite, or a non-zero padding nibble after an odd
    /// block.
    pub fn problems(&self, data: &[u8]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let name = &self.name;
        let exact = match &self.scales {
            Some(r) => Some(f32s_at(data, r)?),
            None => None,
        };
        if let Some(s) = &exact {
            if let Some((i, v)) = s
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v > 0.0))
            {
                out.push(format!(
                    "tensor {name:?}: scale {i} is {v}, not a positive finite number"
                ));
            }
        }
        if let (Some(codes), Some(factor)) = (&self.dq_codes, &self.dq_factor) {
            let f = f32s_at(data, factor)?[0];
            if !(f.is_finite() && f > 0.0) {
                out.push(format!("tensor {name:?}: double-quantization factor {f} is not a positive finite number"));
            }
            if let (Some(s), Some(q)) = (&exact, data.get(codes.clone())) {
                let requant = |v: f32| ((v / f) + 128.0).clamp(0.0, 255.0) as u8;
                if let Some(i) = s.iter().zip(q).position(|(&v, &c)| requant(v) != c) {
                    out.push(format!("tensor {name:?}: 8-bit scale {i} is not the quantization of its f32 scale with factor {f}"));
                }
            }
        }
        if let Some(z) = self.zero_point_values(data)? {
            if let Some(i) = z.iter().position(|v| !v.is_finite()) {
                out.push(format!("tensor {name:?}: zero point {i} is not finite"));
            }
        }
        if !self.block_size.is_multiple_of(2) {
            let per_block = (self.block_size as usize).div_ceil(2);
            let codes = data.get(self.codes.clone()).unwrap_or_default();
            if let Some(i) = codes
                .chunks(per_block)
                .position(|blk| blk.last().is_some_and(|b| b >> 4 != 0))
            {
                out.push(format!(
                    "tensor {name:?}: block {i} has a non-zero padding nibble"
                ));
            }
        }
        Ok(out)
    }
}

fn v1_size(blocks: u64, block_size: u64, extras: V1Extras, layout: QloraLayout) -> Option<u64> {
    let codes = blocks.checked_mul(block_size.div_ceil(2))?;
    let f32s = blocks.checked_mul(4)?;
    let mut size = codes;
    if !(layout == QloraLayout::V2 && extras.double_quant) {
        size = size.checked_add(f32s)?;
    }
    if extras.zero_points {
        size = size.checked_add(f32s)?;
    }
    if extras.double_quant && blocks > 0 {
        size = size.checked_add(blocks + 4)?;
    }
    Some(size)
}

/// A parsed qlora-rs file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1File {
    /// Which qlora-rs layout.
    pub layout: QloraLayout,
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
    /// the offset fault; `None` without tensors.
    pub fn offset_skew(&self) -> Option<i128> {
        self.tensors
            .first()
            .map(|t| i128::from(t.stored_offset) - i128::from(self.data_start))
    }

    /// Whether some tensor is double-quantized.
    pub fn has_double_quant(&self) -> bool {
        self.tensors.iter().any(|t| t.extras.double_quant)
    }

    /// The v2 model info for this file; `scales` is recorded when a tensor is
    /// double-quantized.
    pub fn model_info(
        &self,
        tool: &str,
        source: Vec<SourceDigest>,
        scales: ScalesChoice,
    ) -> ModelInfo {
        let mut kv = BTreeMap::new();
        let from = match self.layout {
            QloraLayout::V1 => "qnat-v1 (qlora-rs)",
            QloraLayout::V2 => "qnat-v2 (qlora-rs 1.1+)",
        };
        kv.insert("qnat.migrated_from".to_owned(), from.to_owned());
        if self.has_double_quant() {
            kv.insert("qnat.migrated_scales".to_owned(), scales.name().to_owned());
        }
        ModelInfo {
            name: self.model_name.clone(),
            architecture: self.model_type.clone(),
            compute_dtype: self.compute_dtype,
            tool: tool.to_owned(),
            source,
            kv,
            gguf: Vec::new(),
        }
    }

    /// For every tensor, what [`V1Tensor::problems`] finds, plus (version 2) stored
    /// offsets whose differences disagree with the sizes the flags give.
    pub fn problems(&self, data: &[u8]) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::with_capacity(self.tensors.len());
        for (i, t) in self.tensors.iter().enumerate() {
            let mut p = t.problems(data)?;
            if self.layout == QloraLayout::V2 {
                if let Some(next) = self.tensors.get(i + 1) {
                    let delta = next.stored_offset.wrapping_sub(t.stored_offset);
                    if delta != t.bytes() {
                        p.push(format!(
                            "tensor {:?}: the stored offsets differ by {delta} bytes but its data takes {}",
                            t.name,
                            t.bytes()
                        ));
                    }
                }
            }
            out.push(p);
        }
        Ok(out)
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
    flags: Option<u32>,
}

/// Reads a qlora-rs file (version 1 or its version 2) sequentially: header, metadata,
/// tensor headers, then each tensor's data in order. Every length is checked against the
/// file; stored offsets are only compared with each other.
pub fn read_v1(data: &[u8]) -> Result<V1File> {
    let mut c = Cursor::new(data);
    let magic = c.take(4, "magic")?;
    if magic != MAGIC {
        bail_invalid!(kind: BadMagic, "bad magic {magic:02x?}: not a QNAT file");
    }
    let version = c.u32("version")?;
    let layout = match (version, detect(data)) {
        (1, _) => QloraLayout::V1,
        (2, Some(QloraLayout::V2)) => QloraLayout::V2,
        (2, _) => {
            bail_invalid!(kind: UnsupportedVersion, "this is a qforge QNAT v2 file, not a qlora-rs file")
        }
        (v, _) => {
            bail_invalid!(kind: UnsupportedVersion, "unsupported QNAT version {v} (qlora-rs wrote 1 and 2)")
        }
    };
    let flags = c.u32("header flags")?;
    let declared_metadata_size = c.u64("header metadata size")?;
    let count = c.u32("tensor count")?;
    let _reserved = c.u32("header reserved")?;
    let model_name = read_string(&mut c, "model name")?;
    let model_type = read_string(&mut c, "model type")?;
    let compute_dtype = match c.u8("compute dtype")? {
        0 => ComputeDtype::F32,
        1 => ComputeDtype::F16,
        2 => ComputeDtype::Bf16,
        b => {
            bail_invalid!(kind: UnknownType, "qlora-rs compute dtype byte {b} (expected 0 f32, 1 f16 or 2 bf16)")
        }
    };
    // A tensor header takes at least 4 (name length) + 4 (n_dims) + 4 (block size) +
    // 8 (offset) + 4 (blocks) bytes (+ 4 flags in version 2).
    let min_header = if layout == QloraLayout::V2 { 28 } else { 24 };
    c.check_count(u64::from(count), min_header, "qlora-rs tensor")?;
    let mut raw = Vec::with_capacity(c.capacity_for(u64::from(count), min_header));
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
        let tflags = match layout {
            QloraLayout::V1 => None,
            QloraLayout::V2 => Some(c.u32("tensor flags")?),
        };
        let elements = super::layout::elements_of(&name, &shape)?;
        if block_size == 0 {
            bail_invalid!(kind: BadShape, "qlora-rs tensor {name:?} at offset {at}: block size 0");
        }
        if let Some(f) =
            tflags.filter(|f| f & !(FLAG_DOUBLE_QUANT | FLAG_ZERO_POINTS | FLAG_PER_CHANNEL) != 0)
        {
            bail_invalid!(kind: UnknownType, "qlora-rs tensor {name:?}: unknown flag bits {f:#x} (known: 1 double quant, 2 zero points, 4 per channel)");
        }
        if u64::from(num_blocks) * u64::from(block_size) != elements {
            bail_invalid!(kind: BadShape,
                "qlora-rs tensor {name:?}: {num_blocks} blocks of {block_size} do not cover its {elements} elements (shape {shape:?})"
            );
        }
        if !names.insert(name.clone()) {
            bail_invalid!(kind: Duplicate, "duplicate qlora-rs tensor name {name:?}");
        }
        raw.push(RawTensor {
            name,
            shape,
            block_size,
            num_blocks,
            stored_offset,
            flags: tflags,
        });
    }
    let data_start = c.position() as u64;
    let (layouts, resolution) = match layout {
        QloraLayout::V2 => (
            raw.iter()
                .map(|t| {
                    let f = t.flags.unwrap_or(0);
                    V1Extras {
                        zero_points: f & FLAG_ZERO_POINTS != 0,
                        double_quant: f & FLAG_DOUBLE_QUANT != 0,
                    }
                })
                .collect(),
            V1Resolution::Flags,
        ),
        QloraLayout::V1 => match by_offset_deltas(data, &raw, data_start) {
            Some(l) => (l, V1Resolution::OffsetDeltas),
            None => (uniform(data, &raw, data_start)?, V1Resolution::Uniform),
        },
    };
    let mut tensors = Vec::with_capacity(raw.len());
    for (t, extras) in raw.into_iter().zip(layouts) {
        let blocks = u64::from(t.num_blocks);
        let mut take = |n: u64, what: &str| -> Result<Range<usize>> {
            let start = c.position();
            c.take(n, what)
                .map_err(|e| e.context(format!("qlora-rs tensor {:?}", t.name)))?;
            Ok(start..c.position())
        };
        let codes = take(blocks * u64::from(t.block_size).div_ceil(2), "codes")?;
        let dq = extras.double_quant && blocks > 0;
        let dq_parts = |take: &mut dyn FnMut(u64, &str) -> Result<Range<usize>>| {
            Ok::<_, anyhow::Error>(if dq {
                (
                    Some(take(blocks, "double-quantized scales")?),
                    Some(take(4, "double-quantization factor")?),
                )
            } else {
                (None, None)
            })
        };
        // v1: scales, [zero points], [dq]; version 2: dq or scales, [zero points].
        let (scales, zero_points, dq_codes, dq_factor) = match layout {
            QloraLayout::V1 => {
                let scales = take(blocks * 4, "scales")?;
                let zp = extras
                    .zero_points
                    .then(|| take(blocks * 4, "zero points"))
                    .transpose()?;
                let (codes, factor) = dq_parts(&mut take)?;
                (Some(scales), zp, codes, factor)
            }
            QloraLayout::V2 => {
                let (codes, factor) = dq_parts(&mut take)?;
                let scales = (!extras.double_quant)
                    .then(|| take(blocks * 4, "scales"))
                    .transpose()?;
                let zp = extras
                    .zero_points
                    .then(|| take(blocks * 4, "zero points"))
                    .transpose()?;
                (scales, zp, codes, factor)
            }
        };
        tensors.push(V1Tensor {
            name: t.name,
            shape: t.shape,
            block_size: t.block_size,
            num_blocks: t.num_blocks,
            stored_offset: t.stored_offset,
            flags: t.flags,
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
            "{} unexpected bytes after the last qlora-rs tensor",
            c.remaining()
        );
    }
    Ok(V1File {
        layout,
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
            v1_size(
                u64::from(t.num_blocks),
                u64::from(t.block_size),
                e,
                QloraLayout::V1,
            ) == Some(target)
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
    let size = |t: &RawTensor, e| {
        v1_size(
            u64::from(t.num_blocks),
            u64::from(t.block_size),
            e,
            QloraLayout::V1,
        )
    };
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

/// Writes every tensor of a parsed qlora-rs file (`data` is the whole file) into an open
/// v2 writer: NF4 codes repacked, the scales `scales` selects (see [`V1Tensor::scales`])
/// as f32 `absmax`, zero points (if any) as `zero_points`. The migrated file decodes to
/// the same values as [`V1Tensor::decode`] with the same choice, bit for bit.
pub fn migrate_v1<W: Write + Seek>(
    data: &[u8],
    v1: &V1File,
    writer: &mut QnatWriter<W>,
    scales: ScalesChoice,
) -> Result<()> {
    let slice = |r: &Range<usize>| {
        data.get(r.clone()).ok_or_else(
            || invalid!(kind: OutOfBounds, "qlora-rs byte range {r:?} is outside the file"),
        )
    };
    for t in &v1.tensors {
        let elements = t.elements();
        let blocks = u64::from(t.num_blocks);
        let absmax = crate::formats::f32_le_bytes(&t.scales(data, scales)?);
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
        writer.write_section(SectionRole::Absmax, SectionDtype::F32, blocks, &absmax)?;
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

/// Migrates a whole qlora-rs file (`data`) to a v2 file written to `out`.
pub fn migrate_v1_file<W: Write + Seek>(
    data: &[u8],
    out: W,
    tool: &str,
    source: Vec<SourceDigest>,
    scales: ScalesChoice,
) -> Result<W> {
    let v1 = read_v1(data)?;
    let mut writer = QnatWriter::new(out, v1.model_info(tool, source, scales))?;
    migrate_v1(data, &v1, &mut writer, scales)?;
    writer.finish()
}

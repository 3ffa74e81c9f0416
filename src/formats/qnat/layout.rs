//! Schemes, section dtypes and roles, the tensor directory, and the layout rules shared by
//! the writer and the reader: which sections a tensor of a scheme has, in which order,
//! with how many elements and bytes.

use super::{hex, parse_sha256, MAX_DIMS};
use crate::formats::ggml_type::GgmlType;
use crate::formats::weight_format::WeightFormat;
use crate::quant::bnb;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How a scheme stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeKind {
    /// bitsandbytes-style 4-bit codes with per-block absmax (NF4, FP4).
    FourBit,
    /// A ggml block type: `block` elements in `type_size` bytes (from the type table).
    Block { block: u64, type_size: u64 },
    /// A plain float type of `bytes` bytes per element.
    Float { bytes: u64 },
}

macro_rules! schemes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $format:expr; )*) => {
        /// Quantization scheme of a tensor.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Scheme {
            $( $(#[$doc])* $variant, )*
        }

        impl Scheme {
            /// Every scheme.
            pub const ALL: &'static [Scheme] = &[$(Scheme::$variant),*];

            /// The name stored in the metadata (`nf4`, `q4_k`, `bf16`).
            pub fn name(self) -> &'static str {
                match self { $(Scheme::$variant => $name,)* }
            }

            /// The weight type the scheme stores.
            pub fn format(self) -> WeightFormat {
                match self { $(Scheme::$variant => $format,)* }
            }
        }
    };
}

use SchemeKind::{Block, Float, FourBit};
use WeightFormat::{Bnb, Ggml};

schemes! {
    /// bitsandbytes NormalFloat4.
    Nf4 = "nf4", Bnb(bnb::FourBit::Nf4);
    /// bitsandbytes FP4 (e2m1 variant).
    Fp4 = "fp4", Bnb(bnb::FourBit::Fp4);
    /// ggml Q4_0.
    Q4_0 = "q4_0", Ggml(GgmlType::Q4_0);
    /// ggml Q4_1.
    Q4_1 = "q4_1", Ggml(GgmlType::Q4_1);
    /// ggml Q5_0.
    Q5_0 = "q5_0", Ggml(GgmlType::Q5_0);
    /// ggml Q5_1.
    Q5_1 = "q5_1", Ggml(GgmlType::Q5_1);
    /// ggml Q8_0.
    Q8_0 = "q8_0", Ggml(GgmlType::Q8_0);
    /// ggml Q2_K.
    Q2_K = "q2_k", Ggml(GgmlType::Q2_K);
    /// ggml Q3_K.
    Q3_K = "q3_k", Ggml(GgmlType::Q3_K);
    /// ggml Q4_K.
    Q4_K = "q4_k", Ggml(GgmlType::Q4_K);
    /// ggml Q5_K.
    Q5_K = "q5_k", Ggml(GgmlType::Q5_K);
    /// ggml Q6_K.
    Q6_K = "q6_k", Ggml(GgmlType::Q6_K);
    /// ggml IQ4_NL.
    IQ4_NL = "iq4_nl", Ggml(GgmlType::IQ4_NL);
    /// ggml IQ4_XS.
    IQ4_XS = "iq4_xs", Ggml(GgmlType::IQ4_XS);
    /// IEEE half precision.
    F16 = "f16", Ggml(GgmlType::F16);
    /// bfloat16.
    BF16 = "bf16", Ggml(GgmlType::BF16);
    /// IEEE single precision.
    F32 = "f32", Ggml(GgmlType::F32);
}

impl Scheme {
    /// How the scheme stores its values, from the type table.
    fn kind(self) -> SchemeKind {
        match self.format() {
            Bnb(_) => FourBit,
            Ggml(t) if t.is_float() => Float {
                bytes: t.type_size(),
            },
            Ggml(t) => Block {
                block: t.block_size(),
                type_size: t.type_size(),
            },
        }
    }

    /// Parses a stored name (exact, lower case).
    pub fn from_name(name: &str) -> Option<Scheme> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// Whether this is a 4-bit absmax scheme (NF4, FP4): sections `codes` + absmax.
    pub fn is_four_bit(self) -> bool {
        self.kind() == FourBit
    }

    /// The block size a tensor of this scheme must record: the ggml block size for ggml
    /// types, 1 for floats, `None` for NF4/FP4 (chosen by the writer).
    pub fn fixed_block_size(self) -> Option<u64> {
        match self.kind() {
            FourBit => None,
            Block { block, .. } => Some(block),
            Float { .. } => Some(1),
        }
    }

    /// The dtype of the single `data` section of a ggml or float scheme.
    fn data_dtype(self) -> Option<SectionDtype> {
        match self {
            Scheme::F16 => Some(SectionDtype::F16),
            Scheme::BF16 => Some(SectionDtype::BF16),
            Scheme::F32 => Some(SectionDtype::F32),
            s if matches!(s.kind(), Block { .. }) => Some(SectionDtype::Block(s)),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element type of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionDtype {
    /// 4-bit codes, two per byte, first element in the high nibble; odd counts end with a
    /// zero padding nibble.
    U4,
    /// Unsigned bytes.
    U8,
    /// IEEE half, little-endian.
    F16,
    /// bfloat16, little-endian.
    BF16,
    /// IEEE single, little-endian.
    F32,
    /// ggml blocks of a block scheme (`count` is in elements, a whole number of blocks).
    Block(Scheme),
}

impl SectionDtype {
    /// The name stored in the metadata (`u4`, `f32`, or a ggml scheme name like `q4_k`).
    pub fn name(self) -> &'static str {
        match self {
            SectionDtype::U4 => "u4",
            SectionDtype::U8 => "u8",
            SectionDtype::F16 => "f16",
            SectionDtype::BF16 => "bf16",
            SectionDtype::F32 => "f32",
            SectionDtype::Block(s) => s.name(),
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<SectionDtype> {
        Some(match name {
            "u4" => SectionDtype::U4,
            "u8" => SectionDtype::U8,
            "f16" => SectionDtype::F16,
            "bf16" => SectionDtype::BF16,
            "f32" => SectionDtype::F32,
            other => match Scheme::from_name(other)? {
                s if matches!(s.kind(), Block { .. }) => SectionDtype::Block(s),
                _ => return None,
            },
        })
    }

    /// Bytes that `count` elements take; `None` on overflow or, for ggml blocks, when
    /// `count` is not a whole number of blocks.
    pub fn bytes_for(self, count: u64) -> Option<u64> {
        match self {
            SectionDtype::U4 => Some(count.div_ceil(2)),
            SectionDtype::U8 => Some(count),
            SectionDtype::F16 | SectionDtype::BF16 => count.checked_mul(2),
            SectionDtype::F32 => count.checked_mul(4),
            SectionDtype::Block(s) => match s.kind() {
                Block { block, type_size } if count.is_multiple_of(block) => {
                    (count / block).checked_mul(type_size)
                }
                _ => None,
            },
        }
    }
}

impl fmt::Display for SectionDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionRole {
    /// NF4/FP4 packed 4-bit codes.
    Codes,
    /// NF4/FP4 per-block absmax (f32), without double quantization.
    Absmax,
    /// Double quantization: one 8-bit code per absmax value.
    AbsmaxCodes,
    /// Double quantization: one f32 scale per nested block of absmax codes.
    NestedAbsmax,
    /// Optional per-block zero points (f32) of qlora-rs asymmetric NF4 (v1 migration).
    ZeroPoints,
    /// The whole tensor of a ggml or float scheme.
    Data,
}

impl SectionRole {
    /// Every role.
    pub const ALL: &'static [SectionRole] = &[
        SectionRole::Codes,
        SectionRole::Absmax,
        SectionRole::AbsmaxCodes,
        SectionRole::NestedAbsmax,
        SectionRole::ZeroPoints,
        SectionRole::Data,
    ];

    /// The name stored in the metadata.
    pub fn name(self) -> &'static str {
        match self {
            SectionRole::Codes => "codes",
            SectionRole::Absmax => "absmax",
            SectionRole::AbsmaxCodes => "absmax_codes",
            SectionRole::NestedAbsmax => "nested_absmax",
            SectionRole::ZeroPoints => "zero_points",
            SectionRole::Data => "data",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<SectionRole> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }
}

impl fmt::Display for SectionRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dtype a consumer should dequantize to (recorded, not used by the format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// float32
    F32,
    /// float16
    F16,
    /// bfloat16
    Bf16,
}

/// One input file the checkpoint was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceDigest {
    /// File name (relative to the model folder for shards).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, 64 lower-case hex digits.
    pub sha256: String,
}

/// Model-level metadata of a QNAT file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Model type / architecture (`llama`, `qwen2`, ...).
    pub architecture: String,
    /// Compute dtype consumers should dequantize to.
    pub compute_dtype: ComputeDtype,
    /// Tool and version that wrote the file (`qforge 0.1.0`).
    pub tool: String,
    /// Digests of the input files.
    pub source: Vec<SourceDigest>,
    /// Free-form string key/values carried from the source (sorted by key).
    pub kv: BTreeMap<String, String>,
    /// The source's GGUF metadata with its types, in the source's order (empty when the
    /// source is not a GGUF); stored as `gguf_metadata` (see `gguf_kv`).
    pub gguf: Vec<(String, crate::formats::gguf::Value)>,
}

impl ModelInfo {
    /// Checks the source digests.
    pub(crate) fn validate(&self) -> Result<()> {
        for s in &self.source {
            if parse_sha256(&s.sha256).is_none() {
                bail_invalid!(kind: BadEncoding,
                    "source file {:?}: sha256 {:?} is not 64 lower-case hex digits",
                    s.name,
                    s.sha256
                );
            }
        }
        Ok(())
    }
}

/// What a writer is told about a tensor before its sections.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorHeader {
    /// Tensor name (unique, non-empty).
    pub name: String,
    /// Row-major shape, outermost first (`[]` for a scalar).
    pub shape: Vec<u64>,
    /// Scheme.
    pub scheme: Scheme,
    /// Elements per block (NF4/FP4: chosen; ggml: the type's block; floats: 1).
    pub block_size: u64,
    /// Whether the NF4/FP4 absmax values are double-quantized.
    pub double_quant: bool,
    /// Absmax values per nested block (double quantization only).
    pub nested_block_size: Option<u64>,
    /// Double-quantization offset (mean of the absmax values); may instead be set with
    /// [`QnatWriter::set_absmax_offset`](super::QnatWriter::set_absmax_offset) before
    /// `end_tensor`.
    pub absmax_offset: Option<f32>,
}

impl TensorHeader {
    /// A tensor without double quantization; the block size is the scheme's fixed one,
    /// or 64 for NF4/FP4.
    pub fn new(name: impl Into<String>, shape: Vec<u64>, scheme: Scheme) -> Self {
        TensorHeader {
            name: name.into(),
            shape,
            scheme,
            block_size: scheme.fixed_block_size().unwrap_or(64),
            double_quant: false,
            nested_block_size: None,
            absmax_offset: None,
        }
    }

    /// Sets the NF4/FP4 block size.
    pub fn with_block_size(mut self, block_size: u64) -> Self {
        self.block_size = block_size;
        self
    }

    /// Turns double quantization on with `nested_block_size` absmax values per nested block.
    pub fn with_double_quant(mut self, nested_block_size: u64) -> Self {
        self.double_quant = true;
        self.nested_block_size = Some(nested_block_size);
        self
    }
}

/// One section of a tensor in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// What it holds.
    pub role: SectionRole,
    /// Element type.
    pub dtype: SectionDtype,
    /// Number of elements.
    pub count: u64,
    /// Byte offset relative to the data section (a multiple of 64).
    pub offset: u64,
    /// Length in bytes (`dtype.bytes_for(count)`).
    pub bytes: u64,
}

/// One tensor of the directory, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<u64>,
    /// Scheme.
    pub scheme: Scheme,
    /// Elements per block.
    pub block_size: u64,
    /// Whether the absmax values are double-quantized.
    pub double_quant: bool,
    /// Absmax values per nested block (double quantization only).
    pub nested_block_size: Option<u64>,
    /// Double-quantization offset, bit-exact (double quantization only).
    pub absmax_offset: Option<f32>,
    /// Sections in storage order.
    pub sections: Vec<Section>,
    /// SHA-256 over the section bytes, in section order, padding excluded.
    pub sha256: [u8; 32],
}

impl TensorEntry {
    /// Number of elements (1 for a scalar).
    pub fn elements(&self) -> u64 {
        // Validated not to overflow when the entry was built.
        self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Bytes of all sections (padding excluded).
    pub fn bytes(&self) -> u64 {
        self.sections
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.bytes))
    }

    /// Stored bits per weight (`bytes * 8 / elements`; 0 for an empty tensor).
    pub fn bits_per_weight(&self) -> f64 {
        match self.elements() {
            0 => 0.0,
            n => self.bytes() as f64 * 8.0 / n as f64,
        }
    }

    /// The section with this role, if the tensor has one.
    pub fn section(&self, role: SectionRole) -> Option<&Section> {
        self.sections.iter().find(|s| s.role == role)
    }
}

/// The sections a tensor must have, derived from its header.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Required sections in order: (role, dtype, count).
    pub required: Vec<(SectionRole, SectionDtype, u64)>,
    /// An optional trailing `zero_points` section (NF4/FP4 only).
    pub optional: Option<(SectionRole, SectionDtype, u64)>,
}

impl Plan {
    /// The expected (role, dtype, count) of section number `i`, if one may follow.
    pub fn expected(&self, i: usize) -> Option<(SectionRole, SectionDtype, u64)> {
        self.required
            .get(i)
            .copied()
            .or(if i == self.required.len() {
                self.optional
            } else {
                None
            })
    }
}

/// Element count of a shape, rejecting too many dimensions and overflow.
pub(crate) fn elements_of(name: &str, shape: &[u64]) -> Result<u64> {
    if shape.len() > MAX_DIMS {
        bail_invalid!(kind: BadShape,
            "tensor {name:?}: {} dimensions (at most {MAX_DIMS})",
            shape.len()
        );
    }
    shape.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(d)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| invalid!(kind: Overflow, "tensor {name:?}: element count of shape {shape:?} overflows"))
    })
}

/// Validates a tensor header (everything but the presence of the absmax offset) and
/// returns the sections it must have.
pub(crate) fn plan(
    name: &str,
    shape: &[u64],
    scheme: Scheme,
    block_size: u64,
    double_quant: bool,
    nested_block_size: Option<u64>,
) -> Result<Plan> {
    if name.is_empty() {
        bail_invalid!(kind: BadArgument, "a tensor has an empty name");
    }
    let elements = elements_of(name, shape)?;
    if !scheme.is_four_bit() {
        if double_quant || nested_block_size.is_some() {
            bail_invalid!(kind: Inconsistent,
                "tensor {name:?}: double quantization applies only to nf4/fp4, not {scheme}"
            );
        }
        let fixed = scheme.fixed_block_size().unwrap_or(1);
        if block_size != fixed {
            bail_invalid!(kind: BadShape,
                "tensor {name:?}: block size {block_size} but {scheme} has block size {fixed}"
            );
        }
        let row = shape.last().copied().unwrap_or(1);
        if row % fixed != 0 {
            bail_invalid!(kind: BadShape,
                "tensor {name:?}: row length {row} is not a multiple of the {scheme} block size {fixed}"
            );
        }
        let dtype = scheme.data_dtype().ok_or_else(
            || invalid!(kind: UnknownType, "tensor {name:?}: scheme {scheme} has no data dtype"),
        )?;
        return Ok(Plan {
            required: vec![(SectionRole::Data, dtype, elements)],
            optional: None,
        });
    }
    if block_size == 0 || block_size > u64::from(u32::MAX) {
        bail_invalid!(kind: BadShape, "tensor {name:?}: {scheme} block size {block_size} is not in 1..=4294967295");
    }
    let blocks = elements.div_ceil(block_size);
    let mut required = vec![(SectionRole::Codes, SectionDtype::U4, elements)];
    match (double_quant, nested_block_size) {
        (false, None) => required.push((SectionRole::Absmax, SectionDtype::F32, blocks)),
        (false, Some(n)) => {
            bail_invalid!(kind: Inconsistent,
                "tensor {name:?}: nested block size {n} given without double quantization"
            )
        }
        (true, None) => {
            bail_invalid!(kind: Inconsistent, "tensor {name:?}: double quantization without a nested block size")
        }
        (true, Some(n)) => {
            if n == 0 || n > u64::from(u32::MAX) {
                bail_invalid!(kind: BadShape, "tensor {name:?}: nested block size {n} is not in 1..=4294967295");
            }
            required.push((SectionRole::AbsmaxCodes, SectionDtype::U8, blocks));
            required.push((
                SectionRole::NestedAbsmax,
                SectionDtype::F32,
                blocks.div_ceil(n),
            ));
        }
    }
    Ok(Plan {
        required,
        optional: Some((SectionRole::ZeroPoints, SectionDtype::F32, blocks)),
    })
}

/// Checks that a section matches what the plan expects as section number `i`.
pub(crate) fn check_section(name: &str, plan: &Plan, i: usize, s: &Section) -> Result<()> {
    let Some((role, dtype, count)) = plan.expected(i) else {
        bail_invalid!(kind: BadLayout,
            "tensor {name:?}: unexpected section #{i} ({}) after the last one its scheme has",
            s.role
        );
    };
    if s.role != role {
        bail_invalid!(kind: BadLayout,
            "tensor {name:?}: section #{i} is {:?}, expected {:?}",
            s.role.name(),
            role.name()
        );
    }
    if s.dtype != dtype {
        bail_invalid!(kind: Inconsistent,
            "tensor {name:?}: section {role} has dtype {}, expected {dtype}",
            s.dtype
        );
    }
    if s.count != count {
        bail_invalid!(kind: BadShape,
            "tensor {name:?}: section {role} has {} elements, expected {count}",
            s.count
        );
    }
    match dtype.bytes_for(count) {
        Some(b) if b == s.bytes => Ok(()),
        Some(b) => bail_invalid!(kind: BadShape,
            "tensor {name:?}: section {role} is {} bytes but {count} x {dtype} take {b}",
            s.bytes
        ),
        None => bail_invalid!(kind: Overflow,
            "tensor {name:?}: section {role}: byte size of {count} x {dtype} overflows"
        ),
    }
}

/// Checks that a finished section list is complete.
pub(crate) fn check_complete(name: &str, plan: &Plan, n_sections: usize) -> Result<()> {
    if n_sections < plan.required.len() {
        let (missing, _, _) = plan.required[n_sections];
        bail_invalid!(kind: Inconsistent, "tensor {name:?}: section {missing} is missing");
    }
    Ok(())
}

/// Checks that the absmax offset is present exactly when the tensor is double-quantized.
pub(crate) fn check_offset(name: &str, double_quant: bool, offset: Option<f32>) -> Result<()> {
    match (double_quant, offset) {
        (true, None) => {
            bail_invalid!(kind: Inconsistent, "tensor {name:?}: double-quantized but has no absmax offset")
        }
        (false, Some(_)) => {
            bail_invalid!(kind: Inconsistent, "tensor {name:?}: absmax offset given without double quantization")
        }
        _ => Ok(()),
    }
}

/// The metadata document as stored (JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MetadataJson {
    pub name: String,
    pub architecture: String,
    pub compute_dtype: ComputeDtype,
    pub tool: String,
    #[serde(default)]
    pub source: Vec<SourceDigest>,
    #[serde(default)]
    pub kv: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gguf_metadata: Vec<super::gguf_kv::GgufKvJson>,
    pub tensors: Vec<TensorJson>,
}

/// A tensor of the directory as stored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TensorJson {
    pub name: String,
    pub shape: Vec<u64>,
    pub scheme: String,
    pub block_size: u64,
    pub double_quant: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_block_size: Option<u64>,
    /// Authoritative: the f32 bit pattern of the offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absmax_offset_bits: Option<u32>,
    /// Informative: the offset as a number (absent when not finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absmax_offset: Option<f64>,
    pub sections: Vec<SectionJson>,
    pub sha256: String,
}

/// A section as stored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SectionJson {
    pub role: String,
    pub dtype: String,
    pub count: u64,
    pub offset: u64,
    pub bytes: u64,
}

impl MetadataJson {
    /// The document for a model and its tensors.
    pub fn new(model: &ModelInfo, tensors: &[TensorEntry]) -> Self {
        MetadataJson {
            name: model.name.clone(),
            architecture: model.architecture.clone(),
            compute_dtype: model.compute_dtype,
            tool: model.tool.clone(),
            source: model.source.clone(),
            kv: model.kv.clone(),
            gguf_metadata: model
                .gguf
                .iter()
                .filter_map(|(k, v)| super::gguf_kv::to_json(k, v))
                .collect(),
            tensors: tensors.iter().map(TensorJson::from_entry).collect(),
        }
    }

    /// Splits the document into model info and the raw tensor list.
    pub fn into_parts(self) -> Result<(ModelInfo, Vec<TensorJson>)> {
        let model = ModelInfo {
            name: self.name,
            architecture: self.architecture,
            compute_dtype: self.compute_dtype,
            tool: self.tool,
            source: self.source,
            kv: self.kv,
            gguf: self
                .gguf_metadata
                .iter()
                .map(super::gguf_kv::from_json)
                .collect::<Result<_>>()?,
        };
        Ok((model, self.tensors))
    }
}

impl TensorJson {
    fn from_entry(t: &TensorEntry) -> Self {
        TensorJson {
            name: t.name.clone(),
            shape: t.shape.clone(),
            scheme: t.scheme.name().to_owned(),
            block_size: t.block_size,
            double_quant: t.double_quant,
            nested_block_size: t.nested_block_size,
            absmax_offset_bits: t.absmax_offset.map(f32::to_bits),
            absmax_offset: t.absmax_offset.filter(|x| x.is_finite()).map(f64::from),
            sections: t
                .sections
                .iter()
                .map(|s| SectionJson {
                    role: s.role.name().to_owned(),
                    dtype: s.dtype.name().to_owned(),
                    count: s.count,
                    offset: s.offset,
                    bytes: s.bytes,
                })
                .collect(),
            sha256: hex(&t.sha256),
        }
    }

    /// Validates the stored tensor against the scheme rules (layout in the data section is
    /// checked by the reader) and converts it.
    pub fn into_entry(self) -> Result<TensorEntry> {
        let name = self.name;
        let scheme = Scheme::from_name(&self.scheme).ok_or_else(
            || invalid!(kind: UnknownType, "tensor {name:?}: unknown scheme {:?}", self.scheme),
        )?;
        let plan = plan(
            &name,
            &self.shape,
            scheme,
            self.block_size,
            self.double_quant,
            self.nested_block_size,
        )?;
        let absmax_offset = match (self.absmax_offset_bits, self.absmax_offset) {
            (None, None) => None,
            (None, Some(_)) => {
                bail_invalid!(kind: Inconsistent, "tensor {name:?}: absmax_offset without absmax_offset_bits")
            }
            (Some(bits), shown) => {
                let x = f32::from_bits(bits);
                if let Some(v) = shown {
                    if !x.is_finite() || (v as f32).to_bits() != bits {
                        bail_invalid!(kind: Inconsistent,
                            "tensor {name:?}: absmax_offset {v} disagrees with absmax_offset_bits {bits:#010x}"
                        );
                    }
                }
                Some(x)
            }
        };
        check_offset(&name, self.double_quant, absmax_offset)?;
        let mut sections = Vec::with_capacity(self.sections.len());
        for (i, s) in self.sections.into_iter().enumerate() {
            let role = SectionRole::from_name(&s.role)
                .ok_or_else(|| invalid!(kind: UnknownType, "tensor {name:?}: unknown section role {:?}", s.role))?;
            let dtype = SectionDtype::from_name(&s.dtype).ok_or_else(|| {
                invalid!(kind: UnknownType,
                    "tensor {name:?}: section {role} has unknown dtype {:?}",
                    s.dtype
                )
            })?;
            let section = Section {
                role,
                dtype,
                count: s.count,
                offset: s.offset,
                bytes: s.bytes,
            };
            check_section(&name, &plan, i, &section)?;
            sections.push(section);
        }
        check_complete(&name, &plan, sections.len())?;
        let sha256 = parse_sha256(&self.sha256).ok_or_else(|| {
            invalid!(kind: BadEncoding,
                "tensor {name:?}: sha256 {:?} is not 64 lower-case hex digits",
                self.sha256
            )
        })?;
        Ok(TensorEntry {
            name,
            shape: self.shape,
            scheme,
            block_size: self.block_size,
            double_quant: self.double_quant,
            nested_block_size: self.nested_block_size,
            absmax_offset,
            sections,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &s in Scheme::ALL {
            assert_eq!(Scheme::from_name(s.name()), Some(s));
        }
        for &r in SectionRole::ALL {
            assert_eq!(SectionRole::from_name(r.name()), Some(r));
        }
        assert_eq!(
            SectionDtype::from_name("q4_k"),
            Some(SectionDtype::Block(Scheme::Q4_K))
        );
        assert_eq!(SectionDtype::from_name("nf4"), None);
        assert_eq!(Scheme::from_name("Q4_K"), None);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(SectionDtype::U4.bytes_for(7), Some(4));
        assert_eq!(SectionDtype::F32.bytes_for(u64::MAX), None);
        assert_eq!(SectionDtype::Block(Scheme::Q4_K).bytes_for(512), Some(288));
        assert_eq!(SectionDtype::Block(Scheme::Q4_K).bytes_for(100), None);
    }

    #[test]
    fn plans() {
        let p = plan("w", &[4, 100], Scheme::Nf4, 64, true, Some(256)).unwrap();
        assert_eq!(
            p.required,
            vec![
                (SectionRole::Codes, SectionDtype::U4, 400),
                (SectionRole::AbsmaxCodes, SectionDtype::U8, 7),
                (SectionRole::NestedAbsmax, SectionDtype::F32, 1),
            ]
        );
        assert!(plan("w", &[4, 100], Scheme::Q4_K, 256, false, None).is_err());
        assert!(plan("w", &[4, 256], Scheme::Q4_K, 32, false, None).is_err());
        assert!(plan("w", &[4, 256], Scheme::F16, 1, true, Some(256)).is_err());
        assert!(plan("w", &[1 << 40, 1 << 40], Scheme::F32, 1, false, None).is_err());
        assert!(plan("", &[1], Scheme::F32, 1, false, None).is_err());
        assert!(plan("w", &[1; 9], Scheme::F32, 1, false, None).is_err());
        assert!(plan("w", &[], Scheme::F32, 1, false, None).is_ok());
    }
}

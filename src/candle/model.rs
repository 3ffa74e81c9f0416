//! [`QuantModel`]: a QNAT v2 or GGUF file, memory-mapped, whose tensors go to candle.

use super::linear::QuantLinear;
use super::mapped::{self, candle_dtype, MappedBytes};
use crate::formats::ggml_type::GgmlType;
use crate::formats::gguf::Value;
use crate::formats::qnat::{Scheme, SectionRole, DEFAULT_NESTED_BLOCK};
use crate::formats::{Format, TensorInfo, TensorSource};
use crate::kernels::weights::{WeightBytes, NF4_BLOCK};
use crate::kernels::{QuantMatrix, WeightType};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A QNAT v2 or GGUF file, memory-mapped and validated; tensors are read in place.
///
/// Resident memory is the pages of the file that are touched: [`QuantModel::qtensor`] and
/// [`QuantModel::quant_linear`] copy no weight bytes; [`QuantModel::dequantize`] returns
/// a new tensor.
pub struct QuantModel {
    src: TensorSource,
}

impl QuantModel {
    /// Opens a QNAT v2 or GGUF file (a qlora-rs QNAT file must be migrated first:
    /// `qforge export-native OLD.qnat -o NEW.qnat`).
    pub fn open(path: &Path) -> Result<Self> {
        let src = TensorSource::open(path)?;
        if !matches!(src.format, Format::Gguf | Format::Qnat) {
            bail_invalid!(
                "{}: QuantModel opens QNAT or GGUF files, not {} (candle reads safetensors itself)",
                path.display(),
                src.format.name()
            );
        }
        Ok(QuantModel { src })
    }

    /// The opened source (format, metadata, tensor table).
    pub fn source(&self) -> &TensorSource {
        &self.src
    }

    /// Tensor names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.src.tensors.iter().map(|t| t.name.as_str())
    }

    /// The tensor called `name`.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.src.tensors.iter().find(|t| t.name == name).ok_or_else(|| {
            invalid!(kind: BadArgument, "no tensor named {name:?} in {}", self.src.path.display())
        })
    }

    fn mapped(&self, t: &TensorInfo) -> Result<MappedBytes> {
        let start = usize::try_from(t.offset)?;
        let end = usize::try_from(t.offset + t.bytes)?;
        MappedBytes::new(self.src.files[t.file].shared_map(), start..end)
    }

    /// The tensor `name` as a candle `QTensor` that reads the file's blocks in place
    /// (no copy), for ggml types candle has (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q8_1, Q2_K ... Q6_K, Q8_K). NF4/FP4 have no candle type: use
    /// [`QuantModel::dequantize`] or [`QuantModel::quant_linear`].
    pub fn qtensor(&self, name: &str) -> Result<QTensor> {
        let t = self.info(name)?;
        let dtype = t.ty.as_ggml().and_then(candle_dtype).ok_or_else(|| {
            invalid!(kind: UnknownType,
                "tensor {name:?} is {}, which candle has no quantized type for; use QuantModel::dequantize or QuantModel::quant_linear",
                t.ty
            )
        })?;
        let shape = t.shape.iter().map(|&d| d as usize).collect();
        mapped::qtensor(self.mapped(t)?, dtype, shape).with_context(|| format!("tensor {name}"))
    }

    /// The tensor `name` decoded to f32 (exactly as our codecs decode it; NF4/FP4 with
    /// their absmax, double quantization and zero points) and converted to `dtype`.
    pub fn dequantize(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = self.info(name)?;
        let mut out = vec![0f32; usize::try_from(t.elements())?];
        match (&self.src.qnat, t.ty.as_ggml()) {
            (_, Some(_)) if crate::quant::can_decode(t.ty) => {
                crate::quant::decode(t.ty, self.src.data(t), &mut out)?
            }
            (Some(index), _) => {
                let e = index
                    .tensor(name)
                    .ok_or_else(|| invalid!("tensor {name:?} missing from the QNAT index"))?;
                crate::pipeline::qnat::dequantize(index, self.src.files[0].data(), e, &mut out)?
            }
            _ => {
                bail_invalid!(kind: UnknownType, "tensor {name:?} has type {}, which cannot be decoded", t.ty)
            }
        }
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        Ok(Tensor::from_vec(out, shape, &Device::Cpu)?.to_dtype(dtype)?)
    }

    /// The 2-D weight `name` (`n` outputs x `k` inputs) as a [`QuantLinear`] whose weights
    /// stay in the file (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, IQ4_XS read in place; NF4 with block 64: codes in
    /// place, absmax decoded once), with an optional bias of `n` values.
    pub fn quant_linear(&self, name: &str, bias: Option<Tensor>) -> Result<QuantLinear> {
        QuantLinear::new(self.quant_matrix(name)?, bias)
    }

    /// The 2-D weight `name` as the kernels' [`QuantMatrix`] over the mapped file (what
    /// [`QuantModel::quant_linear`] runs; also [`QuantLinear::tiled`]'s input and
    /// `qforge::kernels::reference_matmul`'s).
    pub fn quant_matrix(&self, name: &str) -> Result<QuantMatrix> {
        let t = self.info(name)?;
        let [n, k] = t.shape[..] else {
            bail_invalid!(kind: BadShape, "tensor {name:?} has shape {:?}; a linear layer needs 2-D", t.shape);
        };
        let (n, k) = (usize::try_from(n)?, usize::try_from(k)?);
        let ty = match t.ty.as_ggml() {
            Some(g) => WeightType::ALL
                .into_iter()
                .find(|w| w.ggml_type() == Some(g)),
            None => (t.ty == crate::formats::TensorType::Qnat(Scheme::Nf4)).then_some(WeightType::Nf4),
        }
        .ok_or_else(|| {
            invalid!(kind: UnknownType,
                "tensor {name:?} is {}; QuantLinear runs Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, IQ4_XS and NF4 (use QuantModel::qtensor with candle's QMatMul, or dequantize)",
                t.ty
            )
        })?;
        QuantMatrix::check_shape(ty, n, k)?;
        let (data, absmax) = if ty == WeightType::Nf4 {
            self.nf4_parts(name)?
        } else {
            let (map, range) = self.mapped(t)?.into_parts();
            (WeightBytes::Mapped { map, range }, Vec::new())
        };
        let w = QuantMatrix {
            ty,
            n,
            k,
            data,
            absmax,
        };
        if w.data.len() != n * w.row_bytes() {
            bail_invalid!(kind: BadShape, "tensor {name:?}: {} bytes for {n} x {k}", w.data.len());
        }
        Ok(w)
    }

    /// NF4 codes in place and the absmax values (double quantization decoded).
    fn nf4_parts(&self, name: &str) -> Result<(WeightBytes, Vec<f32>)> {
        let index = self
            .src
            .qnat
            .as_ref()
            .ok_or_else(|| invalid!("NF4 tensors come from QNAT files"))?;
        let e = index
            .tensor(name)
            .ok_or_else(|| invalid!("tensor {name:?} missing from the QNAT index"))?;
        if e.block_size != NF4_BLOCK as u64 || e.section(SectionRole::ZeroPoints).is_some() {
            bail_invalid!(kind: UnknownType,
                "tensor {name:?}: QuantLinear runs NF4 with block size {NF4_BLOCK} and no zero points (this one: block {}{}); use QuantModel::dequantize",
                e.block_size,
                if e.section(SectionRole::ZeroPoints).is_some() { ", zero points" } else { "" }
            );
        }
        let data = self.src.files[0].data();
        let codes = e
            .section(SectionRole::Codes)
            .ok_or_else(|| invalid!("tensor {name:?}: no codes"))?;
        let start = usize::try_from(index.header.data_offset + codes.offset)?;
        let range = start..start + usize::try_from(codes.bytes)?;
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let absmax = if e.double_quant {
            let dq = crate::quant::bnb::DoubleQuant {
                codes: index
                    .section(data, name, SectionRole::AbsmaxCodes)?
                    .to_vec(),
                nested_absmax: f32s(index.section(data, name, SectionRole::NestedAbsmax)?),
                offset: e.absmax_offset.unwrap_or(0.0),
                nested_block: e.nested_block_size.unwrap_or(DEFAULT_NESTED_BLOCK) as usize,
            };
            let mut a = vec![0f32; dq.codes.len()];
            crate::quant::bnb::double_dequantize(&dq, &mut a);
            a
        } else {
            f32s(index.section(data, name, SectionRole::Absmax)?)
        };
        Ok((
            WeightBytes::Mapped {
                map: self.src.files[0].shared_map(),
                range,
            },
            absmax,
        ))
    }

    /// The file as candle's `gguf_file::Content`, which candle's GGUF model loaders (such
    /// as candle-transformers' `quantized_llama::ModelWeights::from_gguf`) read tensors
    /// through, given a reader of the same file: for a GGUF its own header; for QNAT the
    /// typed GGUF metadata it carries (`gguf_metadata`, present when it was made from a
    /// GGUF) and every tensor at its data section (all must have a candle type).
    pub fn gguf_content(&self) -> Result<gguf_file::Content> {
        let (index, path) = match (&self.src.qnat, self.src.format) {
            (None, Format::Gguf) => {
                let mut f = std::fs::File::open(&self.src.path)?;
                return gguf_file::Content::read(&mut f)
                    .map_err(|e| invalid!("{}: {e}", self.src.path.display()));
            }
            (Some(index), _) => (index, &self.src.path),
            _ => bail_invalid!("{}: not QNAT or GGUF", self.src.path.display()),
        };
        if index.model.gguf.is_empty() {
            bail_invalid!(
                "{}: this QNAT file carries no GGUF metadata (it was not made from a GGUF), so candle's GGUF loaders lack its hyperparameters",
                path.display()
            );
        }
        let metadata = index
            .model
            .gguf
            .iter()
            .map(|(k, v)| Ok((k.clone(), candle_value(v)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let base = index.header.data_offset;
        let mut tensor_infos = HashMap::new();
        for t in &self.src.tensors {
            let g: Option<GgmlType> = t.ty.as_ggml();
            let dtype = g.and_then(candle_dtype).ok_or_else(|| {
                invalid!(kind: UnknownType,
                    "tensor {:?} is {}, which candle's GGUF loaders cannot read; use QuantModel::dequantize or quant_linear",
                    t.name,
                    t.ty
                )
            })?;
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            tensor_infos.insert(
                t.name.clone(),
                gguf_file::TensorInfo {
                    ggml_dtype: dtype,
                    shape: shape.into(),
                    offset: t.offset - base,
                },
            );
        }
        Ok(gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos,
            tensor_data_offset: base,
        })
    }
}

/// Our GGUF value as candle's.
fn candle_value(v: &Value) -> Result<gguf_file::Value> {
    use gguf_file::Value as C;
    Ok(match v {
        Value::U8(x) => C::U8(*x),
        Value::I8(x) => C::I8(*x),
        Value::U16(x) => C::U16(*x),
        Value::I16(x) => C::I16(*x),
        Value::U32(x) => C::U32(*x),
        Value::I32(x) => C::I32(*x),
        Value::U64(x) => C::U64(*x),
        Value::I64(x) => C::I64(*x),
        Value::F32(x) => C::F32(*x),
        Value::F64(x) => C::F64(*x),
        Value::Bool(x) => C::Bool(*x),
        Value::String(b) => C::String(String::from_utf8_lossy(b).into_owned()),
        Value::Array(_, items) => C::Array(items.iter().map(candle_value).collect::<Result<_>>()?),
        Value::RawArray(a) => candle_value(&a.parse()?)?,
    })
}

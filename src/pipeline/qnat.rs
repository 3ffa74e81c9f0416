//! Writing QNAT v2 through the shared pipeline (`export-native`, `quantize --format qnat`),
//! and reading it back to f32 (`export-native --dequantize`).
//!
//! Per tensor the caller picks a [`Target`]: a 4-bit scheme (NF4/FP4, codes streamed
//! through [`encode_tensor`], absmax kept as side values and written after, optionally
//! double-quantized), a ggml block or float scheme (encoded row by row), or a lossless
//! repack of bytes already in that scheme (quantized GGUF tensors).

use super::bnb::Outcome;
use super::encode::{FourBitEncoder, GgmlEncoder};
use super::{encode_tensor, ErrorStats};
use crate::formats::ggml_type::GgmlType;
use crate::formats::qnat::{
    ModelInfo, QnatIndex, QnatWriter, Scheme, SectionDtype, SectionRole, TensorEntry, TensorHeader,
    DEFAULT_NESTED_BLOCK,
};
use crate::formats::{TensorInfo, TensorSource};
use crate::invalid;
use crate::quant::bnb::{self, FourBit};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::io::{Seek, Write};

/// How one tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// NF4 or FP4 with this block size, double-quantized or not.
    FourBit {
        /// NF4 or FP4.
        kind: FourBit,
        /// Elements per block.
        block_size: usize,
        /// Double-quantize the absmax values.
        double_quant: bool,
    },
    /// Encode to a ggml block or float scheme.
    Encode(Scheme),
    /// Copy the source bytes, which are already in this scheme.
    Repack(Scheme),
}

/// The QNAT scheme of a ggml type, if QNAT has it.
pub fn scheme_of(ty: GgmlType) -> Option<Scheme> {
    Scheme::try_from(ty).ok()
}

fn ggml_of(s: Scheme) -> Option<GgmlType> {
    GgmlType::try_from(s).ok()
}

/// Writes `src` tensor by tensor as QNAT to `out`, with `target` deciding each tensor.
pub fn write<W: Write + Seek>(
    src: &TensorSource,
    target: &dyn Fn(&TensorInfo) -> Result<(Target, &'static str)>,
    model: ModelInfo,
    out: W,
    progress: &ProgressBar,
) -> Result<(W, Vec<Outcome>)> {
    let mut w = QnatWriter::new(out, model)?;
    let mut outcomes = Vec::with_capacity(src.tensors.len());
    for t in &src.tensors {
        progress.set_message(t.name.clone());
        let (tgt, reason) = target(t)?;
        let stats = write_tensor(src, t, tgt, &mut w, progress)
            .with_context(|| format!("tensor {}", t.name))?;
        let entry = w.tensors().last().expect("tensor just written");
        outcomes.push(Outcome {
            name: t.name.clone(),
            out_type: entry.scheme.name().to_ascii_uppercase(),
            out_bytes: entry.bytes(),
            stats,
            reason,
        });
    }
    Ok((w.finish()?, outcomes))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_tensor<W: Write + Seek>(
    src: &TensorSource,
    t: &TensorInfo,
    tgt: Target,
    w: &mut QnatWriter<W>,
    progress: &ProgressBar,
) -> Result<Option<ErrorStats>> {
    let n = t.elements();
    match tgt {
        Target::Repack(scheme) => {
            w.begin_tensor(TensorHeader::new(&t.name, t.shape.clone(), scheme))?;
            w.begin_section(SectionRole::Data, data_dtype(scheme), n, t.bytes)?;
            super::copy_tensor(src, t, &mut |chunk| w.write(chunk))?;
            w.end_tensor()?;
            progress.inc(n);
            Ok(None)
        }
        Target::Encode(scheme) => {
            let ty = ggml_of(scheme).ok_or_else(|| invalid!("scheme {scheme} has no codec"))?;
            let enc = GgmlEncoder::new(ty)?;
            let bytes = data_dtype(scheme)
                .bytes_for(n)
                .ok_or_else(|| invalid!("{n} elements do not fill whole {scheme} blocks"))?;
            w.begin_tensor(TensorHeader::new(&t.name, t.shape.clone(), scheme))?;
            w.begin_section(SectionRole::Data, data_dtype(scheme), n, bytes)?;
            let e = encode_tensor(src, t, &enc, None, progress, &mut |c| w.write(c))?;
            w.end_tensor()?;
            Ok(Some(e.stats))
        }
        Target::FourBit {
            kind,
            block_size,
            double_quant,
        } => {
            let scheme = match kind {
                FourBit::Nf4 => Scheme::Nf4,
                FourBit::Fp4 => Scheme::Fp4,
            };
            let mut header = TensorHeader::new(&t.name, t.shape.clone(), scheme)
                .with_block_size(block_size as u64);
            if double_quant {
                header = header.with_double_quant(DEFAULT_NESTED_BLOCK);
            }
            w.begin_tensor(header)?;
            w.begin_section(SectionRole::Codes, SectionDtype::U4, n, n.div_ceil(2))?;
            let enc = FourBitEncoder::new(kind, block_size)?;
            let e = encode_tensor(src, t, &enc, None, progress, &mut |c| w.write(c))?;
            let nb = e.side.len() as u64;
            if double_quant {
                let dq = bnb::double_quantize(&e.side);
                w.write_section(SectionRole::AbsmaxCodes, SectionDtype::U8, nb, &dq.codes)?;
                w.write_section(
                    SectionRole::NestedAbsmax,
                    SectionDtype::F32,
                    dq.nested_absmax.len() as u64,
                    &f32_bytes(&dq.nested_absmax),
                )?;
                w.set_absmax_offset(dq.offset)?;
            } else {
                w.write_section(
                    SectionRole::Absmax,
                    SectionDtype::F32,
                    nb,
                    &f32_bytes(&e.side),
                )?;
            }
            w.end_tensor()?;
            Ok(Some(e.stats))
        }
    }
}

fn data_dtype(s: Scheme) -> SectionDtype {
    match s {
        Scheme::F16 => SectionDtype::F16,
        Scheme::BF16 => SectionDtype::BF16,
        Scheme::F32 => SectionDtype::F32,
        other => SectionDtype::Block(other),
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

/// Decodes one QNAT tensor to f32 (`out.len()` = its elements).
pub fn dequantize(index: &QnatIndex, data: &[u8], t: &TensorEntry, out: &mut [f32]) -> Result<()> {
    let section = |role| -> Result<&[u8]> {
        let s = t
            .section(role)
            .ok_or_else(|| invalid!("tensor {}: no {role} section", t.name))?;
        index.section_data(data, s)
    };
    if t.section(SectionRole::ZeroPoints).is_some() {
        bail!(
            "tensor {}: zero points (migrated qlora-rs asymmetric NF4) are not supported by dequantize yet",
            t.name
        );
    }
    match t.scheme {
        Scheme::Nf4 | Scheme::Fp4 => {
            let kind = if t.scheme == Scheme::Nf4 {
                FourBit::Nf4
            } else {
                FourBit::Fp4
            };
            let bs = t.block_size as usize;
            if !bnb::is_valid_block_size(bs) {
                bail!(
                    "tensor {}: block size {bs} is not supported by dequantize",
                    t.name
                );
            }
            let absmax = if t.double_quant {
                let codes = section(SectionRole::AbsmaxCodes)?.to_vec();
                let nested = f32s(section(SectionRole::NestedAbsmax)?);
                let dq = bnb::DoubleQuant {
                    codes,
                    nested_absmax: nested,
                    offset: t.absmax_offset.unwrap_or(0.0),
                    nested_block: t.nested_block_size.unwrap_or(DEFAULT_NESTED_BLOCK) as usize,
                };
                let mut a = vec![0f32; dq.codes.len()];
                bnb::double_dequantize(&dq, &mut a);
                a
            } else {
                f32s(section(SectionRole::Absmax)?)
            };
            bnb::dequantize_4bit(
                kind,
                section(SectionRole::Codes)?,
                &absmax,
                bs,
                out.len(),
                out,
            );
            Ok(())
        }
        s => {
            let ty = ggml_of(s).ok_or_else(|| invalid!("scheme {s} cannot be decoded"))?;
            crate::quant::decode(
                crate::formats::TensorType::Ggml(ty),
                section(SectionRole::Data)?,
                out,
            )
        }
    }
}

//! The QNAT pipeline: writing QNAT v2 through the shared encoder (`export-native`,
//! `quantize --format qnat`: [`export`]), migrating qlora-rs's QNAT files (its v1 and its
//! version 2, [`migrate_v1`]), and reading QNAT (ours or qlora-rs's) back to f32
//! safetensors (`export-native --dequantize`: [`dequantize_file`]).
//!
//! Float tensors of two or more dimensions get the weight target; 1-D tensors keep their
//! float type; tensors already in a ggml block type (GGUF input) are repacked byte for
//! byte ([`choose`]).
//!
//! Per tensor the caller picks a [`Target`]: a 4-bit scheme (NF4/FP4, codes streamed
//! through [`encode_tensor`], absmax kept as side values and written after, optionally
//! double-quantized), a ggml block or float scheme (encoded row by row), or a lossless
//! repack of bytes already in that scheme (quantized GGUF tensors).

use super::encode::{FourBitEncoder, GgmlEncoder};
use super::report::{Dequantized, Migrated, Outcome, Report};
use super::{encode_tensor, ErrorStats, RunOptions};
use crate::formats::atomic::{file_sha256, hex, AtomicFile, Mode};
use crate::formats::ggml_type::GgmlType;
use crate::formats::qnat::qlora::ScalesChoice;
use crate::formats::qnat::{
    self, ComputeDtype, ModelInfo, QnatIndex, QnatWriter, Scheme, SectionDtype, SectionRole,
    SourceDigest, TensorEntry, TensorHeader, DEFAULT_NESTED_BLOCK,
};
use crate::formats::safetensors_writer::{header_estimate, SafetensorsWriter, StTensor};
use crate::formats::{f32_le_bytes, Format, SourceFile, TensorInfo, TensorSource};
use crate::model::ModelConfig;
use crate::quant::bnb::{self, FourBit};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Instant;

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

/// Tool string recorded in QNAT files.
pub fn tool() -> String {
    format!("qforge {}", env!("CARGO_PKG_VERSION"))
}

impl From<crate::cli::ComputeDtype> for ComputeDtype {
    fn from(c: crate::cli::ComputeDtype) -> ComputeDtype {
        match c {
            crate::cli::ComputeDtype::F32 => ComputeDtype::F32,
            crate::cli::ComputeDtype::F16 => ComputeDtype::F16,
            crate::cli::ComputeDtype::Bf16 => ComputeDtype::Bf16,
        }
    }
}

/// What one source tensor becomes when float weights get `weights`, and why.
pub fn choose(t: &TensorInfo, weights: Target) -> Result<(Target, &'static str)> {
    let ggml =
        t.ty.as_ggml()
            .ok_or_else(|| invalid!("tensor {}: {} cannot be stored in QNAT", t.name, t.ty))?;
    if !ggml.is_float() {
        return match scheme_of(ggml) {
            Some(s) => Ok((Target::Repack(s), "repacked losslessly")),
            None => bail_invalid!("tensor {}: {ggml} has no QNAT scheme", t.name),
        };
    }
    let keep = match ggml {
        GgmlType::F16 => Scheme::F16,
        GgmlType::BF16 => Scheme::BF16,
        _ => Scheme::F32,
    };
    let kept = |why| {
        if scheme_of(ggml) == Some(keep) {
            Ok((Target::Repack(keep), why))
        } else {
            Ok((Target::Encode(keep), why))
        }
    };
    if t.shape.len() < 2 {
        return kept("kept: 1-D");
    }
    if let Target::Encode(s) = weights {
        let block = s.fixed_block_size().unwrap_or(1);
        if !(*t.shape.last().unwrap_or(&0)).is_multiple_of(block) {
            // llama.cpp's fallback table for rows that do not fill a block.
            let from = GgmlType::try_from(s).expect("ggml scheme");
            return match crate::quant::mix::fallback_type(from).and_then(scheme_of) {
                Some(f)
                    if t.shape
                        .last()
                        .unwrap_or(&0)
                        .is_multiple_of(f.fixed_block_size().unwrap_or(1)) =>
                {
                    Ok((
                        Target::Encode(f),
                        "fallback: row not a multiple of the block",
                    ))
                }
                _ => kept("kept: row not a multiple of the block"),
            };
        }
    }
    Ok((weights, "weight"))
}

/// Name, architecture (the input's own `general.architecture`, see [`ModelConfig::from_gguf`]),
/// string metadata and source digests of the source.
pub fn model_info(
    src: &TensorSource,
    name: Option<&str>,
    dtype: ComputeDtype,
) -> Result<ModelInfo> {
    let arch = ModelConfig::from_gguf(&src.metadata, None)
        .arch
        .unwrap_or_default();
    let stem = src
        .path
        .file_name()
        .map(|s| {
            s.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let mut kv = BTreeMap::new();
    for (k, v) in &src.metadata {
        if let crate::formats::gguf::Value::String(_) = v {
            kv.insert(k.clone(), v.as_str().unwrap_or_default().into_owned());
        }
    }
    let source = src
        .files
        .iter()
        .map(|f| {
            Ok(SourceDigest {
                name: file_name(&f.path),
                bytes: f.len(),
                sha256: file_sha256(&f.path)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(ModelInfo {
        name: name.map(str::to_string).unwrap_or(stem),
        architecture: arch,
        compute_dtype: dtype,
        tool: tool(),
        source,
        kv,
        gguf: if src.format == Format::Gguf {
            src.metadata.clone()
        } else {
            Vec::new()
        },
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportJob<'a> {
    /// Input as the user gave it.
    pub input: &'a Path,
    /// Output file.
    pub output: &'a Path,
    /// The type name the report shows (`NF4`, `Q4_K`, ...).
    pub qtype: String,
    /// Target of float weight tensors.
    pub weights: Target,
    /// Model name recorded (default: the input's file name up to its first dot).
    pub model_name: Option<&'a str>,
    /// Compute dtype recorded.
    pub compute_dtype: ComputeDtype,
    /// Whether a QNAT v2 input is an error (`export-native`) or re-encoded (`quantize`).
    pub refuse_qnat: bool,
    /// Threads, progress bar, non-finite inputs.
    pub run: RunOptions,
}

/// Exports `job.input` as QNAT v2 to `job.output` (atomically); the report.
pub fn export(job: &ExportJob<'_>) -> Result<Report> {
    let src = TensorSource::open(job.input)?;
    if job.refuse_qnat && src.format == Format::Qnat {
        bail_invalid!(
            "{} is already QNAT v2; use --dequantize to get f32 back",
            job.input.display()
        );
    }
    if let Target::FourBit {
        kind, block_size, ..
    } = job.weights
    {
        FourBitEncoder::new(kind, block_size)?;
    }
    let model = model_info(&src, job.model_name, job.compute_dtype)?;
    let mut report = Report::new(
        job.input,
        Some(job.output),
        job.qtype.clone(),
        false,
        job.run.threads,
    );
    let started = Instant::now();
    let total: u64 = src.tensors.iter().map(TensorInfo::elements).sum();
    let bar = super::progress_bar(total, job.run.quiet);
    let mode = Mode {
        hash: job.run.digest,
        sync: true,
    };
    let file = AtomicFile::create_with(job.output, mode)?;
    let target = |t: &TensorInfo| choose(t, job.weights);
    let (file, outcomes): (AtomicFile, Vec<Outcome>) =
        super::with_threads(job.run.threads, || write(&src, &target, model, file, &bar))??;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    report.push_outcomes(&src.tensors, &outcomes, job.run.allow_nonfinite)?;
    let digest = if job.run.digest {
        Some(hex(&file.commit().with_context(|| {
            format!("writing {}", job.output.display())
        })?))
    } else {
        file.commit_unhashed()
            .with_context(|| format!("writing {}", job.output.display()))?;
        None
    };
    let file_bytes = std::fs::metadata(job.output)?.len();
    report.finish(file_bytes, seconds, digest);
    Ok(report)
}

/// Whether `path` starts like a qlora-rs QNAT file (its v1 or its version 2, told from
/// qforge's v2 by the header bytes: [`qnat::qlora::detect`]); reads 12 bytes, not the file.
pub fn is_v1(path: &Path) -> bool {
    let mut head = [0u8; 12];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && qnat::qlora::detect(&head).is_some()
}

/// Migrates the qlora-rs QNAT file `input` to v2 at `output` (atomically), with the
/// double-quantized tensors' `scales` as absmax.
pub fn migrate_v1(input: &Path, output: &Path, scales: ScalesChoice) -> Result<Migrated> {
    let file = SourceFile::open(input)?;
    let data = file.data();
    let source = vec![SourceDigest {
        name: file_name(input),
        bytes: file.len(),
        sha256: file_sha256(input)?,
    }];
    let mut out = AtomicFile::create(output)?;
    qnat::qlora::migrate_v1_file(data, &mut out, &tool(), source, scales)
        .with_context(|| input.display().to_string())?;
    out.flush()?;
    Ok(Migrated {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        sha256: hex(&out.commit()?),
    })
}

/// Every tensor of the QNAT file `input` (qforge's v2, or a qlora-rs file decoded with
/// `scales` as qlora-rs decodes it) as f32, written as safetensors to `output`
/// (atomically).
pub fn dequantize_file(input: &Path, output: &Path, scales: ScalesChoice) -> Result<Dequantized> {
    if is_v1(input) {
        return dequantize_qlora(input, output, scales);
    }
    let src = TensorSource::open(input)?;
    let Some(index) = src.qnat.as_ref() else {
        bail_invalid!(
            "--dequantize takes a QNAT file, {} is {}",
            input.display(),
            src.format.name()
        );
    };
    let data = src.files[0].data();
    let tensors: Vec<(String, Vec<u64>)> = index
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    write_f32_safetensors(input, output, &tensors, |i, out| {
        let t = &index.tensors[i];
        dequantize(index, data, t, out).with_context(|| format!("tensor {}", t.name))
    })
}

fn dequantize_qlora(input: &Path, output: &Path, scales: ScalesChoice) -> Result<Dequantized> {
    let file = SourceFile::open(input)?;
    let data = file.data();
    let v1 = qnat::qlora::read_v1(data).with_context(|| input.display().to_string())?;
    let tensors: Vec<(String, Vec<u64>)> = v1
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    write_f32_safetensors(input, output, &tensors, |i, out| {
        v1.tensors[i].decode(data, scales, out)
    })
}

/// Writes `tensors` (name, shape) as f32 safetensors, `fill(i, out)` giving tensor `i`'s
/// values; one tensor is held at a time.
fn write_f32_safetensors(
    input: &Path,
    output: &Path,
    tensors: &[(String, Vec<u64>)],
    mut fill: impl FnMut(usize, &mut [f32]) -> Result<()>,
) -> Result<Dequantized> {
    let names: Vec<(usize, usize)> = tensors.iter().map(|(n, s)| (n.len(), s.len())).collect();
    let mut file = AtomicFile::create(output)?;
    let mut w = SafetensorsWriter::new(
        &mut file,
        header_estimate(&names, &Default::default()),
        Default::default(),
    )?;
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let n: u64 = shape.iter().product();
        let mut out = vec![0f32; usize::try_from(n)?];
        fill(i, &mut out)?;
        w.tensor(
            StTensor {
                name: name.clone(),
                dtype: "F32",
                shape: shape.clone(),
            },
            &f32_le_bytes(&out),
        )?;
    }
    w.finish()?;
    Ok(Dequantized {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        tensors: tensors.len(),
        sha256: hex(&file.commit()?),
    })
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
            super::copy_tensor(src, t, &mut |chunk: &[u8]| w.write(chunk))?;
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
            let e = encode_tensor(src, t, &enc, None, progress, &mut |c: &[u8]| w.write(c))?;
            w.end_tensor()?;
            Ok(Some(e.stats))
        }
        Target::FourBit {
            kind,
            block_size,
            double_quant,
        } => {
            let scheme = Scheme::from(kind);
            let mut header = TensorHeader::new(&t.name, t.shape.clone(), scheme)
                .with_block_size(block_size as u64);
            if double_quant {
                header = header.with_double_quant(DEFAULT_NESTED_BLOCK);
            }
            w.begin_tensor(header)?;
            w.begin_section(SectionRole::Codes, SectionDtype::U4, n, n.div_ceil(2))?;
            let enc = FourBitEncoder::new(kind, block_size)?;
            let e = encode_tensor(src, t, &enc, None, progress, &mut |c: &[u8]| w.write(c))?;
            let nb = e.side.len() as u64;
            if double_quant {
                let dq = bnb::double_quantize(&e.side);
                w.write_section(SectionRole::AbsmaxCodes, SectionDtype::U8, nb, &dq.codes)?;
                w.write_section(
                    SectionRole::NestedAbsmax,
                    SectionDtype::F32,
                    dq.nested_absmax.len() as u64,
                    &f32_le_bytes(&dq.nested_absmax),
                )?;
                w.set_absmax_offset(dq.offset)?;
            } else {
                w.write_section(
                    SectionRole::Absmax,
                    SectionDtype::F32,
                    nb,
                    &f32_le_bytes(&e.side),
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
    match t.scheme {
        Scheme::Nf4 | Scheme::Fp4 => {
            let kind = if t.scheme == Scheme::Nf4 {
                FourBit::Nf4
            } else {
                FourBit::Fp4
            };
            let bs = usize::try_from(t.block_size)?;
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
            let codes = section(SectionRole::Codes)?;
            let zero_points = t
                .section(SectionRole::ZeroPoints)
                .map(|s| index.section_data(data, s).map(f32s))
                .transpose()?;
            match zero_points {
                None if bnb::is_valid_block_size(bs) => {
                    bnb::dequantize_4bit(kind, codes, &absmax, bs, out.len(), out)
                }
                zp => dequantize_4bit_any(kind, codes, &absmax, zp.as_deref(), bs, out),
            }
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

/// 4-bit values for any block size, with optional per-block zero points:
/// `(table[code] + zero_point) * absmax` (`table[code] * absmax` without), codes packed
/// contiguously, high nibble first (the bitsandbytes order QNAT v2 stores).
fn dequantize_4bit_any(
    kind: FourBit,
    codes: &[u8],
    absmax: &[f32],
    zero_points: Option<&[f32]>,
    block_size: usize,
    out: &mut [f32],
) {
    let table = bnb::code_table(kind);
    for (i, o) in out.iter_mut().enumerate() {
        let byte = codes[i / 2];
        let code = usize::from(if i % 2 == 0 { byte >> 4 } else { byte & 0x0f });
        let b = i / block_size;
        *o = match zero_points {
            Some(z) => (table[code] + z[b]) * absmax[b],
            None => table[code] * absmax[b],
        };
    }
}

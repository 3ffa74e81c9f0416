//! `qforge quantize FOLDER`: the converted source written as one GGUF.
//!
//! `-t F32|F16|BF16|Q8_0` gives convert_hf_to_gguf.py's `--outtype` file; any other type
//! or mix gives what llama-quantize writes from convert's BF16 file (F32 when the
//! checkpoint is F16 or F32): the same metadata with `general.quantization_version` and
//! `general.file_type` moved to the end, tensors in llama.cpp's loader order, each
//! quantized from the checkpoint's values.

use super::arch::{self, Kv};
use super::card;
use super::metadata::{self, ParamCount};
use super::model::{Converted, Planned};
use super::vocab::KvList;
use crate::formats::ggml_type::GgmlType;
use crate::formats::gguf::writer::{GgufLayout, TensorSpec};
use crate::formats::gguf::Value;
use crate::pipeline::encode::GgmlEncoder;
use crate::pipeline::gguf::QNT_VERSION;
use crate::pipeline::llama_file;
use crate::pipeline::report::{check_finite, Report, TensorReport};
use crate::pipeline::{self, ErrorStats, RunOptions};
use crate::quant::imatrix::Imatrix;
use crate::quant::mix::{self, Mix, ModelFacts, Planner};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use regex::Regex;
use std::path::Path;

/// What `-t` asks for on a folder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// convert's `--outtype` (F32, F16, BF16 or Q8_0).
    Outtype(GgmlType),
    /// A llama-quantize type or mix over convert's output.
    Mix(Mix),
}

impl Target {
    /// Parses `-t` (default Q4_K_M); other names go to `parse_mix`.
    pub fn parse(name: Option<&str>, parse_mix: fn(&str) -> Result<Mix>) -> Result<Target> {
        let name = name.unwrap_or("Q4_K_M");
        Ok(match name.to_ascii_uppercase().as_str() {
            "F32" => Target::Outtype(GgmlType::F32),
            "F16" => Target::Outtype(GgmlType::F16),
            "BF16" => Target::Outtype(GgmlType::BF16),
            "Q8_0" => Target::Outtype(GgmlType::Q8_0),
            "COPY" => crate::bail_invalid!(
                "-t COPY copies a GGUF file's tensors as they are; a Hugging Face folder is converted with -t F32, F16, BF16 or Q8_0"
            ),
            _ => Target::Mix(parse_mix(name)?),
        })
    }

    /// Normalized name for the report.
    pub fn name(self) -> String {
        match self {
            Target::Outtype(t) => t.name().to_string(),
            Target::Mix(m) => m.name().to_string(),
        }
    }
}

/// `LlamaFileType` of a convert outtype.
fn outtype_file_type(t: GgmlType) -> u32 {
    match t {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        _ => 32, // BF16
    }
}

/// convert's per-tensor type for `--outtype ftype`: forced F32 tensors, then the
/// outtype, F16 where Q8_0 cannot hold the rows. Returns the type and why.
pub fn outtype_rule(t: &Planned, ftype: GgmlType) -> (GgmlType, &'static str) {
    if arch::forced_f32(&t.name, t.shape.len()) {
        return (GgmlType::F32, "convert: F32 (1-D, norm or bias)");
    }
    let row = *t.shape.last().expect("shape");
    if !row.is_multiple_of(ftype.block_size()) {
        return (
            GgmlType::F16,
            "convert: F16 fallback (row not whole blocks)",
        );
    }
    (ftype, "convert: outtype")
}

/// One output tensor's plan.
struct Job<'a> {
    t: &'a Planned,
    /// What convert writes for it (at the outtype, or BF16/F32 under a mix).
    present: GgmlType,
    out: GgmlType,
    reason: String,
    imatrix: Option<&'a [f32]>,
}

/// A folder conversion (`qforge quantize FOLDER`).
#[derive(Debug, Clone)]
pub struct ConvertJob<'a> {
    /// Input as the user gave it (the folder, or a safetensors file or index in it).
    pub input: &'a Path,
    /// The model folder.
    pub dir: &'a Path,
    /// Output file (required unless `dry_run`).
    pub output: Option<&'a Path>,
    /// Plan and sizes only.
    pub dry_run: bool,
    /// What `-t` asks for.
    pub target: Target,
    /// llama-quantize's type options (a mix target only).
    pub mix_opts: Option<mix::Options>,
    /// Importance matrix file with the include/exclude filters (a mix target only).
    pub imatrix: Option<(&'a Path, &'a [Regex], &'a [Regex])>,
    /// `--name`.
    pub name: Option<&'a str>,
    /// `--metadata FILE`.
    pub metadata: Option<&'a Path>,
    /// `--no-vocab`.
    pub no_vocab: bool,
    /// Threads, progress bar, non-finite inputs.
    pub run: RunOptions,
}

/// Converts (and, for a mix, quantizes) a Hugging Face folder into one GGUF; invalid
/// input when the output is the input file.
pub fn convert(job: &ConvertJob<'_>) -> Result<Report> {
    if let Some(out) = job.output {
        if out.exists() && pipeline::gguf::same_file(out, job.input) {
            bail_invalid!("output {} is the input file", out.display());
        }
    }
    let conv = Converted::open(job.input, job.dir)?;
    let imatrix = pipeline::gguf::load_imatrix(job.imatrix)?;
    let base = match job.target {
        Target::Outtype(t) => t,
        Target::Mix(_) if conv.guessed_type() == GgmlType::BF16 => GgmlType::BF16,
        Target::Mix(_) => GgmlType::F32,
    };
    let jobs = plan(&conv, job, base, imatrix.as_ref())?;
    let meta = metadata(&conv, job, base, imatrix.as_ref())?;
    let specs: Vec<TensorSpec> = jobs
        .iter()
        .map(|j| TensorSpec {
            name: j.t.name.clone(),
            ne: j.t.ne(),
            ty: j.out,
        })
        .collect();
    let layout = GgufLayout::new(&meta, &specs)?;
    let mut report = Report::new(
        job.input,
        job.output,
        job.target.name(),
        job.dry_run,
        job.run.threads,
    );
    for (j, &(_, bytes)) in jobs.iter().zip(&layout.tensors) {
        let mut row = TensorReport::new(
            j.t.source.as_ref().unwrap_or(&generated_info(j.t)),
            &j.t.name,
            j.out.to_string(),
            bytes,
            j.reason.clone(),
        );
        row.shape = j.t.shape.clone();
        row.elements = j.t.elements();
        report.push(if j.out.is_float() {
            row
        } else {
            row.encoded(None)
        });
    }
    report.write_or_plan(
        job.dry_run,
        job.output,
        layout.file_size,
        job.run.threads,
        |out| write(&conv, &jobs, &layout, out, job.run),
    )
}

/// A stand-in source row for a generated tensor (F32, its own shape).
fn generated_info(t: &Planned) -> crate::formats::TensorInfo {
    crate::formats::TensorInfo {
        name: t.name.clone(),
        ty: crate::formats::TensorType::Ggml(GgmlType::F32),
        shape: t.shape.clone(),
        file: 0,
        offset: 0,
        bytes: t.elements() * 4,
    }
}

fn plan<'a>(
    conv: &'a Converted,
    job: &ConvertJob<'_>,
    base: GgmlType,
    imatrix: Option<&'a Imatrix>,
) -> Result<Vec<Job<'a>>> {
    let (mix, mut opts) = match (job.target, &job.mix_opts) {
        (Target::Mix(m), Some(o)) => (m, o.clone()),
        (Target::Mix(m), None) => (m, mix::Options::default()),
        (Target::Outtype(_), _) => {
            return Ok(conv
                .tensors
                .iter()
                .map(|t| {
                    let (out, why) = outtype_rule(t, base);
                    Job {
                        t,
                        present: out,
                        out,
                        reason: why.to_string(),
                        imatrix: None,
                    }
                })
                .collect());
        }
    };
    opts.has_imatrix = imatrix.is_some();
    let mut order: Vec<&Planned> = conv.tensors.iter().collect();
    order.sort_by(|a, b| mix::weight_name_order(&a.name, &b.name));
    let facts = model_facts(conv)?;
    let shapes: Vec<(String, Vec<u64>)> = order.iter().map(|t| (t.name.clone(), t.ne())).collect();
    let mut planner = Planner::new(mix, facts, opts, &shapes);
    let mut jobs = Vec::with_capacity(order.len());
    for t in order {
        let (present, _) = outtype_rule(t, base);
        let choice = planner
            .try_choose(&t.name, &t.ne())
            .map_err(|e| invalid!("{e}"))?;
        let out = if choice.quantize { choice.ty } else { present };
        let weights = match (out != present, imatrix) {
            (true, Some(m)) => m.entries.get(&t.name).map(Vec::as_slice),
            _ => None,
        };
        if out != present && choice.requires_imatrix && weights.is_none() {
            bail_invalid!(
                "tensor {}: {out} needs importance-matrix data (as in llama.cpp); pass --imatrix with an entry for it",
                t.name
            );
        }
        if let Some(w) = weights {
            let row = t.ne()[0] as usize;
            if t.shape.len() > 2 || w.len() != row {
                bail_invalid!(
                    "imatrix entry {} has {} values, tensor rows have {row}",
                    t.name,
                    w.len()
                );
            }
        }
        jobs.push(Job {
            t,
            present,
            out,
            reason: choice.reason.to_string(),
            imatrix: weights,
        });
    }
    Ok(jobs)
}

/// The mix rules' model facts, from config.json.
fn model_facts(conv: &Converted) -> Result<ModelFacts> {
    let c = &conv.cfg;
    let n = |keys: &[&str]| -> Result<u32> { Ok(c.opt_u64(keys)?.unwrap_or(0) as u32) };
    let n_head = n(&["num_attention_heads", "n_head", "n_heads"])?;
    let n_head_kv = match n(&["num_key_value_heads", "n_kv_heads"])? {
        0 => n_head,
        k => k,
    };
    Ok(ModelFacts {
        arch: conv.arch.gguf_arch.to_string(),
        n_layer: n(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?,
        n_head,
        n_head_kv,
        n_expert: n(&["num_local_experts", "num_experts", "n_routed_experts"])?,
        llm_type_70b: None,
    })
}

/// Reads a small JSON object file; a missing file is `None`, an invalid one an error
/// unless `lenient` (generation_config.json, which gguf-py ignores when broken).
fn json_object(
    path: &Path,
    lenient: bool,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Ok(text) = std::fs::read(path) else {
        return Ok(None);
    };
    match serde_json::from_slice(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        _ if lenient => Ok(None),
        _ => bail_invalid!("{} is not a JSON object", path.display()),
    }
}

/// The metadata in convert's order (then llama-quantize's moves for a mix).
fn metadata(
    conv: &Converted,
    job: &ConvertJob<'_>,
    base: GgmlType,
    imatrix: Option<&Imatrix>,
) -> Result<Kv> {
    let dir = &conv.dir;
    let card = match std::fs::read(dir.join("README.md")) {
        Ok(bytes) => {
            let bytes = &bytes[..bytes.len().min(card::MAX_CARD_BYTES)];
            card::front_matter(&String::from_utf8_lossy(bytes))
        }
        Err(_) => Default::default(),
    };
    let overrides = match job.metadata {
        Some(path) => json_object(path, false)?
            .ok_or_else(|| invalid!("--metadata {}: cannot read the file", path.display()))?,
        None => Default::default(),
    };
    let dir_name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let inputs = metadata::Inputs {
        card,
        hparams: conv.raw_hparams.clone(),
        generation: json_object(&dir.join("generation_config.json"), true)?.unwrap_or_default(),
        overrides,
        name: job.name.map(str::to_string),
        dir_name,
        params: ParamCount::of(
            conv.tensors
                .iter()
                .map(|t| (t.name.as_str(), t.shape.as_slice())),
        ),
    };
    let gguf_arch = conv.arch.gguf_arch;
    let mut kv: Kv = vec![("general.architecture".into(), Value::string(gguf_arch))];
    kv.extend(conv.early_kv.iter().cloned());
    kv.extend(metadata::general_keys(&inputs));
    kv.extend((conv.arch.params)(
        &conv.cfg,
        gguf_arch,
        outtype_file_type(base),
    )?);
    kv.push((
        "general.quantization_version".into(),
        Value::U32(QNT_VERSION),
    ));
    if !job.no_vocab {
        // set_vocab writes into the same GGUFWriter: a key already there keeps its place.
        let mut all = KvList::from(kv);
        all.extend((conv.arch.vocab)(&conv.cfg, dir)?);
        kv = all.into_vec();
    }
    if let Target::Mix(m) = job.target {
        // llama-quantize: gguf_set_val_u32 removes the key and appends it.
        kv.retain(|(k, _)| k != "general.quantization_version" && k != "general.file_type");
        kv.push((
            "general.quantization_version".into(),
            Value::U32(QNT_VERSION),
        ));
        kv.push(("general.file_type".into(), Value::U32(m.file_type())));
        if let (Some(m), Some((path, _, _))) = (imatrix, job.imatrix) {
            for (k, v) in llama_file::imatrix_keys(path, m) {
                llama_file::set_key(&mut kv, &k, v);
            }
        }
    }
    Ok(kv)
}

fn write(
    conv: &Converted,
    jobs: &[Job<'_>],
    layout: &GgufLayout,
    out: &Path,
    run: RunOptions,
) -> Result<pipeline::gguf::Written> {
    let total: u64 = jobs.iter().map(|j| j.t.elements()).sum();
    pipeline::gguf::stream_tensors(out, layout, jobs, total, run, |j, bar, write| {
        bar.set_message(j.t.name.clone());
        let s = encode(conv, j, bar, write).with_context(|| format!("tensor {}", j.t.name))?;
        conv.release(j.t);
        let s = (!j.out.is_float()).then_some(s);
        check_finite(&j.t.hf_name, s, run.allow_nonfinite)?;
        Ok(s)
    })
}

/// Encodes one tensor through the shared streaming encoder ([`pipeline::encode_values`]),
/// reading its rows through the conversion's transforms.
fn encode(
    conv: &Converted,
    j: &Job<'_>,
    bar: &ProgressBar,
    write: &mut dyn pipeline::Sink,
) -> Result<ErrorStats> {
    if j.out.codec().is_none() {
        bail_invalid!("quantizing to {} is not implemented", j.out);
    }
    let enc = GgmlEncoder::new(j.out)?;
    let present = j.present.codec().expect("float types have codecs");
    let round_present = j.present != j.t.source_type() && j.out != j.present;
    let row_len = (*j.t.shape.last().expect("shape") as usize).max(1);
    let fill = |first: usize, x: &mut [f32]| -> Result<()> {
        conv.read_rows(j.t, (first / row_len) as u64, x)?;
        if round_present {
            // The value convert's file holds for this element.
            let mut b = vec![0u8; x.len() * j.present.type_size() as usize];
            (present.quantize_row)(x, &mut b, None);
            (present.dequantize)(&b, x);
        }
        Ok(())
    };
    let encoded = pipeline::encode_values(
        &j.t.name,
        &j.t.shape,
        &fill,
        &enc,
        j.imatrix,
        bar,
        write,
        &mut |_| {},
    )?;
    Ok(encoded.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_outtypes_and_mixes() {
        let mix = |n: &str| Mix::from_name(n).ok_or_else(|| invalid!("unknown {n}"));
        let p = |n| Target::parse(n, mix).unwrap();
        assert_eq!(p(Some("bf16")), Target::Outtype(GgmlType::BF16));
        assert_eq!(p(Some("Q8_0")), Target::Outtype(GgmlType::Q8_0));
        assert!(matches!(p(None), Target::Mix(_)));
        assert!(Target::parse(Some("Q9_X"), mix).is_err());
    }
}

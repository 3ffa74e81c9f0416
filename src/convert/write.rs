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
use super::vocab_hook;
use crate::cli::QuantizeArgs;
use crate::commands::quantize::{self as q, Report, TensorReport, Totals, SCHEMA};
use crate::formats::atomic::{hex, AtomicFile};
use crate::formats::ggml_type::GgmlType;
use crate::formats::gguf::writer::{GgufLayout, GgufStream, TensorSpec};
use crate::formats::gguf::Value;
use crate::pipeline::{self, ErrorStats};
use crate::quant::imatrix::Imatrix;
use crate::quant::mix::{self, Mix, ModelFacts, Planner};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::path::Path;
use std::time::Instant;

/// Output bytes per parallel chunk.
const CHUNK_BYTES: usize = 8 << 20;

/// `general.quantization_version` (`GGML_QUANT_VERSION`).
const QNT_VERSION: u32 = 2;

/// What `-t` asks for on a folder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// convert's `--outtype` (F32, F16, BF16 or Q8_0).
    Outtype(GgmlType),
    /// A llama-quantize type or mix over convert's output.
    Mix(Mix),
}

impl Target {
    /// Parses `-t` (default Q4_K_M).
    pub fn parse(name: Option<&str>) -> Result<Target> {
        let name = name.unwrap_or("Q4_K_M");
        Ok(match name.to_ascii_uppercase().as_str() {
            "F32" => Target::Outtype(GgmlType::F32),
            "F16" => Target::Outtype(GgmlType::F16),
            "BF16" => Target::Outtype(GgmlType::BF16),
            "Q8_0" => Target::Outtype(GgmlType::Q8_0),
            _ => Target::Mix(q::parse_type(name)?),
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

/// llama.cpp's loader order (`weight_name_comparer`): tensors outside blocks first,
/// then by block number, then by name.
pub fn loader_order(a: &str, b: &str) -> Ordering {
    let layer = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .map(|r| {
                let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(-1)
            })
            .unwrap_or(-1)
    };
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
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

/// Runs `quantize` on a Hugging Face folder.
pub fn run(args: &QuantizeArgs, dir: &Path) -> Result<()> {
    let target = Target::parse(args.qtype.as_deref())?;
    if let Some(out) = &args.output {
        if out.exists() && out.canonicalize().ok() == args.input.canonicalize().ok() {
            bail_invalid!("output {} is the input", out.display());
        }
    }
    let conv = Converted::open(&args.input, dir)?;
    let imatrix = match &args.imatrix {
        Some(path) => {
            let include = q::parse_regexes("--include-weights", &args.include_weights)?;
            let exclude = q::parse_regexes("--exclude-weights", &args.exclude_weights)?;
            let mut m = Imatrix::load(path)?;
            m.filter(&include, &exclude);
            Some(m)
        }
        None => None,
    };
    let base = match target {
        Target::Outtype(t) => t,
        Target::Mix(_) if conv.guessed_type() == GgmlType::BF16 => GgmlType::BF16,
        Target::Mix(_) => GgmlType::F32,
    };
    let jobs = plan(&conv, target, base, args, imatrix.as_ref())?;
    let meta = metadata(&conv, target, base, args)?;

    let specs: Vec<TensorSpec> = jobs
        .iter()
        .map(|j| TensorSpec {
            name: j.t.name.clone(),
            ne: j.t.ne(),
            ty: j.out,
        })
        .collect();
    let layout = GgufLayout::new(&meta, &specs)?;
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let mut report = Report {
        schema: SCHEMA,
        input: args.input.display().to_string(),
        output: args.output.as_ref().map(|p| p.display().to_string()),
        qtype: target.name(),
        dry_run: args.dry_run,
        threads,
        tensors: jobs
            .iter()
            .zip(&layout.tensors)
            .map(|(j, &(_, bytes))| TensorReport {
                name: j.t.name.clone(),
                shape: j.t.shape.clone(),
                in_type: j.t.source_type().to_string(),
                out_type: j.out.to_string(),
                in_bytes: j.t.source.as_ref().map_or(j.t.elements() * 4, |s| s.bytes),
                out_bytes: bytes,
                reason: j.reason.clone(),
                rel_rmse: None,
                non_finite: None,
            })
            .collect(),
        totals: Totals::default(),
        sha256: None,
    };
    if !args.dry_run {
        let out = args
            .output
            .as_deref()
            .expect("clap requires -o without --dry-run");
        let started = Instant::now();
        let (stats, digest) =
            pipeline::with_threads(args.threads, || write(&conv, &jobs, &layout, out, args))??;
        report.totals.seconds = started.elapsed().as_secs_f64();
        for (r, s) in report.tensors.iter_mut().zip(&stats) {
            r.rel_rmse = s.map(|s| s.rel_rmse());
            r.non_finite = s.map(|s| s.non_finite);
        }
        report.sha256 = Some(hex(&digest));
    }
    let t = &mut report.totals;
    t.tensors = jobs.len();
    t.quantized = jobs.iter().filter(|j| !j.out.is_float()).count();
    t.elements = jobs.iter().map(|j| j.t.elements()).sum();
    t.in_bytes = report.tensors.iter().map(|r| r.in_bytes).sum();
    t.out_bytes = layout.tensors.iter().map(|&(_, b)| b).sum();
    t.file_bytes = layout.file_size;
    t.bits_per_weight = t.out_bytes as f64 * 8.0 / t.elements.max(1) as f64;
    if t.seconds > 0.0 {
        t.elements_per_second = t.elements as f64 / t.seconds;
    }
    q::print_report(&report, args.json)
}

fn plan<'a>(
    conv: &'a Converted,
    target: Target,
    base: GgmlType,
    args: &QuantizeArgs,
    imatrix: Option<&'a Imatrix>,
) -> Result<Vec<Job<'a>>> {
    let mix = match target {
        Target::Outtype(_) => {
            for (flag, set) in [
                ("--imatrix", args.imatrix.is_some()),
                ("--tensor-type", !args.tensor_type.is_empty()),
                ("--pure", args.pure),
                ("--output-tensor-type", args.output_tensor_type.is_some()),
                (
                    "--token-embedding-type",
                    args.token_embedding_type.is_some(),
                ),
                ("--leave-output-tensor", args.leave_output_tensor),
            ] {
                if set {
                    bail_invalid!(
                        "{flag} applies to quantized types; -t {} on a folder is convert's --outtype",
                        target.name()
                    );
                }
            }
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
        Target::Mix(m) => m,
    };
    let opts = mix::Options {
        pure: args.pure,
        output_tensor_type: args
            .output_tensor_type
            .as_deref()
            .map(|t| q::parse_ggml_type("--output-tensor-type", t))
            .transpose()?,
        token_embedding_type: args
            .token_embedding_type
            .as_deref()
            .map(|t| q::parse_ggml_type("--token-embedding-type", t))
            .transpose()?,
        leave_output_tensor: args.leave_output_tensor,
        overrides: q::parse_overrides(&args.tensor_type)?,
        has_imatrix: imatrix.is_some(),
    };
    let mut order: Vec<&Planned> = conv.tensors.iter().collect();
    order.sort_by(|a, b| loader_order(&a.name, &b.name));
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
fn metadata(conv: &Converted, target: Target, base: GgmlType, args: &QuantizeArgs) -> Result<Kv> {
    let dir = &conv.dir;
    let card = match std::fs::read(dir.join("README.md")) {
        Ok(bytes) => {
            let bytes = &bytes[..bytes.len().min(card::MAX_CARD_BYTES)];
            card::front_matter(&String::from_utf8_lossy(bytes))
        }
        Err(_) => Default::default(),
    };
    let overrides = match &args.metadata {
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
        name: args.name.clone(),
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
    if !args.no_vocab {
        let call = (conv.arch.vocab)(&conv.cfg, dir)?;
        for (k, v) in vocab_hook::tokenizer_keys(&call, dir)? {
            vocab_hook::set(&mut kv, &k, v);
        }
    }
    if let Target::Mix(m) = target {
        // llama-quantize: gguf_set_val_u32 removes the key and appends it.
        kv.retain(|(k, _)| k != "general.quantization_version" && k != "general.file_type");
        kv.push((
            "general.quantization_version".into(),
            Value::U32(QNT_VERSION),
        ));
        kv.push(("general.file_type".into(), Value::U32(m.file_type())));
    }
    Ok(kv)
}

fn write(
    conv: &Converted,
    jobs: &[Job<'_>],
    layout: &GgufLayout,
    out: &Path,
    args: &QuantizeArgs,
) -> Result<(Vec<Option<ErrorStats>>, [u8; 32])> {
    let total: u64 = jobs.iter().map(|j| j.t.elements()).sum();
    let bar = pipeline::progress_bar(total, args.json);
    let mut file = AtomicFile::create(out)?;
    let mut stream = GgufStream::start(&mut file, layout)?;
    let mut stats = Vec::with_capacity(jobs.len());
    for j in jobs {
        bar.set_message(j.t.name.clone());
        let s = encode(conv, j, &bar, &mut |chunk| stream.write_data(chunk))
            .with_context(|| format!("tensor {}", j.t.name))?;
        conv.release(j.t);
        if !j.out.is_float() && s.non_finite > 0 && !args.allow_nonfinite {
            bail_invalid!(
                "tensor {} has {} NaN or infinite values; pass --allow-nonfinite to quantize it anyway",
                j.t.hf_name,
                s.non_finite
            );
        }
        stats.push((!j.out.is_float()).then_some(s));
    }
    stream.finish()?;
    bar.finish_and_clear();
    let digest = file
        .commit()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok((stats, digest))
}

/// Encodes one tensor row by row, in parallel chunks of rows, streaming the bytes.
fn encode(
    conv: &Converted,
    j: &Job<'_>,
    bar: &ProgressBar,
    write: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<ErrorStats> {
    let codec = crate::quant::codec(j.out)
        .ok_or_else(|| invalid!("quantizing to {} is not implemented", j.out))?;
    let present = crate::quant::codec(j.present).expect("float types have codecs");
    let round_present = j.present != j.t.source_type() && j.out != j.present;
    let row_len = *j.t.shape.last().expect("shape") as usize;
    let rows = (j.t.elements() as usize) / row_len.max(1);
    let row_bytes = j
        .out
        .row_bytes(row_len as u64)
        .ok_or_else(|| invalid!("rows of {row_len} are not whole {} blocks", j.out))?
        as usize;
    let chunk_rows = (CHUNK_BYTES / row_bytes.max(1)).clamp(1, rows.max(1));
    let mut buf = vec![0u8; chunk_rows * row_bytes];
    let mut total = ErrorStats::default();
    let mut r0 = 0;
    while r0 < rows {
        let n = chunk_rows.min(rows - r0);
        let part = &mut buf[..n * row_bytes];
        let stats: Vec<ErrorStats> = part
            .par_chunks_mut(row_bytes)
            .enumerate()
            .map_init(
                || {
                    (
                        vec![0f32; row_len],
                        vec![0f32; row_len],
                        vec![0u8; row_len * 4],
                    )
                },
                |(x, y, tmp), (i, dst)| -> Result<ErrorStats> {
                    conv.read_rows(j.t, (r0 + i) as u64, x)?;
                    if round_present {
                        // The value convert's file holds for this element.
                        let b = &mut tmp[..row_len * j.present.type_size() as usize];
                        (present.quantize_row)(x, b, None);
                        (present.dequantize)(b, x);
                    }
                    (codec.quantize_row)(x, dst, j.imatrix);
                    let mut s = ErrorStats::default();
                    if !j.out.is_float() {
                        (codec.dequantize)(dst, y);
                        for (&a, &b) in x.iter().zip(y.iter()) {
                            if !a.is_finite() {
                                s.non_finite += 1;
                                continue;
                            }
                            let d = f64::from(a) - f64::from(b);
                            s.sum_sq_err += d * d;
                            s.sum_sq += f64::from(a) * f64::from(a);
                        }
                    }
                    Ok(s)
                },
            )
            .collect::<Result<_>>()?;
        for s in stats {
            total.sum_sq_err += s.sum_sq_err;
            total.sum_sq += s.sum_sq;
            total.non_finite += s.non_finite;
        }
        write(part)?;
        bar.inc((n * row_len) as u64);
        r0 += n;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_order_puts_non_block_tensors_first_then_blocks_numerically() {
        let mut names = vec![
            "blk.10.attn_q.weight",
            "token_embd.weight",
            "blk.2.ffn_up.weight",
            "output.weight",
            "blk.2.attn_k.weight",
            "output_norm.weight",
        ];
        names.sort_by(|a, b| loader_order(a, b));
        assert_eq!(
            names,
            [
                "output.weight",
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_k.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_q.weight"
            ]
        );
    }

    #[test]
    fn targets_split_into_outtypes_and_mixes() {
        assert_eq!(
            Target::parse(Some("bf16")).unwrap(),
            Target::Outtype(GgmlType::BF16)
        );
        assert_eq!(
            Target::parse(Some("Q8_0")).unwrap(),
            Target::Outtype(GgmlType::Q8_0)
        );
        assert!(matches!(Target::parse(None).unwrap(), Target::Mix(_)));
        assert!(Target::parse(Some("Q9_X")).is_err());
    }
}

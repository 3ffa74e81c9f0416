//! `qforge quantize`: llama.cpp-compatible quantization of safetensors or GGUF to GGUF.
//!
//! The plan (per-tensor output types, the file layout and its size) is computed from the
//! headers alone; then tensors are encoded in parallel chunks and streamed, in order,
//! into a temporary file renamed over the output on success. JSON schema:
//! `docs/quantize-json.md`.

use crate::cli::{OutputFormat, QuantizeArgs};
use crate::formats::atomic::{hex, AtomicFile};
use crate::formats::ggml_type::GgmlType;
use crate::formats::gguf::writer::{GgufLayout, GgufStream, TensorSpec};
use crate::formats::gguf::Value;
use crate::formats::{Format, TensorInfo, TensorSource};
use crate::output::{escape_controls, human_bytes, print_json, print_text};
use crate::pipeline::encode::GgmlEncoder;
use crate::pipeline::{self, ErrorStats};
use crate::quant::imatrix::Imatrix;
use crate::quant::mix::{self, Mix, ModelFacts, Planner};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use regex::Regex;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Schema identifier of `quantize --json`.
pub const SCHEMA: &str = "qforge.quantize/1";

/// `general.quantization_version` written by current llama.cpp (`GGML_QNT_VERSION`).
const QNT_VERSION: u32 = 2;

/// The `quantize --json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Input path.
    pub input: String,
    /// Output path (null for --dry-run).
    pub output: Option<String>,
    /// Requested type or mix name as normalized (`Q4_K_M`).
    #[serde(rename = "type")]
    pub qtype: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Worker threads used.
    pub threads: usize,
    /// Per-tensor plan and results, in output order.
    pub tensors: Vec<TensorReport>,
    /// Sums.
    pub totals: Totals,
    /// SHA-256 of the output file (null for --dry-run).
    pub sha256: Option<String>,
}

/// One tensor of the report.
#[derive(Debug, Serialize)]
pub struct TensorReport {
    /// Name (as in the input).
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<u64>,
    /// Input type name.
    pub in_type: String,
    /// Output type name.
    pub out_type: String,
    /// Input bytes.
    pub in_bytes: u64,
    /// Output bytes.
    pub out_bytes: u64,
    /// Why this output type (`mix: attn_v`, `override`, `copy: 1-D`, ...).
    pub reason: String,
    /// Relative RMSE of the encoded tensor against its input, over finite values
    /// (null when copied or dry run).
    pub rel_rmse: Option<f64>,
    /// NaN or infinite input values (null when copied or dry run).
    pub non_finite: Option<u64>,
}

/// Totals of the report.
#[derive(Debug, Serialize, Default)]
pub struct Totals {
    /// Tensors written.
    pub tensors: usize,
    /// Tensors encoded (the rest are copied).
    pub quantized: usize,
    /// Elements.
    pub elements: u64,
    /// Input tensor bytes.
    pub in_bytes: u64,
    /// Output tensor bytes.
    pub out_bytes: u64,
    /// Output file size.
    pub file_bytes: u64,
    /// Output bits per weight over all tensors.
    pub bits_per_weight: f64,
    /// Wall-clock seconds of the encode-and-write phase.
    pub seconds: f64,
    /// Elements encoded per second.
    pub elements_per_second: f64,
}

/// One planned tensor.
struct Planned<'a> {
    info: &'a TensorInfo,
    out: GgmlType,
    encode: bool,
    reason: String,
    imatrix: Option<&'a [f32]>,
}

/// Parses a type given on the command line: a mix (`Q4_K_M`) or a plain ggml type.
pub fn parse_type(name: &str) -> Result<Mix> {
    Mix::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Mix::ALL.iter().map(|m| m.name()).collect();
        invalid!("unknown type {name:?}; known: {}", names.join(", "))
    })
}

pub(crate) fn parse_ggml_type(flag: &str, name: &str) -> Result<GgmlType> {
    match GgmlType::from_name(name) {
        Some(t) if crate::quant::codec(t).is_some() => Ok(t),
        Some(t) => bail_invalid!("{flag}: quantizing to {t} is not implemented"),
        None => bail_invalid!("{flag}: unknown ggml type {name:?}"),
    }
}

pub(crate) fn parse_regexes(flag: &str, patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| invalid!("{flag} {p:?}: {e}")))
        .collect()
}

pub(crate) fn parse_overrides(specs: &[String]) -> Result<Vec<(Regex, GgmlType)>> {
    specs
        .iter()
        .map(|spec| {
            let (re, ty) = spec
                .split_once('=')
                .ok_or_else(|| invalid!("--tensor-type {spec:?}: expected REGEX=TYPE"))?;
            let re = Regex::new(re).map_err(|e| invalid!("--tensor-type {spec:?}: {e}"))?;
            Ok((re, parse_ggml_type("--tensor-type", ty)?))
        })
        .collect()
}

/// Model facts the mix rules need, from GGUF metadata or a config.json beside the input.
fn model_facts(src: &TensorSource) -> ModelFacts {
    let mut facts = ModelFacts::default();
    match src.format {
        Format::Gguf => {
            let arch = src
                .get("general.architecture")
                .and_then(|v| v.as_str().map(|s| s.into_owned()))
                .unwrap_or_default();
            let num = |key: &str| {
                src.get(&format!("{arch}.{key}"))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0) as u32
            };
            facts.n_layer = num("block_count");
            facts.n_head = num("attention.head_count");
            facts.n_head_kv = num("attention.head_count_kv");
            facts.n_expert = num("expert_count");
            facts.arch = arch;
        }
        Format::Qnat => {
            facts.arch = src
                .qnat
                .as_ref()
                .map(|q| q.model.architecture.clone())
                .unwrap_or_default();
        }
        Format::Safetensors => {
            let dir = if src.path.is_dir() {
                src.path.clone()
            } else {
                src.path.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            if let Some(cfg) = read_config(&dir, &src.path) {
                let num = |keys: &[&str]| {
                    keys.iter()
                        .find_map(|k| cfg.get(*k).and_then(|v| v.as_u64()))
                        .unwrap_or(0) as u32
                };
                facts.n_layer = num(&["num_hidden_layers", "n_layer"]);
                facts.n_head = num(&["num_attention_heads", "n_head"]);
                facts.n_head_kv = num(&["num_key_value_heads"]);
                if facts.n_head_kv == 0 {
                    facts.n_head_kv = facts.n_head;
                }
                facts.n_expert = num(&["num_local_experts", "num_experts", "n_routed_experts"]);
                facts.arch = cfg
                    .get("model_type")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string();
            }
        }
    }
    facts
}

/// `config.json` in the model folder, or `STEM.config.json` beside a single file.
fn read_config(dir: &Path, input: &Path) -> Option<serde_json::Value> {
    let stem = input.file_name()?.to_string_lossy();
    let stem = stem
        .strip_suffix(".safetensors")
        .unwrap_or(&stem)
        .to_string();
    [
        dir.join("config.json"),
        dir.join(format!("{stem}.config.json")),
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Output metadata: the GGUF input's keys in order with `general.file_type` and
/// `general.quantization_version` set; for safetensors, a minimal llama.cpp header.
fn output_metadata(src: &TensorSource, facts: &ModelFacts, file_type: u32) -> Vec<(String, Value)> {
    let mut meta = match src.format {
        Format::Gguf => src.metadata.clone(),
        Format::Safetensors | Format::Qnat => {
            let arch = if facts.arch.is_empty() {
                "unknown"
            } else {
                &facts.arch
            };
            let name = src
                .path
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .replace(".safetensors", "")
                        .replace(".qnat", "")
                })
                .unwrap_or_default();
            vec![
                ("general.architecture".into(), Value::string(arch)),
                ("general.name".into(), Value::string(&name)),
            ]
        }
    };
    for (key, value) in [
        ("general.file_type", Value::U32(file_type)),
        ("general.quantization_version", Value::U32(QNT_VERSION)),
    ] {
        match meta.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => meta.push((key.to_string(), value)),
        }
    }
    meta
}

/// Runs `qforge quantize`.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let folder = crate::convert::model_dir(&args.input);
    if args.format == OutputFormat::Gguf && !args.raw_names {
        if let Some(dir) = folder {
            return crate::convert::write::run(args, &dir);
        }
    }
    let folder_flags = args.name.is_some() || args.metadata.is_some() || args.no_vocab;
    if folder_flags && (folder.is_none() || args.format != OutputFormat::Gguf || args.raw_names) {
        bail_invalid!("--name, --metadata and --no-vocab apply to converting a Hugging Face folder (config.json beside the weights) to GGUF");
    }
    match args.format {
        OutputFormat::Gguf => {}
        OutputFormat::BnbSafetensors => return run_bnb(args),
        OutputFormat::Qnat => return run_qnat(args),
    }
    let mix = parse_type(args.qtype.as_deref().unwrap_or("Q4_K_M"))?;
    let overrides = parse_overrides(&args.tensor_type)?;
    let output_tensor_type = args
        .output_tensor_type
        .as_deref()
        .map(|t| parse_ggml_type("--output-tensor-type", t))
        .transpose()?;
    let token_embedding_type = args
        .token_embedding_type
        .as_deref()
        .map(|t| parse_ggml_type("--token-embedding-type", t))
        .transpose()?;
    let include = parse_regexes("--include-weights", &args.include_weights)?;
    let exclude = parse_regexes("--exclude-weights", &args.exclude_weights)?;
    if let Some(out) = &args.output {
        if out.exists() && same_file(out, &args.input) {
            bail_invalid!("output {} is the input file", out.display());
        }
    }

    let src = TensorSource::open(&args.input)?;
    let imatrix = match &args.imatrix {
        Some(path) => {
            let mut m = Imatrix::load(path)?;
            m.filter(&include, &exclude);
            Some(m)
        }
        None => None,
    };
    let facts = model_facts(&src);
    let opts = mix::Options {
        pure: args.pure,
        output_tensor_type,
        token_embedding_type,
        leave_output_tensor: args.leave_output_tensor,
        overrides,
        has_imatrix: imatrix.is_some(),
    };
    let planned = plan(&src, mix, facts.clone(), opts, imatrix.as_ref(), args)?;

    let meta = output_metadata(&src, &facts, mix.file_type());
    let specs: Vec<TensorSpec> = planned
        .iter()
        .map(|p| TensorSpec {
            name: p.info.name.clone(),
            ne: p.info.ne(),
            ty: p.out,
        })
        .collect();
    let layout = GgufLayout::new(&meta, &specs)?;
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let mut report = Report {
        schema: SCHEMA,
        input: args.input.display().to_string(),
        output: args.output.as_ref().map(|p| p.display().to_string()),
        qtype: mix.name().to_string(),
        dry_run: args.dry_run,
        threads,
        tensors: planned
            .iter()
            .zip(&layout.tensors)
            .map(|(p, &(_, bytes))| TensorReport {
                name: p.info.name.clone(),
                shape: p.info.shape.clone(),
                in_type: p.info.ty.to_string(),
                out_type: p.out.to_string(),
                in_bytes: p.info.bytes,
                out_bytes: bytes,
                reason: p.reason.clone(),
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
        let (stats, digest) = pipeline::with_threads(args.threads, || {
            write_gguf(&src, &planned, &layout, out, args)
        })??;
        report.totals.seconds = started.elapsed().as_secs_f64();
        for (t, s) in report.tensors.iter_mut().zip(&stats) {
            t.rel_rmse = s.map(|s| s.rel_rmse());
            t.non_finite = s.map(|s| s.non_finite);
        }
        report.sha256 = Some(hex(&digest));
    }
    let t = &mut report.totals;
    t.tensors = planned.len();
    t.quantized = planned.iter().filter(|p| p.encode).count();
    t.elements = planned.iter().map(|p| p.info.elements()).sum();
    t.in_bytes = planned.iter().map(|p| p.info.bytes).sum();
    t.out_bytes = layout.tensors.iter().map(|&(_, b)| b).sum();
    t.file_bytes = layout.file_size;
    t.bits_per_weight = if t.elements > 0 {
        t.out_bytes as f64 * 8.0 / t.elements as f64
    } else {
        0.0
    };
    if t.seconds > 0.0 {
        let encoded: u64 = planned
            .iter()
            .filter(|p| p.encode)
            .map(|p| p.info.elements())
            .sum();
        t.elements_per_second = encoded as f64 / t.seconds;
    }
    if args.json {
        print_json(&report)
    } else {
        print_text(&render_text(&report))
    }
}

/// `quantize --format bnb-safetensors`: a Hugging Face bitsandbytes 4-bit folder.
fn run_bnb(args: &QuantizeArgs) -> Result<()> {
    use crate::pipeline::bnb::{self, BnbOptions};
    use crate::quant::bnb::FourBit;
    let kind = match args
        .qtype
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("nf4") => FourBit::Nf4,
        Some("fp4") => FourBit::Fp4,
        Some(other) => bail_invalid!("--format bnb-safetensors takes -t NF4 or FP4, not {other:?}"),
    };
    let opts = BnbOptions {
        kind,
        block_size: args.block_size,
        double_quant: args.double_quant,
        compute_dtype: args.compute_dtype.torch_name(),
    };
    crate::pipeline::encode::FourBitEncoder::new(kind, args.block_size)?;
    let src = TensorSource::open(&args.input)?;
    let dir = src.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let dir = if src.path.is_dir() {
        src.path.clone()
    } else {
        dir
    };
    let config = read_config(&dir, &src.path);
    let mut report = Report {
        schema: SCHEMA,
        input: args.input.display().to_string(),
        output: args.output.as_ref().map(|p| p.display().to_string()),
        qtype: format!("{kind:?}").to_ascii_uppercase(),
        dry_run: args.dry_run,
        threads: args.threads.unwrap_or_else(rayon::current_num_threads),
        tensors: Vec::new(),
        totals: Totals::default(),
        sha256: None,
    };
    if args.dry_run {
        bail_invalid!("--dry-run is only implemented for --format gguf");
    }
    let out = args
        .output
        .as_deref()
        .expect("clap requires -o without --dry-run");
    let started = Instant::now();
    let total: u64 = src.tensors.iter().map(TensorInfo::elements).sum();
    let bar = pipeline::progress_bar(total, args.json);
    let outcomes =
        pipeline::with_threads(args.threads, || bnb::write(&src, config, &opts, out, &bar))??;
    bar.finish_and_clear();
    report.totals.seconds = started.elapsed().as_secs_f64();
    if let Err(e) = fill_from_outcomes(&mut report, &src, &outcomes, args.allow_nonfinite) {
        // The folder was renamed into place already: take it away again.
        std::fs::remove_dir_all(out).ok();
        return Err(e);
    }
    let model = out.join("model.safetensors");
    report.sha256 = Some(file_sha256(&model)?);
    report.totals.file_bytes = std::fs::metadata(&model)?.len();
    print_report(&report, args.json)
}

/// `quantize --format qnat`: the export-native pipeline with `-t` as the weight scheme
/// (NF4, FP4, or a ggml type QNAT stores).
fn run_qnat(args: &QuantizeArgs) -> Result<()> {
    use crate::pipeline::qnat::{scheme_of, Target};
    use crate::quant::bnb::FourBit;
    let name = args.qtype.as_deref().unwrap_or("nf4").to_ascii_lowercase();
    let four = |kind| Target::FourBit {
        kind,
        block_size: args.block_size,
        double_quant: args.double_quant,
    };
    let weights = match name.as_str() {
        "nf4" => four(FourBit::Nf4),
        "fp4" => four(FourBit::Fp4),
        other => match GgmlType::from_name(other).and_then(scheme_of) {
            Some(s)
                if crate::quant::codec(GgmlType::from_name(other).expect("parsed")).is_some() =>
            {
                Target::Encode(s)
            }
            _ => bail_invalid!(
                "--format qnat takes -t NF4, FP4 or a ggml type QNAT stores, not {other:?}"
            ),
        },
    };
    if args.dry_run {
        bail_invalid!("--dry-run is only implemented for --format gguf");
    }
    let out = args
        .output
        .as_deref()
        .expect("clap requires -o without --dry-run");
    let src = TensorSource::open(&args.input)?;
    let model = crate::commands::export_native::model_info(
        &src,
        None,
        crate::commands::export_native::compute_dtype(args.compute_dtype),
    )?;
    let mut report = Report {
        schema: SCHEMA,
        input: args.input.display().to_string(),
        output: Some(out.display().to_string()),
        qtype: name.to_ascii_uppercase(),
        dry_run: false,
        threads: args.threads.unwrap_or_else(rayon::current_num_threads),
        tensors: Vec::new(),
        totals: Totals::default(),
        sha256: None,
    };
    let job = crate::commands::export_native::ExportJob {
        weights,
        threads: args.threads,
        quiet: args.json,
        allow_nonfinite: args.allow_nonfinite,
    };
    crate::commands::export_native::export(&src, job, model, out, &mut report)?;
    print_report(&report, args.json)
}

/// Fills a report's tensors and totals from per-tensor outcomes; fails (invalid input)
/// on non-finite inputs unless allowed.
pub fn fill_from_outcomes(
    report: &mut Report,
    src: &TensorSource,
    outcomes: &[crate::pipeline::bnb::Outcome],
    allow_nonfinite: bool,
) -> Result<()> {
    for (t, o) in src.tensors.iter().zip(outcomes) {
        if let Some(s) = o.stats {
            if s.non_finite > 0 && !allow_nonfinite {
                bail_invalid!(
                    "tensor {} has {} NaN or infinite values; pass --allow-nonfinite to quantize it anyway",
                    t.name,
                    s.non_finite
                );
            }
        }
        report.tensors.push(TensorReport {
            name: t.name.clone(),
            shape: t.shape.clone(),
            in_type: t.ty.to_string(),
            out_type: o.out_type.clone(),
            in_bytes: t.bytes,
            out_bytes: o.out_bytes,
            reason: o.reason.to_string(),
            rel_rmse: o.stats.map(|s| s.rel_rmse()),
            non_finite: o.stats.map(|s| s.non_finite),
        });
    }
    let t = &mut report.totals;
    t.tensors = outcomes.len();
    t.quantized = outcomes.iter().filter(|o| o.stats.is_some()).count();
    t.elements = src.tensors.iter().map(TensorInfo::elements).sum();
    t.in_bytes = src.tensors.iter().map(|t| t.bytes).sum();
    t.out_bytes = outcomes.iter().map(|o| o.out_bytes).sum();
    t.bits_per_weight = t.out_bytes as f64 * 8.0 / t.elements.max(1) as f64;
    let encoded: u64 = src
        .tensors
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.stats.is_some())
        .map(|(t, _)| t.elements())
        .sum();
    t.elements_per_second = encoded as f64 / t.seconds.max(1e-9);
    Ok(())
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// Prints a report as JSON or text.
pub fn print_report(report: &Report, json: bool) -> Result<()> {
    if json {
        print_json(report)
    } else {
        print_text(&render_text(report))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn plan<'a>(
    src: &'a TensorSource,
    mix: Mix,
    facts: ModelFacts,
    opts: mix::Options,
    imatrix: Option<&'a Imatrix>,
    args: &QuantizeArgs,
) -> Result<Vec<Planned<'a>>> {
    let shapes: Vec<(String, Vec<u64>)> = src
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ne()))
        .collect();
    let mut planner = Planner::new(mix, facts, opts, &shapes);
    let mut out = Vec::with_capacity(src.tensors.len());
    for info in &src.tensors {
        let in_ty = info.ty.as_ggml().ok_or_else(|| {
            invalid!(
                "tensor {}: {} tensors cannot be stored in GGUF",
                info.name,
                info.ty
            )
        })?;
        let choice = planner
            .try_choose(&info.name, &info.ne())
            .map_err(|e| invalid!("{e}"))?;
        let (out_ty, reason) = if choice.quantize {
            (choice.ty, choice.reason.to_string())
        } else {
            (in_ty, choice.reason.to_string())
        };
        let encode = out_ty != in_ty;
        if encode {
            if !in_ty.is_float() && !args.allow_requantize {
                bail_invalid!(
                    "tensor {} is already {in_ty}; pass --allow-requantize to re-quantize it to {out_ty}",
                    info.name
                );
            }
            if !crate::quant::can_decode(info.ty) {
                bail_invalid!("tensor {}: decoding {in_ty} is not implemented", info.name);
            }
        }
        let weights = match (encode, imatrix) {
            (true, Some(m)) => m.entries.get(&info.name).map(Vec::as_slice),
            _ => None,
        };
        if encode && choice.requires_imatrix && weights.is_none() {
            bail_invalid!(
                "tensor {}: {out_ty} needs importance-matrix data (as in llama.cpp); pass --imatrix with an entry for it",
                info.name
            );
        }
        if let Some(w) = weights {
            let row = info.ne()[0] as usize;
            let matrices = (info.ne().iter().skip(2).product::<u64>()) as usize;
            if w.len() != row * matrices {
                bail_invalid!(
                    "imatrix entry {} has {} values, tensor needs {} ({} columns x {} matrices)",
                    info.name,
                    w.len(),
                    row * matrices,
                    row,
                    matrices
                );
            }
        }
        out.push(Planned {
            info,
            out: out_ty,
            encode,
            reason,
            imatrix: weights,
        });
    }
    Ok(out)
}

fn write_gguf(
    src: &TensorSource,
    planned: &[Planned<'_>],
    layout: &GgufLayout,
    out: &Path,
    args: &QuantizeArgs,
) -> Result<(Vec<Option<ErrorStats>>, [u8; 32])> {
    let total: u64 = planned.iter().map(|p| p.info.elements()).sum();
    let bar = pipeline::progress_bar(total, args.json);
    let mut file = AtomicFile::create(out)?;
    let mut stream = GgufStream::start(&mut file, layout)?;
    let mut stats = Vec::with_capacity(planned.len());
    for p in planned {
        bar.set_message(p.info.name.clone());
        if p.encode {
            let enc = GgmlEncoder::new(p.out)?;
            let s = pipeline::encode_tensor(src, p.info, &enc, p.imatrix, &bar, &mut |chunk| {
                stream.write_data(chunk)
            })?
            .stats;
            if s.non_finite > 0 && !args.allow_nonfinite {
                return Err(invalid!(
                    "tensor {} has {} NaN or infinite values; pass --allow-nonfinite to quantize it anyway",
                    p.info.name,
                    s.non_finite
                ));
            }
            stats.push(Some(s));
        } else {
            pipeline::copy_tensor(src, p.info, &mut |chunk| stream.write_data(chunk))?;
            bar.inc(p.info.elements());
            stats.push(None);
        }
    }
    stream.finish()?;
    bar.finish_and_clear();
    let digest = file
        .commit()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok((stats, digest))
}

/// Adapts a [`GgufStream`] to `io::Write` for copied tensors.
fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let names: Vec<_> = r.tensors.iter().map(|t| escape_controls(&t.name)).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4);
    for (name, t) in names.iter().zip(&r.tensors) {
        let mut rmse = t
            .rel_rmse
            .map(|e| format!("rel-rmse {e:.5}"))
            .unwrap_or_default();
        if let Some(n) = t.non_finite.filter(|&n| n > 0) {
            rmse += &format!("  {n} non-finite");
        }
        let _ = writeln!(
            s,
            "{name:width$}  {:>6} -> {:<7} {:>12}  {:28} {rmse}",
            t.in_type,
            t.out_type,
            human_bytes(t.out_bytes),
            t.reason
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        s,
        "{} tensors ({} quantized), {} -> {}, {:.3} bits per weight",
        t.tensors,
        t.quantized,
        human_bytes(t.in_bytes),
        human_bytes(t.file_bytes),
        t.bits_per_weight
    );
    match (&r.output, &r.sha256) {
        (Some(out), Some(sha)) => {
            let _ = writeln!(
                s,
                "wrote {} in {:.2} s ({:.1} M elements/s), sha256 {sha}",
                escape_controls(out),
                t.seconds,
                t.elements_per_second / 1e6
            );
        }
        _ => {
            let _ = writeln!(s, "dry run: nothing written");
        }
    }
    s
}

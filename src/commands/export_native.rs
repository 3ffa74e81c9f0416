//! `qforge export-native`: write QNAT v2 (NF4/FP4 with double quantization, ggml types,
//! floats), migrate QNAT v1, or dequantize QNAT back to f32 safetensors.
//!
//! Float tensors of two or more dimensions get `--scheme`; 1-D tensors keep their float
//! type; tensors already in a ggml block type (GGUF input) are repacked byte for byte.
//! The report has the schema of `quantize --json` (`docs/quantize-json.md`).

use super::quantize::{file_sha256, fill_from_outcomes, print_report, Report, Totals, SCHEMA};
use crate::cli::{ExportNativeArgs, Scheme as CliScheme};
use crate::formats::atomic::AtomicFile;
use crate::formats::ggml_type::GgmlType;
use crate::formats::qnat::{self, ComputeDtype, ModelInfo, Scheme, SourceDigest};
use crate::formats::safetensors_writer::{header_estimate, SafetensorsWriter, StTensor};
use crate::formats::weight_format::WeightFormat;
use crate::formats::{Format, TensorInfo, TensorSource};
use crate::pipeline::qnat::{scheme_of, Target};
use crate::pipeline::{self, bnb::Outcome};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Tool string recorded in QNAT files.
pub fn tool() -> String {
    format!("qforge {}", env!("CARGO_PKG_VERSION"))
}

/// The QNAT compute dtype of a command-line choice.
pub fn compute_dtype(c: crate::cli::ComputeDtype) -> ComputeDtype {
    match c {
        crate::cli::ComputeDtype::F32 => ComputeDtype::F32,
        crate::cli::ComputeDtype::F16 => ComputeDtype::F16,
        crate::cli::ComputeDtype::Bf16 => ComputeDtype::Bf16,
    }
}

/// What a float weight tensor becomes under `--scheme`.
fn scheme_target(s: CliScheme, block_size: usize, double_quant: bool) -> Target {
    let four = |kind| Target::FourBit {
        kind,
        block_size,
        double_quant,
    };
    match WeightFormat::from(s) {
        WeightFormat::Bnb(kind) => four(kind),
        WeightFormat::Ggml(_) => Target::Encode(Scheme::from(s)),
    }
}

/// The per-tensor choice shared by `export-native` and `quantize --format qnat`.
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

/// Name, architecture and string metadata of the source.
pub fn model_info(
    src: &TensorSource,
    name: Option<&str>,
    dtype: ComputeDtype,
) -> Result<ModelInfo> {
    let arch = src
        .get("general.architecture")
        .and_then(|v| v.as_str().map(|s| s.into_owned()))
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
                name: f
                    .path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
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
    })
}

/// How `export` runs.
#[derive(Debug, Clone, Copy)]
pub struct ExportJob {
    /// Target of float weight tensors.
    pub weights: Target,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// No progress bar (JSON output).
    pub quiet: bool,
    /// Accept NaN/infinite inputs.
    pub allow_nonfinite: bool,
}

/// Writes `src` as QNAT to `out`; fills `report`.
pub fn export(
    src: &TensorSource,
    job: ExportJob,
    model: ModelInfo,
    out: &Path,
    report: &mut Report,
) -> Result<()> {
    let started = Instant::now();
    let total: u64 = src.tensors.iter().map(TensorInfo::elements).sum();
    let bar = pipeline::progress_bar(total, job.quiet);
    let file = AtomicFile::create(out)?;
    let target = |t: &TensorInfo| choose(t, job.weights);
    let (file, outcomes): (AtomicFile, Vec<Outcome>) =
        pipeline::with_threads(job.threads, || {
            pipeline::qnat::write(src, &target, model, file, &bar)
        })??;
    bar.finish_and_clear();
    report.totals.seconds = started.elapsed().as_secs_f64();
    fill_from_outcomes(report, src, &outcomes, job.allow_nonfinite)?;
    let digest = file
        .commit()
        .with_context(|| format!("writing {}", out.display()))?;
    report.sha256 = Some(crate::formats::atomic::hex(&digest));
    report.totals.file_bytes = std::fs::metadata(out)?.len();
    Ok(())
}

/// Runs `qforge export-native`.
pub fn run(args: &ExportNativeArgs) -> Result<()> {
    if args.dequantize {
        return dequantize(args);
    }
    let head = std::fs::read(&args.input).ok().filter(|d| d.len() >= 8);
    if let Some(d) = head.as_deref() {
        if d.starts_with(qnat::MAGIC) && d[4..8] == 1u32.to_le_bytes() {
            return migrate_v1(args, d);
        }
    }
    let src = TensorSource::open(&args.input)?;
    if src.format == Format::Qnat {
        bail_invalid!(
            "{} is already QNAT v2; use --dequantize to get f32 back",
            args.input.display()
        );
    }
    let weights = scheme_target(args.scheme, args.block_size, args.double_quant);
    if let Target::FourBit {
        kind, block_size, ..
    } = weights
    {
        pipeline::encode::FourBitEncoder::new(kind, block_size)?;
    }
    let model = model_info(
        &src,
        args.model_name.as_deref(),
        compute_dtype(args.compute_dtype),
    )?;
    let mut report = new_report(
        args,
        &args.input,
        &args.output,
        &format!("{:?}", args.scheme),
    );
    let job = ExportJob {
        weights,
        threads: args.threads,
        quiet: args.json,
        allow_nonfinite: args.allow_nonfinite,
    };
    export(&src, job, model, &args.output, &mut report)?;
    print_report(&report, args.json)
}

fn new_report(args: &ExportNativeArgs, input: &Path, output: &Path, ty: &str) -> Report {
    Report {
        schema: SCHEMA,
        input: input.display().to_string(),
        output: Some(output.display().to_string()),
        qtype: ty.to_ascii_uppercase(),
        dry_run: false,
        threads: args.threads.unwrap_or_else(rayon::current_num_threads),
        tensors: Vec::new(),
        totals: Totals::default(),
        sha256: None,
    }
}

fn migrate_v1(args: &ExportNativeArgs, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let source = vec![SourceDigest {
        name: args
            .input
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        bytes: data.len() as u64,
        sha256: file_sha256(&args.input)?,
    }];
    let mut file = AtomicFile::create(&args.output)?;
    let mut file = qnat::v1::migrate_v1_file(data, &mut file, &tool(), source)
        .map(|_| ())
        .and(Ok(file))?;
    file.flush()?;
    let digest = file.commit()?;
    let summary = serde_json::json!({
        "schema": "qforge.export-native-migrate/1",
        "input": args.input.display().to_string(),
        "output": args.output.display().to_string(),
        "from_version": 1,
        "to_version": 2,
        "sha256": crate::formats::atomic::hex(&digest),
    });
    if args.json {
        crate::output::print_json(&summary)
    } else {
        crate::output::print_text(&format!(
            "migrated QNAT v1 {} to v2 {}\n",
            args.input.display(),
            args.output.display()
        ))
    }
}

/// `--dequantize`: every tensor of a QNAT v2 file to f32, written as safetensors.
fn dequantize(args: &ExportNativeArgs) -> Result<()> {
    let src = TensorSource::open(&args.input)?;
    let Some(index) = src.qnat.as_ref() else {
        bail_invalid!(
            "--dequantize takes a QNAT file, {} is {}",
            args.input.display(),
            src.format.name()
        );
    };
    let data = src.files[0].data();
    let names: Vec<(usize, usize)> = index
        .tensors
        .iter()
        .map(|t| (t.name.len(), t.shape.len()))
        .collect();
    let mut file = AtomicFile::create(&args.output)?;
    let mut w = SafetensorsWriter::new(
        &mut file,
        header_estimate(&names, &Default::default()),
        Default::default(),
    )?;
    for t in &index.tensors {
        let mut out = vec![0f32; t.elements() as usize];
        pipeline::qnat::dequantize(index, data, t, &mut out)
            .with_context(|| format!("tensor {}", t.name))?;
        let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.tensor(
            StTensor {
                name: t.name.clone(),
                dtype: "F32",
                shape: t.shape.clone(),
            },
            &bytes,
        )?;
    }
    w.finish()?;
    let digest = file.commit()?;
    let summary = serde_json::json!({
        "schema": "qforge.export-native-dequantize/1",
        "input": args.input.display().to_string(),
        "output": args.output.display().to_string(),
        "tensors": index.tensors.len(),
        "sha256": crate::formats::atomic::hex(&digest),
    });
    if args.json {
        crate::output::print_json(&summary)
    } else {
        crate::output::print_text(&format!(
            "dequantized {} tensors of {} to {}\n",
            index.tensors.len(),
            args.input.display(),
            args.output.display()
        ))
    }
}

//! `qforge quantize`: llama.cpp-compatible quantization of safetensors or GGUF to GGUF
//! (or to a bitsandbytes folder, or QNAT). Parses the arguments, runs the pipeline
//! ([`crate::pipeline::gguf`], [`crate::pipeline::bnb`], [`crate::pipeline::qnat`]) and
//! prints its report. JSON schema: `docs/quantize-json.md`.

use crate::cli::{OutputFormat, QuantizeArgs};
use crate::formats::ggml_type::GgmlType;
use crate::pipeline::bnb::BnbOptions;
use crate::pipeline::gguf::GgufJob;
use crate::pipeline::qnat::{scheme_of, ExportJob, Target};
use crate::pipeline::{self, RunOptions};
use crate::quant::bnb::FourBit;
use crate::quant::mix::{self, Mix};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use regex::Regex;
use std::path::Path;

/// Parses a type given on the command line: a mix (`Q4_K_M`) or a plain ggml type.
pub fn parse_type(name: &str) -> Result<Mix> {
    Mix::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Mix::ALL.iter().map(|m| m.name()).collect();
        invalid!("unknown type {name:?}; known: {}", names.join(", "))
    })
}

fn parse_ggml_type(flag: &str, name: &str) -> Result<GgmlType> {
    match GgmlType::from_name(name) {
        Some(t) if crate::quant::codec(t).is_some() => Ok(t),
        Some(t) => bail_invalid!("{flag}: quantizing to {t} is not implemented"),
        None => bail_invalid!("{flag}: unknown ggml type {name:?}"),
    }
}

fn parse_regexes(flag: &str, patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| invalid!("{flag} {p:?}: {e}")))
        .collect()
}

fn parse_overrides(specs: &[String]) -> Result<Vec<(Regex, GgmlType)>> {
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

/// Runs `qforge quantize`.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let run = RunOptions {
        threads: args.threads,
        quiet: args.json,
        allow_nonfinite: args.allow_nonfinite,
    };
    let report = match args.format {
        OutputFormat::Gguf => run_gguf(args, run)?,
        OutputFormat::BnbSafetensors => run_bnb(args, run)?,
        OutputFormat::Qnat => run_qnat(args, run)?,
    };
    report.print(args.json)
}

fn run_gguf(args: &QuantizeArgs, run: RunOptions) -> Result<pipeline::report::Report> {
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
    pipeline::gguf::quantize(&GgufJob {
        input: &args.input,
        output: args.output.as_deref(),
        dry_run: args.dry_run,
        mix,
        opts: mix::Options {
            pure: args.pure,
            output_tensor_type,
            token_embedding_type,
            leave_output_tensor: args.leave_output_tensor,
            overrides,
            has_imatrix: false,
        },
        imatrix: args
            .imatrix
            .as_deref()
            .map(|p| (p, include.as_slice(), exclude.as_slice())),
        allow_requantize: args.allow_requantize,
        run,
    })
}

/// The output path, or an error for `--dry-run` (only the GGUF pipeline plans without writing).
fn written_output(args: &QuantizeArgs) -> Result<&Path> {
    if args.dry_run {
        bail_invalid!("--dry-run is only implemented for --format gguf");
    }
    Ok(args
        .output
        .as_deref()
        .expect("clap requires -o without --dry-run"))
}

/// `quantize --format bnb-safetensors`: a Hugging Face bitsandbytes 4-bit folder.
fn run_bnb(args: &QuantizeArgs, run: RunOptions) -> Result<pipeline::report::Report> {
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
    let out = written_output(args)?;
    pipeline::bnb::quantize(&args.input, out, &opts, run)
}

/// `quantize --format qnat`: the export-native pipeline with `-t` as the weight scheme
/// (NF4, FP4, or a ggml type QNAT stores).
fn run_qnat(args: &QuantizeArgs, run: RunOptions) -> Result<pipeline::report::Report> {
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
    let out = written_output(args)?;
    pipeline::qnat::export(&ExportJob {
        input: &args.input,
        output: out,
        qtype: name.to_ascii_uppercase(),
        weights,
        model_name: None,
        compute_dtype: args.compute_dtype.into(),
        refuse_qnat: false,
        run,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

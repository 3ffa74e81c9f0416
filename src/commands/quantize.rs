//! `qforge quantize`: llama.cpp-compatible quantization of safetensors or GGUF to GGUF
//! (or to a bitsandbytes folder, or QNAT). Parses the arguments, runs the pipeline
//! ([`crate::pipeline::gguf`], [`crate::pipeline::bnb`], [`crate::pipeline::qnat`]) and
//! prints its report. JSON schema: `docs/quantize-json.md`.

use crate::cli::{parse_type_override, OutputFormat, QuantizeArgs};
use crate::formats::ggml_type::GgmlType;
use crate::formats::weight_format::WeightFormat;
use crate::output::print_report;
use crate::pipeline::bnb::BnbOptions;
use crate::pipeline::gguf::GgufJob;
use crate::pipeline::llama_file::{self, FileOptions};
use crate::pipeline::qnat::{scheme_of, ExportJob, Target};
use crate::pipeline::{self, RunOptions};
use crate::quant::bnb::FourBit;
use crate::quant::mix::{self, Mix, QUANT_OPTIONS};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use regex::Regex;
use std::path::Path;

/// Parses a type given on the command line: a mix (`Q4_K_M`) or a plain ggml type; a
/// type of llama-quantize's list that qforge lacks is named as not implemented.
pub fn parse_type(name: &str) -> Result<Mix> {
    Mix::from_name(name).ok_or_else(|| {
        if let Some(o) = QUANT_OPTIONS
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
        {
            return invalid!(
                "type {}: llama-quantize has it, qforge does not implement it yet (qforge quantize --list-types)",
                o.name
            );
        }
        let names: Vec<&str> = Mix::ALL.iter().map(|m| m.name()).collect();
        invalid!("unknown type {name:?}; known: {}", names.join(", "))
    })
}

/// The `--tensor-type` overrides, then those of each `--tensor-type-file` (words separated
/// by white space, each `REGEX=TYPE`).
fn type_overrides(args: &QuantizeArgs) -> Result<Vec<(Regex, GgmlType)>> {
    let mut out: Vec<(Regex, GgmlType)> = args
        .tensor_type
        .iter()
        .map(|o| (o.pattern.clone(), o.ty))
        .collect();
    for path in &args.tensor_type_file {
        let text = std::fs::read_to_string(path).map_err(
            |e| invalid!(kind: Unreadable, "--tensor-type-file {}: {e}", path.display()),
        )?;
        for word in text.split_whitespace() {
            let o = parse_type_override(word)
                .map_err(|e| invalid!("--tensor-type-file {}: {e}", path.display()))?;
            out.push((o.pattern, o.ty));
        }
    }
    Ok(out)
}

/// `--override-kv`, `--prune-layers` (all occurrences together) and `--keep-split`.
fn file_options(args: &QuantizeArgs) -> Result<FileOptions> {
    let mut prune_layers = Vec::new();
    for spec in &args.prune_layers {
        prune_layers.extend(llama_file::parse_prune_layers(spec)?);
    }
    prune_layers.sort_unstable();
    prune_layers.dedup();
    Ok(FileOptions {
        kv_overrides: args
            .override_kv
            .iter()
            .map(|s| llama_file::parse_kv_override(s))
            .collect::<Result<_>>()?,
        prune_layers,
        keep_split: args.keep_split,
    })
}

/// Refuses the GGUF-input-only flags for another pipeline (`what`).
fn refuse_file_options(args: &QuantizeArgs, what: &str) -> Result<()> {
    for (flag, set) in [
        ("--override-kv", !args.override_kv.is_empty()),
        ("--prune-layers", !args.prune_layers.is_empty()),
        ("--keep-split", args.keep_split),
    ] {
        if set {
            bail_invalid!(
                "{flag} applies to quantizing a GGUF or safetensors file to GGUF, not to {what}"
            );
        }
    }
    Ok(())
}

fn parse_regexes(flag: &str, patterns: &[String]) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| Regex::new(p).map_err(|e| invalid!("{flag} {p:?}: {e}")))
        .collect()
}

/// Runs `qforge quantize`.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let run = RunOptions {
        threads: args.threads,
        quiet: args.json,
        allow_nonfinite: args.allow_nonfinite,
        digest: args.digest,
    };
    // A Hugging Face folder (config.json beside the weights) is converted unless
    // --raw-names asks for the tensors under their own names.
    let folder = crate::convert::model_dir(&args.input);
    let folder_flags = args.name.is_some() || args.metadata.is_some() || args.no_vocab;
    if folder_flags && (folder.is_none() || args.format != OutputFormat::Gguf || args.raw_names) {
        bail_invalid!("--name, --metadata and --no-vocab apply to converting a Hugging Face folder (config.json beside the weights) to GGUF");
    }
    let report = match (args.format, folder) {
        (OutputFormat::Gguf, Some(dir)) if !args.raw_names => run_convert(args, &dir, run)?,
        (OutputFormat::Gguf, _) => run_gguf(args, run)?,
        (OutputFormat::BnbSafetensors, _) => run_bnb(args, run)?,
        (OutputFormat::Qnat, _) => run_qnat(args, run)?,
    };
    print_report(args.json, &report, || report.render_text())
}

fn run_gguf(args: &QuantizeArgs, run: RunOptions) -> Result<pipeline::report::Report> {
    let mix = parse_type(args.qtype.as_deref().unwrap_or("Q4_K_M"))?;
    let overrides = type_overrides(args)?;
    let (output_tensor_type, token_embedding_type) =
        (args.output_tensor_type, args.token_embedding_type);
    let include = parse_regexes("--include-weights", &args.include_weights)?;
    let exclude = parse_regexes("--exclude-weights", &args.exclude_weights)?;
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
        file: file_options(args)?,
        run,
    })
}

/// `quantize FOLDER`: convert_hf_to_gguf.py's output (`-t F32|F16|BF16|Q8_0`) or
/// llama-quantize's over it (any other type).
fn run_convert(
    args: &QuantizeArgs,
    dir: &Path,
    run: RunOptions,
) -> Result<pipeline::report::Report> {
    use crate::convert::write::{ConvertJob, Target};
    refuse_file_options(args, "a Hugging Face folder")?;
    let target = Target::parse(args.qtype.as_deref(), parse_type)?;
    let mix_opts = match target {
        Target::Outtype(_) => None,
        Target::Mix(_) => Some(mix::Options {
            pure: args.pure,
            output_tensor_type: args.output_tensor_type,
            token_embedding_type: args.token_embedding_type,
            leave_output_tensor: args.leave_output_tensor,
            overrides: type_overrides(args)?,
            has_imatrix: false,
        }),
    };
    if mix_opts.is_none() {
        for (flag, set) in [
            ("--imatrix", args.imatrix.is_some()),
            ("--tensor-type", !args.tensor_type.is_empty()),
            ("--tensor-type-file", !args.tensor_type_file.is_empty()),
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
                    "{flag} applies to quantized types; -t {} on a folder is convert_hf_to_gguf.py's --outtype",
                    target.name()
                );
            }
        }
    }
    let include = parse_regexes("--include-weights", &args.include_weights)?;
    let exclude = parse_regexes("--exclude-weights", &args.exclude_weights)?;
    crate::convert::write::convert(&ConvertJob {
        input: &args.input,
        dir,
        output: args.output.as_deref(),
        dry_run: args.dry_run,
        target,
        mix_opts,
        imatrix: args
            .imatrix
            .as_deref()
            .map(|p| (p, include.as_slice(), exclude.as_slice())),
        name: args.name.as_deref(),
        metadata: args.metadata.as_deref(),
        no_vocab: args.no_vocab,
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
    refuse_file_options(args, "--format bnb-safetensors")?;
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
    refuse_file_options(args, "--format qnat")?;
    let name = args.qtype.as_deref().unwrap_or("nf4").to_ascii_lowercase();
    let four = |kind| Target::FourBit {
        kind,
        block_size: args.block_size,
        double_quant: args.double_quant,
    };
    let weights = match WeightFormat::from_name(&name) {
        Some(WeightFormat::Bnb(kind)) => four(kind),
        Some(WeightFormat::Ggml(t)) if t.codec().is_some() && scheme_of(t).is_some() => {
            Target::Encode(scheme_of(t).expect("checked"))
        }
        _ => bail_invalid!(
            "--format qnat takes -t NF4, FP4 or a ggml type QNAT stores, not {name:?}"
        ),
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

//! `qforge export-native`: write QNAT v2 (NF4/FP4 with double quantization, ggml types,
//! floats), migrate QNAT v1, or dequantize QNAT back to f32 safetensors. Parses the
//! arguments, runs [`crate::pipeline::qnat`] and prints the result.
//!
//! The report has the schema of `quantize --json` (`docs/quantize-json.md`).

use crate::cli::{ExportNativeArgs, Scheme as CliScheme};
use crate::formats::qnat::Scheme;
use crate::output::{print_json, print_text};
use crate::pipeline::qnat::{self, ExportJob, Target};
use crate::pipeline::RunOptions;
use crate::quant::bnb::FourBit;
use anyhow::Result;

/// What a float weight tensor becomes under `--scheme`.
fn scheme_target(s: CliScheme, block_size: usize, double_quant: bool) -> Target {
    let four = |kind| Target::FourBit {
        kind,
        block_size,
        double_quant,
    };
    match s {
        CliScheme::Nf4 => four(FourBit::Nf4),
        CliScheme::Fp4 => four(FourBit::Fp4),
        CliScheme::Q4K => Target::Encode(Scheme::Q4_K),
        CliScheme::Q5K => Target::Encode(Scheme::Q5_K),
        CliScheme::Q6K => Target::Encode(Scheme::Q6_K),
        CliScheme::Q8_0 => Target::Encode(Scheme::Q8_0),
        CliScheme::F16 => Target::Encode(Scheme::F16),
        CliScheme::Bf16 => Target::Encode(Scheme::BF16),
        CliScheme::F32 => Target::Encode(Scheme::F32),
    }
}

/// Runs `qforge export-native`.
pub fn run(args: &ExportNativeArgs) -> Result<()> {
    if args.dequantize {
        return dequantize(args);
    }
    if qnat::is_v1(&args.input) {
        return migrate_v1(args);
    }
    let report = qnat::export(&ExportJob {
        input: &args.input,
        output: &args.output,
        qtype: format!("{:?}", args.scheme).to_ascii_uppercase(),
        weights: scheme_target(args.scheme, args.block_size, args.double_quant),
        model_name: args.model_name.as_deref(),
        compute_dtype: args.compute_dtype.into(),
        refuse_qnat: true,
        run: RunOptions {
            threads: args.threads,
            quiet: args.json,
            allow_nonfinite: args.allow_nonfinite,
        },
    })?;
    report.print(args.json)
}

fn migrate_v1(args: &ExportNativeArgs) -> Result<()> {
    let sha256 = qnat::migrate_v1(&args.input, &args.output)?;
    if args.json {
        print_json(&serde_json::json!({
            "schema": "qforge.export-native-migrate/1",
            "input": args.input.display().to_string(),
            "output": args.output.display().to_string(),
            "from_version": 1,
            "to_version": 2,
            "sha256": sha256,
        }))
    } else {
        print_text(&format!(
            "migrated QNAT v1 {} to v2 {}\n",
            args.input.display(),
            args.output.display()
        ))
    }
}

/// `--dequantize`: every tensor of a QNAT v2 file to f32, written as safetensors.
fn dequantize(args: &ExportNativeArgs) -> Result<()> {
    let (tensors, sha256) = qnat::dequantize_file(&args.input, &args.output)?;
    if args.json {
        print_json(&serde_json::json!({
            "schema": "qforge.export-native-dequantize/1",
            "input": args.input.display().to_string(),
            "output": args.output.display().to_string(),
            "tensors": tensors,
            "sha256": sha256,
        }))
    } else {
        print_text(&format!(
            "dequantized {tensors} tensors of {} to {}\n",
            args.input.display(),
            args.output.display()
        ))
    }
}

//! `qforge export-native`: write QNAT v2 (NF4/FP4 with double quantization, ggml types,
//! floats), migrate a qlora-rs QNAT file, or dequantize QNAT (ours or qlora-rs's) back
//! to f32 safetensors. Parses the
//! arguments, runs [`crate::pipeline::qnat`] and prints the result.
//!
//! The report has the schema of `quantize --json` (`docs/quantize-json.md`).

use crate::cli::{ExportNativeArgs, QloraScales, Scheme as CliScheme};
use crate::formats::qnat::qlora::ScalesChoice;
use crate::formats::qnat::Scheme;
use crate::formats::weight_format::WeightFormat;
use crate::output::print_report;
use crate::pipeline::qnat::{self, ExportJob, Target};
use crate::pipeline::RunOptions;
use anyhow::Result;

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
            // export-native's report always has the digest (docs/export-native-json.md).
            digest: true,
        },
    })?;
    print_report(args.json, &report, || report.render_text())
}

fn scales(args: &ExportNativeArgs) -> ScalesChoice {
    match args.scales {
        QloraScales::Stored => ScalesChoice::Stored,
        QloraScales::Exact => ScalesChoice::Exact,
    }
}

fn migrate_v1(args: &ExportNativeArgs) -> Result<()> {
    let migrated = qnat::migrate_v1(&args.input, &args.output, scales(args))?;
    print_report(args.json, &migrated.summary(), || migrated.render_text())
}

/// `--dequantize`: every tensor of a QNAT file to f32, written as safetensors.
fn dequantize(args: &ExportNativeArgs) -> Result<()> {
    let done = qnat::dequantize_file(&args.input, &args.output, scales(args))?;
    print_report(args.json, &done.summary(), || done.render_text())
}

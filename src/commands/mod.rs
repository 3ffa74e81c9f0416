//! Command fronts: each turns parsed arguments into library calls and prints results.

pub mod bench_gemm;
pub mod export_native;
pub mod inspect;
pub mod kv_profile;
pub mod list_types;
pub mod quantize;

use crate::cli::{Cli, Command, KvProfileCommand};
use anyhow::Result;

/// Runs a parsed command line.
pub fn run(mut cli: Cli) -> Result<()> {
    if let Command::Quantize(args) = &mut cli.command {
        args.resolve_positional()?;
    }
    cli.check_outputs()?;
    if let Some(isa) = cli.command.isa() {
        crate::cpu::configure(isa.into())?;
    }
    match cli.command {
        Command::Quantize(args) if args.list_types => list_types::run(args.json),
        Command::Inspect(args) => inspect::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::ExportNative(args) => export_native::run(&args),
        Command::KvProfile(KvProfileCommand::Build(args)) => {
            crate::pipeline::with_threads(args.threads, || kv_profile::build(&args))?
        }
        Command::KvProfile(KvProfileCommand::Verify(args)) => {
            crate::pipeline::with_threads(args.threads, || kv_profile::verify(&args))?
        }
        Command::KvProfile(KvProfileCommand::Capture(args)) => {
            crate::pipeline::with_threads(args.threads, || kv_profile::capture(&args))?
        }
        Command::BenchGemm(args) => bench_gemm::run(&args),
    }
}

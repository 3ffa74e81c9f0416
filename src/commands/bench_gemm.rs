//! `qforge bench-gemm`: times the GEMM strategies on one weight matrix for each token
//! count ([`crate::kernels::bench::run`]) and prints the report. JSON schema:
//! `docs/bench-gemm-json.md`.

use crate::cli::BenchGemmArgs;
use crate::kernels::bench::{self, BenchSpec};
use crate::output::print_report;
use anyhow::Result;

/// Runs `qforge bench-gemm`.
pub fn run(args: &BenchGemmArgs) -> Result<()> {
    let report = bench::run(&BenchSpec {
        wtype: args.wtype,
        m: args.m.clone(),
        k: args.k,
        n: args.n,
        threads: args.threads,
        weights: args.weights.clone(),
        tensor: args.tensor.clone(),
        reps: args.reps,
        backends: args.backends.clone(),
        device: args.device,
        llamacpp_peer: args.llamacpp_peer.clone(),
    })?;
    print_report(args.json, &report, || report.render_text())
}

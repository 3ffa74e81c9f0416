//! The fused GEMM timed in CPU time, for tuning on a busy machine, where bench-gemm's
//! wall-clock figures are meaningless: GFLOP/s per thread-second of CPU time next to the
//! int8 `vpdpbusd` peak timed the same way in the same run.
//!
//! ```sh
//! cargo run --release --example gemm_cpu_time -- q4_k 14336 8,64,512 1
//! ```
//!
//! Arguments: weight type (default q4_k), output rows n (14336), token counts (8,64,512),
//! threads (1), kernels `avx512` or `avx2` (avx512; the int8 peak is the VNNI one either
//! way). k is 4096. With several threads, the CPU time of all of them is divided
//! by their number (the figure a quiet machine would show); the best wall time is
//! printed next to it.

use qforge::kernels::roofline::int8_peak_gops;
use qforge::kernels::{backend, synthetic_activations, Isa, QuantMatrix, WeightType};
use std::sync::Arc;
use std::time::Instant;

#[path = "common/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_ns;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let ty = <WeightType as clap::ValueEnum>::from_str(&arg(1, "q4_k"), true)
        .map_err(anyhow::Error::msg)?;
    let n: usize = arg(2, "14336").parse()?;
    let ms = arg(3, "8,64,512")
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>()?;
    let threads: usize = arg(4, "1").parse()?;
    let isa = match arg(5, "avx512").as_str() {
        "avx2" => Isa::Avx2,
        _ => Isa::Avx512Vnni,
    };
    let k = 4096;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let w = Arc::new(QuantMatrix::random(ty, n, k, 1)?);
    let b = backend("fused", w, isa)?;
    // int8_peak_gops times each thread over its own CPU time already.
    let peak =
        int8_peak_gops(Isa::Avx512Vnni, 5).ok_or_else(|| anyhow::anyhow!("no AVX-512 VNNI"))?;
    print!(
        "{} {} n={n} k={k} threads={threads}: int8 peak {peak:.0} GOP/s",
        ty.name(),
        isa.name()
    );
    for m in ms {
        let x = synthetic_activations(m, k, 3);
        let mut y = vec![0f32; m * n];
        b.matmul(&x, &mut y)?;
        let (mut cpu, mut wall) = (u64::MAX, f64::MAX);
        for _ in 0..5 {
            let (c0, w0) = (cpu_ns(), Instant::now());
            b.matmul(&x, &mut y)?;
            wall = wall.min(w0.elapsed().as_secs_f64());
            cpu = cpu.min(cpu_ns() - c0);
        }
        let flops = (2 * m * n * k) as f64;
        let gflops = flops / cpu as f64 * threads as f64;
        print!(
            " | m={m}: {gflops:.0} GFLOP/s = {:.0}% (wall {:.0})",
            100.0 * gflops / peak,
            flops / wall / 1e9
        );
    }
    println!();
    Ok(())
}

//! The fused GEMV (m=1) timed in CPU time, for tuning on a busy machine: bytes of weights
//! read per CPU-second next to the read bandwidth of a `roofline::ReadProbe` pass timed
//! the same way in the same run (the two ratios are what bench-gemm's "% of bandwidth"
//! is on a quiet machine). The weights are rotated through copies past the L3, as
//! bench-gemm does.
//!
//! ```sh
//! cargo run --example gemv_cpu_time -- q4_k,q8_0 14336 1 40
//! ```
//!
//! Arguments: weight types (default q4_k), output rows n (14336), threads (1), calls per
//! timing (40). k is 4096. CPU time is that of every thread of the process divided by
//! the thread count; the best of 5 timings.

use qforge::kernels::roofline::{l3_cache_bytes, ReadProbe};
use qforge::kernels::{backend, synthetic_activations, Isa, QuantMatrix, WeightType};
use std::sync::Arc;

#[path = "common/cpu_time.rs"]
mod cpu_time;
use cpu_time::cpu_ns;

/// The best of 5 CPU times of `f`, in seconds per thread.
fn best_cpu(threads: usize, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t0 = cpu_ns();
            f();
            (cpu_ns() - t0) as f64 / 1e9 / threads as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let n: usize = arg(2, "14336").parse()?;
    let threads: usize = arg(3, "1").parse()?;
    let calls: usize = arg(4, "40").parse()?;
    let k = 4096;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let rotation = (2 * l3_cache_bytes()).max(256 << 20) as usize;
    let probe = ReadProbe::new(rotation);
    let bw = probe.bytes() as f64
        / best_cpu(threads, || {
            std::hint::black_box(probe.pass_gbs());
        })
        / 1e9;
    println!("read bandwidth {bw:.1} GB/s per CPU-second ({threads} threads)");
    let x = synthetic_activations(1, k, 3);
    for name in arg(1, "q4_k").split(',') {
        let ty =
            <WeightType as clap::ValueEnum>::from_str(name, true).map_err(anyhow::Error::msg)?;
        let w = Arc::new(QuantMatrix::random(ty, n, k, 1)?);
        let first = backend("fused", w.clone(), Isa::Avx512Vnni)?;
        let bytes = if ty == WeightType::Q6K {
            w.bytes()
        } else {
            first.weight_bytes()
        } as usize;
        let mut all = vec![first];
        while all.len() * bytes < rotation {
            all.push(backend(
                "fused",
                Arc::new(QuantMatrix::clone(&w)),
                Isa::Avx512Vnni,
            )?);
        }
        let mut y = vec![0f32; n];
        let mut i = 0;
        let t = best_cpu(threads, || {
            for _ in 0..calls {
                all[i % all.len()].matmul(&x, &mut y).expect("matmul");
                i += 1;
            }
        }) / calls as f64;
        let gbs = bytes as f64 / t / 1e9;
        println!(
            "{:>7} m=1: {:.3} ms CPU, {gbs:.1} GB/s = {:.0}% of the read bandwidth",
            ty.name(),
            t * 1e3,
            100.0 * gbs / bw
        );
    }
    Ok(())
}

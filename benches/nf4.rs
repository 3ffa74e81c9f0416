//! NF4 quantization throughput on 64M random values.
//!
//! `cargo bench --bench nf4 [-- <elements>]`

use std::time::Instant;

use qforge::cpu::{self, Level};
use qforge::quant::bnb::{
    dequantize_4bit, double_quantize, num_blocks, packed_len, quantize_4bit_into_par,
    quantize_4bit_into_with, FourBit,
};

const BLOCK: usize = 64;

fn random_normalish(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            // Sum of two uniforms: a cheap bell shape around 0.
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let a = (s >> 40) as f32 / (1u64 << 24) as f32;
            let b = ((s >> 16) & 0xff_ffff) as f32 / (1u64 << 24) as f32;
            (a + b - 1.0) * 0.02
        })
        .collect()
}

/// Best of `reps` runs, in M elements/s.
fn measure(n: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let best = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    n as f64 / best / 1e6
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        // `cargo bench` passes `--bench`: only a plain number is ours.
        .find(|a| !a.starts_with("--"))
        .map_or(64 << 20, |a| a.parse().expect("element count"));
    let x = random_normalish(n);
    let mut packed = vec![0u8; packed_len(n)];
    let mut absmax = vec![0f32; num_blocks(n, BLOCK)];
    println!("NF4 quantize, {n} values, block {BLOCK}, best of 5");

    for kernel in Level::ALL {
        if !kernel.is_supported() {
            println!("  1 thread,  {kernel:?}: not available");
            continue;
        }
        let r = measure(n, 5, || {
            quantize_4bit_into_with(kernel, FourBit::Nf4, &x, BLOCK, &mut packed, &mut absmax)
        });
        println!("  1 thread,  {kernel:?}: {r:8.0} M elements/s");
    }
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        let r = measure(n, 5, || {
            pool.install(|| {
                quantize_4bit_into_par(FourBit::Nf4, &x, BLOCK, &mut packed, &mut absmax)
            })
        });
        println!(
            "  rayon {threads} thread(s), {:?}: {r:8.0} M elements/s",
            cpu::level()
        );
    }

    let mut out = vec![0f32; n];
    let r = measure(n, 5, || {
        dequantize_4bit(FourBit::Nf4, &packed, &absmax, BLOCK, n, &mut out)
    });
    println!("NF4 dequantize, 1 thread: {r:8.0} M elements/s");
    let t = Instant::now();
    let dq = double_quantize(&absmax);
    println!(
        "double quantization of {} absmax values: {:.1} ms",
        dq.codes.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
}

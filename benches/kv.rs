//! Encode/decode throughput of the FibQuant codec at d = 128.
//!
//! `cargo bench --bench kv [-- ROWS]`; prints vectors/s for
//! (k=4, N=32) and (k=4, N=256), single-threaded and on the rayon pool,
//! plus the TurboQuant-style scalar codec for reference.

use std::time::Instant;

use anyhow::Result;
use qforge::cpu::{self, Level};
use qforge::kv::codec::{KvCodec, VqCodec, VqParams};
use qforge::kv::synth::{synth_kv, SynthConfig};
use qforge::kv::tensor::{KvRole, Matrix};

fn time_best<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    Ok((best, last.expect("reps > 0")))
}

/// (encode, decode) vectors/s into preallocated buffers, best of 5, on `threads` threads.
fn bench(codec: &VqCodec, m: &Matrix, threads: usize) -> Result<(f64, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut enc = vec![0u8; codec.encoded_len(m.rows())];
    let mut dec = vec![0.0f32; m.data().len()];
    pool.install(|| {
        let rows = m.rows() as f64;
        let (te, _) = time_best(5, || codec.encode_into(m.data(), &mut enc))?;
        let (td, _) = time_best(5, || codec.decode_into(&enc, &mut dec))?;
        Ok((rows / te, rows / td))
    })
}

fn main() -> Result<()> {
    let rows: usize = std::env::args()
        .skip(1)
        // `cargo bench` passes `--bench`: only a plain number is ours.
        .find(|a| !a.starts_with("--"))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(262_144);
    let d = 128;
    // Synthetic keys: outlier channels + RoPE structure, like real caches.
    let cfg = SynthConfig {
        layers: 1,
        kv_heads: 1,
        query_heads: 1,
        head_dim: d,
        tokens: rows,
        n_queries: 1,
        ..SynthConfig::default()
    };
    let (kv, _) = synth_kv(&cfg)?;
    let m = Matrix::new(rows, d, kv.rows(KvRole::Key))?;
    let threads = rayon::current_num_threads();
    println!(
        "rows={rows} d={d} kernel={:?} rayon_threads={threads}",
        cpu::level()
    );
    println!(
        "{:<22} {:>6} {:>14} {:>14} {:>14} {:>14}",
        "codec", "bpv", "enc 1T vec/s", "dec 1T vec/s", "enc MT vec/s", "dec MT vec/s"
    );
    let configs: [(usize, usize, &str); 3] = [
        (4, 32, "fibquant-k4-n32"),
        (4, 256, "fibquant-k4-n256"),
        (1, 4, "turboquant-b2"),
    ];
    let mut codecs = Vec::new();
    for (k, n, name) in configs {
        let mut p = VqParams::new(d, k, n);
        p.lloyd_iterations = 10;
        let codec = p.build(name, None)?;
        let (e1, d1) = bench(&codec, &m, 1)?;
        let (em, dm) = bench(&codec, &m, threads)?;
        println!(
            "{name:<22} {:>6.3} {e1:>14.0} {d1:>14.0} {em:>14.0} {dm:>14.0}",
            codec.bits_per_value()
        );
        codecs.push(codec);
    }
    // Single-thread encode per search kernel (outputs are identical; speed differs).
    let small = m.slice_rows(0, m.rows().min(16_384))?;
    println!(
        "\nsingle-thread encode by search kernel, vectors/s ({} rows):",
        small.rows()
    );
    for codec in &codecs {
        let mut line = format!("{:<22}", codec.name());
        for kernel in [Level::Avx512, Level::Avx2, Level::Scalar] {
            let mut c = codec.clone();
            if c.set_kernel(kernel).is_err() {
                continue;
            }
            let (e1, _) = bench(&c, &small, 1)?;
            line.push_str(&format!("  {kernel:?} {e1:>10.0}"));
        }
        println!("{line}");
    }
    Ok(())
}

//! Quantize throughput benchmark (issue #3). Run: `cargo bench --bench quantize`.
//!
//! Part 1: per-type codec throughput on 16 M N(0, 0.02) values, single thread, for the
//! dispatched SIMD path and the scalar path (a line-by-line port of ggml's reference
//! code, the baseline measured in the same run), plus all threads.
//! Part 2: end to end, `qforge quantize` of a generated 1 GB F16 safetensors model
//! (32 tensors of 4096 x 4096) to Q4_K_M and Q8_0, with wall time and peak RSS taken by
//! `/usr/bin/time`. Set `QFORGE_BENCH_SKIP_E2E=1` to skip part 2, `QFORGE_BENCH_SKIP_CODECS=1`
//! to skip part 1.

use qforge::cpu;
use qforge::formats::ggml_type::GgmlType;
use qforge::quant::ggml;
use rayon::prelude::*;
use std::io::Write;
use std::time::Instant;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * 0.02) as f32
        })
        .collect()
}

fn rate(elems: usize, f: impl Fn()) -> f64 {
    f(); // warm up
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    elems as f64 / best / 1e6
}

fn codec_table() {
    const ROW: usize = 4096;
    let x = gaussian(16 << 20, 1);
    println!("## codec throughput, M elements/s (16 M values, rows of {ROW}, best of 3)");
    println!("simd level: {:?}", ggml::active_isa());
    println!("| type | scalar 1 thread (ggml reference port) | dispatched 1 thread | speedup | all {} threads |", rayon::current_num_threads());
    println!("|---|---|---|---|---|");
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::F16,
        GgmlType::BF16,
    ];
    for ty in types {
        let c = ty.codec().unwrap();
        let rb = ROW / c.block_size() * c.type_size();
        let mut out = vec![0u8; x.len() / ROW * rb];
        let serial = |out: &mut [u8]| {
            for (r, d) in x.chunks(ROW).zip(out.chunks_mut(rb)) {
                (c.quantize_row)(r, d, None);
            }
        };
        let cell = std::cell::RefCell::new(&mut out);
        let scalar = cpu::with_level(cpu::Level::Scalar, || {
            rate(x.len(), || serial(&mut cell.borrow_mut()))
        })
        .expect("scalar is always supported");
        let simd = rate(x.len(), || serial(&mut cell.borrow_mut()));
        let par = rate(x.len(), || {
            cell.borrow_mut()
                .par_chunks_mut(rb)
                .zip(x.par_chunks(ROW))
                .for_each(|(d, r)| (c.quantize_row)(r, d, None));
        });
        println!(
            "| {ty} | {scalar:.1} | {simd:.1} | {:.2}x | {par:.1} |",
            simd / scalar
        );
    }
}

fn end_to_end() -> std::io::Result<()> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/qforge");
    if !bin.exists() {
        println!("(build the release binary first: cargo build --release)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("model.safetensors");
    let (n_tensors, rows, cols) = (32usize, 4096usize, 4096usize);
    let mut header = String::from("{");
    for i in 0..n_tensors {
        let off = i * rows * cols * 2;
        header += &format!(
            "{}\"blk.{i}.ffn_up.weight\":{{\"dtype\":\"F16\",\"shape\":[{rows},{cols}],\"data_offsets\":[{off},{}]}}",
            if i == 0 { "" } else { "," },
            off + rows * cols * 2
        );
    }
    header += "}";
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input)?);
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for i in 0..n_tensors {
        let x = gaussian(rows * cols, i as u64 + 7);
        let bytes: Vec<u8> = x
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        f.write_all(&bytes)?;
    }
    f.flush()?;
    drop(f);
    let elems = (n_tensors * rows * cols) as f64;
    println!("\n## end to end: 1 GiB F16 safetensors ({n_tensors} x {rows} x {cols}), all threads");
    println!("| type | wall s | M elements/s | peak RSS MiB | output MiB |");
    println!("|---|---|---|---|---|");
    for ty in ["Q4_K_M", "Q8_0"] {
        let out = dir.path().join(format!("{ty}.gguf"));
        let t = Instant::now();
        let o = std::process::Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(&bin)
            .args(["quantize", "-t", ty, "-o"])
            .arg(&out)
            .arg(&input)
            .output()?;
        let wall = t.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&o.stderr);
        let rss_kb: f64 = stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(f64::NAN);
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {ty} | {wall:.2} | {:.1} | {:.0} | {:.0} |",
            elems / wall / 1e6,
            rss_kb / 1024.0,
            size as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

fn main() {
    if std::env::var_os("QFORGE_BENCH_SKIP_CODECS").is_none() {
        codec_table();
    }
    if std::env::var_os("QFORGE_BENCH_SKIP_E2E").is_none() {
        end_to_end().expect("end-to-end benchmark");
    }
}

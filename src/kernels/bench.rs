//! The `bench-gemm` measurement: times the GEMM strategies on one weight matrix for each
//! token count, next to the memory bandwidth and int8 peak measured in the same run.
//!
//! Every measurement is the median of `reps` runs after a warm-up; each run uses the
//! next of enough weight copies to exceed the last-level cache (at least 128 MiB), so a
//! GEMV reads its weights from memory as it would in a model. [`run`] returns the
//! [`Report`] (JSON schema: `docs/bench-gemm-json.md`), which also renders itself as text.

use crate::formats::TensorSource;
use crate::kernels::cuda::Chain::{Programmatic, Serial};
use crate::kernels::llamacpp_peer::{self, PeerSpec};
use crate::kernels::roofline::{self, median};
use crate::kernels::{self, cuda, Isa, QuantMatrix, WeightType};
use crate::output::human_bytes;
use crate::{bail_invalid, pipeline};
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Schema identifier of the JSON report (`docs/bench-gemm-json.md`).
pub const SCHEMA: &str = "qforge.bench-gemm/2";

/// Largest matrix bench-gemm builds (elements): 4 GiB as f32.
const MAX_ELEMENTS: usize = 1 << 30;

/// The least the rotated weight copies of one strategy add up to.
const MIN_ROTATION_BYTES: u64 = 128 << 20;

/// With `--device cuda`: the least number of rotated weight copies, the least bytes they add
/// up to (also at least 4 x the L2), and the buffer the read bandwidth is measured on (also at
/// least 8 x the L2).
const GPU_MIN_COPIES: usize = 4;
const GPU_MIN_ROTATION_BYTES: u64 = 256 << 20;
const GPU_BANDWIDTH_BYTES: u64 = 1 << 30;

/// Rows of the output checked against the f64 reference per measurement.
const CHECKED_ROWS: usize = 16;

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Weight type (`q4_k`, ...).
    pub weight_type: &'static str,
    /// Output rows.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `random` or `FILE:TENSOR`.
    pub weights: String,
    /// Bytes of the quantized matrix.
    pub weight_bytes: u64,
    /// Stored bits per weight.
    pub bits_per_weight: f64,
    /// Worker threads.
    pub threads: usize,
    /// Instruction set of the fused kernels (`cuda` with `--device cuda`).
    pub isa: &'static str,
    /// Where the product ran: `cpu` or `cuda`.
    pub device: &'static str,
    /// The GPU with `--device cuda`, else null.
    pub gpu: Option<GpuInfo>,
    /// Timed runs per measurement.
    pub reps: usize,
    /// Ceilings measured in this run.
    pub roofline: Roofline,
    /// One entry per strategy that ran.
    pub backends: Vec<BackendSummary>,
    /// Strategies that could not run, with why.
    pub skipped: Vec<Skipped>,
    /// One entry per strategy and token count.
    pub results: Vec<Measurement>,
}

/// The GPU `--device cuda` ran on.
#[derive(Debug, Serialize)]
pub struct GpuInfo {
    /// Device name.
    pub name: String,
    /// Compute capability, `major.minor`.
    pub compute_capability: String,
    /// Multiprocessors.
    pub multiprocessors: u32,
    /// Clocks read with nvidia-smi right after the measurements; null without nvidia-smi.
    pub clocks: Option<cuda::Clocks>,
    /// sha256 of the CUDA source the loaded PTX was compiled from.
    pub ptx_source_sha256: Option<String>,
}

/// The machine's ceilings.
#[derive(Debug, Serialize)]
pub struct Roofline {
    /// Read bandwidth from memory, GB/s (10^9 bytes), all threads (GPU memory with
    /// `--device cuda`).
    pub bandwidth_gbs: f64,
    /// Size of the buffer it was measured on.
    pub bandwidth_buffer_bytes: u64,
    /// int8 multiply-accumulate peak, GOP/s (2 ops per multiply-add); null without one.
    pub int8_peak_gops: Option<f64>,
    /// Last-level cache size (the GPU's L2 with `--device cuda`).
    pub l3_cache_bytes: u64,
}

/// What one strategy holds.
#[derive(Debug, Serialize)]
pub struct BackendSummary {
    /// Strategy name.
    pub backend: &'static str,
    /// Weight copies rotated through.
    pub copies: usize,
    /// Bytes of weights one copy keeps resident (f32 for eager dequantization).
    pub weight_bytes: u64,
    /// Transient bytes of one call at the largest m (activations, tiles, outputs).
    pub scratch_bytes: u64,
    /// Peak resident memory added by building one copy and running every m once;
    /// null where the peak cannot be reset (not Linux).
    pub peak_rss_delta_bytes: Option<u64>,
}

/// A strategy that did not run.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// Strategy name.
    pub backend: String,
    /// Why.
    pub reason: String,
}

/// One strategy at one token count.
#[derive(Debug, Serialize)]
pub struct Measurement {
    /// Strategy name.
    pub backend: &'static str,
    /// Tokens.
    pub m: usize,
    /// Median time of one call, milliseconds.
    pub median_ms: f64,
    /// Fastest call, milliseconds.
    pub min_ms: f64,
    /// `--device cuda`: the median over `reps` passes of one call per weight copy back to
    /// back between one pair of CUDA events, divided by the copies (how llama.cpp's peer is
    /// timed); `median_ms` has one pair of events around each call. Null on the CPU.
    pub batched_ms: Option<f64>,
    /// `effective_gbs` at `batched_ms`, as a percentage of the measured bandwidth; null on
    /// the CPU.
    pub batched_pct_bandwidth: Option<f64>,
    /// `--device cuda`: as `batched_ms`, each call's kernels launched with programmatic
    /// dependent launch (a kernel starts while the previous call's drains, loading weights
    /// until that call's outputs are visible); `batched_ms` runs them in plain stream order.
    /// Null on the CPU.
    pub batched_pdl_ms: Option<f64>,
    /// `effective_gbs` at `batched_pdl_ms`, as a percentage of the measured bandwidth; null
    /// on the CPU.
    pub batched_pdl_pct_bandwidth: Option<f64>,
    /// `2 m n k` over the median time, 10^9 per second.
    pub gflops: f64,
    /// Weight bytes held plus activations and outputs (f32), over the median time.
    pub effective_gbs: f64,
    /// `effective_gbs` as a percentage of the measured bandwidth.
    pub pct_bandwidth: f64,
    /// The median read bandwidth of the roofline's read passes interleaved with this
    /// result's timed runs (one pass before each), GB/s: the memory as it was while these
    /// calls ran, on a machine whose bandwidth drifts. Null for the llama.cpp peer (its own
    /// process) and on the GPU.
    pub paired_read_gbs: Option<f64>,
    /// `effective_gbs` as a percentage of `paired_read_gbs`; null with it.
    pub pct_paired_bandwidth: Option<f64>,
    /// `gflops` as a percentage of the int8 peak; null without one.
    pub pct_int8_peak: Option<f64>,
    /// candle's median over this one's (above 1: faster than candle); null without candle.
    pub speedup_vs_candle: Option<f64>,
    /// The faster llama.cpp mode's median (`llamacpp-repack` or `llamacpp-plain`) over this
    /// one's (above 1: faster than llama.cpp); null without the peer.
    pub speedup_vs_llamacpp: Option<f64>,
    /// Relative error (L2) against the f64 product of the dequantized weights, on a sample
    /// of output rows.
    pub rel_err: f64,
}

/// What to measure (the arguments of `qforge bench-gemm`).
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Weight type.
    pub wtype: WeightType,
    /// Token counts, one measurement each.
    pub m: Vec<usize>,
    /// Inner dimension of random weights.
    pub k: usize,
    /// Output rows of random weights.
    pub n: usize,
    /// Worker threads (all cores when `None`).
    pub threads: Option<usize>,
    /// A model file to take the weights from (with `tensor`), instead of random values.
    pub weights: Option<PathBuf>,
    /// The tensor of `weights`.
    pub tensor: Option<String>,
    /// Timed runs per measurement.
    pub reps: usize,
    /// Strategies to run (names of [`kernels::BACKENDS`]; CPU only).
    pub backends: Vec<String>,
    /// Where to run.
    pub device: Device,
    /// The llama.cpp peer program (`tools/ggml-peer`); else `QFORGE_GGML_PEER`.
    pub llamacpp_peer: Option<PathBuf>,
}

/// Where `bench-gemm` runs the product (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU strategies of `--backends`.
    Cpu,
    /// qforge's CUDA kernels on GPU 0 ([`cuda`]).
    Cuda,
}

/// Checks `args`, then measures every strategy of it (the instruction set is
/// [`Isa::current`]).
pub fn run(args: &BenchSpec) -> Result<Report> {
    let ty = args.wtype;
    let isa = Isa::current();
    if args.m.is_empty() || args.m.contains(&0) {
        bail_invalid!("--m needs token counts of at least 1");
    }
    if args.reps == 0 {
        bail_invalid!("--reps must be at least 1");
    }
    if args.device == Device::Cuda {
        return pipeline::with_threads(args.threads, || bench_cuda(args, ty))?;
    }
    for b in &args.backends {
        if !kernels::BACKENDS.contains(&b.as_str()) && b != llamacpp_peer::NAME {
            bail_invalid!(
                "unknown backend {b:?}: one of {}",
                kernels::BACKENDS.join(", ")
            );
        }
    }
    // candle runs its own thread pool, sized by CANDLE_NUM_THREADS: give it ours.
    if let (Some(t), None) = (args.threads, std::env::var_os("CANDLE_NUM_THREADS")) {
        // SAFETY: set before any other thread of this process reads the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", t.to_string()) };
    }
    pipeline::with_threads(args.threads, || bench(args, ty, isa))?
}

/// The weight matrix: a tensor of `--weights` or seeded random values.
fn load_weights(args: &BenchSpec, ty: WeightType) -> Result<(QuantMatrix, String)> {
    match (&args.weights, &args.tensor) {
        (Some(path), Some(name)) => {
            let src = TensorSource::open(path)?;
            let w = QuantMatrix::from_tensor(&src, name, ty)?;
            Ok((w, format!("{}:{name}", path.display())))
        }
        _ => {
            QuantMatrix::check_shape(ty, args.n, args.k)?;
            if args.n.checked_mul(args.k).is_none_or(|e| e > MAX_ELEMENTS) {
                bail_invalid!("--n x --k is larger than bench-gemm builds (2^30 values)");
            }
            Ok((
                QuantMatrix::random(ty, args.n, args.k, 0x9e37_79b9)?,
                "random".into(),
            ))
        }
    }
}

fn bench(args: &BenchSpec, ty: WeightType, isa: Isa) -> Result<Report> {
    let (w, weights) = load_weights(args, ty)?;
    let w = Arc::new(w);
    let (n, k) = (w.n, w.k);
    let l3 = roofline::l3_cache_bytes();
    let rotation = MIN_ROTATION_BYTES.max(2 * l3);
    tracing::info!("measuring the roofline");
    let bw_bytes = rotation.max(256 << 20) as usize;
    let probe = roofline::ReadProbe::new(bw_bytes);
    let roof = Roofline {
        bandwidth_gbs: (0..args.reps.min(5))
            .map(|_| probe.pass_gbs())
            .fold(0.0, f64::max),
        bandwidth_buffer_bytes: bw_bytes as u64,
        int8_peak_gops: roofline::int8_peak_gops(isa, args.reps.min(5)),
        l3_cache_bytes: l3,
    };
    let (inputs, checked, references) = sample(args, &w);

    let (mut backends, mut skipped, mut results) = (Vec::new(), Vec::new(), Vec::new());
    let mut candle_ms: Vec<Option<f64>> = vec![None; args.m.len()];
    // candle first, so every other strategy can be compared with it.
    let mut order: Vec<&str> = args.backends.iter().map(String::as_str).collect();
    order.sort_by_key(|b| *b != "candle");
    order.dedup();
    if order.contains(&llamacpp_peer::NAME) {
        let spec = PeerSpec {
            w: &w,
            m: &args.m,
            inputs: &inputs,
            threads: rayon::current_num_threads(),
            copies: rotation.div_ceil(w.bytes().max(1)).clamp(1, 64) as usize,
            reps: args.reps,
        };
        let (b, k, r) = peer(args, &spec, &roof, (&checked, &references))?;
        backends.extend(b);
        skipped.extend(k);
        results.extend(r);
    }
    for name in order.into_iter().filter(|b| *b != llamacpp_peer::NAME) {
        tracing::info!("{name}: building");
        let reset = roofline::reset_peak_rss();
        let before = roofline::rss_bytes();
        let first = match kernels::backend(name, w.clone(), isa) {
            Ok(b) => b,
            Err(e) if crate::error::exit_code(&e) == 2 => {
                skipped.push(Skipped {
                    backend: name.into(),
                    reason: format!("{e:#}"),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        // Warm-up of every m on the first copy; it also gives the peak memory.
        let mut outputs = Vec::new();
        for x in &inputs {
            let mut y = vec![0f32; x.len() / k * n];
            first.matmul(x, &mut y)?;
            outputs.push(y);
        }
        let peak = match (reset, before, roofline::peak_rss_bytes()) {
            (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
            _ => None,
        };
        let copies = rotation.div_ceil(first.weight_bytes().max(1)).clamp(1, 64) as usize;
        let mut all = vec![first];
        for _ in 1..copies {
            let copy = Arc::new(QuantMatrix::clone(&w));
            all.push(kernels::backend(name, copy, isa)?);
        }
        let max_m = *args.m.iter().max().expect("non-empty");
        backends.push(BackendSummary {
            backend: all[0].name(),
            copies,
            weight_bytes: all[0].weight_bytes(),
            scratch_bytes: all[0].scratch_bytes(max_m),
            peak_rss_delta_bytes: peak,
        });
        for (i, (x, y)) in inputs.iter().zip(&mut outputs).enumerate() {
            let m = args.m[i];
            tracing::info!("{name}: m={m}");
            let mut times = Vec::with_capacity(args.reps);
            let mut reads = Vec::with_capacity(args.reps);
            for rep in 0..args.reps {
                let b = &all[(rep + 1) % copies];
                reads.push(probe.pass_gbs());
                let t0 = Instant::now();
                b.matmul(x, y)?;
                times.push(t0.elapsed().as_secs_f64());
            }
            let mut r = measurement(
                all[0].name(),
                (m, n, k),
                all[0].bytes_read(m),
                &mut times,
                &roof,
            );
            let paired = roofline::median(&mut reads);
            r.paired_read_gbs = Some(paired);
            r.pct_paired_bandwidth = Some(100.0 * r.effective_gbs / paired);
            if name == "candle" {
                candle_ms[i] = Some(r.median_ms);
            }
            r.speedup_vs_candle = candle_ms[i].map(|c| c / r.median_ms);
            r.rel_err = rel_err(y, n, &checked, &references[i]);
            results.push(r);
        }
    }
    for (i, &m) in args.m.iter().enumerate() {
        let llama = results
            .iter()
            .filter(|r| r.m == m && r.backend.starts_with("llamacpp-"))
            .map(|r| r.median_ms)
            .reduce(f64::min);
        for r in results.iter_mut().filter(|r| r.m == m) {
            r.speedup_vs_llamacpp = llama.map(|l| l / r.median_ms);
            if r.backend.starts_with("llamacpp-") {
                r.speedup_vs_candle = candle_ms[i].map(|c| c / r.median_ms);
            }
        }
    }
    Ok(report(
        &w,
        weights,
        args.reps,
        (isa.name(), "cpu", None),
        roof,
        (backends, skipped, results),
    ))
}

/// What the llama.cpp peer measured: its backends, its skipped modes (or the whole peer, with
/// why), and its results (`rel_err` filled in, the speedups left for the caller).
type PeerFound = (Vec<BackendSummary>, Vec<Skipped>, Vec<Measurement>);

/// Runs the llama.cpp peer ([`llamacpp_peer`]) on `spec`, or says why it is skipped.
fn peer(
    args: &BenchSpec,
    spec: &PeerSpec<'_>,
    roof: &Roofline,
    (checked, references): (&[usize], &[Vec<f64>]),
) -> Result<PeerFound> {
    let skip = |reason: String| {
        let s = Skipped {
            backend: llamacpp_peer::NAME.into(),
            reason,
        };
        Ok((Vec::new(), vec![s], Vec::new()))
    };
    let program = match llamacpp_peer::locate(args.llamacpp_peer.as_deref())? {
        Ok(p) => p,
        Err(why) => return skip(why),
    };
    if let Err(why) = llamacpp_peer::ggml_name(spec.w.ty) {
        return skip(why);
    }
    tracing::info!("llamacpp: running {}", program.display());
    let run = match llamacpp_peer::run(&program, spec)? {
        Ok(r) => r,
        Err(why) => return skip(why),
    };
    let (n, k) = (spec.w.n, spec.w.k);
    let mut found: PeerFound = (Vec::new(), Vec::new(), Vec::new());
    for (backend, reason) in run.skipped {
        found.1.push(Skipped {
            backend: backend.into(),
            reason,
        });
    }
    for mode in run.modes {
        found.0.push(BackendSummary {
            backend: mode.backend,
            copies: spec.copies,
            weight_bytes: mode.weight_bytes,
            scratch_bytes: mode.scratch_bytes,
            peak_rss_delta_bytes: None,
        });
        for (i, (&m, &(median_ms, min_ms))) in spec.m.iter().zip(&mode.times).enumerate() {
            let mut times = [median_ms / 1e3];
            let mut r = measurement(mode.backend, (m, n, k), mode.weight_bytes, &mut times, roof);
            r.min_ms = min_ms;
            r.rel_err = rel_err(&mode.outputs[i], n, checked, &references[i]);
            found.2.push(r);
        }
    }
    Ok(found)
}

/// The activations of every `--m`, the sampled output rows and their f64 reference outputs.
fn sample(args: &BenchSpec, w: &QuantMatrix) -> (Vec<Vec<f32>>, Vec<usize>, Vec<Vec<f64>>) {
    let (n, k) = (w.n, w.k);
    let inputs: Vec<Vec<f32>> = args
        .m
        .iter()
        .map(|&m| kernels::synthetic_activations(m, k, 0x5eed ^ m as u64))
        .collect();
    let checked: Vec<usize> = (0..CHECKED_ROWS.min(n))
        .map(|i| i * n / CHECKED_ROWS.min(n))
        .collect();
    let references = inputs
        .iter()
        .map(|x| kernels::reference_rows(w, x, &checked))
        .collect();
    (inputs, checked, references)
}

/// One measurement from the call times (seconds) of `backend` at `(m, n, k)`; the candle
/// comparison and the error are left for the caller.
fn measurement(
    backend: &'static str,
    (m, n, k): (usize, usize, usize),
    weight_bytes: u64,
    times: &mut [f64],
    roof: &Roofline,
) -> Measurement {
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let t = median(times);
    let flops = 2.0 * (m * n * k) as f64;
    let bytes = weight_bytes as f64 + ((m * k + m * n) * 4) as f64;
    let gbs = bytes / t / 1e9;
    let gflops = flops / t / 1e9;
    Measurement {
        backend,
        m,
        median_ms: t * 1e3,
        min_ms: min * 1e3,
        batched_ms: None,
        batched_pct_bandwidth: None,
        batched_pdl_ms: None,
        batched_pdl_pct_bandwidth: None,
        gflops,
        effective_gbs: gbs,
        pct_bandwidth: 100.0 * gbs / roof.bandwidth_gbs,
        paired_read_gbs: None,
        pct_paired_bandwidth: None,
        pct_int8_peak: roof.int8_peak_gops.map(|p| 100.0 * gflops / p),
        speedup_vs_candle: None,
        speedup_vs_llamacpp: None,
        rel_err: f64::NAN,
    }
}

/// `--device cuda`: qforge's CUDA kernels on GPU 0, timed with CUDA events over at least
/// [`GPU_MIN_COPIES`] weight copies that together exceed the L2, next to the GPU memory's
/// read bandwidth measured in the same run.
fn bench_cuda(args: &BenchSpec, ty: WeightType) -> Result<Report> {
    let gpu = cuda::Gpu::open()?;
    let (w, weights) = load_weights(args, ty)?;
    cuda::Gpu::check_shape(ty, w.n, w.k)?;
    let (n, k) = (w.n, w.k);
    tracing::info!(
        "cuda: {} ({} SMs), measuring the read bandwidth",
        gpu.name,
        gpu.sms
    );
    let bw_bytes = (GPU_BANDWIDTH_BYTES).max(8 * gpu.l2_bytes);
    let roof = Roofline {
        bandwidth_gbs: gpu.read_bandwidth_gbs(bw_bytes as usize, args.reps.clamp(3, 20))?,
        bandwidth_buffer_bytes: bw_bytes,
        int8_peak_gops: None,
        l3_cache_bytes: gpu.l2_bytes,
    };
    let (inputs, checked, references) = sample(args, &w);
    let first = gpu.upload(&w)?;
    let rotation = GPU_MIN_ROTATION_BYTES.max(4 * gpu.l2_bytes);
    let copies = (rotation.div_ceil(first.bytes().max(1)) as usize).clamp(GPU_MIN_COPIES, 64);
    let mut all = vec![first];
    for _ in 1..copies {
        all.push(gpu.upload(&w)?);
    }
    let mut results = Vec::new();
    let mut scratch_bytes = 0;
    for (x, &m) in inputs.iter().zip(&args.m) {
        tracing::info!("cuda: m={m}");
        let mut s = gpu.scratch(&all[0], x)?;
        scratch_bytes = scratch_bytes.max(s.bytes());
        for c in &all {
            gpu.enqueue(c, &mut s, Serial)?;
        }
        let mut times = gpu.time(args.reps, |rep| {
            gpu.enqueue(&all[rep % copies], &mut s, Serial)
        })?;
        let mut batched = gpu.time_batched(args.reps, copies, |i| {
            gpu.enqueue(&all[i % copies], &mut s, Serial)
        })?;
        let mut chained = gpu.time_batched(args.reps, copies, |i| {
            gpu.enqueue(&all[i % copies], &mut s, Programmatic)
        })?;
        let y = gpu.outputs(&s)?;
        let mut r = measurement("cuda", (m, n, k), all[0].bytes(), &mut times, &roof);
        let pct = |t: f64| r.pct_bandwidth * r.median_ms / (t * 1e3);
        let (tb, tp) = (median(&mut batched), median(&mut chained));
        r.batched_ms = Some(tb * 1e3);
        r.batched_pct_bandwidth = Some(pct(tb));
        r.batched_pdl_ms = Some(tp * 1e3);
        r.batched_pdl_pct_bandwidth = Some(pct(tp));
        r.rel_err = rel_err(&y, n, &checked, &references[results.len()]);
        results.push(r);
    }
    let (major, minor) = gpu.compute_capability;
    let info = GpuInfo {
        name: gpu.name.clone(),
        compute_capability: format!("{major}.{minor}"),
        multiprocessors: gpu.sms,
        clocks: cuda::Clocks::read(),
        ptx_source_sha256: gpu.ptx_source_sha256.clone(),
    };
    let backends = vec![BackendSummary {
        backend: "cuda",
        copies,
        weight_bytes: all[0].bytes(),
        scratch_bytes,
        peak_rss_delta_bytes: None,
    }];
    Ok(report(
        &w,
        weights,
        args.reps,
        ("cuda", "cuda", Some(info)),
        roof,
        (backends, Vec::new(), results),
    ))
}

/// The report of a run on `w`: `(isa, device, gpu)` and `(backends, skipped, results)`.
fn report(
    w: &QuantMatrix,
    weights: String,
    reps: usize,
    (isa, device, gpu): (&'static str, &'static str, Option<GpuInfo>),
    roofline: Roofline,
    (backends, skipped, results): (Vec<BackendSummary>, Vec<Skipped>, Vec<Measurement>),
) -> Report {
    Report {
        schema: SCHEMA,
        weight_type: w.ty.name(),
        n: w.n,
        k: w.k,
        weights,
        weight_bytes: w.bytes(),
        bits_per_weight: w.bytes() as f64 * 8.0 / (w.n * w.k) as f64,
        threads: rayon::current_num_threads(),
        isa,
        device,
        gpu,
        reps,
        roofline,
        backends,
        skipped,
        results,
    }
}

/// `|y - ref| / |ref|` (L2) over the sampled rows.
fn rel_err(y: &[f32], n: usize, rows: &[usize], reference: &[f64]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (i, want) in reference.iter().enumerate() {
        let (t, j) = (i / rows.len(), i % rows.len());
        let got = f64::from(y[t * n + rows[j]]);
        num += (got - want) * (got - want);
        den += want * want;
    }
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

impl Report {
    /// The human-readable table.
    pub fn render_text(&self) -> String {
        let r = self;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bench-gemm {} n={} k={} ({}, {:.4} bits/weight, {}), {} threads, {}",
            r.weight_type,
            r.n,
            r.k,
            human_bytes(r.weight_bytes),
            r.bits_per_weight,
            r.weights,
            r.threads,
            r.isa
        );
        if let Some(g) = &r.gpu {
            let clocks = g.clocks.as_ref().map_or("clocks n/a".into(), |c| {
                format!(
                    "SM {} MHz (max {}), memory {} MHz (max {}), driver {}",
                    c.sm_mhz, c.max_sm_mhz, c.mem_mhz, c.max_mem_mhz, c.driver
                )
            });
            let _ = writeln!(
                s,
                "gpu: {} (sm_{}, {} SMs), {clocks}",
                g.name,
                g.compute_capability.replace('.', ""),
                g.multiprocessors
            );
        }
        let peak = r
            .roofline
            .int8_peak_gops
            .map_or("n/a".into(), |p| format!("{p:.0} GOP/s"));
        let _ = writeln!(
            s,
            "roofline: read bandwidth {:.1} GB/s ({} buffer), int8 peak {peak}, L3 {}",
            r.roofline.bandwidth_gbs,
            human_bytes(r.roofline.bandwidth_buffer_bytes),
            human_bytes(r.roofline.l3_cache_bytes)
        );
        for b in &r.backends {
            let peak = b.peak_rss_delta_bytes.map_or("n/a".into(), human_bytes);
            let _ = writeln!(
                s,
                "  {:<15} weights {} x {} copies, scratch {} (largest m), peak RSS +{peak}",
                b.backend,
                human_bytes(b.weight_bytes),
                b.copies,
                human_bytes(b.scratch_bytes)
            );
        }
        for k in &r.skipped {
            let _ = writeln!(s, "  {:<15} skipped: {}", k.backend, k.reason);
        }
        let _ = writeln!(
            s,
            "{:<15} {:>5} {:>10} {:>9} {:>8} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9}",
            "backend",
            "m",
            "median ms",
            "GFLOP/s",
            "GB/s",
            "%bw",
            "%pair",
            "%int8",
            "vs candle",
            "vs llama",
            "rel err"
        );
        for m in &r.results {
            let opt =
                |v: Option<f64>, suffix: &str| v.map_or("-".into(), |v| format!("{v:.2}{suffix}"));
            let _ = writeln!(
                s,
                "{:<15} {:>5} {:>10.3} {:>9.1} {:>8.2} {:>6.1} {:>6} {:>6} {:>9} {:>9} {:>9.2e}",
                m.backend,
                m.m,
                m.median_ms,
                m.gflops,
                m.effective_gbs,
                m.pct_bandwidth,
                opt(m.pct_paired_bandwidth, ""),
                opt(m.pct_int8_peak, ""),
                opt(m.speedup_vs_candle, "x"),
                opt(m.speedup_vs_llamacpp, "x"),
                m.rel_err
            );
            if let (Some(b), Some(p)) = (m.batched_ms, m.batched_pct_bandwidth) {
                let _ = writeln!(
                    s,
                    "{:<15} {:>5} {b:>10.3} back to back ({p:.1}% bw)",
                    "", ""
                );
            }
            if let (Some(b), Some(p)) = (m.batched_pdl_ms, m.batched_pdl_pct_bandwidth) {
                let _ = writeln!(
                    s,
                    "{:<15} {:>5} {b:>10.3} back to back, programmatic launch ({p:.1}% bw)",
                    "", ""
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_err_of_sampled_rows() {
        // y is 2 tokens x 3 rows; rows 0 and 2 are sampled.
        let y = [1.0, 9.0, 2.0, 3.0, 9.0, 4.0];
        let reference = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(rel_err(&y, 3, &[0, 2], &reference), 0.0);
        let off = [1.0, 2.0, 3.0, 5.0];
        let want = (1.0f64 / (1.0 + 4.0 + 9.0 + 25.0)).sqrt();
        assert!((rel_err(&y, 3, &[0, 2], &off) - want).abs() < 1e-12);
    }
}

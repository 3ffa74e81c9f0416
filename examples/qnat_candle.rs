//! A real llama checkpoint through qforge into candle.
//!
//! ```sh
//! cargo run --release --example qnat_candle -- /work/cache/hf-models/SmolLM2-135M-Instruct
//! cargo run --release --example qnat_candle -- MODEL_DIR --tokens 32 --prompt "The capital of France is"
//! ```
//!
//! 1. qforge (in process, its command line) converts the Hugging Face folder to a Q8_0
//!    GGUF (`quantize -t Q8_0`, llama.cpp's names and layout) and that GGUF to QNAT
//!    (`export-native --scheme q8_0`: the blocks repacked byte for byte, the GGUF metadata
//!    carried typed).
//! 2. candle-transformers' `quantized_llama` loads both: the GGUF with candle's own reader,
//!    the QNAT through `qforge::candle::QuantModel::gguf_content`. Their logits for the
//!    prompt must agree within f32 tolerance; the QNAT model then generates greedily.
//! 3. The same llama (a small forward written here after `quantized_llama`, the token
//!    embedding read in place) runs with every linear layer the exact product (f64 over the
//!    dequantized weights: the reference), candle's `QMatMul` over zero-copy `QTensor`s of
//!    the mapped QNAT file, or `qforge::candle::QuantLinear` (our fused kernels). Checks
//!    (docs/QNAT.md §9): every QuantLinear layer, on the reference's inputs, within what
//!    8-bit activations allow (`qforge::candle::activation_error`: the worst case, and 8
//!    sigma); QuantLinear's prompt logits within twice the largest deviation of four runs
//!    of the reference with that noise added after every layer. QMatMul is reported the
//!    same way. `--perturb NAME` doubles one weight in QuantLinear to see the checks fail.
//! 4. Each backend (QMatMul, QuantLinear in place, QuantLinear tiled) generates in a child
//!    process so that its peak memory (VmHWM) is its own: tokens per second, CPU time per
//!    token (user + system, all threads) and peak memory. `RAYON_NUM_THREADS=1` makes both
//!    single-threaded.

use anyhow::{bail, Context, Result};
use candle_core::quantized::k_quants::{BlockQ8K, BlockQ8_0, GgmlType};
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Parser;
use qforge::candle::{activation_error, ActivationError, QuantLinear, QuantModel};
use qforge::kernels::activation::Activations;
use qforge::kernels::{reference_matmul, QuantMatrix, WeightType};
use qforge::kv::prng::SplitMix64;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// Hugging Face llama folder (config.json, safetensors, tokenizer.json).
    model: PathBuf,
    /// Folder for the GGUF and QNAT files (default: a temporary folder).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Prompt.
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 24)]
    tokens: usize,
    /// Largest allowed |logit difference| between the QNAT and GGUF loads.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f32,
    /// Child process: run the QNAT file with this linear backend (`candle`, `quantlinear`).
    /// Check the checks: QuantLinear reads this Q8_0 weight times 2 (every block scale
    /// doubled), so the logit check must fail.
    #[arg(long)]
    perturb: Option<String>,
    /// Use the GGUF and QNAT files already in `--work` (made by an earlier run).
    #[arg(long, requires = "work")]
    reuse: bool,
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn qforge_cli(args: &[&str]) -> Result<()> {
    let cli = <qforge::cli::Cli as Parser>::try_parse_from(
        std::iter::once("qforge").chain(args.iter().copied()),
    )?;
    qforge::commands::run(cli)
}

/// Converts `model` to `dir/model-Q8_0.gguf` and `dir/model-q8_0.qnat` with qforge.
pub fn convert(model: &Path, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let gguf = dir.join("model-Q8_0.gguf");
    let qnat = dir.join("model-q8_0.qnat");
    let s = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    qforge_cli(&["-q", "quantize", &s(model), "-o", &s(&gguf), "-t", "Q8_0"])?;
    qforge_cli(&[
        "-q",
        "export-native",
        &s(&gguf),
        "-o",
        &s(&qnat),
        "--scheme",
        "q8_0",
    ])?;
    Ok((gguf, qnat))
}

/// candle-transformers' quantized llama from a GGUF (candle's reader) or a QNAT file
/// (qforge's `gguf_content`).
pub fn load_llama(path: &Path) -> Result<ModelWeights> {
    let mut f = std::fs::File::open(path)?;
    let content = if path.extension().is_some_and(|e| e == "qnat") {
        QuantModel::open(path)?.gguf_content()?
    } else {
        gguf_file::Content::read(&mut f)?
    };
    Ok(ModelWeights::from_gguf(content, &mut f, &Device::Cpu)?)
}

/// Seeds of the noise-injected reference runs that set the logit tolerance.
const NOISE_RUNS: u64 = 4;
/// The logit tolerance: this many times the largest deviation of a noise-injected run.
const NOISE_MARGIN: f32 = 2.0;
/// Largest |error| / sigma allowed in a layer (a Gaussian exceeds 8 sigma with
/// probability 1e-15; the model's forward has about a million outputs).
const LAYER_SIGMAS: f64 = 8.0;

fn tokenizer(model: &Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(model.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.join("tokenizer.json").display()))
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits
        .flatten_all()?
        .argmax(D::Minus1)?
        .to_scalar::<u32>()?)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// Errors of one kind of layer (`attn_q`, ..., `output`) against the exact product, over
/// every call: the largest `|err| / bound` and `|err| / sigma`, the sum of
/// `(err / sigma)^2` with its count (for the RMS), and the largest distance to the exact
/// product with the activations rounded as that backend rounds them, over sigma.
#[derive(Default, Clone, Copy)]
struct ErrStats {
    worst_bound: f64,
    worst_sigma: f64,
    sum_z2: f64,
    count: usize,
    worst_own: f64,
    /// candle rounded the activations to Q8_K (256 values), not Q8_0.
    q8k: bool,
}

impl ErrStats {
    fn add(&mut self, got: &[f32], want: &[f64], e: &ActivationError, own: &[f64]) {
        for (i, &g) in got.iter().enumerate() {
            let (g, sigma) = (f64::from(g), e.sigma[i].max(f64::MIN_POSITIVE));
            let err = (g - want[i]).abs();
            self.worst_bound = self
                .worst_bound
                .max(err / e.bound[i].max(f64::MIN_POSITIVE));
            self.worst_sigma = self.worst_sigma.max(err / sigma);
            self.sum_z2 += (err / sigma).powi(2);
            self.count += 1;
            self.worst_own = self.worst_own.max((g - own[i]).abs() / sigma);
        }
    }

    fn rms(&self) -> f64 {
        (self.sum_z2 / self.count.max(1) as f64).sqrt()
    }
}

/// Per layer kind: (QMatMul's errors, QuantLinear's errors).
type Errors = std::collections::BTreeMap<String, (ErrStats, ErrStats)>;

/// What the reference layers do besides the exact product: compare QMatMul and
/// QuantLinear with it on the same input (`probe`), or add Gaussian noise of the size
/// 8-bit activations make (`noise`).
#[derive(Default)]
struct Ctx {
    probe: bool,
    errors: Errors,
    noise: Option<SplitMix64>,
}

/// `x` rounded as candle's `QMatMul` may round activations (ggml's Q8_0 blocks with f16
/// scales, or Q8_K: 256 values, f32 scale) and as QuantLinear rounds them for `ty` (f32
/// scales, `ty.activation_block()`).
fn rounded(x: &[f32], k: usize, ty: WeightType) -> ([Vec<f32>; 2], Vec<f32>) {
    fn candle<T: GgmlType>(x: &[f32]) -> Vec<f32> {
        let mut b = vec![T::zeros(); x.len() / T::BLCK_SIZE];
        T::from_float(x, &mut b);
        let mut y = vec![0f32; x.len()];
        T::to_float(&b, &mut y);
        y
    }
    let q8_0 = candle::<BlockQ8_0>(x);
    let q8_k = if k.is_multiple_of(256) {
        candle::<BlockQ8K>(x)
    } else {
        q8_0.clone()
    };
    let theirs = [q8_0, q8_k];
    let block = ty.activation_block();
    let a = Activations::quantize(x, x.len(), block, None);
    let ours =
        a.qs.iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * a.d[i / block])
            .collect();
    (theirs, ours)
}

/// One linear layer: candle's `QMatMul` over a zero-copy `QTensor`, our `QuantLinear`
/// (in place, or tiled), or the exact product (with QMatMul and QuantLinear beside it).
enum Linear {
    Candle(QMatMul),
    Ours(QuantLinear),
    Reference {
        role: String,
        w: QuantMatrix,
        probe: Box<(QMatMul, QuantLinear)>,
    },
}

/// QuantLinear over `name`, from a copy with every block scale doubled (the weight times
/// 2) when `name` is `perturb` (Q8_0 only): a wrong weight the checks must catch.
fn quant_linear(
    m: &QuantModel,
    name: &str,
    perturb: Option<&str>,
    tiled: bool,
) -> Result<QuantLinear> {
    let mut w = m.quant_matrix(name)?;
    if perturb == Some(name) {
        if w.ty != WeightType::Q8_0 {
            bail!("--perturb takes a Q8_0 tensor; {name} is {:?}", w.ty);
        }
        let mut data = w.data.to_vec();
        // Q8_0 blocks: an f16 scale, then 32 values.
        for block in data.chunks_exact_mut(34) {
            let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            block[..2].copy_from_slice(&half::f16::from_f32(2.0 * d).to_le_bytes());
        }
        w.data = data.into();
    }
    Ok(if tiled {
        QuantLinear::tiled(w, None)?
    } else {
        QuantLinear::new(w, None)?
    })
}

impl Linear {
    fn load(m: &QuantModel, name: &str, backend: &str, perturb: Option<&str>) -> Result<Linear> {
        let candle = || -> Result<QMatMul> { Ok(QMatMul::from_qtensor(m.qtensor(name)?)?) };
        Ok(match backend {
            "candle" => Linear::Candle(candle()?),
            "quantlinear" => Linear::Ours(quant_linear(m, name, perturb, false)?),
            "quantlinear-tiled" => Linear::Ours(quant_linear(m, name, perturb, true)?),
            "reference" => Linear::Reference {
                role: name
                    .trim_end_matches(".weight")
                    .rsplit('.')
                    .next()
                    .unwrap_or(name)
                    .replace("token_embd", "output"),
                w: m.quant_matrix(name)?,
                probe: Box::new((candle()?, quant_linear(m, name, perturb, false)?)),
            },
            other => bail!("unknown backend {other:?}"),
        })
    }

    fn forward(&self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (role, w, probe) = match self {
            Linear::Candle(l) => return Ok(l.forward(x)?),
            Linear::Ours(l) => return Ok(l.forward(x)?),
            Linear::Reference { role, w, probe } => (role, w, probe),
        };
        let mut dims = x.dims().to_vec();
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut want = reference_matmul(w, &xs);
        let flat = |y: Tensor| -> Result<Vec<f32>> { Ok(y.flatten_all()?.to_vec1()?) };
        if ctx.probe || ctx.noise.is_some() {
            let e = activation_error(w, &xs, w.ty.activation_block());
            if ctx.probe {
                let stats = ctx.errors.entry(role.clone()).or_default();
                let (theirs, ours) = rounded(&xs, w.k, w.ty);
                let got = flat(probe.1.forward(x)?)?;
                stats.1.add(&got, &want, &e, &reference_matmul(w, &ours));
                // candle rounds to Q8_0 or (repacked kernels) Q8_K: the one its output is.
                let got = flat(probe.0.forward(x)?)?;
                let own: Vec<Vec<f64>> = theirs.iter().map(|t| reference_matmul(w, t)).collect();
                let dist = |o: &[f64]| {
                    got.iter()
                        .zip(o)
                        .map(|(&g, &v)| (f64::from(g) - v).abs())
                        .fold(0f64, f64::max)
                };
                let q8k = (w.k % 256 == 0 && dist(&own[1]) < dist(&own[0])) as usize;
                let ec = activation_error(w, &xs, [32, 256][q8k]);
                stats.0.add(&got, &want, &ec, &own[q8k]);
                stats.0.q8k |= q8k == 1;
            }
            if let Some(rng) = &mut ctx.noise {
                for (y, s) in want.iter_mut().zip(&e.sigma) {
                    *y += s * rng.next_gaussian();
                }
            }
        }
        *dims.last_mut().expect("a matrix") = w.n;
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        Ok(Tensor::from_vec(want, dims, &Device::Cpu)?)
    }
}

struct Layer {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    cache: Option<(Tensor, Tensor)>,
}

/// The llama forward of candle-transformers' `quantized_llama` (interleaved rope, GQA,
/// SwiGLU), with pluggable linear layers.
struct Llama {
    embd: QTensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    cos: Tensor,
    sin: Tensor,
    ctx: Ctx,
}

impl Llama {
    fn load(m: &QuantModel, backend: &str, perturb: Option<&str>) -> Result<Llama> {
        let ct = m.gguf_content()?;
        let u = |k: &str| -> Result<usize> {
            Ok(ct
                .metadata
                .get(k)
                .with_context(|| format!("no {k}"))?
                .to_u32()? as usize)
        };
        let f = |k: &str| -> Result<f32> {
            Ok(ct
                .metadata
                .get(k)
                .with_context(|| format!("no {k}"))?
                .to_f32()?)
        };
        let (heads, kv_heads, blocks) = (
            u("llama.attention.head_count")?,
            u("llama.attention.head_count_kv")?,
            u("llama.block_count")?,
        );
        let head_dim = u("llama.embedding_length")? / heads;
        let rope_dim = u("llama.rope.dimension_count")?;
        let eps = f("llama.attention.layer_norm_rms_epsilon")?;
        let base = f("llama.rope.freq_base").unwrap_or(10000.0);
        let theta: Vec<f32> = (0..rope_dim)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / rope_dim as f32))
            .collect();
        let n = theta.len();
        let idx = Tensor::arange(0u32, 4096, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((4096, 1))?
            .matmul(&Tensor::new(theta.as_slice(), &Device::Cpu)?.reshape((1, n))?)?;
        let deq = |name: &str| m.dequantize(name, DType::F32);
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let l = |s: &str| Linear::load(m, &format!("blk.{i}.{s}.weight"), backend, perturb);
            layers.push(Layer {
                wq: l("attn_q")?,
                wk: l("attn_k")?,
                wv: l("attn_v")?,
                wo: l("attn_output")?,
                gate: l("ffn_gate")?,
                up: l("ffn_up")?,
                down: l("ffn_down")?,
                attn_norm: deq(&format!("blk.{i}.attn_norm.weight"))?,
                ffn_norm: deq(&format!("blk.{i}.ffn_norm.weight"))?,
                cache: None,
            });
        }
        let output = if m.names().any(|n| n == "output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        Ok(Llama {
            embd: m.qtensor("token_embd.weight")?,
            layers,
            norm: deq("output_norm.weight")?,
            output: Linear::load(m, output, backend, perturb)?,
            heads,
            kv_heads,
            head_dim,
            eps,
            cos: idx.cos()?,
            sin: idx.sin()?,
            ctx: Ctx::default(),
        })
    }

    /// Logits of the last of `tokens`, which start at position `pos`.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let t = tokens.len();
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embd.embedding(&ids)?.unsqueeze(0)?;
        let ctx = &mut self.ctx;
        let (cos, sin) = (self.cos.narrow(0, pos, t)?, self.sin.narrow(0, pos, t)?);
        let mask = (t > 1)
            .then(|| candle_transformers::utils::build_causal_mask(t, pos, &Device::Cpu))
            .transpose()?;
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        for l in &mut self.layers {
            let xn = candle_nn::ops::rms_norm(&x, &l.attn_norm, self.eps)?;
            let split = |y: Tensor, n: usize| y.reshape((1, t, n, hd))?.transpose(1, 2);
            let q = split(l.wq.forward(&xn, ctx)?, h)?.contiguous()?;
            let k = split(l.wk.forward(&xn, ctx)?, kvh)?.contiguous()?;
            let v = split(l.wv.forward(&xn, ctx)?, kvh)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = match (&l.cache, pos) {
                (Some((kc, vc)), p) if p > 0 => {
                    (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?)
                }
                _ => (k, v),
            };
            l.cache = Some((k.clone(), v.clone()));
            let k = candle_transformers::utils::repeat_kv(k, h / kvh)?;
            let v = candle_transformers::utils::repeat_kv(v, h / kvh)?;
            let mut att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            if let Some(mask) = &mask {
                let mask = mask.broadcast_as(att.shape())?;
                let neg =
                    Tensor::new(f32::NEG_INFINITY, &Device::Cpu)?.broadcast_as(att.shape())?;
                att = mask.where_cond(&neg, &att)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((1, t, h * hd))?;
            x = (x + l.wo.forward(&y, ctx)?)?;
            let xn = candle_nn::ops::rms_norm(&x, &l.ffn_norm, self.eps)?;
            let ff =
                (candle_nn::ops::silu(&l.gate.forward(&xn, ctx)?)? * l.up.forward(&xn, ctx)?)?;
            x = (x + l.down.forward(&ff, ctx)?)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.eps)?;
        let last = x.narrow(1, t - 1, 1)?;
        Ok(self.output.forward(&last, ctx)?.flatten_all()?)
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) of the whole process so far, in milliseconds.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are the 14th and 15th.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0) // USER_HZ is 100 on Linux
}

/// Child: prompt then `n` greedy tokens with `backend`; prints one line
/// `backend tokens_per_s cpu_ms_per_token peak_rss_kib first_token`.
fn child(qnat: &Path, prompt: &[u32], n: usize, backend: &str) -> Result<()> {
    let m = QuantModel::open(qnat)?;
    let mut llama = Llama::load(&m, backend, None)?;
    let mut next = argmax(&llama.forward(prompt, 0)?)?;
    let first = next;
    let (start, cpu0) = (Instant::now(), cpu_ms());
    for i in 0..n {
        next = argmax(&llama.forward(&[next], prompt.len() + i)?)?;
    }
    let tps = n as f64 / start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_ms()) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / n as f64),
        _ => "?".into(),
    };
    println!(
        "{backend} {tps:.2} {cpu} {} {first}",
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tok = tokenizer(&args.model)?;
    let prompt: Vec<u32> = tok
        .encode(args.prompt.as_str(), false)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?
        .get_ids()
        .to_vec();
    let dir = match &args.work {
        Some(d) => d.clone(),
        None => tempdir()?,
    };
    if let Some(backend) = &args.child {
        return child(&dir.join("model-q8_0.qnat"), &prompt, args.tokens, backend);
    }
    let t0 = Instant::now();
    let (gguf, qnat) = if args.reuse {
        (dir.join("model-Q8_0.gguf"), dir.join("model-q8_0.qnat"))
    } else {
        convert(&args.model, &dir)?
    };
    println!(
        "converted {} -> {} ({} MiB) and {} ({} MiB) in {:.1} s",
        args.model.display(),
        gguf.display(),
        std::fs::metadata(&gguf)?.len() >> 20,
        qnat.display(),
        std::fs::metadata(&qnat)?.len() >> 20,
        t0.elapsed().as_secs_f64()
    );

    // 2. candle-transformers' quantized llama: GGUF vs QNAT logits, then generation.
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut from_gguf = load_llama(&gguf)?;
    let mut from_qnat = load_llama(&qnat)?;
    let (lg, lq) = (from_gguf.forward(&input, 0)?, from_qnat.forward(&input, 0)?);
    let diff = max_abs_diff(&lg, &lq)?;
    println!(
        "quantized_llama logits, QNAT vs GGUF: max |diff| = {diff:e} (tolerance {:e})",
        args.tolerance
    );
    if diff.is_nan() || diff > args.tolerance {
        bail!("QNAT and GGUF logits differ by {diff}");
    }
    let mut ids = vec![argmax(&lq)?];
    for i in 0..args.tokens {
        let x = Tensor::new(&ids[ids.len() - 1..], &Device::Cpu)?.unsqueeze(0)?;
        ids.push(argmax(&from_qnat.forward(&x, prompt.len() + i)?)?);
    }
    let text = tok
        .decode(&ids, true)
        .map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
    println!("{}{}", args.prompt, text);
    drop((from_gguf, from_qnat));

    // 3. The same llama with exact linear layers (the reference, f64 over the dequantized
    //    weights), with candle's QMatMul and with QuantLinear.
    let m = QuantModel::open(&qnat)?;
    let perturb = args.perturb.as_deref();
    let mut reference = Llama::load(&m, "reference", perturb)?;
    reference.ctx.probe = true;
    let want = reference.forward(&prompt, 0)?;
    println!("every linear layer on the reference's inputs, |error| against the exact product over its bound and over sigma (activation_error), and over sigma against the exact product of the activations as the backend rounds them:");
    println!(
        "{:<12} {:>40} {:>36}",
        "layer", "QMatMul acts /bound max/σ rms/σ own/σ", "QuantLinear /bound max/σ rms/σ own/σ"
    );
    let mut layer_failures = Vec::new();
    for (role, (c, o)) in &reference.ctx.errors {
        println!(
            "{role:<12} {} {:>9.3} {:>7.2} {:>6.3} {:>8.1e}  {:>9.3} {:>7.2} {:>6.3} {:>8.1e}",
            if c.q8k { "Q8_K" } else { "Q8_0" },
            c.worst_bound,
            c.worst_sigma,
            c.rms(),
            c.worst_own,
            o.worst_bound,
            o.worst_sigma,
            o.rms(),
            o.worst_own
        );
        if o.worst_bound > 1.0 || o.worst_sigma > LAYER_SIGMAS {
            layer_failures.push(role.clone());
        }
    }
    let rms = |a: &Tensor| -> Result<f32> { Ok(a.sqr()?.mean_all()?.sqrt()?.to_scalar()?) };
    // The yardstick at the logits: the reference with Gaussian noise of each output's sigma
    // added after every linear layer, a few seeds.
    let (mut tol_rms, mut tol_max) = (0f32, 0f32);
    for seed in 1..=NOISE_RUNS {
        let mut noisy = Llama::load(&m, "reference", None)?;
        noisy.ctx.noise = Some(SplitMix64::new(seed));
        let d = (noisy.forward(&prompt, 0)? - &want)?;
        let (r, x) = (rms(&d)?, max_abs_diff(&d, &d.zeros_like()?)?);
        println!("prompt logits, reference + activation noise (seed {seed}) vs reference: max |diff| = {x:.4}, rms diff = {r:.4}");
        tol_rms = tol_rms.max(NOISE_MARGIN * r);
        tol_max = tol_max.max(NOISE_MARGIN * x);
    }
    let mut logits = vec![];
    for backend in ["candle", "quantlinear"] {
        let mut l = Llama::load(&m, backend, perturb)?;
        logits.push(l.forward(&prompt, 0)?);
    }
    let mut checks = Vec::new();
    for (name, l) in ["QMatMul", "QuantLinear"].iter().zip(&logits) {
        let (x, r) = (max_abs_diff(l, &want)?, rms(&(l - &want)?)?);
        println!(
            "prompt logits, {name} vs reference: max |diff| = {x:.4}, rms diff = {r:.4} (logits rms {:.3}; tolerance {tol_max:.4}, {tol_rms:.4})",
            rms(&want)?
        );
        checks.push(x <= tol_max && r <= tol_rms);
    }
    println!(
        "prompt logits, QuantLinear vs QMatMul: max |diff| = {:.4}; QMatMul vs quantized_llama: {:e}",
        max_abs_diff(&logits[0], &logits[1])?,
        max_abs_diff(&logits[0], &lq.flatten_all()?)?
    );
    if !checks[1] {
        bail!("QuantLinear's prompt logits are further from the exact reference than {NOISE_MARGIN} times what 8-bit activation noise makes");
    }
    if !layer_failures.is_empty() {
        bail!("QuantLinear's layers {layer_failures:?} are further from the exact product than 8-bit activations can make them");
    }
    drop((reference, logits, m));
    println!(
        "{:<18} {:>9} {:>12} {:>14}",
        "linear", "tokens/s", "CPU ms/token", "peak RSS MiB"
    );
    let exe = std::env::current_exe()?;
    for backend in ["candle", "quantlinear", "quantlinear-tiled"] {
        let out = std::process::Command::new(&exe)
            .arg(&args.model)
            .args(["--work", dir.to_str().expect("UTF-8")])
            .args([
                "--prompt",
                &args.prompt,
                "--tokens",
                &args.tokens.to_string(),
            ])
            .args(["--child", backend])
            .output()?;
        if !out.status.success() {
            bail!("{backend}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        let rss: f64 = f.get(3).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let label = match backend {
            "candle" => "QMatMul",
            "quantlinear" => "QuantLinear",
            _ => "QuantLinear tiled",
        };
        println!(
            "{label:<18} {:>9} {:>12} {:>14.1}",
            f.get(1).unwrap_or(&"?"),
            f.get(2).unwrap_or(&"?"),
            rss / 1024.0
        );
    }
    println!(
        "QNAT file: {:.1} MiB",
        std::fs::metadata(&qnat)?.len() as f64 / 1048576.0
    );
    if args.work.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("qnat-candle-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

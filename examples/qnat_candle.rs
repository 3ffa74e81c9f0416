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
//! 3. The same llama (a small forward written here after `quantized_llama`) runs with every
//!    linear layer either a candle `QMatMul` over zero-copy `QTensor`s of the mapped QNAT
//!    file, or a `qforge::candle::QuantLinear` (our fused kernels), each in a child process
//!    so that its peak memory (VmHWM) is its own: tokens per second and peak memory.

use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Parser;
use qforge::candle::{activation_error, ActivationError, QuantLinear, QuantModel};
use qforge::kernels::{reference_matmul, QuantMatrix};
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
/// every call: the largest `|err| / bound` and `|err| / sigma`, and the sum of
/// `(err / sigma)^2` with its count (for the RMS).
#[derive(Default, Clone, Copy)]
struct ErrStats {
    worst_bound: f64,
    worst_sigma: f64,
    sum_z2: f64,
    count: usize,
}

impl ErrStats {
    fn add(&mut self, got: &[f32], want: &[f64], e: &ActivationError) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(g) - w).abs();
            self.worst_bound = self.worst_bound.max(err / e.bound[i].max(f64::MIN_POSITIVE));
            let z = err / e.sigma[i].max(f64::MIN_POSITIVE);
            self.worst_sigma = self.worst_sigma.max(z);
            self.sum_z2 += z * z;
            self.count += 1;
        }
    }

    fn rms(&self) -> f64 {
        (self.sum_z2 / self.count.max(1) as f64).sqrt()
    }
}

/// The exact product of a layer (f64 over the dequantized weights), with candle's
/// `QMatMul` and `QuantLinear` run on the same input and compared with it.
struct Probe {
    role: String,
    w: QuantMatrix,
    candle: QMatMul,
    ours: QuantLinear,
}

/// One linear layer: candle's `QMatMul` over a zero-copy `QTensor`, our `QuantLinear`
/// (in place, or tiled), or the exact reference with its probe.
enum Linear {
    Candle(QMatMul),
    Ours(QuantLinear),
    Reference(Box<Probe>),
}

/// Per layer kind: (QMatMul's errors, QuantLinear's errors).
type Errors = std::collections::BTreeMap<String, (ErrStats, ErrStats)>;

impl Linear {
    fn load(m: &QuantModel, name: &str, backend: &str) -> Result<Linear> {
        Ok(match backend {
            "candle" => Linear::Candle(QMatMul::from_qtensor(m.qtensor(name)?)?),
            "quantlinear" => Linear::Ours(m.quant_linear(name, None)?),
            "quantlinear-tiled" => Linear::Ours(QuantLinear::tiled(m.quant_matrix(name)?, None)?),
            "reference" => Linear::Reference(Box::new(Probe {
                role: name
                    .trim_end_matches(".weight")
                    .rsplit('.')
                    .next()
                    .unwrap_or(name)
                    .replace("token_embd", "output"),
                w: m.quant_matrix(name)?,
                candle: QMatMul::from_qtensor(m.qtensor(name)?)?,
                ours: m.quant_linear(name, None)?,
            })),
            other => bail!("unknown backend {other:?}"),
        })
    }

    fn forward(&self, x: &Tensor, errors: &mut Errors) -> Result<Tensor> {
        Ok(match self {
            Linear::Candle(l) => l.forward(x)?,
            Linear::Ours(l) => l.forward(x)?,
            Linear::Reference(p) => {
                let mut dims = x.dims().to_vec();
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                let want = reference_matmul(&p.w, &xs);
                let e = activation_error(&p.w, &xs);
                let stats = errors.entry(p.role.clone()).or_default();
                let flat = |y: Tensor| -> Result<Vec<f32>> { Ok(y.flatten_all()?.to_vec1()?) };
                stats.0.add(&flat(p.candle.forward(x)?)?, &want, &e);
                stats.1.add(&flat(p.ours.forward(x)?)?, &want, &e);
                *dims.last_mut().expect("a matrix") = p.w.n;
                let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                Tensor::from_vec(want, dims, &Device::Cpu)?
            }
        })
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
    errors: Errors,
}

impl Llama {
    fn load(m: &QuantModel, backend: &str) -> Result<Llama> {
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
            let l = |s: &str| Linear::load(m, &format!("blk.{i}.{s}.weight"), backend);
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
            output: Linear::load(m, output, backend)?,
            heads,
            kv_heads,
            head_dim,
            eps,
            cos: idx.cos()?,
            sin: idx.sin()?,
            errors: Errors::new(),
        })
    }

    /// Logits of the last of `tokens`, which start at position `pos`.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Tensor> {
        let t = tokens.len();
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embd.embedding(&ids)?.unsqueeze(0)?;
        let errors = &mut self.errors;
        let (cos, sin) = (self.cos.narrow(0, pos, t)?, self.sin.narrow(0, pos, t)?);
        let mask = (t > 1)
            .then(|| candle_transformers::utils::build_causal_mask(t, pos, &Device::Cpu))
            .transpose()?;
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        for l in &mut self.layers {
            let xn = candle_nn::ops::rms_norm(&x, &l.attn_norm, self.eps)?;
            let split = |y: Tensor, n: usize| y.reshape((1, t, n, hd))?.transpose(1, 2);
            let q = split(l.wq.forward(&xn, errors)?, h)?.contiguous()?;
            let k = split(l.wk.forward(&xn, errors)?, kvh)?.contiguous()?;
            let v = split(l.wv.forward(&xn, errors)?, kvh)?.contiguous()?;
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
            x = (x + l.wo.forward(&y, errors)?)?;
            let xn = candle_nn::ops::rms_norm(&x, &l.ffn_norm, self.eps)?;
            let ff = (candle_nn::ops::silu(&l.gate.forward(&xn, errors)?)? * l.up.forward(&xn, errors)?)?;
            x = (x + l.down.forward(&ff, errors)?)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.eps)?;
        let last = x.narrow(1, t - 1, 1)?;
        Ok(self.output.forward(&last, errors)?.flatten_all()?)
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
    let mut llama = Llama::load(&m, backend)?;
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
    let mut reference = Llama::load(&m, "reference")?;
    let want = reference.forward(&prompt, 0)?;
    println!("every linear layer on the reference's inputs, error against the exact product:");
    println!(
        "{:<12} {:>26} {:>26}",
        "layer", "QMatMul max/bound max/σ rms/σ", "QuantLinear max/bound max/σ rms/σ"
    );
    for (role, (c, o)) in &reference.errors {
        println!(
            "{role:<12} {:>9.3} {:>7.2} {:>6.3}        {:>9.3} {:>7.2} {:>6.3}",
            c.worst_bound,
            c.worst_sigma,
            c.rms(),
            o.worst_bound,
            o.worst_sigma,
            o.rms()
        );
    }
    let mut logits = vec![];
    for backend in ["candle", "quantlinear"] {
        let mut l = Llama::load(&m, backend)?;
        logits.push(l.forward(&prompt, 0)?);
    }
    let rms = |a: &Tensor| -> Result<f32> { Ok(a.sqr()?.mean_all()?.sqrt()?.to_scalar()?) };
    for (name, l) in ["QMatMul", "QuantLinear"].iter().zip(&logits) {
        println!(
            "prompt logits, {name} vs reference: max |diff| = {:.4}, rms diff = {:.4} (logits rms {:.3})",
            max_abs_diff(l, &want)?,
            rms(&(l - &want)?)?,
            rms(&want)?
        );
    }
    println!(
        "prompt logits, QuantLinear vs QMatMul: max |diff| = {:.4}; QMatMul vs quantized_llama: {:e}",
        max_abs_diff(&logits[0], &logits[1])?,
        max_abs_diff(&logits[0], &lq.flatten_all()?)?
    );
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

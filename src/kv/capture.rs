//! Real KV from a real model: tokenize a text, run the forward ([`super::forward`]), and
//! keep each layer's post-RoPE keys, values and last-position queries
//! ([`CaptureHook`]); perplexity of the run ([`Perplexity`]); the KV file of
//! `kv-profile capture` (the layout of [`super::io`]).

use super::forward::{KvHook, Model};
use super::tensor::{split_heads, tensor_name};
use super::weights::{tokenizer_path, Checkpoint};
use super::{KvData, LayerKv, Matrix, Queries};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Token ids of `text` as the model's tokenizer.json encodes it (with the special tokens
/// its post-processor adds).
pub fn tokenize(tokenizer: &Path, text: &str) -> Result<Vec<u32>> {
    let tok = tokenizers::Tokenizer::from_file(tokenizer)
        .map_err(|e| invalid!("{}: not a tokenizer.json: {e}", tokenizer.display()))?;
    let enc = tok
        .encode(text, true)
        .map_err(|e| invalid!("tokenizing: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

/// A model with its tokenizer.
pub struct Runner {
    /// The model.
    pub model: Model,
    /// Its tokenizer.json.
    pub tokenizer: PathBuf,
}

impl Runner {
    /// Loads the checkpoint at `model` and finds its tokenizer (see [`tokenizer_path`]).
    pub fn open(model: &Path, tokenizer: Option<&Path>) -> Result<Runner> {
        let tokenizer = tokenizer_path(model, tokenizer)?;
        let ck = Checkpoint::open(model)?;
        Ok(Runner {
            model: Model::load(&ck)?,
            tokenizer,
        })
    }

    /// The first `n` tokens of the text file `path` (fewer is invalid input).
    pub fn tokens(&self, path: &Path, n: usize) -> Result<Vec<u32>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid!("cannot read {}: {e}", path.display()))?;
        let ids = tokenize(&self.tokenizer, &text)?;
        if n < 2 {
            bail_invalid!("--tokens must be at least 2");
        }
        if ids.len() < n {
            bail_invalid!(
                "{} has {} tokens, fewer than --tokens {n}",
                path.display(),
                ids.len()
            );
        }
        Ok(ids[..n].to_vec())
    }
}

/// Rounds a tensor through fp16, as an fp16 KV cache stores it.
pub fn fp16_round(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F16)?.to_dtype(DType::F32)?)
}

/// Per-head matrices of a `[heads, T, d]` tensor.
pub fn to_heads(t: &Tensor) -> Result<Vec<Matrix>> {
    let (h, r, c) = t.dims3()?;
    let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
    split_heads(h, r, c, &data)
}

/// `[heads, T, d]` tensor from per-head matrices.
pub fn from_heads(ms: &[Matrix]) -> Result<Tensor> {
    let (r, c) = (ms[0].rows(), ms[0].cols());
    let data: Vec<f32> = ms.iter().flat_map(|m| m.data().iter().copied()).collect();
    Ok(Tensor::from_vec(
        data,
        (ms.len(), r, c),
        &candle_core::Device::Cpu,
    )?)
}

/// Keeps each layer's keys and values (through fp16, the cache the model would hold) and
/// the queries of the last `queries` positions; passes the fp16 cache on to attention.
pub struct CaptureHook {
    /// Queries kept per head.
    pub queries: usize,
    /// Captured KV.
    pub kv: KvData,
    /// Captured queries.
    pub q: Queries,
}

impl CaptureHook {
    /// Keeps the last `queries` queries of every head.
    pub fn new(queries: usize) -> CaptureHook {
        CaptureHook {
            queries,
            kv: KvData { layers: Vec::new() },
            q: Queries { layers: Vec::new() },
        }
    }
}

impl KvHook for CaptureHook {
    fn kv(&mut self, _: usize, q: &Tensor, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = (fp16_round(&k)?, fp16_round(&v)?);
        let t = q.dim(1)?;
        let n = self.queries.min(t);
        self.q.layers.push(to_heads(&q.narrow(1, t - n, n)?)?);
        self.kv.layers.push(LayerKv {
            keys: to_heads(&k)?,
            values: to_heads(&v)?,
        });
        Ok((k, v))
    }
}

/// Puts each layer's keys and values through fp16 and then through `code(layer, kv)` (a
/// cache encoded and decoded as the model runs); attention reads the result, except the
/// newest `window` tokens of each query, read from the fp16 cache (a recent window,
/// [`KvHook::recent_window`]).
pub struct CacheHook<F: FnMut(usize, LayerKv) -> Result<LayerKv>> {
    /// Encodes and decodes one layer's cache.
    pub code: F,
    /// Recent window in tokens (0: none).
    pub window: usize,
}

impl<F: FnMut(usize, LayerKv) -> Result<LayerKv>> CacheHook<F> {
    /// A cache coded by `code`, with a recent window of `window` tokens.
    pub fn new(code: F, window: usize) -> Self {
        CacheHook { code, window }
    }
}

impl<F: FnMut(usize, LayerKv) -> Result<LayerKv>> KvHook for CacheHook<F> {
    fn kv(&mut self, layer: usize, _: &Tensor, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let kv = LayerKv {
            keys: to_heads(&fp16_round(&k)?)?,
            values: to_heads(&fp16_round(&v)?)?,
        };
        let out = (self.code)(layer, kv)?;
        Ok((from_heads(&out.keys)?, from_heads(&out.values)?))
    }

    fn recent_window(&self) -> usize {
        self.window
    }
}

/// Perplexity of next-token prediction, llama-perplexity's recipe: of a chunk of `T`
/// tokens, positions `T/2 .. T-2` predict tokens `T/2+1 .. T-1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Perplexity {
    /// `exp(mean negative log-likelihood)`.
    pub perplexity: f64,
    /// Tokens scored.
    pub scored: usize,
    /// Each scored token's negative log-likelihood, in order (not serialized).
    #[serde(skip)]
    pub nll: Vec<f64>,
}

impl Perplexity {
    /// The perplexity of all the tokens `parts` scored (llama-perplexity's estimate over
    /// several chunks: `exp` of the mean negative log-likelihood of every scored token).
    pub fn combine(parts: &[Perplexity]) -> Perplexity {
        let scored: usize = parts.iter().map(|p| p.scored).sum();
        let nll: f64 = parts
            .iter()
            .map(|p| p.perplexity.ln() * p.scored as f64)
            .sum();
        Perplexity {
            perplexity: (nll / scored.max(1) as f64).exp(),
            scored,
            nll: parts.iter().flat_map(|p| p.nll.iter().copied()).collect(),
        }
    }

    /// The sampling noise of `coded.perplexity − self.perplexity` when both scored the same
    /// tokens: this perplexity times the standard error of the mean per-token increase of
    /// the negative log-likelihood (as if the tokens were independent). NaN when the token
    /// lists differ or hold fewer than two tokens.
    pub fn delta_noise(&self, coded: &Perplexity) -> f64 {
        let n = self.nll.len();
        if n < 2 || coded.nll.len() != n {
            return f64::NAN;
        }
        let inc: Vec<f64> = coded
            .nll
            .iter()
            .zip(&self.nll)
            .map(|(c, b)| c - b)
            .collect();
        let mean = inc.iter().sum::<f64>() / n as f64;
        let var = inc.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        self.perplexity * (var / n as f64).sqrt()
    }

    /// Scores `logits` (`[T, vocab]`) of `tokens`.
    pub fn of(logits: &[f32], tokens: &[u32], vocab: usize) -> Perplexity {
        let t = tokens.len();
        let first = t / 2;
        let mut nll = Vec::with_capacity(t.saturating_sub(first + 1));
        for (j, &next) in tokens.iter().enumerate().take(t).skip(first + 1) {
            let row = &logits[(j - 1) * vocab..j * vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
            nll.push(max + sum.ln() - row[next as usize] as f64);
        }
        let scored = t - first - 1;
        Perplexity {
            perplexity: (nll.iter().sum::<f64>() / scored.max(1) as f64).exp(),
            scored,
            nll,
        }
    }
}

/// A model run on a text (`capture`, and `verify --model`).
#[derive(Debug, Clone, Copy)]
pub struct ModelText<'a> {
    /// Hugging Face folder or GGUF file.
    pub model: &'a Path,
    /// tokenizer.json (found beside the model when `None`).
    pub tokenizer: Option<&'a Path>,
    /// Text file.
    pub text: &'a Path,
    /// Tokens to run.
    pub tokens: usize,
    /// Last-position queries kept per head.
    pub queries: usize,
}

/// A finished capture run: the loaded model, its tokens, what the hook kept, and the
/// perplexity with the fp16 cache.
pub struct CaptureRun {
    /// The model.
    pub runner: Runner,
    /// Tokens run.
    pub tokens: Vec<u32>,
    /// Keys, values and queries kept.
    pub hook: CaptureHook,
    /// Perplexity with the fp16 cache.
    pub perplexity: Perplexity,
}

impl ModelText<'_> {
    /// Loads the model and runs it with a [`CaptureHook`].
    pub fn run(&self) -> Result<CaptureRun> {
        if self.queries == 0 {
            bail_invalid!("the number of queries must be positive");
        }
        let runner = Runner::open(self.model, self.tokenizer)?;
        let tokens = runner.tokens(self.text, self.tokens)?;
        let mut hook = CaptureHook::new(self.queries);
        let logits = runner.model.forward(&tokens, &mut hook)?;
        let perplexity = Perplexity::of(&logits, &tokens, runner.model.config.vocab);
        Ok(CaptureRun {
            runner,
            tokens,
            hook,
            perplexity,
        })
    }
}

/// What `kv-profile capture` does.
#[derive(Debug, Clone, Copy)]
pub struct CaptureJob<'a> {
    /// The run.
    pub input: ModelText<'a>,
    /// The KV file to write.
    pub output: &'a Path,
}

/// The `kv-profile capture --json` report (`qforge.kv-capture/1`).
#[derive(Debug, Clone, Serialize)]
pub struct Captured {
    /// Always `qforge.kv-capture/1`.
    pub schema: &'static str,
    /// The KV file written.
    pub output: String,
    /// Architecture.
    pub arch: String,
    /// Layers.
    pub layers: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Query heads.
    pub query_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Tokens run.
    pub tokens: usize,
    /// Queries kept per head.
    pub queries: usize,
    /// Perplexity of the run (fp16 cache).
    pub perplexity: Perplexity,
    /// SHA-256 of the file written.
    pub sha256: String,
}

impl Captured {
    /// The one-line text report.
    pub fn render_text(&self) -> String {
        format!(
            "wrote {}: {} layers x {} KV heads x {} tokens x head_dim {}, {} queries per head; perplexity {:.4} over {} tokens\n",
            self.output, self.layers, self.kv_heads, self.tokens, self.head_dim, self.queries,
            self.perplexity.perplexity, self.perplexity.scored
        )
    }
}

/// Runs the capture and writes the KV file atomically.
pub fn capture(job: &CaptureJob) -> Result<Captured> {
    let run = job.input.run()?;
    let c = &run.runner.model.config;
    let meta = [
        ("qforge.kv.rope", "post-rope".to_string()),
        ("qforge.kv.rope_theta", c.rope_theta.to_string()),
        ("qforge.kv.model", job.input.model.display().to_string()),
    ];
    let bytes = kv_file(&run.hook.kv, &run.hook.q, &meta)?;
    let sha = crate::formats::atomic::write_file(job.output, &bytes)?;
    Ok(Captured {
        schema: "qforge.kv-capture/1",
        output: job.output.display().to_string(),
        arch: c.arch.clone(),
        layers: c.layers,
        kv_heads: c.kv_heads,
        query_heads: c.heads,
        head_dim: c.head_dim,
        tokens: run.tokens.len(),
        queries: job.input.queries.min(run.tokens.len()),
        perplexity: run.perplexity,
        sha256: crate::formats::atomic::hex(&sha),
    })
}

/// Safetensors bytes of `layer.{i}.key` / `value` / `query` (F32).
pub fn kv_file(kv: &KvData, q: &Queries, meta: &[(&str, String)]) -> Result<Vec<u8>> {
    use crate::formats::safetensors_writer::{header_estimate, SafetensorsWriter, StTensor};
    let mut tensors: Vec<(String, &[Matrix])> = Vec::new();
    for (i, (l, qs)) in kv.layers.iter().zip(&q.layers).enumerate() {
        tensors.push((tensor_name(i, "key"), &l.keys));
        tensors.push((tensor_name(i, "value"), &l.values));
        tensors.push((tensor_name(i, "query"), qs));
    }
    let meta: serde_json::Map<String, serde_json::Value> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    let names: Vec<(usize, usize)> = tensors.iter().map(|(n, _)| (n.len(), 3)).collect();
    let est = header_estimate(&names, &meta);
    let mut w = SafetensorsWriter::new(std::io::Cursor::new(Vec::new()), est, meta)?;
    for (name, ms) in tensors {
        let shape = [ms.len(), ms[0].rows(), ms[0].cols()]
            .map(|v| v as u64)
            .to_vec();
        let bytes: Vec<u8> = ms
            .iter()
            .flat_map(|m| m.data().iter().flat_map(|v| v.to_le_bytes()))
            .collect();
        w.tensor(
            StTensor {
                name,
                dtype: "F32",
                shape,
            },
            &bytes,
        )?;
    }
    Ok(w.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits of the tiny fixture llama on 24 tokens with its cache zeroed (every token
    /// outside the recent window of `window` tokens reads zeros) or kept.
    fn tiny_logits(zeroed: bool, window: usize) -> Vec<f32> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf-tiny-llama");
        let model = Model::load(&super::super::weights::Checkpoint::open(&dir).unwrap()).unwrap();
        let tokens: Vec<u32> = (0..24).map(|i| (i * 7 + 3) % 50).collect();
        let mut hook = CacheHook::new(
            |_, mut kv: LayerKv| {
                if zeroed {
                    for m in kv.keys.iter_mut().chain(&mut kv.values) {
                        m.data_mut().fill(0.0);
                    }
                }
                Ok(kv)
            },
            window,
        );
        model.forward(&tokens, &mut hook).unwrap()
    }

    #[test]
    fn recent_window_reads_the_newest_tokens_from_the_fp16_cache() {
        let fp16 = tiny_logits(false, 0);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        // A window as long as the sequence reads nothing the hook returned.
        assert!(close(&tiny_logits(true, 24), &fp16));
        // A kept cache is the same with any window.
        assert!(close(&tiny_logits(false, 5), &fp16));
        // A short window reads the zeroed older tokens: the logits move, except at the
        // first positions, whose tokens are all in the window.
        let w5 = tiny_logits(true, 5);
        let vocab = fp16.len() / 24;
        assert!(close(&w5[..5 * vocab], &fp16[..5 * vocab]));
        assert!(!close(&w5[5 * vocab..], &fp16[5 * vocab..]));
    }

    #[test]
    fn combined_perplexity_weights_chunks_by_scored_tokens() {
        let a = Perplexity {
            perplexity: 10.0,
            scored: 1,
            nll: vec![10f64.ln()],
        };
        let b = Perplexity {
            perplexity: 1000.0,
            scored: 2,
            nll: vec![1000f64.ln(); 2],
        };
        let c = Perplexity::combine(&[a.clone(), b]);
        assert_eq!(c.scored, 3);
        assert_eq!(c.nll.len(), 3);
        // exp((ln 10 + 2 ln 1000) / 3) = exp(7 ln 10 / 3)
        assert!((c.perplexity - 10f64.powf(7.0 / 3.0)).abs() < 1e-9);
        let one = Perplexity::combine(&[a]);
        assert_eq!(one.scored, 1);
        assert!((one.perplexity - 10.0).abs() < 1e-12);
    }

    #[test]
    fn perplexity_of_uniform_logits_is_the_vocab() {
        let vocab = 10;
        let tokens = [1u32, 2, 3, 4, 5, 6];
        let p = Perplexity::of(&vec![0.0; tokens.len() * vocab], &tokens, vocab);
        assert_eq!(p.scored, 2);
        assert!((p.perplexity - 10.0).abs() < 1e-9);
        // A sure prediction of every scored token: perplexity 1.
        let mut logits = vec![-1e4f32; tokens.len() * vocab];
        for j in 3..6 {
            logits[(j - 1) * vocab + tokens[j] as usize] = 0.0;
        }
        assert!((Perplexity::of(&logits, &tokens, vocab).perplexity - 1.0).abs() < 1e-9);
    }

    #[test]
    fn delta_noise_is_the_standard_error_of_the_nll_increase() {
        let base = |nll: Vec<f64>| Perplexity {
            perplexity: 2.0,
            scored: nll.len(),
            nll,
        };
        let fp16 = base(vec![1.0, 1.0, 1.0, 1.0]);
        // A constant increase has no spread.
        assert_eq!(fp16.delta_noise(&base(vec![1.5; 4])), 0.0);
        // Increases 0, 0, 1, 1: sample variance 1/3, standard error sqrt(1/12), times 2.
        let noisy = base(vec![1.0, 1.0, 2.0, 2.0]);
        assert!((fp16.delta_noise(&noisy) - 2.0 * (1.0f64 / 12.0).sqrt()).abs() < 1e-12);
        assert!(fp16.delta_noise(&base(vec![1.0; 3])).is_nan());
    }
}

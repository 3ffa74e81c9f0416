//! A llama-family forward pass (llama, mistral, qwen2) on candle CPU tensors in f32, with
//! a hook that sees each layer's post-RoPE queries, keys and values and may replace the
//! keys and values the attention then reads (capture, and the compressed cache of
//! `kv-profile verify`). Causal attention over one sequence; Hugging Face's rotate-half
//! RoPE, RMSNorm and SwiGLU MLP.

use super::capture::fp16_round;
use super::weights::{ArchConfig, Checkpoint};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};

/// Sees each layer's post-RoPE `q` `[heads, T, head_dim]`, `k` and `v`
/// `[kv_heads, T, head_dim]`, and returns the keys and values attention reads.
pub trait KvHook {
    /// Called once per layer, in order.
    fn kv(&mut self, layer: usize, q: &Tensor, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)>;

    /// The cache's recent window: query `i` reads keys and values `i − w + 1 ..= i` as the
    /// fp16 cache holds them (a real cache codes a token only once it is `w` tokens old),
    /// and older ones as [`KvHook::kv`] returned them. 0 (the default): all as returned.
    fn recent_window(&self) -> usize {
        0
    }
}

/// A linear layer `y = x Wᵀ (+ b)`.
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Block {
    in_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A loaded model.
pub struct Model {
    /// Hyperparameters.
    pub config: ArchConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
}

fn tensor(ck: &Checkpoint, name: &str, shape: &[usize]) -> Result<Tensor> {
    let (got, data) = ck.read(name)?;
    if got != shape {
        crate::bail_invalid!("{name}: shape {got:?}, expected {shape:?}");
    }
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

fn linear(ck: &Checkpoint, name: &str, out: usize, inp: usize) -> Result<Linear> {
    let bias = format!("{name}.bias");
    Ok(Linear {
        w: tensor(ck, &format!("{name}.weight"), &[out, inp])?,
        b: if ck.has(&bias) {
            Some(tensor(ck, &bias, &[out])?)
        } else {
            None
        },
    })
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `cos` and `sin` `[T, head_dim]` of Hugging Face's rotate-half RoPE.
fn rope_tables(t: usize, head_dim: usize, theta: f64) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(t * head_dim);
    let mut sin = Vec::with_capacity(t * head_dim);
    for p in 0..t {
        let row: Vec<f32> = (0..half)
            .map(|i| {
                // inv_freq in f32 as transformers computes it, angle in f32.
                let inv = (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32;
                p as f32 * inv
            })
            .collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|a| a.cos()));
            sin.extend(row.iter().map(|a| a.sin()));
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, head_dim), &Device::Cpu)?,
        Tensor::from_vec(sin, (t, head_dim), &Device::Cpu)?,
    ))
}

fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// `[T, T]`: 1 where query `i` reads token `j` from the recent window (`0 ≤ i − j < w`),
/// else 0.
fn recent_band(t: usize, w: usize) -> Result<Tensor> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in i.saturating_sub(w - 1)..=i {
            m[i * t + j] = 1.0;
        }
    }
    Ok(Tensor::from_vec(m, (t, t), &Device::Cpu)?)
}

/// Additive causal mask `[T, T]` (0 or -inf), with a sliding window when given.
fn causal_mask(t: usize, window: Option<usize>) -> Result<Tensor> {
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in 0..t {
            let hidden = j > i || window.is_some_and(|w| i - j >= w);
            if hidden {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(m, (t, t), &Device::Cpu)?)
}

impl Model {
    /// Loads every tensor of `ck` (f32 on the CPU).
    pub fn load(ck: &Checkpoint) -> Result<Model> {
        let c = &ck.config;
        let (h, hd) = (c.hidden, c.head_dim);
        let inter = ck.read("model.layers.0.mlp.gate_proj.weight")?.0[0];
        let blocks = (0..c.layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Ok(Block {
                    in_norm: tensor(ck, &format!("{p}.input_layernorm.weight"), &[h])?,
                    q: linear(ck, &format!("{p}.self_attn.q_proj"), c.heads * hd, h)?,
                    k: linear(ck, &format!("{p}.self_attn.k_proj"), c.kv_heads * hd, h)?,
                    v: linear(ck, &format!("{p}.self_attn.v_proj"), c.kv_heads * hd, h)?,
                    o: linear(ck, &format!("{p}.self_attn.o_proj"), h, c.heads * hd)?,
                    post_norm: tensor(ck, &format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    gate: linear(ck, &format!("{p}.mlp.gate_proj"), inter, h)?,
                    up: linear(ck, &format!("{p}.mlp.up_proj"), inter, h)?,
                    down: linear(ck, &format!("{p}.mlp.down_proj"), h, inter)?,
                })
            })
            .collect::<Result<_>>()?;
        let embed = tensor(ck, "model.embed_tokens.weight", &[c.vocab, h])?;
        let lm_head = if ck.has("lm_head.weight") {
            tensor(ck, "lm_head.weight", &[c.vocab, h])?
        } else {
            embed.clone()
        };
        Ok(Model {
            config: c.clone(),
            norm: tensor(ck, "model.norm.weight", &[h])?,
            embed,
            blocks,
            lm_head,
        })
    }

    /// Runs `tokens` through the model; returns the logits `[T, vocab]` row-major.
    pub fn forward(&self, tokens: &[u32], hook: &mut dyn KvHook) -> Result<Vec<f32>> {
        let c = &self.config;
        let t = tokens.len();
        if t == 0 {
            crate::bail_invalid!("no tokens to run");
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            crate::bail_invalid!("token id {bad} is outside the vocabulary of {}", c.vocab);
        }
        let (nq, nkv, hd) = (c.heads, c.kv_heads, c.head_dim);
        let g = nq / nkv;
        let ids = Tensor::from_vec(tokens.to_vec(), t, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let (cos, sin) = rope_tables(t, hd, c.rope_theta)?;
        let mask = causal_mask(t, c.sliding_window)?;
        let window = hook.recent_window();
        let band = if window > 0 {
            Some(recent_band(t, window)?)
        } else {
            None
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let heads = |y: Tensor, n: usize| -> candle_core::Result<Tensor> {
            y.reshape((t, n, hd))?.transpose(0, 1)?.contiguous()
        };
        for (l, b) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &b.in_norm, c.eps)?;
            let q = rope(&heads(b.q.forward(&h)?, nq)?, &cos, &sin)?;
            let k = rope(&heads(b.k.forward(&h)?, nkv)?, &cos, &sin)?;
            let v = heads(b.v.forward(&h)?, nkv)?;
            let exact = match band {
                Some(_) => Some((fp16_round(&k)?, fp16_round(&v)?)),
                None => None,
            };
            let (k, v) = hook.kv(l, &q, k, v).with_context(|| format!("layer {l}"))?;
            // Query heads h = kv·g + j share KV head kv: [nkv, g·T, hd].
            let qg = q.reshape((nkv, g * t, hd))?;
            let logits = |k: &Tensor| -> candle_core::Result<Tensor> {
                (qg.matmul(&k.t()?)? * scale)?.reshape((nkv, g, t, t))
            };
            let mut scores = logits(&k)?;
            if let (Some(band), Some((ke, _))) = (&band, &exact) {
                scores = (&scores + (logits(ke)? - &scores)?.broadcast_mul(band)?)?;
            }
            let p = softmax_last(&scores.broadcast_add(&mask)?)?;
            let read = |p: &Tensor, v: &Tensor| -> candle_core::Result<Tensor> {
                p.reshape((nkv, g * t, t))?.matmul(&v.contiguous()?)
            };
            let out = match (&band, &exact) {
                (Some(band), Some((_, ve))) => {
                    let recent = p.broadcast_mul(band)?;
                    (read(&(&p - &recent)?, &v)? + read(&recent, ve)?)?
                }
                _ => read(&p, &v)?,
            };
            let attn = out
                .reshape((nq, t, hd))?
                .transpose(0, 1)?
                .reshape((t, nq * hd))?;
            x = (x + b.o.forward(&attn)?)?;
            let h = rms_norm(&x, &b.post_norm, c.eps)?;
            let mlp = b
                .down
                .forward(&(b.gate.forward(&h)?.silu()? * b.up.forward(&h)?)?)?;
            x = (x + mlp)?;
        }
        let x = rms_norm(&x, &self.norm, c.eps)?;
        let logits = x.matmul(&self.lm_head.t()?)?;
        Ok(logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }
}

/// A hook that changes nothing.
pub struct NoHook;

impl KvHook for NoHook {
    fn kv(&mut self, _: usize, _: &Tensor, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        Ok((k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_pairs_by_position() {
        let (cos, sin) = rope_tables(3, 4, 10000.0).unwrap();
        let x = Tensor::from_vec([1f32, 0.0, 0.0, 0.0].repeat(3), (1, 3, 4), &Device::Cpu).unwrap();
        let y: Vec<Vec<Vec<f32>>> = rope(&x, &cos, &sin).unwrap().to_vec3().unwrap();
        // Position 0 is unrotated; position p rotates channel pair (0, 2) by p radians.
        assert_eq!(y[0][0], vec![1.0, 0.0, 0.0, 0.0]);
        assert!((y[0][2][0] - 2f32.cos()).abs() < 1e-6);
        assert!((y[0][2][2] - 2f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn band_marks_the_newest_tokens_of_each_query() {
        let m: Vec<Vec<f32>> = recent_band(4, 2).unwrap().to_vec2().unwrap();
        assert_eq!(m[0], vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(m[3], vec![0.0, 0.0, 1.0, 1.0]);
        let all: Vec<Vec<f32>> = recent_band(3, 5).unwrap().to_vec2().unwrap();
        assert_eq!(all[2], vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn mask_is_causal_with_window() {
        let m: Vec<Vec<f32>> = causal_mask(3, Some(2)).unwrap().to_vec2().unwrap();
        assert_eq!(m[0][1], f32::NEG_INFINITY);
        assert_eq!(m[2][1], 0.0);
        assert_eq!(m[2][0], f32::NEG_INFINITY);
    }
}

//! LlamaForCausalLM and MistralForCausalLM (convert's `LlamaModel`): Q/K rows permuted
//! back from Hugging Face's rotary layout, `rope_freqs` generated for llama3 rope
//! scaling, `set_vocab_llama` (SentencePiece, Llama-HF or GPT-2).

use super::{active_rope, rope_parameters, text_model_params, Arch, Kv};
use crate::convert::config::HfConfig;
use crate::convert::model::{Extra, Generated, Planned, RowOrder};
use crate::formats::gguf::Value;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::path::Path;

/// The llama table.
pub const LLAMA: Arch = Arch {
    hf_names: &["LlamaForCausalLM", "MistralForCausalLM"],
    gguf_arch: "llama",
    names: NAMES,
    defaults,
    filter,
    params,
    tensor,
    extra,
    vocab,
};

/// gguf-py's tensor_mapping entries the llama family shares: embeddings, output, and
/// attention.
pub const ATTENTION: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("lm_head", "output"),
    ("model.norm", "output_norm"),
    ("model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm"),
    ("model.layers.{bid}.self_attn.q_proj", "blk.{bid}.attn_q"),
    ("model.layers.{bid}.self_attn.k_proj", "blk.{bid}.attn_k"),
    ("model.layers.{bid}.self_attn.v_proj", "blk.{bid}.attn_v"),
    (
        "model.layers.{bid}.self_attn.o_proj",
        "blk.{bid}.attn_output",
    ),
];

/// The gated feed-forward.
pub const MLP: &[(&str, &str)] = &[
    ("model.layers.{bid}.mlp.gate_proj", "blk.{bid}.ffn_gate"),
    ("model.layers.{bid}.mlp.up_proj", "blk.{bid}.ffn_up"),
    ("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
];

/// Llama's whole name map (also Qwen2's).
pub const NAMES: &[&[(&str, &str)]] = &[
    ATTENTION,
    &[(
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.ffn_norm",
    )],
    MLP,
];

/// `LlamaModel.filter_tensors`: SmolVLM's `text_model.` prefix dropped.
fn filter(name: &str) -> Option<String> {
    Some(name.replace("text_model.", ""))
}

/// transformers' LlamaConfig / MistralConfig defaults for the keys convert reads.
fn defaults(hf_arch: &str, cfg: &mut HfConfig) {
    if hf_arch == "MistralForCausalLM" {
        cfg.fill_defaults(&[
            ("max_position_embeddings", "131072"),
            ("hidden_size", "4096"),
            ("intermediate_size", "14336"),
            ("num_attention_heads", "32"),
            ("num_key_value_heads", "8"),
            ("num_hidden_layers", "32"),
            ("rms_norm_eps", "1e-06"),
            ("rope_theta", "10000.0"),
            ("vocab_size", "32000"),
            ("head_dim", "null"),
        ]);
        super::kv_heads_default(cfg);
        return;
    }
    cfg.fill_defaults(&[
        ("max_position_embeddings", "2048"),
        ("hidden_size", "4096"),
        ("intermediate_size", "11008"),
        ("num_attention_heads", "32"),
        ("num_hidden_layers", "32"),
        ("rms_norm_eps", "1e-06"),
        ("rope_theta", "10000.0"),
        ("vocab_size", "32000"),
    ]);
    super::kv_heads_default(cfg);
    cfg.fill_computed("head_dim", |c| {
        let n = |k: &str| c.hparams.get(k).and_then(serde_json::Value::as_u64);
        Some(serde_json::Value::from(
            n("hidden_size")? / n("num_attention_heads")?.max(1),
        ))
    });
}

/// Largest head dimension accepted (real models use 64 to 256).
const MAX_HEAD_DIM: u64 = 1 << 16;

/// The llama-family hyperparameters the checks and transforms need.
pub struct Dims {
    /// `hidden_size`.
    pub n_embd: u64,
    /// Attention heads.
    pub n_head: u64,
    /// KV heads.
    pub n_head_kv: u64,
    /// `head_dim`, or `hidden_size / heads`.
    pub head_dim: u64,
    /// `intermediate_size`.
    pub n_ff: Option<u64>,
    /// `vocab_size`.
    pub n_vocab: u64,
}

pub fn dims(cfg: &HfConfig) -> Result<Dims> {
    let n_embd = cfg.require_u64(&["hidden_size"])?;
    let n_head = cfg.require_u64(&["n_heads", "num_attention_heads"])?;
    let n_head_kv = cfg.require_u64(&["n_kv_heads", "num_key_value_heads"])?;
    if n_head == 0 || n_head_kv == 0 {
        bail_invalid!("config.json: head counts must be positive");
    }
    let head_dim = match cfg.opt_u64(&["head_dim"])? {
        Some(d) => d,
        None => n_embd / n_head,
    };
    Ok(Dims {
        n_embd,
        n_head,
        n_head_kv,
        head_dim,
        n_ff: cfg.opt_u64(&["intermediate_size"])?,
        n_vocab: cfg.require_u64(&["vocab_size"])?,
    })
}

/// `LlamaModel.set_gguf_parameters`: TextModel's, then vocab size and rope dimensions.
fn params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let mut kv = text_model_params(cfg, arch, file_type)?;
    let d = dims(cfg)?;
    kv.push((format!("{arch}.vocab_size"), Value::U32(to_u32(d.n_vocab)?)));
    kv.push((
        format!("{arch}.rope.dimension_count"),
        Value::U32(to_u32(d.head_dim)?),
    ));
    Ok(kv)
}

pub fn to_u32(v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid!("config.json: {v} does not fit in 32 bits"))
}

/// Shape checks against the config; Q and K (weights and biases) get the rotary row
/// permutation (`LlamaModel.permute`).
fn tensor(cfg: &HfConfig, t: &mut Planned) -> Result<()> {
    check_shape(cfg, t)?;
    let d = dims(cfg)?;
    let heads = match base_name(&t.name) {
        "attn_q" => Some(d.n_head),
        "attn_k" => Some(d.n_head_kv),
        _ => None,
    };
    if let Some(n_head) = heads {
        let rows = t.shape[0];
        if !rows.is_multiple_of(2 * n_head) {
            bail_invalid!(
                "tensor {}: {rows} rows do not split into {n_head} heads of rotary pairs",
                t.hf_name
            );
        }
        t.rows = RowOrder::RopePermute { n_head };
    }
    Ok(())
}

/// `blk.N.attn_q.weight` -> `attn_q`.
pub fn base_name(gguf: &str) -> &str {
    let stem = gguf.rsplit_once('.').map_or(gguf, |(b, _)| b);
    stem.rsplit('.').next().unwrap_or(stem)
}

/// Checks a llama-family tensor's shape against config.json (embeddings, norms,
/// attention, feed-forward; Q/K norms of one head; Q/K/V biases).
pub fn check_shape(cfg: &HfConfig, t: &Planned) -> Result<()> {
    let d = dims(cfg)?;
    let is_weight = t.name.ends_with(".weight");
    let q_rows = d.n_head * d.head_dim;
    let kv_rows = d.n_head_kv * d.head_dim;
    let expect: Option<Vec<u64>> = match (base_name(&t.name), is_weight) {
        ("token_embd" | "output", true) => Some(vec![d.n_vocab, d.n_embd]),
        ("output_norm" | "attn_norm" | "ffn_norm", true) => Some(vec![d.n_embd]),
        ("attn_q_norm" | "attn_k_norm", true) => Some(vec![d.head_dim]),
        ("attn_q", true) => Some(vec![q_rows, d.n_embd]),
        ("attn_k" | "attn_v", true) => Some(vec![kv_rows, d.n_embd]),
        ("attn_output", true) => Some(vec![d.n_embd, q_rows]),
        ("ffn_gate" | "ffn_up", true) => d.n_ff.map(|f| vec![f, d.n_embd]),
        ("ffn_down", true) => d.n_ff.map(|f| vec![d.n_embd, f]),
        ("attn_q", false) => Some(vec![q_rows]),
        ("attn_k" | "attn_v", false) => Some(vec![kv_rows]),
        _ => None,
    };
    super::expect_shape(t, expect)
}

/// `LlamaModel.generate_extra_tensors`: `rope_freqs` for llama3 rope scaling.
fn extra(cfg: &HfConfig) -> Result<Extra> {
    let rope = active_rope(&rope_parameters(cfg)?);
    let kind = rope
        .get("rope_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if rope.is_empty() || kind != "llama3" {
        return Ok(Extra::default());
    }
    let num = |k: &str, default: f64| -> Result<f64> {
        match rope.get(k) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| invalid!("config.json: rope {k} is not a number: {v}")),
        }
    };
    let base = num("rope_theta", 10000.0)?;
    let d = dims(cfg)?;
    if d.head_dim > MAX_HEAD_DIM {
        bail_invalid!("config.json: head dimension {} is implausible", d.head_dim);
    }
    let factors = llama3_rope_factors(
        base,
        d.head_dim,
        num("factor", 8.0)?,
        num("low_freq_factor", 1.0)?,
        num("high_freq_factor", 4.0)?,
        num("original_max_position_embeddings", 8192.0)?,
    );
    Ok(Extra {
        tensors: vec![Generated {
            name: "rope_freqs.weight".into(),
            values: factors,
        }],
        kv: Vec::new(),
    })
}

/// The llama3 rope correction factors, computed as convert computes them: every step
/// is a float32 torch operation (the Python float constants rounded to float32 when
/// they meet a float32 tensor).
pub fn llama3_rope_factors(
    base: f64,
    dim: u64,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    old_context_len: f64,
) -> Vec<f32> {
    let low_wavelen = (old_context_len / low_freq_factor) as f32;
    let high_wavelen = (old_context_len / high_freq_factor) as f32;
    let (old, low, span) = (
        old_context_len as f32,
        low_freq_factor as f32,
        (high_freq_factor - low_freq_factor) as f32,
    );
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0f32 / (base as f32).powf(i as f32 / dim as f32);
            let wavelen = two_pi / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor as f32
            } else {
                let smooth = (old / wavelen - low) / span;
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect()
}

/// `LlamaModel.set_vocab`.
fn vocab(cfg: &HfConfig, dir: &Path) -> Result<Kv> {
    crate::convert::vocab::set_vocab_llama(dir, cfg.opt_u64(&["vocab_size"])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rope_freqs of a Llama-3 config (theta 500000, head_dim 64, factor 32, low 1,
    /// high 4, original 8192), bit patterns read from convert_hf_to_gguf.py's output.
    #[test]
    fn llama3_factors_match_convert() {
        let f = llama3_rope_factors(500000.0, 64, 32.0, 1.0, 4.0, 8192.0);
        let bits: Vec<u32> = f.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits.len(), 32);
        assert!(bits[..15].iter().all(|&b| b == 0x3f80_0000));
        assert_eq!(bits[15..18], [0x3fd3_5ec2, 0x4052_b46f, 0x411a_aaee]);
        assert!(bits[18..].iter().all(|&b| b == 0x4200_0000));
    }
}

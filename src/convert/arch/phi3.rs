//! Phi3ForCausalLM (convert's `Phi3MiniModel`): fused `attn_qkv` and `ffn_up`
//! (gate and up) kept fused, its own hyperparameter list, long/short rope factors for
//! long-context (LongRoPE) checkpoints, its own SentencePiece reading or GPT-2 BPE
//! (Phi-4).

use super::llama::to_u32;
use super::{active_rope, rope_parameters, Arch, Kv};
use crate::convert::config::HfConfig;
use crate::convert::model::{Extra, Generated, Planned};
use crate::formats::gguf::Value;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::{Map, Value as Json};
use std::path::Path;

/// The Phi3 table.
pub const PHI3: Arch = Arch {
    hf_names: &["Phi3ForCausalLM"],
    gguf_arch: "phi3",
    names: &[&[
        ("model.embed_tokens", "token_embd"),
        ("lm_head", "output"),
        ("model.norm", "output_norm"),
        ("model.layers.{bid}.input_layernorm", "blk.{bid}.attn_norm"),
        (
            "model.layers.{bid}.self_attn.qkv_proj",
            "blk.{bid}.attn_qkv",
        ),
        (
            "model.layers.{bid}.self_attn.o_proj",
            "blk.{bid}.attn_output",
        ),
        (
            "model.layers.{bid}.post_attention_layernorm",
            "blk.{bid}.ffn_norm",
        ),
        ("model.layers.{bid}.mlp.gate_up_proj", "blk.{bid}.ffn_up"),
        ("model.layers.{bid}.mlp.down_proj", "blk.{bid}.ffn_down"),
    ]],
    defaults,
    filter: super::keep,
    params,
    tensor,
    extra,
    vocab,
};

/// transformers' Phi3Config defaults for the keys convert reads.
fn defaults(_hf_arch: &str, cfg: &mut HfConfig) {
    cfg.fill_defaults(&[
        ("max_position_embeddings", "4096"),
        ("hidden_size", "3072"),
        ("intermediate_size", "8192"),
        ("num_attention_heads", "32"),
        ("num_hidden_layers", "32"),
        ("rms_norm_eps", "1e-05"),
        ("rope_theta", "10000.0"),
        ("vocab_size", "32064"),
        ("original_max_position_embeddings", "4096"),
        ("partial_rotary_factor", "1.0"),
        ("sliding_window", "null"),
    ]);
    super::kv_heads_default(cfg);
}

/// The values `set_gguf_parameters` and `generate_extra_tensors` share.
struct Dims {
    n_embd: u64,
    n_head: u64,
    n_head_kv: u64,
    n_ff: u64,
    n_vocab: u64,
    ctx: u64,
    orig_ctx: u64,
    rope_dims: u64,
    rope: Map<String, Json>,
}

fn dims(cfg: &HfConfig) -> Result<Dims> {
    let n_embd = cfg.require_u64(&["hidden_size", "n_embd"])?;
    let n_head = cfg.require_u64(&["num_attention_heads", "n_head"])?;
    if n_head == 0 {
        bail_invalid!("config.json: num_attention_heads must be positive");
    }
    let rope = rope_parameters(cfg)?;
    let orig_ctx = rope
        .get("original_max_position_embeddings")
        .and_then(Json::as_u64)
        .ok_or_else(|| invalid!("config.json: original_max_position_embeddings is missing"))?;
    let pct = match rope.get("partial_rotary_factor") {
        None => 1.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid!("config.json: partial_rotary_factor: {v}"))?,
    };
    Ok(Dims {
        n_embd,
        n_head,
        n_head_kv: cfg.require_u64(&["num_key_value_heads", "n_head_kv"])?,
        n_ff: cfg.require_u64(&["intermediate_size"])?,
        n_vocab: cfg.require_u64(&["vocab_size"])?,
        ctx: cfg.require_u64(&["n_positions", "max_position_embeddings"])?,
        orig_ctx,
        // int(rot_pct * n_embd) // n_head
        rope_dims: (pct * n_embd as f64) as u64 / n_head,
        rope,
    })
}

/// `Phi3MiniModel.set_gguf_parameters` (its own list).
fn params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let d = dims(cfg)?;
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: u64| to_u32(v).map(Value::U32);
    let rms = cfg
        .opt_f64(&["rms_norm_eps"])?
        .ok_or_else(|| invalid!("config.json: rms_norm_eps is missing"))?;
    let theta = active_rope(&d.rope)
        .get("rope_theta")
        .and_then(Json::as_f64)
        .ok_or_else(|| invalid!("config.json: rope_theta is missing"))?;
    let block_count =
        cfg.require_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
    Ok(vec![
        (k("context_length"), u(d.ctx)?),
        (k("rope.scaling.original_context_length"), u(d.orig_ctx)?),
        (k("embedding_length"), u(d.n_embd)?),
        (k("feed_forward_length"), u(d.n_ff)?),
        (k("block_count"), u(block_count)?),
        (k("attention.head_count"), u(d.n_head)?),
        (k("attention.head_count_kv"), u(d.n_head_kv)?),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(rms as f32),
        ),
        (k("rope.dimension_count"), u(d.rope_dims)?),
        (k("rope.freq_base"), Value::F32(theta as f32)),
        ("general.file_type".into(), Value::U32(file_type)),
        (
            k("attention.sliding_window"),
            u(cfg.opt_u64(&["sliding_window"])?.unwrap_or(0))?,
        ),
    ])
}

/// Shape checks of the fused tensors against config.json.
fn tensor(cfg: &HfConfig, t: &mut Planned) -> Result<()> {
    let d = dims(cfg)?;
    let head_dim = d.n_embd / d.n_head;
    let base = super::llama::base_name(&t.name);
    let want = match base {
        "token_embd" | "output" => Some(vec![d.n_vocab, d.n_embd]),
        "attn_norm" | "ffn_norm" | "output_norm" => Some(vec![d.n_embd]),
        "attn_qkv" => Some(vec![(d.n_head + 2 * d.n_head_kv) * head_dim, d.n_embd]),
        "attn_output" => Some(vec![d.n_embd, d.n_embd]),
        "ffn_up" => Some(vec![2 * d.n_ff, d.n_embd]),
        "ffn_down" => Some(vec![d.n_embd, d.n_ff]),
        _ => None,
    };
    super::expect_shape(t, want.filter(|_| t.name.ends_with(".weight")))
}

/// `Phi3MiniModel.generate_extra_tensors`: long/short rope factors and the attention
/// factor for long-context checkpoints.
fn extra(cfg: &HfConfig) -> Result<Extra> {
    let d = dims(cfg)?;
    let factors = |key: &str| -> Result<Option<Vec<f32>>> {
        match d.rope.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Array(a)) if a.is_empty() => Ok(None),
            Some(Json::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_f64()
                        .map(|f| f as f32)
                        .ok_or_else(|| invalid!("config.json: rope {key} holds {v}"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => bail_invalid!("config.json: rope {key} is not a list: {other}"),
        }
    };
    let Some(long) = factors("long_factor")? else {
        return Ok(Extra::default());
    };
    let scale = d.ctx as f64 / d.orig_ctx as f64;
    let kind = d
        .rope
        .get("rope_type")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_lowercase();
    let attn_factor = match kind.as_str() {
        "" => bail_invalid!("config.json: rope_scaling has no type"),
        "su" | "longrope" if scale > 1.0 => (1.0 + scale.ln() / (d.orig_ctx as f64).ln()).sqrt(),
        "yarn" if scale > 1.0 => 0.1 * scale.ln() + 1.0,
        "su" | "longrope" | "yarn" => 1.0,
        other => bail_invalid!("config.json: rope scaling type {other:?} is not supported"),
    };
    let short = factors("short_factor")?
        .ok_or_else(|| invalid!("config.json: rope_scaling has long_factor but no short_factor"))?;
    if long.len() != short.len() || long.len() as f64 != d.rope_dims as f64 / 2.0 {
        bail_invalid!(
            "config.json: rope long and short factors must have {} values each",
            d.rope_dims / 2
        );
    }
    Ok(Extra {
        tensors: vec![
            Generated {
                name: "rope_factors_long.weight".into(),
                values: long,
            },
            Generated {
                name: "rope_factors_short.weight".into(),
                values: short,
            },
        ],
        kv: vec![(
            "phi3.rope.scaling.attn_factor".into(),
            Value::F32(attn_factor as f32),
        )],
    })
}

/// `Phi3MiniModel.set_vocab`: GPT-2 BPE for a GPT2Tokenizer (Phi-4), else its own
/// SentencePiece reading.
fn vocab(cfg: &HfConfig, dir: &Path) -> Result<Kv> {
    crate::convert::vocab::set_vocab_phi3(dir, cfg.opt_u64(&["vocab_size"])?)
}

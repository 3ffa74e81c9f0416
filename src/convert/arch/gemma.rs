//! Gemma2ForCausalLM and Gemma3ForCausalLM (convert's `Gemma2Model`, `Gemma3Model`):
//! norm weights stored `+ 1` (Gemma's RMSNorm scales by `1 + w`), post-attention and
//! post-feed-forward norms, logit soft-capping and sliding-window keys, Gemma3's token
//! embedding cut to the tokenizer's size, SentencePiece vocabularies with
//! `add_space_prefix` false.

use super::llama::{check_shape, to_u32, ATTENTION, MLP};
use super::{active_rope, rope_parameters, text_model_params, Arch, Kv};
use crate::convert::config::HfConfig;
use crate::convert::model::{Extra, Planned};
use crate::convert::vocab::KvList;
use crate::formats::gguf::Value;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::Value as Json;
use std::path::Path;

/// Gemma's norms around attention and feed-forward (its pre-feed-forward norm is
/// `ffn_norm`).
const NORMS: &[(&str, &str)] = &[
    (
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.post_attention_norm",
    ),
    (
        "model.layers.{bid}.pre_feedforward_layernorm",
        "blk.{bid}.ffn_norm",
    ),
    (
        "model.layers.{bid}.post_feedforward_layernorm",
        "blk.{bid}.post_ffw_norm",
    ),
];

/// The Gemma2 table.
pub const GEMMA2: Arch = Arch {
    hf_names: &["Gemma2ForCausalLM"],
    gguf_arch: "gemma2",
    names: &[ATTENTION, NORMS, MLP],
    defaults: gemma2_defaults,
    filter: gemma2_filter,
    params: gemma2_params,
    tensor: gemma2_tensor,
    extra,
    vocab: gemma2_vocab,
};

/// The Gemma3 table.
pub const GEMMA3: Arch = Arch {
    hf_names: &["Gemma3ForCausalLM"],
    gguf_arch: "gemma3",
    names: &[ATTENTION, NORMS, MLP, super::qwen::QK_NORMS],
    defaults: gemma3_defaults,
    filter: super::keep,
    params: gemma3_params,
    tensor: gemma3_tensor,
    extra,
    vocab: gemma3_vocab,
};

/// transformers' Gemma2Config defaults for the keys convert reads.
fn gemma2_defaults(_hf_arch: &str, cfg: &mut HfConfig) {
    cfg.fill_defaults(&[
        ("max_position_embeddings", "8192"),
        ("hidden_size", "2304"),
        ("intermediate_size", "9216"),
        ("num_attention_heads", "8"),
        ("num_key_value_heads", "4"),
        ("num_hidden_layers", "26"),
        ("rms_norm_eps", "1e-06"),
        ("rope_theta", "10000.0"),
        ("head_dim", "256"),
        ("sliding_window", "4096"),
        ("attn_logit_softcapping", "50.0"),
        ("final_logit_softcapping", "30.0"),
        ("vocab_size", "256000"),
    ]);
}

/// transformers' Gemma3TextConfig defaults for the keys convert reads.
fn gemma3_defaults(_hf_arch: &str, cfg: &mut HfConfig) {
    cfg.fill_defaults(&[
        ("max_position_embeddings", "131072"),
        ("hidden_size", "2304"),
        ("intermediate_size", "9216"),
        ("num_attention_heads", "8"),
        ("num_key_value_heads", "4"),
        ("num_hidden_layers", "26"),
        ("rms_norm_eps", "1e-06"),
        ("rope_theta", "1000000.0"),
        ("head_dim", "256"),
        ("sliding_window", "4096"),
        ("attn_logit_softcapping", "null"),
        ("final_logit_softcapping", "null"),
        ("vocab_size", "262208"),
        ("rope_local_base_freq", "10000.0"),
    ]);
}

/// lm_head is tied and unused by llama.cpp; AutoAWQ checkpoints carry one.
fn gemma2_filter(name: &str) -> Option<String> {
    (name != "lm_head.weight").then(|| name.to_string())
}

fn u32_key(cfg: &HfConfig, key: &str) -> Result<Value> {
    Ok(Value::U32(to_u32(cfg.require_u64(&[key])?)?))
}

fn f32_key(cfg: &HfConfig, key: &str) -> Result<Value> {
    cfg.opt_f64(&[key])?
        .map(|v| Value::F32(v as f32))
        .ok_or_else(|| invalid!("config.json: {key} is missing"))
}

/// `Gemma2Model.set_gguf_parameters` (its own list, not TextModel's).
fn gemma2_params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let k = |s: &str| format!("{arch}.{s}");
    let heads_kv = if cfg.hparams.contains_key("num_key_value_heads") {
        "num_key_value_heads"
    } else {
        "num_attention_heads"
    };
    let block_count =
        cfg.require_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
    Ok(vec![
        (
            k("context_length"),
            u32_key(cfg, "max_position_embeddings")?,
        ),
        (k("embedding_length"), u32_key(cfg, "hidden_size")?),
        (k("block_count"), Value::U32(to_u32(block_count)?)),
        (k("feed_forward_length"), u32_key(cfg, "intermediate_size")?),
        (
            k("attention.head_count"),
            u32_key(cfg, "num_attention_heads")?,
        ),
        (k("attention.head_count_kv"), u32_key(cfg, heads_kv)?),
        (
            k("attention.layer_norm_rms_epsilon"),
            f32_key(cfg, "rms_norm_eps")?,
        ),
        (k("attention.key_length"), u32_key(cfg, "head_dim")?),
        (k("attention.value_length"), u32_key(cfg, "head_dim")?),
        ("general.file_type".into(), Value::U32(file_type)),
        (
            k("attn_logit_softcapping"),
            f32_key(cfg, "attn_logit_softcapping")?,
        ),
        (
            k("final_logit_softcapping"),
            f32_key(cfg, "final_logit_softcapping")?,
        ),
        (
            k("attention.sliding_window"),
            u32_key(cfg, "sliding_window")?,
        ),
    ])
}

/// `Gemma3Model.set_gguf_parameters`: TextModel's, then values with Gemma3's defaults
/// (set again in place where TextModel wrote them).
fn gemma3_params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let mut kv = KvList::from(text_model_params(cfg, arch, file_type)?);
    let k = |s: &str| format!("{arch}.{s}");
    let int = |key: &str, default: u64| -> Result<Value> {
        match cfg.hparams.get(key) {
            None => Ok(Value::U32(to_u32(default)?)),
            Some(v) => v
                .as_u64()
                .map(|n| to_u32(n).map(Value::U32))
                .unwrap_or_else(|| Err(invalid!("config.json: {key} is not an integer: {v}"))),
        }
    };
    let float = |key: &str, default: f64| -> Result<Value> {
        match cfg.hparams.get(key) {
            None => Ok(Value::F32(default as f32)),
            Some(v) => v
                .as_f64()
                .map(|f| Value::F32(f as f32))
                .ok_or_else(|| invalid!("config.json: {key} is not a number: {v}")),
        }
    };
    kv.set(
        &k("context_length"),
        int("max_position_embeddings", 131072)?,
    );
    kv.set(&k("attention.head_count"), int("num_attention_heads", 8)?);
    kv.set(
        &k("attention.layer_norm_rms_epsilon"),
        float("rms_norm_eps", 1e-6)?,
    );
    kv.set(&k("attention.key_length"), int("head_dim", 256)?);
    kv.set(&k("attention.value_length"), int("head_dim", 256)?);
    let rope = active_rope(&rope_parameters(cfg)?);
    let theta = match rope.get("rope_theta") {
        None => 1_000_000.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid!("config.json: rope_theta is not a number: {v}"))?,
    };
    kv.set(&k("rope.freq_base"), Value::F32(theta as f32));
    if cfg
        .hparams
        .get("attn_logit_softcapping")
        .is_some_and(|v| !v.is_null())
    {
        bail_invalid!("config.json: Gemma3 has no attn_logit_softcapping");
    }
    match cfg.hparams.get("final_logit_softcapping") {
        Some(v) if truthy(v) => {
            let f = v
                .as_f64()
                .ok_or_else(|| invalid!("config.json: final_logit_softcapping: {v}"))?;
            kv.set(&k("final_logit_softcapping"), Value::F32(f as f32));
        }
        _ => {}
    }
    if cfg.hparams.get("sliding_window_pattern") != Some(&Json::from(1)) {
        kv.set(
            &k("attention.sliding_window"),
            u32_key(cfg, "sliding_window")?,
        );
    }
    kv.set(
        &k("attention.head_count_kv"),
        int("num_key_value_heads", 4)?,
    );
    Ok(kv.into_vec())
}

/// Python truthiness of a JSON value.
fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// Norm weights get `+ 1` (`name.endswith("norm.weight")` on the checkpoint name).
fn norm_shift(t: &mut Planned) {
    if t.hf_name.ends_with("norm.weight") {
        t.add = 1.0;
    }
}

fn gemma2_tensor(cfg: &HfConfig, t: &mut Planned) -> Result<()> {
    check_shape(cfg, t)?;
    norm_shift(t);
    Ok(())
}

/// Gemma3 also drops token-embedding rows past the tokenizer's vocabulary.
fn gemma3_tensor(cfg: &HfConfig, t: &mut Planned) -> Result<()> {
    check_shape(cfg, t)?;
    if t.hf_name.contains("embed_tokens.weight") {
        let n = tokenizer_size(cfg)?;
        t.shape[0] = t.shape[0].min(n);
    }
    norm_shift(t);
    Ok(())
}

/// The vocabulary size convert cuts Gemma3's embedding to: the SentencePiece
/// vocabulary (padded to `vocab_size`), else tokenizer.json's vocab plus added tokens.
/// A config without a folder (GGUF back to Hugging Face) has no tokenizer: `vocab_size`.
fn tokenizer_size(cfg: &HfConfig) -> Result<u64> {
    if cfg.dir.as_os_str().is_empty() {
        return cfg.require_u64(&["vocab_size"]);
    }
    if cfg.dir.join("tokenizer.model").is_file() {
        return cfg.require_u64(&["vocab_size_per_layer_input", "vocab_size"]);
    }
    let path = cfg.dir.join("tokenizer.json");
    let text = std::fs::read(&path).map_err(|e| invalid!("{}: {e}", path.display()))?;
    let json: Json = serde_json::from_slice(&text)
        .map_err(|e| invalid!("{}: not valid JSON: {e}", path.display()))?;
    let vocab = json
        .get("model")
        .and_then(|m| m.get("vocab"))
        .and_then(Json::as_object)
        .map(|v| v.len())
        .ok_or_else(|| invalid!("{}: no model.vocab object", path.display()))?;
    let added = json
        .get("added_tokens")
        .and_then(Json::as_array)
        .map_or(0, Vec::len);
    Ok((vocab + added) as u64)
}

fn extra(_cfg: &HfConfig) -> Result<Extra> {
    Ok(Extra::default())
}

/// `Gemma2Model.set_vocab`: SentencePiece, then `add_space_prefix` false.
fn gemma2_vocab(cfg: &HfConfig, dir: &Path) -> Result<Kv> {
    crate::convert::vocab::set_vocab_gemma2(dir, cfg.opt_u64(&["vocab_size"])?)
}

/// `Gemma3Model.set_vocab`: as Gemma2 with tokenizer.model, else GPT-2 BPE.
fn gemma3_vocab(cfg: &HfConfig, dir: &Path) -> Result<Kv> {
    crate::convert::vocab::set_vocab_gemma3(dir, cfg.opt_u64(&["vocab_size"])?)
}

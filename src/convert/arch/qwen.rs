//! Qwen2ForCausalLM and Qwen3ForCausalLM (convert's `Qwen2Model`, `Qwen3Model`): llama's
//! layout without the rotary permutation, Q/K/V biases (Qwen2) or Q/K norms (Qwen3), a
//! pooling type from modules.json, SentencePiece else GPT-2 BPE vocabularies.

use super::llama::{self, check_shape};
use super::{pooling_type, text_model_params, Arch, Kv};
use crate::bail_invalid;
use crate::convert::config::HfConfig;
use crate::convert::model::{Extra, Planned};
use anyhow::Result;
use std::path::Path;

/// The Qwen2 table.
pub const QWEN2: Arch = Arch {
    hf_names: &["Qwen2ForCausalLM"],
    gguf_arch: "qwen2",
    names: llama::NAMES,
    defaults,
    filter: super::keep,
    params,
    tensor,
    extra,
    vocab,
};

/// The Qwen3 table.
pub const QWEN3: Arch = Arch {
    hf_names: &["Qwen3ForCausalLM"],
    gguf_arch: "qwen3",
    names: QWEN3_NAMES,
    defaults,
    filter: super::keep,
    params: qwen3_params,
    tensor,
    extra,
    vocab,
};

const QWEN3_NAMES: &[&[(&str, &str)]] = &[
    llama::ATTENTION,
    &[(
        "model.layers.{bid}.post_attention_layernorm",
        "blk.{bid}.ffn_norm",
    )],
    llama::MLP,
    QK_NORMS,
];

/// Qwen3's per-head Q/K norms (also Gemma3's).
pub const QK_NORMS: &[(&str, &str)] = &[
    (
        "model.layers.{bid}.self_attn.q_norm",
        "blk.{bid}.attn_q_norm",
    ),
    (
        "model.layers.{bid}.self_attn.k_norm",
        "blk.{bid}.attn_k_norm",
    ),
];

/// transformers' Qwen2Config / Qwen3Config defaults for the keys convert reads.
fn defaults(hf_arch: &str, cfg: &mut HfConfig) {
    cfg.fill_defaults(&[
        ("max_position_embeddings", "32768"),
        ("hidden_size", "4096"),
        ("intermediate_size", "22016"),
        ("num_attention_heads", "32"),
        ("num_key_value_heads", "32"),
        ("num_hidden_layers", "32"),
        ("rms_norm_eps", "1e-06"),
        ("rope_theta", "10000.0"),
        ("vocab_size", "151936"),
    ]);
    super::kv_heads_default(cfg);
    if hf_arch == "Qwen3ForCausalLM" {
        cfg.fill_defaults(&[("head_dim", "128")]);
    }
}

/// `Qwen2Model.set_gguf_parameters`: TextModel's, then the pooling type.
fn params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let mut kv = text_model_params(cfg, arch, file_type)?;
    pooling_type(cfg, arch, &mut kv)?;
    Ok(kv)
}

/// Qwen3 refuses rerankers (their classification head is not converted here).
fn qwen3_params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let readme = std::fs::read(cfg.dir.join("README.md"))
        .map(|b| String::from_utf8_lossy(&b).to_lowercase())
        .unwrap_or_default();
    let hints = [
        cfg.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cfg.hparams
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        cfg.hparams
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
    ];
    if readme.contains("# qwen3-reranker")
        || readme.contains("# qwen3-vl-reranker")
        || hints.iter().any(|h| {
            let h = h.to_lowercase();
            h.contains("qwen3-reranker") || h.contains("qwen3-vl-reranker")
        })
    {
        bail_invalid!("Qwen3 reranker models are not supported");
    }
    params(cfg, arch, file_type)
}

fn tensor(cfg: &HfConfig, t: &mut Planned) -> Result<()> {
    check_shape(cfg, t)
}

fn extra(_cfg: &HfConfig) -> Result<Extra> {
    Ok(Extra::default())
}

/// `Qwen2Model.set_vocab`: SentencePiece when tokenizer.model exists, else GPT-2 BPE.
fn vocab(cfg: &HfConfig, dir: &Path) -> Result<Kv> {
    crate::convert::vocab::set_vocab_qwen2(dir, cfg.opt_u64(&["vocab_size"])?)
}

//! BertModel / BertForMaskedLM (convert's `BertModel`): encoder-only, non-causal, the
//! pooling type from sentence-transformers' modules.json, `bert.`/`gamma`/`beta` names
//! normalized, the pooler and masked-LM heads dropped, WordPiece vocabulary.

use super::llama::to_u32;
use super::{pooling_type, text_model_params, Arch, Kv};
use crate::convert::config::HfConfig;
use crate::convert::model::{Extra, Planned};
use crate::convert::vocab::KvList;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::Value as Json;
use std::path::Path;

/// The BERT table.
pub const BERT: Arch = Arch {
    hf_names: &["BertModel", "BertForMaskedLM"],
    gguf_arch: "bert",
    names: &[&[
        ("embeddings.word_embeddings", "token_embd"),
        ("embeddings.position_embeddings", "position_embd"),
        ("embeddings.token_type_embeddings", "token_types"),
        ("embeddings.LayerNorm", "token_embd_norm"),
        (
            "encoder.layer.{bid}.attention.self.query",
            "blk.{bid}.attn_q",
        ),
        ("encoder.layer.{bid}.attention.self.key", "blk.{bid}.attn_k"),
        (
            "encoder.layer.{bid}.attention.self.value",
            "blk.{bid}.attn_v",
        ),
        (
            "encoder.layer.{bid}.attention.output.dense",
            "blk.{bid}.attn_output",
        ),
        (
            "encoder.layer.{bid}.attention.output.LayerNorm",
            "blk.{bid}.attn_output_norm",
        ),
        ("encoder.layer.{bid}.intermediate.dense", "blk.{bid}.ffn_up"),
        ("encoder.layer.{bid}.output.dense", "blk.{bid}.ffn_down"),
        (
            "encoder.layer.{bid}.output.LayerNorm",
            "blk.{bid}.layer_output_norm",
        ),
    ]],
    defaults,
    filter,
    params,
    tensor,
    extra,
    vocab,
};

/// transformers' BertConfig defaults for the keys convert reads.
fn defaults(_hf_arch: &str, cfg: &mut HfConfig) {
    cfg.fill_defaults(&[
        ("max_position_embeddings", "512"),
        ("hidden_size", "768"),
        ("intermediate_size", "3072"),
        ("num_attention_heads", "12"),
        ("num_hidden_layers", "12"),
        ("layer_norm_eps", "1e-12"),
        ("vocab_size", "30522"),
        ("type_vocab_size", "2"),
    ]);
}

/// `BertModel.filter_tensors`.
fn filter(name: &str) -> Option<String> {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    let name = if let Some(stem) = name.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = name.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        name.to_string()
    };
    let dropped = matches!(
        name.as_str(),
        "embeddings.position_ids" | "pooler.dense.weight" | "pooler.dense.bias"
    ) || name.starts_with("cls.predictions")
        || name.starts_with("cls.seq_relationship");
    (!dropped).then_some(name)
}

/// `BertModel.set_gguf_parameters`: TextModel's, non-causal attention, pooling type.
fn params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    if let Some(Json::Object(labels)) = cfg.hparams.get("id2label") {
        let dummy = labels.len() == 2 && labels.get("0") == Some(&Json::from("LABEL_0"));
        if !labels.is_empty() && !dummy {
            bail_invalid!("config.json: BERT classifiers (id2label) are not supported");
        }
    }
    let mut kv = KvList::from(text_model_params(cfg, arch, file_type)?);
    kv.bool(&format!("{arch}.attention.causal"), false);
    let mut kv = kv.into_vec();
    pooling_type(cfg, arch, &mut kv)?;
    Ok(kv)
}

/// Shape checks against config.json.
fn tensor(cfg: &HfConfig, t: &mut Planned) -> Result<()> {
    let n = |k: &str| cfg.require_u64(&[k]);
    let (embd, ff) = (n("hidden_size")?, n("intermediate_size")?);
    let base = super::llama::base_name(&t.name);
    let want = if t.name.ends_with(".weight") {
        match base {
            "token_embd" => Some(vec![n("vocab_size")?, embd]),
            "position_embd" => Some(vec![n("max_position_embeddings")?, embd]),
            "token_types" => Some(vec![cfg.opt_u64(&["type_vocab_size"])?.unwrap_or(2), embd]),
            "attn_q" | "attn_k" | "attn_v" | "attn_output" => Some(vec![embd, embd]),
            "ffn_up" => Some(vec![ff, embd]),
            "ffn_down" => Some(vec![embd, ff]),
            "token_embd_norm" | "attn_output_norm" | "layer_output_norm" => Some(vec![embd]),
            _ => None,
        }
    } else {
        match base {
            "ffn_up" => Some(vec![ff]),
            _ => Some(vec![embd]),
        }
    };
    super::expect_shape(t, want)
}

fn extra(_cfg: &HfConfig) -> Result<Extra> {
    Ok(Extra::default())
}

/// `BertModel.set_vocab`: the token type count, then WordPiece.
fn vocab(cfg: &HfConfig, dir: &Path) -> Result<Kv> {
    let types = cfg.opt_u64(&["type_vocab_size"])?.unwrap_or(1);
    let types = to_u32(types).map_err(|_| invalid!("config.json: type_vocab_size {types}"))?;
    crate::convert::vocab::set_vocab_bert(dir, cfg.opt_u64(&["vocab_size"])?, types)
}

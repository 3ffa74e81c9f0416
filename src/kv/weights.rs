//! Weights and hyperparameters of a llama-family checkpoint for the KV forward
//! ([`super::forward`]), from a Hugging Face folder (safetensors + config.json) or a GGUF
//! file. A GGUF file is read as the Hugging Face checkpoint it came from
//! ([`crate::convert::reverse::Reversed`]: Hugging Face names, rope row order undone), so
//! both sources give the same tensors and the same post-RoPE keys.

use crate::convert::reverse::{Back, Reversed};
use crate::formats::{Format, TensorSource};
use crate::model::config::config_path;
use crate::model::ModelConfig;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// The architectures the forward runs (Hugging Face `model_type`).
pub const ARCHES: &[&str] = &["llama", "mistral", "qwen2"];

/// Hyperparameters the forward needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchConfig {
    /// `model_type`.
    pub arch: String,
    /// Transformer blocks.
    pub layers: usize,
    /// Embedding width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Vocabulary size.
    pub vocab: usize,
    /// Sliding attention window (mistral), if any.
    pub sliding_window: Option<usize>,
    /// The order of a head's key channels in llama.cpp's KV cache ([`llama_cpp_key_order`]).
    pub llama_cpp_key_order: Vec<usize>,
}

/// The order of a head's key channels in llama.cpp's KV cache for the model of config.json
/// `raw`: llama.cpp's cache holds channel `c` of a key where this forward (Hugging Face's
/// rotate-half layout) holds channel `order[c]`. The converter's own `attn_k` step says it
/// (`LlamaModel.permute` interleaves each head's rotary halves; qwen2 keeps them), and a
/// block codec (q8_0, q4_0) groups different channels in the two layouts.
pub fn llama_cpp_key_order(raw: &Json, kv_heads: usize, head_dim: usize) -> Result<Vec<usize>> {
    use crate::convert::model::{Planned, RowOrder};
    let cfg = crate::convert::config::HfConfig::from_json(raw.clone())?;
    let hf_arch = raw
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Json::as_str)
        .ok_or_else(|| invalid!("config has no architectures"))?;
    let arch = crate::convert::arch::find(hf_arch)?;
    let hidden = cfg
        .hparams
        .get("hidden_size")
        .and_then(Json::as_u64)
        .ok_or_else(|| invalid!("config has no hidden_size"))?;
    let rows = (kv_heads * head_dim) as u64;
    let mut p = Planned {
        hf_name: "model.layers.0.self_attn.k_proj.weight".into(),
        name: "blk.0.attn_k.weight".into(),
        shape: vec![rows, hidden],
        rows: RowOrder::Identity,
        source: None,
        generated: None,
        bid: Some(0),
        add: 0.0,
    };
    (arch.tensor)(&cfg, &mut p)?;
    // Head 0's rows: the permutation never crosses heads.
    Ok((0..head_dim as u64)
        .map(|c| p.rows.source_row(c, rows) as usize)
        .collect())
}

impl ArchConfig {
    /// Reads the hyperparameters from a config.json object; refuses what the forward
    /// does not implement (other architectures, rope scaling).
    pub fn from_json(raw: &Json) -> Result<ArchConfig> {
        let cfg = ModelConfig::from_json(raw.clone());
        let arch = cfg
            .arch
            .clone()
            .ok_or_else(|| invalid!("config has no model_type"))?;
        if !ARCHES.contains(&arch.as_str()) {
            bail_invalid!("kv-profile runs {} models, not {arch:?}", ARCHES.join(", "));
        }
        if cfg.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            bail_invalid!("rope_scaling is not supported by the kv-profile forward");
        }
        let need = |v: Option<u64>, k: &str| {
            v.map(|v| v as usize)
                .filter(|&v| v > 0)
                .ok_or_else(|| invalid!("config has no {k}"))
        };
        let layers = need(cfg.n_layer, "num_hidden_layers")?;
        let hidden = need(cfg.hidden_size, "hidden_size")?;
        let heads = need(cfg.n_head, "num_attention_heads")?;
        let kv_heads = cfg.n_head_kv.map_or(heads, |v| v as usize);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail_invalid!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            );
        }
        let head_dim = cfg.head_dim.map_or(hidden / heads, |v| v as usize);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            bail_invalid!("head_dim {head_dim} must be even and positive");
        }
        let f = |k: &str| cfg.get(k).and_then(Json::as_f64);
        let vocab = cfg
            .get("vocab_size")
            .and_then(Json::as_u64)
            .ok_or_else(|| invalid!("config has no vocab_size"))? as usize;
        Ok(ArchConfig {
            arch,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            eps: f("rms_norm_eps").unwrap_or(1e-6),
            rope_theta: cfg.rope_theta.unwrap_or(10000.0),
            vocab,
            sliding_window: cfg
                .get("sliding_window")
                .and_then(Json::as_u64)
                .map(|v| v as usize),
            llama_cpp_key_order: llama_cpp_key_order(raw, kv_heads, head_dim)?,
        })
    }
}

enum Store {
    Hf(TensorSource),
    Gguf(TensorSource, Vec<Back>),
}

/// An opened checkpoint: hyperparameters and tensors by Hugging Face name, decoded to f32.
pub struct Checkpoint {
    /// Hyperparameters.
    pub config: ArchConfig,
    /// The folder or file given.
    pub path: PathBuf,
    store: Store,
}

impl Checkpoint {
    /// Opens a Hugging Face folder (or its safetensors file) or a GGUF file.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let src = TensorSource::open(path)?;
        let (raw, store) = match src.format {
            Format::Gguf => {
                let rev = Reversed::open(&src)?;
                (Json::Object(rev.config), Store::Gguf(src, rev.tensors))
            }
            Format::Safetensors => {
                let cfg = config_path(path).ok_or_else(|| {
                    invalid!("{}: no config.json beside the weights", path.display())
                })?;
                let raw = ModelConfig::from_json_file(&cfg)?
                    .raw
                    .ok_or_else(|| invalid!("{}: empty config", cfg.display()))?;
                (raw, Store::Hf(src))
            }
            Format::Qnat => bail_invalid!(
                "{}: kv-profile reads Hugging Face safetensors or GGUF, not QNAT",
                path.display()
            ),
        };
        Ok(Checkpoint {
            config: ArchConfig::from_json(&raw)?,
            path: path.to_path_buf(),
            store,
        })
    }

    /// Whether the checkpoint has tensor `name` (Hugging Face name).
    pub fn has(&self, name: &str) -> bool {
        match &self.store {
            Store::Hf(src) => src.tensors.iter().any(|t| t.name == name),
            Store::Gguf(_, backs) => backs.iter().any(|b| b.hf_name == name),
        }
    }

    /// Tensor `name` as f32 values with its shape (outermost first).
    pub fn read(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let missing = || invalid!("{}: no tensor {name}", self.path.display());
        match &self.store {
            Store::Hf(src) => {
                let t = src
                    .tensors
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(missing)?;
                if !crate::quant::can_decode(t.ty) {
                    bail_invalid!("{name}: cannot decode {}", t.ty);
                }
                let mut out = vec![0f32; t.elements() as usize];
                crate::quant::decode(t.ty, src.data(t), &mut out)?;
                Ok((t.shape.iter().map(|&v| v as usize).collect(), out))
            }
            Store::Gguf(src, backs) => {
                let b = backs
                    .iter()
                    .find(|b| b.hf_name == name)
                    .ok_or_else(missing)?;
                let mut out = vec![0f32; b.info.elements() as usize];
                Reversed::read(src, b, 0, &mut out)?;
                Ok((b.info.shape.iter().map(|&v| v as usize).collect(), out))
            }
        }
    }
}

/// The tokenizer.json of a model: `explicit` when given, else `tokenizer.json` in the
/// model folder or beside the weights file.
pub fn tokenizer_path(model: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let dir = if model.is_dir() {
        model
    } else {
        model.parent().unwrap_or(Path::new("."))
    };
    let p = dir.join("tokenizer.json");
    if p.is_file() {
        Ok(p)
    } else {
        bail_invalid!(
            "no tokenizer.json beside {}; give --tokenizer FILE",
            model.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> Json {
        json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
               "num_hidden_layers": 2, "hidden_size": 64,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
               "rms_norm_eps": 1e-5, "rope_theta": 500.0})
    }

    #[test]
    fn config_fields_and_refusals() {
        let c = ArchConfig::from_json(&cfg()).unwrap();
        assert_eq!((c.layers, c.heads, c.kv_heads, c.head_dim), (2, 4, 2, 16));
        assert_eq!(c.rope_theta, 500.0);
        // llama.cpp's cache interleaves each head's rotary halves (LlamaModel.permute).
        assert_eq!(c.llama_cpp_key_order[..4], [0, 8, 1, 9]);
        let mut bad = cfg();
        bad.as_object_mut().unwrap().remove("architectures");
        assert!(ArchConfig::from_json(&bad).is_err());
        let mut bad = cfg();
        bad["model_type"] = json!("gemma2");
        assert!(ArchConfig::from_json(&bad).is_err());
        let mut bad = cfg();
        bad["rope_scaling"] = json!({"type": "llama3"});
        assert!(ArchConfig::from_json(&bad).is_err());
        let mut bad = cfg();
        bad["num_key_value_heads"] = json!(3);
        assert!(ArchConfig::from_json(&bad).is_err());
    }
}

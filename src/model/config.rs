//! One reader of model hyperparameters, whatever the input.
//!
//! Sources, in the order [`ModelConfig::for_source`] tries them:
//! - GGUF metadata: `general.architecture` and `{arch}.block_count`,
//!   `{arch}.attention.head_count`, ... (a per-layer array counts as absent);
//! - QNAT: the architecture recorded in the file (QNAT keeps no hyperparameters);
//! - safetensors: `config.json` in the model folder (a sharded folder, or the folder of a
//!   single file), else `STEM.config.json` beside a single `STEM.safetensors`.
//!
//! Multimodal configs (LLaVA, Gemma 3, Mistral 3, ...) nest the language model's
//! hyperparameters under `text_config`. Every typed getter and [`ModelConfig::get`] look
//! there first and fall back to the top level only for keys `text_config` lacks, so the
//! values describe the language model; [`ModelConfig::raw`] keeps the file as it is.
//! A config file that exists but is not JSON (or not a JSON object) is invalid input.

use crate::formats::gguf::Value;
use crate::formats::{Format, TensorSource};
use crate::invalid;
use anyhow::Result;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// Hyperparameters of a model, read from a `config.json` or GGUF metadata.
///
/// Every field is `None` when the source does not say; callers choose their defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelConfig {
    /// The file the values came from (`config.json`, the GGUF or QNAT file); `None` when
    /// no config was found.
    pub origin: Option<PathBuf>,
    /// The whole `config.json` as parsed (`None` for GGUF and QNAT): a converter needs
    /// every key, not only the typed ones below.
    pub raw: Option<Json>,
    /// Architecture: GGUF `general.architecture`, or the Hugging Face `model_type`.
    pub arch: Option<String>,
    /// Transformer blocks (`block_count`, `num_hidden_layers`).
    pub n_layer: Option<u64>,
    /// Query heads (`attention.head_count`, `num_attention_heads`).
    pub n_head: Option<u64>,
    /// Key/value heads (`attention.head_count_kv`, `num_key_value_heads`).
    pub n_head_kv: Option<u64>,
    /// Experts (`expert_count`, `num_local_experts`, ...).
    pub n_expert: Option<u64>,
    /// Head dimension as stated (`attention.key_length`, `head_dim`).
    pub head_dim: Option<u64>,
    /// Embedding width (`embedding_length`, `hidden_size`).
    pub hidden_size: Option<u64>,
    /// Training context (`context_length`, `max_position_embeddings`).
    pub context_length: Option<u64>,
    /// RoPE base (`rope.freq_base`, `rope_theta`).
    pub rope_theta: Option<f64>,
}

/// Hugging Face keys of each typed field, first match wins.
const HF_N_LAYER: &[&str] = &["num_hidden_layers", "n_layer"];
const HF_N_HEAD: &[&str] = &["num_attention_heads", "n_head"];
const HF_N_HEAD_KV: &[&str] = &["num_key_value_heads"];
const HF_N_EXPERT: &[&str] = &["num_local_experts", "num_experts", "n_routed_experts"];

impl ModelConfig {
    /// The hyperparameters of an opened model (see the module docs for the sources).
    pub fn for_source(src: &TensorSource) -> Result<ModelConfig> {
        Ok(match src.format {
            Format::Gguf => ModelConfig::from_gguf(&src.metadata, Some(&src.path)),
            Format::Qnat => ModelConfig {
                origin: Some(src.path.clone()),
                arch: src.qnat.as_ref().map(|q| q.model.architecture.clone()),
                ..ModelConfig::default()
            },
            Format::Safetensors => match config_path(&src.path) {
                Some(p) => ModelConfig::from_json_file(&p)?,
                None => ModelConfig::default(),
            },
        })
    }

    /// Reads and parses a Hugging Face `config.json` (any file name).
    pub fn from_json_file(path: &Path) -> Result<ModelConfig> {
        let bytes =
            std::fs::read(path).map_err(|e| invalid!("cannot read {}: {e}", path.display()))?;
        let raw: Json = serde_json::from_slice(&bytes)
            .map_err(|e| invalid!("{}: not JSON: {e}", path.display()))?;
        if !raw.is_object() {
            crate::bail_invalid!("{}: not a JSON object", path.display());
        }
        let mut cfg = ModelConfig::from_json(raw);
        cfg.origin = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The typed values of a parsed `config.json` (`text_config` first, see the module docs).
    pub fn from_json(raw: Json) -> ModelConfig {
        let num = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| lookup(&raw, k).and_then(Json::as_u64))
        };
        ModelConfig {
            origin: None,
            arch: lookup(&raw, "model_type")
                .and_then(Json::as_str)
                .map(str::to_string),
            n_layer: num(HF_N_LAYER),
            n_head: num(HF_N_HEAD),
            n_head_kv: num(HF_N_HEAD_KV),
            n_expert: num(HF_N_EXPERT),
            head_dim: num(&["head_dim"]),
            hidden_size: num(&["hidden_size"]),
            context_length: num(&["max_position_embeddings"]),
            rope_theta: lookup(&raw, "rope_theta").and_then(Json::as_f64),
            raw: Some(raw),
        }
    }

    /// The typed values of GGUF metadata (`{arch}.KEY` for `arch` = `general.architecture`).
    pub fn from_gguf(metadata: &[(String, Value)], origin: Option<&Path>) -> ModelConfig {
        let get = |key: &str| metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let arch = get("general.architecture").and_then(|v| v.as_str().map(|s| s.into_owned()));
        let a = arch.clone().unwrap_or_default();
        let num = |key: &str| get(&format!("{a}.{key}")).and_then(Value::as_u64);
        ModelConfig {
            origin: origin.map(Path::to_path_buf),
            raw: None,
            n_layer: num("block_count"),
            n_head: num("attention.head_count"),
            n_head_kv: num("attention.head_count_kv"),
            n_expert: num("expert_count"),
            head_dim: num("attention.key_length"),
            hidden_size: num("embedding_length"),
            context_length: num("context_length"),
            rope_theta: match get(&format!("{a}.rope.freq_base")) {
                Some(Value::F32(t)) => Some(f64::from(*t)),
                Some(Value::F64(t)) => Some(*t),
                _ => None,
            },
            arch,
        }
    }

    /// A `config.json` key, from `text_config` when it has it, else from the top level
    /// (`None` for GGUF and QNAT sources).
    pub fn get(&self, key: &str) -> Option<&Json> {
        lookup(self.raw.as_ref()?, key)
    }
}

/// `key` of `text_config`, else of the top level.
fn lookup<'a>(raw: &'a Json, key: &str) -> Option<&'a Json> {
    raw.get("text_config")
        .and_then(|t| t.get(key))
        .or_else(|| raw.get(key))
}

/// The `config.json` that describes the safetensors model at `input` (a folder, a
/// `*.safetensors` file or a `*.safetensors.index.json`), if one exists: `config.json`
/// in the folder, else `STEM.config.json` beside a single file.
pub fn config_path(input: &Path) -> Option<PathBuf> {
    if input.is_dir() {
        return Some(input.join("config.json")).filter(|p| p.is_file());
    }
    let dir = input.parent().unwrap_or(Path::new("."));
    let name = input.file_name()?.to_string_lossy();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    [
        dir.join("config.json"),
        dir.join(format!("{stem}.config.json")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_flat_config() {
        let c = ModelConfig::from_json(json!({
            "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "hidden_size": 4096, "max_position_embeddings": 8192,
            "rope_theta": 500000.0
        }));
        assert_eq!(c.arch.as_deref(), Some("llama"));
        assert_eq!(
            (c.n_layer, c.n_head, c.n_head_kv, c.n_expert),
            (Some(32), Some(32), Some(8), None)
        );
        assert_eq!((c.head_dim, c.hidden_size), (None, Some(4096)));
        assert_eq!(
            (c.context_length, c.rope_theta),
            (Some(8192), Some(500000.0))
        );
        assert_eq!(c.get("hidden_size"), Some(&json!(4096)));
        assert!(c.raw.is_some());
    }

    #[test]
    fn text_config_wins_and_the_top_level_fills_in() {
        let c = ModelConfig::from_json(json!({
            "model_type": "llava",
            "num_hidden_layers": 99,
            "rope_theta": 1000.0,
            "num_local_experts": 8,
            "text_config": {"model_type": "mistral", "num_hidden_layers": 40, "num_attention_heads": 32}
        }));
        assert_eq!(c.arch.as_deref(), Some("mistral"));
        assert_eq!(c.n_layer, Some(40));
        assert_eq!(c.n_head, Some(32));
        assert_eq!(
            c.n_expert,
            Some(8),
            "top level fills what text_config lacks"
        );
        assert_eq!(c.rope_theta, Some(1000.0));
        assert_eq!(
            c.raw.as_ref().unwrap()["num_hidden_layers"],
            99,
            "raw untouched"
        );
    }

    #[test]
    fn aliases() {
        let c = ModelConfig::from_json(json!({"n_layer": 2, "n_head": 4, "n_routed_experts": 64}));
        assert_eq!(
            (c.n_layer, c.n_head, c.n_expert),
            (Some(2), Some(4), Some(64))
        );
    }

    #[test]
    fn reads_gguf_metadata() {
        let meta = vec![
            ("general.architecture".to_string(), Value::string("qwen2")),
            ("qwen2.block_count".to_string(), Value::U32(24)),
            ("qwen2.attention.head_count".to_string(), Value::U32(14)),
            ("qwen2.attention.head_count_kv".to_string(), Value::U32(2)),
            ("qwen2.embedding_length".to_string(), Value::U32(896)),
            ("qwen2.context_length".to_string(), Value::U32(32768)),
            ("qwen2.rope.freq_base".to_string(), Value::F32(1e6)),
            ("llama.block_count".to_string(), Value::U32(7)),
        ];
        let c = ModelConfig::from_gguf(&meta, None);
        assert_eq!(c.arch.as_deref(), Some("qwen2"));
        assert_eq!(
            (c.n_layer, c.n_head, c.n_head_kv, c.n_expert),
            (Some(24), Some(14), Some(2), None)
        );
        assert_eq!((c.hidden_size, c.context_length), (Some(896), Some(32768)));
        assert_eq!(c.rope_theta, Some(1e6));
        assert!(c.raw.is_none() && c.get("block_count").is_none());
        assert_eq!(ModelConfig::from_gguf(&[], None), ModelConfig::default());
    }

    #[test]
    fn finds_config_json_and_stem_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny.safetensors");
        std::fs::write(&model, b"x").unwrap();
        assert_eq!(config_path(&model), None);
        assert_eq!(config_path(dir.path()), None);
        let stem = dir.path().join("tiny.config.json");
        std::fs::write(&stem, r#"{"num_hidden_layers": 3}"#).unwrap();
        assert_eq!(config_path(&model), Some(stem.clone()));
        assert_eq!(ModelConfig::from_json_file(&stem).unwrap().n_layer, Some(3));
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"num_hidden_layers": 5}"#).unwrap();
        assert_eq!(config_path(&model), Some(cfg.clone()), "config.json first");
        assert_eq!(config_path(dir.path()), Some(cfg.clone()));
        let c = ModelConfig::from_json_file(&cfg).unwrap();
        assert_eq!((c.n_layer, c.origin), (Some(5), Some(cfg)));
    }

    #[test]
    fn for_source_on_the_fixtures() {
        let fixture = |n: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(n)
        };
        // tiny-llama.safetensors has tiny-llama.config.json beside it; the GGUF was made
        // from the same model, so both sources give the same hyperparameters.
        for name in ["tiny-llama.safetensors", "tiny-llama.gguf"] {
            let c = ModelConfig::for_source(&TensorSource::open(&fixture(name)).unwrap()).unwrap();
            assert_eq!(c.arch.as_deref(), Some("llama"), "{name}");
            assert_eq!(
                (c.n_layer, c.n_head, c.n_head_kv),
                (Some(1), Some(4), Some(1)),
                "{name}"
            );
        }
        let st = ModelConfig::for_source(
            &TensorSource::open(&fixture("tiny-llama.safetensors")).unwrap(),
        )
        .unwrap();
        assert_eq!(st.origin, Some(fixture("tiny-llama.config.json")));
        assert_eq!(st.get("torch_dtype"), Some(&json!("float16")));
        // The sharded folder has no config.json.
        let sharded =
            ModelConfig::for_source(&TensorSource::open(&fixture("sharded")).unwrap()).unwrap();
        assert_eq!(sharded, ModelConfig::default());
    }

    #[test]
    fn invalid_json_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        for bad in ["{not json", "[1, 2]"] {
            std::fs::write(&p, bad).unwrap();
            let e = ModelConfig::from_json_file(&p).unwrap_err();
            assert!(e.is::<crate::error::InvalidInput>(), "{e}");
            assert!(e.to_string().starts_with(&p.display().to_string()), "{e}");
        }
        let e = ModelConfig::from_json_file(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }
}

//! `config.json` of a Hugging Face model folder: the hyperparameters convert reads.
//!
//! The file is read by the shared model-config reader ([`crate::model::ModelConfig`]);
//! this adds what convert does with it: `text_config` merged into the top level the way
//! `TextModel.__init__` does, `find_hparam`'s first-key-present lookup, and the
//! transformers config defaults convert sees through `AutoConfig`.

use crate::model::ModelConfig;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::{Map, Value as Json};
use std::path::Path;

/// Largest `config.json` accepted (real ones are a few KB).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub struct HfConfig {
    /// The hyperparameters, `text_config` merged over the top level.
    pub hparams: Map<String, Json>,
    /// The model folder (empty for parsed text).
    pub dir: std::path::PathBuf,
}

impl HfConfig {
    /// Reads `dir/config.json` through the shared model-config reader
    /// ([`crate::model::ModelConfig`]); a missing, oversized or invalid file is invalid input.
    pub fn load(dir: &Path) -> Result<HfConfig> {
        let path = dir.join("config.json");
        let meta = std::fs::metadata(&path).map_err(|_| {
            invalid!(
                "{} has no config.json; pass --raw-names to quantize its tensors under their Hugging Face names",
                dir.display()
            )
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            bail_invalid!("{}: larger than 16 MiB", path.display());
        }
        let raw = ModelConfig::from_json_file(&path)?
            .raw
            .expect("a config.json gives raw JSON");
        let mut cfg = HfConfig::from_json(raw).map_err(|e| invalid!("{}: {e}", path.display()))?;
        cfg.dir = dir.to_path_buf();
        Ok(cfg)
    }

    /// Parses config text (the fuzz target's entry point).
    pub fn parse(text: &[u8]) -> Result<HfConfig> {
        let json: Json =
            serde_json::from_slice(text).map_err(|e| invalid!("not valid JSON: {e}"))?;
        HfConfig::from_json(json)
    }

    /// The hyperparameters of a parsed config.json: `text_config` merged over the top
    /// level (after `load_hparams`' renames), as `TextModel.__init__` does.
    pub fn from_json(json: Json) -> Result<HfConfig> {
        let Json::Object(mut hparams) = json else {
            bail_invalid!("not a JSON object");
        };
        for alias in ["llm_config", "lm_config", "language_config", "lfm"] {
            if let Some(v) = hparams.get(alias).cloned() {
                hparams.insert("text_config".into(), v);
            }
        }
        if let Some(Json::Object(text)) = hparams.get("text_config").cloned() {
            for (k, v) in text {
                hparams.insert(k, v);
            }
        }
        Ok(HfConfig {
            hparams,
            dir: Default::default(),
        })
    }

    /// Fills keys config.json leaves out with the transformers config class's defaults
    /// (convert reads `AutoConfig.from_pretrained(dir).to_dict()`, not the bare file).
    /// `table` holds key and JSON text; present keys, even `null`, are kept.
    pub fn fill_defaults(&mut self, table: &[(&str, &str)]) {
        for (key, json) in table {
            if !self.hparams.contains_key(*key) {
                let v = serde_json::from_str(json).expect("default tables hold valid JSON");
                self.hparams.insert((*key).to_string(), v);
            }
        }
    }

    /// Sets `key` to `value()` when it is missing or `null` (transformers' computed
    /// defaults, such as `num_key_value_heads = num_attention_heads`).
    pub fn fill_computed(&mut self, key: &str, value: impl FnOnce(&HfConfig) -> Option<Json>) {
        if self.hparams.get(key).is_none_or(Json::is_null) {
            if let Some(v) = value(self) {
                self.hparams.insert(key.to_string(), v);
            }
        }
    }

    /// `architectures[0]`, the class convert dispatches on.
    pub fn architecture(&self) -> Result<&str> {
        self.hparams
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Json::as_str)
            .ok_or_else(|| invalid!("config.json has no \"architectures\" list"))
    }

    /// The value of the first of `keys` present (`find_hparam(keys, optional=True)`);
    /// an explicit `null` counts as present, as in Python.
    pub fn find(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter().find_map(|k| self.hparams.get(*k))
    }

    /// A required non-negative integer (`find_hparam(keys)`).
    pub fn require_u64(&self, keys: &[&str]) -> Result<u64> {
        match self.find(keys) {
            Some(v) => v.as_u64().ok_or_else(|| {
                invalid!(
                    "config.json: {} is not a non-negative integer: {v}",
                    keys[0]
                )
            }),
            None => bail_invalid!("config.json: could not find any of {keys:?}"),
        }
    }

    /// An optional non-negative integer; present but of the wrong type is invalid.
    pub fn opt_u64(&self, keys: &[&str]) -> Result<Option<u64>> {
        match self.find(keys) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                invalid!(
                    "config.json: {} is not a non-negative integer: {v}",
                    keys[0]
                )
            }),
        }
    }

    /// An optional number.
    pub fn opt_f64(&self, keys: &[&str]) -> Result<Option<f64>> {
        match self.find(keys) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid!("config.json: {} is not a number: {v}", keys[0])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_config_is_merged_and_lookups_follow_key_order() {
        let c = HfConfig::parse(
            br#"{"architectures":["X"],"n_layer":3,"text_config":{"num_hidden_layers":5,"rope_theta":1e6}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture().unwrap(), "X");
        assert_eq!(c.require_u64(&["num_hidden_layers", "n_layer"]).unwrap(), 5);
        assert_eq!(c.require_u64(&["n_layer", "num_hidden_layers"]).unwrap(), 3);
        assert_eq!(c.opt_f64(&["rope_theta"]).unwrap(), Some(1e6));
        assert_eq!(c.opt_u64(&["missing"]).unwrap(), None);
    }

    #[test]
    fn transformers_defaults_fill_only_missing_keys() {
        let mut c = HfConfig::parse(br#"{"rope_theta":null,"num_attention_heads":8}"#).unwrap();
        c.fill_defaults(&[("rope_theta", "10000.0"), ("rms_norm_eps", "1e-06")]);
        assert!(c.hparams["rope_theta"].is_null(), "present null is kept");
        assert_eq!(c.opt_f64(&["rms_norm_eps"]).unwrap(), Some(1e-6));
        c.fill_computed("num_key_value_heads", |c| {
            c.hparams.get("num_attention_heads").cloned()
        });
        assert_eq!(c.opt_u64(&["num_key_value_heads"]).unwrap(), Some(8));
    }

    #[test]
    fn bad_configs_are_invalid_input() {
        for text in [&b"[1]"[..], b"{", b"", b"{\"architectures\": 3}"] {
            let r = HfConfig::parse(text).and_then(|c| c.architecture().map(|_| ()));
            let e = r.unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{e}");
        }
        let c = HfConfig::parse(br#"{"num_hidden_layers":-1}"#).unwrap();
        assert!(c.require_u64(&["num_hidden_layers"]).is_err());
        assert!(c.require_u64(&["nope"]).is_err());
    }
}

//! GGUF back to Hugging Face (`quantize MODEL.gguf --format bnb-safetensors`).
//!
//! Every fact comes from the forward tables in [`super::arch`]: tensor names are read
//! backwards ([`arch::unmap_name`]); each tensor's forward transforms are found by running
//! the architecture's own `tensor` step over it and are then undone (rope rows put back
//! with [`RowOrder::target_row`], Gemma's norm `+ 1` taken off); and the config.json
//! written from the GGUF hyperparameters is checked by running the architecture's forward
//! `params` over it: every `{arch}.*` key must come back exactly as the GGUF holds it, so
//! a hyperparameter the config cannot express (yarn rope, experts, pooling...) is refused
//! rather than dropped. Phi3's fused `qkv_proj` / `gate_up_proj` are fused in Hugging
//! Face too and need no split.

use super::arch::{self, Arch};
use super::config::HfConfig;
use super::model::{Planned, RowOrder};
use crate::formats::gguf::Value;
use crate::formats::{Format, TensorInfo, TensorSource};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::{json, Map, Value as Json};
use std::collections::HashSet;

/// The architectures a config.json can be written for: `general.architecture`,
/// transformers' `model_type`, and the activation key and value of its config class.
const CONFIGS: &[(&str, &str, &str, &str)] = &[
    ("llama", "llama", "hidden_act", "silu"),
    ("qwen2", "qwen2", "hidden_act", "silu"),
    ("qwen3", "qwen3", "hidden_act", "silu"),
    ("gemma2", "gemma2", "hidden_activation", "gelu_pytorch_tanh"),
    (
        "gemma3",
        "gemma3_text",
        "hidden_activation",
        "gelu_pytorch_tanh",
    ),
];

/// One GGUF tensor on its way back.
#[derive(Debug, Clone)]
pub struct Back {
    /// The GGUF tensor (shape outermost first, as the Hugging Face tensor's).
    pub info: TensorInfo,
    /// Its Hugging Face name.
    pub hf_name: String,
    /// The row order the forward direction wrote (undone when reading).
    pub rows: RowOrder,
    /// What the forward direction added (subtracted when reading).
    pub add: f32,
}

impl Back {
    /// Whether the stored values differ from the Hugging Face ones.
    pub fn transformed(&self) -> bool {
        self.rows != RowOrder::Identity || self.add != 0.0
    }
}

/// A GGUF file seen as the Hugging Face checkpoint it came from.
pub struct Reversed {
    /// The architecture table.
    pub arch: &'static Arch,
    /// The config.json to write.
    pub config: Map<String, Json>,
    /// Tensors in the GGUF's order.
    pub tensors: Vec<Back>,
}

impl Reversed {
    /// Plans `src` (a GGUF file): architecture, config.json, names and inverse transforms.
    pub fn open(src: &TensorSource) -> Result<Reversed> {
        if src.format != Format::Gguf {
            bail_invalid!("{}: not a GGUF file", src.path.display());
        }
        let meta = |k: &str| src.metadata.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let gguf_arch = meta("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid!("{}: no general.architecture", src.path.display()))?
            .into_owned();
        let arch = arch::find_gguf(&gguf_arch)?;
        let config = hf_config(arch, src)?;
        let hf_arch = arch.hf_names[0];
        let mut cfg = HfConfig::from_json(Json::Object(config.clone()))?;
        (arch.defaults)(hf_arch, &mut cfg);
        check_params(arch, src, &cfg)?;
        let tensors = plan(arch, src, &cfg)?;
        Ok(Reversed {
            arch,
            config,
            tensors,
        })
    }

    /// Decodes elements `first..first + out.len()` (row-major, Hugging Face layout) of
    /// `b` into `out`, the forward transforms undone. Quantized GGUF types are decoded
    /// through their codec, whole blocks at a time.
    pub fn read(src: &TensorSource, b: &Back, first: usize, out: &mut [f32]) -> Result<()> {
        let t = &b.info;
        let ty =
            t.ty.as_ggml()
                .ok_or_else(|| invalid!("tensor {}: {}", t.name, t.ty))?;
        let (block, size) = (ty.block_size() as usize, ty.type_size() as usize);
        let data = src.data(t);
        // Rows move only under a permutation; otherwise the tensor is one run.
        let outer = match b.rows {
            RowOrder::Identity => 1,
            _ => t.shape.first().copied().unwrap_or(1).max(1),
        };
        let inner = (t.elements() / outer) as usize;
        let mut scratch = Vec::new();
        let mut done = 0;
        while done < out.len() {
            let e = first + done;
            let (row, within) = (e / inner, e % inner);
            let n = (inner - within).min(out.len() - done);
            let g = b.rows.target_row(row as u64, outer) as usize * inner + within;
            let (a, z) = (g / block * block, (g + n).div_ceil(block) * block);
            scratch.resize(z - a, 0f32);
            let bytes = &data[a / block * size..z / block * size];
            crate::quant::decode(t.ty, bytes, &mut scratch)?;
            out[done..done + n].copy_from_slice(&scratch[g - a..g - a + n]);
            done += n;
        }
        if b.add != 0.0 {
            for v in out.iter_mut() {
                *v -= b.add;
            }
        }
        Ok(())
    }
}

/// A float32 hyperparameter as JSON with its shortest decimal digits (`1e-05`, not
/// `9.999999747378752e-06`), which reads back as the same float32.
fn json_f32(v: f32) -> Json {
    json!(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
}

/// config.json from the GGUF hyperparameters (the keys the forward `params` read).
fn hf_config(arch: &Arch, src: &TensorSource) -> Result<Map<String, Json>> {
    let a = arch.gguf_arch;
    let Some(&(_, model_type, act_key, act)) = CONFIGS.iter().find(|c| c.0 == a) else {
        let names: Vec<_> = CONFIGS.iter().map(|c| c.0).collect();
        bail_invalid!(
            "writing a config.json for GGUF architecture {a:?} is not supported (supported: {})",
            names.join(", ")
        );
    };
    let get = |k: &str| {
        let key = format!("{a}.{k}");
        src.metadata.iter().find(|(n, _)| *n == key).map(|(_, v)| v)
    };
    let int = |k: &str| -> Result<Option<u64>> {
        get(k)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| invalid!("GGUF key {a}.{k} is not one integer: {v:?}"))
            })
            .transpose()
    };
    let float = |k: &str| -> Result<Option<Json>> {
        match get(k) {
            None => Ok(None),
            Some(Value::F32(f)) => Ok(Some(json_f32(*f))),
            Some(v) => bail_invalid!("GGUF key {a}.{k} is not a float32: {v:?}"),
        }
    };
    let need =
        |k: &str| -> Result<u64> { int(k)?.ok_or_else(|| invalid!("GGUF key {a}.{k} is missing")) };
    let tensor = |n: &str| src.tensors.iter().find(|t| t.name == n);
    let embd = tensor("token_embd.weight")
        .ok_or_else(|| invalid!("{}: no token_embd.weight", src.path.display()))?;
    let (hidden, heads) = (
        need("embedding_length")?,
        need("attention.head_count")?.max(1),
    );
    let head_dim = int("attention.key_length")?.unwrap_or(hidden / heads);
    let layers = need("block_count")?;
    let mut c = Map::new();
    c.insert("architectures".into(), json!([arch.hf_names[0]]));
    c.insert("model_type".into(), json!(model_type));
    c.insert(act_key.into(), json!(act));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert(
        "intermediate_size".into(),
        json!(need("feed_forward_length")?),
    );
    c.insert("num_hidden_layers".into(), json!(layers));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert(
        "num_key_value_heads".into(),
        json!(int("attention.head_count_kv")?.unwrap_or(heads)),
    );
    c.insert("head_dim".into(), json!(head_dim));
    if let Some(ctx) = int("context_length")? {
        c.insert("max_position_embeddings".into(), json!(ctx));
    }
    if let Some(eps) = float("attention.layer_norm_rms_epsilon")? {
        c.insert("rms_norm_eps".into(), eps);
    }
    if let Some(theta) = float("rope.freq_base")? {
        c.insert("rope_theta".into(), theta);
    }
    let vocab = embd.shape.first().copied().unwrap_or(0);
    c.insert("vocab_size".into(), json!(vocab));
    c.insert(
        "tie_word_embeddings".into(),
        json!(tensor("output.weight").is_none()),
    );
    let bias = tensor("blk.0.attn_q.bias").is_some();
    if a != "qwen2" {
        c.insert("attention_bias".into(), json!(bias));
    }
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        let v = src.metadata.iter().find(|(n, _)| n == key);
        if let Some(id) = v.and_then(|(_, v)| v.as_u64()) {
            c.insert(name.into(), json!(id));
        }
    }
    match get("rope.scaling.type").and_then(Value::as_str).as_deref() {
        None => {}
        Some("linear") => {
            let factor = float("rope.scaling.factor")?
                .ok_or_else(|| invalid!("GGUF key {a}.rope.scaling.factor is missing"))?;
            c.insert(
                "rope_scaling".into(),
                json!({"rope_type": "linear", "factor": factor}),
            );
        }
        Some(other) => {
            bail_invalid!("GGUF rope scaling {other:?} cannot be written back to config.json yet")
        }
    }
    if a.starts_with("gemma") {
        // llama.cpp scales queries by 1/sqrt(head_dim), except for the 27B models
        // (46 Gemma2 / 62 Gemma3 layers): 1/sqrt(hidden_size / heads).
        let big = (a == "gemma2" && layers == 46) || (a == "gemma3" && layers == 62);
        let scalar = if big { hidden / heads } else { head_dim };
        c.insert("query_pre_attn_scalar".into(), json!(scalar));
        if let Some(w) = int("attention.sliding_window")? {
            c.insert("sliding_window".into(), json!(w));
        }
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            c.insert(key.into(), float(key)?.unwrap_or(Json::Null));
        }
    }
    if a == "gemma3" {
        if let Some(local) = float("rope.freq_base_swa")? {
            c.insert("rope_local_base_freq".into(), local);
        }
    }
    Ok(c)
}

/// Runs the table's forward `params` over the written config: every `{arch}.*` key it
/// gives must equal the GGUF's where the GGUF has it, and every `{arch}.*` key of the
/// GGUF must be given.
fn check_params(arch: &Arch, src: &TensorSource, cfg: &HfConfig) -> Result<()> {
    let a = arch.gguf_arch;
    let mut probe = cfg.clone();
    // A folder with nothing in it: the params steps look for README.md / modules.json.
    probe.dir = src.path.join("no-folder");
    let kv = (arch.params)(&probe, a, 0)?;
    let prefix = format!("{a}.");
    let mut given = HashSet::new();
    for (k, v) in kv.iter().filter(|(k, _)| k.starts_with(&prefix)) {
        given.insert(k.as_str());
        let have = src.metadata.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        // A key the GGUF leaves out is one llama.cpp derives (key_length from the head
        // count, ...); the config was filled the same way.
        let same = match (have, v) {
            (Some(h), v) if h == v => true,
            (Some(h), v) => h.as_u64().is_some() && h.as_u64() == v.as_u64(),
            (None, _) => true,
        };
        if !same {
            bail_invalid!(
                "GGUF key {k} is {have:?} but the config.json written from the GGUF gives {v:?}; this GGUF cannot be written back to Hugging Face"
            );
        }
    }
    for (k, _) in &src.metadata {
        if k.starts_with(&prefix) && !given.contains(k.as_str()) {
            bail_invalid!(
                "GGUF key {k} has no config.json counterpart in the {a} table; this GGUF cannot be written back to Hugging Face"
            );
        }
    }
    Ok(())
}

/// Each tensor's Hugging Face name and the transforms the forward `tensor` step gives it.
fn plan(arch: &Arch, src: &TensorSource, cfg: &HfConfig) -> Result<Vec<Back>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(src.tensors.len());
    for info in &src.tensors {
        let (hf_name, bid) = arch::unmap_name(arch, &info.name).ok_or_else(|| {
            if info.name == "rope_freqs.weight" {
                invalid!("tensor rope_freqs.weight (llama3 rope scaling) cannot be written back as config.json's rope_scaling yet")
            } else {
                invalid!(
                    "tensor {} has no Hugging Face name in the {} table",
                    info.name,
                    arch.gguf_arch
                )
            }
        })?;
        let mut shape = info.shape.clone();
        if shape.is_empty() {
            shape = vec![1];
        }
        let mut p = Planned {
            hf_name: hf_name.clone(),
            name: info.name.clone(),
            shape: shape.clone(),
            rows: RowOrder::Identity,
            source: Some(info.clone()),
            generated: None,
            bid,
            add: 0.0,
        };
        (arch.tensor)(cfg, &mut p)?;
        if p.shape != shape {
            bail_invalid!(
                "tensor {}: the forward step reshapes it, which cannot be undone",
                info.name
            );
        }
        if !seen.insert(hf_name.clone()) {
            bail_invalid!("two GGUF tensors map back to {hf_name}");
        }
        out.push(Back {
            info: info.clone(),
            hf_name,
            rows: p.rows,
            add: p.add,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_keep_their_short_digits() {
        assert_eq!(json_f32(1e-5).as_f64(), Some(1e-5));
        assert_eq!(json_f32(10000.0).as_f64(), Some(10000.0));
        let back = json_f32(1e-6).as_f64().unwrap() as f32;
        assert_eq!(back.to_bits(), 1e-6f32.to_bits());
    }
}

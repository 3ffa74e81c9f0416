//! KV files and shapes for `kv-profile`: the `--shape` spec, shapes from a model
//! ([`ModelConfig`]), and the KV and query tensors of safetensors files.
//!
//! KV data files are safetensors with tensors `layer.{i}.key` and `layer.{i}.value` of
//! shape `[kv_heads, tokens, head_dim]`, and queries `layer.{i}.query` of shape
//! `[query_heads, n, head_dim]` (see docs/kv-profile.md for how to capture them).

use super::tensor::{split_heads, tensor_name};
use super::{KvData, LayerKv, Queries};
use crate::formats::{Format, TensorSource};
use crate::model::ModelConfig;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::path::Path;

/// Parses `layers=L,kv_heads=H,query_heads=Q,head_dim=D,tokens=T`.
pub fn parse_shape(spec: &str) -> Result<[usize; 5]> {
    let keys = ["layers", "kv_heads", "query_heads", "head_dim", "tokens"];
    let mut vals = [None; 5];
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| invalid!("--shape: {part:?} is not KEY=VALUE"))?;
        let i = keys
            .iter()
            .position(|&x| x == k.trim())
            .ok_or_else(|| invalid!("--shape: unknown key {k:?} (known: {})", keys.join(", ")))?;
        vals[i] = Some(
            v.trim()
                .parse::<usize>()
                .map_err(|_| invalid!("--shape: {k}={v:?} is not a number"))?,
        );
    }
    let mut out = [0; 5];
    for (i, v) in vals.iter().enumerate() {
        out[i] = v.ok_or_else(|| invalid!("--shape: missing {}", keys[i]))?;
    }
    Ok(out)
}

/// Shape from GGUF metadata or a Hugging Face config.json ([`ModelConfig`]):
/// `[layers, kv_heads, query_heads, head_dim, tokens]` and the RoPE base.
pub fn shape_from_model(path: &Path) -> Result<([usize; 5], Option<f64>)> {
    let (cfg, what) = if path.extension().is_some_and(|e| e == "json") {
        (ModelConfig::from_json_file(path)?, "config.json has no")
    } else {
        let src = TensorSource::open(path)?;
        if src.format != Format::Gguf {
            bail_invalid!("--from-model takes a GGUF file or a config.json");
        }
        let cfg = ModelConfig::for_source(&src)?;
        if cfg.arch.is_none() {
            bail_invalid!("GGUF has no general.architecture");
        }
        (cfg, "GGUF has no")
    };
    // Names of the keys in error messages, as the source spells them.
    let key = |hf: &str, gguf: &str| match &cfg.raw {
        Some(_) => hf.to_string(),
        None => format!("{}.{gguf}", cfg.arch.as_deref().unwrap_or_default()),
    };
    let need = |v: Option<u64>, hf: &str, gguf: &str| {
        v.map(|v| v as usize)
            .ok_or_else(|| invalid!("{what} {}", key(hf, gguf)))
    };
    let layers = need(cfg.n_layer, "num_hidden_layers", "block_count")?;
    let q = need(
        cfg.n_head,
        "num_attention_heads",
        "attention.head_count (or it is per layer)",
    )?;
    let kv = cfg.n_head_kv.map_or(q, |v| v as usize);
    let d = match cfg.head_dim {
        Some(d) => d as usize,
        None => {
            need(
                cfg.hidden_size,
                "head_dim or hidden_size",
                "embedding_length",
            )? / q.max(1)
        }
    };
    let tokens = cfg.context_length.map_or(4096, |v| v as usize);
    Ok(([layers, kv, q, d, tokens], cfg.rope_theta))
}

/// Reads a `[heads, rows, cols]` float tensor as per-head matrices.
fn read_heads(
    src: &TensorSource,
    name: &str,
    head_dim: Option<usize>,
) -> Result<Vec<crate::kv::Matrix>> {
    let t = src
        .tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| invalid!("{}: no tensor {name}", src.path.display()))?;
    if t.shape.len() != 3 {
        bail_invalid!(
            "{name}: shape {:?} is not [heads, tokens, head_dim]",
            t.shape
        );
    }
    if head_dim.is_some_and(|d| d as u64 != t.shape[2]) {
        bail_invalid!(
            "{name}: head_dim {} differs from the profile's {}",
            t.shape[2],
            head_dim.unwrap_or(0)
        );
    }
    let is_float = t.ty.as_ggml().is_some_and(|g| g.block_size() == 1);
    if !is_float || !crate::quant::can_decode(t.ty) {
        bail_invalid!("{name}: {} is not a float type", t.ty);
    }
    let mut data = vec![0f32; t.elements() as usize];
    crate::quant::decode(t.ty, src.data(t), &mut data)?;
    let [h, r, c] = [t.shape[0], t.shape[1], t.shape[2]].map(|v| v as usize);
    split_heads(h, r, c, &data).map_err(|e| invalid!("{name}: {e}"))
}

/// Reads KV data (`layer.{i}.key`/`value`) for every layer present.
pub fn read_kv(path: &Path, head_dim: Option<usize>) -> Result<KvData> {
    let src = TensorSource::open(path)?;
    let mut layers = Vec::new();
    while src
        .tensors
        .iter()
        .any(|t| t.name == tensor_name(layers.len(), "key"))
    {
        let i = layers.len();
        layers.push(LayerKv {
            keys: read_heads(&src, &tensor_name(i, "key"), head_dim)?,
            values: read_heads(&src, &tensor_name(i, "value"), head_dim)?,
        });
    }
    if layers.is_empty() {
        bail_invalid!(
            "{}: no layer.0.key tensor (see docs/kv-profile.md)",
            path.display()
        );
    }
    Ok(KvData { layers })
}

/// Reads queries (`layer.{i}.query`) for `layers` layers.
pub fn read_queries(path: &Path, layers: usize, head_dim: Option<usize>) -> Result<Queries> {
    let src = TensorSource::open(path)?;
    let layers = (0..layers)
        .map(|i| read_heads(&src, &tensor_name(i, "query"), head_dim))
        .collect::<Result<_>>()?;
    Ok(Queries { layers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_spec_parsing() {
        assert_eq!(
            parse_shape("layers=2,kv_heads=1,query_heads=4,head_dim=64,tokens=128").unwrap(),
            [2, 1, 4, 64, 128]
        );
        assert!(parse_shape("layers=2").is_err());
        assert!(parse_shape("layers=x,kv_heads=1,query_heads=4,head_dim=64,tokens=1").is_err());
        assert!(parse_shape("bogus=1").is_err());
    }
}

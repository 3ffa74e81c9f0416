//! `qforge kv-profile build` / `verify`: FibQuant KV-cache profiles and receipts.
//!
//! KV data files are safetensors with tensors `layer.{i}.key` and `layer.{i}.value` of
//! shape `[kv_heads, tokens, head_dim]`, and queries `layer.{i}.query` of shape
//! `[query_heads, n, head_dim]` (see docs/kv-profile.md for how to capture them).
//! `verify` exits 0 within budget, 3 over budget, 2 on invalid or tampered input.

use crate::cli::{KvBuildArgs, KvCodecKind, KvFallback, KvRoleArg, KvVerifyArgs};
use crate::error::OverBudget;
use crate::formats::{Format, TensorSource};
use crate::kv::baselines::{self, Kivi};
use crate::kv::codec::KvCodec;
use crate::kv::profile::{CodecKind, FallbackPolicy, RopeState};
use crate::kv::receipt::{compare_kv, round_trip_kv};
use crate::kv::synth::{synth_kv, SynthConfig};
use crate::kv::tensor::{split_heads, tensor_name};
use crate::kv::{
    build_profile, evaluate, KvData, KvProfile, KvRole, KvShape, LayerKv, ProfileSpec, Queries,
    Verdict,
};
use crate::model::ModelConfig;
use crate::output::{print_json, print_text};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use serde_json::{json, Value as Json};
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
fn shape_from_model(path: &Path) -> Result<([usize; 5], Option<f64>)> {
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

/// Runs `qforge kv-profile build`.
pub fn build(args: &KvBuildArgs) -> Result<()> {
    let ([layers, kv_heads, query_heads, head_dim, tokens], rope_theta) =
        match (&args.shape, &args.from_model) {
            (Some(s), _) => (parse_shape(s)?, None),
            (None, Some(p)) => shape_from_model(p)?,
            (None, None) => bail_invalid!("give --shape or --from-model"),
        };
    let shape = KvShape {
        layers,
        kv_heads,
        query_heads,
        head_dim,
        tokens,
        role: match args.role {
            KvRoleArg::Key => KvRole::Key,
            KvRoleArg::Value => KvRole::Value,
            KvRoleArg::Both => KvRole::Both,
        },
        rope: if args.pre_rope {
            RopeState::PreRope
        } else {
            RopeState::PostRope
        },
        rope_theta,
    };
    let mut spec = ProfileSpec::new(shape);
    spec.codec.kind = match args.codec {
        KvCodecKind::Fibquant => CodecKind::Fibquant,
        KvCodecKind::Turboquant => CodecKind::Turboquant,
    };
    spec.codec.seed = args.seed;
    spec.codec.block_dim = if args.codec == KvCodecKind::Turboquant {
        1
    } else {
        args.block_dim
    };
    spec.codec.codebook_size = match (args.codebook_size, args.bits) {
        (Some(n), _) => n,
        (None, Some(b)) if (1..=16).contains(&b) => 1 << b,
        (None, Some(b)) => bail_invalid!("--bits {b} is outside 1..16"),
        (None, None) => 256,
    };
    spec.pages.tokens_per_page = args.tokens_per_page;
    spec.protected.first_tokens = args.protect_first;
    spec.protected.last_tokens = args.protect_last;
    spec.protected.layers = args.protect_layers.clone();
    spec.protected.heads = args.protect_heads.clone();
    spec.fallback = match args.fallback {
        KvFallback::KeepRaw => FallbackPolicy::KeepRaw,
        KvFallback::Fail => FallbackPolicy::Fail,
    };
    spec.budget.top_k = args.top_k;
    spec.budget.max_key_logit_mse = args.max_key_logit_mse;
    spec.budget.max_attention_tv = args.max_attention_tv;
    spec.budget.max_topk_disagreement = args.max_topk_disagreement;
    spec.budget.max_value_agg_mse = args.max_value_agg_mse;
    let calibration = args
        .calibration
        .as_deref()
        .map(|p| read_kv(p, Some(head_dim)))
        .transpose()?;
    let profile = build_profile(&spec, calibration.as_ref()).map_err(|e| invalid!("{e:#}"))?;
    let text = profile.to_json()? + "\n";
    crate::formats::atomic::write_file(&args.output, text.as_bytes())?;
    let summary = json!({
        "schema": "qforge.kv-build/1",
        "output": args.output.display().to_string(),
        "codec": profile.codec_name(),
        "bits_per_value": profile.codec.bits_per_value,
        "profile_sha256": profile.digests.profile,
        "codebook_sha256": profile.digests.codebook,
        "calibration_digest": profile.calibration_digest,
    });
    if args.json {
        print_json(&summary)
    } else {
        print_text(&format!(
            "wrote {}: {} at {:.3} bits per value, profile sha256 {}\n",
            args.output.display(),
            profile.codec_name(),
            profile.codec.bits_per_value,
            profile.digests.profile
        ))
    }
}

/// A baseline: name, key codec, value codec.
type Baseline = (String, Box<dyn KvCodec>, Box<dyn KvCodec>);

/// Baselines at the profile's bits.
fn baselines(profile: &KvProfile) -> Result<Vec<Baseline>> {
    let d = profile.shape.head_dim;
    let bits = (profile.codec.bits_per_value.round() as u32).clamp(1, 8);
    let seed = profile.codec.seed;
    let mut out: Vec<Baseline> = vec![(
        format!("turboquant-b{bits}"),
        Box::new(baselines::turboquant(d, bits, seed, None)?),
        Box::new(baselines::turboquant(d, bits, seed, None)?),
    )];
    out.push((
        "kivi-b2-g32".into(),
        Box::new(Kivi::keys(d, 2, 32)?),
        Box::new(Kivi::values(d, 2, 32)?),
    ));
    if d.is_multiple_of(32) {
        out.push((
            "q8_0".into(),
            Box::new(baselines::q8_0(d)?),
            Box::new(baselines::q8_0(d)?),
        ));
        out.push((
            "q4_0".into(),
            Box::new(baselines::q4_0(d)?),
            Box::new(baselines::q4_0(d)?),
        ));
    }
    Ok(out)
}

/// Runs `qforge kv-profile verify`.
pub fn verify(args: &KvVerifyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.profile)
        .map_err(|e| invalid!("cannot read {}: {e}", args.profile.display()))?;
    let profile = KvProfile::from_json(&text)
        .map_err(|e| invalid!("{}: {}", args.profile.display(), crate::error::one_line(&e)))?;
    let s = &profile.shape;
    let (kv, queries, source) = match (&args.eval, &args.queries) {
        (Some(e), Some(q)) => {
            let kv = read_kv(e, Some(s.head_dim))?;
            let queries = read_queries(q, kv.layers.len(), Some(s.head_dim))?;
            (kv, queries, e.display().to_string())
        }
        (Some(_), None) => bail_invalid!("--eval needs --queries"),
        _ => {
            let cfg = SynthConfig {
                layers: s.layers,
                kv_heads: s.kv_heads,
                query_heads: s.query_heads,
                head_dim: s.head_dim,
                tokens: s.tokens.min(1024),
                seed: profile.codec.seed,
                ..SynthConfig::default()
            };
            let (kv, q) = synth_kv(&cfg).map_err(|e| invalid!("{e:#}"))?;
            (kv, q, "synthetic".to_string())
        }
    };
    let receipt = evaluate(&profile, &kv, &queries).map_err(|e| invalid!("{e:#}"))?;
    let mut doc = serde_json::to_value(&receipt)?;
    doc["eval_source"] = json!(source);
    if args.compare {
        let mut rows = Vec::new();
        for (name, kc, vc) in baselines(&profile)? {
            let (k, v) = (
                s.role.keys().then_some(kc.as_ref()),
                s.role.values().then_some(vc.as_ref()),
            );
            let recon = round_trip_kv(&kv, k, v)?;
            let (m, _) = compare_kv(&kv, &recon, &queries, profile.budget.top_k)?;
            rows.push(json!({"codec": name, "bits_per_value": kc.bits_per_value(), "metrics": m}));
        }
        doc["baselines"] = Json::Array(rows);
    }
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    if let Some(out) = &args.output {
        crate::formats::atomic::write_file(out, text.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if args.json {
        print_json(&doc)?;
    } else {
        let m = &receipt.metrics;
        print_text(&format!(
            "{}: {} on {} KV, {:.3} bits per value ({:.2}x vs fp16): key-logit MSE {:.4e}, attention TV {:.4}, top-{} disagreement {:.4}, value-agg MSE {:.4e} -> {}\n",
            args.profile.display(),
            receipt.codec,
            source,
            receipt.storage.effective_bits_per_value,
            receipt.compression_ratio_vs_fp16,
            m.key_logit_mse,
            m.attention_tv,
            m.top_k,
            m.topk_disagreement,
            m.value_agg_mse,
            if receipt.verdict == Verdict::Pass { "PASS" } else { "OVER BUDGET" }
        ))?;
    }
    if receipt.verdict == Verdict::Fail {
        let failed: Vec<String> = receipt
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| format!("{} {} > {}", c.name, c.value, c.max))
            .collect();
        return Err(anyhow::Error::new(OverBudget(format!(
            "over budget: {}",
            failed.join(", ")
        ))));
    }
    Ok(())
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

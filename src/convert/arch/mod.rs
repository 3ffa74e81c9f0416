//! Architecture tables: one small module per Hugging Face architecture, listed in
//! [`REGISTRY`].
//!
//! An [`Arch`] says what convert_hf_to_gguf.py's model class says: the GGUF architecture
//! name, the Hugging Face to GGUF tensor-name map (gguf-py's `tensor_mapping.py`, the
//! entries that architecture uses), the hyperparameter keys its `set_gguf_parameters`
//! writes (most start with [`text_model_params`], TextModel's), per-tensor transforms
//! and shape checks, generated tensors (`rope_freqs`), and its `set_vocab` (a call into
//! [`crate::convert::vocab`]).
//!
//! Adding an architecture: a file `arch/NAME.rs` defining `pub const ARCH: Arch` and a
//! line in [`REGISTRY`].

pub mod bert;
pub mod gemma;
pub mod llama;
pub mod phi3;
pub mod qwen;

use super::config::HfConfig;
use super::model::{Extra, Planned};
use crate::formats::gguf::Value;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use serde_json::{Map, Value as Json};

/// Ordered GGUF metadata.
pub type Kv = Vec<(String, Value)>;

/// One architecture's conversion table.
pub struct Arch {
    /// `architectures[0]` values handled (`LlamaForCausalLM`).
    pub hf_names: &'static [&'static str],
    /// `general.architecture` (`llama`).
    pub gguf_arch: &'static str,
    /// Hugging Face tensor name (`{bid}` for the block number, without the `.weight` /
    /// `.bias` suffix) to GGUF name, in one or more tables.
    pub names: &'static [&'static [(&'static str, &'static str)]],
    /// Fills config.json's missing keys with the transformers config defaults, given
    /// `architectures[0]`.
    pub defaults: fn(&str, &mut HfConfig),
    /// The model class's `filter_tensors`: the name to map, or `None` to drop the tensor.
    pub filter: fn(&str) -> Option<String>,
    /// The architecture's `set_gguf_parameters` keys in order (most start with
    /// [`text_model_params`]), given the `general.file_type` value.
    pub params: fn(&HfConfig, &str, u32) -> Result<Kv>,
    /// Checks a mapped tensor against the config and sets its transforms.
    pub tensor: fn(&HfConfig, &mut Planned) -> Result<()>,
    /// Tensors the architecture generates before the checkpoint's (`rope_freqs`).
    pub extra: fn(&HfConfig) -> Result<Extra>,
    /// Its `set_vocab`: the tokenizer keys (from [`crate::convert::vocab`]), given the
    /// model folder.
    pub vocab: fn(&HfConfig, &std::path::Path) -> Result<Kv>,
}

/// The supported architectures.
pub const REGISTRY: &[&Arch] = &[
    &llama::LLAMA,
    &qwen::QWEN2,
    &qwen::QWEN3,
    &gemma::GEMMA2,
    &gemma::GEMMA3,
    &phi3::PHI3,
    &bert::BERT,
];

/// The table for `architectures[0]`, or invalid input naming the supported ones.
pub fn find(hf_arch: &str) -> Result<&'static Arch> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.hf_names.contains(&hf_arch))
        .ok_or_else(|| {
            invalid!(
                "architecture {hf_arch:?} is not supported (supported: {}); pass --raw-names to keep Hugging Face tensor names",
                supported().join(", ")
            )
        })
}

/// Every supported `architectures[0]` value.
pub fn supported() -> Vec<&'static str> {
    REGISTRY
        .iter()
        .flat_map(|a| a.hf_names.iter().copied())
        .collect()
}

/// Maps a Hugging Face tensor name through `names` (trying `.weight` then `.bias`, as
/// `map_tensor_name` does). Returns the GGUF name and block number.
pub fn map_name(arch: &Arch, hf: &str) -> Option<(String, Option<u64>)> {
    translate(arch, hf, false)
}

/// [`map_name`] one way or the other (`backwards`: GGUF to Hugging Face, the first
/// table entry that produces the name).
fn translate(arch: &Arch, name: &str, backwards: bool) -> Option<(String, Option<u64>)> {
    for suffix in [".weight", ".bias"] {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        for &(hf, gguf) in arch.names.iter().flat_map(|t| t.iter()) {
            let (pattern, target) = if backwards { (gguf, hf) } else { (hf, gguf) };
            if let Some((pre, post)) = pattern.split_once("{bid}") {
                let Some(mid) = base.strip_prefix(pre).and_then(|r| r.strip_suffix(post)) else {
                    continue;
                };
                if !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit()) {
                    let bid: u64 = mid.parse().ok()?;
                    let named = target.replace("{bid}", mid);
                    return Some((format!("{named}{suffix}"), Some(bid)));
                }
            } else if base == pattern {
                return Some((format!("{target}{suffix}"), None));
            }
        }
    }
    None
}

/// The table whose `general.architecture` is `gguf_arch`, or invalid input naming the
/// supported ones (the reverse direction, GGUF to Hugging Face).
pub fn find_gguf(gguf_arch: &str) -> Result<&'static Arch> {
    REGISTRY
        .iter()
        .copied()
        .find(|a| a.gguf_arch == gguf_arch)
        .ok_or_else(|| {
            let names: Vec<_> = REGISTRY.iter().map(|a| a.gguf_arch).collect();
            invalid!(
                "GGUF architecture {gguf_arch:?} has no Hugging Face table (supported: {})",
                names.join(", ")
            )
        })
}

/// The inverse of [`map_name`]: a GGUF tensor name back to its Hugging Face name (the
/// first table entry that produces it), with the block number.
pub fn unmap_name(arch: &Arch, gguf: &str) -> Option<(String, Option<u64>)> {
    translate(arch, gguf, true)
}

/// `num_key_value_heads` defaults to `num_attention_heads` (Llama, Mistral, Phi3, Qwen).
pub fn kv_heads_default(cfg: &mut HfConfig) {
    cfg.fill_computed("num_key_value_heads", |c| {
        c.hparams.get("num_attention_heads").cloned()
    });
}

/// The default `filter_tensors`: every tensor kept under its name.
pub fn keep(name: &str) -> Option<String> {
    Some(name.to_string())
}

/// `TextModel.filter_tensors`: multimodal tensors (vision towers, audio encoders,
/// projectors) are not part of the text model.
pub fn multimodal(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: &[&str] = &[
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || PARTS.iter().any(|p| name.contains(p))
}

/// Tensors convert skips outright (`prepare_tensors`).
pub fn skipped(hf: &str) -> bool {
    hf.ends_with(".attention.masked_bias")
        || hf.ends_with(".attention.bias")
        || hf.ends_with(".rotary_emb.inv_freq")
}

/// Fails (invalid input) when tensor `t` does not have the shape config.json implies.
pub fn expect_shape(t: &Planned, want: Option<Vec<u64>>) -> Result<()> {
    match want {
        Some(want) if t.shape != want => bail_invalid!(
            "tensor {} has shape {:?}, config.json implies {:?}",
            t.hf_name,
            t.shape,
            want
        ),
        _ => Ok(()),
    }
}

/// `TextModel.rope_parameters`: `rope_parameters` or `rope_scaling`, with the global
/// values mirrored in.
pub fn rope_parameters(cfg: &HfConfig) -> Result<Map<String, Json>> {
    let mut rope = match cfg
        .hparams
        .get("rope_parameters")
        .or_else(|| cfg.hparams.get("rope_scaling"))
    {
        Some(Json::Object(m)) => m.clone(),
        None | Some(Json::Null) => Map::new(),
        Some(other) => bail_invalid!("config.json: rope_scaling is not an object: {other}"),
    };
    if !rope.contains_key("full_attention") && !rope.contains_key("sliding_attention") {
        let find = |keys: &[&str]| cfg.find(keys).filter(|v| !v.is_null()).cloned();
        if let Some(local) = find(&[
            "local_rope_theta",
            "rope_local_theta",
            "rope_theta_local",
            "swa_rope_theta",
            "rope_local_base_freq",
        ]) {
            let mut m = Map::new();
            m.insert("rope_theta".into(), local);
            rope.insert("sliding_attention".into(), Json::Object(m));
        }
        let global = find(&[
            "global_rope_theta",
            "rope_global_theta",
            "rope_theta_global",
            "rope_theta",
            "rotary_emb_base",
        ]);
        let mirror = [
            ("rope_theta", global),
            (
                "rope_type",
                rope.get("type").cloned().filter(|v| !v.is_null()),
            ),
            (
                "partial_rotary_factor",
                find(&["partial_rotary_factor", "rope_pct", "rope_percent"]),
            ),
            (
                "original_max_position_embeddings",
                find(&["original_max_position_embeddings"]),
            ),
        ];
        for (key, value) in mirror {
            if let Some(v) = value {
                rope.entry(key).or_insert(v);
            }
        }
    }
    Ok(rope)
}

/// The parameters of the active rope (`full_attention` when present).
pub fn active_rope(rope: &Map<String, Json>) -> Map<String, Json> {
    match rope.get("full_attention") {
        Some(Json::Object(m)) => m.clone(),
        _ => rope.clone(),
    }
}

fn f32_of(v: &Json, what: &str) -> Result<Value> {
    v.as_f64()
        .map(|f| Value::F32(f as f32))
        .ok_or_else(|| invalid!("config.json: {what} is not a number: {v}"))
}

fn u32_of(v: u64, what: &str) -> Result<Value> {
    u32::try_from(v)
        .map(Value::U32)
        .map_err(|_| invalid!("config.json: {what} {v} does not fit in 32 bits"))
}

/// `TextModel.set_gguf_parameters`, ending with `general.file_type`.
pub fn text_model_params(cfg: &HfConfig, arch: &str, file_type: u32) -> Result<Kv> {
    let mut kv: Kv = Vec::new();
    let key = |k: &str| format!("{arch}.{k}");
    let block_count =
        cfg.require_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
    kv.push((key("block_count"), u32_of(block_count, "block count")?));
    let ints: [(&[&str], &str); 3] = [
        (
            &[
                "max_position_embeddings",
                "n_ctx",
                "n_positions",
                "max_length",
                "max_sequence_length",
                "model_max_length",
            ],
            "context_length",
        ),
        (&["hidden_size", "n_embd", "dim"], "embedding_length"),
        (
            &[
                "prefix_dense_intermediate_size",
                "dense_intermediate_size",
                "intermediate_size",
                "n_inner",
                "hidden_dim",
            ],
            "feed_forward_length",
        ),
    ];
    for (keys, name) in ints {
        if let Some(v) = cfg.opt_u64(keys)? {
            kv.push((key(name), u32_of(v, name)?));
        }
    }
    for (keys, name) in [
        (
            &["num_attention_heads", "n_head", "n_heads"][..],
            "attention.head_count",
        ),
        (
            &["num_key_value_heads", "n_kv_heads"][..],
            "attention.head_count_kv",
        ),
    ] {
        if let Some(v) = cfg.opt_u64(keys)? {
            kv.push((key(name), u32_of(v, name)?));
        }
    }
    if cfg.hparams.get("is_causal") == Some(&Json::Bool(false)) {
        kv.push((key("attention.causal"), Value::Bool(false)));
    }
    let rope_all = rope_parameters(cfg)?;
    let rope = active_rope(&rope_all);
    if let Some(rope_type) = rope.get("rope_type").filter(|v| !v.is_null()) {
        let rope_type = rope_type
            .as_str()
            .ok_or_else(|| invalid!("config.json: rope_type is not a string: {rope_type}"))?;
        let factor = rope.get("factor").filter(|v| !v.is_null());
        match (rope_type, factor) {
            ("linear", Some(f)) => {
                kv.push((key("rope.scaling.type"), Value::string("linear")));
                kv.push((key("rope.scaling.factor"), f32_of(f, "rope factor")?));
            }
            ("yarn", Some(f)) => {
                kv.push((key("rope.scaling.type"), Value::string("yarn")));
                kv.push((key("rope.scaling.factor"), f32_of(f, "rope factor")?));
                let orig = rope
                    .get("original_max_position_embeddings")
                    .and_then(Json::as_u64)
                    .ok_or_else(|| {
                        invalid!("config.json: yarn rope needs original_max_position_embeddings")
                    })?;
                kv.push((
                    key("rope.scaling.original_context_length"),
                    u32_of(orig, "original_max_position_embeddings")?,
                ));
                for (names, name) in [
                    (&["extrapolation_factor"][..], "yarn_ext_factor"),
                    (&["attention_factor", "attn_factor"][..], "yarn_attn_factor"),
                    (&["beta_fast"][..], "yarn_beta_fast"),
                    (&["beta_slow"][..], "yarn_beta_slow"),
                ] {
                    if let Some(v) = names
                        .iter()
                        .find_map(|n| rope.get(*n))
                        .filter(|v| !v.is_null())
                    {
                        kv.push((key(&format!("rope.scaling.{name}")), f32_of(v, name)?));
                    }
                }
            }
            ("su" | "longrope", _) => {
                kv.push((key("rope.scaling.type"), Value::string("longrope")));
            }
            _ => {} // dynamic, llama3 (rope_freqs), default, or unknown: no key
        }
    }
    if rope_all.contains_key("mrope_section") {
        bail_invalid!("config.json: mrope_section (multimodal rope) is not supported");
    }
    if let Some(theta) = rope.get("rope_theta").filter(|v| !v.is_null()) {
        kv.push((key("rope.freq_base"), f32_of(theta, "rope_theta")?));
    }
    if let Some(local) = rope_all
        .get("sliding_attention")
        .and_then(|s| s.get("rope_theta"))
        .filter(|v| !v.is_null())
    {
        kv.push((
            key("rope.freq_base_swa"),
            f32_of(local, "local rope theta")?,
        ));
    }
    for (keys, name) in [
        (
            &["rms_norm_eps", "norm_eps"][..],
            "attention.layer_norm_rms_epsilon",
        ),
        (
            &["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"][..],
            "attention.layer_norm_epsilon",
        ),
    ] {
        if let Some(v) = cfg.find(keys).filter(|v| !v.is_null()) {
            kv.push((key(name), f32_of(v, name)?));
        }
    }
    for (keys, name) in [
        (
            &["num_local_experts", "num_experts", "n_routed_experts"][..],
            "expert_count",
        ),
        (
            &[
                "num_experts_per_tok",
                "num_experts_per_token",
                "top_k_experts",
            ][..],
            "expert_used_count",
        ),
    ] {
        if let Some(v) = cfg.opt_u64(keys)? {
            kv.push((key(name), u32_of(v, name)?));
        }
    }
    for unsupported in ["n_group", "topk_group"] {
        if cfg.hparams.get(unsupported).is_some_and(|v| !v.is_null()) {
            bail_invalid!("config.json: {unsupported} (grouped experts) is not supported");
        }
    }
    if let Some(head_dim) = cfg.opt_u64(&["head_dim"])? {
        kv.push((key("attention.key_length"), u32_of(head_dim, "head_dim")?));
        kv.push((key("attention.value_length"), u32_of(head_dim, "head_dim")?));
    }
    kv.push(("general.file_type".into(), Value::U32(file_type)));
    Ok(kv)
}

/// `TextModel._try_set_pooling_type`: `{arch}.pooling_type` from a sentence-transformers
/// Pooling module (modules.json), when there is one.
pub fn pooling_type(cfg: &HfConfig, arch: &str, kv: &mut Kv) -> Result<()> {
    let read = |p: &std::path::Path| -> Result<Json> {
        let text = std::fs::read(p).map_err(|e| invalid!("{}: {e}", p.display()))?;
        serde_json::from_slice(&text).map_err(|e| invalid!("{}: not valid JSON: {e}", p.display()))
    };
    let modules = cfg.dir.join("modules.json");
    if !modules.is_file() {
        return check_classifier_pooling(cfg);
    }
    let modules = read(&modules)?;
    let path = modules.as_array().into_iter().flatten().find_map(|m| {
        m.get("type")
            .and_then(Json::as_str)
            .filter(|t| t.ends_with("Pooling"))
            .and(m.get("path").and_then(Json::as_str))
    });
    if let Some(path) = path {
        if std::path::Path::new(path)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail_invalid!("modules.json: pooling path {path:?} leaves the model folder");
        }
        let p = read(&cfg.dir.join(path).join("config.json"))?;
        let on = |k: &str| p.get(k).and_then(Json::as_bool).unwrap_or(false);
        let ty = if on("pooling_mode_mean_tokens") {
            1
        } else if on("pooling_mode_cls_token") {
            2
        } else if on("pooling_mode_lasttoken") {
            3
        } else {
            match p.get("pooling_mode").and_then(Json::as_str) {
                Some("mean") => 1,
                Some("cls") => 2,
                Some("lasttoken") => 3,
                _ => bail_invalid!(
                    "{path}/config.json: only MEAN, CLS and LAST pooling are supported"
                ),
            }
        };
        kv.push((format!("{arch}.pooling_type"), Value::U32(ty)));
    }
    check_classifier_pooling(cfg)
}

fn check_classifier_pooling(cfg: &HfConfig) -> Result<()> {
    if cfg
        .hparams
        .get("classifier_pooling")
        .is_some_and(|v| !v.is_null())
    {
        bail_invalid!("config.json: classifier_pooling (classification heads) is not supported");
    }
    Ok(())
}

/// gguf-py tensor base names convert always stores as F32 (`prepare_tensors`).
const FORCED_F32: &[&str] = &[
    "ffn_gate_inp",
    "ffn_gate_inp_shexp",
    "position_embd",
    "token_types",
    "ssm_conv1d",
    "shortconv.conv",
    "time_mix_first",
    "time_mix_w1",
    "time_mix_w2",
    "time_mix_decay_w1",
    "time_mix_decay_w2",
    "time_mix_lerp_fused",
    "v.position_embd",
    "a.position_embd",
    "altup_correct_coef",
    "altup_predict_coef",
    "ssm_conv1d_q",
    "ssm_conv1d_k",
    "ssm_conv1d_v",
    "indexer.proj",
];

/// Whether convert stores this GGUF tensor as F32 whatever `--outtype` says: 1-D
/// tensors, norms, anything not named `.weight`, and the arch-forced ones.
pub fn forced_f32(gguf: &str, n_dims: usize) -> bool {
    if n_dims <= 1 || gguf.ends_with("_norm.weight") {
        return true;
    }
    let Some(base) = gguf.strip_suffix(".weight") else {
        return !(gguf.ends_with(".lora_a") || gguf.ends_with(".lora_b"));
    };
    let base = strip_block(base);
    FORCED_F32.contains(&base)
        || base.starts_with("posnet.") && (base.ends_with(".norm1") || base.ends_with(".norm2"))
}

/// `blk.N.rest` -> `rest`.
fn strip_block(name: &str) -> &str {
    name.strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
        .map_or(name, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_with_block_numbers_and_suffixes() {
        let a = &llama::LLAMA;
        assert_eq!(
            map_name(a, "model.layers.12.self_attn.q_proj.weight"),
            Some(("blk.12.attn_q.weight".into(), Some(12)))
        );
        assert_eq!(
            map_name(a, "model.layers.0.self_attn.q_proj.bias"),
            Some(("blk.0.attn_q.bias".into(), Some(0)))
        );
        assert_eq!(
            map_name(a, "lm_head.weight"),
            Some(("output.weight".into(), None))
        );
        assert_eq!(map_name(a, "model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(map_name(a, "model.embed_tokens.scale"), None);
    }

    #[test]
    fn every_name_maps_back() {
        for arch in REGISTRY {
            for (hf, _) in arch.names.iter().flat_map(|t| t.iter()) {
                let hf = format!("{}.weight", hf.replace("{bid}", "3"));
                let (gguf, bid) = map_name(arch, &hf).unwrap();
                assert_eq!(unmap_name(arch, &gguf), Some((hf.clone(), bid)), "{hf}");
            }
        }
        let a = &llama::LLAMA;
        assert_eq!(
            unmap_name(a, "blk.7.attn_output.weight"),
            Some(("model.layers.7.self_attn.o_proj.weight".into(), Some(7)))
        );
        assert_eq!(unmap_name(a, "rope_freqs.weight"), None);
        assert_eq!(find_gguf("qwen3").unwrap().gguf_arch, "qwen3");
        let e = find_gguf("gpt2").err().unwrap();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("gemma2"), "{e}");
    }

    #[test]
    fn multimodal_tensors_are_not_text() {
        assert!(multimodal("vision_tower.blocks.0.attn.qkv.weight"));
        assert!(multimodal("model.visual.patch_embed.proj.weight"));
        assert!(multimodal("mlp1.0.weight"));
        assert!(!multimodal("model.layers.0.mlp.down_proj.weight"));
        assert!(!multimodal("encoder.layer.0.output.dense.weight"));
    }

    #[test]
    fn outtype_exceptions_follow_convert() {
        assert!(forced_f32("blk.0.attn_norm.weight", 1));
        assert!(forced_f32("blk.0.attn_q.bias", 1));
        assert!(forced_f32("blk.3.ffn_gate_inp.weight", 2));
        assert!(forced_f32("position_embd.weight", 2));
        assert!(forced_f32("blk.0.attn_q.bias", 2));
        assert!(!forced_f32("blk.0.attn_q.weight", 2));
        assert!(!forced_f32("token_embd.weight", 2));
    }

    #[test]
    fn unsupported_architecture_names_the_supported_ones() {
        let e = find("GPT2LMHeadModel").err().unwrap();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("LlamaForCausalLM"), "{e}");
    }
}

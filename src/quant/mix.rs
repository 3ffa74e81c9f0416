//! llama.cpp's per-tensor type choice for its named quantization mixes (`Q4_K_M`, ...).
//!
//! A port of `llama_tensor_get_type` / `llama_tensor_get_type_impl`,
//! `tensor_allows_quantization`, `tensor_type_fallback`, `tensor_requires_imatrix` and the
//! counter set-up of `llama_model_quantize_impl` from llama.cpp `src/llama-quant.cpp`
//! (ggml-org/llama.cpp, file revision `007dbbf3fd17eefe9b47fee45f48f7ba5e62b714`, 2026),
//! with the `llama_ftype` values of `include/llama.h` and the type names of
//! `tools/quantize/quantize.cpp`. Only the rules that can fire for the mixes of [`Mix`] are
//! kept (the IQ1/IQ2/IQ3, TQ and MXFP4 mixes are not offered).
//!
//! Use: build a [`Planner`] from the whole tensor list (it counts the `attn_v`-like tensors
//! and sees whether `output.weight` exists, as llama.cpp's first pass does), then call
//! [`Planner::try_choose`] (or [`Planner::choose`]) once per tensor **in file order**: like
//! llama.cpp the planner is stateful (`i_attention_wv`, `i_ffn_down`, ...).
//!
//! # Hugging Face names
//!
//! Rules are written against llama.cpp GGUF names. A Hugging Face safetensors name is mapped
//! to its GGUF name for the rule lookup only ([`gguf_name`]); the output keeps the original
//! name. Recognized (with an optional `model.`, `model.language_model.` or
//! `language_model.model.` prefix; `N` a layer, `E` an expert, `.weight` or `.bias`):
//!
//! | Hugging Face | GGUF |
//! | --- | --- |
//! | `lm_head.weight`, `language_model.lm_head.weight` | `output.weight` |
//! | `embed_tokens.weight` | `token_embd.weight` |
//! | `norm.weight` | `output_norm.weight` |
//! | `layers.N.input_layernorm` | `blk.N.attn_norm` |
//! | `layers.N.post_attention_layernorm` | `blk.N.ffn_norm` |
//! | `layers.N.self_attn.{q,k,v,o}_proj` | `blk.N.attn_{q,k,v,output}` |
//! | `layers.N.self_attn.qkv_proj` (Phi-3) | `blk.N.attn_qkv` |
//! | `layers.N.self_attn.{q,k}_norm` (Qwen3) | `blk.N.attn_{q,k}_norm` |
//! | `layers.N.mlp.{gate,up,down}_proj` | `blk.N.ffn_{gate,up,down}` |
//! | `layers.N.mlp.gate_up_proj` (Phi-3) | `blk.N.ffn_up` |
//! | `layers.N.mlp.gate`, `layers.N.block_sparse_moe.gate` (routers) | `blk.N.ffn_gate_inp` |
//! | `layers.N.mlp.experts.E.{gate,up,down}_proj` (Qwen-MoE) | `blk.N.ffn_{gate,up,down}.E` |
//! | `layers.N.block_sparse_moe.experts.E.w{1,3,2}` (Mixtral) | `blk.N.ffn_{gate,up,down}.E` |
//! | `layers.N.mlp.shared_expert.{gate,up,down}_proj` | `blk.N.ffn_{gate,up,down}_shexp` |
//! | `layers.N.mlp.shared_expert_gate` | `blk.N.ffn_gate_inp_shexp` |
//! | `transformer.word_embeddings` (Falcon) | `token_embd` |
//! | `transformer.ln_f` (Falcon) | `output_norm` |
//! | `transformer.h.N.self_attention.query_key_value` (Falcon) | `blk.N.attn_qkv` |
//! | `transformer.h.N.self_attention.dense` (Falcon) | `blk.N.attn_output` |
//! | `transformer.h.N.mlp.dense_h_to_4h` / `dense_4h_to_h` (Falcon) | `blk.N.ffn_up` / `ffn_down` |
//! | `transformer.h.N.{input_layernorm,ln_attn,ln_mlp}` (Falcon) | `blk.N.attn_norm{,,_2}` |
//!
//! Per-expert 2-D tensors map to llama.cpp's older per-expert names (`blk.N.ffn_down.E`),
//! which the rules treat like the merged `ffn_down_exps`. Other names go to the rules as
//! they are. `--tensor-type` patterns are tried on the original name and then on the GGUF
//! name, so both `attn_v` and `v_proj` patterns work on Hugging Face input.
//!
//! # Where this differs from llama.cpp
//!
//! - llama.cpp aborts the whole run on a few inputs; [`Planner::try_choose`] returns a
//!   [`MixError`] there, [`Planner::choose`] picks a documented safe type instead.
//! - [`ModelFacts::arch`] may be a Hugging Face `model_type`; `mistral` and `mixtral` count
//!   as llama.cpp's `llama`, `RefinedWeb*` as `falcon`, `nemotron-nas` as `deci`.
//! - llama.cpp's `LLM_TYPE_70B` comes from each architecture's loader; [`ModelFacts::is_70b`]
//!   infers it for `llama`, `qwen2`, `deci`, `olmo` (80 layers) and `jais2` (68 layers), or
//!   takes it as given.
//! - An `n_layer` of 0 (no metadata) is replaced by 1 + the highest `blk.N` seen.

use crate::formats::ggml_type::GgmlType;
use regex::Regex;
use std::borrow::Cow;
use std::fmt;

// ---------------------------------------------------------------------------------------
// Mixes
// ---------------------------------------------------------------------------------------

/// A llama-quantize file type ("mix"): the base tensor type plus per-tensor rules.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mix {
    /// `Q4_0`: legacy 4-bit, 32-element blocks.
    Q4_0,
    /// `Q4_1`: legacy 4-bit with minimum.
    Q4_1,
    /// `Q5_0`: legacy 5-bit.
    Q5_0,
    /// `Q5_1`: legacy 5-bit with minimum.
    Q5_1,
    /// `Q2_K`: Q2_K base, attn_v/ffn_down/attn_output raised to Q3_K (or more).
    Q2_K,
    /// `Q2_K_S`: Q2_K base, needs an importance matrix.
    Q2_K_S,
    /// `Q3_K_S`: Q3_K throughout (output Q6_K).
    Q3_K_S,
    /// `Q3_K_M`: Q3_K base with Q4_K/Q5_K attn_v, ffn_down, attn_output.
    Q3_K_M,
    /// `Q3_K_L`: Q3_K base with Q5_K attn_v, ffn_down, attn_output.
    Q3_K_L,
    /// `IQ4_NL`: IQ4_NL base (non-linear 4-bit, 32-element blocks).
    IQ4_NL,
    /// `Q4_K_S`: Q4_K base, first layers' attn_v/ffn_down Q5_K.
    Q4_K_S,
    /// `Q4_K_M`: Q4_K base, half of attn_v/ffn_down Q6_K.
    Q4_K_M,
    /// `Q5_K_S`: Q5_K throughout (output Q6_K).
    Q5_K_S,
    /// `Q5_K_M`: Q5_K base, half of attn_v/ffn_down Q6_K.
    Q5_K_M,
    /// `Q6_K`: Q6_K throughout.
    Q6_K,
    /// `Q8_0`: Q8_0 throughout.
    Q8_0,
    /// `F16`: 2-D weights to F16.
    F16,
    /// `BF16`: 2-D weights to BF16.
    BF16,
    /// `F32`: 2-D weights to F32 (`LLAMA_FTYPE_ALL_F32`).
    F32,
}

impl Mix {
    /// Every mix, in llama-quantize's listing order.
    pub const ALL: &'static [Mix] = &[
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::Q2_K,
        Mix::Q2_K_S,
        Mix::Q3_K_S,
        Mix::Q3_K_M,
        Mix::Q3_K_L,
        Mix::IQ4_NL,
        Mix::Q4_K_S,
        Mix::Q4_K_M,
        Mix::Q5_K_S,
        Mix::Q5_K_M,
        Mix::Q6_K,
        Mix::Q8_0,
        Mix::F16,
        Mix::BF16,
        Mix::F32,
    ];

    /// Parses a llama-quantize type name case-insensitively, including its aliases
    /// (`Q3_K` = `Q3_K_M`, `Q4_K` = `Q4_K_M`, `Q5_K` = `Q5_K_M`) and, like llama-quantize,
    /// a decimal `llama_ftype` number (`15`).
    pub fn from_name(name: &str) -> Option<Mix> {
        let name = name.trim();
        if let Some(m) = Mix::ALL
            .iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
        {
            return Some(*m);
        }
        match name.to_ascii_uppercase().as_str() {
            "Q3_K" => Some(Mix::Q3_K_M),
            "Q4_K" => Some(Mix::Q4_K_M),
            "Q5_K" => Some(Mix::Q5_K_M),
            _ => name.parse::<u32>().ok().and_then(Mix::from_file_type),
        }
    }

    /// The mix whose `llama_ftype` (GGUF `general.file_type`) is `ft`.
    pub fn from_file_type(ft: u32) -> Option<Mix> {
        Mix::ALL.iter().copied().find(|m| m.file_type() == ft)
    }

    /// llama-quantize's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        match self {
            Mix::Q4_0 => "Q4_0",
            Mix::Q4_1 => "Q4_1",
            Mix::Q5_0 => "Q5_0",
            Mix::Q5_1 => "Q5_1",
            Mix::Q2_K => "Q2_K",
            Mix::Q2_K_S => "Q2_K_S",
            Mix::Q3_K_S => "Q3_K_S",
            Mix::Q3_K_M => "Q3_K_M",
            Mix::Q3_K_L => "Q3_K_L",
            Mix::IQ4_NL => "IQ4_NL",
            Mix::Q4_K_S => "Q4_K_S",
            Mix::Q4_K_M => "Q4_K_M",
            Mix::Q5_K_S => "Q5_K_S",
            Mix::Q5_K_M => "Q5_K_M",
            Mix::Q6_K => "Q6_K",
            Mix::Q8_0 => "Q8_0",
            Mix::F16 => "F16",
            Mix::BF16 => "BF16",
            Mix::F32 => "F32",
        }
    }

    /// The default tensor type (`llama_ftype_get_default_type`).
    pub fn base_type(self) -> GgmlType {
        match self {
            Mix::Q4_0 => GgmlType::Q4_0,
            Mix::Q4_1 => GgmlType::Q4_1,
            Mix::Q5_0 => GgmlType::Q5_0,
            Mix::Q5_1 => GgmlType::Q5_1,
            Mix::Q2_K | Mix::Q2_K_S => GgmlType::Q2_K,
            Mix::Q3_K_S | Mix::Q3_K_M | Mix::Q3_K_L => GgmlType::Q3_K,
            Mix::IQ4_NL => GgmlType::IQ4_NL,
            Mix::Q4_K_S | Mix::Q4_K_M => GgmlType::Q4_K,
            Mix::Q5_K_S | Mix::Q5_K_M => GgmlType::Q5_K,
            Mix::Q6_K => GgmlType::Q6_K,
            Mix::Q8_0 => GgmlType::Q8_0,
            Mix::F16 => GgmlType::F16,
            Mix::BF16 => GgmlType::BF16,
            Mix::F32 => GgmlType::F32,
        }
    }

    /// The `llama_ftype` value, written to GGUF `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            Mix::F32 => 0,
            Mix::F16 => 1,
            Mix::Q4_0 => 2,
            Mix::Q4_1 => 3,
            Mix::Q8_0 => 7,
            Mix::Q5_0 => 8,
            Mix::Q5_1 => 9,
            Mix::Q2_K => 10,
            Mix::Q3_K_S => 11,
            Mix::Q3_K_M => 12,
            Mix::Q3_K_L => 13,
            Mix::Q4_K_S => 14,
            Mix::Q4_K_M => 15,
            Mix::Q5_K_S => 16,
            Mix::Q5_K_M => 17,
            Mix::Q6_K => 18,
            Mix::Q2_K_S => 21,
            Mix::IQ4_NL => 25,
            Mix::BF16 => 32,
        }
    }

    /// Every type this mix can give a tensor (before user overrides), fallbacks included.
    pub fn possible_types(self) -> &'static [GgmlType] {
        use GgmlType as T;
        match self {
            Mix::Q4_0 => &[T::Q4_0, T::Q4_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q4_1 => &[T::Q4_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q5_0 => &[T::Q5_0, T::Q5_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q5_1 => &[T::Q5_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q2_K | Mix::Q2_K_S | Mix::Q3_K_S | Mix::Q3_K_M | Mix::Q3_K_L => &[
                T::Q2_K,
                T::Q3_K,
                T::Q4_K,
                T::Q5_K,
                T::Q6_K,
                T::Q4_0,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
            Mix::IQ4_NL => &[T::IQ4_NL, T::Q5_K, T::Q6_K, T::Q5_1, T::Q8_0, T::F16],
            Mix::Q4_K_S | Mix::Q4_K_M | Mix::Q5_K_S | Mix::Q5_K_M | Mix::Q6_K => {
                &[T::Q4_K, T::Q5_K, T::Q6_K, T::Q5_0, T::Q5_1, T::Q8_0, T::F16]
            }
            Mix::Q8_0 => &[T::Q8_0, T::F16],
            Mix::F16 => &[T::F16],
            Mix::BF16 => &[T::BF16],
            Mix::F32 => &[T::F32],
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------
// Tensor roles and names
// ---------------------------------------------------------------------------------------

/// llama.cpp's `tensor_category`: the broad role the mix rules key on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `token_embd.weight` or `per_layer_token_embd.weight`.
    TokenEmbd,
    /// Name contains `attn_q.weight`.
    AttnQ,
    /// Name contains `attn_v.weight`.
    AttnV,
    /// Name contains `attn_k.weight`.
    AttnK,
    /// Name contains `attn_qkv.weight`.
    AttnQkv,
    /// Name contains `attn_kv_b.weight` (MLA).
    AttnKvB,
    /// Name contains `attn_output.weight`.
    AttnOutput,
    /// Name contains `ffn_up` (also `_exps`, `_shexp`, per-expert).
    FfnUp,
    /// Name contains `ffn_gate` (also `_exps`, `_shexp`, `_inp`).
    FfnGate,
    /// Name contains `ffn_down` (also `_exps`, `_shexp`, per-expert).
    FfnDown,
    /// Exactly `output.weight`.
    Output,
    /// Anything else.
    Other,
}

impl Role {
    /// Whether the rules treat this role like `attn_v` (`category_is_attn_v`).
    pub fn is_attn_v_like(self) -> bool {
        matches!(self, Role::AttnV | Role::AttnQkv | Role::AttnKvB)
    }
}

/// The role of a llama.cpp GGUF tensor name (`tensor_get_category`; first test wins).
pub fn gguf_role(name: &str) -> Role {
    if name == "output.weight" {
        Role::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Role::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Role::AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        Role::AttnKvB
    } else if name.contains("attn_v.weight") {
        Role::AttnV
    } else if name.contains("attn_k.weight") {
        Role::AttnK
    } else if name.contains("attn_q.weight") {
        Role::AttnQ
    } else if name.contains("attn_output.weight") {
        Role::AttnOutput
    } else if name.contains("ffn_up") {
        Role::FfnUp
    } else if name.contains("ffn_gate") {
        Role::FfnGate
    } else if name.contains("ffn_down") {
        Role::FfnDown
    } else {
        Role::Other
    }
}

/// The role of a GGUF or recognized Hugging Face name (see the module docs).
pub fn canonical_role(name: &str) -> Role {
    gguf_role(&canonical_name(name))
}

/// The llama.cpp GGUF name for a recognized Hugging Face name, else the name itself.
pub fn canonical_name(name: &str) -> Cow<'_, str> {
    match gguf_name(name) {
        Some(n) => Cow::Owned(n),
        None => Cow::Borrowed(name),
    }
}

/// The llama.cpp GGUF name of a recognized Hugging Face tensor name (table in the module
/// docs), or `None` for names it does not recognize (GGUF names included).
pub fn gguf_name(name: &str) -> Option<String> {
    if name == "lm_head.weight" || name == "language_model.lm_head.weight" {
        return Some("output.weight".to_string());
    }
    if let Some(rest) = name.strip_prefix("transformer.") {
        return falcon_name(rest);
    }
    let rest = ["model.language_model.", "language_model.model.", "model."]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    match rest {
        "embed_tokens.weight" => return Some("token_embd.weight".to_string()),
        "norm.weight" => return Some("output_norm.weight".to_string()),
        "norm.bias" => return Some("output_norm.bias".to_string()),
        _ => {}
    }
    let (layer, tail) = split_layer(rest.strip_prefix("layers.")?)?;
    let (stem, suffix) = split_param(tail)?;
    let mapped: Cow<str> = match stem {
        "input_layernorm" => "attn_norm".into(),
        "post_attention_layernorm" => "ffn_norm".into(),
        "self_attn.q_proj" => "attn_q".into(),
        "self_attn.k_proj" => "attn_k".into(),
        "self_attn.v_proj" => "attn_v".into(),
        "self_attn.o_proj" => "attn_output".into(),
        "self_attn.qkv_proj" => "attn_qkv".into(),
        "self_attn.q_norm" => "attn_q_norm".into(),
        "self_attn.k_norm" => "attn_k_norm".into(),
        "mlp.gate_proj" => "ffn_gate".into(),
        "mlp.up_proj" => "ffn_up".into(),
        "mlp.down_proj" => "ffn_down".into(),
        "mlp.gate_up_proj" => "ffn_up".into(),
        "mlp.gate" | "block_sparse_moe.gate" => "ffn_gate_inp".into(),
        "mlp.shared_expert.gate_proj" => "ffn_gate_shexp".into(),
        "mlp.shared_expert.up_proj" => "ffn_up_shexp".into(),
        "mlp.shared_expert.down_proj" => "ffn_down_shexp".into(),
        "mlp.shared_expert_gate" => "ffn_gate_inp_shexp".into(),
        _ => expert_name(stem)?.into(),
    };
    Some(format!("blk.{layer}.{mapped}.{suffix}"))
}

/// `N.rest` -> (`N`, `rest`).
fn split_layer(s: &str) -> Option<(&str, &str)> {
    let (n, rest) = s.split_once('.')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some((n, rest))
}

/// `stem.weight` / `stem.bias` -> (`stem`, suffix).
fn split_param(s: &str) -> Option<(&str, &str)> {
    let (stem, suffix) = s.rsplit_once('.')?;
    matches!(suffix, "weight" | "bias").then_some((stem, suffix))
}

/// Per-expert Hugging Face names: `mlp.experts.E.down_proj`, `block_sparse_moe.experts.E.w2`.
fn expert_name(stem: &str) -> Option<String> {
    let rest = stem
        .strip_prefix("mlp.experts.")
        .or_else(|| stem.strip_prefix("block_sparse_moe.experts."))?;
    let (e, proj) = split_layer(rest)?;
    let role = match proj {
        "gate_proj" | "w1" => "ffn_gate",
        "down_proj" | "w2" => "ffn_down",
        "up_proj" | "w3" => "ffn_up",
        _ => return None,
    };
    Some(format!("{role}.{e}"))
}

/// Falcon's `transformer.*` names.
fn falcon_name(rest: &str) -> Option<String> {
    match rest {
        "word_embeddings.weight" => return Some("token_embd.weight".to_string()),
        "ln_f.weight" => return Some("output_norm.weight".to_string()),
        "ln_f.bias" => return Some("output_norm.bias".to_string()),
        _ => {}
    }
    let (layer, tail) = split_layer(rest.strip_prefix("h.")?)?;
    let (stem, suffix) = split_param(tail)?;
    let mapped = match stem {
        "input_layernorm" | "ln_attn" => "attn_norm",
        "ln_mlp" => "attn_norm_2",
        "self_attention.query_key_value" => "attn_qkv",
        "self_attention.dense" => "attn_output",
        "mlp.dense_h_to_4h" => "ffn_up",
        "mlp.dense_4h_to_h" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}.{suffix}"))
}

/// ggml's `ggml_n_dims`: 1 + the index of the last dimension larger than 1 (at least 1).
pub fn n_dims(ne: &[u64]) -> usize {
    ne.iter().rposition(|&n| n > 1).map_or(1, |i| i + 1)
}

/// Substrings that keep a tensor out of quantization (`tensor_allows_quantization`).
const EXCLUDED_SUBSTRINGS: &[(&str, &str)] = &[
    ("ffn_gate_inp.weight", "copy: expert router"),
    ("ffn_gate_tid2eid.weight", "copy: excluded by name"),
    ("altup", "copy: excluded by name"),
    ("laurel", "copy: excluded by name"),
    ("per_layer_model_proj", "copy: excluded by name"),
    ("ssm_conv1d", "copy: excluded by name"),
    ("shortconv.conv.weight", "copy: excluded by name"),
    ("indexer.k_proj.weight", "copy: excluded by name"),
    ("indexer.q_proj.weight", "copy: excluded by name"),
    ("time_mix_first.weight", "copy: excluded by name"),
    ("time_mix_w0.weight", "copy: excluded by name"),
    ("time_mix_w1.weight", "copy: excluded by name"),
    ("time_mix_w2.weight", "copy: excluded by name"),
    ("time_mix_v0.weight", "copy: excluded by name"),
    ("time_mix_v1.weight", "copy: excluded by name"),
    ("time_mix_v2.weight", "copy: excluded by name"),
    ("time_mix_a0.weight", "copy: excluded by name"),
    ("time_mix_a1.weight", "copy: excluded by name"),
    ("time_mix_a2.weight", "copy: excluded by name"),
    ("time_mix_g1.weight", "copy: excluded by name"),
    ("time_mix_g2.weight", "copy: excluded by name"),
    ("time_mix_decay_w1.weight", "copy: excluded by name"),
    ("time_mix_decay_w2.weight", "copy: excluded by name"),
    ("time_mix_lerp_fused.weight", "copy: excluded by name"),
    ("attn_rel_b.weight", "copy: excluded by name"),
    (".position_embd", "copy: position embedding"),
    ("sam.pos_embd", "copy: position embedding"),
    ("sam.neck.", "copy: excluded by name"),
    ("sam.net_", "copy: excluded by name"),
    (".rel_pos", "copy: excluded by name"),
    (".patch_embd", "copy: excluded by name"),
    (".patch_merger", "copy: excluded by name"),
    ("a.rvq.codebook", "copy: excluded by name"),
    ("mm.a.code_embd", "copy: excluded by name"),
];

/// Why llama.cpp would leave this (GGUF-named) tensor unquantized, or `None` if it may be
/// quantized.
fn exclusion(gguf: &str, n_dims: usize, leave_output_tensor: bool) -> Option<&'static str> {
    if n_dims < 2 {
        return Some("copy: 1-D");
    }
    // llama.cpp tests `name.rfind("weight") == name.size() - 6` in size_t arithmetic, which
    // is also true for a 5-byte name (npos == 5 - 6).
    if !(gguf.ends_with("weight") || gguf.len() == 5) {
        return Some("copy: not a weight");
    }
    if gguf.contains("_norm.weight") {
        return Some("copy: norm");
    }
    if leave_output_tensor && gguf == "output.weight" {
        return Some("copy: --leave-output-tensor");
    }
    if let Some((_, why)) = EXCLUDED_SUBSTRINGS.iter().find(|(s, _)| gguf.contains(s)) {
        return Some(why);
    }
    if gguf == "position_embd.weight" {
        return Some("copy: position embedding");
    }
    if gguf == "token_types.weight" {
        return Some("copy: token types");
    }
    None
}

/// Whether llama.cpp quantizes a tensor at all (`tensor_allows_quantization`): at least
/// 2-D (see [`n_dims`]), name ends in `weight`, not a norm, expert router, position
/// embedding or one of a list of small special tensors, and not `output.weight` under
/// `--leave-output-tensor`. Hugging Face names are mapped first ([`gguf_name`]).
pub fn should_quantize(name: &str, n_dims: usize, leave_output_tensor: bool) -> bool {
    exclusion(&canonical_name(name), n_dims, leave_output_tensor).is_none()
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// layer in between get more bits.
pub fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The type llama.cpp falls back to when a row is not a whole number of `ty` blocks
/// (`tensor_type_fallback`), before the F16 last resort; `None` where llama.cpp has no
/// fallback and aborts.
pub fn fallback_type(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType as T;
    match ty {
        T::IQ1_S
        | T::IQ1_M
        | T::IQ2_XXS
        | T::IQ2_XS
        | T::IQ2_S
        | T::IQ3_XXS
        | T::IQ3_S
        | T::IQ4_XS => Some(T::IQ4_NL),
        T::Q2_0 | T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => Some(T::Q4_0),
        T::Q4_K => Some(T::Q5_0),
        T::Q5_K => Some(T::Q5_1),
        T::Q6_K => Some(T::Q8_0),
        _ => None,
    }
}

/// Whether llama.cpp refuses to write this tensor as `ty` without importance-matrix data
/// (`tensor_requires_imatrix`): IQ1/IQ2/IQ3_XXS types, and Q2_K inside a Q2_K_S file;
/// never the token embeddings or `output.weight`.
pub fn requires_imatrix(name: &str, ty: GgmlType, mix: Mix) -> bool {
    let gguf = canonical_name(name);
    if matches!(
        gguf.as_ref(),
        "token_embd.weight" | "per_layer_token_embd.weight" | "output.weight"
    ) {
        return false;
    }
    match ty {
        GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_M
        | GgmlType::IQ1_S => true,
        GgmlType::Q2_K => mix == Mix::Q2_K_S,
        _ => false,
    }
}

/// ggml's `ggml_is_quantized`: block types (every type with blocks of more than one).
fn is_quantized(ty: GgmlType) -> bool {
    ty.block_size() > 1
}

/// The layer of a `blk.N.` name, read like llama.cpp's `sscanf(name, "blk.%d.")`.
fn parse_blk(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?.trim_start();
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().ok().map(|n| sign * n)
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// The model hyperparameters the rules read (llama.cpp's `hparams` and `model.type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// llama.cpp architecture (`general.architecture`), or a Hugging Face `model_type`.
    pub arch: String,
    /// Blocks (`{arch}.block_count`, nextn/MTP layers included); 0 = infer from names.
    pub n_layer: u32,
    /// Attention heads of layer 0.
    pub n_head: u32,
    /// KV heads of layer 0; 0 = same as `n_head` (llama.cpp's default).
    pub n_head_kv: u32,
    /// Experts (`{arch}.expert_count`); 0 for dense models.
    pub n_expert: u32,
    /// Whether llama.cpp types the model `LLM_TYPE_70B`; `None` = infer (see [`ModelFacts::is_70b`]).
    pub llm_type_70b: Option<bool>,
}

impl ModelFacts {
    /// llama.cpp's architecture name for [`ModelFacts::arch`] (maps a few HF `model_type`s).
    pub fn llama_arch(&self) -> String {
        let a = self.arch.trim().to_ascii_lowercase();
        match a.as_str() {
            "mistral" | "mixtral" => "llama".to_string(),
            "refinedweb" | "refinedwebmodel" => "falcon".to_string(),
            "nemotron-nas" => "deci".to_string(),
            _ => a,
        }
    }

    /// `hparams.n_gqa()`: heads per KV head (integer division), 0 without heads.
    pub fn n_gqa(&self) -> u32 {
        let kv = if self.n_head_kv == 0 {
            self.n_head
        } else {
            self.n_head_kv
        };
        self.n_head.checked_div(kv).unwrap_or(0)
    }

    /// Whether llama.cpp's loader types the model `LLM_TYPE_70B`: `llm_type_70b` if set,
    /// else `llama` with 80 layers, not 8 experts and `n_head != n_head_kv`,
    /// `qwen2`/`deci`/`olmo` with 80 layers, `jais2` with 68.
    pub fn is_70b(&self) -> bool {
        if let Some(v) = self.llm_type_70b {
            return v;
        }
        let kv = if self.n_head_kv == 0 {
            self.n_head
        } else {
            self.n_head_kv
        };
        match self.llama_arch().as_str() {
            "llama" => self.n_layer == 80 && self.n_expert != 8 && self.n_head != kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

/// llama-quantize's options that change type choice.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--pure`: no mix rules; every quantizable tensor gets the base type (overrides,
    /// `--output-tensor-type`, `--token-embedding-type` and fallbacks still apply).
    pub pure: bool,
    /// `--output-tensor-type`: type of `output.weight` (and of tied token embeddings).
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`: type of `token_embd.weight`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--leave-output-tensor`: copy `output.weight` unchanged.
    pub leave_output_tensor: bool,
    /// `--tensor-type PATTERN=TYPE`, first match wins (searched anywhere in the name).
    /// Like llama.cpp, they are only consulted when the mix's base type is a block type
    /// (not for F16/BF16/F32). llama-quantize lowercases patterns; do that when parsing.
    pub overrides: Vec<(Regex, GgmlType)>,
    /// Whether an importance matrix is given (`--imatrix`).
    pub has_imatrix: bool,
}

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------

/// The decision for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Output type; only meaningful when `quantize` (otherwise F32 as a placeholder).
    pub ty: GgmlType,
    /// Whether the tensor goes through the quantizer (llama.cpp's
    /// `tensor_allows_quantization`). When false it keeps its source type; when true and
    /// `ty` equals the source type, llama.cpp copies it too.
    pub quantize: bool,
    /// Why: `copy: 1-D`, `mix: attn_v`, `override`, `fallback: Q4_K -> Q5_0 ...`, ...
    pub reason: &'static str,
    /// The type chosen before a row-length fallback replaced it.
    pub fallback_from: Option<GgmlType>,
    /// Whether llama.cpp needs importance-matrix data for this tensor at this type
    /// ([`requires_imatrix`]); it aborts when the entry is missing.
    pub requires_imatrix: bool,
}

impl Choice {
    fn keep(reason: &'static str) -> Choice {
        Choice {
            ty: GgmlType::F32,
            quantize: false,
            reason,
            fallback_from: None,
            requires_imatrix: false,
        }
    }

    /// The output type, or `None` when the tensor keeps its source type.
    pub fn target(&self) -> Option<GgmlType> {
        self.quantize.then_some(self.ty)
    }
}

/// Where llama.cpp aborts instead of choosing a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixError {
    /// The row length does not fit the chosen type and llama.cpp has no fallback for it
    /// ("no tensor type fallback is defined for type ..."): 32-element types on rows not a
    /// multiple of 32.
    NoFallback {
        /// Tensor name.
        name: String,
        /// Type that does not fit.
        ty: GgmlType,
        /// Row length (`ne[0]`).
        ncols: u64,
    },
    /// A type forced by `--output-tensor-type` / `--token-embedding-type` does not fit the
    /// row (llama.cpp fails in ggml when sizing the tensor).
    ForcedTypeDoesNotFit {
        /// Tensor name.
        name: String,
        /// Forced type.
        ty: GgmlType,
        /// Row length (`ne[0]`).
        ncols: u64,
    },
    /// MoE model (more than one expert) and the FFN tensor's layer cannot be read from a
    /// `blk.N.` name or is not below `n_layer`.
    BadLayer {
        /// Tensor name.
        name: String,
        /// Layer count the layer must be below.
        n_layer: u32,
    },
    /// The tensor's type needs an importance matrix and none was given.
    NeedsImatrix {
        /// Tensor name.
        name: String,
        /// Chosen type.
        ty: GgmlType,
    },
}

impl fmt::Display for MixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MixError::NoFallback { name, ty, ncols } => write!(
                f,
                "tensor {name}: {ncols} columns are not a multiple of {} (required for {ty}) \
                 and llama.cpp defines no fallback for {ty}",
                ty.block_size()
            ),
            MixError::ForcedTypeDoesNotFit { name, ty, ncols } => write!(
                f,
                "tensor {name}: {ncols} columns are not a multiple of {} (required for the \
                 requested type {ty})",
                ty.block_size()
            ),
            MixError::BadLayer { name, n_layer } => write!(
                f,
                "tensor {name}: cannot determine its layer (expected blk.N. with N < {n_layer})"
            ),
            MixError::NeedsImatrix { name, ty } => write!(
                f,
                "tensor {name}: {ty} in this mix requires an importance matrix (--imatrix)"
            ),
        }
    }
}

impl std::error::Error for MixError {}

// ---------------------------------------------------------------------------------------
// Planner
// ---------------------------------------------------------------------------------------

/// llama.cpp's `quantize_state_impl`: the mix, facts, options and the running counters.
#[derive(Debug, Clone)]
pub struct Planner {
    mix: Mix,
    facts: ModelFacts,
    opts: Options,
    arch: String,
    is_70b: bool,
    n_layer: u32,
    n_attention_wv: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    n_fallback: usize,
    has_tied_embeddings: bool,
}

impl Planner {
    /// Sets up the counters from the whole tensor list (names and ggml-order shapes,
    /// innermost first) like llama.cpp's `init_quantize_state_counters`:
    /// `n_attention_wv` counts the `attn_v`-like tensors, embeddings count as tied when no
    /// `output.weight` exists, and the FFN counts are `n_layer`.
    pub fn new<N, S>(mix: Mix, facts: ModelFacts, opts: Options, tensors: &[(N, S)]) -> Planner
    where
        N: AsRef<str>,
        S: AsRef<[u64]>,
    {
        let mut n_attention_wv = 0;
        let mut has_tied_embeddings = true;
        let mut max_blk: Option<i64> = None;
        for (name, _) in tensors {
            let gguf = canonical_name(name.as_ref());
            let role = gguf_role(&gguf);
            if role.is_attn_v_like() {
                n_attention_wv += 1;
            }
            if role == Role::Output {
                has_tied_embeddings = false;
            }
            if let Some(b) = parse_blk(&gguf) {
                max_blk = max_blk.max(Some(b));
            }
        }
        let n_layer = if facts.n_layer == 0 {
            max_blk.map_or(0, |b| (b + 1).clamp(0, u32::MAX as i64) as u32)
        } else {
            facts.n_layer
        };
        let arch = facts.llama_arch();
        let is_70b = facts.is_70b();
        Planner {
            mix,
            facts,
            opts,
            arch,
            is_70b,
            n_layer,
            n_attention_wv,
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            n_fallback: 0,
            has_tied_embeddings,
        }
    }

    /// The mix being planned.
    pub fn mix(&self) -> Mix {
        self.mix
    }

    /// Layer count used by the FFN rules (facts, or inferred from `blk.N` names).
    pub fn n_layer(&self) -> u32 {
        self.n_layer
    }

    /// Number of `attn_v`-like tensors (`attn_v`, `attn_qkv`, `attn_kv_b`) in the list.
    pub fn n_attention_wv(&self) -> usize {
        self.n_attention_wv as usize
    }

    /// Whether the model has no `output.weight` (token embeddings double as output).
    pub fn has_tied_embeddings(&self) -> bool {
        self.has_tied_embeddings
    }

    /// Tensors so far whose row length forced a fallback type.
    pub fn fallbacks(&self) -> usize {
        self.n_fallback
    }

    /// Decides the next tensor (call in file order) exactly as llama.cpp, or returns the
    /// error where llama.cpp aborts the run; after an error the planner's counters are
    /// unspecified.
    pub fn try_choose(&mut self, name: &str, ne: &[u64]) -> Result<Choice, MixError> {
        self.decide(name, ne, true)
    }

    /// Like [`Planner::try_choose`] but never fails: where llama.cpp aborts it picks F16
    /// for a row no fallback fits, applies the fallback table to a forced type that does
    /// not fit, uses the running counter for an MoE tensor without a usable `blk.N`, and
    /// only flags [`Choice::requires_imatrix`].
    pub fn choose(&mut self, name: &str, ne: &[u64]) -> Choice {
        self.decide(name, ne, false)
            .expect("lenient planning does not fail")
    }

    fn decide(&mut self, name: &str, ne: &[u64], strict: bool) -> Result<Choice, MixError> {
        let gguf = canonical_name(name);
        if let Some(why) = exclusion(&gguf, n_dims(ne), self.opts.leave_output_tensor) {
            return Ok(Choice::keep(why));
        }
        let role = gguf_role(&gguf);
        let ncols = ne.first().copied().unwrap_or(1);

        let forced = match role {
            Role::TokenEmbd => self
                .opts
                .token_embedding_type
                .map(|t| (t, "--token-embedding-type")),
            Role::Output => self
                .opts
                .output_tensor_type
                .map(|t| (t, "--output-tensor-type")),
            _ => None,
        };
        let mut fallback_from = None;
        let (ty, reason) = if let Some((ty, reason)) = forced {
            if ncols % ty.block_size() == 0 {
                (ty, reason)
            } else if strict {
                return Err(MixError::ForcedTypeDoesNotFit {
                    name: name.to_string(),
                    ty,
                    ncols,
                });
            } else {
                fallback_from = Some(ty);
                self.fallback(name, ty, ncols, false)?
            }
        } else {
            let base = self.mix.base_type();
            let mut ty = base;
            let mut reason = "mix: base type";
            if is_quantized(base) {
                let manual = self
                    .opts
                    .overrides
                    .iter()
                    .find(|(re, _)| re.is_match(name) || re.is_match(&gguf))
                    .map(|(_, t)| *t);
                if let Some(t) = manual {
                    ty = t;
                    reason = "override";
                } else if self.opts.pure {
                    reason = "--pure";
                } else {
                    (ty, reason) = self.rule(&gguf, ncols, role, strict)?;
                }
                if ncols % ty.block_size() != 0 {
                    fallback_from = Some(ty);
                    (ty, reason) = self.fallback(name, ty, ncols, strict)?;
                }
            }
            (ty, reason)
        };

        let needs = requires_imatrix(&gguf, ty, self.mix);
        if strict && needs && !self.opts.has_imatrix {
            return Err(MixError::NeedsImatrix {
                name: name.to_string(),
                ty,
            });
        }
        Ok(Choice {
            ty,
            quantize: true,
            reason,
            fallback_from,
            requires_imatrix: needs,
        })
    }

    /// `tensor_type_fallback` for a row that is not a whole number of `ty` blocks.
    fn fallback(
        &mut self,
        name: &str,
        ty: GgmlType,
        ncols: u64,
        strict: bool,
    ) -> Result<(GgmlType, &'static str), MixError> {
        self.n_fallback += 1;
        let Some(to) = fallback_type(ty) else {
            if strict {
                return Err(MixError::NoFallback {
                    name: name.to_string(),
                    ty,
                    ncols,
                });
            }
            return Ok((
                GgmlType::F16,
                "fallback: F16 (no fallback type exists; llama.cpp aborts here)",
            ));
        };
        if !ncols.is_multiple_of(to.block_size()) {
            return Ok((GgmlType::F16, "fallback: F16 (row not a multiple of 32)"));
        }
        use GgmlType as T;
        let reason = match (ty, to) {
            (T::Q2_K, _) => "fallback: Q2_K -> Q4_0 (row not a multiple of 256)",
            (T::Q3_K, _) => "fallback: Q3_K -> Q4_0 (row not a multiple of 256)",
            (T::Q4_K, _) => "fallback: Q4_K -> Q5_0 (row not a multiple of 256)",
            (T::Q5_K, _) => "fallback: Q5_K -> Q5_1 (row not a multiple of 256)",
            (T::Q6_K, _) => "fallback: Q6_K -> Q8_0 (row not a multiple of 256)",
            (_, T::IQ4_NL) => "fallback: -> IQ4_NL (row not a multiple of 256)",
            _ => "fallback: row not a multiple of the block size",
        };
        Ok((to, reason))
    }

    /// llama.cpp's layer index for an FFN tensor: the running counter, or for MoE models
    /// the `blk.N` of the name (`layer_info`).
    fn layer_info(&self, counter: i64, gguf: &str, strict: bool) -> Result<(i64, i64), MixError> {
        let n_layer = self.n_layer as i64;
        if self.facts.n_expert.max(1) > 1 {
            match parse_blk(gguf) {
                Some(i) if (0..n_layer).contains(&i) => return Ok((i, n_layer)),
                _ if strict => {
                    return Err(MixError::BadLayer {
                        name: gguf.to_string(),
                        n_layer: self.n_layer,
                    })
                }
                _ => {}
            }
        }
        Ok((counter, n_layer))
    }

    /// `llama_tensor_get_type_impl`, restricted to the branches [`Mix`] can reach.
    fn rule(
        &mut self,
        gguf: &str,
        ncols: u64,
        role: Role,
        strict: bool,
    ) -> Result<(GgmlType, &'static str), MixError> {
        use GgmlType as T;
        let mix = self.mix;
        let base = mix.base_type();
        let falcon = self.arch == "falcon";
        let gqa = self.facts.n_gqa();
        let n_expert = self.facts.n_expert;
        let mut ty = base;
        let reason;

        if role == Role::Output || (self.has_tied_embeddings && role == Role::TokenEmbd) {
            reason = if role == Role::Output {
                "mix: output"
            } else {
                "mix: token_embd (tied to output)"
            };
            if let Some(t) = self.opts.output_tensor_type {
                // Reached only by tied token embeddings: output.weight returned earlier.
                return Ok((t, "--output-tensor-type (tied token_embd)"));
            } else if falcon || !ncols.is_multiple_of(base.block_size()) {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if role == Role::TokenEmbd {
            // Only the IQ1/IQ2/IQ3_XXS/TQ/Q2_0 file types change untied token embeddings.
            reason = "mix: token_embd";
        } else if role.is_attn_v_like() {
            reason = "mix: attn_v";
            let i = self.i_attention_wv;
            match mix {
                Mix::Q2_K => ty = if gqa >= 4 { T::Q4_K } else { T::Q3_K },
                Mix::Q2_K_S if gqa >= 4 => ty = T::Q4_K,
                Mix::Q3_K_M => ty = if i < 2 { T::Q5_K } else { T::Q4_K },
                Mix::Q3_K_L => ty = T::Q5_K,
                Mix::IQ4_NL if gqa >= 4 => ty = T::Q5_K,
                Mix::Q4_K_M | Mix::Q5_K_M if use_more_bits(i, self.n_attention_wv) => ty = T::Q6_K,
                Mix::Q4_K_S if i < 4 => ty = T::Q5_K,
                _ => {}
            }
            if self.is_70b && (ty == T::Q3_K || ty == T::Q4_K) {
                ty = T::Q5_K;
            }
            if n_expert == 8 {
                ty = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if role == Role::AttnK {
            reason = "mix: attn_k";
            if n_expert == 8 {
                ty = T::Q8_0;
            }
        } else if role == Role::AttnQ {
            // Only the IQ3_XS/IQ3_XXS file types change attn_q.
            reason = "mix: attn_q";
        } else if role == Role::FfnDown {
            reason = "mix: ffn_down";
            let (i, n) = self.layer_info(self.i_ffn_down, gguf, strict)?;
            let more = use_more_bits(i, n);
            match mix {
                Mix::Q2_K => ty = T::Q3_K,
                Mix::Q2_K_S if i < n / 8 => ty = T::Q4_K,
                Mix::Q3_K_M => {
                    ty = if i < n / 16 {
                        T::Q5_K
                    } else if !falcon || more {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                Mix::Q3_K_L => ty = if falcon { T::Q4_K } else { T::Q5_K },
                Mix::Q4_K_M => {
                    if falcon {
                        ty = if i < n / 16 {
                            T::Q6_K
                        } else if more {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        };
                    } else if more {
                        ty = T::Q6_K;
                    }
                }
                Mix::IQ4_NL if i < n / 8 && !self.opts.has_imatrix => ty = T::Q5_K,
                Mix::Q5_K_M if more => ty = T::Q6_K,
                Mix::Q4_K_S if !falcon && i < n / 8 => ty = T::Q5_K,
                Mix::Q4_0 if self.opts.has_imatrix && i < n / 8 => ty = T::Q4_1,
                Mix::Q5_0 if self.opts.has_imatrix && i < n / 8 => ty = T::Q5_1,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if role == Role::AttnOutput {
            reason = "mix: attn_output";
            if !falcon {
                if n_expert == 8 {
                    if matches!(
                        mix,
                        Mix::Q2_K
                            | Mix::Q3_K_S
                            | Mix::Q3_K_M
                            | Mix::IQ4_NL
                            | Mix::Q4_K_S
                            | Mix::Q4_K_M
                    ) {
                        ty = T::Q5_K;
                    }
                } else {
                    match mix {
                        Mix::Q2_K => ty = T::Q3_K,
                        Mix::Q3_K_M => ty = T::Q4_K,
                        Mix::Q3_K_L => ty = T::Q5_K,
                        _ => {}
                    }
                }
            } else if mix == Mix::Q3_K_L {
                ty = T::Q4_K;
            }
        } else if role == Role::FfnGate {
            // Only IQ3_XS changes ffn_gate, but the layer lookup (and its MoE failure) runs.
            reason = "mix: ffn_gate";
            self.layer_info(self.i_ffn_gate, gguf, strict)?;
            self.i_ffn_gate += 1;
        } else if role == Role::FfnUp {
            reason = "mix: ffn_up";
            self.layer_info(self.i_ffn_up, gguf, strict)?;
            self.i_ffn_up += 1;
        } else {
            // Role::Other. (llama.cpp's separate attn_qkv branch is unreachable in this
            // revision: attn_qkv is attn_v-like and handled above.)
            reason = "mix: base type";
        }
        Ok((ty, if ty == base { "mix: base type" } else { reason }))
    }
}

/// Plans a whole tensor list in order with [`Planner::try_choose`].
pub fn plan<N, S>(
    mix: Mix,
    facts: ModelFacts,
    opts: Options,
    tensors: &[(N, S)],
) -> Result<Vec<Choice>, MixError>
where
    N: AsRef<str>,
    S: AsRef<[u64]>,
{
    let mut planner = Planner::new(mix, facts, opts, tensors);
    tensors
        .iter()
        .map(|(n, s)| planner.try_choose(n.as_ref(), s.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType as T;

    /// Layers of a 32-layer model that `use_more_bits` picks, worked out by hand:
    /// i < 4, i >= 28, or (i - 4) % 3 == 2.
    const MORE_BITS_32: &[u32] = &[0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];

    /// A llama-style tensor list in GGUF names and ggml order (innermost first).
    fn llama_like(
        n_layer: u32,
        hidden: u64,
        ff: u64,
        kv: u64,
        vocab: u64,
        tied: bool,
    ) -> Vec<(String, Vec<u64>)> {
        let mut t = vec![("token_embd.weight".to_string(), vec![hidden, vocab])];
        for i in 0..n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            t.push((b("attn_norm.weight"), vec![hidden]));
            t.push((b("attn_q.weight"), vec![hidden, hidden]));
            t.push((b("attn_k.weight"), vec![hidden, kv]));
            t.push((b("attn_v.weight"), vec![hidden, kv]));
            t.push((b("attn_output.weight"), vec![hidden, hidden]));
            t.push((b("ffn_norm.weight"), vec![hidden]));
            t.push((b("ffn_gate.weight"), vec![hidden, ff]));
            t.push((b("ffn_up.weight"), vec![hidden, ff]));
            t.push((b("ffn_down.weight"), vec![ff, hidden]));
        }
        t.push(("output_norm.weight".to_string(), vec![hidden]));
        if !tied {
            t.push(("output.weight".to_string(), vec![hidden, vocab]));
        }
        t
    }

    fn facts(arch: &str, n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> ModelFacts {
        ModelFacts {
            arch: arch.to_string(),
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            llm_type_70b: None,
        }
    }

    fn llama7b() -> (ModelFacts, Vec<(String, Vec<u64>)>) {
        (
            facts("llama", 32, 32, 32, 0),
            llama_like(32, 4096, 11008, 4096, 32000, false),
        )
    }

    fn llama3_8b() -> (ModelFacts, Vec<(String, Vec<u64>)>) {
        (
            facts("llama", 32, 32, 8, 0),
            llama_like(32, 4096, 14336, 1024, 128256, false),
        )
    }

    /// Runs the planner over the list; returns (name, Some(type) or None for copied).
    fn run(
        mix: Mix,
        f: &ModelFacts,
        opts: Options,
        t: &[(String, Vec<u64>)],
    ) -> Vec<(String, Option<GgmlType>)> {
        let choices = plan(mix, f.clone(), opts, t).expect("plan");
        t.iter()
            .zip(choices)
            .map(|((n, _), c)| (n.clone(), c.target()))
            .collect()
    }

    fn layer_of(name: &str) -> Option<u32> {
        parse_blk(name).map(|b| b as u32)
    }

    /// Checks every tensor of `t` against `expect(name, layer)`; norms, routers and other
    /// 1-D tensors must be copied.
    fn check(
        mix: Mix,
        f: &ModelFacts,
        opts: Options,
        t: &[(String, Vec<u64>)],
        expect: impl Fn(&str, Option<u32>) -> GgmlType,
    ) {
        for ((name, got), (_, ne)) in run(mix, f, opts, t).into_iter().zip(t) {
            if name.ends_with("_norm.weight") || name.contains("ffn_gate_inp") || n_dims(ne) < 2 {
                assert_eq!(got, None, "{mix} {name}");
            } else {
                assert_eq!(got, Some(expect(&name, layer_of(&name))), "{mix} {name}");
            }
        }
    }

    fn is(name: &str, part: &str) -> bool {
        name.contains(part)
    }

    #[test]
    fn names_and_file_types() {
        assert_eq!(Mix::from_name("q4_k_m"), Some(Mix::Q4_K_M));
        assert_eq!(Mix::from_name("Q4_K"), Some(Mix::Q4_K_M));
        assert_eq!(Mix::from_name("q3_k"), Some(Mix::Q3_K_M));
        assert_eq!(Mix::from_name("Q5_K"), Some(Mix::Q5_K_M));
        assert_eq!(Mix::from_name("bf16"), Some(Mix::BF16));
        assert_eq!(Mix::from_name("15"), Some(Mix::Q4_K_M));
        assert_eq!(Mix::from_name("IQ2_XS"), None);
        assert_eq!(Mix::from_name("Q8_K"), None);
        let expected = [
            (Mix::F32, 0),
            (Mix::F16, 1),
            (Mix::Q4_0, 2),
            (Mix::Q4_1, 3),
            (Mix::Q8_0, 7),
            (Mix::Q5_0, 8),
            (Mix::Q5_1, 9),
            (Mix::Q2_K, 10),
            (Mix::Q3_K_S, 11),
            (Mix::Q3_K_M, 12),
            (Mix::Q3_K_L, 13),
            (Mix::Q4_K_S, 14),
            (Mix::Q4_K_M, 15),
            (Mix::Q5_K_S, 16),
            (Mix::Q5_K_M, 17),
            (Mix::Q6_K, 18),
            (Mix::Q2_K_S, 21),
            (Mix::IQ4_NL, 25),
            (Mix::BF16, 32),
        ];
        assert_eq!(expected.len(), Mix::ALL.len());
        for (m, ft) in expected {
            assert_eq!(m.file_type(), ft, "{m}");
            assert_eq!(Mix::from_file_type(ft), Some(m));
            assert_eq!(Mix::from_name(&m.name().to_lowercase()), Some(m));
        }
        assert_eq!(Mix::Q3_K_L.base_type(), T::Q3_K);
        assert_eq!(Mix::Q2_K_S.base_type(), T::Q2_K);
        assert_eq!(Mix::IQ4_NL.base_type(), T::IQ4_NL);
    }

    #[test]
    fn use_more_bits_matches_hand_worked_layers() {
        let got: Vec<u32> = (0..32).filter(|&i| use_more_bits(i as i64, 32)).collect();
        assert_eq!(got, MORE_BITS_32);
        // 1 layer: 1/8 == 0, 7/8 == 0, so layer 0 is ">= 7n/8".
        assert!(use_more_bits(0, 1));
        // 80 layers: 10..70, every third from 12.
        let got: Vec<i64> = (0..80).filter(|&i| use_more_bits(i, 80)).collect();
        let mut want: Vec<i64> = (0..10).chain(70..80).collect();
        want.extend((12..70).step_by(3));
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn q4_k_m_llama7b() {
        let (f, t) = llama7b();
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
            let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
            if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
                T::Q6_K
            } else {
                T::Q4_K // token_embd stays at the base type
            }
        });
    }

    #[test]
    fn q4_k_s_llama7b() {
        let (f, t) = llama7b();
        check(Mix::Q4_K_S, &f, Options::default(), &t, |n, l| {
            match (n, l) {
                ("output.weight", _) => T::Q6_K,
                (n, Some(l)) if (is(n, "attn_v") || is(n, "ffn_down")) && l < 4 => T::Q5_K,
                _ => T::Q4_K,
            }
        });
    }

    #[test]
    fn q3_k_m_llama7b() {
        let (f, t) = llama7b();
        check(Mix::Q3_K_M, &f, Options::default(), &t, |n, l| {
            let l = l.unwrap_or(0);
            if n == "output.weight" {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "ffn_down") {
                // attn_v: first 2 counted; ffn_down: layer < 32/16 = 2.
                if l < 2 {
                    T::Q5_K
                } else {
                    T::Q4_K
                }
            } else if is(n, "attn_output") {
                T::Q4_K
            } else {
                T::Q3_K
            }
        });
    }

    #[test]
    fn q3_k_l_and_q3_k_s_llama7b() {
        let (f, t) = llama7b();
        check(Mix::Q3_K_L, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
                T::Q5_K
            } else {
                T::Q3_K
            }
        });
        check(Mix::Q3_K_S, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else {
                T::Q3_K
            }
        });
    }

    #[test]
    fn q5_k_m_and_q5_k_s_llama7b() {
        let (f, t) = llama7b();
        check(Mix::Q5_K_M, &f, Options::default(), &t, |n, l| {
            let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
            if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
                T::Q6_K
            } else {
                T::Q5_K
            }
        });
        check(Mix::Q5_K_S, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else {
                T::Q5_K
            }
        });
    }

    #[test]
    fn q2_k_llama7b_mha() {
        let (f, t) = llama7b();
        check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
                T::Q3_K // attn_v: n_gqa 1 < 4
            } else {
                T::Q2_K
            }
        });
    }

    #[test]
    fn q6_k_q8_0_q4_0_f16_llama7b() {
        let (f, t) = llama7b();
        check(Mix::Q6_K, &f, Options::default(), &t, |_, _| T::Q6_K);
        check(Mix::Q8_0, &f, Options::default(), &t, |_, _| T::Q8_0);
        check(Mix::Q4_0, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else {
                T::Q4_0
            }
        });
        // With an imatrix the first eighth of ffn_down goes to Q4_1 (Q5_0 -> Q5_1).
        let opts = Options {
            has_imatrix: true,
            ..Options::default()
        };
        check(Mix::Q4_0, &f, opts.clone(), &t, |n, l| match (n, l) {
            ("output.weight", _) => T::Q6_K,
            (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q4_1,
            _ => T::Q4_0,
        });
        check(Mix::Q5_0, &f, opts, &t, |n, l| match (n, l) {
            ("output.weight", _) => T::Q6_K,
            (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q5_1,
            _ => T::Q5_0,
        });
        check(Mix::Q4_1, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else {
                T::Q4_1
            }
        });
        check(Mix::F16, &f, Options::default(), &t, |_, _| T::F16);
        check(Mix::BF16, &f, Options::default(), &t, |_, _| T::BF16);
    }

    #[test]
    fn gqa_llama3_8b() {
        let (f, t) = llama3_8b();
        assert_eq!(f.n_gqa(), 4);
        // Q4_K_M, Q4_K_S, Q3_K_M do not look at GQA: same as 7B.
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
            let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
            if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
                T::Q6_K
            } else {
                T::Q4_K
            }
        });
        check(Mix::Q3_K_M, &f, Options::default(), &t, |n, l| {
            let l = l.unwrap_or(0);
            if n == "output.weight" {
                T::Q6_K
            } else if (is(n, "attn_v") || is(n, "ffn_down")) && l < 2 {
                T::Q5_K
            } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
                T::Q4_K
            } else {
                T::Q3_K
            }
        });
        // Q2_K: attn_v gets Q4_K with n_gqa >= 4.
        check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else if is(n, "attn_v") {
                T::Q4_K
            } else if is(n, "ffn_down") || is(n, "attn_output") {
                T::Q3_K
            } else {
                T::Q2_K
            }
        });
        // IQ4_NL: attn_v Q5_K with GQA; ffn_down Q5_K on the first eighth without imatrix.
        check(Mix::IQ4_NL, &f, Options::default(), &t, |n, l| {
            match (n, l) {
                ("output.weight", _) => T::Q6_K,
                (n, _) if is(n, "attn_v") => T::Q5_K,
                (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q5_K,
                _ => T::IQ4_NL,
            }
        });
        // Q2_K_S: needs an imatrix; with one, attn_v Q4_K and ffn_down Q4_K on layers < 4.
        let err = plan(Mix::Q2_K_S, f.clone(), Options::default(), &t).unwrap_err();
        assert_eq!(
            err,
            MixError::NeedsImatrix {
                name: "blk.0.attn_q.weight".into(),
                ty: T::Q2_K
            }
        );
        let opts = Options {
            has_imatrix: true,
            ..Options::default()
        };
        check(Mix::Q2_K_S, &f, opts, &t, |n, l| match (n, l) {
            ("output.weight", _) => T::Q6_K,
            (n, _) if is(n, "attn_v") => T::Q4_K,
            (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q4_K,
            _ => T::Q2_K,
        });
    }

    #[test]
    fn llama_70b_bumps_attn_v() {
        let f = facts("llama", 80, 64, 8, 0);
        assert!(f.is_70b());
        assert!(!facts("llama", 80, 64, 64, 0).is_70b()); // LLaMA-1 65B
        assert!(facts("qwen2", 80, 64, 8, 0).is_70b());
        let t = llama_like(80, 8192, 28672, 1024, 128256, false);
        let more80 = |l: u32| use_more_bits(l as i64, 80);
        // Q3_K_M: Q5_K for the first two, Q4_K bumped to Q5_K: all Q5_K.
        // Q4_K_M: Q6_K on more-bits layers, Q4_K bumped to Q5_K elsewhere.
        // Q2_K: n_gqa 8 gives Q4_K, bumped to Q5_K.
        type Rule = fn(bool) -> GgmlType;
        let rules: [(Mix, Rule); 5] = [
            (Mix::Q3_K_M, |_| T::Q5_K),
            (Mix::Q4_K_M, |more| if more { T::Q6_K } else { T::Q5_K }),
            (Mix::Q2_K, |_| T::Q5_K),
            (Mix::Q3_K_L, |_| T::Q5_K),
            (Mix::Q6_K, |_| T::Q6_K),
        ];
        for (mix, rule) in rules {
            for (name, got) in run(mix, &f, Options::default(), &t) {
                if is(&name, "attn_v") {
                    let l = layer_of(&name).unwrap();
                    assert_eq!(got, Some(rule(more80(l))), "{mix} {name}");
                }
            }
        }
    }

    #[test]
    fn tiny_one_layer_tied_embeddings() {
        // hidden 256, ff 768, 4 heads, no output.weight: token_embd plays the output role.
        let f = facts("llama", 1, 4, 4, 0);
        let t = llama_like(1, 256, 768, 256, 1000, true);
        let planner = Planner::new(Mix::Q4_K_M, f.clone(), Options::default(), &t);
        assert!(planner.has_tied_embeddings());
        assert_eq!(planner.n_attention_wv(), 1);
        // n_layer 1: use_more_bits(0, 1) is true.
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" || is(n, "attn_v") || is(n, "ffn_down") {
                T::Q6_K
            } else {
                T::Q4_K
            }
        });
        // Q4_K_S: attn_v counter 0 < 4 -> Q5_K; ffn_down 0 < 1/8 is false -> Q4_K.
        check(Mix::Q4_K_S, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" {
                T::Q6_K
            } else if is(n, "attn_v") {
                T::Q5_K
            } else {
                T::Q4_K
            }
        });
        // Q3_K_M: attn_v Q5_K (counter < 2); ffn_down 0 < 1/16 false -> Q4_K.
        check(Mix::Q3_K_M, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" {
                T::Q6_K
            } else if is(n, "attn_v") {
                T::Q5_K
            } else if is(n, "ffn_down") || is(n, "attn_output") {
                T::Q4_K
            } else {
                T::Q3_K
            }
        });
        check(Mix::Q3_K_L, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
                T::Q5_K
            } else {
                T::Q3_K
            }
        });
        check(Mix::Q5_K_M, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" || is(n, "attn_v") || is(n, "ffn_down") {
                T::Q6_K
            } else {
                T::Q5_K
            }
        });
        check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
                T::Q3_K
            } else {
                T::Q2_K
            }
        });
        check(Mix::Q6_K, &f, Options::default(), &t, |_, _| T::Q6_K);
        check(Mix::Q8_0, &f, Options::default(), &t, |_, _| T::Q8_0);
        // Legacy mixes also give tied embeddings Q6_K.
        check(Mix::Q4_0, &f, Options::default(), &t, |n, _| {
            if n == "token_embd.weight" {
                T::Q6_K
            } else {
                T::Q4_0
            }
        });
        // --output-tensor-type reaches tied embeddings; --token-embedding-type wins over it.
        let opts = Options {
            output_tensor_type: Some(T::Q8_0),
            ..Options::default()
        };
        let out = run(Mix::Q4_K_M, &f, opts.clone(), &t);
        assert_eq!(out[0], ("token_embd.weight".into(), Some(T::Q8_0)));
        let opts = Options {
            token_embedding_type: Some(T::Q4_0),
            ..opts
        };
        let out = run(Mix::Q4_K_M, &f, opts, &t);
        assert_eq!(out[0], ("token_embd.weight".into(), Some(T::Q4_0)));
    }

    #[test]
    fn one_d_and_non_weights_are_never_quantized() {
        let f = facts("llama", 1, 4, 4, 0);
        let t: Vec<(String, Vec<u64>)> = vec![
            ("blk.0.attn_norm.weight".into(), vec![256]),
            ("blk.0.attn_q.bias".into(), vec![256]),
            ("blk.0.attn_q.bias2d".into(), vec![256, 256]),
            ("blk.0.attn_v.weight".into(), vec![256, 1]), // [256, 1] has ggml n_dims 1
            ("blk.0.ffn_gate_inp.weight".into(), vec![256, 8]),
            ("blk.0.attn_q_norm.weight".into(), vec![64, 4]),
            ("position_embd.weight".into(), vec![256, 2048]),
            ("token_types.weight".into(), vec![256, 2]),
            ("blk.0.ssm_conv1d.weight".into(), vec![4, 256]),
            ("output.weight".into(), vec![256, 1000]),
        ];
        for mix in Mix::ALL {
            let choices = plan(*mix, f.clone(), Options::default(), &t).unwrap();
            for ((n, _), c) in t.iter().zip(&choices) {
                let want = n == "output.weight";
                assert_eq!(c.quantize, want, "{mix} {n}: {}", c.reason);
            }
        }
        assert!(!should_quantize("blk.0.ffn_norm.weight", 1, false));
        assert!(!should_quantize("model.norm.weight", 1, false));
        assert!(should_quantize("output.weight", 2, false));
        assert!(!should_quantize("output.weight", 2, true));
        assert!(!should_quantize("lm_head.weight", 2, true));
        assert!(!should_quantize(
            "model.layers.0.block_sparse_moe.gate.weight",
            2,
            false
        ));
        assert_eq!(n_dims(&[4096, 1, 1, 1]), 1);
        assert_eq!(n_dims(&[4096, 1, 8]), 3);
        assert_eq!(n_dims(&[]), 1);
        // llama.cpp's size_t quirk: any 5-byte 2-D name passes the "ends in weight" test.
        assert!(should_quantize("abcde", 2, false));
        assert!(!should_quantize("abcdef", 2, false));
    }

    #[test]
    fn leave_output_tensor_copies_output() {
        let (f, t) = llama7b();
        let opts = Options {
            leave_output_tensor: true,
            ..Options::default()
        };
        let out = run(Mix::Q4_K_M, &f, opts, &t);
        let (name, got) = out.last().unwrap();
        assert_eq!((name.as_str(), *got), ("output.weight", None));
        // Not tied: token_embd keeps the base type.
        assert_eq!(out[0].1, Some(T::Q4_K));
    }

    #[test]
    fn forced_output_and_embedding_types() {
        let (f, t) = llama7b();
        let opts = Options {
            output_tensor_type: Some(T::Q8_0),
            token_embedding_type: Some(T::Q6_K),
            ..Options::default()
        };
        let out = run(Mix::Q4_K_M, &f, opts, &t);
        assert_eq!(out[0].1, Some(T::Q6_K));
        assert_eq!(out.last().unwrap().1, Some(T::Q8_0));
        // They apply even for F16 files and with --pure, and are not subject to overrides.
        let opts = Options {
            output_tensor_type: Some(T::Q8_0),
            pure: true,
            overrides: vec![(Regex::new("output").unwrap(), T::Q2_K)],
            ..Options::default()
        };
        let out = run(Mix::F16, &f, opts.clone(), &t);
        assert_eq!(out.last().unwrap().1, Some(T::Q8_0));
        let out = run(Mix::Q4_K_M, &f, opts, &t);
        assert_eq!(out.last().unwrap().1, Some(T::Q8_0));
        // A forced type that does not fit the row is an error (llama.cpp fails in ggml).
        let t = vec![("output.weight".to_string(), vec![4160u64, 1000])];
        let opts = Options {
            output_tensor_type: Some(T::Q4_K),
            ..Options::default()
        };
        let mut p = Planner::new(Mix::Q4_K_M, f.clone(), opts, &t);
        assert!(matches!(
            p.try_choose("output.weight", &[4160, 1000]),
            Err(MixError::ForcedTypeDoesNotFit { .. })
        ));
        let c = p.choose("output.weight", &[4160, 1000]);
        assert_eq!((c.ty, c.fallback_from), (T::Q5_0, Some(T::Q4_K)));
    }

    #[test]
    fn overrides_first_match_wins_and_skip_counters() {
        let (f, t) = llama7b();
        let opts = Options {
            overrides: vec![
                (Regex::new(r"blk\.0\.attn_v").unwrap(), T::Q8_0),
                (Regex::new(r"blk\.0\.").unwrap(), T::Q2_K),
                (Regex::new(r"attn_q").unwrap(), T::Q6_K),
            ],
            ..Options::default()
        };
        let out = run(Mix::Q4_K_S, &f, opts, &t);
        let get = |n: &str| out.iter().find(|(m, _)| m == n).unwrap().1;
        assert_eq!(get("blk.0.attn_v.weight"), Some(T::Q8_0));
        assert_eq!(get("blk.0.attn_q.weight"), Some(T::Q2_K)); // earlier pattern wins
        assert_eq!(get("blk.0.ffn_down.weight"), Some(T::Q2_K));
        assert_eq!(get("blk.1.attn_q.weight"), Some(T::Q6_K));
        // An overridden tensor skips the rule and so does not advance llama.cpp's counters:
        // attn_v of layers 1..=4 see i_attention_wv 0..=3 and all get Q5_K.
        for l in 1..=4 {
            assert_eq!(
                get(&format!("blk.{l}.attn_v.weight")),
                Some(T::Q5_K),
                "layer {l}"
            );
        }
        assert_eq!(get("blk.5.attn_v.weight"), Some(T::Q4_K));
        // ffn_down of layer 0 overridden: layers 1..=4 get Q5_K (counter 0..=3).
        assert_eq!(get("blk.4.ffn_down.weight"), Some(T::Q5_K));
        assert_eq!(get("blk.5.ffn_down.weight"), Some(T::Q4_K));

        // Overrides are ignored for float mixes (llama.cpp only consults them for block
        // types), and still get the row-length fallback.
        let opts = Options {
            overrides: vec![(Regex::new("attn_q").unwrap(), T::Q4_K)],
            ..Options::default()
        };
        let out = run(Mix::F16, &f, opts.clone(), &t);
        assert!(out
            .iter()
            .all(|(n, ty)| n.ends_with("_norm.weight") || *ty == Some(T::F16)));
        let t2 = vec![("blk.0.attn_q.weight".to_string(), vec![4160u64, 4160])];
        let out = run(Mix::Q8_0, &f, opts, &t2);
        assert_eq!(out[0].1, Some(T::Q5_0));
    }

    #[test]
    fn pure_uses_base_type_everywhere() {
        let (f, t) = llama7b();
        let opts = Options {
            pure: true,
            ..Options::default()
        };
        check(Mix::Q4_K_M, &f, opts.clone(), &t, |_, _| T::Q4_K);
        check(Mix::Q3_K_L, &f, opts.clone(), &t, |_, _| T::Q3_K);
        // Fallbacks still apply under --pure.
        let t = vec![(
            "blk.0.ffn_down.weight".to_string(),
            vec![14336u64 + 32, 4096],
        )];
        let out = run(Mix::Q4_K_M, &f, opts, &t);
        assert_eq!(out[0].1, Some(T::Q5_0));
    }

    #[test]
    fn fallbacks_for_rows_not_multiple_of_256() {
        // hidden 4160 = 16*256 + 64 (a multiple of 32); ff 14336+32 = 14368.
        let f = facts("llama", 32, 32, 32, 0);
        let t = llama_like(32, 4160, 14368, 4160, 32000, false);
        let fb = |ty: GgmlType| fallback_type(ty).unwrap();
        assert_eq!(fb(T::Q4_K), T::Q5_0);
        assert_eq!(fb(T::Q5_K), T::Q5_1);
        assert_eq!(fb(T::Q6_K), T::Q8_0);
        assert_eq!(fb(T::Q2_K), T::Q4_0);
        assert_eq!(fb(T::Q3_K), T::Q4_0);
        assert_eq!(fb(T::IQ4_XS), T::IQ4_NL);
        assert_eq!(fallback_type(T::Q8_0), None);
        // Q4_K_M: every k-quant falls back; output picks Q8_0 directly (its row is not a
        // multiple of Q4_K's block), which is no fallback.
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
            let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
            if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
                T::Q8_0
            } else {
                T::Q5_0
            }
        });
        let mut p = Planner::new(Mix::Q4_K_M, f.clone(), Options::default(), &t);
        let choices: Vec<Choice> = t
            .iter()
            .map(|(n, ne)| p.try_choose(n, ne).unwrap())
            .collect();
        let n_weights = choices.iter().filter(|c| c.quantize).count();
        assert_eq!(p.fallbacks(), n_weights - 1); // all but output.weight
        let out = choices.last().unwrap();
        assert_eq!(
            (out.ty, out.fallback_from, out.reason),
            (T::Q8_0, None, "mix: output")
        );
        let c = &choices[0];
        assert_eq!(c.fallback_from, Some(T::Q4_K));
        assert_eq!(
            c.reason,
            "fallback: Q4_K -> Q5_0 (row not a multiple of 256)"
        );
        // Q2_K / Q3_K fall back to Q4_0, Q5_K to Q5_1.
        check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q8_0
            } else {
                T::Q4_0
            }
        });
        check(Mix::Q5_K_S, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q8_0
            } else {
                T::Q5_1
            }
        });
        // Legacy 32-element mixes fit these rows.
        check(Mix::Q4_0, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q8_0
            } else {
                T::Q4_0
            }
        });
    }

    #[test]
    fn rows_not_multiple_of_32() {
        let f = facts("llama", 1, 4, 4, 0);
        let t = vec![("blk.0.attn_q.weight".to_string(), vec![4100u64, 4100])];
        // k-quant: fallback type does not fit either -> F16.
        for mix in [Mix::Q4_K_M, Mix::Q2_K, Mix::Q6_K, Mix::Q5_K_S] {
            let c = plan(mix, f.clone(), Options::default(), &t).unwrap()[0];
            assert_eq!(c.ty, T::F16, "{mix}");
            assert_eq!(c.reason, "fallback: F16 (row not a multiple of 32)");
        }
        // 32-element types have no fallback: llama.cpp aborts; choose() uses F16.
        for mix in [
            Mix::Q4_0,
            Mix::Q4_1,
            Mix::Q5_0,
            Mix::Q5_1,
            Mix::Q8_0,
            Mix::IQ4_NL,
        ] {
            let err = plan(mix, f.clone(), Options::default(), &t).unwrap_err();
            assert!(
                matches!(err, MixError::NoFallback { ncols: 4100, .. }),
                "{mix}"
            );
            let mut p = Planner::new(mix, f.clone(), Options::default(), &t);
            let c = p.choose("blk.0.attn_q.weight", &[4100, 4100]);
            assert_eq!((c.ty, c.fallback_from), (T::F16, Some(mix.base_type())));
        }
        // Output row 4100: Q8_0 by the output rule, which has no fallback either.
        let t = vec![("output.weight".to_string(), vec![4100u64, 1000])];
        assert!(plan(Mix::Q4_K_M, f.clone(), Options::default(), &t).is_err());
        // Float mixes never fall back.
        assert_eq!(
            plan(Mix::F16, f, Options::default(), &t).unwrap()[0].ty,
            T::F16
        );
    }

    #[test]
    fn moe_rules_and_layer_parsing() {
        // Mixtral-like: 8 experts, merged 3-D expert tensors, router not quantized.
        let f = facts("llama", 32, 32, 8, 8);
        let mut t: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![4096, 32000])];
        for i in 0..32 {
            t.push((format!("blk.{i}.attn_q.weight"), vec![4096, 4096]));
            t.push((format!("blk.{i}.attn_k.weight"), vec![4096, 1024]));
            t.push((format!("blk.{i}.attn_v.weight"), vec![4096, 1024]));
            t.push((format!("blk.{i}.attn_output.weight"), vec![4096, 4096]));
            t.push((format!("blk.{i}.ffn_gate_inp.weight"), vec![4096, 8]));
            t.push((
                format!("blk.{i}.ffn_gate_exps.weight"),
                vec![4096, 14336, 8],
            ));
            t.push((format!("blk.{i}.ffn_up_exps.weight"), vec![4096, 14336, 8]));
            t.push((
                format!("blk.{i}.ffn_down_exps.weight"),
                vec![14336, 4096, 8],
            ));
        }
        // Layers out of order: the layer comes from the name, not the counter.
        // (layer 3 is a more-bits layer, layer 4 is not)
        t.swap(1 + 8 * 3 + 7, 1 + 8 * 4 + 7);
        t.push(("output.weight".into(), vec![4096, 32000]));
        assert!(!f.is_70b());
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
            let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
            if n == "output.weight" || (is(n, "ffn_down") && more) {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "attn_k") {
                T::Q8_0
            } else if is(n, "attn_output") {
                T::Q5_K
            } else {
                T::Q4_K
            }
        });
        let out = run(Mix::Q4_K_M, &f, Options::default(), &t);
        assert!(out
            .iter()
            .any(|(n, ty)| n == "blk.0.ffn_gate_inp.weight" && ty.is_none()));
        // An FFN tensor without blk.N in an MoE model: llama.cpp aborts.
        let t = vec![("ffn_down_exps.weight".to_string(), vec![14336u64, 4096, 8])];
        assert!(matches!(
            plan(Mix::Q4_K_M, f.clone(), Options::default(), &t),
            Err(MixError::BadLayer { .. })
        ));
        let t = vec![(
            "blk.32.ffn_up_exps.weight".to_string(),
            vec![4096u64, 14336, 8],
        )];
        assert!(plan(Mix::Q4_K_M, f, Options::default(), &t).is_err());
    }

    #[test]
    fn fused_qkv_counts_as_attn_v() {
        // Phi-3-like: attn_qkv follows the attn_v rules in this llama.cpp revision.
        let f = facts("phi3", 32, 32, 32, 0);
        let mut t = vec![("token_embd.weight".to_string(), vec![3072u64, 32064])];
        for i in 0..32 {
            t.push((format!("blk.{i}.attn_qkv.weight"), vec![3072, 9216]));
            t.push((format!("blk.{i}.attn_output.weight"), vec![3072, 3072]));
            t.push((format!("blk.{i}.ffn_up.weight"), vec![3072, 16384]));
            t.push((format!("blk.{i}.ffn_down.weight"), vec![8192, 3072]));
        }
        t.push(("output.weight".to_string(), vec![3072, 32064]));
        assert_eq!(
            Planner::new(Mix::Q4_K_M, f.clone(), Options::default(), &t).n_attention_wv(),
            32
        );
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
            let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
            if n == "output.weight" || ((is(n, "attn_qkv") || is(n, "ffn_down")) && more) {
                T::Q6_K
            } else {
                T::Q4_K
            }
        });
    }

    #[test]
    fn falcon_rules() {
        let f = facts("falcon", 32, 71, 1, 0);
        let mut t = vec![("token_embd.weight".to_string(), vec![4544u64, 65024])];
        for i in 0..32 {
            t.push((format!("blk.{i}.attn_qkv.weight"), vec![4544, 4672]));
            t.push((format!("blk.{i}.attn_output.weight"), vec![4544, 4544]));
            t.push((format!("blk.{i}.ffn_up.weight"), vec![4544, 18176]));
            t.push((format!("blk.{i}.ffn_down.weight"), vec![18176, 4544]));
        }
        t.push(("output.weight".to_string(), vec![4544, 65024]));
        // 4544 = 17*256 + 192: every 4544-row k-quant falls back. ffn_down rows are 18176
        // = 71*256: Q4_K_M's falcon rule gives Q6_K below 32/16 = 2, Q5_K on more-bits
        // layers, else Q4_K. attn_qkv is attn_v-like: Q6_K -> Q8_0 or Q4_K -> Q5_0.
        // output is always Q8_0 for falcon.
        check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
            let l = l.unwrap_or(0);
            let more = MORE_BITS_32.contains(&l);
            if n == "output.weight" {
                T::Q8_0
            } else if is(n, "ffn_down") {
                if l < 2 {
                    T::Q6_K
                } else if more {
                    T::Q5_K
                } else {
                    T::Q4_K
                }
            } else if is(n, "attn_qkv") && more {
                T::Q8_0
            } else {
                T::Q5_0
            }
        });
        // Q3_K_L on falcon: ffn_down Q4_K, attn_output Q4_K -> Q5_0 (4544 rows).
        check(Mix::Q3_K_L, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q8_0
            } else if is(n, "ffn_down") {
                T::Q4_K
            } else if is(n, "attn_output") {
                T::Q5_0
            } else if is(n, "attn_qkv") {
                T::Q5_1 // Q5_K by the attn_v rule, then fallback
            } else {
                T::Q4_0 // Q3_K -> Q4_0
            }
        });
    }

    #[test]
    fn hf_names_map_to_gguf_roles() {
        let cases = [
            ("model.embed_tokens.weight", Some("token_embd.weight")),
            ("lm_head.weight", Some("output.weight")),
            ("model.norm.weight", Some("output_norm.weight")),
            (
                "model.layers.7.input_layernorm.weight",
                Some("blk.7.attn_norm.weight"),
            ),
            (
                "model.layers.7.post_attention_layernorm.weight",
                Some("blk.7.ffn_norm.weight"),
            ),
            (
                "model.layers.7.self_attn.v_proj.weight",
                Some("blk.7.attn_v.weight"),
            ),
            (
                "model.layers.7.self_attn.q_proj.bias",
                Some("blk.7.attn_q.bias"),
            ),
            (
                "model.layers.7.self_attn.o_proj.weight",
                Some("blk.7.attn_output.weight"),
            ),
            (
                "model.layers.7.mlp.down_proj.weight",
                Some("blk.7.ffn_down.weight"),
            ),
            (
                "model.layers.7.mlp.experts.3.down_proj.weight",
                Some("blk.7.ffn_down.3.weight"),
            ),
            (
                "model.layers.7.block_sparse_moe.experts.3.w3.weight",
                Some("blk.7.ffn_up.3.weight"),
            ),
            (
                "model.layers.7.block_sparse_moe.gate.weight",
                Some("blk.7.ffn_gate_inp.weight"),
            ),
            (
                "model.language_model.layers.0.self_attn.k_proj.weight",
                Some("blk.0.attn_k.weight"),
            ),
            (
                "transformer.h.2.self_attention.query_key_value.weight",
                Some("blk.2.attn_qkv.weight"),
            ),
            (
                "transformer.h.2.mlp.dense_4h_to_h.weight",
                Some("blk.2.ffn_down.weight"),
            ),
            ("blk.7.attn_v.weight", None),
            ("model.layers.x.self_attn.v_proj.weight", None),
            ("model.layers.7.self_attn.rotary_emb.inv_freq", None),
        ];
        for (hf, gguf) in cases {
            assert_eq!(gguf_name(hf).as_deref(), gguf, "{hf}");
        }
        assert_eq!(
            canonical_role("model.layers.0.self_attn.v_proj.weight"),
            Role::AttnV
        );
        assert_eq!(canonical_role("lm_head.weight"), Role::Output);
        assert_eq!(
            canonical_role("model.layers.0.mlp.gate_proj.weight"),
            Role::FfnGate
        );
        assert_eq!(
            canonical_role("model.layers.0.mlp.up_proj.weight"),
            Role::FfnUp
        );
        assert_eq!(canonical_role("model.embed_tokens.weight"), Role::TokenEmbd);
    }

    /// The GGUF list rewritten with Hugging Face llama names.
    fn to_hf(t: &[(String, Vec<u64>)]) -> Vec<(String, Vec<u64>)> {
        let map = |n: &str| -> String {
            match n {
                "token_embd.weight" => return "model.embed_tokens.weight".into(),
                "output.weight" => return "lm_head.weight".into(),
                "output_norm.weight" => return "model.norm.weight".into(),
                _ => {}
            }
            let l = layer_of(n).unwrap();
            let tail = n.split_once(&format!("blk.{l}.")).unwrap().1;
            let hf = match tail {
                "attn_norm.weight" => "input_layernorm.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                other => panic!("{other}"),
            };
            format!("model.layers.{l}.{hf}")
        };
        t.iter().map(|(n, ne)| (map(n), ne.clone())).collect()
    }

    #[test]
    fn hf_names_get_the_same_choices() {
        for (f, t) in [llama7b(), llama3_8b()] {
            let hf = to_hf(&t);
            for tied in [false, true] {
                let (t, hf): (Vec<_>, Vec<_>) = t
                    .iter()
                    .cloned()
                    .zip(hf.iter().cloned())
                    .filter(|((n, _), _)| !tied || n != "output.weight")
                    .unzip();
                for mix in Mix::ALL {
                    let opts = Options {
                        has_imatrix: true,
                        ..Options::default()
                    };
                    let a = plan(*mix, f.clone(), opts.clone(), &t).unwrap();
                    let b = plan(*mix, f.clone(), opts, &hf).unwrap();
                    assert_eq!(a, b, "{mix} tied={tied}");
                }
            }
        }
        // Overrides match the HF name or the GGUF name.
        let (f, t) = llama7b();
        let hf = to_hf(&t);
        let opts = Options {
            overrides: vec![
                (Regex::new(r"v_proj").unwrap(), T::Q8_0),
                (Regex::new(r"blk\.3\.ffn_down").unwrap(), T::Q2_K),
            ],
            ..Options::default()
        };
        let out = run(Mix::Q4_K_M, &f, opts, &hf);
        let get = |n: &str| out.iter().find(|(m, _)| m == n).unwrap().1;
        assert_eq!(get("model.layers.5.self_attn.v_proj.weight"), Some(T::Q8_0));
        assert_eq!(get("model.layers.3.mlp.down_proj.weight"), Some(T::Q2_K));
        assert_eq!(get("lm_head.weight"), Some(T::Q6_K));
    }

    #[test]
    fn n_layer_inferred_when_missing_and_hf_arch_names() {
        let (_, t) = llama7b();
        let p = Planner::new(Mix::Q4_K_M, ModelFacts::default(), Options::default(), &t);
        assert_eq!(p.n_layer(), 32);
        let m = facts("mistral", 80, 64, 8, 0);
        assert_eq!(m.llama_arch(), "llama");
        assert!(m.is_70b());
        assert_eq!(
            facts("RefinedWebModel", 32, 71, 1, 0).llama_arch(),
            "falcon"
        );
        let forced = ModelFacts {
            llm_type_70b: Some(true),
            ..facts("gemma", 10, 8, 8, 0)
        };
        assert!(forced.is_70b());
        assert_eq!(facts("llama", 32, 32, 0, 0).n_gqa(), 1);
    }

    #[test]
    fn chosen_types_stay_within_qforge_codecs() {
        // qforge encodes these; llama.cpp's rules for the offered mixes never pick others.
        let supported = [
            T::Q4_0,
            T::Q4_1,
            T::Q5_0,
            T::Q5_1,
            T::Q8_0,
            T::Q2_K,
            T::Q3_K,
            T::Q4_K,
            T::Q5_K,
            T::Q6_K,
            T::IQ4_NL,
            T::F16,
            T::BF16,
            T::F32,
        ];
        let shapes: &[(u64, u64)] = &[
            (4096, 11008),
            (4096, 14336),
            (4160, 14368),
            (4100, 4128),
            (256, 768),
        ];
        for &(hidden, ff) in shapes {
            for (arch, kv, n_expert) in [
                ("llama", 32, 0),
                ("llama", 8, 0),
                ("llama", 8, 8),
                ("falcon", 1, 0),
            ] {
                let f = facts(arch, 32, 32, kv, n_expert);
                let t = llama_like(32, hidden, ff, hidden / 4, 1000, false);
                for mix in Mix::ALL {
                    for has_imatrix in [false, true] {
                        let opts = Options {
                            has_imatrix,
                            ..Options::default()
                        };
                        let mut p = Planner::new(*mix, f.clone(), opts, &t);
                        for (n, ne) in &t {
                            let c = p.choose(n, ne);
                            if c.quantize {
                                assert!(supported.contains(&c.ty), "{mix} {n} {}", c.ty);
                                assert!(mix.possible_types().contains(&c.ty), "{mix} {n} {}", c.ty);
                                assert_eq!(ne[0] % c.ty.block_size(), 0, "{mix} {n}");
                            }
                        }
                    }
                }
            }
        }
    }
}

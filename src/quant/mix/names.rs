//! Tensor names and roles: llama.cpp's `tensor_get_category`, the Hugging Face to GGUF
//! name table of the module docs, and which tensors llama.cpp never quantizes.

use std::borrow::Cow;

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
pub(super) fn exclusion(
    gguf: &str,
    n_dims: usize,
    leave_output_tensor: bool,
) -> Option<&'static str> {
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

/// The layer of a `blk.N.` name, read like llama.cpp's `sscanf(name, "blk.%d.")`.
pub(super) fn parse_blk(name: &str) -> Option<i64> {
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

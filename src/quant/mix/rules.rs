//! llama-quant.cpp's per-type choices: `llama_tensor_get_type_impl` ([`Planner::rule`]),
//! `use_more_bits`, `tensor_type_fallback` and `tensor_requires_imatrix`.

use super::names::{canonical_name, Role};
use super::{Mix, MixError, Planner};
use crate::formats::ggml_type::GgmlType;

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
/// layer in between get more bits.
pub fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

/// The type llama.cpp falls back to when a row is not a whole number of `ty` blocks
/// (`tensor_type_fallback`), before the F16 last resort; `None` where its table has none
/// (then a type of at most 32 values per block becomes F16 and a larger one aborts).
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
/// not the token embeddings or `output.weight`, unless ggml needs the weights for the
/// type ([`crate::quant::ggml::Codec::requires_imatrix`]).
pub fn requires_imatrix(name: &str, ty: GgmlType, mix: Mix) -> bool {
    // ggml itself cannot quantize these without weights (llama.cpp aborts inside ggml
    // for a token_embd/output forced to one of them): required for every tensor.
    if ty.codec().is_some_and(|c| c.requires_imatrix()) {
        return true;
    }
    let gguf = canonical_name(name);
    if matches!(
        gguf.as_ref(),
        "token_embd.weight" | "per_layer_token_embd.weight" | "output.weight"
    ) {
        return false;
    }
    type_requires_imatrix(ty, mix == Mix::Q2_K_S)
}

/// The type part of [`requires_imatrix`]: IQ1/IQ2/IQ3_XXS types always, Q2_K only in a
/// Q2_K_S file (`q2_k_s_file`).
pub fn type_requires_imatrix(ty: GgmlType, q2_k_s_file: bool) -> bool {
    match ty {
        GgmlType::IQ3_XXS
        | GgmlType::IQ2_XXS
        | GgmlType::IQ2_XS
        | GgmlType::IQ2_S
        | GgmlType::IQ1_M
        | GgmlType::IQ1_S => true,
        GgmlType::Q2_K => q2_k_s_file,
        _ => false,
    }
}

/// ggml's `ggml_is_quantized`: block types (every type with blocks of more than one).
pub(super) fn is_quantized(ty: GgmlType) -> bool {
    ty.block_size() > 1
}

impl Planner {
    /// `llama_tensor_get_type_impl`, restricted to the branches [`Mix`] can reach.
    pub(super) fn rule(
        &mut self,
        gguf: &str,
        ne: &[u64],
        role: Role,
        strict: bool,
    ) -> Result<(GgmlType, &'static str), MixError> {
        use GgmlType as T;
        let mix = self.mix;
        let base = mix.base_type();
        let falcon = self.arch == "falcon";
        let gqa = self.facts.n_gqa();
        let n_expert = self.facts.n_expert;
        let ncols = ne.first().copied().unwrap_or(1);
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
            } else if mix == Mix::MXFP4_MOE || falcon || !ncols.is_multiple_of(base.block_size()) {
                ty = T::Q8_0;
            } else if mix.is_iq1_iq2() || mix == Mix::IQ3_XXS {
                ty = T::Q5_K;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if mix == Mix::MXFP4_MOE {
            // MoE expert tensors (3-D) MXFP4, everything else Q8_0; on bailingmoe3, whose
            // MLA projections are 3-D too, only the FFN experts.
            let ffn = matches!(role, Role::FfnUp | Role::FfnGate | Role::FfnDown);
            let experts = ne.get(2).is_some_and(|&n| n > 1);
            if experts && (self.arch != "bailingmoe3" || ffn) {
                reason = "mix: MoE experts";
                ty = T::MXFP4;
            } else {
                reason = "mix: MXFP4_MOE non-expert";
                ty = T::Q8_0;
            }
        } else if role == Role::TokenEmbd {
            // Only the IQ1/IQ2/IQ3_XXS/TQ/Q2_0 file types change untied token embeddings.
            reason = "mix: token_embd";
            match mix {
                Mix::TQ1_0 | Mix::TQ2_0 | Mix::Q2_0 => ty = T::Q4_K,
                Mix::IQ3_XXS => ty = T::IQ3_S,
                Mix::IQ2_XXS | Mix::IQ2_XS | Mix::IQ1_S | Mix::IQ1_M => ty = T::Q2_K,
                Mix::IQ2_S | Mix::IQ2_M => ty = T::IQ3_S,
                _ => {}
            }
        } else if mix.is_iq1_iq2() {
            // llama.cpp's IQ1/IQ2 branch: attn_v, attn_k (8 experts), ffn_down (first
            // eighth by the running counter, no layer lookup), attn_output; nothing else.
            let iq2_s_m = matches!(mix, Mix::IQ2_S | Mix::IQ2_M);
            let low = if iq2_s_m { T::IQ3_S } else { T::Q2_K };
            if role.is_attn_v_like() {
                reason = "mix: attn_v";
                ty = if gqa >= 4 || n_expert >= 4 {
                    T::Q4_K
                } else {
                    low
                };
                self.i_attention_wv += 1;
            } else if n_expert == 8 && role == Role::AttnK {
                reason = "mix: attn_k";
                ty = T::Q4_K;
            } else if role == Role::FfnDown {
                reason = "mix: ffn_down";
                if self.i_ffn_down < self.n_layer as i64 / 8 {
                    ty = low;
                }
                self.i_ffn_down += 1;
            } else if role == Role::AttnOutput {
                reason = "mix: attn_output";
                if n_expert == 8 {
                    ty = T::Q5_K;
                } else if matches!(mix, Mix::IQ1_S | Mix::IQ1_M) {
                    ty = T::IQ2_XXS;
                } else if iq2_s_m {
                    ty = T::IQ3_S;
                }
            } else {
                reason = "mix: base type";
            }
        } else if role.is_attn_v_like() {
            reason = "mix: attn_v";
            let i = self.i_attention_wv;
            match mix {
                Mix::Q2_K => ty = if gqa >= 4 { T::Q4_K } else { T::Q3_K },
                Mix::Q2_K_S if gqa >= 4 => ty = T::Q4_K,
                Mix::IQ3_XXS => {
                    ty = if gqa >= 4 {
                        T::Q4_K
                    } else if !self.opts.has_imatrix {
                        T::IQ3_S
                    } else {
                        T::IQ3_XXS
                    }
                }
                Mix::IQ3_XS | Mix::IQ3_S if gqa >= 4 => ty = T::Q4_K,
                Mix::IQ3_M => ty = T::Q4_K,
                Mix::Q3_K_M => ty = if i < 2 { T::Q5_K } else { T::Q4_K },
                Mix::Q3_K_L => ty = T::Q5_K,
                Mix::IQ4_NL | Mix::IQ4_XS if gqa >= 4 => ty = T::Q5_K,
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
            } else if mix == Mix::IQ3_XS {
                ty = T::IQ3_XXS;
            } else if mix == Mix::IQ3_XXS {
                ty = T::IQ2_S;
            }
        } else if role == Role::AttnQ {
            reason = "mix: attn_q";
            match mix {
                Mix::IQ3_XS => ty = T::IQ3_XXS,
                Mix::IQ3_XXS => ty = T::IQ2_S,
                _ => {}
            }
        } else if role == Role::FfnDown {
            reason = "mix: ffn_down";
            let (i, n) = self.layer_info(self.i_ffn_down, gguf, strict)?;
            let more = use_more_bits(i, n);
            match mix {
                Mix::Q2_K => ty = T::Q3_K,
                Mix::Q2_K_S if i < n / 8 => ty = T::Q4_K,
                Mix::IQ3_XXS if !self.opts.has_imatrix => {
                    ty = if i < n / 8 { T::Q4_K } else { T::Q3_K }
                }
                Mix::Q3_K_M => {
                    ty = if i < n / 16 {
                        T::Q5_K
                    } else if !falcon || more {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                Mix::IQ3_M if i < n / 8 || (n_expert == 8 && more) => ty = T::Q4_K,
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
                Mix::IQ4_NL | Mix::IQ4_XS if i < n / 8 && !self.opts.has_imatrix => ty = T::Q5_K,
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
                            | Mix::IQ3_XS
                            | Mix::IQ3_XXS
                            | Mix::IQ3_S
                            | Mix::IQ3_M
                            | Mix::Q3_K_S
                            | Mix::Q3_K_M
                            | Mix::IQ4_NL
                            | Mix::IQ4_XS
                            | Mix::Q4_K_S
                            | Mix::Q4_K_M
                    ) {
                        ty = T::Q5_K;
                    }
                } else {
                    match mix {
                        Mix::Q2_K => ty = T::Q3_K,
                        Mix::IQ3_XXS => ty = T::IQ3_S,
                        Mix::Q3_K_M | Mix::IQ3_M => ty = T::Q4_K,
                        Mix::Q3_K_L => ty = T::Q5_K,
                        _ => {}
                    }
                }
            } else if mix == Mix::Q3_K_L {
                ty = T::Q4_K;
            }
        } else if role == Role::FfnGate {
            reason = "mix: ffn_gate";
            let (i, n) = self.layer_info(self.i_ffn_gate, gguf, strict)?;
            if mix == Mix::IQ3_XS && i >= n / 8 && i < 7 * n / 8 {
                ty = T::IQ3_XXS;
            }
            self.i_ffn_gate += 1;
        } else if role == Role::FfnUp {
            reason = "mix: ffn_up";
            let (i, n) = self.layer_info(self.i_ffn_up, gguf, strict)?;
            if mix == Mix::IQ3_XS && i >= n / 8 && i < 7 * n / 8 {
                ty = T::IQ3_XXS;
            }
            self.i_ffn_up += 1;
        } else {
            // Role::Other. (llama.cpp's separate attn_qkv branch is unreachable in this
            // revision: attn_qkv is attn_v-like and handled above.)
            reason = "mix: base type";
        }
        Ok((ty, if ty == base { "mix: base type" } else { reason }))
    }
}

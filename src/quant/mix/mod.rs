//! llama.cpp's per-tensor type choice for its named quantization mixes (`Q4_K_M`, ...).
//!
//! A port of `llama_tensor_get_type` / `llama_tensor_get_type_impl`,
//! `tensor_allows_quantization`, `tensor_type_fallback`, `tensor_requires_imatrix` and the
//! counter set-up of `llama_model_quantize_impl` from llama.cpp `src/llama-quant.cpp`
//! (ggml-org/llama.cpp, file revision `007dbbf3fd17eefe9b47fee45f48f7ba5e62b714`, 2026),
//! with the `llama_ftype` values of `include/llama.h` and the type names of
//! `tools/quantize/quantize.cpp`. Only the rules that can fire for the mixes of [`Mix`] are
//! kept.
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
//!
//! # Layout
//!
//! [`Mix`] and its tables live in `mixes`, llama-quantize's full type list in `catalog` (and the `--list-types` document built from it in `type_list`), tensor-name classification (roles, Hugging
//! Face to GGUF names, what is never quantized) in `names`, llama-quant.cpp's per-type
//! choices in `rules`, the stateful [`Planner`] in `planner`, the loader's tensor order
//! and the input file type `COPY` keeps in `loader`; the tests in `tests`.

mod catalog;
mod loader;
mod mixes;
mod names;
mod planner;
mod rules;
#[cfg(test)]
mod tests;
mod type_list;

pub use catalog::{QuantOption, QUANT_OPTIONS};
pub use loader::{guess_file_type, input_file_type, weight_name_order, FTYPE_GUESSED};
pub use mixes::Mix;
pub use names::{
    canonical_name, canonical_role, gguf_name, gguf_role, n_dims, should_quantize, Role,
};
pub use planner::{plan, Choice, MixError, ModelFacts, Options, Planner};
pub use rules::{fallback_type, requires_imatrix, type_requires_imatrix, use_more_bits};
pub use type_list::{type_list, TypeEntry, TypeList};

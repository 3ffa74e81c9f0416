//! Hugging Face folder to GGUF, as llama.cpp's `convert_hf_to_gguf.py` writes it (and,
//! for a quantized type, as `llama-quantize` then writes it), in one streaming pass.
//!
//! - [`config`], [`card`], [`metadata`]: config.json, README front matter and the
//!   `general.*` keys derived from them.
//! - [`arch`]: one table per architecture (name map, hyperparameter keys, transforms).
//! - [`model`]: the converted source — GGUF-named tensors in convert's order, read
//!   through their transforms.
//! - [`vocab`]: the tokenizer side (each architecture's `set_vocab`).
//! - [`reverse`]: the other direction, GGUF back to Hugging Face names, layouts and
//!   config.json (for `--format bnb-safetensors`).
//! - [`write`](mod@write): metadata in convert's order, per-tensor output types (`--outtype`
//!   rules or a llama-quantize mix), and the streaming GGUF writer.

pub mod arch;
pub mod card;
pub mod config;
pub mod metadata;
pub mod model;
pub mod reverse;
pub mod vocab;
pub mod write;

pub use model::model_dir;

//! qforge's integration tests, one binary: a module per command (`quantize`, `inspect`,
//! `export_native`, `kv_profile`, `bench_gemm`) and per cross-cutting concern (codecs
//! against ggml, reliability, real weights, generated docs).

mod codec_common;
mod common;

mod bench_gemm;
mod bnb_export;
mod broken_inputs;
mod candle_llama;
mod cli;
mod convert;
mod convert_core;
mod export_native;
mod generated_docs;
mod ggml_golden;
mod ggml_roundtrip;
mod ggml_simd_equivalence;
mod inspect;
mod isa;
mod kv_profile;
mod kv_real;
mod llama_quantize;
mod qlora_rs;
mod quantize;
mod quantize_llama_cli;
mod real_model;
mod reliability;

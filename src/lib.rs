//! qforge: a quantization toolchain for model checkpoints.
//!
//! Layout: [`formats`] reads and writes files, `quant` holds the block codecs,
//! [`kernels`] the dequant-GEMM backends, `kv` the KV-cache codec, and [`commands`] the
//! thin command-line fronts declared in [`cli`].

pub mod candle;
pub mod cli;
pub mod commands;
pub mod convert;
pub mod cpu;
pub mod error;
pub mod formats;
pub mod kernels;
pub mod kv;
pub mod logging;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod quant;

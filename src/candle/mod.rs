//! Loading QNAT and GGUF weights into candle without conversion.
//!
//! - [`QuantModel`] opens a QNAT v2 or GGUF file memory-mapped and hands its tensors out:
//!   as candle `QTensor`s that read the blocks in place ([`QuantModel::qtensor`]: F32,
//!   F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ... Q6_K, Q8_K map one to one to
//!   candle's `GgmlDType`), dequantized to f32/f16/bf16 on request
//!   ([`QuantModel::dequantize`], every type we decode, NF4/FP4 included), as a
//!   [`QuantLinear`] ([`QuantModel::quant_linear`]), or as the `gguf_file::Content` that
//!   candle's GGUF model loaders (such as candle-transformers' `quantized_llama`) read
//!   ([`QuantModel::gguf_content`]).
//! - [`QuantLinear`] is a candle `Module` whose weights stay quantized (Q4_K, Q6_K, Q8_0,
//!   Q4_0, NF4) and whose forward runs our fused kernels (`crate::kernels::fused`).
//! - [`MappedBlocks`] is the zero-copy candle storage behind those `QTensor`s.
//! - [`activation_error`] is how far a product with 8-bit activations (ours, candle's
//!   `QMatMul`, ggml's) may be from the exact one: the check of both.
//!
//! ```no_run
//! use candle_core::{DType, Module, Tensor, Device};
//! use qforge::candle::QuantModel;
//! # fn main() -> anyhow::Result<()> {
//! let model = QuantModel::open("model.qnat".as_ref())?;
//! let up = model.quant_linear("blk.0.ffn_up.weight", None)?;
//! let x = Tensor::zeros((1, up.in_features()), DType::F32, &Device::Cpu)?;
//! let y = up.forward(&x)?;
//! let norm = model.dequantize("blk.0.attn_norm.weight", DType::F32)?;
//! let q = model.qtensor("blk.0.attn_q.weight")?; // a candle QTensor over the mapped file
//! # Ok(()) }
//! ```

mod accuracy;
mod linear;
mod mapped;
mod model;

pub use accuracy::{activation_error, ActivationError};
pub use linear::QuantLinear;
pub use mapped::{candle_dtype, MappedBlocks, MappedBytes};
pub use model::QuantModel;

//! Block codecs: pure functions over slices.
//!
//! - [`bnb`]: bitsandbytes NF4/FP4 with double quantization, bit-exact with bitsandbytes.
//! - [`ggml`]: ggml's block types (Q4_0 ... Q6_K, IQ4_NL, IQ4_XS, TQ1_0/TQ2_0, MXFP4,
//!   Q1_0/Q2_0) and floats, bit-exact with
//!   ggml's reference quantizer.
//! - [`mix`]: llama.cpp's per-tensor type choice for its named mixes (Q4_K_M, ...).
//! - [`imatrix`]: importance-matrix files (GGUF and legacy `.dat`).

pub mod bnb;
pub mod ggml;
pub mod imatrix;
pub mod mix;

use crate::formats::ggml_type::GgmlType;
use crate::formats::TensorType;
use anyhow::{bail, Result};

/// Whether tensors of this type can be decoded to f32 (and so quantized).
pub fn can_decode(ty: TensorType) -> bool {
    match ty.as_ggml() {
        Some(GgmlType::F64) => true,
        Some(t) => t.codec().is_some(),
        None => false,
    }
}

/// Decodes whole rows of a tensor of type `ty` to f32; `out.len()` elements.
pub fn decode(ty: TensorType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    match ty.as_ggml() {
        Some(GgmlType::F64) => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
            }
            Ok(())
        }
        Some(t) => match t.codec() {
            Some(c) => {
                (c.dequantize)(bytes, out);
                Ok(())
            }
            None => bail!("decoding {t} tensors is not implemented"),
        },
        None => bail!("{ty} tensors cannot be decoded to f32"),
    }
}

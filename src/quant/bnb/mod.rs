//! Bit-exact bitsandbytes 4-bit quantization: NF4 and FP4 blockwise codes with optional
//! double quantization of the absmax values.
//!
//! The reference is bitsandbytes 0.50.2 on the CPU with torch 2.15 (`quantize_4bit`,
//! `dequantize_4bit`, `compress_statistics=True`), checked byte for byte against
//! `fixtures/bnb/golden.bin`. Points where that path is easy to get wrong:
//! - full blocks are scaled by `x * (1 / max(absmax, 1e-38))`, the ragged last block by
//!   `x / max(absmax, 1e-38)`, and the last block stores the clamped absmax;
//! - a value on a midpoint takes the lower code, NaN the highest sorted code;
//! - the offset is torch's f32 `mean()`, whose summation order is reproduced by
//!   [`torch_mean`] (it depends on torch's thread count from 32768 absmax values up);
//! - the 8-bit absmax codes come from a 65536-point lookup, not an exact nearest search;
//! - the dynamic map is the one torch builds on x86 with AVX2/AVX-512.

mod blockwise;
mod codes;
mod double_quant;
mod pack;
mod simd;
mod torch_mean;

pub use self::blockwise::{
    dequantize_4bit, dequantize_4bit_par, is_valid_block_size, num_blocks, quantize_4bit,
    quantize_4bit_into, quantize_4bit_into_par, quantize_4bit_into_with, Quantized4, BLOCK_SIZES,
};
pub use self::codes::{code_table, dynamic_map_signed};
pub use self::double_quant::{
    double_dequantize, double_quantize, double_quantize_with_threads, DoubleQuant, NESTED_BLOCK,
};
pub use self::pack::packed_len;
pub use self::torch_mean::torch_mean;

/// A bitsandbytes 4-bit data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FourBit {
    /// NormalFloat4 (`quant_type="nf4"`).
    Nf4,
    /// bitsandbytes' FP4, an e2m1 variant (`quant_type="fp4"`).
    Fp4,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// Input element types: f32, f16 and bf16, widened exactly to f32 as bitsandbytes does.
pub trait QuantInput: Copy + Send + Sync + sealed::Sealed {
    /// The value as f32.
    fn to_f32(self) -> f32;
    /// The slice itself when the elements are already f32.
    fn as_f32_slice(x: &[Self]) -> Option<&[f32]>;
}

impl QuantInput for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn as_f32_slice(x: &[Self]) -> Option<&[f32]> {
        Some(x)
    }
}

impl QuantInput for half::f16 {
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn as_f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl QuantInput for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn as_f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod reference_tests;

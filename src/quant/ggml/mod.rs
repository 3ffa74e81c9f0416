//! Pure-Rust ggml block quantization codecs, bit-exact with ggml's reference C code
//! (`ggml_quantize_chunk` in llama.cpp's `ggml/src/ggml-quants.c`).
//!
//! Every codec quantizes one row of `f32` values into the exact ggml block bytes
//! (little-endian, ggml struct layout) and dequantizes whole blocks back to `f32`.
//! With importance weights (`imatrix`) the codecs follow the same path as
//! `ggml_quantize_chunk` with a non-NULL imatrix (the `quantize_row_X_impl`
//! functions); without, the `quantize_row_X_ref` path.
//!
//! The hot scale searches have SIMD kernels (AVX-512 / AVX2, picked at run time)
//! that produce the same bytes as the scalar path; [`crate::cpu::with_level`] picks
//! the level for the calling thread so tests can compare them.

mod common;
mod floats;
mod iq1;
mod iq2;
mod iq3;
mod iq4nl;
pub mod iq_grid;
mod legacy;
mod mxfp4;
mod q12_0;
mod q2_k;
mod q3_k;
mod q45_k;
mod q6_k;
mod simd;
mod ternary;

pub use self::iq4nl::KVALUES_IQ4NL;
pub use self::q45_k::get_scale_min_k4;

pub use self::simd::active_isa;
use crate::formats::ggml_type::GgmlType;

/// One ggml block codec: the type's entry in the type table ([`GgmlType`]) and its functions.
pub struct Codec {
    /// The ggml type; block size, type size and name come from its table entry.
    pub ty: GgmlType,
    /// Quantize one row; `dst.len() == src.len()/block_size*type_size`; with importance
    /// weights (`imatrix`, `len == src.len()`) the `quantize_row_X_impl` path of ggml,
    /// without the `quantize_row_X_ref` one.
    pub quantize_row: fn(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>),
    /// Dequantize whole blocks.
    pub dequantize: fn(src: &[u8], dst: &mut [f32]),
}

impl Codec {
    /// ggml type name, e.g. `"Q4_K"`.
    pub fn name(&self) -> &'static str {
        self.ty.name()
    }

    /// Values per block.
    pub fn block_size(&self) -> usize {
        self.ty.block_size() as usize
    }

    /// Bytes per block.
    pub fn type_size(&self) -> usize {
        self.ty.type_size() as usize
    }

    /// Whether ggml cannot quantize the type without importance weights
    /// (`ggml_quantize_requires_imatrix`: IQ2_XXS, IQ2_XS, IQ1_S); their `quantize_row`
    /// panics when given none, so callers check this first.
    pub fn requires_imatrix(&self) -> bool {
        matches!(
            self.ty,
            GgmlType::IQ2_XXS | GgmlType::IQ2_XS | GgmlType::IQ1_S
        )
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("ty", &self.ty).finish()
    }
}

/// All supported codecs, in ggml type id order.
pub static CODECS: &[Codec] = &[
    floats::F32,
    floats::F16,
    legacy::Q4_0,
    legacy::Q4_1,
    legacy::Q5_0,
    legacy::Q5_1,
    legacy::Q8_0,
    q2_k::Q2_K,
    q3_k::Q3_K,
    q45_k::Q4_K,
    q45_k::Q5_K,
    q6_k::Q6_K,
    iq2::IQ2_XXS,
    iq2::IQ2_XS,
    iq3::IQ3_XXS,
    iq1::IQ1_S,
    iq4nl::IQ4_NL,
    iq3::IQ3_S,
    iq2::IQ2_S,
    iq4nl::IQ4_XS,
    iq1::IQ1_M,
    floats::BF16,
    ternary::TQ1_0,
    ternary::TQ2_0,
    mxfp4::MXFP4,
    q12_0::Q1_0,
    q12_0::Q2_0,
];

/// `dequantize(quantize(x))` without importance weights (unit tests of the codecs).
#[cfg(test)]
fn round_trip(c: &Codec, x: &[f32]) -> Vec<f32> {
    round_trip_weighted(c, x, None)
}

/// `dequantize(quantize(x))` with importance weights `w` where given (unit tests).
#[cfg(test)]
fn round_trip_weighted(c: &Codec, x: &[f32], w: Option<&[f32]>) -> Vec<f32> {
    let mut q = vec![0u8; x.len() / c.block_size() * c.type_size()];
    (c.quantize_row)(x, &mut q, w);
    let mut y = vec![0.0f32; x.len()];
    (c.dequantize)(&q, &mut y);
    y
}

/// Root mean square of `a - b` and of `a` (unit tests of the codecs).
#[cfg(test)]
fn rms_error_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
    let ms = |f: &dyn Fn(usize) -> f32| (0..a.len()).map(f).sum::<f32>() / a.len() as f32;
    (
        ms(&|i| (a[i] - b[i]) * (a[i] - b[i])).sqrt(),
        ms(&|i| a[i] * a[i]).sqrt(),
    )
}

/// The codec of a ggml type, if qforge has one (every quant type of [`CODECS`] plus F32,
/// F16 and BF16); the same as [`GgmlType::codec`].
pub fn codec(ty: GgmlType) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.ty == ty)
}

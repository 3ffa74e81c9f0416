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
mod iq4nl;
mod legacy;
mod q2_k;
mod q3_k;
mod q45_k;
mod q6_k;
mod simd;

pub use self::q45_k::get_scale_min_k4;
pub use self::simd::active_isa;

/// One ggml block codec.
pub struct Codec {
    /// ggml type id (`enum ggml_type`).
    pub type_id: u32,
    /// ggml type name, e.g. `"Q4_K"`.
    pub name: &'static str,
    /// Number of values per block.
    pub block_size: usize,
    /// Number of bytes per block.
    pub type_size: usize,
    /// Quantize one row; `dst.len() == src.len()/block_size*type_size`; imatrix len == src.len() when Some.
    pub quantize_row: fn(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>),
    /// Dequantize whole blocks.
    pub dequantize: fn(src: &[u8], dst: &mut [f32]),
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("type_id", &self.type_id)
            .field("name", &self.name)
            .field("block_size", &self.block_size)
            .field("type_size", &self.type_size)
            .finish()
    }
}

/// All supported codecs, in ggml type id order.
pub static CODECS: [Codec; 14] = [
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
    iq4nl::IQ4_NL,
    floats::BF16,
];

/// Look up the codec for a ggml type id (the 11 quant types plus F32, F16 and BF16).
pub fn codec(type_id: u32) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.type_id == type_id)
}

/// Look up a codec by its ggml type name (case-insensitive), e.g. `"q4_k"`.
pub fn codec_by_name(name: &str) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

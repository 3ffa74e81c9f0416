//! Shared helpers for the integration tests.

use qforge::quant::ggml::{Codec, CODECS};

/// Deterministic xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

/// The 11 block-quantized codecs.
pub fn quant_codecs() -> impl Iterator<Item = &'static Codec> {
    CODECS.iter().filter(|c| c.block_size() > 1)
}

/// What a test passes where it means "no importance weights": `None`, or flat weights
/// for the types ggml only quantizes with weights (`Codec::requires_imatrix`).
pub fn no_imatrix(c: &Codec, len: usize) -> Option<Vec<f32>> {
    c.requires_imatrix().then(|| vec![1.0; len])
}

/// Quantize one row into a fresh buffer.
pub fn quantize(c: &Codec, x: &[f32], imatrix: Option<&[f32]>) -> Vec<u8> {
    let mut q = vec![0u8; x.len() / c.block_size() * c.type_size()];
    (c.quantize_row)(x, &mut q, imatrix);
    q
}

/// Dequantize a buffer of whole blocks.
pub fn dequantize(c: &Codec, q: &[u8]) -> Vec<f32> {
    let mut y = vec![0f32; q.len() / c.type_size() * c.block_size()];
    (c.dequantize)(q, &mut y);
    y
}

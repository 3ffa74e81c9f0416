//! Unquantized storage types: F32, F16 and BF16 (block size 1).

use super::common::{fp16_to_fp32, fp32_to_fp16};
use super::Codec;
use crate::formats::ggml_type::GgmlType;

/// F32 codec (ggml type 0): little-endian IEEE single.
pub const F32: Codec = Codec {
    ty: GgmlType::F32,
    quantize_row: quantize_row_f32,
    dequantize: dequantize_f32,
};

/// F16 codec (ggml type 1): IEEE half, round to nearest even (`GGML_FP32_TO_FP16`).
pub const F16: Codec = Codec {
    ty: GgmlType::F16,
    quantize_row: quantize_row_f16,
    dequantize: dequantize_f16,
};

/// BF16 codec (ggml type 30): round to nearest even, NaN kept and made quiet
/// (`GGML_FP32_TO_BF16`).
pub const BF16: Codec = Codec {
    ty: GgmlType::BF16,
    quantize_row: quantize_row_bf16,
    dequantize: dequantize_bf16,
};

/// ggml's `GGML_FP32_TO_BF16` (`ggml_compute_fp32_to_bf16`).
#[inline(always)]
pub fn fp32_to_bf16(s: f32) -> u16 {
    let u = s.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// ggml's `GGML_BF16_TO_FP32`.
#[inline(always)]
pub fn bf16_to_fp32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn quantize_row_f32(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (d, &v) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (s, d) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

fn quantize_row_f16(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&fp32_to_fp16(v).to_le_bytes());
    }
}

fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    super::simd::f16_to_f32(src, dst)
}

/// Scalar f16 to f32 of `min(dst.len(), src.len() / 2)` values (the SIMD path's tail
/// and the scalar level).
pub(super) fn f16_to_f32_scalar(src: &[u8], dst: &mut [f32]) {
    for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *d = fp16_to_fp32(u16::from_le_bytes([s[0], s[1]]));
    }
}

fn quantize_row_bf16(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (d, &v) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&fp32_to_bf16(v).to_le_bytes());
    }
}

fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    super::simd::bf16_to_f32(src, dst)
}

/// Scalar bf16 to f32 of `min(dst.len(), src.len() / 2)` values.
pub(super) fn bf16_to_f32_scalar(src: &[u8], dst: &mut [f32]) {
    for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *d = bf16_to_fp32(u16::from_le_bytes([s[0], s[1]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{with_level, Level};

    /// Every f16 and bf16 bit pattern, at every level, against the scalar conversion
    /// (NaNs compared by bits); odd lengths exercise the tails.
    #[test]
    fn bulk_conversions_match_scalar_at_every_level() {
        let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        for n in [65536, 65535, 37, 7, 0] {
            let src = &bytes[..2 * n];
            let (mut f16_ref, mut bf16_ref) = (vec![0f32; n], vec![0f32; n]);
            f16_to_f32_scalar(src, &mut f16_ref);
            bf16_to_f32_scalar(src, &mut bf16_ref);
            for level in Level::supported() {
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                with_level(level, || {
                    dequantize_f16(src, &mut a);
                    dequantize_bf16(src, &mut b);
                })
                .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&f16_ref), "f16 at {level}, n = {n}");
                assert_eq!(bits(&b), bits(&bf16_ref), "bf16 at {level}, n = {n}");
            }
        }
    }
}

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
    let done = f32_to_bf16_simd(src, dst);
    for (d, &v) in dst[2 * done..].chunks_exact_mut(2).zip(&src[done..]) {
        d.copy_from_slice(&fp32_to_bf16(v).to_le_bytes());
    }
}

/// [`fp32_to_bf16`] of the first values of `src` into `dst` with AVX2 or AVX-512 (the
/// same integer operations per lane); returns how many were converted (0 at the scalar
/// level), the caller converting the rest.
fn f32_to_bf16_simd(src: &[f32], dst: &mut [u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    match crate::cpu::level() {
        // SAFETY: the AVX-512 level is only reported on CPUs with AVX-512F.
        crate::cpu::Level::Avx512 => unsafe { x86::f32_to_bf16_avx512(src, dst) },
        // SAFETY: the AVX2 level is only reported on CPUs with AVX2.
        crate::cpu::Level::Avx2 => unsafe { x86::f32_to_bf16_avx2(src, dst) },
        crate::cpu::Level::Scalar => 0,
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX-512: 16 values at a time.
    #[target_feature(enable = "avx512f,avx2")]
    pub(super) unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [u8]) -> usize {
        let n = src.len().min(dst.len() / 2) / 16 * 16;
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let inf = _mm512_set1_epi32(0x7f80_0000);
        let (quiet, one, bias) = (
            _mm512_set1_epi32(64),
            _mm512_set1_epi32(1),
            _mm512_set1_epi32(0x7fff),
        );
        for i in (0..n).step_by(16) {
            let u = _mm512_castps_si512(_mm512_loadu_ps(src.as_ptr().add(i)));
            let hi = _mm512_srli_epi32::<16>(u);
            let nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
            let rounded = _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(hi, one)));
            let r = _mm512_mask_blend_epi32(
                nan,
                _mm512_srli_epi32::<16>(rounded),
                _mm512_or_si512(hi, quiet),
            );
            _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i).cast(), _mm512_cvtepi32_epi16(r));
        }
        n
    }

    /// AVX2: 8 values at a time (unsigned compare as a signed one on biased values).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn f32_to_bf16_avx2(src: &[f32], dst: &mut [u8]) -> usize {
        let n = src.len().min(dst.len() / 2) / 8 * 8;
        // |u| and the infinity are below 2^31: a signed compare is the unsigned one.
        let abs = _mm256_set1_epi32(0x7fff_ffff);
        let inf = _mm256_set1_epi32(0x7f80_0000);
        let (quiet, one, bias) = (
            _mm256_set1_epi32(64),
            _mm256_set1_epi32(1),
            _mm256_set1_epi32(0x7fff),
        );
        for i in (0..n).step_by(8) {
            let u = _mm256_castps_si256(_mm256_loadu_ps(src.as_ptr().add(i)));
            let hi = _mm256_srli_epi32::<16>(u);
            let nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
            let rounded = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(hi, one)));
            let r = _mm256_blendv_epi8(
                _mm256_srli_epi32::<16>(rounded),
                _mm256_or_si256(hi, quiet),
                nan,
            );
            // Values below 2^16: packing with unsigned saturation keeps them; the
            // permute puts the two 128-bit halves' results in order.
            let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(r, r));
            _mm_storeu_si128(
                dst.as_mut_ptr().add(2 * i).cast(),
                _mm256_castsi256_si128(packed),
            );
        }
        n
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

    /// f32 to bf16 at every level against [`fp32_to_bf16`]: values around every
    /// rounding case (ties, carries into the exponent, infinities, NaNs of both signs and
    /// payloads); odd lengths exercise the tails.
    #[test]
    fn bf16_encoding_matches_scalar_at_every_level() {
        let mut src: Vec<f32> = Vec::new();
        for hi in (0..=u16::MAX).step_by(7) {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
                src.push(f32::from_bits((u32::from(hi) << 16) | lo));
            }
        }
        src.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
        ]);
        for n in [src.len(), src.len() - 3, 9, 0] {
            let want: Vec<u8> = src[..n]
                .iter()
                .flat_map(|&v| fp32_to_bf16(v).to_le_bytes())
                .collect();
            for level in Level::supported() {
                let mut got = vec![0u8; 2 * n];
                with_level(level, || quantize_row_bf16(&src[..n], &mut got, None)).unwrap();
                assert_eq!(got, want, "at {level}, n = {n}");
            }
        }
    }

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

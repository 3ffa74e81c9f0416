//! The ternary types of BitNet b1.58 / TriLMs: TQ1_0 (base-3 packing, 1.69 bpw) and TQ2_0
//! (2 bits per value), both `{-1, 0, 1} * d` with `d` the block's absolute max. ggml
//! ignores importance weights for both.

use super::common::{c_round_i32, read_fp16, write_fp16};
use super::{simd, Codec};
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockTq1_0, BlockTq2_0, QK_K};
use crate::formats::ggml_type::GgmlType;

/// TQ1_0 codec (ggml type 34).
pub const TQ1_0: Codec = Codec {
    ty: GgmlType::TQ1_0,
    quantize_row: quantize_row_tq1_0,
    dequantize: dequantize_tq1_0,
};

/// TQ2_0 codec (ggml type 35).
pub const TQ2_0: Codec = Codec {
    ty: GgmlType::TQ2_0,
    quantize_row: quantize_row_tq2_0,
    dequantize: dequantize_tq2_0,
};

/// Bytes of [`BlockTq1_0::qs`] packed along 32 bytes (the rest along 16).
const TQ1_QS32: usize = 32 * ((QK_K - 4 * QK_K / 64) / 5 / 32);

/// `d` (ggml's `MAX(amax, fabsf(v))` loop) and `1/d` (0 for an all-zero block).
#[inline]
fn ternary_scale(x: &[f32]) -> (f32, f32) {
    // A NaN resets this loop's maximum, so only a finite block may take the SIMD max.
    let amax = simd::finite_abs_max(x).unwrap_or_else(|| {
        let mut amax = 0.0f32;
        for &v in x {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        amax
    });
    (amax, if amax != 0.0 { 1.0 / amax } else { 0.0 })
}

/// The trit of each value: `lroundf(x * id) + 1` (0, 1, 2 for -1, 0, 1), low bits as C
/// keeps them (SIMD at the AVX2 and AVX-512 levels).
#[inline(always)]
fn trits(x: &[f32], id: f32) -> [u8; QK_K] {
    let mut t = [0u8; QK_K];
    if !simd::offset_levels(x, id, i32::MIN, i32::MAX, &mut t) {
        for (o, &v) in t.iter_mut().zip(x) {
            *o = c_round_i32(v * id).wrapping_add(1) as u8;
        }
    }
    t
}

/// Five trits (first most significant) as a fraction of `3^5`, rounded up to a byte
/// (`(q * 256 + 242) / 243`).
#[inline(always)]
fn pack_trits(q: u8) -> u8 {
    (q as u16 * 256).div_ceil(243) as u8
}

fn quantize_row_tq1_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockTq1_0>(dst))
    {
        let (d, id) = ternary_scale(x);
        write_fp16(&mut y.d, 0, d);
        let t = trits(x, id);
        let mut off = 0;
        // 5 values per byte: along 32 bytes, then along 16.
        for (span, range) in [(32, 0..TQ1_QS32), (16, TQ1_QS32..y.qs.len())] {
            for j in range.step_by(span) {
                for m in 0..span {
                    let mut q = 0u8;
                    for n in 0..5 {
                        q = q.wrapping_mul(3).wrapping_add(t[off + m + n * span]);
                    }
                    y.qs[j + m] = pack_trits(q);
                }
                off += 5 * span;
            }
        }
        // 4 values per byte, shifted up one trit.
        let nh = y.qh.len();
        for j in 0..nh {
            let mut q = 0u8;
            for m in 0..4 {
                q = q.wrapping_mul(3).wrapping_add(t[off + j + m * nh]);
            }
            y.qh[j] = pack_trits(q.wrapping_mul(3));
        }
    }
}

fn quantize_row_tq2_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockTq2_0>(dst))
    {
        let (d, id) = ternary_scale(x);
        write_fp16(&mut y.d, 0, d);
        let t = trits(x, id);
        for (j, tc) in t.chunks_exact(128).enumerate() {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q = q.wrapping_add((tc[m + n * 32] & 3) << (2 * n));
                }
                y.qs[32 * j + m] = q;
            }
        }
    }
}

/// The `n`-th trit (most significant first) of a [`pack_trits`] byte, as -1, 0 or 1.
#[inline(always)]
fn unpack_trit(b: u8, n: usize) -> f32 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = b.wrapping_mul(POW3[n]);
    (((q as u16 * 3) >> 8) as i32 - 1) as f32
}

fn dequantize_tq1_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockTq1_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        let mut out = y.iter_mut();
        for (span, range) in [(32, 0..TQ1_QS32), (16, TQ1_QS32..b.qs.len())] {
            for j in range.step_by(span) {
                for n in 0..5 {
                    for m in 0..span {
                        *out.next().unwrap() = unpack_trit(b.qs[j + m], n) * d;
                    }
                }
            }
        }
        for n in 0..4 {
            for &h in &b.qh {
                *out.next().unwrap() = unpack_trit(h, n) * d;
            }
        }
    }
}

fn dequantize_tq2_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockTq2_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for (j, yc) in y.chunks_exact_mut(128).enumerate() {
            for l in 0..4 {
                for m in 0..32 {
                    let q = (b.qs[32 * j + m] >> (2 * l)) & 3;
                    yc[32 * l + m] = (q as i32 - 1) as f32 * d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::round_trip;
    use super::*;

    #[test]
    fn ternary_values_round_trip_exactly() {
        // Values already in {-1, 0, 1} * d (d a power of two) come back unchanged.
        let x: Vec<f32> = (0..2 * QK_K)
            .map(|i| [-0.5f32, 0.0, 0.5][(i * 7 + i / 5) % 3])
            .collect();
        for c in [&TQ1_0, &TQ2_0] {
            assert_eq!(round_trip(c, &x), x, "{}", c.name());
        }
    }

    #[test]
    fn edge_rows() {
        for c in [&TQ1_0, &TQ2_0] {
            // Zeros: d = 0 and every value 0.
            assert!(round_trip(c, &[0.0; QK_K]).iter().all(|&v| v == 0.0));
            // A constant row is exact.
            assert!(round_trip(c, &[3.0; QK_K]).iter().all(|&v| v == 3.0));
            // Huge values (f16 overflows to inf, as in ggml): signs survive.
            let y = round_trip(c, &[-1e30; QK_K]);
            assert!(y.iter().all(|&v| v == f32::NEG_INFINITY), "{}", c.name());
            // Error bound: |x - y| <= d / 2 (plus f16 rounding of d).
            let x: Vec<f32> = (0..QK_K)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let d = 50.0 / 7.0;
            for (a, b) in x.iter().zip(round_trip(c, &x)) {
                assert!((a - b).abs() <= d * 0.5 + 1e-2, "{} {a} {b}", c.name());
            }
        }
    }
}

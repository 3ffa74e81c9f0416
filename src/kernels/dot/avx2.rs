//! AVX2 dot kernels, for CPUs without AVX-512: one token at a time, 32 values a step.
//!
//! Every type is unpacked to 32 signed bytes (its level minus its offset; NF4 through
//! the int8 table with `vpshufb`), multiplied with the activations by `vpmaddubsw` on
//! `|w|` and `sign(x, w)` (the sign trick, since `vpmaddubsw` wants one unsigned operand),
//! summed to i32 with `vpmaddwd`, and scaled per 16 values. Q4_K's mins are taken off with
//! the activation sums.

use super::super::activation::ActRow;
use super::super::weights::{WeightType, NF4_BLOCK};
use super::{iq4_xs_scale, NF4_I8};
use crate::formats::blocks::{
    block_at, BlockIq4Xs, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8_0,
};
use crate::quant::ggml::{get_scale_min_k4, KVALUES_IQ4NL};
use std::arch::x86_64::*;

/// One 32-value step of a row: signed values, the weight scales of its two halves, and
/// the coefficient of the activation sum to take off (Q4_K's `dmin * min`).
struct Step {
    values: __m256i,
    scale_lo: f32,
    scale_hi: f32,
    min: f32,
}

/// `row . a` for a row of type `ty`.
///
/// # Safety
/// The CPU must support [`crate::cpu::Level::Avx2`]; the row and activations must have the lengths of
/// one row of `ty` (checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(ty: WeightType, row: &[u8], absmax: &[f32], a: &ActRow<'_>) -> f32 {
    let ones = _mm256_set1_epi16(1);
    // Blocks are 32 or 256 values: a shift, not a division, per step.
    let block_shift = (a.qs.len() / a.d.len()).trailing_zeros();
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let (step_bytes, step_shift) = step_bytes(ty);
    for c in 0..a.qs.len() / 32 {
        // Weights stream from memory in a GEMV: ask for them 2 KiB ahead (a hint).
        let ahead = row
            .as_ptr()
            .wrapping_add(((c * step_bytes) >> step_shift) + 2048);
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        let s = unpack(ty, row, absmax, c);
        let x = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c).cast());
        let prod = _mm256_maddubs_epi16(
            _mm256_sign_epi8(s.values, s.values),
            _mm256_sign_epi8(x, s.values),
        );
        let dot = _mm256_madd_epi16(prod, ones);
        let dx = a.d[(32 * c) >> block_shift];
        let scale = _mm256_set_m128(_mm_set1_ps(s.scale_hi * dx), _mm_set1_ps(s.scale_lo * dx));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
        if s.min != 0.0 {
            let sum = i32::from(a.sums16[2 * c]) + i32::from(a.sums16[2 * c + 1]);
            mins += s.min * dx * sum as f32;
        }
    }
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s))) - mins
}

/// Bytes of a row of type `ty` per 32-value step, as `(bytes, shift)`: step `c` starts at
/// byte `(c * bytes) >> shift` (block sizes are powers of two: no division in the loop).
fn step_bytes(ty: WeightType) -> (usize, u32) {
    match ty.ggml_type() {
        Some(t) => (32 * t.type_size() as usize, t.block_size().trailing_zeros()),
        None => (16, 0),
    }
}

/// A little-endian f16 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(b: [u8; 2]) -> f32 {
    let bits = i32::from(u16::from_le_bytes(b));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack(ty: WeightType, row: &[u8], absmax: &[f32], c: usize) -> Step {
    let m4 = _mm256_set1_epi8(0x0F);
    // 32 bytes from the start of `b`, which holds at least 32 (the block fields below do).
    let load = |b: &[u8]| {
        debug_assert!(b.len() >= 32);
        _mm256_loadu_si256(b.as_ptr().cast())
    };
    match ty {
        WeightType::Q4K => {
            let blk = block_at::<BlockQ4K>(row, c / 8);
            let fifth = _mm256_setzero_si256();
            q45_k_step(&blk.qs, &blk.scales, [blk.d, blk.dmin], c % 8, fifth)
        }
        WeightType::Q5K => {
            let (blk, j) = (block_at::<BlockQ5K>(row, c / 8), c % 8);
            // Bit j of qh[0..32] is the fifth bit of sub-block j.
            let qh = _mm256_srl_epi16(load(&blk.qh), _mm_cvtsi32_si128(j as i32));
            let fifth = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(1)));
            q45_k_step(&blk.qs, &blk.scales, [blk.d, blk.dmin], j, fifth)
        }
        WeightType::Iq4Xs => {
            let (blk, g) = (block_at::<BlockIq4Xs>(row, c / 8), c % 8);
            let q = _mm_loadu_si128(blk.qs.as_ptr().add(16 * g).cast());
            let m4x = _mm_set1_epi8(0x0F);
            let (lo, hi) = (
                _mm_and_si128(q, m4x),
                _mm_and_si128(_mm_srli_epi16::<4>(q), m4x),
            );
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
            let d = f16_at(blk.d) * iq4_xs_scale(blk, g) as f32;
            Step {
                values: _mm256_shuffle_epi8(table, _mm256_set_m128i(hi, lo)),
                scale_lo: d,
                scale_hi: d,
                min: 0.0,
            }
        }
        WeightType::Q6K => {
            let (sb, e) = (c / 8, 32 * (c % 8));
            let blk = block_at::<BlockQ6K>(row, sb);
            let (n, g) = (e / 128, (e % 128) / 32);
            let ql = load(&blk.ql[64 * n + 32 * (g % 2)..]);
            let ql = if g < 2 {
                ql
            } else {
                _mm256_srli_epi16::<4>(ql)
            };
            let qh = load(&blk.qh[32 * n..]);
            let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32));
            let qh = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(3)));
            let level = _mm256_or_si256(_mm256_and_si256(ql, m4), qh);
            let d = f16_at(blk.d);
            let sc = |i: usize| f32::from(blk.scales[i]) * d;
            Step {
                values: _mm256_sub_epi8(level, _mm256_set1_epi8(32)),
                scale_lo: sc(e / 16),
                scale_hi: sc(e / 16 + 1),
                min: 0.0,
            }
        }
        WeightType::Q4_0 => {
            let blk = block_at::<BlockQ4_0>(row, c);
            let q = _mm_loadu_si128(blk.qs.as_ptr().cast());
            let v = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
            let d = f16_at(blk.d);
            Step {
                values: _mm256_sub_epi8(_mm256_and_si256(v, m4), _mm256_set1_epi8(8)),
                scale_lo: d,
                scale_hi: d,
                min: 0.0,
            }
        }
        WeightType::Q8_0 => {
            let blk = block_at::<BlockQ8_0>(row, c);
            let d = f16_at(blk.d);
            Step {
                values: _mm256_loadu_si256(blk.qs.as_ptr().cast()),
                scale_lo: d,
                scale_hi: d,
                min: 0.0,
            }
        }
        WeightType::Nf4 => {
            let b = _mm_loadu_si128(row.as_ptr().add(16 * c).cast());
            let m4x = _mm_set1_epi8(0x0F);
            let (hi, lo) = (
                _mm_and_si128(_mm_srli_epi16::<4>(b), m4x),
                _mm_and_si128(b, m4x),
            );
            // The first value of a pair is the high nibble: interleave high, low.
            let codes = _mm256_set_m128i(_mm_unpackhi_epi8(hi, lo), _mm_unpacklo_epi8(hi, lo));
            let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(NF4_I8.as_ptr().cast()));
            let s = absmax[32 * c / NF4_BLOCK] * (1.0 / 127.0);
            Step {
                values: _mm256_shuffle_epi8(table, codes),
                scale_lo: s,
                scale_hi: s,
                min: 0.0,
            }
        }
    }
}

/// Sub-block `j` of a Q4_K or Q5_K super-block (`qs`, packed `scales`, `[d, dmin]`): the
/// nibbles of `qs` plus `fifth` (Q5_K's high bits, already at bit 4; zero for Q4_K).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45_k_step(
    qs: &[u8; 128],
    scales: &[u8; 12],
    [d, dmin]: [[u8; 2]; 2],
    j: usize,
    fifth: __m256i,
) -> Step {
    let q = _mm256_loadu_si256(qs.as_ptr().add(32 * (j / 2)).cast());
    let q = if j.is_multiple_of(2) {
        q
    } else {
        _mm256_srli_epi16::<4>(q)
    };
    let (sc, mn) = get_scale_min_k4(j, scales);
    let d = f16_at(d) * f32::from(sc);
    Step {
        values: _mm256_or_si256(_mm256_and_si256(q, _mm256_set1_epi8(0x0F)), fifth),
        scale_lo: d,
        scale_hi: d,
        min: f16_at(dmin) * f32::from(mn),
    }
}

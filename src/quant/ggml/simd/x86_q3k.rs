//! AVX-512 / AVX2 kernel of Q3_K's reference quantization (`quantize_row_q3_K_ref`) for
//! whole super-blocks: `make_q3_quants` with one group per lane, [`K`] vectors of groups
//! interleaved (a lane's refinement is one long dependent chain; independent vectors hide
//! its latency), the super-block scales from the caller, then the final levels
//! `clamp(nearest_int(x/d), -4, 3) + 4`, one division per vector. Each lane performs the
//! scalar code's operations in its order, so the levels are bit-identical.

use super::super::common::GROUP_MAX_EPS;
use super::x86::{round, Avx2, Avx512, Lanes};
use super::Q3kScales;

/// Vectors of groups run together.
const K: usize = 4;
/// `make_q3_quants`'s `nmax` in Q3_K.
const NMAX: i32 = 4;
/// Values per group, and groups per super-block.
const G: usize = 16;
/// Values per super-block.
const QK_K: usize = 256;

// The decoder reads `hmask[32] qs[64] scales[12] d` blocks of 110 bytes.
const _: () = assert!(std::mem::size_of::<crate::formats::blocks::BlockQ3K>() == 110);

/// The levels (`0..=7`) of the super-blocks of `x` (all values finite), stored
/// `t[sb * 256 + i * 16 + group]`; `scales(sb, group scales)` stores a super-block's
/// scales and returns each group's `d`.
#[inline(always)]
unsafe fn q3k_ref<S: Lanes>(x: &[f32], t: &mut [u8], scales: Q3kScales<'_>) {
    let nsb = x.len() / QK_K;
    assert!(t.len() >= nsb * QK_K && G.is_multiple_of(S::N));
    let nvec = nsb * G / S::N;
    let zero = S::splat(0.0);
    let all = S::gt(S::splat(1.0), zero);
    let none = S::gt(zero, zero);
    let (lo, hi) = (S::splat(-NMAX as f32), S::splat((NMAX - 1) as f32));
    let (lo_i, hi_i) = (S::splat_i(-NMAX), S::splat_i(NMAX - 1));
    let mut offs = [0i32; 16];
    for (lane, o) in offs.iter_mut().enumerate() {
        *o = (lane * G) as i32;
    }
    let lane_off = S::load_i(&offs);
    for v0 in (0..nvec).step_by(K) {
        let kn = (nvec - v0).min(K);
        // Group g0 + lane of vector k, value i at xt[k * G + i].
        let mut xt = [zero; K * G];
        for (k, xk) in xt.chunks_exact_mut(G).enumerate().take(kn) {
            let mut idx = S::add_i(lane_off, S::splat_i(((v0 + k) * S::N * G) as i32));
            for xi in xk.iter_mut() {
                *xi = S::gather(x, idx, all);
                idx = S::add_i(idx, S::splat_i(1));
            }
        }
        // make_q3_quants(16, 4, x, L, true), lane by lane.
        let mut amax = [zero; K];
        let mut max = [zero; K];
        for i in 0..G {
            for k in 0..K {
                let x = xt[k * G + i];
                let ax = S::abs(x);
                let bigger = S::gt(ax, amax[k]);
                amax[k] = S::select(bigger, ax, amax[k]);
                max[k] = S::select(bigger, x, max[k]);
            }
        }
        let mut iscale = [zero; K];
        for k in 0..K {
            iscale[k] = S::div(S::splat(-NMAX as f32), max[k]);
        }
        let mut w = [zero; K * G];
        let mut wx = [zero; K * G];
        let mut l = [zero; K * G];
        let mut sumlx = [zero; K];
        let mut suml2 = [zero; K];
        for i in 0..G {
            for k in 0..K {
                let j = k * G + i;
                let x = xt[j];
                // |iscale*x| <= nmax + 1: the float rounding is exact.
                let li = S::min(S::max(round::<S>(S::mul(iscale[k], x)), lo), hi);
                let wi = S::mul(x, x);
                let wxi = S::mul(wi, x);
                sumlx[k] = S::add(sumlx[k], S::mul(wxi, li));
                suml2[k] = S::add(suml2[k], S::mul(S::mul(wi, li), li));
                (w[j], wx[j], l[j]) = (wi, wxi, li);
            }
        }
        // Padding vectors (past the last super-block) take no part.
        let mut active = [all; K];
        active[kn..].fill(none);
        for _itry in 0..5 {
            let mut changed = [none; K];
            // Vectors whose every lane has converged are skipped (their updates are off).
            let mut live = [false; K];
            for k in 0..K {
                live[k] = S::bits(active[k]) != 0;
            }
            for i in 0..G {
                for k in (0..K).filter(|&k| live[k]) {
                    let j = k * G + i;
                    let (x, wi, wxi, li) = (xt[j], w[j], wx[j], l[j]);
                    let slx = S::sub(sumlx[k], S::mul(wxi, li));
                    let sl2 = S::sub(suml2[k], S::mul(S::mul(wi, li), li));
                    // x*sl2/slx can be huge: the exact integer nearest_int.
                    let q = S::div(S::mul(x, sl2), slx);
                    let new_l = S::cvt_i(S::min_i(S::max_i(S::nearest_int(q), lo_i), hi_i));
                    let slx2 = S::add(slx, S::mul(wxi, new_l));
                    let sl22 = S::add(sl2, S::mul(S::mul(wi, new_l), new_l));
                    let better = S::gt(
                        S::mul(S::mul(slx2, slx2), suml2[k]),
                        S::mul(S::mul(sumlx[k], sumlx[k]), sl22),
                    );
                    let upd = S::and_m(
                        S::and_m(active[k], S::gt(slx, zero)),
                        S::and_m(S::ne(new_l, li), S::and_m(S::gt(sl22, zero), better)),
                    );
                    l[j] = S::select(upd, new_l, li);
                    sumlx[k] = S::select(upd, slx2, sumlx[k]);
                    suml2[k] = S::select(upd, sl22, suml2[k]);
                    changed[k] = S::or_m(changed[k], upd);
                }
            }
            let mut any = 0;
            for k in 0..K {
                active[k] = S::and_m(active[k], changed[k]);
                any |= S::bits(active[k]);
            }
            if any == 0 {
                break;
            }
        }
        // Group scales (0 for an all-zero group), then the caller's super-block scales.
        let mut is_zero = [none; K];
        let mut sc = [0.0f32; K * G];
        for k in 0..K {
            let s = S::select(S::gt(suml2[k], zero), S::div(sumlx[k], suml2[k]), zero);
            is_zero[k] = S::gt(S::splat(GROUP_MAX_EPS), amax[k]);
            S::store(S::select(is_zero[k], zero, s), &mut sc[k * S::N..]);
        }
        let mut d = [0.0f32; K * G];
        let sb0 = v0 * S::N / G;
        for (s, (ds, ss)) in d.chunks_exact_mut(G).zip(sc.chunks_exact(G)).enumerate() {
            if sb0 + s < nsb {
                ds.copy_from_slice(&scales(sb0 + s, ss.try_into().unwrap()));
            }
        }
        // Final levels: groups with d == 0 keep the search's (0 for an all-zero group).
        let four = S::splat_i(NMAX);
        for k in 0..kn {
            let dk = S::load(&d[k * S::N..]);
            let requant = S::ne(dk, zero);
            let g = (v0 + k) * S::N;
            let base = (g / G) * QK_K + g % G;
            for i in 0..G {
                let j = k * G + i;
                let q = S::min_i(S::max_i(S::nearest_int(S::div(xt[j], dk)), lo_i), hi_i);
                let searched =
                    S::select_i(is_zero[k], S::splat_i(0), S::add_i(S::cvtt(l[j]), four));
                let fin = S::select_i(requant, S::add_i(q, four), searched);
                S::store_low_bytes(fin, &mut t[base + i * G..]);
            }
        }
    }
}

/// AVX-512 entry of the Q3_K reference kernel.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn q3k_ref_avx512(x: &[f32], t: &mut [u8], scales: Q3kScales<'_>) {
    q3k_ref::<Avx512>(x, t, scales)
}

/// AVX2 entry of the Q3_K reference kernel.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q3k_ref_avx2(x: &[f32], t: &mut [u8], scales: Q3kScales<'_>) {
    q3k_ref::<Avx2>(x, t, scales)
}

/// Q3_K decoding of whole blocks (110 bytes to 256 values), as the scalar decoder: value
/// `128n + 32s + 16h + k` is `dl[8n + 2s + h]` times the level `(qs[32n + 16h + k] >> 2s) & 3`,
/// less 4 where bit `4n + s` of `hmask[16h + k]` is clear; `dl(block)` gives a block's 16
/// group scales.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn q3k_dequantize_avx512(src: &[u8], dst: &mut [f32], dl: super::Q3kDl) {
    use std::arch::x86_64::*;
    for (blk, y) in src.chunks_exact(110).zip(dst.chunks_exact_mut(QK_K)) {
        let d = dl(blk);
        let (hm, qs) = (&blk[..32], &blk[32..96]);
        let four = _mm512_set1_epi32(4);
        let three = _mm512_set1_epi32(3);
        for h in 0..2 {
            let hv = _mm512_cvtepu8_epi32(_mm_loadu_si128(hm[16 * h..].as_ptr().cast()));
            for n in 0..2 {
                let qv =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(qs[32 * n + 16 * h..].as_ptr().cast()));
                for s in 0..4 {
                    let q = _mm512_and_si512(
                        _mm512_srlv_epi32(qv, _mm512_set1_epi32(2 * s as i32)),
                        three,
                    );
                    let clear = _mm512_testn_epi32_mask(hv, _mm512_set1_epi32(1 << (4 * n + s)));
                    let v = _mm512_mask_sub_epi32(q, clear, q, four);
                    let dv = _mm512_set1_ps(d[8 * n + 2 * s + h]);
                    let out = _mm512_mul_ps(dv, _mm512_cvtepi32_ps(v));
                    _mm512_storeu_ps(y[128 * n + 32 * s + 16 * h..].as_mut_ptr(), out);
                }
            }
        }
    }
}

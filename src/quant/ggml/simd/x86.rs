//! AVX-512 and AVX2 kernels, written once against the small [`Lanes`] trait.

use std::arch::x86_64::*;

use super::super::common::write_fp16;
use super::super::common::{Qkx, QkxParams, GROUP_MAX_EPS};
use super::super::iq4nl::{IQ4NL_MID2, KVALUES_IQ4NL};
use super::{Iq1mSums, LegacyRef, LegacyRefScalar, LegacyScalar, QkxOut, QxOut, MAX_LANES, MAX_N};

/// `12582912.f`, ggml's rounding constant: `(v + M) - M` rounds `v` to the nearest
/// integer (ties to even) for `|v| <= 2^22`, exactly like `nearest_int`.
const MAGIC: f32 = 12_582_912.0;

/// Largest `|v|` for which the `MAGIC` rounding equals `nearest_int`.
const ROUND_LIMIT: f32 = 4_194_303.0;

/// The vector operations the kernels need. All float ops are plain IEEE ops,
/// lane by lane, so a lane computes exactly what the scalar code computes.
pub(super) trait Lanes {
    /// Lanes per vector.
    const N: usize;
    /// f32 vector.
    type V: Copy;
    /// i32 vector.
    type I: Copy;
    /// Comparison mask.
    type M: Copy;
    /// 16-entry f32 lookup table.
    type T: Copy;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(s: &[f32]) -> Self::V;
    unsafe fn store(v: Self::V, s: &mut [f32]);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a < b ? a : b` (x86 `minps`).
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// `a > b ? a : b` (x86 `maxps`).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    /// `a > b` (false for NaN).
    unsafe fn gt(a: Self::V, b: Self::V) -> Self::M;
    /// `a >= b` (false for NaN).
    unsafe fn ge(a: Self::V, b: Self::V) -> Self::M;
    /// `a != b` (true for NaN).
    unsafe fn ne(a: Self::V, b: Self::V) -> Self::M;
    /// `m ? t : f`.
    unsafe fn select(m: Self::M, t: Self::V, f: Self::V) -> Self::V;
    unsafe fn splat_i(x: i32) -> Self::I;
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn store_i(v: Self::I, s: &mut [i32]);
    unsafe fn load_i(s: &[i32]) -> Self::I;
    /// Mask of the first `N` flags.
    unsafe fn mask_from(on: &[bool]) -> Self::M;
    /// `m ? base[idx] : 0.0` per lane (masked-off lanes read nothing).
    unsafe fn gather(base: &[f32], idx: Self::I, m: Self::M) -> Self::V;
    /// `m ? t : f` on integers.
    unsafe fn select_i(m: Self::M, t: Self::I, f: Self::I) -> Self::I;
    unsafe fn table(t: &[f32; 16]) -> Self::T;
    /// `t[idx]` for `idx` in `0..16`.
    unsafe fn lookup(t: Self::T, idx: Self::I) -> Self::V;
    /// ggml's `nearest_int` (magic-number trick, same garbage outside its range).
    unsafe fn nearest_int(v: Self::V) -> Self::I;
    unsafe fn max_i(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn min_i(a: Self::I, b: Self::I) -> Self::I;
    /// Integer to float conversion.
    unsafe fn cvt_i(a: Self::I) -> Self::V;
    unsafe fn and_m(a: Self::M, b: Self::M) -> Self::M;
    unsafe fn or_m(a: Self::M, b: Self::M) -> Self::M;
    /// Mask bits, lane 0 in bit 0.
    unsafe fn bits(m: Self::M) -> u32;
    /// Largest lane (NaN-free input).
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// Smallest lane (NaN-free input).
    unsafe fn reduce_min(v: Self::V) -> f32;
    /// Rounds toward zero (stays a float).
    unsafe fn trunc(v: Self::V) -> Self::V;
    /// C's `(int)v` as x86 computes it: truncation, `i32::MIN` for NaN or out of range
    /// (= [`super::super::common::c_trunc_i32`]).
    unsafe fn cvtt(v: Self::V) -> Self::I;
    unsafe fn sub_i(a: Self::I, b: Self::I) -> Self::I;
    /// `v as i8 as i32` per lane (the low byte, sign-extended).
    unsafe fn sext8(v: Self::I) -> Self::I;
    /// Stores the low byte of each lane (`v as u8`) into `out[..N]`.
    unsafe fn store_low_bytes(v: Self::I, out: &mut [u8]);
}

/// 16 lanes of AVX-512F.
pub(super) struct Avx512;

impl Lanes for Avx512 {
    const N: usize = 16;
    type V = __m512;
    type I = __m512i;
    type M = __mmask16;
    type T = __m512;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(s: &[f32]) -> __m512 {
        debug_assert!(s.len() >= 16);
        _mm512_loadu_ps(s.as_ptr())
    }
    #[inline(always)]
    unsafe fn store(v: __m512, s: &mut [f32]) {
        debug_assert!(s.len() >= 16);
        _mm512_storeu_ps(s.as_mut_ptr(), v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn abs(a: __m512) -> __m512 {
        _mm512_abs_ps(a)
    }
    #[inline(always)]
    unsafe fn gt(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn ge(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn ne(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(a, b)
    }
    #[inline(always)]
    unsafe fn select(m: __mmask16, t: __m512, f: __m512) -> __m512 {
        _mm512_mask_blend_ps(m, f, t)
    }
    #[inline(always)]
    unsafe fn splat_i(x: i32) -> __m512i {
        _mm512_set1_epi32(x)
    }
    #[inline(always)]
    unsafe fn add_i(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn store_i(v: __m512i, s: &mut [i32]) {
        debug_assert!(s.len() >= 16);
        _mm512_storeu_si512(s.as_mut_ptr().cast(), v)
    }
    #[inline(always)]
    unsafe fn load_i(s: &[i32]) -> __m512i {
        debug_assert!(s.len() >= 16);
        _mm512_loadu_si512(s.as_ptr().cast())
    }
    #[inline(always)]
    unsafe fn mask_from(on: &[bool]) -> __mmask16 {
        on[..16]
            .iter()
            .enumerate()
            .fold(0u16, |m, (i, &b)| m | ((b as u16) << i))
    }
    #[inline(always)]
    unsafe fn gather(base: &[f32], idx: __m512i, m: __mmask16) -> __m512 {
        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m, idx, base.as_ptr().cast())
    }
    #[inline(always)]
    unsafe fn select_i(m: __mmask16, t: __m512i, f: __m512i) -> __m512i {
        _mm512_mask_blend_epi32(m, f, t)
    }
    #[inline(always)]
    unsafe fn table(t: &[f32; 16]) -> __m512 {
        _mm512_loadu_ps(t.as_ptr())
    }
    #[inline(always)]
    unsafe fn lookup(t: __m512, idx: __m512i) -> __m512 {
        _mm512_permutexvar_ps(idx, t)
    }
    #[inline(always)]
    unsafe fn nearest_int(v: __m512) -> __m512i {
        let b = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(MAGIC)));
        _mm512_sub_epi32(
            _mm512_and_si512(b, _mm512_set1_epi32(0x007f_ffff)),
            _mm512_set1_epi32(0x0040_0000),
        )
    }
    #[inline(always)]
    unsafe fn max_i(a: __m512i, b: __m512i) -> __m512i {
        _mm512_max_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn min_i(a: __m512i, b: __m512i) -> __m512i {
        _mm512_min_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn cvt_i(a: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn and_m(a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    unsafe fn or_m(a: __mmask16, b: __mmask16) -> __mmask16 {
        a | b
    }
    #[inline(always)]
    unsafe fn bits(m: __mmask16) -> u32 {
        m as u32
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m512) -> f32 {
        _mm512_reduce_max_ps(v)
    }
    #[inline(always)]
    unsafe fn reduce_min(v: __m512) -> f32 {
        _mm512_reduce_min_ps(v)
    }
    #[inline(always)]
    unsafe fn trunc(v: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v)
    }
    #[inline(always)]
    unsafe fn cvtt(v: __m512) -> __m512i {
        _mm512_cvttps_epi32(v)
    }
    #[inline(always)]
    unsafe fn sub_i(a: __m512i, b: __m512i) -> __m512i {
        _mm512_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sext8(v: __m512i) -> __m512i {
        _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(v))
    }
    #[inline(always)]
    unsafe fn store_low_bytes(v: __m512i, out: &mut [u8]) {
        debug_assert!(out.len() >= 16);
        _mm_storeu_si128(out.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v))
    }
}

/// 8 lanes of AVX2.
pub(super) struct Avx2;

impl Lanes for Avx2 {
    const N: usize = 8;
    type V = __m256;
    type I = __m256i;
    type M = __m256;
    type T = (__m256, __m256);
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(s: &[f32]) -> __m256 {
        debug_assert!(s.len() >= 8);
        _mm256_loadu_ps(s.as_ptr())
    }
    #[inline(always)]
    unsafe fn store(v: __m256, s: &mut [f32]) {
        debug_assert!(s.len() >= 8);
        _mm256_storeu_ps(s.as_mut_ptr(), v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn abs(a: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), a)
    }
    #[inline(always)]
    unsafe fn gt(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_GT_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn ge(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_GE_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn ne(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_NEQ_UQ>(a, b)
    }
    #[inline(always)]
    unsafe fn select(m: __m256, t: __m256, f: __m256) -> __m256 {
        _mm256_blendv_ps(f, t, m)
    }
    #[inline(always)]
    unsafe fn splat_i(x: i32) -> __m256i {
        _mm256_set1_epi32(x)
    }
    #[inline(always)]
    unsafe fn add_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn store_i(v: __m256i, s: &mut [i32]) {
        debug_assert!(s.len() >= 8);
        _mm256_storeu_si256(s.as_mut_ptr().cast(), v)
    }
    #[inline(always)]
    unsafe fn load_i(s: &[i32]) -> __m256i {
        debug_assert!(s.len() >= 8);
        _mm256_loadu_si256(s.as_ptr().cast())
    }
    #[inline(always)]
    unsafe fn mask_from(on: &[bool]) -> __m256 {
        let mut m = [0i32; 8];
        for (o, &b) in m.iter_mut().zip(&on[..8]) {
            *o = -(b as i32);
        }
        _mm256_castsi256_ps(_mm256_loadu_si256(m.as_ptr().cast()))
    }
    #[inline(always)]
    unsafe fn gather(base: &[f32], idx: __m256i, m: __m256) -> __m256 {
        _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), base.as_ptr().cast(), idx, m)
    }
    #[inline(always)]
    unsafe fn select_i(m: __m256, t: __m256i, f: __m256i) -> __m256i {
        _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(f),
            _mm256_castsi256_ps(t),
            m,
        ))
    }
    #[inline(always)]
    unsafe fn table(t: &[f32; 16]) -> (__m256, __m256) {
        (
            _mm256_loadu_ps(t.as_ptr()),
            _mm256_loadu_ps(t[8..].as_ptr()),
        )
    }
    #[inline(always)]
    unsafe fn lookup(t: (__m256, __m256), idx: __m256i) -> __m256 {
        let lo = _mm256_permutevar8x32_ps(t.0, idx);
        let hi = _mm256_permutevar8x32_ps(t.1, idx);
        let upper = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7));
        _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(upper))
    }
    #[inline(always)]
    unsafe fn nearest_int(v: __m256) -> __m256i {
        let b = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(MAGIC)));
        _mm256_sub_epi32(
            _mm256_and_si256(b, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x0040_0000),
        )
    }
    #[inline(always)]
    unsafe fn max_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_max_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn min_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_min_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn cvt_i(a: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn and_m(a: __m256, b: __m256) -> __m256 {
        _mm256_and_ps(a, b)
    }
    #[inline(always)]
    unsafe fn or_m(a: __m256, b: __m256) -> __m256 {
        _mm256_or_ps(a, b)
    }
    #[inline(always)]
    unsafe fn bits(m: __m256) -> u32 {
        _mm256_movemask_ps(m) as u32
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ps(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }
    #[inline(always)]
    unsafe fn reduce_min(v: __m256) -> f32 {
        let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_min_ps(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }
    #[inline(always)]
    unsafe fn trunc(v: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v)
    }
    #[inline(always)]
    unsafe fn cvtt(v: __m256) -> __m256i {
        _mm256_cvttps_epi32(v)
    }
    #[inline(always)]
    unsafe fn sub_i(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sext8(v: __m256i) -> __m256i {
        _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(v))
    }
    #[inline(always)]
    unsafe fn store_low_bytes(v: __m256i, out: &mut [u8]) {
        debug_assert!(out.len() >= 8);
        // Masked to 0..=255, the unsigned saturating packs keep every byte as it is.
        let m = _mm256_and_si256(v, _mm256_set1_epi32(0xff));
        let p = _mm256_packus_epi16(_mm256_packus_epi32(m, m), _mm256_setzero_si256());
        let r = _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
        _mm_storel_epi64(out.as_mut_ptr().cast(), r)
    }
}

/// Round to nearest, ties to even (valid for `|v| <= 2^22`).
#[inline(always)]
pub(super) unsafe fn round<S: Lanes>(v: S::V) -> S::V {
    let m = S::splat(MAGIC);
    S::sub(S::add(v, m), m)
}

/// `sum w*x*l` and `sum w*l*l` of one `make_qx_quants` candidate per lane.
#[inline(always)]
unsafe fn qx_sums<S: Lanes>(
    iscale: S::V,
    xt: &[f32],
    wt: &[f32],
    wx: &[S::V],
    lo: S::V,
    hi: S::V,
) -> (S::V, S::V) {
    let mut slx = S::splat(0.0);
    let mut sl2 = S::splat(0.0);
    for (i, wxi) in wx.iter().enumerate() {
        let x = S::load(&xt[i * S::N..]);
        let w = S::load(&wt[i * S::N..]);
        let l = S::min(S::max(round::<S>(S::mul(iscale, x)), lo), hi);
        slx = S::add(slx, S::mul(*wxi, l));
        sl2 = S::add(sl2, S::mul(S::mul(w, l), l));
    }
    (slx, sl2)
}

/// One qkx error term per lane: `w * |s*l + m - x|` or `w * (s*l + m - x)^2`.
#[inline(always)]
unsafe fn qkx_err<S: Lanes>(mad: bool, scale: S::V, l: S::V, min: S::V, x: S::V, w: S::V) -> S::V {
    let diff = S::sub(S::add(S::mul(scale, l), min), x);
    let diff = if mad {
        S::abs(diff)
    } else {
        S::mul(diff, diff)
    };
    S::mul(w, diff)
}

/// `make_qx_quants` (rmse_type 1) for one group per lane; data is `[i][lane]`.
#[inline(always)]
unsafe fn qx_group<S: Lanes>(nmax: i32, n: usize, xt: &[f32], wt: &[f32], o: &mut QxOut) {
    debug_assert!(n <= MAX_N && xt.len() >= n * S::N);
    let zero = S::splat(0.0);
    let lo = S::splat(-nmax as f32);
    let hi = S::splat((nmax - 1) as f32);
    let mut amax = zero;
    let mut max = zero;
    let mut wx = [S::splat(0.0); MAX_N];
    for i in 0..n {
        let x = S::load(&xt[i * S::N..]);
        let ax = S::abs(x);
        let bigger = S::gt(ax, amax);
        amax = S::select(bigger, ax, amax);
        max = S::select(bigger, x, max);
        wx[i] = S::mul(S::load(&wt[i * S::N..]), x);
    }
    let wx = &wx[..n];
    let mut best_iscale = S::div(S::splat(-nmax as f32), max);
    let (slx, sl2) = qx_sums::<S>(best_iscale, xt, wt, wx, lo, hi);
    let mut scale = S::select(S::ne(sl2, zero), S::div(slx, sl2), zero);
    let mut best = S::mul(scale, slx);
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = S::div(S::splat(-(nmax as f32 + 0.1 * is as f32)), max);
        let (slx, sl2) = qx_sums::<S>(iscale, xt, wt, wx, lo, hi);
        // suml2 > 0 && sumlx*sumlx > best*suml2 (a NaN right side is never smaller).
        let rhs = S::select(S::gt(sl2, zero), S::mul(best, sl2), S::splat(f32::NAN));
        let win = S::gt(S::mul(slx, slx), rhs);
        let new_scale = S::div(slx, sl2);
        best = S::select(win, S::mul(new_scale, slx), best);
        scale = S::select(win, new_scale, scale);
        best_iscale = S::select(win, iscale, best_iscale);
    }
    let is_zero = S::gt(S::splat(GROUP_MAX_EPS), amax);
    S::store(scale, &mut o.scale[..]);
    S::store(best_iscale, &mut o.iscale[..]);
    S::store(S::select(is_zero, S::splat(1.0), zero), &mut o.zero[..]);
}

/// Gather groups `g0 + lane` (of `n` values) of `x` and `w` into `[i][lane]`
/// order; lanes not `usable` get zeros and are never read.
#[inline(always)]
unsafe fn transpose<S: Lanes>(
    n: usize,
    g0: usize,
    x: &[f32],
    w: &[f32],
    usable: &[bool; MAX_LANES],
    xt: &mut [f32],
    wt: &mut [f32],
) {
    let mut offs = [0i32; MAX_LANES];
    for (lane, o) in offs.iter_mut().enumerate() {
        *o = if usable[lane] {
            ((g0 + lane) * n) as i32
        } else {
            0
        };
    }
    let m = S::mask_from(usable);
    let mut idx = S::load_i(&offs);
    let one = S::splat_i(1);
    for i in 0..n {
        S::store(S::gather(x, idx, m), &mut xt[i * S::N..]);
        S::store(S::gather(w, idx, m), &mut wt[i * S::N..]);
        idx = S::add_i(idx, one);
    }
}

/// Sums of squares of groups `g0 + lane` (of `n` values), each in index order.
#[inline(always)]
unsafe fn sum_sq_groups<S: Lanes>(
    x: &[f32],
    n: usize,
    g0: usize,
    on: &[bool; MAX_LANES],
    out: &mut [f32],
) {
    let mut offs = [0i32; MAX_LANES];
    for (lane, o) in offs.iter_mut().enumerate() {
        *o = if on[lane] {
            ((g0 + lane) * n) as i32
        } else {
            0
        };
    }
    let m = S::mask_from(on);
    let mut idx = S::load_i(&offs);
    let one = S::splat_i(1);
    let mut acc = S::splat(0.0);
    for _ in 0..n {
        let v = S::gather(x, idx, m);
        acc = S::add(acc, S::mul(v, v));
        idx = S::add_i(idx, one);
    }
    S::store(acc, out);
}

/// `make_qkx2_quants` / `make_qkx3_quants` for one group per lane; data is `[i][lane]`.
#[inline(always)]
unsafe fn qkx_group<S: Lanes>(p: &QkxParams, n: usize, xt: &[f32], wt: &[f32], o: &mut QkxOut) {
    debug_assert!((1..=MAX_N).contains(&n) && xt.len() >= n * S::N);
    let zero = S::splat(0.0);
    let one = S::splat(1.0);
    let nmaxv = S::splat(p.nmax as f32);
    let limit = S::splat(ROUND_LIMIT);
    let x0 = S::load(xt);
    let mut xmin = x0;
    let mut max = x0;
    let mut sum_w = S::load(wt);
    let mut sum_x = S::mul(sum_w, x0);
    for i in 1..n {
        let x = S::load(&xt[i * S::N..]);
        let w = S::load(&wt[i * S::N..]);
        xmin = S::min(x, xmin);
        max = S::max(x, max);
        sum_w = S::add(sum_w, w);
        sum_x = S::add(sum_x, S::mul(w, x));
    }
    let min0 = S::select(S::gt(xmin, zero), zero, xmin);
    let range0 = S::sub(max, min0);
    let iscale0 = S::div(nmaxv, range0);
    let scale0 = S::div(one, iscale0);
    // The initial guess rounds the qkx2 way: needs |iscale0*(x - min0)| small.
    let mut bad = S::select(S::ge(limit, S::mul(S::abs(iscale0), range0)), zero, one);
    let mut best = zero;
    for i in 0..n {
        let x = S::load(&xt[i * S::N..]);
        let t = S::min(S::max(S::mul(iscale0, S::sub(x, min0)), zero), nmaxv);
        best = S::add(
            best,
            qkx_err::<S>(
                p.use_mad,
                scale0,
                round::<S>(t),
                min0,
                x,
                S::load(&wt[i * S::N..]),
            ),
        );
    }
    let mut scale = scale0;
    let mut min = min0;
    let mut win_is = S::splat(-1.0);
    let mut win_min = min0;
    let mut levels = [S::splat(0.0); MAX_N];
    for is in 0..=p.nstep {
        let range = S::sub(max, min);
        let num = p.rmin + p.rdelta * is as f32 + p.nmax as f32;
        let iscale = S::div(S::splat(num), range);
        if p.variant == Qkx::V2 {
            // |x - min| <= max(max - min, min - min(x)), so |iscale*(x - min)| is
            // bounded by |iscale| times that.
            let bound = S::mul(S::abs(iscale), S::max(range, S::sub(min, xmin)));
            bad = S::select(S::ge(limit, bound), bad, one);
        }
        let mut s_l = zero;
        let mut s_l2 = zero;
        let mut s_xl = zero;
        for (i, lv) in levels.iter_mut().enumerate().take(n) {
            let x = S::load(&xt[i * S::N..]);
            let w = S::load(&wt[i * S::N..]);
            let v = S::mul(iscale, S::sub(x, min));
            // qkx3: v > 0 ? nearest_int(MIN(v, nmax)) : 0; qkx2 (v in range):
            // clamp(nearest_int(v), 0, nmax). Both are this.
            let l = round::<S>(S::min(S::max(v, zero), nmaxv));
            *lv = l;
            let wl = S::mul(w, l);
            s_l = S::add(s_l, wl);
            s_l2 = S::add(s_l2, S::mul(wl, l));
            s_xl = S::add(s_xl, S::mul(wl, x));
        }
        let d = S::sub(S::mul(sum_w, s_l2), S::mul(s_l, s_l));
        let this_scale = S::div(S::sub(S::mul(sum_w, s_xl), S::mul(sum_x, s_l)), d);
        let this_min = S::div(S::sub(S::mul(s_l2, sum_x), S::mul(s_l, s_xl)), d);
        let pos = S::gt(this_min, zero);
        let this_min = S::select(pos, zero, this_min);
        let this_scale = S::select(pos, S::div(s_xl, s_l2), this_scale);
        let mut err = zero;
        for (i, lv) in levels.iter().enumerate().take(n) {
            let (x, w) = (S::load(&xt[i * S::N..]), S::load(&wt[i * S::N..]));
            let t = qkx_err::<S>(p.use_mad, this_scale, *lv, this_min, x, w);
            err = S::add(err, t);
        }
        // D > 0 && cur_error < best_error
        let err_valid = S::select(S::gt(d, zero), err, S::splat(f32::NAN));
        let win = S::gt(best, err_valid);
        best = S::select(win, err, best);
        scale = S::select(win, this_scale, scale);
        win_min = S::select(win, min, win_min);
        win_is = S::select(win, S::splat(is as f32), win_is);
        min = S::select(win, this_min, min);
    }
    S::store(max, &mut o.max[..]);
    S::store(min0, &mut o.min0[..]);
    S::store(iscale0, &mut o.iscale0[..]);
    S::store(scale, &mut o.scale[..]);
    S::store(min, &mut o.min[..]);
    S::store(win_is, &mut o.win_is[..]);
    S::store(win_min, &mut o.win_min[..]);
    S::store(bad, &mut o.bad[..]);
}

/// `t[j] = val[j-1] + val[j]` for `j = 1..16` (`t[0]` unused).
#[inline(always)]
fn iq4nl_mids() -> [f32; 16] {
    let mut mids = [0.0f32; 16];
    mids[1..].copy_from_slice(&IQ4NL_MID2);
    mids
}

/// `best_index_int8` of the IQ4_NL table for `v` per lane (branch-free binary
/// search on the doubled midpoints; steps are splats of 8, 4, 2, 1).
#[inline(always)]
unsafe fn iq4nl_index<S: Lanes>(v: S::V, tm: S::T, steps: &[S::I; 4]) -> S::I {
    let x2 = S::add(v, v);
    let mut idx = S::splat_i(0);
    for &st in steps {
        let j = S::add_i(idx, st);
        idx = S::select_i(S::ge(x2, S::lookup(tm, j)), j, idx);
    }
    idx
}

/// IQ4_NL levels of `id * x[j]` for a whole block.
#[inline(always)]
unsafe fn iq4nl_levels<S: Lanes>(x: &[f32; 32], id: f32, out: &mut [u8; 32]) {
    let tm = S::table(&iq4nl_mids());
    let steps = [S::splat_i(8), S::splat_i(4), S::splat_i(2), S::splat_i(1)];
    let idv = S::splat(id);
    let mut idx = [0i32; 16];
    for c in (0..32).step_by(S::N) {
        S::store_i(
            iq4nl_index::<S>(S::mul(idv, S::load(&x[c..])), tm, &steps),
            &mut idx,
        );
        for (o, &v) in out[c..c + S::N].iter_mut().zip(&idx) {
            *o = v as u8;
        }
    }
}

/// IQ4_NL candidate sums, `K` vectors of candidates (16 in total).
#[inline(always)]
unsafe fn iq4nl_kernel<S: Lanes, const K: usize>(
    x: &[f32],
    w: &[f32],
    ids: &[f32; 16],
    sumqx: &mut [f32; 16],
    sumq2: &mut [f32; 16],
) {
    let vals = KVALUES_IQ4NL.map(|v| v as f32);
    let tv = S::table(&vals);
    let tm = S::table(&iq4nl_mids());
    let zero = S::splat(0.0);
    let mut idv = [zero; K];
    for (k, v) in idv.iter_mut().enumerate() {
        *v = S::load(&ids[k * S::N..]);
    }
    let mut sqx = [zero; K];
    let mut sq2 = [zero; K];
    let steps = [S::splat_i(8), S::splat_i(4), S::splat_i(2), S::splat_i(1)];
    for (&xi, &wi) in x.iter().zip(w) {
        let xv = S::splat(xi);
        let wv = S::splat(wi);
        for k in 0..K {
            let v = S::mul(idv[k], xv);
            let q = S::lookup(tv, iq4nl_index::<S>(v, tm, &steps));
            let wq = S::mul(wv, q);
            sqx[k] = S::add(sqx[k], S::mul(wq, xv));
            sq2[k] = S::add(sq2[k], S::mul(wq, q));
        }
    }
    for k in 0..K {
        S::store(sqx[k], &mut sumqx[k * S::N..]);
        S::store(sq2[k], &mut sumq2[k * S::N..]);
    }
}

/// AVX-512 entry of the `make_qx_quants` group kernel.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn qx_group_avx512(nmax: i32, n: usize, xt: &[f32], wt: &[f32], o: &mut QxOut) {
    qx_group::<Avx512>(nmax, n, xt, wt, o)
}

/// AVX2 entry of the `make_qx_quants` group kernel.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn qx_group_avx2(nmax: i32, n: usize, xt: &[f32], wt: &[f32], o: &mut QxOut) {
    qx_group::<Avx2>(nmax, n, xt, wt, o)
}

/// AVX-512 entry of the group transposition.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_avx512(
    n: usize,
    g0: usize,
    x: &[f32],
    w: &[f32],
    usable: &[bool; MAX_LANES],
    xt: &mut [f32],
    wt: &mut [f32],
) {
    transpose::<Avx512>(n, g0, x, w, usable, xt, wt)
}

/// AVX2 entry of the group transposition.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose_avx2(
    n: usize,
    g0: usize,
    x: &[f32],
    w: &[f32],
    usable: &[bool; MAX_LANES],
    xt: &mut [f32],
    wt: &mut [f32],
) {
    transpose::<Avx2>(n, g0, x, w, usable, xt, wt)
}

/// AVX-512 entry of the grouped sums of squares.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sum_sq_groups_avx512(
    x: &[f32],
    n: usize,
    g0: usize,
    on: &[bool; MAX_LANES],
    out: &mut [f32],
) {
    sum_sq_groups::<Avx512>(x, n, g0, on, out)
}

/// AVX2 entry of the grouped sums of squares.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sum_sq_groups_avx2(
    x: &[f32],
    n: usize,
    g0: usize,
    on: &[bool; MAX_LANES],
    out: &mut [f32],
) {
    sum_sq_groups::<Avx2>(x, n, g0, on, out)
}

/// AVX-512 entry of the qkx group kernel.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn qkx_group_avx512(
    p: &QkxParams,
    n: usize,
    xt: &[f32],
    wt: &[f32],
    o: &mut QkxOut,
) {
    qkx_group::<Avx512>(p, n, xt, wt, o)
}

/// AVX2 entry of the qkx group kernel.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn qkx_group_avx2(
    p: &QkxParams,
    n: usize,
    xt: &[f32],
    wt: &[f32],
    o: &mut QkxOut,
) {
    qkx_group::<Avx2>(p, n, xt, wt, o)
}

/// Largest `|x|` (NaN ignored, as the scalar `ax > amax` loop does) and the first
/// value attaining it (`0.0` when the largest is `0.0`).
#[inline(always)]
unsafe fn abs_max<S: Lanes>(x: &[f32]) -> (f32, f32) {
    let mut acc = S::splat(0.0);
    for c in (0..x.len()).step_by(S::N) {
        acc = S::max(S::abs(S::load(&x[c..])), acc);
    }
    let amax = S::reduce_max(acc);
    if amax.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return (amax, 0.0);
    }
    let target = S::splat(amax);
    for c in (0..x.len()).step_by(S::N) {
        let v = S::load(&x[c..]);
        let hit = S::bits(S::ge(S::abs(v), target));
        if hit != 0 {
            return (amax, x[c + hit.trailing_zeros() as usize]);
        }
    }
    (amax, 0.0)
}

/// AVX-512 entry of [`abs_max`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn abs_max_avx512(x: &[f32]) -> (f32, f32) {
    abs_max::<Avx512>(x)
}

/// AVX2 entry of [`abs_max`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn abs_max_avx2(x: &[f32]) -> (f32, f32) {
    abs_max::<Avx2>(x)
}

/// AVX-512 entry of the IQ4_NL levels.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn iq4nl_levels_avx512(x: &[f32; 32], id: f32, out: &mut [u8; 32]) {
    iq4nl_levels::<Avx512>(x, id, out)
}

/// AVX2 entry of the IQ4_NL levels.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn iq4nl_levels_avx2(x: &[f32; 32], id: f32, out: &mut [u8; 32]) {
    iq4nl_levels::<Avx2>(x, id, out)
}

/// AVX-512 entry of the IQ4_NL sums.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn iq4nl_sums_avx512(
    x: &[f32],
    w: &[f32],
    ids: &[f32; 16],
    sumqx: &mut [f32; 16],
    sumq2: &mut [f32; 16],
) {
    iq4nl_kernel::<Avx512, 1>(x, w, ids, sumqx, sumq2)
}

/// AVX2 entry of the IQ4_NL sums.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn iq4nl_sums_avx2(
    x: &[f32],
    w: &[f32],
    ids: &[f32; 16],
    sumqx: &mut [f32; 16],
    sumq2: &mut [f32; 16],
) {
    iq4nl_kernel::<Avx2, 2>(x, w, ids, sumqx, sumq2)
}

/// C's `(int)roundf(v)` per lane ([`super::super::common::c_round_i32`]): half away
/// from zero, `i32::MIN` for NaN or out of range (there `v - trunc(v)` is 0 or NaN).
#[inline(always)]
unsafe fn c_round<S: Lanes>(v: S::V) -> S::I {
    let frac = S::sub(v, S::trunc(v));
    let (one, zero) = (S::splat_i(1), S::splat_i(0));
    let up = S::select_i(S::ge(frac, S::splat(0.5)), one, zero);
    let down = S::select_i(S::ge(S::splat(-0.5), frac), one, zero);
    S::sub_i(S::add_i(S::cvtt(v), up), down)
}

/// `clamp((int)roundf(x[j] * id) + 1, lo, hi)` per value, its low byte into `out[j]`
/// (`x.len()` a multiple of `S::N`). Exact for every input, NaN and infinities included
/// ([`c_round`] gives `i32::MIN` there, as the scalar code does).
#[inline(always)]
unsafe fn offset_levels<S: Lanes>(x: &[f32], id: f32, lo: i32, hi: i32, out: &mut [u8]) {
    let (vid, one) = (S::splat(id), S::splat_i(1));
    let (vlo, vhi) = (S::splat_i(lo), S::splat_i(hi));
    for c in (0..x.len()).step_by(S::N) {
        let q = S::add_i(c_round::<S>(S::mul(S::load(&x[c..]), vid)), one);
        S::store_low_bytes(S::min_i(S::max_i(q, vlo), vhi), &mut out[c..]);
    }
}

/// AVX-512 entry of [`offset_levels`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn offset_levels_avx512(x: &[f32], id: f32, lo: i32, hi: i32, out: &mut [u8]) {
    offset_levels::<Avx512>(x, id, lo, hi, out)
}

/// AVX2 entry of [`offset_levels`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn offset_levels_avx2(x: &[f32], id: f32, lo: i32, hi: i32, out: &mut [u8]) {
    offset_levels::<Avx2>(x, id, lo, hi, out)
}

/// `quantize_row_q8_0_ref` over whole blocks (`x.len() / 32` of them, 34 bytes each in
/// `dst`); blocks with a non-finite value go to `scalar`.
#[inline(always)]
unsafe fn q8_0_row<S: Lanes>(x: &[f32], dst: &mut [u8], scalar: LegacyScalar) {
    for (xb, yb) in x.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        if !super::all_finite(xb) {
            scalar(xb, yb);
            continue;
        }
        let mut acc = S::splat(0.0);
        for c in (0..32).step_by(S::N) {
            acc = S::max(S::abs(S::load(&xb[c..])), acc);
        }
        // Finite values: the maximum does not depend on the order.
        let d = S::reduce_max(acc) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        write_fp16(yb, 0, d);
        let vid = S::splat(id);
        for c in (0..32).step_by(S::N) {
            let q = c_round::<S>(S::mul(S::load(&xb[c..]), vid));
            S::store_low_bytes(q, &mut yb[2 + c..]);
        }
    }
}

/// The reference levels of Q4_0/Q5_0 (`half` 8/16) or Q4_1/Q5_1 (`min`: `nmax` 15/31)
/// over whole blocks: levels into `l` (32 per block), scales into `d`, mins into `m`.
/// Blocks the lanes cannot reproduce (a non-finite value; for `_1` types a min or max
/// of zero, whose sign depends on the order) go to `scalar`.
#[inline(always)]
unsafe fn legacy_ref<S: Lanes>(
    k: LegacyRef,
    x: &[f32],
    l: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
    scalar: LegacyRefScalar<'_>,
) {
    if !k.with_min {
        m.fill(0.0);
        return legacy_ref_symmetric::<S>((k.nmax + 1) / 2, x, l, d, scalar);
    }
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let lb: &mut [u8; 32] = (&mut l[b * 32..(b + 1) * 32]).try_into().unwrap();
        if !super::all_finite(xb) {
            (d[b], m[b]) = scalar(xb, lb);
            continue;
        }
        {
            let (mut lo, mut hi) = (S::splat(f32::MAX), S::splat(-f32::MAX));
            for c in (0..32).step_by(S::N) {
                let v = S::load(&xb[c..]);
                lo = S::min(v, lo);
                hi = S::max(v, hi);
            }
            let (min, max) = (S::reduce_min(lo), S::reduce_max(hi));
            if min == 0.0 || max == 0.0 {
                (d[b], m[b]) = scalar(xb, lb);
                continue;
            }
            let db = (max - min) / k.nmax as f32;
            let id = if db != 0.0 { 1.0 / db } else { 0.0 };
            let (vid, vmin, half) = (S::splat(id), S::splat(min), S::splat(0.5));
            let top = S::splat_i(k.nmax);
            for c in (0..32).step_by(S::N) {
                let v = S::mul(S::sub(S::load(&xb[c..]), vmin), vid);
                let t = S::cvtt(S::add(v, half));
                // Q4_1: MIN(15, (int8_t)t); Q5_1: (uint8_t)t.
                let t = if k.nmax == 15 {
                    S::min_i(S::sext8(t), top)
                } else {
                    t
                };
                S::store_low_bytes(t, &mut lb[c..]);
            }
            (d[b], m[b]) = (db, min);
        }
    }
}

/// The symmetric half of [`legacy_ref`] (Q4_0 / Q5_0): the first value of largest
/// magnitude of each block without branches, `d = max / -half` and its inverse for all
/// blocks at once, then the levels `MIN(2*half - 1, (int8_t)(x*id + half + 0.5))`.
#[inline(always)]
unsafe fn legacy_ref_symmetric<S: Lanes>(
    half: i32,
    x: &[f32],
    l: &mut [u8],
    d: &mut [f32],
    scalar: LegacyRefScalar<'_>,
) {
    const MAX_BLOCKS: usize = 16;
    let nv = 32 / S::N;
    let finite_max = S::splat(f32::MAX);
    for (c, xc) in x.chunks(32 * MAX_BLOCKS).enumerate() {
        let nb = xc.len() / 32;
        let b0 = c * MAX_BLOCKS;
        let mut max = [0.0f32; MAX_BLOCKS];
        let mut ok = [false; MAX_BLOCKS];
        for (b, xb) in xc.chunks_exact(32).enumerate() {
            let mut acc = S::splat(0.0);
            let mut finite = u32::MAX;
            for v in 0..nv {
                let a = S::abs(S::load(&xb[v * S::N..]));
                acc = S::max(a, acc);
                finite &= S::bits(S::ge(finite_max, a)) | !((1u32 << S::N) - 1);
            }
            if finite != u32::MAX {
                let lb: &mut [u8; 32] = (&mut l[(b0 + b) * 32..][..32]).try_into().unwrap();
                (d[b0 + b], _) = scalar(xb, lb);
                continue;
            }
            // Finite values: the order-free maximum is the scalar loop's `amax`, and
            // its first occurrence the scalar loop's `max` (0.0 when amax is 0).
            let amax = S::reduce_max(acc);
            let target = S::splat(amax);
            let mut hits = 0u32;
            for v in 0..nv {
                hits |= S::bits(S::ge(S::abs(S::load(&xb[v * S::N..])), target)) << (v * S::N);
            }
            let first = xb[(hits.trailing_zeros() as usize).min(31)];
            max[b] = if amax > 0.0 { first } else { 0.0 };
            ok[b] = true;
        }
        // d = max / -half; id = d != 0 ? 1/d : 0, a vector of blocks at a time.
        let mut ids = [0.0f32; MAX_BLOCKS];
        let mut ds = [0.0f32; MAX_BLOCKS];
        let zero = S::splat(0.0);
        for v in (0..MAX_BLOCKS).step_by(S::N) {
            let dv = S::div(S::load(&max[v..]), S::splat(-(half as f32)));
            S::store(dv, &mut ds[v..]);
            let id = S::select(S::ne(dv, zero), S::div(S::splat(1.0), dv), zero);
            S::store(id, &mut ids[v..]);
        }
        let bias = S::splat(half as f32 + 0.5);
        let top = S::splat_i(2 * half - 1);
        for b in (0..nb).filter(|&b| ok[b]) {
            let xb = &xc[b * 32..][..32];
            let lb = &mut l[(b0 + b) * 32..][..32];
            let vid = S::splat(ids[b]);
            for v in 0..nv {
                let t = S::add(S::mul(S::load(&xb[v * S::N..]), vid), bias);
                // MIN(top, (int8_t)t)
                S::store_low_bytes(S::min_i(S::sext8(S::cvtt(t)), top), &mut lb[v * S::N..]);
            }
            d[b0 + b] = ds[b];
        }
    }
}

/// AVX-512 entry of [`q8_0_row`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn q8_0_row_avx512(x: &[f32], dst: &mut [u8], scalar: LegacyScalar) {
    q8_0_row::<Avx512>(x, dst, scalar)
}

/// AVX2 entry of [`q8_0_row`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q8_0_row_avx2(x: &[f32], dst: &mut [u8], scalar: LegacyScalar) {
    q8_0_row::<Avx2>(x, dst, scalar)
}

/// AVX-512 entry of [`legacy_ref`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn legacy_ref_avx512(
    k: LegacyRef,
    x: &[f32],
    l: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
    scalar: LegacyRefScalar<'_>,
) {
    legacy_ref::<Avx512>(k, x, l, d, m, scalar)
}

/// AVX2 entry of [`legacy_ref`].
#[target_feature(enable = "avx2")]
pub(super) unsafe fn legacy_ref_avx2(
    k: LegacyRef,
    x: &[f32],
    l: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
    scalar: LegacyRefScalar<'_>,
) {
    legacy_ref::<Avx2>(k, x, l, d, m, scalar)
}

/// AVX-512 conversion of little-endian f16 to f32 (`vcvtph2ps`, exact; NaN made quiet
/// as ggml's table does).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn f16_to_f32_avx512(src: &[u8], dst: &mut [f32]) -> usize {
    let n = dst.len().min(src.len() / 2) / 16 * 16;
    for i in (0..n).step_by(16) {
        let h = _mm256_loadu_si256(src.as_ptr().add(2 * i).cast());
        _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
    }
    n
}

/// AVX2 + F16C conversion of little-endian f16 to f32.
#[target_feature(enable = "avx2,f16c")]
pub(super) unsafe fn f16_to_f32_avx2(src: &[u8], dst: &mut [f32]) -> usize {
    let n = dst.len().min(src.len() / 2) / 8 * 8;
    for i in (0..n).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    n
}

/// AVX-512 conversion of little-endian bf16 to f32 (a 16-bit shift).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn bf16_to_f32_avx512(src: &[u8], dst: &mut [f32]) -> usize {
    let n = dst.len().min(src.len() / 2) / 16 * 16;
    for i in (0..n).step_by(16) {
        let h = _mm256_loadu_si256(src.as_ptr().add(2 * i).cast());
        let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
        _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_castsi512_ps(w));
    }
    n
}

/// AVX2 conversion of little-endian bf16 to f32.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn bf16_to_f32_avx2(src: &[u8], dst: &mut [f32]) -> usize {
    let n = dst.len().min(src.len() / 2) / 8 * 8;
    for i in (0..n).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
        let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(w));
    }
    n
}

// Keep the lane-count constant tied to the trait.
const _: () = assert!(MAX_LANES >= 16);

/// One step of ggml's sequential best-candidate update (`sumq2 > 0 && sumqx^2 >
/// best * sumq2`), as the scalar loops run it.
#[inline(always)]
fn iq1_update(qx: f32, q2: f32, best_score: &mut f32, scale: &mut f32) -> bool {
    if q2 > 0.0 && qx * qx > *best_score * q2 {
        *scale = qx / q2;
        *best_score = *scale * qx;
        true
    } else {
        false
    }
}

/// Lanes (of the first `k`) whose candidate passes the update test against `best`.
#[inline(always)]
unsafe fn iq1_passing<S: Lanes>(qx: S::V, q2: S::V, best: f32) -> u32 {
    let m = S::and_m(
        S::gt(q2, S::splat(0.0)),
        S::gt(S::mul(qx, qx), S::mul(S::splat(best), q2)),
    );
    S::bits(m)
}

/// IQ1_S's split search (`iq1::best_split_iq1_s`), one `i2` per lane. The candidate
/// sums are the scalar ones lane by lane; a run of lanes none of which beats the current
/// best is skipped (the best cannot change inside it), any other run is replayed in
/// order with the scalar update, so the result is the scalar one.
#[inline(always)]
unsafe fn iq1s_split<S: Lanes>(
    sumx: &[f32; 33],
    sumw: &[f32; 33],
    xs: [&[f32; 3]; 2],
) -> Option<(f32, usize, usize, usize)> {
    const BS: usize = 32;
    let mut px = [0.0f32; 33 + MAX_LANES];
    let mut pw = [0.0f32; 33 + MAX_LANES];
    px[..33].copy_from_slice(sumx);
    pw[..33].copy_from_slice(sumw);
    let mut qxs = [[0.0f32; MAX_LANES]; 2];
    let mut q2s = [[0.0f32; MAX_LANES]; 2];
    let mut best_score = -f32::MAX;
    let mut scale = 0.0f32;
    let mut best = None;
    let (tx, tw) = (S::splat(sumx[BS]), S::splat(sumw[BS]));
    for i1 in 0..=BS {
        let (ax, aw) = (S::splat(sumx[i1] - sumx[0]), S::splat(sumw[i1] - sumw[0]));
        let (s1x, s1w) = (S::splat(sumx[i1]), S::splat(sumw[i1]));
        let mut i2 = i1;
        while i2 <= BS {
            let k = (BS + 1 - i2).min(S::N);
            let (vx, vw) = (S::load(&px[i2..]), S::load(&pw[i2..]));
            let (bx, cx) = (S::sub(vx, s1x), S::sub(tx, vx));
            let (bw, cw) = (S::sub(vw, s1w), S::sub(tw, vw));
            let mut pass = 0u32;
            for t in 0..2 {
                let (x0, x1, x2) = (S::splat(xs[t][0]), S::splat(xs[t][1]), S::splat(xs[t][2]));
                let qx = S::add(S::add(S::mul(ax, x0), S::mul(bx, x1)), S::mul(cx, x2));
                let q2 = S::add(
                    S::add(S::mul(S::mul(aw, x0), x0), S::mul(S::mul(bw, x1), x1)),
                    S::mul(S::mul(cw, x2), x2),
                );
                S::store(qx, &mut qxs[t]);
                S::store(q2, &mut q2s[t]);
                pass |= iq1_passing::<S>(qx, q2, best_score);
            }
            if pass & ((1u32 << k) - 1) != 0 {
                for l in 0..k {
                    for t in 0..2 {
                        if iq1_update(qxs[t][l], q2s[t][l], &mut best_score, &mut scale) {
                            best = Some((i1, i2 + l, t));
                        }
                    }
                }
            }
            i2 += k;
        }
    }
    best.map(|(i1, i2, t)| (scale, i1, i2, t))
}

/// IQ1_M's split search, one `i2` per lane, with [`iq1s_split`]'s skip-or-replay rule.
#[inline(always)]
unsafe fn iq1m_split<S: Lanes>(s: &Iq1mSums) -> Option<(f32, usize, usize, usize)> {
    const BS: usize = 16;
    let mut px = [[0.0f32; 17 + MAX_LANES]; 2];
    let mut pw = [[0.0f32; 17 + MAX_LANES]; 2];
    for h in 0..2 {
        px[h][..17].copy_from_slice(&s.px[h]);
        pw[h][..17].copy_from_slice(&s.pw[h]);
    }
    let mut qxs = [[0.0f32; MAX_LANES]; 4];
    let mut q2s = [[0.0f32; MAX_LANES]; 4];
    let mut best_score = -f32::MAX;
    let mut scale = 0.0f32;
    let mut best = None;
    for i1 in 0..=BS {
        let mut i2 = i1;
        while i2 <= BS {
            let k = (BS + 1 - i2).min(S::N);
            // [h][0: p, 1: m]
            let mut qx = [[S::splat(0.0); 2]; 2];
            let mut q2 = [[S::splat(0.0); 2]; 2];
            for h in 0..2 {
                let sx = S::add(S::splat(s.px[h][i1]), S::load(&px[h][i2..]));
                let vw2 = S::load(&pw[h][i2..]);
                for pm in 0..2 {
                    qx[h][pm] = S::sub(S::splat(s.tx[h][pm]), sx);
                    let c = s.tw[h][pm] + s.pw[h][i1] * s.c1[pm];
                    q2[h][pm] = S::add(S::splat(c), S::mul(vw2, S::splat(s.c2[pm])));
                }
            }
            let mut pass = 0u32;
            for code in 0..4 {
                let (a, b) = (code >> 1, code & 1);
                let sqx = S::add(qx[0][a], qx[1][b]);
                let sq2 = S::add(q2[0][a], q2[1][b]);
                S::store(sqx, &mut qxs[code]);
                S::store(sq2, &mut q2s[code]);
                pass |= iq1_passing::<S>(sqx, sq2, best_score);
            }
            if pass & ((1u32 << k) - 1) != 0 {
                for l in 0..k {
                    for code in 0..4 {
                        if iq1_update(qxs[code][l], q2s[code][l], &mut best_score, &mut scale) {
                            best = Some((i1, i2 + l, code));
                        }
                    }
                }
            }
            i2 += k;
        }
    }
    best.map(|(i1, i2, code)| (scale, i1, i2, code))
}

/// AVX-512 entry of the IQ1_S split search.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn iq1s_split_avx512(
    sumx: &[f32; 33],
    sumw: &[f32; 33],
    xs: [&[f32; 3]; 2],
) -> Option<(f32, usize, usize, usize)> {
    iq1s_split::<Avx512>(sumx, sumw, xs)
}

/// AVX2 entry of the IQ1_S split search.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn iq1s_split_avx2(
    sumx: &[f32; 33],
    sumw: &[f32; 33],
    xs: [&[f32; 3]; 2],
) -> Option<(f32, usize, usize, usize)> {
    iq1s_split::<Avx2>(sumx, sumw, xs)
}

/// AVX-512 entry of the IQ1_M split search.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn iq1m_split_avx512(s: &Iq1mSums) -> Option<(f32, usize, usize, usize)> {
    iq1m_split::<Avx512>(s)
}

/// AVX2 entry of the IQ1_M split search.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn iq1m_split_avx2(s: &Iq1mSums) -> Option<(f32, usize, usize, usize)> {
    iq1m_split::<Avx2>(s)
}

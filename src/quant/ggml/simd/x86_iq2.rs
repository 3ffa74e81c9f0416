//! AVX-512 / AVX2 kernel of the IQ2 / IQ1 neighbour search over the byte copies of the
//! neighbour lists ([`super::super::iq_grid::Neighbours`]): the distances of a block of
//! points in lanes, a per-lane running minimum, then the first index of the least one.
//! Each lane performs the scalar code's operations in its order, so the result is the
//! scalar one.

use std::arch::x86_64::*;

use super::super::iq_grid::NB_BLOCK;
use super::x86::{Avx2, Avx512, Lanes};

/// What the neighbour kernel needs beyond [`Lanes`].
trait NbLanes: Lanes {
    /// `N` signed bytes as floats.
    unsafe fn load_i8(s: &[i8]) -> Self::V;
    /// `a == b` (false for NaN).
    unsafe fn eq(a: Self::V, b: Self::V) -> Self::M;
    /// The smallest of the lanes of `v` selected by `m`, `i32::MAX` if none.
    unsafe fn masked_min_i(m: Self::M, v: Self::I) -> i32;
}

impl NbLanes for Avx512 {
    #[inline(always)]
    unsafe fn load_i8(s: &[i8]) -> __m512 {
        debug_assert!(s.len() >= 16);
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            s.as_ptr() as *const __m128i
        )))
    }
    #[inline(always)]
    unsafe fn eq(a: __m512, b: __m512) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn masked_min_i(m: __mmask16, v: __m512i) -> i32 {
        _mm512_mask_reduce_min_epi32(m, v)
    }
}

impl NbLanes for Avx2 {
    #[inline(always)]
    unsafe fn load_i8(s: &[i8]) -> __m256 {
        debug_assert!(s.len() >= 8);
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
            s.as_ptr() as *const __m128i
        )))
    }
    #[inline(always)]
    unsafe fn eq(a: __m256, b: __m256) -> __m256 {
        _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)
    }
    #[inline(always)]
    unsafe fn masked_min_i(m: __m256, v: __m256i) -> i32 {
        let v = _mm256_blendv_epi8(_mm256_set1_epi32(i32::MAX), v, _mm256_castps_si256(m));
        let v = _mm_min_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let v = _mm_min_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
        let v = _mm_min_epi32(v, _mm_shuffle_epi32::<0b10_11_00_01>(v));
        _mm_cvtsi128_si32(v)
    }
}

/// The position in the list of the first point with the least `sum_i w_i (scale * (c_i +
/// offset) - x_i)^2` over the `n` points of `bytes` (blocks of [`NB_BLOCK`]
/// coordinate-major points).
#[inline(always)]
unsafe fn nearest<S: NbLanes>(
    bytes: &[i8],
    n: usize,
    x: &[f32],
    w: &[f32],
    scale: f32,
    offset: f32,
) -> usize {
    let (vs, vo) = (S::splat(scale), S::splat(offset));
    let xs: [S::V; 8] = std::array::from_fn(|i| S::splat(x[i]));
    let ws: [S::V; 8] = std::array::from_fn(|i| S::splat(w[i]));
    let lane: [i32; 16] = std::array::from_fn(|l| l as i32);
    let mut cur = S::load_i(&lane);
    let step = S::splat_i(S::N as i32);
    let mut best_d2 = S::splat(f32::MAX);
    let mut best = S::splat_i(0);
    for (b, block) in bytes.chunks_exact(8 * NB_BLOCK).enumerate() {
        for h in (0..NB_BLOCK).step_by(S::N) {
            if b * NB_BLOCK + h >= n {
                break;
            }
            let mut d2 = S::splat(0.0);
            for i in 0..8 {
                let q = S::add(S::load_i8(&block[i * NB_BLOCK + h..]), vo);
                let diff = S::sub(S::mul(vs, q), xs[i]);
                d2 = S::add(d2, S::mul(S::mul(ws[i], diff), diff));
            }
            // Strict `<` per lane: each lane keeps the first of its least distances.
            let m = S::gt(best_d2, d2);
            best_d2 = S::select(m, d2, best_d2);
            best = S::select_i(m, cur, best);
            cur = S::add_i(cur, step);
        }
    }
    // No NaN in `best_d2`; lanes that never improved hold `f32::MAX` at position 0.
    let min = S::reduce_min(best_d2);
    S::masked_min_i(S::eq(best_d2, S::splat(min)), best) as usize
}

macro_rules! entries {
    ($($name:ident, $s:ty, $feat:literal;)*) => {$(
        #[doc = concat!("[`nearest`] with ", $feat, ".")]
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $name(
            bytes: &[i8],
            n: usize,
            x: &[f32],
            w: &[f32],
            scale: f32,
            offset: f32,
        ) -> usize {
            nearest::<$s>(bytes, n, x, w, scale, offset)
        }
    )*};
}

entries! {
    nearest_avx512, Avx512, "avx512f";
    nearest_avx2, Avx2, "avx2";
}

//! The error statistics of encoded units ([`ErrorStats`]), computed in the encode pass
//! from each unit's input and its reconstruction.
//!
//! Each unit's sums are f64 chains in element order, so the numbers (and the report's
//! relative RMSE) do not depend on the thread count or the instruction set. A chain is
//! latency-bound, so [`group_stats`] runs [`GROUP`] units' chains side by side (one unit
//! per f64 lane): the same operations in the same order for each unit.

use super::ErrorStats;

/// Units whose statistics [`group_stats`] computes together.
pub const GROUP: usize = 8;

/// The statistics of input `x` against its reconstruction `y` (NaN or infinite inputs
/// are counted and left out of the sums).
pub fn unit_stats(x: &[f32], y: &[f32]) -> ErrorStats {
    let mut s = ErrorStats::default();
    for (&a, &b) in x.iter().zip(y) {
        push(&mut s, a, b);
    }
    s
}

/// One element of [`unit_stats`].
#[inline(always)]
fn push(s: &mut ErrorStats, a: f32, b: f32) {
    if !a.is_finite() {
        s.non_finite += 1;
        return;
    }
    let d = f64::from(a) - f64::from(b);
    s.sum_sq_err += d * d;
    s.sum_sq += f64::from(a) * f64::from(a);
}

/// [`unit_stats`] of [`GROUP`] units of equal length, identical to computing each
/// alone; SIMD at the AVX2 and AVX-512 levels.
pub fn group_stats(x: [&[f32]; GROUP], y: [&[f32]; GROUP]) -> [ErrorStats; GROUP] {
    let n = x[0].len();
    assert!(
        x.iter().chain(&y).all(|s| s.len() == n),
        "units of one length"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::level() >= crate::cpu::Level::Avx512 {
        // SAFETY: the AVX-512 level is only reported on CPUs that have AVX-512F.
        return unsafe { x86::group_stats_avx512(x, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::level() >= crate::cpu::Level::Avx2 {
        // SAFETY: the AVX2 level is only reported on CPUs that have AVX2.
        return unsafe { x86::group_stats_avx2(x, y) };
    }
    std::array::from_fn(|g| unit_stats(x[g], y[g]))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{push, ErrorStats, GROUP};
    use std::arch::x86_64::*;

    /// Four units' values at positions `i..i + 4`, transposed: `out[k]` holds position
    /// `i + k` of each unit, widened to f64.
    #[inline(always)]
    unsafe fn load4(rows: &[&[f32]], i: usize) -> [__m256d; 4] {
        let r: [__m128; 4] = std::array::from_fn(|g| _mm_loadu_ps(rows[g].as_ptr().add(i)));
        let t0 = _mm_unpacklo_ps(r[0], r[1]);
        let t1 = _mm_unpacklo_ps(r[2], r[3]);
        let t2 = _mm_unpackhi_ps(r[0], r[1]);
        let t3 = _mm_unpackhi_ps(r[2], r[3]);
        [
            _mm256_cvtps_pd(_mm_movelh_ps(t0, t1)),
            _mm256_cvtps_pd(_mm_movehl_ps(t1, t0)),
            _mm256_cvtps_pd(_mm_movelh_ps(t2, t3)),
            _mm256_cvtps_pd(_mm_movehl_ps(t3, t2)),
        ]
    }

    /// Eight units' values at positions `i..i + 8`, transposed: `out[k]` holds position
    /// `i + k` of each unit (lane `g` = unit `g`), widened to f64.
    #[inline(always)]
    unsafe fn load8(rows: &[&[f32]; GROUP], i: usize) -> [__m512d; 8] {
        let r: [__m256; 8] = std::array::from_fn(|g| _mm256_loadu_ps(rows[g].as_ptr().add(i)));
        let t: [__m256; 8] = std::array::from_fn(|p| {
            let (a, b) = (r[2 * (p / 2)], r[2 * (p / 2) + 1]);
            if p % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // s[q]: positions (q % 4 within each 128-bit half) of rows 0-3 (q < 4) or 4-7.
        let s: [__m256; 8] = std::array::from_fn(|q| {
            let h = 4 * (q / 4);
            let (a, b) = match q % 4 {
                0 | 1 => (t[h], t[h + 2]),
                _ => (t[h + 1], t[h + 3]),
            };
            if q % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(a, b)
            } else {
                _mm256_shuffle_ps::<0xEE>(a, b)
            }
        });
        std::array::from_fn(|k| {
            let c = if k < 4 {
                _mm256_permute2f128_ps::<0x20>(s[k], s[k + 4])
            } else {
                _mm256_permute2f128_ps::<0x31>(s[k - 4], s[k])
            };
            _mm512_cvtps_pd(c)
        })
    }

    /// [`super::group_stats`] with one vector of eight f64 lanes, lane `g` running unit
    /// `g`'s chains exactly as [`group_stats_avx2`] does.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn group_stats_avx512(
        x: [&[f32]; GROUP],
        y: [&[f32]; GROUP],
    ) -> [ErrorStats; GROUP] {
        let n = x[0].len();
        let body = n / 8 * 8;
        let inf = _mm512_set1_pd(f64::INFINITY);
        let one = _mm512_set1_epi64(1);
        let mut sse = _mm512_setzero_pd();
        let mut ss = _mm512_setzero_pd();
        let mut finite = _mm512_setzero_si512();
        if all_finite_avx512(&x, body) {
            // No lane masked: the same operations without the masks, every value counted.
            for i in (0..body).step_by(8) {
                let a8 = load8(&x, i);
                let b8 = load8(&y, i);
                for k in 0..8 {
                    let (a, b) = (a8[k], b8[k]);
                    let d = _mm512_sub_pd(a, b);
                    sse = _mm512_add_pd(sse, _mm512_mul_pd(d, d));
                    ss = _mm512_add_pd(ss, _mm512_mul_pd(a, a));
                }
            }
            finite = _mm512_set1_epi64(body as i64);
        } else {
            for i in (0..body).step_by(8) {
                let a8 = load8(&x, i);
                let b8 = load8(&y, i);
                for k in 0..8 {
                    let (a, b) = (a8[k], b8[k]);
                    let ok = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_abs_pd(a), inf);
                    let af = _mm512_maskz_mov_pd(ok, a);
                    let d = _mm512_maskz_sub_pd(ok, a, b);
                    sse = _mm512_add_pd(sse, _mm512_mul_pd(d, d));
                    ss = _mm512_add_pd(ss, _mm512_mul_pd(af, af));
                    finite = _mm512_mask_add_epi64(finite, ok, finite, one);
                }
            }
        }
        let (mut e, mut q, mut f) = ([0f64; 8], [0f64; 8], [0u64; 8]);
        _mm512_storeu_pd(e.as_mut_ptr(), sse);
        _mm512_storeu_pd(q.as_mut_ptr(), ss);
        _mm512_storeu_si512(f.as_mut_ptr().cast(), finite);
        std::array::from_fn(|g| finish(e[g], q[g], f[g], body, x[g], y[g]))
    }

    /// Whether the first `body` values (a multiple of 8) of every unit are finite: the
    /// largest magnitude's bits below the infinity's.
    #[inline(always)]
    unsafe fn all_finite_avx512(x: &[&[f32]; GROUP], body: usize) -> bool {
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let mut top = _mm512_setzero_si512();
        for r in x {
            let mut i = 0;
            while i + 16 <= body {
                let v = _mm512_loadu_si512(r.as_ptr().add(i).cast());
                top = _mm512_max_epu32(top, _mm512_and_si512(v, abs));
                i += 16;
            }
            if i < body {
                let v = _mm256_loadu_si256(r.as_ptr().add(i).cast());
                let v = _mm512_castsi256_si512(v);
                // The upper half of the cast is undefined: only the low 8 lanes count.
                top = _mm512_mask_max_epu32(top, 0x00ff, top, _mm512_and_si512(v, abs));
            }
        }
        _mm512_reduce_max_epu32(top) < 0x7f80_0000
    }

    /// [`all_finite_avx512`] with AVX2 (`body` a multiple of 4).
    #[inline(always)]
    unsafe fn all_finite_avx2(x: &[&[f32]], body: usize) -> bool {
        let abs = _mm_set1_epi32(0x7fff_ffff);
        let mut top = _mm_setzero_si128();
        for r in x {
            for i in (0..body).step_by(4) {
                let v = _mm_loadu_si128(r.as_ptr().add(i).cast());
                top = _mm_max_epu32(top, _mm_and_si128(v, abs));
            }
        }
        let mut lanes = [0u32; 4];
        _mm_storeu_si128(lanes.as_mut_ptr().cast(), top);
        lanes.iter().all(|&v| v < 0x7f80_0000)
    }

    /// One unit's statistics from its lane's sums over the first `body` values (`finite`
    /// of them finite) and the scalar chain over the rest.
    #[inline(always)]
    fn finish(e: f64, q: f64, finite: u64, body: usize, x: &[f32], y: &[f32]) -> ErrorStats {
        let mut s = ErrorStats {
            sum_sq_err: e,
            sum_sq: q,
            non_finite: body as u64 - finite,
        };
        for i in body..x.len() {
            push(&mut s, x[i], y[i]);
        }
        s
    }

    /// [`super::group_stats`] with f64 lanes: two vectors of four units, each lane
    /// running one unit's chains (a non-finite input adds `0.0`, which leaves a sum
    /// of squares unchanged, and is counted).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn group_stats_avx2(
        x: [&[f32]; GROUP],
        y: [&[f32]; GROUP],
    ) -> [ErrorStats; GROUP] {
        let n = x[0].len();
        let body = n / 4 * 4;
        let inf = _mm256_set1_pd(f64::INFINITY);
        let sign = _mm256_set1_pd(-0.0);
        let mut sse = [_mm256_setzero_pd(); 2];
        let mut ss = [_mm256_setzero_pd(); 2];
        let mut finite = [_mm256_setzero_si256(); 2];
        if all_finite_avx2(&x, body) {
            // No lane masked: the same operations without the masks, every value counted.
            for i in (0..body).step_by(4) {
                for h in 0..2 {
                    let a4 = load4(&x[4 * h..], i);
                    let b4 = load4(&y[4 * h..], i);
                    for k in 0..4 {
                        let (a, b) = (a4[k], b4[k]);
                        let d = _mm256_sub_pd(a, b);
                        sse[h] = _mm256_add_pd(sse[h], _mm256_mul_pd(d, d));
                        ss[h] = _mm256_add_pd(ss[h], _mm256_mul_pd(a, a));
                    }
                }
            }
            finite = [_mm256_set1_epi64x(body as i64); 2];
        } else {
            for i in (0..body).step_by(4) {
                for h in 0..2 {
                    let a4 = load4(&x[4 * h..], i);
                    let b4 = load4(&y[4 * h..], i);
                    for k in 0..4 {
                        let (a, b) = (a4[k], b4[k]);
                        let ok = _mm256_cmp_pd::<_CMP_LT_OQ>(_mm256_andnot_pd(sign, a), inf);
                        let af = _mm256_and_pd(a, ok);
                        let d = _mm256_and_pd(_mm256_sub_pd(a, b), ok);
                        sse[h] = _mm256_add_pd(sse[h], _mm256_mul_pd(d, d));
                        ss[h] = _mm256_add_pd(ss[h], _mm256_mul_pd(af, af));
                        finite[h] = _mm256_sub_epi64(finite[h], _mm256_castpd_si256(ok));
                    }
                }
            }
        }
        let mut out = [ErrorStats::default(); GROUP];
        for h in 0..2 {
            let (mut e, mut q, mut f) = ([0f64; 4], [0f64; 4], [0u64; 4]);
            _mm256_storeu_pd(e.as_mut_ptr(), sse[h]);
            _mm256_storeu_pd(q.as_mut_ptr(), ss[h]);
            _mm256_storeu_si256(f.as_mut_ptr().cast(), finite[h]);
            for g in 0..4 {
                let u = 4 * h + g;
                out[u] = finish(e[g], q[g], f[g], body, x[u], y[u]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{with_level, Level};

    #[test]
    fn rel_rmse_and_non_finite_counting() {
        let s = unit_stats(&[3.0, 4.0, f32::NAN], &[3.0, 3.0, 0.0]);
        assert_eq!(s.non_finite, 1);
        assert_eq!(s.sum_sq, 25.0);
        assert!((s.rel_rmse() - 0.2).abs() < 1e-12);
        assert_eq!(ErrorStats::default().rel_rmse(), 0.0);
    }

    /// Every level gives each unit exactly its own [`unit_stats`] (bit for bit), with
    /// non-finite inputs and reconstructions, and lengths with a tail.
    #[test]
    fn group_stats_equal_unit_stats_at_every_level() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        // Finite inputs take the unmasked path, whatever the reconstructions.
        for (n, finite_x) in [0, 1, 3, 4, 37, 576, 16, 40, 576]
            .into_iter()
            .zip((0..).map(|i| i > 5))
        {
            let mut x: Vec<Vec<f32>> = (0..GROUP)
                .map(|_| (0..n).map(|_| next() * 1e3).collect())
                .collect();
            let mut y: Vec<Vec<f32>> = x
                .iter()
                .map(|r| r.iter().map(|v| v + next() * 0.1).collect())
                .collect();
            if n > 3 {
                if !finite_x {
                    x[1][2] = f32::NAN;
                    x[2][0] = f32::INFINITY;
                    x[7][n - 1] = f32::NEG_INFINITY;
                }
                y[3][1] = f32::NAN;
                y[5][3] = f32::INFINITY;
            }
            let xs: [&[f32]; GROUP] = std::array::from_fn(|g| x[g].as_slice());
            let ys: [&[f32]; GROUP] = std::array::from_fn(|g| y[g].as_slice());
            let want: Vec<_> = (0..GROUP).map(|g| unit_stats(xs[g], ys[g])).collect();
            let bits = |s: &ErrorStats| (s.sum_sq_err.to_bits(), s.sum_sq.to_bits(), s.non_finite);
            for level in Level::supported() {
                let got = with_level(level, || group_stats(xs, ys)).unwrap();
                for g in 0..GROUP {
                    assert_eq!(bits(&got[g]), bits(&want[g]), "{level}, n {n}, unit {g}");
                }
            }
        }
    }
}

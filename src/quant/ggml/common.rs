//! Numeric helpers shared by the codecs, mirroring the helpers in ggml-quants.c.
//!
//! Everything here computes in `f32` with exactly the operation order of the C code
//! (no fused multiply-add), so results are bit-identical to ggml.

use super::simd;

/// ggml's `GROUP_MAX_EPS`: groups whose absolute max is below this are treated as all zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Number of values in a k-quant super-block (`QK_K`).
pub use crate::formats::blocks::QK_K;

/// ggml's `nearest_int`: round to nearest (ties to even) via the `12582912.f` magic number.
///
/// Only meaningful for `|fval| <= 4194303`; outside that range it returns the same
/// garbage ggml does (and `0` for NaN).
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C's float-to-integer conversion as x86 `cvttss2si` performs it: truncation toward
/// zero, and `i32::MIN` for NaN or out-of-range values. Narrower C targets
/// (`(int8_t)f`, `(uint8_t)f`) take the low bits of this value.
#[inline(always)]
pub fn c_trunc_i32(x: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&x) {
        x as i32
    } else {
        i32::MIN
    }
}

/// `(int)roundf(x)` as x86 C code computes it: round half away from zero, then
/// [`c_trunc_i32`] (`i32::MIN` for NaN or out-of-range values). Branch-free.
#[inline(always)]
pub fn c_round_i32(x: f32) -> i32 {
    let in_range = x.abs() < 2_147_483_648.0;
    let t = x as i32; // trunc (saturating; replaced below when out of range)
    let frac = x - t as f32; // exact
    let r = t
        .wrapping_add((frac >= 0.5) as i32)
        .wrapping_sub((frac <= -0.5) as i32);
    if in_range {
        r
    } else {
        i32::MIN
    }
}

/// `GGML_FP32_TO_FP16`: round to nearest even; NaN becomes a quiet `0x7e00` (sign kept).
#[inline(always)]
pub fn fp32_to_fp16(x: f32) -> u16 {
    if x.is_nan() {
        return ((x.to_bits() >> 16) & 0x8000) as u16 | 0x7e00;
    }
    half::f16::from_f32(x).to_bits()
}

/// `GGML_FP16_TO_FP32`: exact widening of fp16 bits.
#[inline(always)]
pub fn fp16_to_fp32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Read the little-endian fp16 at `b[off..off + 2]` as `f32`.
#[inline(always)]
pub fn read_fp16(b: &[u8], off: usize) -> f32 {
    fp16_to_fp32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Write `x` as little-endian fp16 at `b[off..off + 2]`; returns the rounded value as `f32`.
#[inline(always)]
pub fn write_fp16(b: &mut [u8], off: usize, x: f32) -> f32 {
    let h = fp32_to_fp16(x);
    b[off..off + 2].copy_from_slice(&h.to_le_bytes());
    fp16_to_fp32(h)
}

/// The largest absolute value and the first element attaining it (the
/// `amax`/`max` loop used throughout ggml); SIMD-dispatched.
#[inline(always)]
pub fn abs_max(x: &[f32]) -> (f32, f32) {
    simd::abs_max(x)
}

/// Scalar [`abs_max`], literally ggml's loop.
#[inline(always)]
pub fn abs_max_scalar(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (amax, max)
}

/// Sequential `f32` sum of squares, in index order (as the C loops do).
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// [`sum_sq`] of each of `out.len()` consecutive groups of `n` values, every group
/// summed in index order; SIMD-dispatched (one group per lane).
#[inline]
pub fn sum_sq_groups(x: &[f32], n: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), n * out.len());
    simd::sum_sq_groups(x, n, out)
}

/// Scalar [`sum_sq_groups`]; the groups are interleaved so their chains overlap.
#[inline]
pub fn sum_sq_groups_scalar(x: &[f32], n: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), n * out.len());
    out.fill(0.0);
    for i in 0..n {
        for (g, s) in out.iter_mut().enumerate() {
            let v = x[g * n + i];
            *s += v * v;
        }
    }
}

/// Importance weights used by the imatrix paths: `qw[i] * sqrt(sigma2 + x[i]^2)`.
#[inline(always)]
pub fn imatrix_weights(qw: &[f32], x: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// ggml's `make_qx_quants` with `rmse_type == 1` and explicit weights `w`
/// (callers pass `x[i]^2` where ggml uses `qw == NULL`).
///
/// Writes `L[i] = l + nmax` with `l` in `[-nmax, nmax - 1]` and returns the scale.
pub fn make_qx_quants(nmax: i32, x: &[f32], w: &[f32], l_out: &mut [i8]) -> f32 {
    debug_assert!(w.len() == x.len() && l_out.len() == x.len());
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let sums = |iscale: f32| {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for (&v, &wi) in x.iter().zip(w) {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            sumlx += wi * v * l;
            suml2 += wi * l * l;
        }
        (sumlx, suml2)
    };
    let mut best_iscale = -(nmax as f32) / max;
    let (sumlx, suml2) = sums(best_iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = qx_iscale(nmax, is, max);
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            best_iscale = iscale;
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    qx_levels(nmax, x, best_iscale, l_out);
    scale
}

/// Inverse scale of candidate `is` of `make_qx_quants`: `-(nmax + 0.1*is)/max`.
#[inline(always)]
pub fn qx_iscale(nmax: i32, is: i32, max: f32) -> f32 {
    -(nmax as f32 + 0.1 * is as f32) / max
}

/// Levels of `make_qx_quants` for one inverse scale: `clamp(nearest_int(iscale*x)) + nmax`.
#[inline(always)]
pub fn qx_levels(nmax: i32, x: &[f32], iscale: f32, l_out: &mut [i8]) {
    for (lo, &v) in l_out.iter_mut().zip(x) {
        *lo = (nearest_int(iscale * v).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
}

/// [`make_qx_quants`] on consecutive groups of `n` values (`x`, `w` and `l_out` hold
/// `scales.len()` groups); the SIMD kernels run independent groups in parallel lanes.
pub fn make_qx_quants_multi(
    nmax: i32,
    n: usize,
    x: &[f32],
    w: &[f32],
    l_out: &mut [i8],
    scales: &mut [f32],
) {
    let groups = scales.len();
    debug_assert!(x.len() == n * groups && w.len() == x.len() && l_out.len() == x.len());
    let mut done = [false; 16];
    if groups > 1 && groups <= 16 && n <= 32 {
        simd::qx_multi(nmax, n, x, w, l_out, scales, &mut done[..groups]);
    }
    for (g, s) in scales.iter_mut().enumerate() {
        if !done.get(g).copied().unwrap_or(false) {
            let r = g * n..(g + 1) * n;
            *s = make_qx_quants(nmax, &x[r.clone()], &w[r.clone()], &mut l_out[r]);
        }
    }
}

/// ggml's `make_q3_quants` with `do_rmse == true` (weights `x[i]^2`).
///
/// Writes `L[i] = l + nmax` and returns the scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    debug_assert_eq!(l_out.len(), n);
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (lo, &v) in l_out.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *lo = l as i8;
        let w = v * v;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for (lo, &v) in l_out.iter_mut().zip(x) {
            let w = v * v;
            let li = *lo as f32;
            let mut slx = sumlx - w * v * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *lo as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *lo = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for lo in l_out.iter_mut() {
        *lo = (*lo as i32 + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Which of ggml's two min+scale searches to mirror.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Qkx {
    /// `make_qkx2_quants` (used by the `_ref` k-quant paths).
    V2,
    /// `make_qkx3_quants` (used by the imatrix paths): guards the candidate
    /// rounding against out-of-range values and exits early on `max <= min`.
    V3,
}

/// Parameters of a `make_qkx2_quants` / `make_qkx3_quants` search.
#[derive(Clone, Copy, Debug)]
pub struct QkxParams {
    /// Largest quant value (`nmax`).
    pub nmax: i32,
    /// First candidate offset (`rmin`).
    pub rmin: f32,
    /// Candidate step (`rdelta`).
    pub rdelta: f32,
    /// Number of steps (`nstep`); candidates are `0..=nstep`.
    pub nstep: i32,
    /// Use absolute instead of squared error.
    pub use_mad: bool,
    /// Which ggml variant.
    pub variant: Qkx,
}

/// Quantize one value for a candidate of the given variant.
#[inline(always)]
pub fn qkx_level(variant: Qkx, nmax: i32, iscale: f32, x: f32, min: f32) -> i32 {
    match variant {
        Qkx::V2 => nearest_int(iscale * (x - min)).clamp(0, nmax),
        Qkx::V3 => {
            let v = iscale * (x - min);
            let nm = nmax as f32;
            if v > 0.0 {
                nearest_int(if v < nm { v } else { nm })
            } else {
                0
            }
        }
    }
}

/// Inverse scale of candidate `is` of a qkx search: `(rmin + rdelta*is + nmax)/(max - min)`.
#[inline(always)]
pub fn qkx_iscale(p: &QkxParams, is: i32, max: f32, min: f32) -> f32 {
    (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min)
}

/// Where the levels of a finished qkx search come from.
#[derive(Clone, Copy, Debug)]
pub enum QkxWinner {
    /// ggml's initial guess `iscale = nmax/(max - min)` (rounded the qkx2 way).
    Init {
        /// Initial inverse scale.
        iscale: f32,
        /// Initial min.
        min: f32,
    },
    /// Candidate `is`, evaluated with `min`.
    Cand {
        /// Candidate index.
        is: i32,
        /// The min in effect when the candidate was evaluated.
        min: f32,
    },
}

/// Write the levels of a finished qkx search.
pub fn qkx_levels(p: &QkxParams, x: &[f32], max: f32, win: QkxWinner, l_out: &mut [u8]) {
    let (variant, iscale, min) = match win {
        QkxWinner::Init { iscale, min } => (Qkx::V2, iscale, min),
        QkxWinner::Cand { is, min } => (p.variant, qkx_iscale(p, is, max, min), min),
    };
    for (lo, &v) in l_out.iter_mut().zip(x) {
        *lo = qkx_level(variant, p.nmax, iscale, v, min) as u8;
    }
}

/// Outcome of a qkx search: the scale, ggml's `*the_min` (i.e. `-min`) and how to
/// produce the levels (which callers that re-quantize anyway rarely need).
#[derive(Clone, Copy, Debug)]
pub struct QkxResult {
    /// Returned scale.
    pub scale: f32,
    /// ggml's `*the_min`.
    pub the_min: f32,
    /// Source of the levels; `None` for a degenerate group (all levels 0).
    pub levels: Option<(f32, QkxWinner)>,
}

impl QkxResult {
    /// Write the group's levels (`0..=nmax`) for values `x`.
    pub fn write_levels(&self, p: &QkxParams, x: &[f32], l_out: &mut [u8]) {
        match self.levels {
            None => l_out.fill(0),
            Some((max, win)) => qkx_levels(p, x, max, win, l_out),
        }
    }
}

/// ggml's `make_qkx2_quants` / `make_qkx3_quants` (with weights): a scale and a
/// (negated) min for `x`, levels `0..=nmax` available through
/// [`QkxResult::write_levels`].
pub fn qkx_search(p: &QkxParams, x: &[f32], w: &[f32]) -> QkxResult {
    let n = x.len();
    debug_assert_eq!(w.len(), n);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let wi = w[i];
        sum_w += wi;
        sum_x += wi * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    let degenerate = match p.variant {
        Qkx::V2 => max == min,
        Qkx::V3 => max <= min,
    };
    if degenerate {
        return QkxResult {
            scale: 0.0,
            the_min: -min,
            levels: None,
        };
    }
    let nmax = p.nmax;
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut win = QkxWinner::Init { iscale, min };
    let mut best_error = 0.0f32;
    for (&v, &wi) in x.iter().zip(w) {
        let l = nearest_int(iscale * (v - min)).clamp(0, nmax) as f32;
        best_error += qkx_err_term(p.use_mad, scale, l, min, v, wi);
    }
    assert!(n <= 32, "qkx groups hold at most 32 values");
    let mut laux = [0.0f32; 32];
    let nstep = if p.nstep < 1 { -1 } else { p.nstep };
    for is in 0..=nstep {
        let iscale = qkx_iscale(p, is, max, min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for ((la, &v), &wi) in laux.iter_mut().zip(x).zip(w) {
            let l = qkx_level(p.variant, nmax, iscale, v, min) as f32;
            *la = l;
            sum_l += wi * l;
            sum_l2 += wi * l * l;
            sum_xl += wi * l * v;
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&l, &v), &wi) in laux.iter().zip(x).zip(w) {
                cur_error += qkx_err_term(p.use_mad, this_scale, l, this_min, v, wi);
            }
            if cur_error < best_error {
                best_error = cur_error;
                win = QkxWinner::Cand { is, min };
                scale = this_scale;
                min = this_min;
            }
        }
    }
    QkxResult {
        scale,
        the_min: -min,
        levels: Some((max, win)),
    }
}

/// Per-element error term of a qkx search: `w * |s*l + m - x|` or `w * (s*l + m - x)^2`.
#[inline(always)]
pub fn qkx_err_term(use_mad: bool, scale: f32, l: f32, min: f32, x: f32, w: f32) -> f32 {
    let diff = scale * l + min - x;
    let diff = if use_mad { diff.abs() } else { diff * diff };
    w * diff
}

/// [`qkx_search`] on consecutive groups of `n` values (`x` and `w` hold `out.len()`
/// groups). The SIMD kernels run independent groups in parallel lanes.
pub fn qkx_search_multi(p: &QkxParams, n: usize, x: &[f32], w: &[f32], out: &mut [QkxResult]) {
    let groups = out.len();
    debug_assert!(x.len() == n * groups && w.len() == x.len());
    let mut done = [false; 16];
    if groups > 1 && groups <= 16 && n <= 32 && p.nstep >= 1 {
        simd::qkx_multi(p, n, x, w, out, &mut done[..groups]);
    }
    for (g, r) in out.iter_mut().enumerate() {
        if !done.get(g).copied().unwrap_or(false) {
            let range = g * n..(g + 1) * n;
            *r = qkx_search(p, &x[range.clone()], &w[range]);
        }
    }
}

/// ggml's `make_qp_quants`: quantize non-negative `x` (sub-block scales or mins) to
/// `0..=nmax` with weights `qw`; writes levels to `l_out` and returns the scale.
pub fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        // MAX(max, x[i]) == ((max) > (x[i]) ? (max) : (x[i]))
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for (lo, &v) in l_out.iter_mut().zip(x) {
        *lo = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for ((&lo, &v), &w) in l_out.iter().zip(x).zip(qw) {
        let diff = v - scale * lo as f32;
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for (&v, &w) in x.iter().zip(qw) {
            let l = nearest_int(iscale_is * v).min(nmax);
            let diff = v - scale_is * l as f32;
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for ((lo, &v), &w) in l_out.iter_mut().zip(x).zip(qw) {
        let l = nearest_int(iscale * v).min(nmax);
        *lo = l as u8;
        let lf = l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for ((lo, &v), &w) in l_out.iter_mut().zip(x).zip(qw) {
            let li = *lo as f32;
            let mut slx = sumlx - w * v * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(v * sl2 / slx).min(nmax);
                if new_l != *lo as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *lo = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for (v, want) in [
            (0.5f32, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
        for i in -100_000..100_000 {
            let v = i as f32 * 0.37;
            assert_eq!(nearest_int(v), v.round_ties_even() as i32);
        }
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn c_round_matches_roundf_then_cvttss2si() {
        for v in [
            0.49999997f32,
            0.5,
            -0.5,
            1.5,
            -2.5,
            126.5,
            -127.49,
            3e9,
            -3e9,
            f32::NAN,
            f32::INFINITY,
        ] {
            let r = v.round();
            let want = if r.abs() < 2_147_483_648.0 {
                r as i32
            } else {
                i32::MIN
            };
            assert_eq!(c_round_i32(v), want, "{v}");
        }
        assert_eq!(c_trunc_i32(-3.9), -3);
        assert_eq!(c_trunc_i32(f32::NAN), i32::MIN);
    }

    #[test]
    fn fp16_conversion() {
        assert_eq!(fp32_to_fp16(1.0), 0x3c00);
        assert_eq!(fp32_to_fp16(65520.0), 0x7c00);
        assert_eq!(fp32_to_fp16(f32::NAN), 0x7e00);
        assert_eq!(fp32_to_fp16(-f32::NAN), 0xfe00);
        // Round to nearest even at the halfway point between two fp16 values.
        assert_eq!(fp32_to_fp16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(fp32_to_fp16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(fp16_to_fp32(0x0001), 5.960_464_5e-8);
    }

    #[test]
    fn abs_max_takes_first_of_ties_and_ignores_nan() {
        let mut x = [0.0f32; 32];
        x[3] = -2.0;
        x[7] = 2.0;
        x[9] = f32::NAN;
        assert_eq!(abs_max(&x), (2.0, -2.0));
        assert_eq!(abs_max_scalar(&x), (2.0, -2.0));
        assert_eq!(abs_max(&[0.0f32; 16]), (0.0, 0.0));
    }
}

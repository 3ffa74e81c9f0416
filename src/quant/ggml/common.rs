//! Numeric helpers shared by the codecs, mirroring the helpers in ggml-quants.c.
//!
//! Everything here computes in `f32` with exactly the operation order of the C code
//! (no fused multiply-add), so results are bit-identical to ggml.

use super::simd;

/// ggml's `GROUP_MAX_EPS`: groups whose absolute max is below this are treated as all zero.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Number of values in a k-quant super-block (`QK_K`).
pub const QK_K: usize = 256;

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

/// Index and value of the first element with the largest absolute value
/// (`amax`/`max` loop used throughout ggml).
#[inline(always)]
pub fn abs_max(x: &[f32]) -> (f32, f32) {
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
    let n = x.len();
    debug_assert!(w.len() == n && l_out.len() == n);
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    // Candidate 0 is ggml's initial `iscale = -nmax/max`; candidates 1..=18 are
    // `is = -9..=-1, 1..=9`. Each candidate's sums are independent of the others.
    let mut iscales = [0.0f32; 19];
    iscales[0] = -nmaxf / max;
    let mut k = 1;
    for is in -9i32..=9 {
        if is != 0 {
            iscales[k] = -(nmaxf + 0.1 * is as f32) / max;
            k += 1;
        }
    }
    let mut sumlx = [0.0f32; 19];
    let mut suml2 = [0.0f32; 19];
    simd::qx_sums(nmax, x, w, &iscales, &mut sumlx, &mut suml2);

    let mut best_c = 0;
    let mut scale = if suml2[0] != 0.0 {
        sumlx[0] / suml2[0]
    } else {
        0.0
    };
    let mut best = scale * sumlx[0];
    for c in 1..19 {
        if suml2[c] > 0.0 && sumlx[c] * sumlx[c] > best * suml2[c] {
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
            best_c = c;
        }
    }
    let iscale = iscales[best_c];
    for (lo, &v) in l_out.iter_mut().zip(x) {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *lo = (l + nmax) as i8;
    }
    scale
}

/// Scalar kernel of [`make_qx_quants`]: for every candidate inverse scale, the
/// weighted sums `sum w*x*l` and `sum w*l*l` in index order.
pub fn qx_sums_scalar(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    iscales: &[f32],
    sumlx: &mut [f32],
    suml2: &mut [f32],
) {
    for (c, &iscale) in iscales.iter().enumerate() {
        let mut slx = 0.0f32;
        let mut sl2 = 0.0f32;
        for (&v, &wi) in x.iter().zip(w) {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            slx += wi * v * l;
            sl2 += wi * l * l;
        }
        sumlx[c] = slx;
        suml2[c] = sl2;
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

/// A qkx candidate that won: its scale, min and error.
#[derive(Clone, Copy, Debug, Default)]
pub struct QkxCand {
    /// Candidate scale.
    pub scale: f32,
    /// Candidate min (non-positive).
    pub min: f32,
    /// Weighted error of the candidate.
    pub error: f32,
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

/// Solve for a candidate's scale and min from its weighted sums (ggml's `D > 0` branch).
/// Returns `None` when `D <= 0` (candidate skipped).
#[inline(always)]
pub fn qkx_solve(
    sum_w: f32,
    sum_x: f32,
    sum_l: f32,
    sum_l2: f32,
    sum_xl: f32,
) -> Option<(f32, f32)> {
    let d = sum_w * sum_l2 - sum_l * sum_l;
    if !(d > 0.0) {
        return None;
    }
    let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
    let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
    if this_min > 0.0 {
        this_min = 0.0;
        this_scale = sum_xl / sum_l2;
    }
    Some((this_scale, this_min))
}

/// Per-element error term of a qkx search: `w * |s*l + m - x|` or `w * (s*l + m - x)^2`.
#[inline(always)]
pub fn qkx_err_term(use_mad: bool, scale: f32, l: f32, min: f32, x: f32, w: f32) -> f32 {
    let diff = scale * l + min - x;
    let diff = if use_mad { diff.abs() } else { diff * diff };
    w * diff
}

/// Inputs of a qkx candidate search that stay fixed while `min` moves.
#[derive(Clone, Copy, Debug)]
pub struct QkxBlock<'a> {
    /// Values.
    pub x: &'a [f32],
    /// Weights.
    pub w: &'a [f32],
    /// `sum w`.
    pub sum_w: f32,
    /// `sum w*x`.
    pub sum_x: f32,
    /// `max(x)`.
    pub max: f32,
}

/// Where a qkx search starts from: the initial guess (still to be evaluated) or the
/// error of the best candidate so far.
#[derive(Clone, Copy, Debug)]
pub enum QkxBase {
    /// ggml's initial `iscale = nmax/(max - min)`, `scale = 1/iscale` (its error is
    /// evaluated as part of the search).
    Init {
        /// Initial inverse scale.
        iscale: f32,
        /// Initial scale.
        scale: f32,
    },
    /// Error of the best candidate so far.
    Error(f32),
}

/// Error of ggml's initial guess (levels `clamp(nearest_int(iscale*(x - min)), 0, nmax)`).
pub fn qkx_init_error(p: &QkxParams, b: &QkxBlock<'_>, min: f32, iscale: f32, scale: f32) -> f32 {
    let mut err = 0.0f32;
    for (&v, &wi) in b.x.iter().zip(b.w) {
        let l = nearest_int(iscale * (v - min)).clamp(0, p.nmax);
        err += qkx_err_term(p.use_mad, scale, l as f32, min, v, wi);
    }
    err
}

/// Scalar kernel of the qkx search: evaluate candidates `start..=nstep` with a fixed
/// `min`, in order, and return the first one that beats the baseline error.
pub fn qkx_search_scalar(
    p: &QkxParams,
    b: &QkxBlock<'_>,
    min: f32,
    start: i32,
    base: QkxBase,
) -> Option<(i32, QkxCand)> {
    let best_error = match base {
        QkxBase::Init { iscale, scale } => qkx_init_error(p, b, min, iscale, scale),
        QkxBase::Error(e) => e,
    };
    for is in start..=p.nstep {
        let iscale = qkx_iscale(p, is, b.max, min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for (&v, &wi) in b.x.iter().zip(b.w) {
            let lf = qkx_level(p.variant, p.nmax, iscale, v, min) as f32;
            sum_l += wi * lf;
            sum_l2 += wi * lf * lf;
            sum_xl += wi * lf * v;
        }
        let Some((scale, cmin)) = qkx_solve(b.sum_w, b.sum_x, sum_l, sum_l2, sum_xl) else {
            continue;
        };
        let mut err = 0.0f32;
        for (&v, &wi) in b.x.iter().zip(b.w) {
            let lf = qkx_level(p.variant, p.nmax, iscale, v, min) as f32;
            err += qkx_err_term(p.use_mad, scale, lf, cmin, v, wi);
        }
        if err < best_error {
            let c = QkxCand {
                scale,
                min: cmin,
                error: err,
            };
            return Some((is, c));
        }
    }
    None
}

/// ggml's `make_qkx2_quants` / `make_qkx3_quants` (with weights): a scale and a
/// (negated) min for `x` with levels `0..=nmax` written to `l_out`.
///
/// Returns `(scale, the_min)` where `the_min` is ggml's `*the_min` (i.e. `-min`).
pub fn make_qkx_quants(p: &QkxParams, x: &[f32], w: &[f32], l_out: &mut [u8]) -> (f32, f32) {
    let n = x.len();
    debug_assert!(w.len() == n && l_out.len() == n);
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
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmax = p.nmax;
    let iscale0 = nmax as f32 / (max - min);
    let scale0 = 1.0 / iscale0;
    let min0 = min;
    let mut scale = scale0;
    // (is, min it was evaluated with) of the last winning candidate.
    let mut winner: Option<(i32, f32)> = None;
    if p.nstep >= 1 {
        let b = QkxBlock {
            x,
            w,
            sum_w,
            sum_x,
            max,
        };
        // Candidates are evaluated speculatively with the current `min`; the first one
        // that improves the error changes `min`, and the search resumes after it. This
        // is exactly ggml's sequential loop.
        let mut base = QkxBase::Init {
            iscale: iscale0,
            scale: scale0,
        };
        let mut start = 0;
        while start <= p.nstep {
            let won = simd::qkx_search(p, &b, min, start, base);
            let Some((is, c)) = won else { break };
            winner = Some((is, min));
            base = QkxBase::Error(c.error);
            scale = c.scale;
            min = c.min;
            start = is + 1;
        }
    }
    match winner {
        Some((is, wmin)) => {
            let iscale = qkx_iscale(p, is, max, wmin);
            for (lo, &v) in l_out.iter_mut().zip(x) {
                *lo = qkx_level(p.variant, nmax, iscale, v, wmin) as u8;
            }
        }
        None => {
            for (lo, &v) in l_out.iter_mut().zip(x) {
                *lo = nearest_int(iscale0 * (v - min0)).clamp(0, nmax) as u8;
            }
        }
    }
    (scale, -min)
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

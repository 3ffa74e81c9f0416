//! Run-time dispatch between the scalar code and its SIMD (AVX-512 / AVX2) versions.
//!
//! Most kernels put independent groups (sub-blocks) in separate vector lanes: each
//! lane runs ggml's sequential algorithm for its own group, with data-dependent
//! branches turned into per-lane selects. The IQ4_NL kernel puts its independent
//! candidate scales in lanes instead. Either way a lane performs exactly the
//! operations of the scalar code, in the same order (no FMA, no reassociation), so
//! the results are bit-identical; inputs where a shortcut (float rounding instead
//! of `nearest_int`) could differ are detected and left to the scalar code.

// Without x86 kernels the group dispatchers reduce to the scalar fallback.
#![cfg_attr(
    not(target_arch = "x86_64"),
    allow(unused_variables, unused_mut, unused_unsafe, dead_code)
)]

use std::cmp::Ordering;

use super::common::{self, QkxParams, QkxResult, QkxWinner};
use super::iq3::IQ3_CAND;

/// Instruction set a kernel runs with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The calling thread's [`crate::cpu::level`] (always a level this CPU supports).
#[inline]
fn isa() -> Isa {
    match crate::cpu::level() {
        #[cfg(target_arch = "x86_64")]
        crate::cpu::Level::Avx512 => Isa::Avx512,
        #[cfg(target_arch = "x86_64")]
        crate::cpu::Level::Avx2 => Isa::Avx2,
        _ => Isa::Scalar,
    }
}

/// Name of the kernels the calling thread uses: `"avx512"`, `"avx2"` or `"scalar"`.
pub fn active_isa() -> &'static str {
    match isa() {
        Isa::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "avx512",
    }
}

/// Most lanes any kernel uses (AVX-512: 16 f32).
const MAX_LANES: usize = 16;

/// Values per group the group kernels accept.
const MAX_N: usize = 32;

/// Groups `g0..g0 + lanes` of `x` and `w` (groups of `n`) transposed to
/// `[i][lane]`; lanes past the end, or whose values are not all finite, are
/// zero-filled and reported as not usable. `lanes` must be a detected SIMD width.
fn transpose(
    n: usize,
    lanes: usize,
    g0: usize,
    x: &[f32],
    w: &[f32],
    xt: &mut [f32; MAX_N * MAX_LANES],
    wt: &mut [f32; MAX_N * MAX_LANES],
) -> [bool; MAX_LANES] {
    let groups = x.len() / n;
    let mut usable = [false; MAX_LANES];
    for (lane, u) in usable.iter_mut().enumerate().take(lanes) {
        let g = g0 + lane;
        *u = g < groups && all_finite(&x[g * n..(g + 1) * n]);
    }
    // SAFETY: callers only pass a `lanes` whose ISA was detected; the kernels only
    // read groups marked usable, which lie inside `x` and `w`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if lanes == 16 {
            x86::transpose_avx512(n, g0, x, w, &usable, xt, wt);
        } else {
            x86::transpose_avx2(n, g0, x, w, &usable, xt, wt);
        }
    }
    usable
}

/// Whether every value is finite (branch-free, so it vectorizes).
#[inline]
fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(0u32, |a, v| {
        a | ((v.to_bits() & 0x7f80_0000) == 0x7f80_0000) as u32
    }) == 0
}

/// Lanes per vector of the best kernels for this thread (`None`: scalar only).
#[inline]
fn group_lanes(isa: Isa) -> Option<usize> {
    match isa {
        Isa::Scalar => None,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(8),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(16),
    }
}

/// Per-lane results of the `make_qx_quants` group kernel.
#[derive(Default)]
struct QxOut {
    /// Returned scale.
    scale: [f32; MAX_LANES],
    /// Inverse scale of the winning candidate.
    iscale: [f32; MAX_LANES],
    /// 1.0 where the group is all (near) zero.
    zero: [f32; MAX_LANES],
}

/// SIMD [`common::make_qx_quants_multi`]: one group per lane. Sets `done[g]` for
/// every group it handled; the caller runs the scalar code for the others.
pub fn qx_multi(
    nmax: i32,
    n: usize,
    x: &[f32],
    w: &[f32],
    l_out: &mut [i8],
    scales: &mut [f32],
    done: &mut [bool],
) {
    let Some(lanes) = group_lanes(isa()) else {
        return;
    };
    let mut xt = [0.0f32; MAX_N * MAX_LANES];
    let mut wt = [0.0f32; MAX_N * MAX_LANES];
    for g0 in (0..scales.len()).step_by(lanes) {
        let usable = transpose(n, lanes, g0, x, w, &mut xt, &mut wt);
        let mut o = QxOut::default();
        // SAFETY: `group_lanes` only returns a width whose ISA was detected.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if lanes == 16 {
                x86::qx_group_avx512(nmax, n, &xt, &wt, &mut o);
            } else {
                x86::qx_group_avx2(nmax, n, &xt, &wt, &mut o);
            }
        }
        for (lane, &ok) in usable.iter().enumerate().take(lanes) {
            let g = g0 + lane;
            if !ok {
                continue;
            }
            let r = g * n..(g + 1) * n;
            if o.zero[lane] != 0.0 {
                l_out[r].fill(0);
                scales[g] = 0.0;
            } else {
                common::qx_levels(nmax, &x[r.clone()], o.iscale[lane], &mut l_out[r]);
                scales[g] = o.scale[lane];
            }
            done[g] = true;
        }
    }
}

/// Per-lane results of the qkx group kernel.
#[derive(Default)]
struct QkxOut {
    /// `max(x)`.
    max: [f32; MAX_LANES],
    /// Initial min (`min(min(x), 0)`).
    min0: [f32; MAX_LANES],
    /// Initial inverse scale.
    iscale0: [f32; MAX_LANES],
    /// Final scale.
    scale: [f32; MAX_LANES],
    /// Final min.
    min: [f32; MAX_LANES],
    /// Winning candidate (`-1`: initial guess).
    win_is: [f32; MAX_LANES],
    /// Min in effect when the winner was evaluated.
    win_min: [f32; MAX_LANES],
    /// 1.0 where the float rounding shortcut was not provably exact.
    bad: [f32; MAX_LANES],
}

/// SIMD [`common::qkx_search_multi`]: one group per lane, each lane running
/// ggml's sequential candidate loop with selects. Sets `done[g]` for every group it
/// handled; the caller runs the scalar code for the others.
pub fn qkx_multi(
    p: &QkxParams,
    n: usize,
    x: &[f32],
    w: &[f32],
    out: &mut [QkxResult],
    done: &mut [bool],
) {
    let Some(lanes) = group_lanes(isa()) else {
        return;
    };
    let mut xt = [0.0f32; MAX_N * MAX_LANES];
    let mut wt = [0.0f32; MAX_N * MAX_LANES];
    for g0 in (0..out.len()).step_by(lanes) {
        let usable = transpose(n, lanes, g0, x, w, &mut xt, &mut wt);
        let mut o = QkxOut::default();
        // SAFETY: `group_lanes` only returns a width whose ISA was detected.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if lanes == 16 {
                x86::qkx_group_avx512(p, n, &xt, &wt, &mut o);
            } else {
                x86::qkx_group_avx2(p, n, &xt, &wt, &mut o);
            }
        }
        for (lane, &ok) in usable.iter().enumerate().take(lanes) {
            let g = g0 + lane;
            if !ok {
                continue;
            }
            // With finite values max >= min0, so ggml's `max == min` (qkx2) and
            // `max <= min` (qkx3) both mean "not greater".
            if o.max[lane].partial_cmp(&o.min0[lane]) != Some(Ordering::Greater) {
                out[g] = QkxResult {
                    scale: 0.0,
                    the_min: -o.min0[lane],
                    levels: None,
                };
            } else if o.bad[lane] != 0.0 {
                continue;
            } else {
                let win = if o.win_is[lane] < 0.0 {
                    QkxWinner::Init {
                        iscale: o.iscale0[lane],
                        min: o.min0[lane],
                    }
                } else {
                    QkxWinner::Cand {
                        is: o.win_is[lane] as i32,
                        min: o.win_min[lane],
                    }
                };
                out[g] = QkxResult {
                    scale: o.scale[lane],
                    the_min: -o.min[lane],
                    levels: Some((o.max[lane], win)),
                };
            }
            done[g] = true;
        }
    }
}

/// Weighted sums of the IQ4_NL scale search for each of its 16 candidate inverse scales.
#[inline]
pub fn iq4nl_sums(
    x: &[f32],
    w: &[f32],
    ids: &[f32; 16],
    sumqx: &mut [f32; 16],
    sumq2: &mut [f32; 16],
) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::iq4nl_sums_avx512(x, w, ids, sumqx, sumq2) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::iq4nl_sums_avx2(x, w, ids, sumqx, sumq2) },
        _ => super::iq4nl::iq4nl_sums_scalar(x, w, ids, sumqx, sumq2),
    }
}

/// [`common::abs_max`]: the largest `|x[i]|` and the first `x[i]` attaining it.
#[inline]
pub fn abs_max(x: &[f32]) -> (f32, f32) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 if x.len().is_multiple_of(16) => unsafe { x86::abs_max_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 if x.len().is_multiple_of(8) => unsafe { x86::abs_max_avx2(x) },
        _ => common::abs_max_scalar(x),
    }
}

/// [`common::sum_sq_groups`]: per-group sums of squares, each in index order.
#[inline]
pub fn sum_sq_groups(x: &[f32], n: usize, out: &mut [f32]) {
    match group_lanes(isa()) {
        #[cfg(target_arch = "x86_64")]
        Some(lanes) if n <= MAX_N => {
            let mut s = [0.0f32; MAX_LANES];
            for g0 in (0..out.len()).step_by(lanes) {
                let k = (out.len() - g0).min(lanes);
                let mut lane_on = [false; MAX_LANES];
                lane_on[..k].fill(true);
                // SAFETY: `group_lanes` only returns a width whose ISA was detected;
                // only lanes of existing groups are read.
                unsafe {
                    if lanes == 16 {
                        x86::sum_sq_groups_avx512(x, n, g0, &lane_on, &mut s);
                    } else {
                        x86::sum_sq_groups_avx2(x, n, g0, &lane_on, &mut s);
                    }
                }
                out[g0..g0 + k].copy_from_slice(&s[..k]);
            }
        }
        _ => common::sum_sq_groups_scalar(x, n, out),
    }
}

/// IQ4_NL levels (`best_index_int8`) of `id * x[j]` for one block.
#[inline]
pub fn iq4nl_levels(x: &[f32; 32], id: f32, out: &mut [u8; 32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::iq4nl_levels_avx512(x, id, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::iq4nl_levels_avx2(x, id, out) },
        _ => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = super::iq4nl::best_index(id * v) as u8;
            }
        }
    }
}

/// ggml's neighbour search (`iq2_find_best_neighbour`, `iq1_find_best_neighbour2`)
/// over the `n` points of a neighbour list (`bytes`: its [`super::iq_grid::Neighbours`]
/// blocks) for 8 values `x`: the position in the list of the least
/// `sum_i w_i (scale * (c_i + offset) - x_i)^2`, the first on ties; `None` where there
/// is no SIMD kernel (the caller runs the scalar loop).
#[inline]
pub fn neighbour_best(
    bytes: &[i8],
    n: usize,
    x: &[f32],
    w: &[f32],
    scale: f32,
    offset: f32,
) -> Option<usize> {
    use super::iq_grid::NB_BLOCK;
    assert!(x.len() >= 8 && w.len() >= 8 && n > 0);
    assert_eq!(bytes.len(), 8 * NB_BLOCK * n.div_ceil(NB_BLOCK));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`); the lengths are checked.
        Isa::Avx512 => Some(unsafe { x86_iq2::nearest_avx512(bytes, n, x, w, scale, offset) }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX2.
        Isa::Avx2 => Some(unsafe { x86_iq2::nearest_avx2(bytes, n, x, w, scale, offset) }),
        _ => None,
    }
}

/// Prefix sums per half and constants of IQ1_M's split search (`quantize_row_iq1_m_impl`).
pub struct Iq1mSums {
    /// `px[h][j]`: sum of `w x` over the first `j` sorted values that lie in half `h`.
    pub px: [[f32; 17]; 2],
    /// `pw[h][j]`: the same sums of `w`.
    pub pw: [[f32; 17]; 2],
    /// `[txs[h] * p2, txs[h] * m2]` per half.
    pub tx: [[f32; 2]; 2],
    /// `[tws[h] * p2 * p2, tws[h] * m2 * m2]` per half.
    pub tw: [[f32; 2]; 2],
    /// `[cp1, cm1]`.
    pub c1: [f32; 2],
    /// `[cp2, cm2]`.
    pub c2: [f32; 2],
}

/// IQ1_S's exhaustive split search over the prefix sums of the sorted values with the
/// value sets `xs` (`x_p`, `x_m`): `(scale, i1, i2, set)` of the best, if any.
#[inline]
pub fn iq1s_split(
    sumx: &[f32; 33],
    sumw: &[f32; 33],
    xs: [&[f32; 3]; 2],
) -> Option<(f32, usize, usize, usize)> {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::iq1s_split_avx512(sumx, sumw, xs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::iq1s_split_avx2(sumx, sumw, xs) },
        _ => super::iq1::iq1s_split_scalar(sumx, sumw, xs),
    }
}

/// IQ1_M's exhaustive split search over both halves' shifts: `(scale, i1, i2, code)`.
#[inline]
pub fn iq1m_split(s: &Iq1mSums) -> Option<(f32, usize, usize, usize)> {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::iq1m_split_avx512(s) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::iq1m_split_avx2(s) },
        _ => super::iq1::iq1m_split_scalar(s),
    }
}

/// `out[j] = clamp((int)roundf(x[j] * id) + 1, lo, hi) as u8` (the levels of Q2_0, TQ1_0
/// and TQ2_0), bit for bit the scalar expression for every input; `false` (nothing
/// written) at the scalar level or when `x.len()` is not a multiple of the vector width.
#[inline]
pub fn offset_levels(x: &[f32], id: f32, lo: i32, hi: i32, out: &mut [u8]) -> bool {
    assert!(out.len() >= x.len());
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`); `out` is long enough.
        Isa::Avx512 if x.len().is_multiple_of(16) => unsafe {
            x86::offset_levels_avx512(x, id, lo, hi, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`); `out` is long enough.
        Isa::Avx2 if x.len().is_multiple_of(8) => unsafe {
            x86::offset_levels_avx2(x, id, lo, hi, out)
        },
        _ => return false,
    }
    true
}

/// The largest `|x[i]|` when every value is finite (then it does not depend on the
/// order the values are visited in, so it is the scalar loops' maximum), else `None`.
#[inline]
pub fn finite_abs_max(x: &[f32]) -> Option<f32> {
    all_finite(x).then(|| abs_max(x).0)
}

/// The scalar Q8_0 block encoder (`quantize_row_q8_0_ref` of one block: 32 values to
/// 34 bytes) that the SIMD row kernel hands the blocks it cannot reproduce.
pub type LegacyScalar = fn(&[f32], &mut [u8]);

/// The scalar reference encoder of one Q4_0/Q4_1/Q5_0/Q5_1 block that [`legacy_ref`]
/// hands the blocks it cannot reproduce: 32 values to their levels, returning `(d, m)`.
pub type LegacyRefScalar<'a> = &'a dyn Fn(&[f32], &mut [u8; 32]) -> (f32, f32);

/// Which reference path of Q4_0/Q4_1/Q5_0/Q5_1 [`legacy_ref`] runs.
#[derive(Clone, Copy, Debug)]
pub struct LegacyRef {
    /// Largest level: 15 (Q4_x) or 31 (Q5_x).
    pub nmax: i32,
    /// `_1` types (scale and min) rather than `_0` (symmetric scale).
    pub with_min: bool,
}

/// SIMD `quantize_row_q8_0_ref` of whole blocks; `false` at the scalar level (nothing
/// written: the caller runs the scalar code). Blocks with a NaN or infinity go to
/// `scalar`, so the bytes are the scalar code's for any input.
#[inline]
pub fn q8_0_row(x: &[f32], dst: &mut [u8], scalar: LegacyScalar) -> bool {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::q8_0_row_avx512(x, dst, scalar) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::q8_0_row_avx2(x, dst, scalar) },
        _ => return false,
    }
    true
}

/// SIMD reference levels, scales and mins of Q4_0/Q4_1/Q5_0/Q5_1 for whole blocks
/// (`l`: 32 levels per block; `d`, `m`: one per block); `false` at the scalar level
/// (nothing written). Blocks whose result could depend on the order of the scalar loop
/// go to `scalar(block, levels) -> (d, m)`.
#[inline]
pub fn legacy_ref(
    k: LegacyRef,
    x: &[f32],
    l: &mut [u8],
    d: &mut [f32],
    m: &mut [f32],
    scalar: LegacyRefScalar<'_>,
) -> bool {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::legacy_ref_avx512(k, x, l, d, m, scalar) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::legacy_ref_avx2(k, x, l, d, m, scalar) },
        _ => return false,
    }
    true
}

/// Little-endian f16 values to f32 (`dst.len()` of them), exactly as
/// [`common::fp16_to_fp32`]: F16C / AVX-512 conversions, the scalar code for the rest.
#[inline]
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    let done = match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::f16_to_f32_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 and F16C (checked by `isa`: the AVX2 level has both).
        Isa::Avx2 => unsafe { x86::f16_to_f32_avx2(src, dst) },
        _ => 0,
    };
    super::floats::f16_to_f32_scalar(&src[2 * done..], &mut dst[done..]);
}

/// Little-endian bf16 values to f32 (`dst.len()` of them), as
/// [`super::floats::bf16_to_fp32`].
#[inline]
pub fn bf16_to_f32(src: &[u8], dst: &mut [f32]) {
    let done = match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86::bf16_to_f32_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86::bf16_to_f32_avx2(src, dst) },
        _ => 0,
    };
    super::floats::bf16_to_f32_scalar(&src[2 * done..], &mut dst[done..]);
}

#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_iq2;
#[cfg(target_arch = "x86_64")]
mod x86_iq3;
#[cfg(target_arch = "x86_64")]
mod x86_q3k;

/// A Q3_K block's 16 group scales (`d * scale`) from its 110 bytes.
pub type Q3kDl = fn(&[u8]) -> [f32; 16];

/// Q3_K decoding of the whole blocks of `src` into `dst` (256 values each), bit for bit
/// the scalar decoder; `false` (nothing written) where there is no kernel (below AVX-512).
#[inline]
pub fn q3k_dequantize(src: &[u8], dst: &mut [f32], dl: Q3kDl) -> bool {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`); blocks are whole.
        Isa::Avx512 => unsafe { x86_q3k::q3k_dequantize_avx512(src, dst, dl) },
        _ => return false,
    }
    true
}

/// The Q3_K reference path's super-block step: `(super-block, its 16 group scales)` to
/// each group's `d` (the caller stores the block's scales as it goes).
pub type Q3kScales<'a> = &'a mut dyn FnMut(usize, &[f32; 16]) -> [f32; 16];

/// SIMD `quantize_row_q3_K_ref` levels of the super-blocks of `x`: the group searches,
/// `scales` for each super-block, then the final levels (`0..=7`), stored transposed:
/// `t[sb * 256 + i * 16 + group]` is value `i` of group `group`. `false` (nothing done,
/// `scales` not called) at the scalar level or when a value is not finite: the caller
/// runs the scalar code.
#[inline]
pub fn q3k_ref(x: &[f32], t: &mut [u8], scales: Q3kScales<'_>) -> bool {
    assert!(x.len().is_multiple_of(256) && t.len() >= x.len());
    if !all_finite(x) {
        return false;
    }
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`); the lengths are checked.
        Isa::Avx512 => unsafe { x86_q3k::q3k_ref_avx512(x, t, scales) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX2.
        Isa::Avx2 => unsafe { x86_q3k::q3k_ref_avx2(x, t, scales) },
        _ => return false,
    }
    true
}

/// IQ3 levels of every candidate scale `ids[c]` of a group: `lev[i][c] =
/// clamp(nearest_int((ids[c]*x[i] - 1)/2), 0, 7)`.
#[inline]
pub fn iq3_levels(xval: &[f32; 32], ids: &[f32; IQ3_CAND], lev: &mut [[i32; IQ3_CAND]; 32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86_iq3::iq3_levels_avx512(xval, ids, lev) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86_iq3::iq3_levels_avx2(xval, ids, lev) },
        _ => super::iq3::iq3_levels_scalar(xval, ids, lev),
    }
}

/// The IQ3 weighted sums of every candidate: `sum wx[i]*q` and `sum (w[i]*q)*q` with
/// `q = 2*lev[i][c] + 1`, in index order.
#[inline]
pub fn iq3_sums(
    wx: &[f32; 32],
    w: &[f32; 32],
    lev: &[[i32; IQ3_CAND]; 32],
    sumqx: &mut [f32; IQ3_CAND],
    sumq2: &mut [f32; IQ3_CAND],
) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86_iq3::iq3_sums_avx512(wx, w, lev, sumqx, sumq2) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86_iq3::iq3_sums_avx2(wx, w, lev, sumqx, sumq2) },
        _ => super::iq3::iq3_sums_scalar(wx, w, lev, sumqx, sumq2),
    }
}

/// `iq3_find_best_neighbour` over a padded coordinate-major neighbour list of `n` points:
/// the position of the first nearest one.
#[inline]
pub fn iq3_best_neighbour(soa: &[f32], n: usize, x: &[f32; 4], w: &[f32; 4], scale: f32) -> usize {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        Isa::Avx512 => unsafe { x86_iq3::iq3_neighbour_avx512(soa, n, x, w, scale) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        Isa::Avx2 => unsafe { x86_iq3::iq3_neighbour_avx2(soa, n, x, w, scale) },
        _ => super::iq3::iq3_best_neighbour_scalar(soa, n, x, w, scale),
    }
}

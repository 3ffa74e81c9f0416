//! Run-time dispatch between the scalar kernels and their SIMD versions.
//!
//! The SIMD kernels evaluate independent candidate scales in separate vector lanes.
//! Each lane performs exactly the operations of the scalar code for its candidate,
//! in the same order (no FMA, no reassociation), so results are bit-identical.

use std::cell::Cell;

use super::common::{self, QkxBase, QkxBlock, QkxCand, QkxParams};

/// Highest SIMD level the kernels may use (see [`set_simd_limit`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum SimdLevel {
    /// Portable scalar code only.
    Scalar,
    /// AVX2 (8 lanes) when the CPU has it.
    Avx2,
    /// AVX-512F (16 lanes) when the CPU has it.
    Avx512,
}

thread_local! {
    static LIMIT: Cell<SimdLevel> = const { Cell::new(SimdLevel::Avx512) };
}

/// Cap the SIMD level used by the calling thread (default: the best the CPU has).
/// Output bytes are identical at every level; this exists for testing and benchmarking.
pub fn set_simd_limit(level: SimdLevel) {
    LIMIT.with(|f| f.set(level));
}

/// Force (or stop forcing) the scalar kernels on the calling thread
/// (shorthand for [`set_simd_limit`]).
pub fn set_force_scalar(on: bool) {
    set_simd_limit(if on {
        SimdLevel::Scalar
    } else {
        SimdLevel::Avx512
    });
}

/// Whether the scalar kernels are forced on the calling thread (see [`set_force_scalar`]).
pub fn force_scalar() -> bool {
    LIMIT.with(|f| f.get()) == SimdLevel::Scalar
}

/// Instruction set a kernel runs with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

#[inline]
fn isa() -> Isa {
    let limit = LIMIT.with(|f| f.get());
    #[cfg(target_arch = "x86_64")]
    {
        if limit >= SimdLevel::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if limit >= SimdLevel::Avx2 && std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    let _ = limit;
    Isa::Scalar
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

/// Number of candidates of `make_qx_quants` (the initial scale plus `is = ±1..=±9`).
pub const QX_CANDS: usize = 19;

/// Weighted sums of `make_qx_quants` for each candidate inverse scale.
#[inline]
pub fn qx_sums(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    iscales: &[f32; QX_CANDS],
    sumlx: &mut [f32; QX_CANDS],
    suml2: &mut [f32; QX_CANDS],
) {
    // The lane kernels round with float ops, exact while |iscale*x| stays small,
    // which holds for finite x (|iscale*x| <= nmax + 1).
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if x.iter().all(|v| v.is_finite()) => {
            // SAFETY: the CPU supports AVX-512F (checked by `isa`).
            unsafe { x86::qx_sums_avx512(nmax, x, w, iscales, sumlx, suml2) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if x.iter().all(|v| v.is_finite()) => {
            // SAFETY: the CPU supports AVX2 (checked by `isa`).
            unsafe { x86::qx_sums_avx2(nmax, x, w, iscales, sumlx, suml2) }
        }
        _ => common::qx_sums_scalar(nmax, x, w, iscales, sumlx, suml2),
    }
}

/// First winning candidate of a qkx search from `start` with a fixed `min`
/// (see [`common::qkx_search_scalar`] for the semantics).
#[inline]
pub fn qkx_search(
    p: &QkxParams,
    b: &QkxBlock<'_>,
    min: f32,
    start: i32,
    base: QkxBase,
) -> Option<(i32, QkxCand)> {
    let lanes = match isa() {
        Isa::Scalar => None,
        // SAFETY: the CPU supports AVX-512F (checked by `isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::qkx_search_avx512(p, b, min, start, base) },
        // SAFETY: the CPU supports AVX2 (checked by `isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::qkx_search_avx2(p, b, min, start, base) },
    };
    lanes.unwrap_or_else(|| common::qkx_search_scalar(p, b, min, start, base))
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX-512 and AVX2 kernels, written once against the small [`Lanes`] trait.

    use std::arch::x86_64::*;

    use std::mem::MaybeUninit;

    use super::super::common::{self, Qkx, QkxBase, QkxBlock, QkxCand, QkxParams};
    use super::super::iq4nl::{IQ4NL_MID2, KVALUES_IQ4NL};
    use super::QX_CANDS;

    /// `12582912.f`, ggml's rounding constant: `(v + M) - M` rounds `v` to the nearest
    /// integer (ties to even) for `|v| <= 2^22`, exactly like `nearest_int`.
    const MAGIC: f32 = 12_582_912.0;

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
        /// `m ? t : f`.
        unsafe fn select(m: Self::M, t: Self::V, f: Self::V) -> Self::V;
        unsafe fn splat_i(x: i32) -> Self::I;
        unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I;
        /// `m ? t : f` on integers.
        unsafe fn select_i(m: Self::M, t: Self::I, f: Self::I) -> Self::I;
        unsafe fn table(t: &[f32; 16]) -> Self::T;
        /// `t[idx]` for `idx` in `0..16`.
        unsafe fn lookup(t: Self::T, idx: Self::I) -> Self::V;
        /// Mask bits, lane 0 in bit 0.
        unsafe fn bits(m: Self::M) -> u32;
        /// Mask with only lane 0 set.
        unsafe fn lane0() -> Self::M;
        /// `[0.0, 1.0, 2.0, ...]`.
        unsafe fn iota() -> Self::V;
        /// Lane 0.
        unsafe fn first(v: Self::V) -> f32;
        /// Largest lane (NaN-free input).
        unsafe fn reduce_max(v: Self::V) -> f32;
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
        unsafe fn bits(m: __mmask16) -> u32 {
            m as u32
        }
        #[inline(always)]
        unsafe fn lane0() -> __mmask16 {
            1
        }
        #[inline(always)]
        unsafe fn iota() -> __m512 {
            _mm512_setr_ps(
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0,
            )
        }
        #[inline(always)]
        unsafe fn first(v: __m512) -> f32 {
            _mm512_cvtss_f32(v)
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512) -> f32 {
            _mm512_reduce_max_ps(v)
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
        unsafe fn bits(m: __m256) -> u32 {
            _mm256_movemask_ps(m) as u32
        }
        #[inline(always)]
        unsafe fn lane0() -> __m256 {
            _mm256_castsi256_ps(_mm256_setr_epi32(-1, 0, 0, 0, 0, 0, 0, 0))
        }
        #[inline(always)]
        unsafe fn iota() -> __m256 {
            _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
        }
        #[inline(always)]
        unsafe fn first(v: __m256) -> f32 {
            _mm256_cvtss_f32(v)
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m256) -> f32 {
            let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ps(m, _mm_shuffle_ps::<1>(m, m));
            _mm_cvtss_f32(m)
        }
    }

    /// `make_qx_quants` candidate sums, `K` vectors of candidates.
    #[inline(always)]
    unsafe fn qx_kernel<S: Lanes, const K: usize>(
        nmax: i32,
        x: &[f32],
        w: &[f32],
        iscales: &[f32; QX_CANDS],
        sumlx: &mut [f32; QX_CANDS],
        suml2: &mut [f32; QX_CANDS],
    ) {
        let mut lanes = [0.0f32; 48];
        lanes[..QX_CANDS].copy_from_slice(iscales);
        let zero = S::splat(0.0);
        let magic = S::splat(MAGIC);
        let lo = S::splat(-nmax as f32);
        let hi = S::splat((nmax - 1) as f32);
        let mut isc = [zero; K];
        for (k, v) in isc.iter_mut().enumerate() {
            *v = S::load(&lanes[k * S::N..]);
        }
        let mut slx = [zero; K];
        let mut sl2 = [zero; K];
        for (&xi, &wi) in x.iter().zip(w) {
            let xv = S::splat(xi);
            let wv = S::splat(wi);
            let wx = S::splat(wi * xi);
            for k in 0..K {
                let v = S::mul(isc[k], xv);
                let r = S::sub(S::add(v, magic), magic);
                let l = S::min(S::max(r, lo), hi);
                slx[k] = S::add(slx[k], S::mul(wx, l));
                sl2[k] = S::add(sl2[k], S::mul(S::mul(wv, l), l));
            }
        }
        let mut a = [0.0f32; 48];
        let mut b = [0.0f32; 48];
        for k in 0..K {
            S::store(slx[k], &mut a[k * S::N..]);
            S::store(sl2[k], &mut b[k * S::N..]);
        }
        sumlx.copy_from_slice(&a[..QX_CANDS]);
        suml2.copy_from_slice(&b[..QX_CANDS]);
    }

    /// Per-search constants of the qkx lane kernel.
    struct QkxSetup<'a, S: Lanes> {
        p: &'a QkxParams,
        b: &'a QkxBlock<'a>,
        /// `x[i] - min` with the current `min`.
        xm: [f32; 32],
        /// `max - min`.
        range: f32,
        /// Lane `j` of the search evaluates candidate `is = j + is_offset`.
        is_offset: i32,
        /// Number of lanes (init lane included).
        nl: usize,
        /// `(iscale, scale, min)` of ggml's initial guess in lane 0.
        init: Option<(f32, f32, f32)>,
        _s: std::marker::PhantomData<S>,
    }

    /// Lane-parallel qkx search; `None` when the float rounding shortcut might differ
    /// from `nearest_int` (huge or non-finite `iscale*(x - min)`).
    #[inline(always)]
    unsafe fn qkx_search<S: Lanes>(
        p: &QkxParams,
        b: &QkxBlock<'_>,
        min: f32,
        start: i32,
        base: QkxBase,
    ) -> Option<Option<(i32, QkxCand)>> {
        let n = b.x.len();
        if n > 32 || !n.is_multiple_of(S::N) || start > p.nstep {
            return None;
        }
        let mut xm = [0.0f32; 32];
        let minv = S::splat(min);
        let mut bound = S::splat(0.0);
        for c in (0..n).step_by(S::N) {
            let v = S::sub(S::load(&b.x[c..]), minv);
            S::store(v, &mut xm[c..]);
            // NaN lanes keep the bound (they round to 0 either way).
            bound = S::max(S::abs(v), bound);
        }
        let bound = S::reduce_max(bound);
        let range = b.max - min;
        let (init, best) = match base {
            QkxBase::Init { iscale, scale } => (Some((iscale, scale, min)), f32::NAN),
            QkxBase::Error(e) => (None, e),
        };
        let ninit = init.is_some() as usize;
        // The initial guess always rounds like make_qkx2_quants; so do qkx2 candidates.
        // Candidate inverse scales grow with `is`, so the last one bounds them all.
        let mut worst = init.map_or(0.0, |(i0, _, _)| i0.abs());
        if p.variant == Qkx::V2 {
            let last = common::qkx_iscale(p, p.nstep, b.max, min).abs();
            worst = if last > worst { last } else { worst };
        }
        if !(worst * bound <= 4_194_303.0) {
            return None;
        }
        let setup = QkxSetup::<S> {
            p,
            b,
            xm,
            range,
            is_offset: start - ninit as i32,
            nl: ninit + (p.nstep - start + 1) as usize,
            init,
            _s: std::marker::PhantomData,
        };
        let mut best = best;
        let mut c0 = 0;
        while c0 < setup.nl {
            let k = (setup.nl - c0).div_ceil(S::N).min(3);
            let r = match k {
                1 => qkx_chunk::<S, 1>(&setup, c0, &mut best),
                2 => qkx_chunk::<S, 2>(&setup, c0, &mut best),
                _ => qkx_chunk::<S, 3>(&setup, c0, &mut best),
            };
            if r.is_some() {
                return Some(r);
            }
            c0 += k * S::N;
        }
        Some(None)
    }

    /// Evaluate lanes `c0..c0 + K*N` of a qkx search and return the first winner;
    /// `best` is the error to beat (set from the init lane when it is in this chunk).
    #[inline(always)]
    unsafe fn qkx_chunk<S: Lanes, const K: usize>(
        q: &QkxSetup<'_, S>,
        c0: usize,
        best: &mut f32,
    ) -> Option<(i32, QkxCand)> {
        let p = q.p;
        let n = q.b.x.len();
        let zero = S::splat(0.0);
        let magic = S::splat(MAGIC);
        let nmaxv = S::splat(p.nmax as f32);
        let with_init = c0 == 0 && q.init.is_some();
        let mut isc = [zero; K];
        for (k, v) in isc.iter_mut().enumerate() {
            let is = S::add(
                S::iota(),
                S::splat((c0 + k * S::N) as f32 + q.is_offset as f32),
            );
            let num = S::add(
                S::add(S::splat(p.rmin), S::mul(S::splat(p.rdelta), is)),
                nmaxv,
            );
            *v = S::div(num, S::splat(q.range));
        }
        if let (true, Some((i0, _, _))) = (with_init, q.init) {
            isc[0] = S::select(S::lane0(), S::splat(i0), isc[0]);
        }
        let mut s_l = [zero; K];
        let mut s_l2 = [zero; K];
        let mut s_xl = [zero; K];
        let mut levels = [[MaybeUninit::<S::V>::uninit(); K]; 32];
        for i in 0..n {
            let xm = S::splat(q.xm[i]);
            let wv = S::splat(q.b.w[i]);
            let xv = S::splat(q.b.x[i]);
            for k in 0..K {
                let v = S::mul(isc[k], xm);
                let t = S::min(S::max(v, zero), nmaxv);
                let l = S::sub(S::add(t, magic), magic);
                levels[i][k] = MaybeUninit::new(l);
                let wl = S::mul(wv, l);
                s_l[k] = S::add(s_l[k], wl);
                s_l2[k] = S::add(s_l2[k], S::mul(wl, l));
                s_xl[k] = S::add(s_xl[k], S::mul(wl, xv));
            }
        }
        let sw = S::splat(q.b.sum_w);
        let sx = S::splat(q.b.sum_x);
        let mut sc = [zero; K];
        let mut mn = [zero; K];
        let mut dd = [zero; K];
        for k in 0..K {
            dd[k] = S::sub(S::mul(sw, s_l2[k]), S::mul(s_l[k], s_l[k]));
            let scale = S::div(S::sub(S::mul(sw, s_xl[k]), S::mul(sx, s_l[k])), dd[k]);
            let m = S::div(S::sub(S::mul(s_l2[k], sx), S::mul(s_l[k], s_xl[k])), dd[k]);
            let pos = S::gt(m, zero);
            mn[k] = S::select(pos, zero, m);
            sc[k] = S::select(pos, S::div(s_xl[k], s_l2[k]), scale);
        }
        if let (true, Some((_, scale0, min0))) = (with_init, q.init) {
            sc[0] = S::select(S::lane0(), S::splat(scale0), sc[0]);
            mn[0] = S::select(S::lane0(), S::splat(min0), mn[0]);
        }
        let mut err = [zero; K];
        for i in 0..n {
            let wv = S::splat(q.b.w[i]);
            let xv = S::splat(q.b.x[i]);
            for k in 0..K {
                let l = levels[i][k].assume_init();
                let diff = S::sub(S::add(S::mul(sc[k], l), mn[k]), xv);
                let diff = if p.use_mad {
                    S::abs(diff)
                } else {
                    S::mul(diff, diff)
                };
                err[k] = S::add(err[k], S::mul(wv, diff));
            }
        }
        if with_init {
            *best = S::first(err[0]);
        }
        let bestv = S::splat(*best);
        for k in 0..K {
            let lane_base = c0 + k * S::N;
            let mut bits = S::bits(S::gt(dd[k], zero)) & S::bits(S::gt(bestv, err[k]));
            if k == 0 && with_init {
                bits &= !1;
            }
            if q.nl < lane_base + S::N {
                bits &= (1u32 << (q.nl.saturating_sub(lane_base))) - 1;
            }
            if bits != 0 {
                let j = bits.trailing_zeros() as usize;
                let mut a = [0.0f32; 16];
                S::store(sc[k], &mut a);
                let scale = a[j];
                S::store(mn[k], &mut a);
                let min = a[j];
                S::store(err[k], &mut a);
                let error = a[j];
                let is = (lane_base + j) as i32 + q.is_offset;
                return Some((is, QkxCand { scale, min, error }));
            }
        }
        None
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
        let mut vals = [0.0f32; 16];
        let mut mids = [0.0f32; 16];
        for j in 0..16 {
            vals[j] = KVALUES_IQ4NL[j] as f32;
            if j > 0 {
                mids[j] = IQ4NL_MID2[j - 1];
            }
        }
        let tv = S::table(&vals);
        let tm = S::table(&mids);
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
                let x2 = S::add(v, v);
                let mut idx = S::splat_i(0);
                for &st in &steps {
                    let j = S::add_i(idx, st);
                    idx = S::select_i(S::ge(x2, S::lookup(tm, j)), j, idx);
                }
                let q = S::lookup(tv, idx);
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

    /// AVX-512 entry of the `make_qx_quants` sums.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn qx_sums_avx512(
        nmax: i32,
        x: &[f32],
        w: &[f32],
        iscales: &[f32; QX_CANDS],
        sumlx: &mut [f32; QX_CANDS],
        suml2: &mut [f32; QX_CANDS],
    ) {
        qx_kernel::<Avx512, 2>(nmax, x, w, iscales, sumlx, suml2)
    }

    /// AVX2 entry of the `make_qx_quants` sums.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn qx_sums_avx2(
        nmax: i32,
        x: &[f32],
        w: &[f32],
        iscales: &[f32; QX_CANDS],
        sumlx: &mut [f32; QX_CANDS],
        suml2: &mut [f32; QX_CANDS],
    ) {
        qx_kernel::<Avx2, 3>(nmax, x, w, iscales, sumlx, suml2)
    }

    /// AVX-512 entry of the qkx search.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn qkx_search_avx512(
        p: &QkxParams,
        b: &QkxBlock<'_>,
        min: f32,
        start: i32,
        base: QkxBase,
    ) -> Option<Option<(i32, QkxCand)>> {
        qkx_search::<Avx512>(p, b, min, start, base)
    }

    /// AVX2 entry of the qkx search.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn qkx_search_avx2(
        p: &QkxParams,
        b: &QkxBlock<'_>,
        min: f32,
        start: i32,
        base: QkxBase,
    ) -> Option<Option<(i32, QkxCand)>> {
        qkx_search::<Avx2>(p, b, min, start, base)
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
}

//! AVX-512 / AVX2 kernels of the IQ3 search: the candidate scales of a group in lanes
//! (levels, then the weighted sums) and the neighbour lists in lanes. Each lane performs
//! the scalar code's operations in its order, so the results are bit-identical.

use super::super::iq3::{first_nearest, IQ3_CAND, MAX_NEIGHBOURS, NEIGHBOUR_PAD};
use super::x86::{Avx2, Avx512, Lanes};

/// Levels `clamp(nearest_int((id*x - 1)/2), 0, 7)` of every candidate `ids[c]` for the 32
/// values, stored `lev[i][c]`.
#[inline(always)]
unsafe fn cand_levels<S: Lanes>(
    xval: &[f32; 32],
    ids: &[f32; IQ3_CAND],
    lev: &mut [[i32; IQ3_CAND]; 32],
) {
    let half = S::splat(0.5);
    let one = S::splat(1.0);
    let zero = S::splat_i(0);
    let seven = S::splat_i(7);
    for c0 in (0..IQ3_CAND).step_by(S::N) {
        let id = S::load(&ids[c0..]);
        for (i, &x) in xval.iter().enumerate() {
            let t = S::mul(half, S::sub(S::mul(id, S::splat(x)), one));
            let l = S::min_i(S::max_i(S::nearest_int(t), zero), seven);
            S::store_i(l, &mut lev[i][c0..]);
        }
    }
}

/// `sum (w*x)*q` and `sum (w*q)*q` with `q = 2l + 1`, in index order, per candidate.
#[inline(always)]
unsafe fn cand_sums<S: Lanes>(
    wx: &[f32; 32],
    w: &[f32; 32],
    lev: &[[i32; IQ3_CAND]; 32],
    sumqx: &mut [f32; IQ3_CAND],
    sumq2: &mut [f32; IQ3_CAND],
) {
    let one = S::splat_i(1);
    for c0 in (0..IQ3_CAND).step_by(S::N) {
        let mut sqx = S::splat(0.0);
        let mut sq2 = S::splat(0.0);
        for i in 0..32 {
            let l = S::load_i(&lev[i][c0..]);
            let q = S::cvt_i(S::add_i(S::add_i(l, l), one));
            sqx = S::add(sqx, S::mul(S::splat(wx[i]), q));
            sq2 = S::add(sq2, S::mul(S::mul(S::splat(w[i]), q), q));
        }
        S::store(sqx, &mut sumqx[c0..]);
        S::store(sq2, &mut sumq2[c0..]);
    }
}

/// The first smallest `sum w (scale*q - x)^2` over a padded coordinate-major list: the
/// distances in lanes, then the scalar scan's strict `<` over them in order.
#[inline(always)]
unsafe fn best_neighbour<S: Lanes>(
    soa: &[f32],
    n: usize,
    x: &[f32; 4],
    w: &[f32; 4],
    scale: f32,
) -> usize {
    let s = S::splat(scale);
    let xs = [
        S::splat(x[0]),
        S::splat(x[1]),
        S::splat(x[2]),
        S::splat(x[3]),
    ];
    let ws = [
        S::splat(w[0]),
        S::splat(w[1]),
        S::splat(w[2]),
        S::splat(w[3]),
    ];
    let mut d = [0.0f32; MAX_NEIGHBOURS];
    let chunks = n.div_ceil(NEIGHBOUR_PAD);
    for (c, chunk) in soa[..chunks * 4 * NEIGHBOUR_PAD]
        .chunks_exact(4 * NEIGHBOUR_PAD)
        .enumerate()
    {
        for half in (0..NEIGHBOUR_PAD).step_by(S::N) {
            let mut d2 = S::splat(0.0);
            for i in 0..4 {
                let q = S::load(&chunk[i * NEIGHBOUR_PAD + half..]);
                let diff = S::sub(S::mul(s, q), xs[i]);
                d2 = S::add(d2, S::mul(S::mul(ws[i], diff), diff));
            }
            S::store(d2, &mut d[c * NEIGHBOUR_PAD + half..]);
        }
    }
    first_nearest(&d[..n])
}

macro_rules! entries {
    ($($levels:ident, $sums:ident, $nb:ident, $s:ty, $feat:literal;)*) => {$(
        #[doc = concat!("[`cand_levels`] with ", $feat, ".")]
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $levels(
            xval: &[f32; 32],
            ids: &[f32; IQ3_CAND],
            lev: &mut [[i32; IQ3_CAND]; 32],
        ) {
            cand_levels::<$s>(xval, ids, lev)
        }

        #[doc = concat!("[`cand_sums`] with ", $feat, ".")]
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $sums(
            wx: &[f32; 32],
            w: &[f32; 32],
            lev: &[[i32; IQ3_CAND]; 32],
            sumqx: &mut [f32; IQ3_CAND],
            sumq2: &mut [f32; IQ3_CAND],
        ) {
            cand_sums::<$s>(wx, w, lev, sumqx, sumq2)
        }

        #[doc = concat!("[`best_neighbour`] with ", $feat, ".")]
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $nb(
            soa: &[f32],
            n: usize,
            x: &[f32; 4],
            w: &[f32; 4],
            scale: f32,
        ) -> usize {
            best_neighbour::<$s>(soa, n, x, w, scale)
        }
    )*};
}

entries! {
    iq3_levels_avx512, iq3_sums_avx512, iq3_neighbour_avx512, Avx512, "avx512f";
    iq3_levels_avx2, iq3_sums_avx2, iq3_neighbour_avx2, Avx2, "avx2";
}

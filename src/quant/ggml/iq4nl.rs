//! IQ4_NL (`{ f16 d; u8 qs[16] }` per 32 values) and IQ4_XS (a 256-value super-block of
//! 32-value IQ4_NL groups with 6-bit group scales): levels from a fixed non-linear table,
//! one scale search per 32 values (`quantize_row_iq4_nl_impl`).

use super::common::{
    abs_max, imatrix_weights, nearest_int, read_fp16, sum_sq, write_fp16, GROUP_MAX_EPS,
};
use super::simd;
use super::Codec;
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockIq4Nl, BlockIq4Xs, QK, QK_K};
use crate::formats::ggml_type::GgmlType;
use std::mem::size_of;

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL codec (ggml type 20). ggml always runs its imatrix-capable path.
pub const IQ4_NL: Codec = Codec {
    ty: GgmlType::IQ4_NL,
    quantize_row: quantize_row_iq4_nl,
    dequantize: dequantize_iq4_nl,
};

/// IQ4_XS codec (ggml type 23). ggml always runs its imatrix-capable path.
pub const IQ4_XS: Codec = Codec {
    ty: GgmlType::IQ4_XS,
    quantize_row: quantize_row_iq4_xs,
    dequantize: dequantize_iq4_xs,
};

/// Doubled midpoints between consecutive table values: `val[j-1] + val[j]`, `j = 1..16`.
pub const IQ4NL_MID2: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut j = 1;
    while j < 16 {
        m[j - 1] = (KVALUES_IQ4NL[j - 1] as i32 + KVALUES_IQ4NL[j] as i32) as f32;
        j += 1;
    }
    m
};

/// ggml's `best_index_int8` for the IQ4_NL table: the level `x` rounds to, where a
/// value exactly on a midpoint takes the upper level.
#[inline(always)]
pub fn best_index(x: f32) -> usize {
    let x2 = x + x;
    let mut idx = 0usize;
    let mut step = 8usize;
    while step > 0 {
        let j = idx + step;
        if x2 >= IQ4NL_MID2[j - 1] {
            idx = j;
        }
        step >>= 1;
    }
    idx
}

fn quantize_row_iq4_nl(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let mut w = [0.0f32; QK];
    for (ib, (x, y)) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(size_of::<BlockIq4Nl>()))
        .enumerate()
    {
        let x: &[f32; QK] = x.try_into().unwrap();
        let sigma2 = sum_sq(x) * (2.0 / QK as f32);
        let d = group_scale(
            x,
            imatrix.map(|qw| &qw[ib * QK..(ib + 1) * QK]),
            sigma2,
            &mut w,
        );
        write_fp16(y, 0, d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        pack_group(x, id, &mut y[2..2 + QK / 2]);
    }
}

/// The best scale of one 32-value group (0 for an all-(near-)zero group): its weights
/// (`qw * sqrt(sigma2 + x^2)` with importance weights `qw`, else `x^2`) written to `w`,
/// then the search of `quantize_row_iq4_nl_impl`.
fn group_scale(x: &[f32; QK], qw: Option<&[f32]>, sigma2: f32, w: &mut [f32; QK]) -> f32 {
    match qw {
        Some(qw) => imatrix_weights(qw, x, sigma2, w),
        None => {
            for (wi, &v) in w.iter_mut().zip(x) {
                *wi = v * v;
            }
        }
    }
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        0.0
    } else {
        block_scale(x, w, max)
    }
}

/// The levels of `id * x` packed into 16 bytes (`qs[j] = L[j] | L[j + 16] << 4`).
fn pack_group(x: &[f32; QK], id: f32, qs: &mut [u8]) {
    let mut l = [0u8; QK];
    simd::iq4nl_levels(x, id, &mut l);
    for j in 0..QK / 2 {
        qs[j] = l[j] | (l[j + QK / 2] << 4);
    }
}

fn quantize_row_iq4_xs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    const NG: usize = QK_K / QK;
    let mut w = [0.0f32; QK];
    for (ibl, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockIq4Xs>(dst))
        .enumerate()
    {
        let sigma2 = sum_sq(x) * (2.0 / QK_K as f32);
        let mut scales = [0.0f32; NG];
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        for (g, s) in scales.iter_mut().enumerate() {
            let xg: &[f32; QK] = x[g * QK..(g + 1) * QK].try_into().unwrap();
            let qw = imatrix.map(|qw| &qw[ibl * QK_K + g * QK..ibl * QK_K + (g + 1) * QK]);
            *s = group_scale(xg, qw, sigma2, &mut w);
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        // The super-block scale; the groups use it unrounded, as ggml does.
        let d = -max_scale / 32.0;
        write_fp16(&mut y.d, 0, d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        y.scales_l = [0; QK_K / 64];
        for (g, &s) in scales.iter().enumerate() {
            let l = nearest_int(id * s).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xg: &[f32; QK] = x[g * QK..(g + 1) * QK].try_into().unwrap();
            pack_group(xg, idl, &mut y.qs[g * QK / 2..(g + 1) * QK / 2]);
            let l = (l + 32) as u8;
            y.scales_l[g / 2] |= (l & 0xf) << (4 * (g % 2));
            scales_h |= ((l >> 4) as u16) << (2 * g);
        }
        y.scales_h = scales_h.to_le_bytes();
    }
}

/// The scale search of `quantize_row_iq4_nl_impl` (`ntry = 7`) for a non-zero block.
fn block_scale(x: &[f32], w: &[f32], max: f32) -> f32 {
    // Candidate 0: ggml's initial `id = 1/d` with `d = -max/values[0]`;
    // candidates 1..=15: `id = (itry + values[0])/max` for `itry = -7..=7`.
    let mut ids = [0.0f32; 16];
    let d0 = -max / KVALUES_IQ4NL[0] as f32;
    ids[0] = 1.0 / d0;
    for (k, itry) in (-7i32..=7).enumerate() {
        ids[k + 1] = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
    }
    let mut sumqx = [0.0f32; 16];
    let mut sumq2 = [0.0f32; 16];
    simd::iq4nl_sums(x, w, &ids, &mut sumqx, &mut sumq2);
    let mut d = if sumq2[0] > 0.0 {
        sumqx[0] / sumq2[0]
    } else {
        0.0
    };
    let mut best = d * sumqx[0];
    for c in 1..16 {
        if sumq2[c] > 0.0 && sumqx[c] * sumqx[c] > best * sumq2[c] {
            d = sumqx[c] / sumq2[c];
            best = d * sumqx[c];
        }
    }
    d
}

/// Scalar kernel of the IQ4_NL scale search: `sum w*q*x` and `sum w*q*q` per candidate.
pub fn iq4nl_sums_scalar(x: &[f32], w: &[f32], ids: &[f32], sumqx: &mut [f32], sumq2: &mut [f32]) {
    for (c, &id) in ids.iter().enumerate() {
        let mut sqx = 0.0f32;
        let mut sq2 = 0.0f32;
        for (&v, &wi) in x.iter().zip(w) {
            let q = KVALUES_IQ4NL[best_index(id * v)] as f32;
            sqx += wi * q * v;
            sq2 += wi * q * q;
        }
        sumqx[c] = sqx;
        sumq2[c] = sq2;
    }
}

fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq4Nl>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = read_fp16(&b.d, 0);
        for j in 0..QK / 2 {
            y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0x0f) as usize] as f32;
            y[j + QK / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

fn dequantize_iq4_xs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq4Xs>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        let scales_h = u16::from_le_bytes(b.scales_h);
        for (g, (yg, qs)) in y
            .chunks_exact_mut(QK)
            .zip(b.qs.chunks_exact(QK / 2))
            .enumerate()
        {
            let ls = ((b.scales_l[g / 2] >> (4 * (g % 2))) & 0xf) as i32
                | ((((scales_h >> (2 * g)) & 3) as i32) << 4);
            let dl = d * (ls - 32) as f32;
            for j in 0..QK / 2 {
                yg[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0f) as usize] as f32;
                yg[j + QK / 2] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's older `best_index_int8` (nearest value, bisection with explicit ends).
    fn best_index_linear(x: f32) -> usize {
        let v = KVALUES_IQ4NL;
        if x <= v[0] as f32 {
            return 0;
        }
        if x >= v[15] as f32 {
            return 15;
        }
        let mut best = 0;
        for j in 1..16 {
            if x + x >= (v[j - 1] as i32 + v[j] as i32) as f32 {
                best = j;
            }
        }
        best
    }

    #[test]
    fn iq4_xs_round_trip_and_edge_rows() {
        use super::super::round_trip;
        let rel = |x: &[f32], y: &[f32]| {
            let e: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
            (e / x.iter().map(|a| a * a).sum::<f32>()).sqrt()
        };
        // Zeros, and an all-zero group inside a block, decode to zeros.
        assert!(round_trip(&IQ4_XS, &[0.0; QK_K]).iter().all(|&v| v == 0.0));
        let mut x: Vec<f32> = (0..QK_K)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
            .collect();
        x[QK..2 * QK].fill(0.0);
        let y = round_trip(&IQ4_XS, &x);
        assert!(y[QK..2 * QK].iter().all(|&v| v == 0.0));
        assert!(rel(&x, &y) < 0.1, "{}", rel(&x, &y));
        // Groups of very different magnitudes keep their own 6-bit scales.
        for (g, c) in x.chunks_mut(QK).enumerate() {
            c.iter_mut().for_each(|v| *v *= (g + 1) as f32);
        }
        assert!(rel(&x, &round_trip(&IQ4_XS, &x)) < 0.1);
        // Constants come back within the table's spacing.
        let y = round_trip(&IQ4_XS, &[-0.3; QK_K]);
        assert!(rel(&[-0.3; QK_K], &y) < 0.05, "{y:?}");
        // Huge values: the f16 super-block scale overflows as in ggml; no panic.
        assert_eq!(round_trip(&IQ4_XS, &[1e30; QK_K]).len(), QK_K);
    }

    #[test]
    fn best_index_matches_linear_scan() {
        for i in -3000..3000 {
            let x = i as f32 * 0.05;
            assert_eq!(best_index(x), best_index_linear(x), "{x}");
        }
        // Midpoints go up.
        assert_eq!(best_index(-4.5), 8);
        assert_eq!(best_index(-4.5001), 7);
    }
}

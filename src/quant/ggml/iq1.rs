//! IQ1_S and IQ1_M: ternary groups of 8 (levels -1, 0, 1 shifted by a signed delta) that
//! are points of an 2048-point grid ([`super::iq_grid`]) (`quantize_row_iq1_s_impl`,
//! `quantize_row_iq1_m_impl` of ggml-quants.c).
//!
//! Each group of 32 (IQ1_S) or 16 (IQ1_M) values first gets the exact weighted
//! least-squares split of its sorted values into three levels, then every 8 values are
//! snapped to the grid.

use super::common::{nearest_int, read_fp16, sum_sq, write_fp16};
use super::iq_grid::{find_best_neighbour_iq1, pack_levels, GridKind, IqGrid, Lookup, IQ1S_GRID};
use super::Codec;
use crate::formats::blocks::{whole_blocks, BlockIq1M, BlockIq1S, QK_K};
use crate::formats::ggml_type::GgmlType;

/// ggml's `IQ1S_DELTA` (= `IQ1M_DELTA`).
const DELTA: f32 = 0.125;
/// The three values with a positive shift (`x_p`).
const X_P: [f32; 3] = [-1.0 + DELTA, DELTA, 1.0 + DELTA];
/// The three values with a negative shift (`x_m`).
const X_M: [f32; 3] = [-1.0 - DELTA, -DELTA, 1.0 - DELTA];
/// ggml's `GROUP_MAX_EPS_IQ1_S`.
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
/// ggml's `GROUP_MAX_EPS_IQ1_M`.
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;

/// IQ1_S codec (ggml type 19); needs importance weights.
pub const IQ1_S: Codec = Codec {
    ty: GgmlType::IQ1_S,
    quantize_row: quantize_row_iq1_s,
    dequantize: dequantize_iq1_s,
};

/// IQ1_M codec (ggml type 29).
pub const IQ1_M: Codec = Codec {
    ty: GgmlType::IQ1_M,
    quantize_row: quantize_row_iq1_m,
    dequantize: dequantize_iq1_m,
};

/// The largest `|x|` (C's `MAX(max, fabsf(x))` fold).
#[inline]
fn abs_max(x: &[f32]) -> f32 {
    let mut m = x[0].abs();
    for &v in &x[1..] {
        let a = v.abs();
        m = if m > a { m } else { a };
    }
    m
}

/// Indices of `x` in ascending value order; ties keep index order (glibc's `qsort` is a
/// stable merge sort for these sizes).
#[inline]
fn sorted_order<const N: usize>(x: &[f32]) -> [usize; N] {
    let mut idx: [usize; N] = std::array::from_fn(|i| i);
    idx.sort_by(|&a, &b| x[a].partial_cmp(&x[b]).unwrap_or(std::cmp::Ordering::Equal));
    idx
}

/// Levels from the split `(i1, i2)` of the sorted order: 0 below `i1`, 1 up to `i2`, 2 after.
#[inline]
fn split_levels(idx: &[usize], i1: usize, i2: usize, l: &mut [i8]) {
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

/// Snaps each 8 levels to the grid (the best neighbour for `scale` and the values `xx(k)`
/// where off it); returns the grid indices and whether all were on the grid.
#[inline]
fn snap_groups<const K: usize>(
    grid: &IqGrid,
    xb: &[f32],
    weight: &[f32],
    scale: f32,
    xx: impl Fn(usize) -> &'static [f32; 3],
    l: &mut [i8],
) -> ([u16; K], bool) {
    let mut index = [0u16; K];
    let mut all_on = true;
    for k in 0..K {
        let r = 8 * k..8 * k + 8;
        index[k] = match grid.lookup(pack_levels(&l[r.clone()])) {
            Lookup::On(i) => i as u16,
            Lookup::Off(nb) => {
                all_on = false;
                find_best_neighbour_iq1(
                    grid,
                    nb,
                    &xb[r.clone()],
                    &weight[r.clone()],
                    scale,
                    xx(k),
                    &mut l[r],
                ) as u16
            }
        };
    }
    (index, all_on)
}

/// The least-squares scale for the grid points `index` with values `xx(k)`, where it is
/// positive.
#[inline]
fn refit<const K: usize>(
    grid: &IqGrid,
    xb: &[f32],
    weight: &[f32],
    index: &[u16; K],
    xx: impl Fn(usize) -> &'static [f32; 3],
    scale: f32,
) -> f32 {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for k in 0..K {
        let pg = &grid.points[index[k] as usize];
        for j in 0..8 {
            let w = weight[8 * k + j];
            let q = xx(k)[((pg[j] - 1) / 2) as usize];
            sumqx += w * q * xb[8 * k + j];
            sumq2 += w * q * q;
        }
    }
    if sumqx > 0.0 && sumq2 > 0.0 {
        sumqx / sumq2
    } else {
        scale
    }
}

fn quantize_row_iq1_s(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    const BS: usize = 32;
    let qw_row = imatrix.unwrap_or_else(|| {
        panic!("IQ1_S needs importance weights (callers check Codec::requires_imatrix)")
    });
    let grid = IqGrid::get(GridKind::Iq1);
    let tsize = GgmlType::IQ1_S.type_size() as usize;
    for (ibl, (xbl, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(tsize))
        .enumerate()
    {
        y.fill(0);
        let mut scales = [0.0f32; QK_K / BS];
        let mut shifts = [1i8; QK_K / BS];
        let mut qh = [0u16; QK_K / BS];
        let mut max_scale = 0.0f32;
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            let qw = &qw_row[QK_K * ibl + BS * ib..QK_K * ibl + BS * ib + BS];
            let mut weight = [0.0f32; BS];
            for i in 0..BS {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
            if abs_max(xb) < GROUP_MAX_EPS_IQ1_S {
                continue;
            }
            let idx = sorted_order::<BS>(xb);
            let mut sumx = [0.0f32; BS + 1];
            let mut sumw = [0.0f32; BS + 1];
            for j in 0..BS {
                let i = idx[j];
                sumx[j + 1] = sumx[j] + weight[i] * xb[i];
                sumw[j + 1] = sumw[j] + weight[i];
            }
            let Some((mut scale, i1, i2, mut shift)) = best_split_iq1_s(&sumx, &sumw) else {
                continue;
            };
            let mut l = [0i8; BS];
            split_levels(&idx, i1, i2, &mut l);
            if scale < 0.0 {
                for v in &mut l {
                    *v = 2 - *v;
                }
                scale = -scale;
                shift = -shift;
            }
            let xx: &'static [f32; 3] = if shift == 1 { &X_P } else { &X_M };
            let (index, all_on) = snap_groups::<4>(grid, xb, &weight, scale, |_| xx, &mut l);
            if !all_on {
                scale = refit(grid, xb, &weight, &index, |_| xx, scale);
            }
            let mut h = 0u16;
            for k in 0..4 {
                y[2 + 4 * ib + k] = index[k] as u8;
                h |= (index[k] >> 8) << (3 * k);
            }
            qh[ib] = h;
            scales[ib] = scale;
            shifts[ib] = shift;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 15.0;
        write_fp16(y, 0, d * 1.125);
        let id = 1.0 / d;
        for ib in 0..QK_K / BS {
            let mut l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7) as u16;
            if shifts[ib] == -1 {
                l |= 8;
            }
            qh[ib] |= l << 12;
        }
        for (c, h) in y[2 + QK_K / 8..].chunks_exact_mut(2).zip(&qh) {
            c.copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// IQ1_S's exhaustive search over the splits `i1 <= i2` of the sorted values (prefix sums
/// `sumx`, `sumw`) and the two shifts: `(scale, i1, i2, shift)` of the best, if any.
fn best_split_iq1_s(sumx: &[f32; 33], sumw: &[f32; 33]) -> Option<(f32, usize, usize, i8)> {
    const BS: usize = 32;
    let mut best_score = -f32::MAX;
    let mut scale = 0.0f32;
    let mut best = None;
    for i1 in 0..=BS {
        for i2 in i1..=BS {
            for (xs, shift) in [(&X_P, 1i8), (&X_M, -1i8)] {
                let sumqx = (sumx[i1] - sumx[0]) * xs[0]
                    + (sumx[i2] - sumx[i1]) * xs[1]
                    + (sumx[BS] - sumx[i2]) * xs[2];
                let sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0]
                    + (sumw[i2] - sumw[i1]) * xs[1] * xs[1]
                    + (sumw[BS] - sumw[i2]) * xs[2] * xs[2];
                if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                    scale = sumqx / sumq2;
                    best_score = scale * sumqx;
                    best = Some((i1, i2, shift));
                }
            }
        }
    }
    best.map(|(i1, i2, s)| (scale, i1, i2, s))
}

/// IQ1_M's value sets of the two halves for a shift code `k` (bit 1: first half
/// negative, bit 0: second half negative).
#[inline]
fn iq1m_xx(code: usize, k: usize) -> &'static [f32; 3] {
    let negative = if k == 0 { code >= 2 } else { code % 2 == 1 };
    if negative {
        &X_M
    } else {
        &X_P
    }
}

/// IQ1_M's exhaustive search over the splits and the four shift pairs, with prefix sums
/// kept per half: `(scale, i1, i2, code)` of the best, if any.
fn best_split_iq1_m(
    xb: &[f32],
    weight: &[f32],
    idx: &[usize; 16],
) -> Option<(f32, usize, usize, usize)> {
    const BS: usize = 16;
    let mut px = [[0.0f32; BS + 1]; 2];
    let mut pw = [[0.0f32; BS + 1]; 2];
    for j in 0..BS {
        let i = idx[j];
        let h = usize::from(i >= BS / 2);
        px[h][j + 1] = px[h][j] + weight[i] * xb[i];
        px[1 - h][j + 1] = px[1 - h][j];
        pw[h][j + 1] = pw[h][j] + weight[i];
        pw[1 - h][j + 1] = pw[1 - h][j];
    }
    let txs = [px[0][BS], px[1][BS]];
    let tws = [pw[0][BS], pw[1][BS]];
    let (p2, m2) = (X_P[2], X_M[2]);
    let cp1 = X_P[0] * X_P[0] - X_P[1] * X_P[1];
    let cp2 = X_P[1] * X_P[1] - X_P[2] * X_P[2];
    let cm1 = X_M[0] * X_M[0] - X_M[1] * X_M[1];
    let cm2 = X_M[1] * X_M[1] - X_M[2] * X_M[2];
    let mut best_score = -f32::MAX;
    let mut scale = 0.0f32;
    let mut best = None;
    for i1 in 0..=BS {
        for i2 in i1..=BS {
            let mut qx_p = [0.0f32; 2];
            let mut qx_m = [0.0f32; 2];
            let mut q2_p = [0.0f32; 2];
            let mut q2_m = [0.0f32; 2];
            for h in 0..2 {
                let sx = px[h][i1] + px[h][i2];
                qx_p[h] = txs[h] * p2 - sx;
                qx_m[h] = txs[h] * m2 - sx;
                q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
            }
            let sumqx = [
                qx_p[0] + qx_p[1],
                qx_p[0] + qx_m[1],
                qx_m[0] + qx_p[1],
                qx_m[0] + qx_m[1],
            ];
            let sumq2 = [
                q2_p[0] + q2_p[1],
                q2_p[0] + q2_m[1],
                q2_m[0] + q2_p[1],
                q2_m[0] + q2_m[1],
            ];
            for k in 0..4 {
                if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    best = Some((i1, i2, k));
                }
            }
        }
    }
    best.map(|(i1, i2, k)| (scale, i1, i2, k))
}

/// IQ1_M's weights: importance weights scaled by `sqrt(sigma2 + x^2)`, or `x^2` without.
#[inline]
fn iq1m_weights(qw: Option<&[f32]>, xb: &[f32], sigma2: f32, weight: &mut [f32]) {
    match qw {
        Some(qw) => {
            for i in 0..xb.len() {
                weight[i] = qw[i] * (sigma2 + xb[i] * xb[i]).sqrt();
            }
        }
        None => {
            for i in 0..xb.len() {
                weight[i] = xb[i] * xb[i];
            }
        }
    }
}

fn quantize_row_iq1_m(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    const BS: usize = 16;
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let grid = IqGrid::get(GridKind::Iq1);
    let tsize = GgmlType::IQ1_M.type_size() as usize;
    for (ibl, (xbl, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(tsize))
        .enumerate()
    {
        y.fill(0);
        let (qs, rest) = y.split_at_mut(QK_K / 8);
        let (qh, scb) = rest.split_at_mut(QK_K / 16);
        let mut scales = [0.0f32; QK_K / BS];
        let mut shifts = [0usize; QK_K / BS];
        let mut max_scale = 0.0f32;
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let qw_of =
            |ib: usize| imatrix.map(|q| &q[QK_K * ibl + BS * ib..QK_K * ibl + BS * ib + BS]);
        let mut weight = [0.0f32; BS];
        for ib in 0..QK_K / BS {
            let xb = &xbl[BS * ib..BS * ib + BS];
            iq1m_weights(qw_of(ib), xb, sigma2, &mut weight);
            if abs_max(xb) < GROUP_MAX_EPS_IQ1_M {
                continue;
            }
            let idx = sorted_order::<BS>(xb);
            let Some((mut scale, i1, i2, mut code)) = best_split_iq1_m(xb, &weight, &idx) else {
                continue;
            };
            let mut l = [0i8; BS];
            split_levels(&idx, i1, i2, &mut l);
            if scale < 0.0 {
                for v in &mut l {
                    *v = 2 - *v;
                }
                scale = -scale;
                code = 3 - code;
            }
            let xx = move |k: usize| iq1m_xx(code, k);
            let (index, all_on) = snap_groups::<2>(grid, xb, &weight, scale, xx, &mut l);
            if !all_on {
                scale = refit(grid, xb, &weight, &index, xx, scale);
            }
            qs[2 * ib] = index[0] as u8;
            qs[2 * ib + 1] = index[1] as u8;
            qh[ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
            scales[ib] = scale;
            shifts[ib] = code;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        if max_scale == 0.0 {
            continue;
        }
        let mut sc = [0u16; 4];
        let mut d = max_scale / 15.0;
        let id = 1.0 / d;
        let mut sumqx = 0.0f32;
        let mut sumq2 = 0.0f32;
        for ib in 0..QK_K / BS {
            let l = nearest_int(0.5 * (id * scales[ib] - 1.0)).clamp(0, 7);
            sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
            qh[ib] |= MASKS[shifts[ib]];
            let xb = &xbl[BS * ib..BS * ib + BS];
            iq1m_weights(qw_of(ib), xb, sigma2, &mut weight);
            for k in 0..2 {
                let xx = iq1m_xx(shifts[ib], k);
                let gi = qs[2 * ib + k] as usize + (((qh[ib] as usize) << (8 - 4 * k)) & 0x700);
                let pg = &grid.points[gi];
                for j in 0..8 {
                    let w = weight[8 * k + j];
                    let q = xx[((pg[j] - 1) / 2) as usize] * (2 * l + 1) as f32;
                    sumqx += w * q * xb[8 * k + j];
                    sumq2 += w * q * q;
                }
            }
        }
        if sumq2 > 0.0 {
            d = sumqx / sumq2;
        }
        let mut h = [0u8; 2];
        write_fp16(&mut h, 0, d * 1.1125);
        let s = u16::from_le_bytes(h);
        sc[0] |= (s & 0x000f) << 12;
        sc[1] |= (s & 0x00f0) << 8;
        sc[2] |= (s & 0x0f00) << 4;
        sc[3] |= s & 0xf000;
        for (c, v) in scb.chunks_exact_mut(2).zip(&sc) {
            c.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Values `dl * (grid[j] + delta)` of 8 values.
#[inline(always)]
fn ternary(dl: f32, index: usize, delta: f32, y: &mut [f32]) {
    let g = IQ1S_GRID[index].to_le_bytes();
    for j in 0..8 {
        y[j] = dl * (g[j] as i8 as f32 + delta);
    }
}

fn dequantize_iq1_s(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq1S>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let qh = u16::from_le_bytes([b.qh[2 * ib], b.qh[2 * ib + 1]]) as usize;
            let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
            let delta = if qh & 0x8000 != 0 { -DELTA } else { DELTA };
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let index = b.qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) << 8);
                ternary(dl, index, delta, y);
            }
        }
    }
}

fn dequantize_iq1_m(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq1M>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let sc: [usize; 4] = std::array::from_fn(|i| {
            u16::from_le_bytes([b.scales[2 * i], b.scales[2 * i + 1]]) as usize
        });
        let s =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        let d = read_fp16(&(s as u16).to_le_bytes(), 0);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let dl1 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 7) + 1) as f32;
            let dl2 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 7) + 1) as f32;
            let qs = &b.qs[4 * ib..4 * ib + 4];
            let qh = [b.qh[2 * ib] as usize, b.qh[2 * ib + 1] as usize];
            let idx = [
                qs[0] as usize | ((qh[0] << 8) & 0x700),
                qs[1] as usize | ((qh[0] << 4) & 0x700),
                qs[2] as usize | ((qh[1] << 8) & 0x700),
                qs[3] as usize | ((qh[1] << 4) & 0x700),
            ];
            let delta = [qh[0] & 0x08, qh[0] & 0x80, qh[1] & 0x08, qh[1] & 0x80].map(|bit| {
                if bit != 0 {
                    -DELTA
                } else {
                    DELTA
                }
            });
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                ternary(if l < 2 { dl1 } else { dl2 }, idx[l], delta[l], y);
            }
        }
    }
}

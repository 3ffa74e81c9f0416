//! IQ2_XXS, IQ2_XS and IQ2_S: 256-value super-blocks whose groups of 8 magnitudes are
//! points of an E8-lattice grid ([`super::iq_grid`]), with signs stored apart
//! (`quantize_row_iq2_xxs_impl`, `_iq2_xs_impl`, `_iq2_s_impl` of ggml-quants.c).

// The loops keep ggml's index arithmetic, so the code reads against the C line by line.
#![allow(clippy::needless_range_loop)]

use super::common::{make_qp_quants, nearest_int, read_fp16, sum_sq, write_fp16, GROUP_MAX_EPS};
use super::iq_grid::{
    find_best_neighbour, pack_levels, GridKind, IqGrid, Lookup, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID,
    KMASK_IQ2XS, KSIGNS_IQ2XS,
};
use super::Codec;
use crate::formats::blocks::{whole_blocks, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, QK_K};
use crate::formats::ggml_type::GgmlType;

/// ggml's `GROUP_MAX_EPS_IQ2_S`.
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;

/// Largest level + 1 (`kMaxQ`): levels are 0..=2, values `2l + 1`.
const KMAXQ: i32 = 3;

/// IQ2_XXS codec (ggml type 16); needs importance weights.
pub const IQ2_XXS: Codec = Codec {
    ty: GgmlType::IQ2_XXS,
    quantize_row: quantize_row_iq2_xxs,
    dequantize: dequantize_iq2_xxs,
};

/// IQ2_XS codec (ggml type 17); needs importance weights.
pub const IQ2_XS: Codec = Codec {
    ty: GgmlType::IQ2_XS,
    quantize_row: quantize_row_iq2_xs,
    dequantize: dequantize_iq2_xs,
};

/// IQ2_S codec (ggml type 22).
pub const IQ2_S: Codec = Codec {
    ty: GgmlType::IQ2_S,
    quantize_row: quantize_row_iq2_s,
    dequantize: dequantize_iq2_s,
};

/// `weight[i] = qw[i] * sqrt(sigma2 + x[i]^2)` and `waux[i] = sqrt(weight[i])`.
#[inline]
fn group_weights(qw: &[f32], x: &[f32], sigma2: f32, weight: &mut [f32], waux: &mut [f32]) {
    for i in 0..x.len() {
        weight[i] = qw[i] * (sigma2 + x[i] * x[i]).sqrt();
        waux[i] = weight[i].sqrt();
    }
}

/// `|x|` of 8 values into `xval` with their sign bits; with `even_parity`, ggml's fix for
/// an odd number of negatives (the value of least `w x^2` keeps the wrong sign).
#[inline]
fn signs_of_8(x: &[f32], weight: &[f32], even_parity: bool, xval: &mut [f32]) -> u8 {
    let mut nflip = 0;
    let mut s = 0u8;
    for i in 0..8 {
        if x[i] >= 0.0 {
            xval[i] = x[i];
        } else {
            xval[i] = -x[i];
            nflip += 1;
            s |= 1 << i;
        }
    }
    if even_parity && nflip % 2 == 1 {
        let mut imin = 0;
        let mut min = weight[0] * x[0] * x[0];
        for i in 1..8 {
            let ax = weight[i] * x[i] * x[i];
            if ax < min {
                min = ax;
                imin = i;
            }
        }
        xval[imin] = -xval[imin];
        s ^= 1 << imin;
    }
    s
}

/// C's `MAX(a, b)` fold over `x` starting at `x[0]`.
#[inline]
fn c_max(x: &[f32]) -> f32 {
    let mut m = x[0];
    for &v in &x[1..] {
        m = if m > v { m } else { v };
    }
    m
}

/// Levels `clamp(nearest_int((id x - 1) / 2), 0, 2)` of 8 values.
#[inline(always)]
fn grid_levels(id: f32, xval: &[f32], l: &mut [i8]) {
    for i in 0..8 {
        let q = nearest_int(0.5 * (id * xval[i] - 1.0));
        l[i] = q.clamp(0, KMAXQ - 1) as i8;
    }
}

/// Snaps the levels of 8 values to the grid: their own point, or the best neighbour
/// for `scale`. Returns whether they were on the grid.
#[inline(always)]
fn snap(grid: &IqGrid, xval: &[f32], waux: &[f32], scale: f32, l: &mut [i8]) -> bool {
    match grid.lookup(pack_levels(l)) {
        Lookup::On(_) => true,
        Lookup::Off(nb) => {
            find_best_neighbour(grid, nb, xval, waux, scale, l);
            false
        }
    }
}

/// `sum w x (2l+1)` and `sum w (2l+1)^2`.
#[inline(always)]
fn sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..weight.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The grid index of 8 levels. They are on the grid for every finite input (ggml
/// aborts otherwise); levels left off it by non-finite input take their first
/// neighbour, so such input still gives valid blocks.
#[inline]
fn on_grid_index(grid: &IqGrid, l: &[i8]) -> usize {
    let mut c = [0i8; 8];
    for (c, &v) in c.iter_mut().zip(l) {
        *c = v.clamp(0, (KMAXQ - 1) as i8);
    }
    match grid.lookup(pack_levels(&c)) {
        Lookup::On(i) => i,
        Lookup::Off(nb) => nb.idx[0] as usize,
    }
}

/// The 4-bit super-block scale codes `clamp(nearest_int((scale/d - 1)/2), 0, 15)`.
#[inline]
fn scale_code(id: f32, scale: f32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u8
}

fn weights_or_panic<'a>(imatrix: Option<&'a [f32]>, ty: &str) -> &'a [f32] {
    imatrix.unwrap_or_else(|| {
        panic!("{ty} needs importance weights (callers check Codec::requires_imatrix)")
    })
}

fn quantize_row_iq2_xxs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let qw_row = weights_or_panic(imatrix, "IQ2_XXS");
    let grid = IqGrid::get(GridKind::Iq2Xxs);
    let bs = GgmlType::IQ2_XXS.type_size() as usize;
    let mut weight = [0.0f32; 32];
    let mut waux = [0.0f32; 32];
    let mut xval = [0.0f32; 32];
    let mut l = [0i8; 32];
    let mut laux = [0i8; 32];
    for (ibl, (xbl, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(bs))
        .enumerate()
    {
        let mut scales = [0.0f32; QK_K / 32];
        let mut q2 = [0u32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let sigma2 = sum_sq(xbl) / QK_K as f32;
        for ib in 0..QK_K / 32 {
            let xb = &xbl[32 * ib..32 * ib + 32];
            let qw = &qw_row[QK_K * ibl + 32 * ib..QK_K * ibl + 32 * ib + 32];
            group_weights(qw, xb, sigma2, &mut weight, &mut waux);
            let mut block_signs = [0u8; 4];
            for k in 0..4 {
                let r = 8 * k..8 * k + 8;
                block_signs[k] =
                    signs_of_8(&xb[r.clone()], &weight[r.clone()], true, &mut xval[r]) & 127;
            }
            let max = c_max(&xval);
            if max < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let mut lu = [0u8; 32];
            let mut scale = make_qp_quants(KMAXQ + 1, &xval, &mut lu, &weight);
            for (a, &b) in l.iter_mut().zip(&lu) {
                *a = b as i8;
            }
            let eff_max = scale * KMAXQ as f32;
            if eff_max <= 0.0 {
                scales[ib] = 0.0;
                continue;
            }
            let mut best = 0.0f32;
            for is in -6i32..=6 {
                let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.1) / eff_max;
                let this_scale = 1.0 / id;
                for k in 0..4 {
                    let r = 8 * k..8 * k + 8;
                    grid_levels(id, &xval[r.clone()], &mut laux[r.clone()]);
                    snap(
                        grid,
                        &xval[r.clone()],
                        &waux[r.clone()],
                        this_scale,
                        &mut laux[r],
                    );
                }
                let (sumqx, sumq2) = sums(&weight, &xval, &laux);
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    scale = sumqx / sumq2;
                    best = scale * sumqx;
                    l = laux;
                }
            }
            if scale > 0.0 {
                let id = 1.0 / scale;
                for k in 0..4 {
                    let r = 8 * k..8 * k + 8;
                    grid_levels(id, &xval[r.clone()], &mut l[r.clone()]);
                    snap(grid, &xval[r.clone()], &waux[r.clone()], scale, &mut l[r]);
                }
                let (sumqx, sumq2) = sums(&weight, &xval, &l);
                if sumq2 > 0.0 {
                    scale = sumqx / sumq2;
                }
            }
            if scale < 0.0 {
                scale = -scale;
                for s in &mut block_signs {
                    *s = !*s & 127;
                }
            }
            for k in 0..4 {
                let gi = on_grid_index(grid, &l[8 * k..8 * k + 8]) as u32;
                q2[2 * ib] |= gi << (8 * k);
                q2[2 * ib + 1] |= (block_signs[k] as u32) << (7 * k);
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        y.fill(0);
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        write_fp16(y, 0, d);
        let id = 1.0 / d;
        for ib in 0..QK_K / 32 {
            q2[2 * ib + 1] |= (scale_code(id, scales[ib]) as u32) << 28;
        }
        for (c, q) in y[2..].chunks_exact_mut(4).zip(&q2) {
            c.copy_from_slice(&q.to_le_bytes());
        }
    }
}

/// IQ2_XS / IQ2_S flavour of the 16-value group search.
#[derive(Clone, Copy)]
struct Iq2Group {
    grid: GridKind,
    /// IQ2_XS keeps an even number of negatives per 8 (7 sign bits stored).
    even_parity: bool,
}

/// The scale and grid levels of one 16-value group (`xval`: magnitudes, `max > 0`):
/// the `is = -9..=9` candidate search, then a refit of the groups that were off the grid.
fn search_16(
    g: Iq2Group,
    xval: &[f32; 16],
    weight: &[f32; 16],
    waux: &[f32; 16],
    max: f32,
    l: &mut [i8; 16],
) -> f32 {
    let grid = IqGrid::get(g.grid);
    let mut laux = [0i8; 16];
    let mut on_grid = [true; 2];
    let mut on_grid_aux = [true; 2];
    let mut best = 0.0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    *l = [0; 16];
    for is in -9i32..=9 {
        let id = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.1) / max;
        let this_scale = 1.0 / id;
        for k in 0..2 {
            let r = 8 * k..8 * k + 8;
            grid_levels(id, &xval[r.clone()], &mut laux[r.clone()]);
            on_grid_aux[k] = snap(
                grid,
                &xval[r.clone()],
                &waux[r.clone()],
                this_scale,
                &mut laux[r],
            );
        }
        let (sumqx, sumq2) = sums(weight, xval, &laux);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            *l = laux;
            on_grid = on_grid_aux;
        }
    }
    if on_grid.contains(&false) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..2 {
            if on_grid[k] {
                continue;
            }
            let r = 8 * k..8 * k + 8;
            grid_levels(id, &xval[r.clone()], &mut l[r.clone()]);
            snap(grid, &xval[r.clone()], &waux[r.clone()], scale, &mut l[r]);
        }
        let (sumqx, sumq2) = sums(weight, xval, l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

fn quantize_row_iq2_xs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let qw_row = weights_or_panic(imatrix, "IQ2_XS");
    let g = Iq2Group {
        grid: GridKind::Iq2Xs,
        even_parity: true,
    };
    let grid = IqGrid::get(g.grid);
    let bs = GgmlType::IQ2_XS.type_size() as usize;
    for (ibl, (xbl, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(bs))
        .enumerate()
    {
        let sigma2 = sum_sq(xbl) / QK_K as f32;
        let mut q2 = [0u16; QK_K / 8];
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let qw = &qw_row[QK_K * ibl + 16 * ib..QK_K * ibl + 16 * ib + 16];
            let mut weight = [0.0f32; 16];
            let mut waux = [0.0f32; 16];
            group_weights(qw, xb, sigma2, &mut weight, &mut waux);
            let Some((scale, l, signs)) = group_16(g, xb, &weight, &waux, GROUP_MAX_EPS) else {
                continue;
            };
            for k in 0..2 {
                let gi = on_grid_index(grid, &l[8 * k..8 * k + 8]) as u16;
                q2[2 * ib + k] = gi | ((signs[k] as u16) << 9);
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        y.fill(0);
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        write_fp16(y, 0, d);
        let id = 1.0 / d;
        for (c, q) in y[2..2 + QK_K / 4].chunks_exact_mut(2).zip(&q2) {
            c.copy_from_slice(&q.to_le_bytes());
        }
        for ib in 0..QK_K / 16 {
            y[2 + QK_K / 4 + ib / 2] |= scale_code(id, scales[ib]) << (4 * (ib % 2));
        }
    }
}

/// Signs, magnitudes and the grid search of one 16-value group of IQ2_XS / IQ2_S with
/// its weights; `None` for an (almost) zero group (`max < eps`).
fn group_16(
    g: Iq2Group,
    xb: &[f32],
    weight: &[f32; 16],
    waux: &[f32; 16],
    eps: f32,
) -> Option<(f32, [i8; 16], [u8; 2])> {
    let mut xval = [0.0f32; 16];
    let mut signs = [0u8; 2];
    for k in 0..2 {
        let r = 8 * k..8 * k + 8;
        let s = signs_of_8(
            &xb[r.clone()],
            &weight[r.clone()],
            g.even_parity,
            &mut xval[r],
        );
        signs[k] = if g.even_parity { s & 127 } else { s };
    }
    let max = c_max(&xval);
    if max < eps {
        return None;
    }
    let mut l = [0i8; 16];
    let mut scale = search_16(g, &xval, weight, waux, max, &mut l);
    if scale < 0.0 {
        scale = -scale;
        for s in &mut signs {
            *s = if g.even_parity { !*s & 127 } else { !*s };
        }
    }
    Some((scale, l, signs))
}

fn quantize_row_iq2_s(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let g = Iq2Group {
        grid: GridKind::Iq2S,
        even_parity: false,
    };
    let grid = IqGrid::get(g.grid);
    let bs = GgmlType::IQ2_S.type_size() as usize;
    for (ibl, (xbl, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(bs))
        .enumerate()
    {
        y.fill(0);
        let sigma2 = 2.0 * sum_sq(xbl) / QK_K as f32;
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let (d_bytes, rest) = y.split_at_mut(2);
        let (qs, rest) = rest.split_at_mut(QK_K / 4);
        let (qh, sc) = rest.split_at_mut(QK_K / 32);
        for ib in 0..QK_K / 16 {
            let xb = &xbl[16 * ib..16 * ib + 16];
            let mut weight = [0.0f32; 16];
            let mut waux = [0.0f32; 16];
            match imatrix {
                Some(qw_row) => {
                    let qw = &qw_row[QK_K * ibl + 16 * ib..QK_K * ibl + 16 * ib + 16];
                    group_weights(qw, xb, sigma2, &mut weight, &mut waux);
                }
                None => {
                    for i in 0..16 {
                        weight[i] = 0.25 * sigma2 + xb[i] * xb[i];
                        waux[i] = weight[i].sqrt();
                    }
                }
            }
            let Some((scale, l, signs)) = group_16(g, xb, &weight, &waux, GROUP_MAX_EPS_IQ2_S)
            else {
                continue;
            };
            for k in 0..2 {
                let gi = on_grid_index(grid, &l[8 * k..8 * k + 8]);
                let i8 = 2 * ib + k;
                qs[i8] = gi as u8;
                qh[i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
                qs[QK_K / 8 + i8] = signs[k];
            }
            scales[ib] = scale;
            max_scale = if max_scale > scale { max_scale } else { scale };
        }
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        write_fp16(d_bytes, 0, d * 0.9875);
        let id = 1.0 / d;
        for ib in 0..QK_K / 16 {
            sc[ib / 2] |= scale_code(id, scales[ib]) << (4 * (ib % 2));
        }
    }
}

/// `8 * (sign ? -1 : 1)` grid values of one group: `grid[j] * sign_j`.
#[inline(always)]
fn signed(db: f32, grid: u64, signs: u8, y: &mut [f32]) {
    let g = grid.to_le_bytes();
    for j in 0..8 {
        let s = if signs & KMASK_IQ2XS[j] != 0 {
            -1.0
        } else {
            1.0
        };
        y[j] = db * g[j] as f32 * s;
    }
}

fn dequantize_iq2_xxs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq2Xxs>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let q = &b.qs[8 * ib..8 * ib + 8];
            let aux1 = u32::from_le_bytes([q[4], q[5], q[6], q[7]]);
            let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
                signed(db, IQ2XXS_GRID[q[l] as usize], signs, y);
            }
        }
    }
}

fn dequantize_iq2_xs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq2Xs>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let db = [
                d * (0.5 + (b.scales[ib] & 0xf) as f32) * 0.25,
                d * (0.5 + (b.scales[ib] >> 4) as f32) * 0.25,
            ];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let i = 4 * ib + l;
                let q = u16::from_le_bytes([b.qs[2 * i], b.qs[2 * i + 1]]);
                let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
                signed(db[l / 2], IQ2XS_GRID[(q & 511) as usize], signs, y);
            }
        }
    }
}

fn dequantize_iq2_s(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq2S>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for (ib, y) in y.chunks_exact_mut(32).enumerate() {
            let db = [
                d * (0.5 + (b.scales[ib] & 0xf) as f32) * 0.25,
                d * (0.5 + (b.scales[ib] >> 4) as f32) * 0.25,
            ];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let qs = b.qs[4 * ib + l] as usize;
                let hi = ((b.qh[ib] as usize) << (8 - 2 * l)) & 0x300;
                let signs = b.qs[QK_K / 8 + 4 * ib + l];
                signed(db[l / 2], IQ2S_GRID[qs | hi], signs, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_bounded_and_zero_rows_stay_zero() {
        let x: Vec<f32> = (0..4 * QK_K)
            .map(|i| ((i as f32) * 0.37).sin() + 0.3 * ((i as f32) * 1.3).cos())
            .collect();
        let qw: Vec<f32> = (0..x.len()).map(|i| 1.0 + (i % 5) as f32).collect();
        for c in [&IQ2_XXS, &IQ2_XS, &IQ2_S] {
            let y = super::super::round_trip_weighted(c, &x, Some(&qw));
            let (rms, norm) = super::super::rms_error_and_norm(&x, &y);
            assert!(
                rms < 0.35 * norm && rms > 0.0,
                "{}: rms {rms} vs {norm}",
                c.name()
            );
            let zero = vec![0.0f32; QK_K];
            let mut qz = vec![0xffu8; c.type_size()];
            (c.quantize_row)(&zero, &mut qz, Some(&qw[..QK_K]));
            assert!(qz.iter().all(|&b| b == 0), "{}", c.name());
        }
    }

    #[test]
    #[should_panic(expected = "IQ2_XXS needs importance weights")]
    fn iq2_xxs_without_weights_is_a_caller_bug() {
        let x = vec![1.0f32; QK_K];
        let mut q = vec![0u8; IQ2_XXS.type_size()];
        (IQ2_XXS.quantize_row)(&x, &mut q, None);
    }
}

//! IQ3_XXS and IQ3_S: 256-value super-blocks of 8 groups of 32, each group 8 points of a
//! fixed grid of 4-vectors (256 points for IQ3_XXS, 512 for IQ3_S) with signs and a 4-bit
//! scale. A port of ggml's `iq3xs_init_impl`, `iq3_find_best_neighbour`,
//! `quantize_row_iq3_xxs_impl` and `quantize_row_iq3_s_impl` (ggml-quants.c, ggml 0.25.3).

use super::common::{imatrix_weights, nearest_int, read_fp16, sum_sq, write_fp16, QK_K};
use super::iq_grid::{IQ3S_GRID, IQ3XXS_GRID, KGRID_256, KGRID_512, KMASK_IQ2XS, KSIGNS_IQ2XS};
use super::simd;
use super::Codec;
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockIq3S, BlockIq3Xxs};
use crate::formats::ggml_type::GgmlType;
use std::sync::OnceLock;

/// IQ3_XXS codec (ggml type 18): the 256-point grid, 7 stored signs per 8 values.
pub const IQ3_XXS: Codec = Codec {
    ty: GgmlType::IQ3_XXS,
    quantize_row: quantize_row_iq3_xxs,
    dequantize: dequantize_iq3_xxs,
};

/// IQ3_S codec (ggml type 21): the 512-point grid, every sign stored.
pub const IQ3_S: Codec = Codec {
    ty: GgmlType::IQ3_S,
    quantize_row: quantize_row_iq3_s,
    dequantize: dequantize_iq3_s,
};

/// Points of the 3-bit level space (`kmap_size`): 4 levels of 3 bits.
const KMAP_SIZE: usize = 4096;

/// Levels per coordinate (`kMaxQ`).
const KMAXQ: i32 = 8;

/// ggml's `GROUP_MAX_EPS_IQ3_XXS`.
const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;

/// Lanes the neighbour lists are padded to (the widest SIMD kernel).
pub const NEIGHBOUR_PAD: usize = 16;

/// One of ggml's IQ3 quantization grids with its `kmap` and neighbour lists, built as
/// `iq3xs_init_impl` builds them.
pub struct Iq3Grid {
    /// `kgrid_q3xs`: each point as 4 odd magnitudes `2l + 1`.
    pub points: Vec<[i8; 4]>,
    /// `kmap_q3xs`: grid index of a 12-bit level vector, or `-(offset + 1)` of its
    /// neighbour list in `neighbours` when it is not on the grid.
    pub kmap: Vec<i32>,
    /// `kneighbors_q3xs`: per off-grid point its count `n`, then `n` grid indices,
    /// nearest first (ties by index), up to the `nwant`-th distinct distance.
    pub neighbours: Vec<u16>,
    /// The neighbour lists as `f32` coordinates for the SIMD search: per off-grid point
    /// (`soa_offset`), chunks of [`NEIGHBOUR_PAD`] neighbours laid out coordinate-major
    /// (`q0[16] q1[16] q2[16] q3[16]`); padding lanes hold `+inf`.
    pub soa: Vec<f32>,
    /// Start in `soa` of each level vector's list (`u32::MAX` when on the grid).
    pub soa_offset: Vec<u32>,
}

impl Iq3Grid {
    /// `iq3xs_init_impl(grid_size)` for `kgrid` (256 or 512 points).
    fn build(kgrid: &[u16]) -> Iq3Grid {
        let nwant = if kgrid.len() == 256 { 2 } else { 3 };
        let points: Vec<[i8; 4]> = kgrid
            .iter()
            .map(|&g| std::array::from_fn(|i| (2 * ((g >> (3 * i)) & 7) + 1) as i8))
            .collect();
        let mut kmap = vec![-1i32; KMAP_SIZE];
        for (i, p) in points.iter().enumerate() {
            kmap[level_index(p.map(|q| (q - 1) / 2))] = i as i32;
        }
        let mut neighbours = Vec::new();
        let mut soa = Vec::new();
        let mut soa_offset = vec![u32::MAX; KMAP_SIZE];
        let mut dist2: Vec<(i32, usize)> = Vec::with_capacity(points.len());
        for u in 0..KMAP_SIZE {
            if kmap[u] >= 0 {
                continue;
            }
            let pos: [i32; 4] = std::array::from_fn(|k| 2 * ((u >> (3 * k)) & 7) as i32 + 1);
            dist2.clear();
            dist2.extend(points.iter().enumerate().map(|(j, pg)| {
                let d2 = (0..4)
                    .map(|k| (pg[k] as i32 - pos[k]) * (pg[k] as i32 - pos[k]))
                    .sum();
                (d2, j)
            }));
            // qsort with iq3_compare_func: a total order on (distance, index).
            dist2.sort_unstable();
            let start = neighbours.len();
            kmap[u] = -(start as i32 + 1);
            neighbours.push(0);
            let (mut d2, mut nhave) = (dist2[0].0, 1);
            for &(d, j) in &dist2 {
                if d > d2 {
                    if nhave == nwant {
                        break;
                    }
                    d2 = d;
                    nhave += 1;
                }
                neighbours.push(j as u16);
            }
            let n = neighbours.len() - start - 1;
            assert!(
                n <= MAX_NEIGHBOURS,
                "ggml's IQ3 neighbour lists are shorter"
            );
            neighbours[start] = n as u16;
            soa_offset[u] = soa.len() as u32;
            for chunk in neighbours[start + 1..].chunks(NEIGHBOUR_PAD) {
                let pad = NEIGHBOUR_PAD - chunk.len();
                for coord in [0, 1, 2, 3] {
                    soa.extend(chunk.iter().map(|&j| points[j as usize][coord] as f32));
                    soa.extend(std::iter::repeat_n(f32::INFINITY, pad));
                }
            }
        }
        Iq3Grid {
            points,
            kmap,
            neighbours,
            soa,
            soa_offset,
        }
    }

    /// The grid of `grid_size` points (256: IQ3_XXS, 512: IQ3_S), built once per process.
    pub fn get(grid_size: usize) -> &'static Iq3Grid {
        static G256: OnceLock<Iq3Grid> = OnceLock::new();
        static G512: OnceLock<Iq3Grid> = OnceLock::new();
        match grid_size {
            256 => G256.get_or_init(|| Iq3Grid::build(&KGRID_256)),
            512 => G512.get_or_init(|| Iq3Grid::build(&KGRID_512)),
            _ => unreachable!("IQ3 grids have 256 or 512 points"),
        }
    }

    /// The neighbour list (grid indices) of an off-grid level vector `u`.
    pub fn neighbour_list(&self, u: usize) -> &[u16] {
        let start = (-self.kmap[u] - 1) as usize;
        let n = self.neighbours[start] as usize;
        &self.neighbours[start + 1..start + 1 + n]
    }

    /// `iq3_find_best_neighbour`: the neighbour of off-grid `u` with the smallest weighted
    /// distance `sum w (scale*q - x)^2` (the first one on ties); its levels go to `l`.
    #[inline]
    fn best_neighbour(
        &self,
        u: usize,
        x: &[f32; 4],
        w: &[f32; 4],
        scale: f32,
        l: &mut [i8],
    ) -> usize {
        let list = self.neighbour_list(u);
        let soa = &self.soa[self.soa_offset[u] as usize..];
        let j = simd::iq3_best_neighbour(soa, list.len(), x, w, scale);
        let idx = list[j] as usize;
        let pg = self.points[idx];
        for i in 0..4 {
            l[i] = (pg[i] - 1) / 2;
        }
        idx
    }
}

/// Longest neighbour list of the two grids (ggml's longest is 38), padded.
pub const MAX_NEIGHBOURS: usize = 64;

/// Scalar `iq3_find_best_neighbour` over a padded coordinate-major list (see
/// [`Iq3Grid::soa`]): the position in the list of the best neighbour.
pub fn iq3_best_neighbour_scalar(
    soa: &[f32],
    n: usize,
    x: &[f32; 4],
    w: &[f32; 4],
    scale: f32,
) -> usize {
    let mut d = [0.0f32; MAX_NEIGHBOURS];
    for (j, d2) in d[..n].iter_mut().enumerate() {
        let chunk = &soa[(j / NEIGHBOUR_PAD) * 4 * NEIGHBOUR_PAD..];
        let lane = j % NEIGHBOUR_PAD;
        *d2 = 0.0;
        for i in 0..4 {
            let q = chunk[i * NEIGHBOUR_PAD + lane];
            let diff = scale * q - x[i];
            *d2 += w[i] * diff * diff;
        }
    }
    first_nearest(&d[..n])
}

/// The position of the first smallest distance, by ggml's scan (`d2 < best_d2` from
/// `FLT_MAX`); 0 when none is below `FLT_MAX` (all NaN), where ggml aborts.
#[inline(always)]
pub fn first_nearest(d: &[f32]) -> usize {
    let mut best_d2 = f32::MAX;
    let mut best = 0;
    for (j, &d2) in d.iter().enumerate() {
        if d2 < best_d2 {
            best_d2 = d2;
            best = j;
        }
    }
    best
}

/// The 12-bit index of 4 levels in `0..8` (`u |= L[i] << 3*i`).
#[inline(always)]
fn level_index(l: [i8; 4]) -> usize {
    (0..4).fold(0usize, |u, i| u | ((l[i] as usize) << (3 * i)))
}

/// The two IQ3 variants' differences in `quantize_row_iq3_*_impl`.
struct Variant {
    /// Grid points (256 or 512).
    grid_size: usize,
    /// Candidate scales `-nscale..=nscale` (15 for IQ3_XXS, 9 for IQ3_S).
    nscale: i32,
    /// IQ3_XXS: an even number of negative signs per 8 values (one flipped), `max` below
    /// `GROUP_MAX_EPS_IQ3_XXS` is zero, only off-grid groups of 4 are redone at the end.
    xxs: bool,
}

const XXS: Variant = Variant {
    grid_size: 256,
    nscale: 15,
    xxs: true,
};
const S: Variant = Variant {
    grid_size: 512,
    nscale: 9,
    xxs: false,
};

/// One quantized group of 32 values.
#[derive(Default)]
struct Group {
    /// Group scale (`scales[ib]`); 0 for a group ggml skips.
    scale: f32,
    /// Grid index of each of the 8 groups of 4.
    index: [u16; 8],
    /// Sign bits of each 8 values (IQ3_XXS: the low 7).
    signs: [u8; 4],
    /// False for a group ggml skips (`continue`) before writing anything.
    written: bool,
}

/// The body of ggml's per-group loop for one group `xb` with weights `weight`.
fn quantize_group(v: &Variant, g: &Iq3Grid, xb: &[f32], weight: &[f32; 32]) -> Group {
    let mut waux = [0.0f32; 32];
    for (a, &w) in waux.iter_mut().zip(weight) {
        *a = w.sqrt();
    }
    let mut xval = [0.0f32; 32];
    let mut block_signs = [0u8; 4];
    for k in 0..4 {
        let mut nflip = 0;
        let mut s = 0u8;
        for i in 0..8 {
            let x = xb[8 * k + i];
            if x >= 0.0 {
                xval[8 * k + i] = x;
            } else {
                xval[8 * k + i] = -x;
                nflip += 1;
                s |= 1 << i;
            }
        }
        if v.xxs && nflip % 2 == 1 {
            let sq = |i: usize| weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
            let mut imin = 0;
            let mut min = sq(0);
            for i in 1..8 {
                let ax = sq(i);
                if ax < min {
                    min = ax;
                    imin = i;
                }
            }
            xval[8 * k + imin] = -xval[8 * k + imin];
            s ^= 1 << imin;
        }
        block_signs[k] = if v.xxs { s & 127 } else { s };
    }
    let mut max = xval[0];
    for &x in &xval[1..] {
        max = if max > x { max } else { x }; // MAX(a, b) = a > b ? a : b
    }
    let zero = if v.xxs {
        max < GROUP_MAX_EPS_IQ3_XXS
    } else {
        max == 0.0
    };
    if zero {
        return Group::default();
    }
    // The candidate scales are independent: their levels and sums are computed side by
    // side (SIMD lanes), then scanned in ggml's order.
    let ncand = (2 * v.nscale + 1) as usize;
    let mut ids = [0.0f32; IQ3_CAND];
    let mut this_scale = [0.0f32; IQ3_CAND];
    for (c, is) in (-v.nscale..=v.nscale).enumerate() {
        ids[c] = ((2 * KMAXQ - 1) as f32 + is as f32 * 0.2) / max;
        this_scale[c] = 1.0 / ids[c];
    }
    let mut lev = [[0i32; IQ3_CAND]; 32];
    simd::iq3_levels(&xval, &ids, &mut lev);
    let mut on_grid_aux = [[true; 8]; IQ3_CAND];
    let mut q4 = [0i8; 4];
    for k in 0..8 {
        let x4: &[f32; 4] = xval[4 * k..4 * k + 4].try_into().unwrap();
        let w4: &[f32; 4] = waux[4 * k..4 * k + 4].try_into().unwrap();
        for c in 0..ncand {
            let u = (0..4).fold(0usize, |u, i| u | (lev[4 * k + i][c] as usize) << (3 * i));
            if g.kmap[u] < 0 {
                on_grid_aux[c][k] = false;
                g.best_neighbour(u, x4, w4, this_scale[c], &mut q4);
                for i in 0..4 {
                    lev[4 * k + i][c] = q4[i] as i32;
                }
            }
        }
    }
    let mut wx = [0.0f32; 32];
    for i in 0..32 {
        wx[i] = weight[i] * xval[i];
    }
    let mut sumqx = [0.0f32; IQ3_CAND];
    let mut sumq2 = [0.0f32; IQ3_CAND];
    simd::iq3_sums(&wx, weight, &lev, &mut sumqx, &mut sumq2);
    let mut best = 0.0f32;
    let mut scale = max / (2 * KMAXQ - 1) as f32;
    let mut winner = None;
    for c in 0..ncand {
        if sumq2[c] > 0.0 && sumqx[c] * sumqx[c] > best * sumq2[c] {
            scale = sumqx[c] / sumq2[c];
            best = scale * sumqx[c];
            winner = Some(c);
        }
    }
    let mut l = [0i8; 32];
    let on_grid = match winner {
        Some(c) => {
            for i in 0..32 {
                l[i] = lev[i][c] as i8;
            }
            on_grid_aux[c]
        }
        None => [v.xxs; 8],
    };
    if on_grid.iter().any(|&b| !b) && scale > 0.0 {
        let id = 1.0 / scale;
        for k in 0..8 {
            if v.xxs && on_grid[k] {
                continue;
            }
            let mut q4 = [0i8; 4];
            for i in 0..4 {
                let li = nearest_int(0.5 * (id * xval[4 * k + i] - 1.0));
                q4[i] = li.clamp(0, KMAXQ - 1) as i8;
            }
            let u = level_index(q4);
            let gi = g.kmap[u];
            if gi >= 0 {
                let pg = g.points[gi as usize];
                for i in 0..4 {
                    l[4 * k + i] = (pg[i] - 1) / 2;
                }
            } else {
                g.best_neighbour(
                    u,
                    xval[4 * k..4 * k + 4].try_into().unwrap(),
                    waux[4 * k..4 * k + 4].try_into().unwrap(),
                    scale,
                    &mut l[4 * k..4 * k + 4],
                );
            }
        }
        let (sumqx, sumq2) = sums(weight, &xval, &l);
        if sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    if scale < 0.0 {
        // "This should never happen": ggml flips the scale and the signs.
        scale = -scale;
        for s in &mut block_signs {
            *s = if v.xxs { !*s & 127 } else { !*s };
        }
    }
    let mut index = [0u16; 8];
    for (k, idx) in index.iter_mut().enumerate() {
        // Every level vector in `l` is a grid point (zeros included), so this is >= 0.
        *idx = g.kmap[level_index(l[4 * k..4 * k + 4].try_into().unwrap())].max(0) as u16;
    }
    Group {
        scale,
        index,
        signs: block_signs,
        written: true,
    }
}

/// `sum w*x*q` and `sum w*q*q` with `q = 2l + 1`, in index order.
#[inline(always)]
fn sums(weight: &[f32; 32], xval: &[f32; 32], l: &[i8; 32]) -> (f32, f32) {
    let mut sumqx = 0.0f32;
    let mut sumq2 = 0.0f32;
    for i in 0..32 {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Candidate scales per group, padded to a whole number of SIMD vectors (ggml tries 31
/// for IQ3_XXS and 19 for IQ3_S).
pub const IQ3_CAND: usize = 32;

/// Scalar [`simd::iq3_levels`]: `lev[i][c] = clamp(nearest_int((ids[c]*x[i] - 1)/2), 0, 7)`.
pub fn iq3_levels_scalar(xval: &[f32; 32], ids: &[f32; IQ3_CAND], lev: &mut [[i32; IQ3_CAND]; 32]) {
    for (row, &x) in lev.iter_mut().zip(xval) {
        for (o, &id) in row.iter_mut().zip(ids) {
            *o = nearest_int(0.5 * (id * x - 1.0)).clamp(0, KMAXQ - 1);
        }
    }
}

/// Scalar [`simd::iq3_sums`]: per candidate `sum wx[i]*q` and `sum (w[i]*q)*q` with
/// `q = 2*lev[i][c] + 1`, in index order.
pub fn iq3_sums_scalar(
    wx: &[f32; 32],
    w: &[f32; 32],
    lev: &[[i32; IQ3_CAND]; 32],
    sumqx: &mut [f32; IQ3_CAND],
    sumq2: &mut [f32; IQ3_CAND],
) {
    sumqx.fill(0.0);
    sumq2.fill(0.0);
    for i in 0..32 {
        for c in 0..IQ3_CAND {
            let q = (2 * lev[i][c] + 1) as f32;
            sumqx[c] += wx[i] * q;
            sumq2[c] += w[i] * q * q;
        }
    }
}

/// The 8 groups of one super-block with their weights.
fn quantize_super_block(v: &Variant, x: &[f32], qw: Option<&[f32]>) -> ([Group; 8], f32) {
    let g = Iq3Grid::get(v.grid_size);
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    let mut groups: [Group; 8] = Default::default();
    let mut max_scale = 0.0f32;
    let mut weight = [0.0f32; 32];
    for (ib, grp) in groups.iter_mut().enumerate() {
        let xb = &x[32 * ib..32 * ib + 32];
        match qw {
            Some(qw) => imatrix_weights(&qw[32 * ib..32 * ib + 32], xb, sigma2, &mut weight),
            None => {
                for (w, &v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        *grp = quantize_group(v, g, xb, &weight);
        max_scale = if max_scale > grp.scale {
            max_scale
        } else {
            grp.scale
        };
    }
    (groups, max_scale)
}

/// The 4-bit group scale `clamp(nearest_int((id*scale - 1)/2), 0, 15)`.
#[inline]
fn scale_nibble(id: f32, scale: f32) -> u32 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, 15) as u32
}

fn quantize_row_iq3_xxs(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let bs = GgmlType::IQ3_XXS.type_size() as usize;
    for (ibl, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(bs))
        .enumerate()
    {
        y.fill(0);
        let qw = imatrix.map(|q| &q[ibl * QK_K..(ibl + 1) * QK_K]);
        let (groups, max_scale) = quantize_super_block(&XXS, x, qw);
        if max_scale == 0.0 {
            continue;
        }
        let d = max_scale / 31.0;
        write_fp16(y, 0, d * 1.0125);
        let id = 1.0 / d;
        for (ib, grp) in groups.iter().enumerate() {
            for k in 0..8 {
                y[2 + 8 * ib + k] = grp.index[k] as u8;
            }
            let s = &grp.signs;
            let word = s[0] as u32
                | (s[1] as u32) << 7
                | (s[2] as u32) << 14
                | (s[3] as u32) << 21
                | scale_nibble(id, grp.scale) << 28;
            y[2 + 64 + 4 * ib..2 + 68 + 4 * ib].copy_from_slice(&word.to_le_bytes());
        }
    }
}

fn quantize_row_iq3_s(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let bs = GgmlType::IQ3_S.type_size() as usize;
    for (ibl, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(bs))
        .enumerate()
    {
        let qw = imatrix.map(|q| &q[ibl * QK_K..(ibl + 1) * QK_K]);
        let (groups, max_scale) = quantize_super_block(&S, x, qw);
        let mut b = BlockIq3S::ZERO;
        // ggml advances its qs/signs pointers only past groups it wrote: a skipped (all
        // zero) group shifts the following groups' indices and signs down.
        let mut pos = 0;
        for (ib, grp) in groups.iter().enumerate() {
            if !grp.written {
                continue;
            }
            for k in 0..8 {
                b.qs[8 * pos + k] = grp.index[k] as u8;
                b.qh[ib] |= ((grp.index[k] >> 8) as u8) << k;
            }
            b.signs[4 * pos..4 * pos + 4].copy_from_slice(&grp.signs);
            pos += 1;
        }
        if max_scale != 0.0 {
            let d = max_scale / 31.0;
            let mut dh = [0u8; 2];
            write_fp16(&mut dh, 0, d * 1.033);
            b.d = dh;
            let id = 1.0 / d;
            for ib in (0..8).step_by(2) {
                let l1 = scale_nibble(id, groups[ib].scale);
                let l2 = scale_nibble(id, groups[ib + 1].scale);
                b.scales[ib / 2] = (l1 | (l2 << 4)) as u8;
            }
        }
        whole_blocks_mut::<BlockIq3S>(y)[0] = b;
    }
}

/// `sign ? -1 : 1` of bit `j` of `signs`.
#[inline(always)]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & KMASK_IQ2XS[j] != 0 {
        -1.0
    } else {
        1.0
    }
}

fn dequantize_iq3_xxs(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq3Xxs>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for ib in 0..8 {
            let qs = &b.qs[8 * ib..8 * ib + 8];
            let aux = u32::from_le_bytes(b.qs[64 + 4 * ib..68 + 4 * ib].try_into().unwrap());
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for l in 0..4 {
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                let g1 = IQ3XXS_GRID[qs[2 * l] as usize].to_le_bytes();
                let g2 = IQ3XXS_GRID[qs[2 * l + 1] as usize].to_le_bytes();
                let y8 = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for j in 0..4 {
                    y8[j] = db * g1[j] as f32 * sign(signs, j);
                    y8[j + 4] = db * g2[j] as f32 * sign(signs, j + 4);
                }
            }
        }
    }
}

fn dequantize_iq3_s(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq3S>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for ib in 0..8 {
            let sc = b.scales[ib / 2];
            let db = d * (1 + 2 * if ib % 2 == 0 { sc & 0xf } else { sc >> 4 }) as f32;
            let qh = b.qh[ib] as usize;
            for l in 0..4 {
                let i1 = b.qs[8 * ib + 2 * l] as usize | ((qh << (8 - 2 * l)) & 256);
                let i2 = b.qs[8 * ib + 2 * l + 1] as usize | ((qh << (7 - 2 * l)) & 256);
                let g1 = IQ3S_GRID[i1].to_le_bytes();
                let g2 = IQ3S_GRID[i2].to_le_bytes();
                let signs = b.signs[4 * ib + l];
                let y8 = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for j in 0..4 {
                    y8[j] = db * g1[j] as f32 * sign(signs, j);
                    y8[j + 4] = db * g2[j] as f32 * sign(signs, j + 4);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{with_level, Level};

    /// A small deterministic generator (xorshift) for test inputs.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    #[test]
    fn sign_tables_are_the_even_parity_completions() {
        for (i, &s) in KSIGNS_IQ2XS.iter().enumerate() {
            assert_eq!(s as usize & 127, i);
            assert_eq!(s.count_ones() % 2, 0, "{i}");
        }
        for (j, &m) in KMASK_IQ2XS.iter().enumerate() {
            assert_eq!(m, 1 << j);
        }
    }

    /// The dequantization grids hold, per quantizer level, one increasing magnitude.
    #[test]
    fn dequant_grids_are_the_quantizer_grids() {
        for (kgrid, grid) in [
            (&KGRID_256[..], &IQ3XXS_GRID[..]),
            (&KGRID_512[..], &IQ3S_GRID[..]),
        ] {
            assert_eq!(kgrid.len(), grid.len());
            let mut magnitude = [None::<u8>; 8];
            for (&k, &g) in kgrid.iter().zip(grid) {
                for (i, b) in g.to_le_bytes().into_iter().enumerate() {
                    let l = ((k >> (3 * i)) & 7) as usize;
                    assert_eq!(*magnitude[l].get_or_insert(b), b, "level {l}");
                }
            }
            let m: Vec<u8> = magnitude.iter().map(|m| m.unwrap()).collect();
            assert!(m.windows(2).all(|w| w[0] < w[1]), "{m:?}");
        }
    }

    #[test]
    fn kmap_inverts_the_grid_and_neighbour_lists_are_nearest_first() {
        for (size, nwant) in [(256, 2), (512, 3)] {
            let g = Iq3Grid::get(size);
            assert_eq!(g.points.len(), size);
            for (i, p) in g.points.iter().enumerate() {
                assert_eq!(g.kmap[level_index(p.map(|q| (q - 1) / 2))], i as i32);
            }
            let on = g.kmap.iter().filter(|&&m| m >= 0).count();
            assert_eq!(on, size);
            for u in (0..KMAP_SIZE).filter(|&u| g.kmap[u] < 0) {
                let pos: [i32; 4] = std::array::from_fn(|k| 2 * ((u >> (3 * k)) & 7) as i32 + 1);
                let d = |j: u16| -> i32 {
                    let p = g.points[j as usize];
                    (0..4).map(|k| (p[k] as i32 - pos[k]).pow(2)).sum()
                };
                let list = g.neighbour_list(u);
                assert!(!list.is_empty());
                let ds: Vec<(i32, u16)> = list.iter().map(|&j| (d(j), j)).collect();
                assert!(ds.windows(2).all(|w| w[0] < w[1]), "{u}: {ds:?}");
                let mut distinct: Vec<i32> = ds.iter().map(|p| p.0).collect();
                distinct.dedup();
                assert!(distinct.len() <= nwant);
                // Every grid point closer than the last listed distance is listed.
                let last = ds.last().unwrap().0;
                let closer = (0..size as u16).filter(|&j| d(j) <= last).count();
                assert_eq!(closer, list.len(), "{u}");
                if distinct.len() < nwant {
                    assert_eq!(list.len(), size);
                }
            }
        }
    }

    /// Every level finds the same neighbour as the scalar scan, ties (zero weights) and
    /// lists longer than one vector included.
    #[test]
    fn neighbour_search_is_the_same_at_every_level() {
        let g = Iq3Grid::get(512);
        let v = values(4 * 4096, 7);
        for u in (0..KMAP_SIZE).filter(|&u| g.kmap[u] < 0).step_by(7) {
            let list = g.neighbour_list(u);
            let soa = &g.soa[g.soa_offset[u] as usize..];
            let x: [f32; 4] = std::array::from_fn(|i| v[4 * (u % 4096) + i].abs() * 15.0);
            for w in [[1.0, 0.5, 2.0, 0.1], [0.0; 4], [0.0, 1.0, 0.0, 1.0]] {
                for scale in [1.0f32, 0.93, 1.7] {
                    let want = iq3_best_neighbour_scalar(soa, list.len(), &x, &w, scale);
                    for level in Level::supported() {
                        let got = with_level(level, || {
                            simd::iq3_best_neighbour(soa, list.len(), &x, &w, scale)
                        })
                        .unwrap();
                        assert_eq!(got, want, "{level:?} u={u} w={w:?} scale={scale}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_writes_the_same_bytes_on_awkward_input() {
        // Zero groups, one tiny group, a huge value, ties in magnitude.
        let mut x = values(4 * QK_K, 3);
        x[..32].fill(0.0);
        x[64..96].fill(1e-9);
        x[300] = 1e6;
        x[600..632].fill(-0.25);
        let qw: Vec<f32> = values(4 * QK_K, 5).iter().map(|v| v.abs()).collect();
        for codec in [&IQ3_XXS, &IQ3_S] {
            for imatrix in [None, Some(&qw[..])] {
                let run = |level| {
                    with_level(level, || {
                        let mut y = vec![0u8; 4 * codec.type_size()];
                        (codec.quantize_row)(&x, &mut y, imatrix);
                        y
                    })
                    .unwrap()
                };
                let want = run(Level::Scalar);
                for level in Level::supported() {
                    assert_eq!(run(level), want, "{} {level:?}", codec.name());
                }
            }
        }
    }

    #[test]
    fn round_trip_error_is_bounded() {
        let x = values(16 * QK_K, 11);
        let rms = (sum_sq(&x) / x.len() as f32).sqrt();
        for (codec, bound) in [(&IQ3_XXS, 0.3), (&IQ3_S, 0.25)] {
            let mut y = vec![0u8; 16 * codec.type_size()];
            (codec.quantize_row)(&x, &mut y, None);
            let mut back = vec![0.0f32; x.len()];
            (codec.dequantize)(&y, &mut back);
            let err: f32 = x.iter().zip(&back).map(|(a, b)| (a - b) * (a - b)).sum();
            let rel = (err / x.len() as f32).sqrt() / rms;
            assert!(rel < bound, "{}: relative RMS error {rel}", codec.name());
            assert!(rel > 0.01, "{}: suspiciously exact {rel}", codec.name());
        }
    }

    #[test]
    fn all_zero_super_blocks_are_zero_bytes() {
        for codec in [&IQ3_XXS, &IQ3_S] {
            let mut y = vec![0xAAu8; codec.type_size()];
            (codec.quantize_row)(&[0.0; QK_K], &mut y, None);
            assert!(y.iter().all(|&b| b == 0), "{}", codec.name());
            let mut back = [1.0f32; QK_K];
            (codec.dequantize)(&y, &mut back);
            assert!(back.iter().all(|&v| v == 0.0));
        }
    }
}

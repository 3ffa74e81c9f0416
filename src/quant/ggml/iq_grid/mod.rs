//! The E8-lattice grids of the IQ2 and IQ1 types and ggml's search machinery over them
//! (`iq2xs_init_impl`, `iq2_find_best_neighbour`, `iq1_find_best_neighbour2` in
//! `ggml-quants.c`).
//!
//! A grid point is 8 values, each a 2-bit level `l` (0..=2) stored as the position
//! `2l + 1`. A group of 8 levels packs into `u = sum l_i << 2i`; the map sends `u` to
//! its grid index, or, for a point off the grid, to the list of its nearest grid points
//! (all points at the `nwant` smallest squared distances, ordered by distance then
//! index, as ggml's `qsort` of `(d2, j)` pairs leaves them).
//!
//! ggml builds the neighbour lists for all 43692 map entries, including points with a
//! level 3 the quantizers never produce (they clamp levels to 0..=2); qforge builds them
//! for the 3^8 reachable points only, with the same contents.

// The loops keep ggml's index arithmetic, so the code reads against the C line by line.
#![allow(clippy::needless_range_loop)]

mod tables;

pub use tables::*;

use super::simd;
use std::sync::OnceLock;

/// Map entries: every `u` whose 2-bit digits are at most 2 (ggml's `kmap_size`).
pub const KMAP_SIZE: usize = 43692;

/// The four grids of `iq2xs_init_impl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GridKind {
    /// IQ2_XXS: 256 points, neighbours at the 2 nearest distances.
    Iq2Xxs,
    /// IQ2_XS: 512 points, 2 distances.
    Iq2Xs,
    /// IQ2_S: 1024 points, 1 distance.
    Iq2S,
    /// IQ1_S and IQ1_M: 2048 points, 3 distances.
    Iq1,
}

impl GridKind {
    /// ggml's `kgrid` table of the kind (2-bit levels packed in a `u16`).
    fn kgrid(self) -> &'static [u16] {
        match self {
            GridKind::Iq2Xxs => &KGRID_2BIT_256,
            GridKind::Iq2Xs => &KGRID_2BIT_512,
            GridKind::Iq2S => &KGRID_2BIT_1024,
            GridKind::Iq1 => &KGRID_1BIT_2048,
        }
    }

    /// How many distinct distances the neighbour lists span (`nwant`).
    fn nwant(self) -> usize {
        match self {
            GridKind::Iq2Xxs | GridKind::Iq2Xs => 2,
            GridKind::Iq2S => 1,
            GridKind::Iq1 => 3,
        }
    }
}

/// A grid with its map and neighbour lists, built once per process.
pub struct IqGrid {
    /// Points as positions `2l + 1`.
    pub points: Vec<[i8; 8]>,
    /// `u` -> grid index (`>= 0`), or `-(offset + 1)` of its neighbour list (count first),
    /// or `i32::MIN` for a point with a level 3.
    map: Vec<i32>,
    /// Neighbour lists: a count, the list's first block in `nb_bytes` (low, high half),
    /// then that many grid indices.
    neighbours: Vec<u16>,
    /// The neighbour lists again for the SIMD search, in blocks of [`NB_BLOCK`] points
    /// stored coordinate-major (`[block][i][lane]`): the position (IQ2) or the
    /// level - 1 (IQ1, whose values `xg[l]` are exactly `l - 1 + delta`); the last
    /// block of a list padded with its first point.
    nb_bytes: Vec<i8>,
}

/// Points per block of [`Neighbours::bytes`].
pub const NB_BLOCK: usize = 16;

/// The nearest grid points of an off-grid group.
#[derive(Clone, Copy)]
pub struct Neighbours<'a> {
    /// Grid indices, in ggml's order.
    pub idx: &'a [u16],
    /// Their coordinates, `ceil(len / NB_BLOCK)` blocks (see `IqGrid::nb_bytes`).
    pub bytes: &'a [i8],
}

/// Where a packed group lies: on the grid, or off it with its nearest grid points.
pub enum Lookup<'a> {
    /// The grid index.
    On(usize),
    /// The nearest grid points, in ggml's order.
    Off(Neighbours<'a>),
}

impl IqGrid {
    /// The process-wide grid of `kind` (built on first use).
    pub fn get(kind: GridKind) -> &'static IqGrid {
        static GRIDS: [OnceLock<IqGrid>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        GRIDS[kind as usize].get_or_init(|| IqGrid::build(kind))
    }

    fn build(kind: GridKind) -> IqGrid {
        let points: Vec<[i8; 8]> = kind
            .kgrid()
            .iter()
            .map(|&g| positions(g as usize))
            .collect();
        let mut map = vec![i32::MIN; KMAP_SIZE];
        for (i, p) in points.iter().enumerate() {
            map[pack(p)] = i as i32;
        }
        let mut neighbours = Vec::new();
        let mut nb_bytes = Vec::new();
        let value = |p: i8| -> i8 {
            match kind {
                GridKind::Iq1 => (p - 1) / 2 - 1,
                _ => p,
            }
        };
        let nwant = kind.nwant();
        // d2 <= 8 * 4^2: bucket the grid points by distance, in index order.
        let mut buckets: Vec<Vec<u16>> = vec![Vec::new(); 129];
        for u in 0..KMAP_SIZE {
            if map[u] != i32::MIN || !reachable(u) {
                continue;
            }
            let pos = positions(u);
            for b in buckets.iter_mut() {
                b.clear();
            }
            for (j, p) in points.iter().enumerate() {
                let d2: i32 = p
                    .iter()
                    .zip(&pos)
                    .map(|(&a, &b)| (a as i32 - b as i32) * (a as i32 - b as i32))
                    .sum();
                buckets[d2 as usize].push(j as u16);
            }
            map[u] = -(neighbours.len() as i32 + 1);
            let start = neighbours.len();
            let block = nb_bytes.len() / (8 * NB_BLOCK);
            neighbours.extend_from_slice(&[0, block as u16, (block >> 16) as u16]);
            for b in buckets.iter().filter(|b| !b.is_empty()).take(nwant) {
                neighbours.extend_from_slice(b);
            }
            neighbours[start] = (neighbours.len() - start - 3) as u16;
            let list = &neighbours[start + 3..];
            for chunk in list.chunks(NB_BLOCK) {
                for i in 0..8 {
                    for lane in 0..NB_BLOCK {
                        let j = *chunk.get(lane).unwrap_or(&list[0]) as usize;
                        nb_bytes.push(value(points[j][i]));
                    }
                }
            }
        }
        IqGrid {
            points,
            map,
            neighbours,
            nb_bytes,
        }
    }

    /// Where the group with packed levels `u` (all at most 2) lies.
    #[inline]
    pub fn lookup(&self, u: usize) -> Lookup<'_> {
        let m = self.map[u];
        if m >= 0 {
            Lookup::On(m as usize)
        } else {
            assert!(m != i32::MIN, "level 3 in packed group {u:#x}");
            let off = (-(m + 1)) as usize;
            let h = &self.neighbours[off..off + 3];
            let n = h[0] as usize;
            let block = h[1] as usize | (h[2] as usize) << 16;
            let len = 8 * NB_BLOCK * n.div_ceil(NB_BLOCK);
            let start = 8 * NB_BLOCK * block;
            Lookup::Off(Neighbours {
                idx: &self.neighbours[off + 3..off + 3 + n],
                bytes: &self.nb_bytes[start..start + len],
            })
        }
    }

    /// The levels `(pos - 1) / 2` of grid point `index`.
    #[inline]
    pub fn levels(&self, index: usize) -> [i8; 8] {
        self.points[index].map(|p| (p - 1) / 2)
    }
}

/// Positions `2l + 1` of the packed 2-bit levels `u`.
fn positions(u: usize) -> [i8; 8] {
    std::array::from_fn(|k| (2 * ((u >> (2 * k)) & 3) + 1) as i8)
}

/// Packed levels of positions `p`.
fn pack(p: &[i8; 8]) -> usize {
    p.iter()
        .enumerate()
        .map(|(k, &v)| (((v - 1) / 2) as usize) << (2 * k))
        .sum()
}

/// Whether every 2-bit digit of `u` is at most 2 (a quantizer can produce it).
fn reachable(u: usize) -> bool {
    (0..8).all(|k| (u >> (2 * k)) & 3 != 3)
}

/// Packs 8 levels (each 0..=2) as `sum l_i << 2i`.
#[inline(always)]
pub fn pack_levels(l: &[i8]) -> usize {
    let mut u = 0usize;
    for (i, &v) in l[..8].iter().enumerate() {
        u |= (v as usize) << (2 * i);
    }
    u
}

/// ggml's `iq2_find_best_neighbour`: among `nb`, the grid point minimising
/// `sum w_i (scale * pos_i - x_i)^2` (the first one on ties); writes its levels to `l`
/// and returns its index. Non-finite data (where ggml aborts) takes the first neighbour.
#[inline]
pub fn find_best_neighbour(
    grid: &IqGrid,
    nb: Neighbours<'_>,
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    l: &mut [i8],
) -> usize {
    let best = simd::neighbour_best(nb.bytes, nb.idx.len(), xval, weight, scale, 0.0)
        .map(|p| nb.idx[p] as usize)
        .unwrap_or_else(|| nearest_scalar(grid, nb.idx, xval, weight, scale, |p| p as f32));
    l[..8].copy_from_slice(&grid.levels(best));
    best
}

/// ggml's `iq1_find_best_neighbour2`: as [`find_best_neighbour`] with the values
/// `xg[level]` in place of the positions.
#[inline]
pub fn find_best_neighbour_iq1(
    grid: &IqGrid,
    nb: Neighbours<'_>,
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    xg: &[f32; 3],
    l: &mut [i8],
) -> usize {
    // xg = x_p or x_m: -1 + delta, delta, 1 + delta with delta = xg[1].
    debug_assert!(xg[0] == xg[1] - 1.0 && xg[2] == xg[1] + 1.0);
    let best = simd::neighbour_best(nb.bytes, nb.idx.len(), xval, weight, scale, xg[1])
        .map(|p| nb.idx[p] as usize)
        .unwrap_or_else(|| {
            nearest_scalar(grid, nb.idx, xval, weight, scale, |p| {
                xg[((p - 1) / 2) as usize]
            })
        });
    l[..8].copy_from_slice(&grid.levels(best));
    best
}

/// The scalar scan of both neighbour searches: the first neighbour with the least
/// `sum w_i (scale * value(pos_i) - x_i)^2`, in ggml's operation order.
#[inline]
fn nearest_scalar(
    grid: &IqGrid,
    neighbours: &[u16],
    xval: &[f32],
    weight: &[f32],
    scale: f32,
    value: impl Fn(i8) -> f32,
) -> usize {
    let mut best_d2 = f32::MAX;
    let mut best = neighbours[0] as usize;
    for &j in neighbours {
        let pg = &grid.points[j as usize];
        let mut d2 = 0.0f32;
        for i in 0..8 {
            let diff = scale * value(pg[i]) - xval[i];
            d2 += weight[i] * diff * diff;
        }
        if d2 < best_d2 {
            best_d2 = d2;
            best = j as usize;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [GridKind; 4] = [
        GridKind::Iq2Xxs,
        GridKind::Iq2Xs,
        GridKind::Iq2S,
        GridKind::Iq1,
    ];

    #[test]
    fn kgrids_are_distinct_reachable_points() {
        for kind in KINDS {
            let g = kind.kgrid();
            let mut seen = std::collections::HashSet::new();
            for &p in g {
                assert!(reachable(p as usize), "{kind:?}: {p:#x}");
                assert!(seen.insert(p), "{kind:?}: {p:#x} twice");
            }
            assert!(g.windows(2).all(|w| w[0] < w[1]), "{kind:?} sorted");
        }
        assert_eq!(KMAP_SIZE, 0xaaaa + 2);
    }

    #[test]
    fn map_inverts_the_grid_and_neighbours_are_nearest() {
        for kind in KINDS {
            let grid = IqGrid::get(kind);
            let n = kind.kgrid().len();
            assert_eq!(grid.points.len(), n);
            for (i, p) in grid.points.iter().enumerate() {
                assert_eq!(pack(p), kind.kgrid()[i] as usize);
                assert!(matches!(grid.lookup(pack(p)), Lookup::On(j) if j == i));
            }
            let mut off = 0;
            for u in (0..KMAP_SIZE).filter(|&u| reachable(u)) {
                let Lookup::Off(Neighbours { idx: nb, bytes }) = grid.lookup(u) else {
                    continue;
                };
                off += 1;
                // The byte blocks hold the listed points, padded with the first.
                assert_eq!(bytes.len(), 8 * NB_BLOCK * nb.len().div_ceil(NB_BLOCK));
                for (k, block) in bytes.chunks_exact(8 * NB_BLOCK).enumerate() {
                    for lane in 0..NB_BLOCK {
                        let j = *nb.get(k * NB_BLOCK + lane).unwrap_or(&nb[0]) as usize;
                        let c: [i8; 8] = std::array::from_fn(|i| block[i * NB_BLOCK + lane]);
                        let want = grid.points[j].map(|p| match kind {
                            GridKind::Iq1 => (p - 1) / 2 - 1,
                            _ => p,
                        });
                        assert_eq!(c, want, "{kind:?} u={u:#x} block {k} lane {lane}");
                    }
                }
                let pos = positions(u);
                let d2 = |j: u16| -> i32 {
                    grid.points[j as usize]
                        .iter()
                        .zip(&pos)
                        .map(|(&a, &b)| (a as i32 - b as i32).pow(2))
                        .sum()
                };
                assert!(!nb.is_empty());
                // Sorted by (distance, index); exactly `nwant` distinct distances.
                assert!(nb.windows(2).all(|w| (d2(w[0]), w[0]) < (d2(w[1]), w[1])));
                let mut ds: Vec<i32> = nb.iter().map(|&j| d2(j)).collect();
                ds.dedup();
                assert_eq!(ds.len(), kind.nwant(), "{kind:?} u={u:#x}");
                // Nothing left out: every point at a listed distance is listed.
                let last = *ds.last().unwrap();
                let within = (0..n as u16).filter(|&j| d2(j) <= last).count();
                assert_eq!(within, nb.len());
            }
            assert_eq!(off, 6561 - n, "{kind:?}");
        }
    }

    /// Every kernel level gives the scalar scan's neighbour: random data, ties (equal
    /// distances from zero weights and from repeated values) and non-finite input.
    #[test]
    fn neighbour_search_is_the_scalar_scan_at_every_level() {
        use crate::cpu::{with_level, Level};
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for kind in KINDS {
            let grid = IqGrid::get(kind);
            let lists: Vec<u16> = (0..KMAP_SIZE as u16)
                .filter(|&u| reachable(u as usize))
                .filter(|&u| matches!(grid.lookup(u as usize), Lookup::Off(_)))
                .step_by(7)
                .collect();
            for (t, &u) in lists.iter().enumerate() {
                let Lookup::Off(nb) = grid.lookup(u as usize) else {
                    unreachable!()
                };
                let mut x: [f32; 8] = std::array::from_fn(|_| 6.0 * rnd());
                let mut w: [f32; 8] = std::array::from_fn(|_| rnd());
                match t % 5 {
                    0 => w = [0.0; 8],
                    1 => x = [x[0]; 8],
                    2 => w[..4].fill(0.0),
                    3 if t % 35 == 3 => x[t % 8] = f32::NAN,
                    _ => {}
                }
                let scale = 0.5 + rnd();
                let xg = [-1.0 + 0.125, 0.125, 1.0 + 0.125];
                // The IQ1 search takes the IQ1 grid's values, the IQ2 one the positions.
                let search = || {
                    let mut l = [0i8; 8];
                    match kind {
                        GridKind::Iq1 => {
                            find_best_neighbour_iq1(grid, nb, &x, &w, scale, &xg, &mut l)
                        }
                        _ => find_best_neighbour(grid, nb, &x, &w, scale, &mut l),
                    }
                };
                let results: Vec<usize> = Level::supported()
                    .into_iter()
                    .map(|level| with_level(level, search).unwrap())
                    .collect();
                let want = match kind {
                    GridKind::Iq1 => {
                        nearest_scalar(grid, nb.idx, &x, &w, scale, |p| xg[((p - 1) / 2) as usize])
                    }
                    _ => nearest_scalar(grid, nb.idx, &x, &w, scale, |p| p as f32),
                };
                for r in &results {
                    assert_eq!(*r, want, "{kind:?} u={u:#x} x={x:?} w={w:?}");
                }
            }
        }
    }

    #[test]
    fn dequantization_grids_are_the_kgrids() {
        // ggml-common.h's grids hold the values (IQ2: 8, 25, 43 per level; IQ1: -1, 0, 1).
        let check = |kind: GridKind, table: &[u64], values: [i8; 3]| {
            assert_eq!(table.len(), kind.kgrid().len());
            for (&k, &t) in kind.kgrid().iter().zip(table) {
                let want: [u8; 8] =
                    std::array::from_fn(|i| values[(k as usize >> (2 * i)) & 3] as u8);
                assert_eq!(t.to_le_bytes(), want, "{kind:?} {k:#x}");
            }
        };
        check(GridKind::Iq2Xxs, &IQ2XXS_GRID, [8, 25, 43]);
        check(GridKind::Iq2Xs, &IQ2XS_GRID, [8, 25, 43]);
        check(GridKind::Iq2S, &IQ2S_GRID, [8, 25, 43]);
        check(GridKind::Iq1, &IQ1S_GRID, [-1, 0, 1]);
    }

    #[test]
    fn sign_tables_have_even_parity() {
        for (i, &s) in KSIGNS_IQ2XS.iter().enumerate() {
            assert_eq!(s & 127, i as u8);
            assert_eq!(s.count_ones() % 2, 0);
        }
        for (j, &m) in KMASK_IQ2XS.iter().enumerate() {
            assert_eq!(m, 1 << j);
        }
    }
}

//! Q4_K repacked into tiles of 16 rows for the AVX-512 VNNI GEMM: one `vpdpbusd` then
//! multiplies 4 values of 16 rows with 4 broadcast activation values, so the 16 outputs
//! of a tile build up in the lanes of one register per token and a row's sub-block scale
//! is applied once per 32 values, not once per instruction.
//!
//! A tile holds one 256-value super-block of 16 rows: the f16 `d` and `dmin` of each
//! row, the 6-bit sub-block scales and mins unpacked to bytes (sub-block major), and the
//! 4-bit levels regrouped so that each 64-byte line is 8 values of the 16 rows (byte `j`
//! of a row: value `j` in the low nibble, value `j + 4` in the high one). 2368 bytes per
//! 16 x 256 values: 4.625 bits per weight, against 4.5 for ggml's layout.

use super::activation::{ActRow, Activations};
use super::weights::QuantMatrix;
use crate::quant::ggml::get_scale_min_k4;
use rayon::prelude::*;

/// Rows per tile.
pub const TILE_ROWS: usize = 16;

/// Bytes of one tile.
pub const TILE_BYTES: usize = 2368;

const D_AT: usize = 0;
const DMIN_AT: usize = 32;
const SC_AT: usize = 64;
const MN_AT: usize = 192;
const QS_AT: usize = 320;

/// Q4_K weights as 16-row tiles, `n / 16` tile rows of `k / 256` tiles each.
pub struct TiledQ4K {
    /// Output rows (a multiple of 16).
    pub n: usize,
    /// Values per row.
    pub k: usize,
    tiles: Vec<u8>,
}

impl TiledQ4K {
    /// Whether `w` can be tiled (Q4_K with a multiple of 16 rows).
    pub fn fits(w: &QuantMatrix) -> bool {
        w.ty == super::WeightType::Q4K && w.n.is_multiple_of(TILE_ROWS)
    }

    /// Repacks `w` (which must [`fit`](Self::fits)), tile rows in parallel.
    pub fn new(w: &QuantMatrix) -> Self {
        assert!(Self::fits(w));
        let per_row = w.k / 256;
        let mut tiles = vec![0u8; w.n / TILE_ROWS * per_row * TILE_BYTES];
        tiles
            .par_chunks_mut(per_row * TILE_BYTES)
            .enumerate()
            .for_each(|(tr, out)| {
                for (sb, tile) in out.chunks_exact_mut(TILE_BYTES).enumerate() {
                    for r in 0..TILE_ROWS {
                        let blk = &w.row(tr * TILE_ROWS + r)[sb * 144..(sb + 1) * 144];
                        tile[D_AT + 2 * r..D_AT + 2 * r + 2].copy_from_slice(&blk[0..2]);
                        tile[DMIN_AT + 2 * r..DMIN_AT + 2 * r + 2].copy_from_slice(&blk[2..4]);
                        for j in 0..8 {
                            let (sc, mn) = get_scale_min_k4(j, &blk[4..16]);
                            tile[SC_AT + j * 16 + r] = sc;
                            tile[MN_AT + j * 16 + r] = mn;
                        }
                        for g in 0..32 {
                            for b in 0..4 {
                                let lo = level(&blk[16..], 8 * g + b);
                                let hi = level(&blk[16..], 8 * g + b + 4);
                                tile[QS_AT + g * 64 + r * 4 + b] = lo | (hi << 4);
                            }
                        }
                    }
                }
            });
        TiledQ4K {
            n: w.n,
            k: w.k,
            tiles,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.tiles.len() as u64
    }

    /// The tiles of tile row `tr`.
    fn tile_row(&self, tr: usize) -> &[u8] {
        let len = self.k / 256 * TILE_BYTES;
        &self.tiles[tr * len..(tr + 1) * len]
    }
}

/// The 4-bit level of value `e` (0..256) of a Q4_K block's `qs`.
fn level(qs: &[u8], e: usize) -> u8 {
    let (pair, j) = (e / 64, e % 64);
    let b = qs[pair * 32 + j % 32];
    if j < 32 {
        b & 0xF
    } else {
        b >> 4
    }
}

/// `y` (m x n, token-major) for activations `acts` (from
/// [`Activations::for_weights`] for Q4_K), tile rows in parallel.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI and FMA (`Isa::Avx512Vnni`).
pub unsafe fn matmul(w: &TiledQ4K, acts: &Activations, y: &mut [f32]) {
    let m = acts.tokens();
    assert_eq!(acts.k, w.k);
    assert_eq!(y.len(), m * w.n);
    let tokens: Vec<ActRow<'_>> = (0..m).map(|t| acts.token(t)).collect();
    // The sum of each 32 activations as f32, per token, for the mins.
    let sums32: Vec<f32> = acts
        .sums16
        .chunks_exact(2)
        .map(|p| f32::from(p[0]) + f32::from(p[1]))
        .collect();
    let out = super::SharedOut(y.as_mut_ptr());
    let n = w.n;
    (0..n / TILE_ROWS).into_par_iter().for_each(|tr| {
        let tiles = w.tile_row(tr);
        let mut t = 0;
        while t < m {
            let count = [4, 1].into_iter().find(|&c| m - t >= c).expect("t < m");
            let mut res = [[0f32; TILE_ROWS]; 4];
            let group = &tokens[t..t + count];
            let sums = &sums32[t * w.k / 32..(t + count) * w.k / 32];
            // SAFETY: the caller guarantees the CPU features; lengths are checked above.
            unsafe {
                match count {
                    4 => x86::tile_row::<4>(tiles, group, sums, &mut res),
                    _ => x86::tile_row::<1>(tiles, group, sums, &mut res),
                }
            }
            for (i, r) in res[..count].iter().enumerate() {
                // SAFETY: token t + i < m, rows tr*16 .. tr*16+16 < n belong to this task.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        r.as_ptr(),
                        out.at((t + i) * n + tr * TILE_ROWS),
                        TILE_ROWS,
                    );
                }
            }
            t += count;
        }
    });
}

mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// One tile row (16 outputs) for `T` tokens: `res[t][r]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn tile_row<const T: usize>(
        tiles: &[u8],
        acts: &[ActRow<'_>],
        sums32: &[f32],
        res: &mut [[f32; TILE_ROWS]; 4],
    ) {
        let m4 = _mm512_set1_epi8(0x0F);
        let k32 = sums32.len() / T;
        let mut facc = [_mm512_setzero_ps(); T];
        for (sb, tile) in tiles.chunks_exact(TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(TILE_BYTES * 2).cast());
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(D_AT).cast()));
            let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(DMIN_AT).cast()));
            let mut sbacc = [_mm512_setzero_ps(); T];
            for j in 0..8 {
                // Low and high nibbles in separate accumulators: shorter dependency chains.
                let mut lo_acc = [_mm512_setzero_si512(); T];
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in 4 * j..4 * j + 4 {
                    let q = _mm512_loadu_si512(p.add(QS_AT + 64 * g).cast());
                    let lo = _mm512_and_si512(q, m4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                    for t in 0..T {
                        let x = acts[t].qs.as_ptr().add(sb * 256 + 8 * g);
                        let xlo = _mm512_set1_epi32(x.cast::<i32>().read_unaligned());
                        let xhi = _mm512_set1_epi32(x.add(4).cast::<i32>().read_unaligned());
                        lo_acc[t] = _mm512_dpbusd_epi32(lo_acc[t], lo, xlo);
                        hi_acc[t] = _mm512_dpbusd_epi32(hi_acc[t], hi, xhi);
                    }
                }
                let acc: [__m512i; T] =
                    std::array::from_fn(|t| _mm512_add_epi32(lo_acc[t], hi_acc[t]));
                let sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                    p.add(SC_AT + 16 * j).cast(),
                )));
                let mn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                    p.add(MN_AT + 16 * j).cast(),
                )));
                let (sc, mn) = (_mm512_mul_ps(sc, d), _mm512_mul_ps(mn, dmin));
                for t in 0..T {
                    sbacc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[t]), sc, sbacc[t]);
                    let s = _mm512_set1_ps(sums32[t * k32 + sb * 8 + j]);
                    sbacc[t] = _mm512_fnmadd_ps(mn, s, sbacc[t]);
                }
            }
            for t in 0..T {
                facc[t] = _mm512_fmadd_ps(sbacc[t], _mm512_set1_ps(acts[t].d[sb]), facc[t]);
            }
        }
        for t in 0..T {
            _mm512_storeu_ps(res[t].as_mut_ptr(), facc[t]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::WeightType;

    #[test]
    fn tiles_hold_every_level_scale_and_min() {
        let w = QuantMatrix::random(WeightType::Q4K, 32, 512, 8).unwrap();
        let t = TiledQ4K::new(&w);
        assert_eq!(t.bytes() as usize, 2 * 2 * TILE_BYTES);
        let mut row = vec![0f32; 512];
        for r in [0, 5, 17, 31] {
            w.dequantize_rows(r..r + 1, &mut row);
            let (tr, lane) = (r / TILE_ROWS, r % TILE_ROWS);
            for (sb, tile) in t.tile_row(tr).chunks_exact(TILE_BYTES).enumerate() {
                let f16 = |at: usize| half::f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32();
                let (d, dmin) = (f16(D_AT + 2 * lane), f16(DMIN_AT + 2 * lane));
                for e in 0..256 {
                    let (g, b) = (e / 8, e % 8);
                    let byte = tile[QS_AT + g * 64 + lane * 4 + b % 4];
                    let q = if b < 4 { byte & 0xF } else { byte >> 4 };
                    let j = e / 32;
                    let (sc, mn) = (tile[SC_AT + j * 16 + lane], tile[MN_AT + j * 16 + lane]);
                    let v = d * f32::from(sc) * f32::from(q) - dmin * f32::from(mn);
                    assert_eq!(v, row[sb * 256 + e], "row {r} value {}", sb * 256 + e);
                }
            }
        }
        assert!(!TiledQ4K::fits(
            &QuantMatrix::random(WeightType::Q4K, 24, 256, 1).unwrap()
        ));
        assert!(!TiledQ4K::fits(
            &QuantMatrix::random(WeightType::Q6K, 32, 256, 1).unwrap()
        ));
    }
}

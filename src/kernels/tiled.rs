//! Q4_K and NF4 repacked into tiles of 16 rows for the AVX-512 VNNI GEMM: one
//! `vpdpbusd` multiplies 4 values of 16 rows with 4 broadcast activation values, so the
//! 16 outputs of a tile build up in the lanes of one register per token and a row's
//! scale is applied once per 32 values, not once per instruction.
//!
//! In both kinds the 4-bit codes are regrouped so that each 64-byte line is 8 values of
//! the 16 rows (byte `j` of a row: value `j` in the low nibble, value `j + 4` in the high).
//! - Q4_K: a tile is one 256-value super-block of 16 rows: the f16 `d` and `dmin` of each
//!   row, the 6-bit sub-block scales and mins unpacked to bytes (sub-block major), then
//!   the levels. 2368 bytes per 16 x 256 values: 4.625 bits per weight (ggml: 4.5).
//! - NF4: a tile is one 64-value block of 16 rows: `absmax / 127` of each row (f32), then
//!   the codes, which become int8 through [`NF4_I8`] in registers. 576 bytes per 16 x 64
//!   values: 4.5 bits per weight, as bitsandbytes stores it.

use super::activation::{ActRow, Activations};
use super::dot::NF4_I8;
use super::weights::{QuantMatrix, WeightType, NF4_BLOCK};
use crate::quant::ggml::get_scale_min_k4;
use rayon::prelude::*;

/// Rows per tile.
pub const TILE_ROWS: usize = 16;

/// Bytes of one Q4_K tile.
pub const TILE_BYTES: usize = 2368;

/// Bytes of one NF4 tile.
pub const NF4_TILE_BYTES: usize = 64 + 8 * 64;

/// The weight types that have tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4K,
    Nf4,
}

impl Kind {
    fn of(ty: WeightType) -> Option<Kind> {
        match ty {
            WeightType::Q4K => Some(Kind::Q4K),
            WeightType::Nf4 => Some(Kind::Nf4),
            _ => None,
        }
    }

    /// Values of a row in one tile.
    fn values(self) -> usize {
        match self {
            Kind::Q4K => 256,
            Kind::Nf4 => NF4_BLOCK,
        }
    }

    /// Bytes of one tile.
    fn bytes(self) -> usize {
        match self {
            Kind::Q4K => TILE_BYTES,
            Kind::Nf4 => NF4_TILE_BYTES,
        }
    }
}

/// Offset of the codes in an NF4 tile (after 16 f32 scales).
const NF4_CODES_AT: usize = 64;

const D_AT: usize = 0;
const DMIN_AT: usize = 32;
const SC_AT: usize = 64;
const MN_AT: usize = 192;
const QS_AT: usize = 320;

/// Q4_K or NF4 weights as 16-row tiles, `n / 16` tile rows of `k / values` tiles each.
pub struct Tiled {
    kind: Kind,
    /// Output rows (a multiple of 16).
    pub n: usize,
    /// Values per row.
    pub k: usize,
    tiles: Vec<u8>,
}

impl Tiled {
    /// Whether `w` can be tiled (Q4_K or NF4 with a multiple of 16 rows).
    pub fn fits(w: &QuantMatrix) -> bool {
        Kind::of(w.ty).is_some() && w.n.is_multiple_of(TILE_ROWS)
    }

    /// Repacks `w` (which must [`fit`](Self::fits)), tile rows in parallel.
    pub fn new(w: &QuantMatrix) -> Self {
        assert!(Self::fits(w));
        let kind = Kind::of(w.ty).expect("fits");
        let per_row = w.k / kind.values();
        let mut tiles = vec![0u8; w.n / TILE_ROWS * per_row * kind.bytes()];
        tiles
            .par_chunks_mut(per_row * kind.bytes())
            .enumerate()
            .for_each(|(tr, out)| {
                for (i, tile) in out.chunks_exact_mut(kind.bytes()).enumerate() {
                    for r in 0..TILE_ROWS {
                        let row = tr * TILE_ROWS + r;
                        match kind {
                            Kind::Q4K => pack_q4_k(tile, r, &w.row(row)[i * 144..(i + 1) * 144]),
                            Kind::Nf4 => {
                                let codes = &w.row(row)[i * 32..(i + 1) * 32];
                                pack_nf4(tile, r, codes, w.row_absmax(row)[i]);
                            }
                        }
                    }
                }
            });
        Tiled {
            kind,
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
        let len = self.k / self.kind.values() * self.kind.bytes();
        &self.tiles[tr * len..(tr + 1) * len]
    }
}

/// Row `r` of a Q4_K tile from the row's ggml block `blk`.
fn pack_q4_k(tile: &mut [u8], r: usize, blk: &[u8]) {
    tile[D_AT + 2 * r..D_AT + 2 * r + 2].copy_from_slice(&blk[0..2]);
    tile[DMIN_AT + 2 * r..DMIN_AT + 2 * r + 2].copy_from_slice(&blk[2..4]);
    for j in 0..8 {
        let (sc, mn) = get_scale_min_k4(j, &blk[4..16]);
        tile[SC_AT + j * 16 + r] = sc;
        tile[MN_AT + j * 16 + r] = mn;
    }
    regroup(&mut tile[QS_AT..], r, 256, |e| level(&blk[16..], e));
}

/// Row `r` of an NF4 tile from the row's 32 packed bytes and block absmax.
fn pack_nf4(tile: &mut [u8], r: usize, packed: &[u8], absmax: f32) {
    tile[4 * r..4 * r + 4].copy_from_slice(&(absmax * (1.0 / 127.0)).to_le_bytes());
    let code = |e: usize| {
        if e.is_multiple_of(2) {
            packed[e / 2] >> 4
        } else {
            packed[e / 2] & 0xF
        }
    };
    regroup(&mut tile[NF4_CODES_AT..], r, NF4_BLOCK, code);
}

/// Writes row `r`'s `values` 4-bit codes (`code(e)`) into the 64-byte lines of 8 values.
fn regroup(lines: &mut [u8], r: usize, values: usize, code: impl Fn(usize) -> u8) {
    for g in 0..values / 8 {
        for b in 0..4 {
            lines[g * 64 + r * 4 + b] = code(8 * g + b) | (code(8 * g + b + 4) << 4);
        }
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
/// [`Activations::for_weights`] for the tiled type), tile rows in parallel.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, FMA and F16C (`Isa::Avx512Vnni`).
pub unsafe fn matmul(w: &Tiled, acts: &Activations, y: &mut [f32]) {
    let m = acts.tokens();
    assert_eq!(acts.k, w.k);
    assert_eq!(y.len(), m * w.n);
    let tokens: Vec<ActRow<'_>> = (0..m).map(|t| acts.token(t)).collect();
    // The sum of each 32 activations, per token: Q4_K's mins take it as f32, NF4 takes
    // -128 times it off the codes stored +128.
    let sums32 = acts
        .sums16
        .chunks_exact(2)
        .map(|p| i32::from(p[0]) + i32::from(p[1]));
    let (sums_f32, offsets): (Vec<f32>, Vec<i32>) = match w.kind {
        Kind::Q4K => (sums32.map(|s| s as f32).collect(), Vec::new()),
        Kind::Nf4 => (Vec::new(), sums32.map(|s| -128 * s).collect()),
    };
    let out = super::SharedOut(y.as_mut_ptr());
    let (n, k32) = (w.n, w.k / 32);
    (0..n / TILE_ROWS).into_par_iter().for_each(|tr| {
        let tiles = w.tile_row(tr);
        let mut t = 0;
        while t < m {
            let count = if m - t >= 4 { 4 } else { 1 };
            let mut res = [[0f32; TILE_ROWS]; 4];
            let group = &tokens[t..t + count];
            let span = t * k32..(t + count) * k32;
            // SAFETY: the caller guarantees the CPU features; lengths are checked above.
            unsafe {
                match (w.kind, count) {
                    (Kind::Q4K, 4) => x86::q4_k::<4>(tiles, group, &sums_f32[span], &mut res),
                    (Kind::Q4K, _) => x86::q4_k::<1>(tiles, group, &sums_f32[span], &mut res),
                    (Kind::Nf4, 4) => x86::nf4::<4>(tiles, group, &offsets[span], &mut res),
                    (Kind::Nf4, _) => x86::nf4::<1>(tiles, group, &offsets[span], &mut res),
                }
            }
            for (i, r) in res[..count].iter().enumerate() {
                // SAFETY: token t + i < m, rows tr*16 .. tr*16+16 < n belong to this task.
                unsafe {
                    let dst = out.at((t + i) * n + tr * TILE_ROWS);
                    std::ptr::copy_nonoverlapping(r.as_ptr(), dst, TILE_ROWS);
                }
            }
            t += count;
        }
    });
}

mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Adds the unsigned codes `lo` (values `at .. at + 4` of 16 rows) and `hi` (values
    /// `at + 4 .. at + 8`) times each token's activations into the accumulators.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot_group<const T: usize>(
        lo: __m512i,
        hi: __m512i,
        acts: &[ActRow<'_>],
        at: usize,
        lo_acc: &mut [__m512i; T],
        hi_acc: &mut [__m512i; T],
    ) {
        for t in 0..T {
            let x = acts[t].qs.as_ptr().add(at);
            let xlo = _mm512_set1_epi32(x.cast::<i32>().read_unaligned());
            let xhi = _mm512_set1_epi32(x.add(4).cast::<i32>().read_unaligned());
            lo_acc[t] = _mm512_dpbusd_epi32(lo_acc[t], lo, xlo);
            hi_acc[t] = _mm512_dpbusd_epi32(hi_acc[t], hi, xhi);
        }
    }

    /// One Q4_K tile row (16 outputs) for `T` tokens: `res[t][r]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn q4_k<const T: usize>(
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
                    dot_group(lo, hi, acts, sb * 256 + 8 * g, &mut lo_acc, &mut hi_acc);
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

    /// One NF4 tile row (16 outputs) for `T` tokens: `res[t][r]`; `offsets` holds
    /// `-128 *` the sum of each 32 activations of the tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn nf4<const T: usize>(
        tiles: &[u8],
        acts: &[ActRow<'_>],
        offsets: &[i32],
        res: &mut [[f32; TILE_ROWS]; 4],
    ) {
        let m4 = _mm512_set1_epi8(0x0F);
        let table = NF4_I8.map(|v| (v as u8) ^ 0x80);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast()));
        let k32 = offsets.len() / T;
        let mut facc = [_mm512_setzero_ps(); T];
        for (b, tile) in tiles.chunks_exact(NF4_TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(NF4_TILE_BYTES * 4).cast());
            let scale = _mm512_loadu_ps(p.cast());
            for h in 0..2 {
                let mut lo_acc = [_mm512_setzero_si512(); T];
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in 4 * h..4 * h + 4 {
                    let q = _mm512_loadu_si512(p.add(NF4_CODES_AT + 64 * g).cast());
                    let lo = _mm512_shuffle_epi8(table, _mm512_and_si512(q, m4));
                    let hi =
                        _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4));
                    dot_group(lo, hi, acts, 64 * b + 8 * g, &mut lo_acc, &mut hi_acc);
                }
                let blk = 2 * b + h;
                for t in 0..T {
                    let off = _mm512_set1_epi32(offsets[t * k32 + blk]);
                    let dot = _mm512_add_epi32(_mm512_add_epi32(lo_acc[t], hi_acc[t]), off);
                    let s = _mm512_mul_ps(scale, _mm512_set1_ps(acts[t].d[blk]));
                    facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, facc[t]);
                }
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
        let t = Tiled::new(&w);
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
        assert!(!Tiled::fits(
            &QuantMatrix::random(WeightType::Q4K, 24, 256, 1).unwrap()
        ));
        assert!(!Tiled::fits(
            &QuantMatrix::random(WeightType::Q6K, 32, 256, 1).unwrap()
        ));
    }

    #[test]
    fn nf4_tiles_hold_every_code_and_scale() {
        let w = QuantMatrix::random(WeightType::Nf4, 32, 128, 4).unwrap();
        let t = Tiled::new(&w);
        assert_eq!(t.bytes() as usize, 2 * 2 * NF4_TILE_BYTES);
        assert_eq!(t.bytes(), w.bytes());
        for r in [0, 9, 16, 31] {
            let (tr, lane) = (r / TILE_ROWS, r % TILE_ROWS);
            for (b, tile) in t.tile_row(tr).chunks_exact(NF4_TILE_BYTES).enumerate() {
                let scale = f32::from_le_bytes(tile[4 * lane..4 * lane + 4].try_into().unwrap());
                assert_eq!(scale, w.row_absmax(r)[b] * (1.0 / 127.0));
                for e in 0..64 {
                    let (g, i) = (e / 8, e % 8);
                    let byte = tile[NF4_CODES_AT + g * 64 + lane * 4 + i % 4];
                    let code = if i < 4 { byte & 0xF } else { byte >> 4 };
                    let p = w.row(r)[b * 32 + e / 2];
                    let want = if e % 2 == 0 { p >> 4 } else { p & 0xF };
                    assert_eq!(code, want, "row {r} value {e}");
                }
            }
        }
    }
}

//! AVX2 kernels over the same 16-row tiles as the AVX-512 ones (no VNNI): each 64-byte line
//! of a tile is read as two halves of 8 rows, and `vpmaddubsw` multiplies 4 values of the 8
//! rows with 4 broadcast activation values into 16-bit pairs, so a line is decoded once for
//! up to 4 tokens and a row's scale is applied once per 32 values.
//!
//! - Q4_K and Q4_0 levels (0..=15) are unsigned: `vpmaddubsw` of the levels with the int8
//!   activations cannot saturate (4 lines summed in 16 bits stay below 2^15); Q4_K's 6-bit
//!   sub-block scales and mins are applied in 16 bits by `vpmaddwd`, and Q4_0's offset 8 is
//!   taken off with the activation sums.
//! - NF4 (its int8 table) and Q8_0 (the stored values) are signed: the sign trick
//!   (`vpsignb` moves the weight's sign onto the activation, `vpmaddubsw` takes `|w|`), and
//!   every product pair goes to 32 bits at once (`vpmaddwd` with ones), as ggml does.

use super::super::activation::{ActRow, Activations};
use super::super::dot::NF4_I8;
use super::{drive, TileOut, TokenGroup};
use super::{Kind, Tiled, DMIN_AT, D_AT, MN_AT, NIBBLES_AT, Q8_0_AT, QS_AT, SC_AT};
use super::{NIBBLE_TILE_BYTES, Q8_0_TILE_BYTES, TILE_BYTES};
use std::arch::x86_64::*;

/// `y` (m x n, token-major) for activations `acts` (quantized for the tiled type, no lane
/// arrays) with the AVX2 kernels, through the same group and panel driver as the AVX-512
/// ones (groups of 4 tokens, then single tokens).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (`Isa::Avx2`).
pub unsafe fn matmul_avx2(w: &Tiled, acts: &Activations, y: &mut [f32]) {
    let m = acts.tokens();
    assert_eq!(acts.k, w.k);
    assert_eq!(y.len(), m * w.n);
    assert_eq!(acts.block, w.kind.act_block());
    assert!(
        !matches!(w.kind, Kind::Q6K | Kind::Q5K | Kind::Iq4Xs),
        "no AVX2 tiles for Q6_K, Q5_K or IQ4_XS (Tiled::fits_avx2)"
    );
    let tokens: Vec<ActRow<'_>> = (0..m).map(|t| acts.token(t)).collect();
    // Per token and 32 values: Q4_K the pair (S_j, S_j+1) of sub-block sums as i16 halves of
    // an i32 (for `vpmaddwd` with the mins), Q4_0 `-8 *` the sum; NF4 and Q8_0 need none.
    let sums32: Vec<i32> = acts
        .sums16
        .chunks_exact(2)
        .map(|p| i32::from(p[0]) + i32::from(p[1]))
        .collect();
    let per: Vec<i32> = match w.kind {
        Kind::Q4K => sums32
            .chunks_exact(2)
            .flat_map(|p| [(p[0] & 0xFFFF) | (p[1] << 16); 2])
            .collect(),
        Kind::Q4_0 => sums32.iter().map(|s| -8 * s).collect(),
        Kind::Nf4 | Kind::Q8_0 | Kind::Q6K | Kind::Q5K | Kind::Iq4Xs => vec![0; sums32.len()],
    };
    let k32 = w.k / 32;
    let kernel = |tr: usize, g: &TokenGroup<()>, res: &mut TileOut| {
        let tiles = w.tile_row(tr);
        let group = &tokens[g.t..g.t + g.count];
        let per = &per[g.t * k32..(g.t + g.count) * k32];
        // SAFETY: the caller guarantees the CPU features; lengths are checked above.
        unsafe {
            match (w.kind, g.count) {
                (Kind::Q4K, 4) => q4_k::<4>(tiles, group, per, res),
                (Kind::Q4K, _) => q4_k::<1>(tiles, group, per, res),
                (Kind::Q4_0, 4) => q4_0::<4>(tiles, group, per, res),
                (Kind::Q4_0, _) => q4_0::<1>(tiles, group, per, res),
                (Kind::Nf4, 4) => signed::<4, Nf4>(tiles, group, res),
                (Kind::Nf4, _) => signed::<1, Nf4>(tiles, group, res),
                (Kind::Q8_0, 4) => signed::<4, Q8>(tiles, group, res),
                (Kind::Q8_0, _) => signed::<1, Q8>(tiles, group, res),
                (Kind::Q6K | Kind::Q5K | Kind::Iq4Xs, _) => unreachable!("checked above"),
            }
        }
    };
    drive(w, m, &[4, 1], None, |_, _| (), y, kernel);
}

impl Kind {
    /// Values per activation scale the kernels of this kind take.
    fn act_block(self) -> usize {
        match self {
            Kind::Q4K => crate::formats::blocks::QK_K,
            _ => 32,
        }
    }
}

/// The 4 activation bytes at `at` of `x`, broadcast to every 32-bit lane.
#[inline(always)]
unsafe fn bcast(x: &ActRow<'_>, at: usize) -> __m256i {
    _mm256_set1_epi32(x.qs.as_ptr().add(at).cast::<i32>().read_unaligned())
}

/// 8 bytes at `p` (one per row of a half tile) as the 16-bit pair `(b, b)` of each row.
#[inline(always)]
unsafe fn row_pairs(p: *const u8) -> __m256i {
    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
    _mm256_or_si256(v, _mm256_slli_epi32::<16>(v))
}

/// 8 f16 at `p` (one per row of a half tile) as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// One Q4_K tile row (16 outputs) for `T` tokens: `res[t][r]`. `pairs` holds, per token and
/// 32 values, the sub-block sum pair of the 64 values it is in (see [`matmul_avx2`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k<const T: usize>(
    tiles: &[u8],
    acts: &[ActRow<'_>],
    pairs: &[i32],
    res: &mut TileOut,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let k32 = pairs.len() / T;
    let mut facc = [[_mm256_setzero_ps(); T]; 2];
    for (sb, tile) in tiles.chunks_exact(TILE_BYTES).enumerate() {
        let p = tile.as_ptr();
        for (h, half) in facc.iter_mut().enumerate() {
            let mut acc = [_mm256_setzero_si256(); T];
            for j in 0..8 {
                let mut p16 = [_mm256_setzero_si256(); T];
                for g in 4 * j..4 * j + 4 {
                    let q = _mm256_loadu_si256(p.add(QS_AT + 64 * g + 32 * h).cast());
                    let lo = _mm256_and_si256(q, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    let at = sb * 256 + 8 * g;
                    for t in 0..T {
                        let a = _mm256_maddubs_epi16(lo, bcast(&acts[t], at));
                        let b = _mm256_maddubs_epi16(hi, bcast(&acts[t], at + 4));
                        p16[t] = _mm256_add_epi16(p16[t], _mm256_add_epi16(a, b));
                    }
                }
                let sc = row_pairs(p.add(SC_AT + 16 * j + 8 * h));
                for t in 0..T {
                    acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(p16[t], sc));
                }
            }
            // The mins: sum over sub-blocks of min_j * S_j, two sub-blocks per vpmaddwd.
            let mut mins = [_mm256_setzero_si256(); T];
            for j in (0..8).step_by(2) {
                let a = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(MN_AT + 16 * j + 8 * h).cast()));
                let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                    p.add(MN_AT + 16 * (j + 1) + 8 * h).cast(),
                ));
                let mn = _mm256_or_si256(a, _mm256_slli_epi32::<16>(b));
                for t in 0..T {
                    let s = _mm256_set1_epi32(pairs[t * k32 + sb * 8 + j]);
                    mins[t] = _mm256_add_epi32(mins[t], _mm256_madd_epi16(mn, s));
                }
            }
            let d = f16x8(p.add(D_AT + 16 * h));
            let dmin = f16x8(p.add(DMIN_AT + 16 * h));
            for t in 0..T {
                let dx = _mm256_set1_ps(acts[t].d[sb]);
                let v = _mm256_fmsub_ps(
                    _mm256_cvtepi32_ps(acc[t]),
                    d,
                    _mm256_mul_ps(_mm256_cvtepi32_ps(mins[t]), dmin),
                );
                half[t] = _mm256_fmadd_ps(v, dx, half[t]);
            }
        }
    }
    store(&facc, res);
}

/// One Q4_0 tile row (16 outputs) for `T` tokens; `offsets` holds `-8 *` the sum of each 32
/// activations of the tokens.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0<const T: usize>(
    tiles: &[u8],
    acts: &[ActRow<'_>],
    offsets: &[i32],
    res: &mut TileOut,
) {
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let k32 = offsets.len() / T;
    let mut facc = [[_mm256_setzero_ps(); T]; 2];
    for (b, tile) in tiles.chunks_exact(NIBBLE_TILE_BYTES).enumerate() {
        let p = tile.as_ptr();
        for blk in 0..2 {
            for (h, half) in facc.iter_mut().enumerate() {
                let mut p16 = [_mm256_setzero_si256(); T];
                for g in 4 * blk..4 * blk + 4 {
                    let q = _mm256_loadu_si256(p.add(NIBBLES_AT + 64 * g + 32 * h).cast());
                    let lo = _mm256_and_si256(q, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    for t in 0..T {
                        let x = &acts[t];
                        let a = _mm256_maddubs_epi16(lo, bcast(x, 64 * b + 8 * g));
                        let c = _mm256_maddubs_epi16(hi, bcast(x, 64 * b + 8 * g + 4));
                        p16[t] = _mm256_add_epi16(p16[t], _mm256_add_epi16(a, c));
                    }
                }
                let scale = f16x8(p.add(32 * blk + 16 * h));
                let i = 2 * b + blk;
                for t in 0..T {
                    let dot = _mm256_add_epi32(
                        _mm256_madd_epi16(p16[t], ones),
                        _mm256_set1_epi32(offsets[t * k32 + i]),
                    );
                    let s = _mm256_mul_ps(scale, _mm256_set1_ps(acts[t].d[i]));
                    half[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, half[t]);
                }
            }
        }
    }
    store(&facc, res);
}

/// A tile kind with signed 8-bit weights: where a 32-value block's 8 lines of 4 values
/// are, how they become int8, and the block's scales.
trait Signed {
    /// Bytes of one tile.
    const TILE: usize;
    /// 32-value blocks per tile.
    const BLOCKS: usize;
    /// The int8 weights of half `h` of line `g` (values `4 g .. 4 g + 4` of each block's
    /// 32, line 8 of block 1 being the first of that block) of tile `p`.
    unsafe fn line(p: *const u8, g: usize, h: usize) -> __m256i;
    /// The scales of half `h` of block `blk` of tile `p`.
    unsafe fn scales(p: *const u8, blk: usize, h: usize) -> __m256;
}

/// NF4: 4-bit codes through the int8 table (two codes per byte, as for Q4_0); an f32 scale
/// (absmax / 127) per row for the tile's two blocks.
struct Nf4;
/// Q8_0: the values + 128 as stored; an f16 `d` per row.
struct Q8;

impl Signed for Nf4 {
    const TILE: usize = NIBBLE_TILE_BYTES;
    const BLOCKS: usize = 2;
    #[inline(always)]
    unsafe fn line(p: *const u8, g: usize, h: usize) -> __m256i {
        // Line g of 16: lines of 8 values hold 4 in the low nibbles and the next 4 in the high.
        let q = _mm256_loadu_si256(p.add(NIBBLES_AT + 64 * (g / 2) + 32 * h).cast());
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(NF4_I8.as_ptr().cast()));
        let codes = if g.is_multiple_of(2) {
            q
        } else {
            _mm256_srli_epi16::<4>(q)
        };
        _mm256_shuffle_epi8(table, _mm256_and_si256(codes, _mm256_set1_epi8(0x0F)))
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, _blk: usize, h: usize) -> __m256 {
        _mm256_loadu_ps(p.add(32 * h).cast())
    }
}

impl Signed for Q8 {
    const TILE: usize = Q8_0_TILE_BYTES;
    const BLOCKS: usize = 1;
    #[inline(always)]
    unsafe fn line(p: *const u8, g: usize, h: usize) -> __m256i {
        let q = _mm256_loadu_si256(p.add(Q8_0_AT + 64 * g + 32 * h).cast());
        _mm256_xor_si256(q, _mm256_set1_epi8(-128))
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, _blk: usize, h: usize) -> __m256 {
        f16x8(p.add(16 * h))
    }
}

/// One NF4 or Q8_0 tile row (16 outputs) for `T` tokens: `res[t][r]`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed<const T: usize, K: Signed>(tiles: &[u8], acts: &[ActRow<'_>], res: &mut TileOut) {
    let ones = _mm256_set1_epi16(1);
    let mut facc = [[_mm256_setzero_ps(); T]; 2];
    for (b, tile) in tiles.chunks_exact(K::TILE).enumerate() {
        let p = tile.as_ptr();
        for blk in 0..K::BLOCKS {
            for (h, half) in facc.iter_mut().enumerate() {
                let mut acc = [_mm256_setzero_si256(); T];
                for g in 0..8 {
                    // Values 4 g .. 4 g + 4 of the block (8-value group g / 2, first or
                    // second half as g is even or odd).
                    let w = K::line(p, 8 * blk + g, h);
                    let aw = _mm256_sign_epi8(w, w);
                    let at = 32 * (K::BLOCKS * b + blk) + 8 * (g / 2) + 4 * (g % 2);
                    for t in 0..T {
                        let xs = _mm256_sign_epi8(bcast(&acts[t], at), w);
                        let d16 = _mm256_maddubs_epi16(aw, xs);
                        acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(d16, ones));
                    }
                }
                let scale = K::scales(p, blk, h);
                let i = K::BLOCKS * b + blk;
                for t in 0..T {
                    let s = _mm256_mul_ps(scale, _mm256_set1_ps(acts[t].d[i]));
                    half[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t]), s, half[t]);
                }
            }
        }
    }
    store(&facc, res);
}

/// `res[t]` = the 16 outputs of token `t` (`facc[h][t]`: rows `8 h .. 8 h + 8`).
#[inline(always)]
unsafe fn store<const T: usize>(facc: &[[__m256; T]; 2], res: &mut TileOut) {
    for (t, r) in res.iter_mut().take(T).enumerate() {
        _mm256_storeu_ps(r.as_mut_ptr(), facc[0][t]);
        _mm256_storeu_ps(r.as_mut_ptr().add(8), facc[1][t]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::fused::Fused;
    use super::super::super::test_support::assert_close;
    use super::super::super::{reference_matmul, GemmBackend, Isa, QuantMatrix, WeightType};
    use std::sync::Arc;

    /// The largest levels, scales and mins with activations at +-127 (the 16-bit sums of
    /// `vpmaddubsw` at their bound, Q8_0's -128 through the sign trick): AVX2 tiles against
    /// the f64 reference, for 4 tokens and then 1.
    #[test]
    fn extreme_blocks_do_not_saturate() {
        if !Isa::available().contains(&Isa::Avx2) {
            eprintln!("SKIPPED: no AVX2");
            return;
        }
        let one = [0x00, 0x3C]; // f16 1.0
        let q4_0 = [&one[..], &[0xFF; 16]].concat();
        let q8_0 = [&one[..], &[0x80; 16], &[0x7F; 16]].concat();
        let q4_k = [&one[..], &one[..], &[0xFF; 12], &[0xFF; 128]].concat();
        let (n, k) = (32, 512);
        for (ty, block) in [
            (WeightType::Q4_0, q4_0),
            (WeightType::Q8_0, q8_0),
            (WeightType::Q4K, q4_k),
        ] {
            let per_row = k / ty.block_size();
            let w = Arc::new(QuantMatrix {
                ty,
                n,
                k,
                data: block.repeat(n * per_row).into(),
                absmax: Vec::new(),
            });
            let b = Fused::new(w.clone(), Isa::Avx2);
            assert!(b.is_tiled(), "{ty:?}");
            for (m, sign) in [(5, 1.0), (5, -1.0)] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| if i % 512 < 256 { sign } else { -sign })
                    .collect();
                let mut y = vec![f32::NAN; m * n];
                b.matmul(&x, &mut y).unwrap();
                assert_close(&w, &x, &y, &reference_matmul(&w, &x), &format!("{ty:?}"));
            }
        }
    }
}

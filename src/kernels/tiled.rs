//! Q4_K and NF4 repacked into tiles of 16 rows for the AVX-512 VNNI GEMM: one
//! `vpdpbusd` multiplies 4 values of 16 rows with 4 broadcast activation values, so the
//! 16 outputs of a tile build up in the lanes of one register per token and a row's
//! scale is applied once per 32 values, not once per instruction.
//!
//! In both kinds the 4-bit codes are regrouped so that each 64-byte line is 8 values of
//! the 16 rows (byte `j` of a row: value `j` in the low nibble, value `j + 4` in the high).
//! - Q4_K: a tile is one 256-value super-block of 16 rows: the f16 `d` and `dmin` of each
//!   row, the 6-bit sub-block scales and mins unpacked to bytes (sub-block major), then
//!   the levels. 2368 bytes per 16 x 256 values: 4.625 bits per weight (ggml: 4.5). The
//!   AVX-512 kernel applies the scales and mins in integers (`vpdpwssd`), so a super-block
//!   takes two float conversions per token, not one per sub-block.
//! - NF4: a tile is one 64-value block of 16 rows: `absmax / 127` of each row (f32), then
//!   the codes, which become int8 through [`NF4_I8`] in registers. 576 bytes per 16 x 64
//!   values: 4.5 bits per weight, as bitsandbytes stores it.
//! - Q4_0: a tile is two 32-value blocks of 16 rows: the f16 `d` of each row and block, then
//!   the levels (0..=15, the value is `d * (level - 8)`). 4.5 bits per weight, as ggml.
//! - Q8_0: a tile is one 32-value block of 16 rows: the f16 `d` of each row, then the
//!   values + 128 as bytes in lines of 4 values of the 16 rows. 8.5 bits per weight, as ggml.
//! - Q6_K: a tile is one 256-value super-block of 16 rows: the f16 `d` of each row, the
//!   int8 scales of the 16-value groups (group major), then the 6-bit levels (0..=63, the
//!   value is `d * scale * (level - 32)`) as bytes in lines of 4 values of the 16 rows.
//!   4384 bytes per 16 x 256 values: 8.56 bits per weight (ggml: 6.56), so Q6_K keeps its
//!   rows too and takes the tiles only from [`Q6K_TILES_FROM_M`] tokens on.
//! - Q5_K: the Q4_K tile (its low 4 bits of each level), then the fifth bits as two 64-bit
//!   masks per line (one bit per byte of the low and of the high nibbles), added as 16 with a
//!   masked byte add. 2880 bytes per 16 x 256 values: 5.625 bits per weight (ggml: 5.5).
//! - IQ4_XS: a tile is one 256-value super-block of 16 rows: the f16 `d` of each row, the
//!   signed 6-bit group scales (`ls - 32`) as bytes (group major), then the 4-bit table
//!   indices, which become the table values + 128 in registers with `vpshufb`. 2208 bytes
//!   per 16 x 256 values: 4.3125 bits per weight (ggml: 4.25).
//!
//! Codes stored with an offset (NF4, Q8_0 and IQ4_XS +128, Q4_0 +8) are corrected once per
//! 32 values with `-offset *` the sum of the token's 32 activations (Q6_K: +32, per 16
//! values), which starts the integer accumulator.
//!
//! The kernels are register blocked: one tile row for up to [`MAX_TOKENS`] tokens per
//! step, so that each decoded line feeds `2 * tokens` `vpdpbusd` and the scales are
//! converted once per tile for all the tokens. A task owns a panel of tile rows (about
//! [`PANEL_BYTES`], it stays in L2) and streams every group of tokens through it, so the
//! activations are read from memory once per panel, not once per tile row.

use super::activation::{ActRow, Activations};
use super::dot::{iq4_xs_code, iq4_xs_scale, q5_level, q6_level, NF4_I8};
use super::weights::{QuantMatrix, WeightType, NF4_BLOCK};
use crate::formats::blocks::{
    block_at, BlockIq4Xs, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8_0, QK, QK_K,
};
use crate::quant::ggml::{get_scale_min_k4, KVALUES_IQ4NL};
use rayon::prelude::*;

/// The AVX2 kernels over the same tiles.
mod avx2;
pub use avx2::matmul_avx2;

/// The one-token GEMV over the same tiles (AVX-512).
mod gemv;
pub use gemv::gemv;

/// Rows per tile.
pub const TILE_ROWS: usize = 16;

/// Bytes of one Q4_K tile.
pub const TILE_BYTES: usize = 2368;

/// Bytes of one NF4 or Q4_0 tile (64 bytes of scales, 8 lines of codes).
pub const NIBBLE_TILE_BYTES: usize = 64 + 8 * 64;

/// Bytes of one Q8_0 tile (16 f16 scales, 8 lines of 4 values).
pub const Q8_0_TILE_BYTES: usize = 32 + 8 * 64;

/// Bytes of one Q6_K tile (16 f16 `d`, 16 x 16 int8 scales, 64 lines of 4 levels).
pub const Q6K_TILE_BYTES: usize = Q6K_AT + 64 * 64;

/// Bytes of one Q5_K tile (a Q4_K tile, then two 8-byte masks of fifth bits per line).
pub const Q5_K_TILE_BYTES: usize = TILE_BYTES + 32 * 16;

/// Bytes of one IQ4_XS tile (16 f16 `d`, 8 x 16 group scales, 32 lines of indices).
pub const IQ4_XS_TILE_BYTES: usize = IQ4_XS_QS_AT + 32 * 64;

/// Q6_K takes its tiles (bytes, not 6 bits) from this many tokens on; below, its rows.
pub const Q6K_TILES_FROM_M: usize = 4;

/// Most tokens one kernel call takes (the register block).
pub const MAX_TOKENS: usize = 8;

/// About how many bytes of tiles one task keeps hot in L2 while all tokens stream.
pub const PANEL_BYTES: usize = 512 << 10;

/// The weight types that have tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Q4K,
    Nf4,
    Q4_0,
    Q8_0,
    Q6K,
    Q5K,
    Iq4Xs,
}

impl Kind {
    fn of(ty: WeightType) -> Option<Kind> {
        match ty {
            WeightType::Q4K => Some(Kind::Q4K),
            WeightType::Nf4 => Some(Kind::Nf4),
            WeightType::Q4_0 => Some(Kind::Q4_0),
            WeightType::Q8_0 => Some(Kind::Q8_0),
            WeightType::Q6K => Some(Kind::Q6K),
            WeightType::Q5K => Some(Kind::Q5K),
            WeightType::Iq4Xs => Some(Kind::Iq4Xs),
        }
    }

    /// Values of a row in one tile.
    fn values(self) -> usize {
        match self {
            Kind::Q4K | Kind::Q6K | Kind::Q5K | Kind::Iq4Xs => QK_K,
            Kind::Nf4 | Kind::Q4_0 => 64,
            Kind::Q8_0 => 32,
        }
    }

    /// Bytes of one tile.
    fn bytes(self) -> usize {
        match self {
            Kind::Q4K => TILE_BYTES,
            Kind::Nf4 | Kind::Q4_0 => NIBBLE_TILE_BYTES,
            Kind::Q8_0 => Q8_0_TILE_BYTES,
            Kind::Q6K => Q6K_TILE_BYTES,
            Kind::Q5K => Q5_K_TILE_BYTES,
            Kind::Iq4Xs => IQ4_XS_TILE_BYTES,
        }
    }

    /// The offset the stored codes carry (none for Q4_K and Q5_K, which correct with
    /// their mins).
    fn bias(self) -> i32 {
        match self {
            Kind::Q4K | Kind::Q5K => 0,
            Kind::Q4_0 => 8,
            Kind::Q6K => 32,
            Kind::Nf4 | Kind::Q8_0 | Kind::Iq4Xs => 128,
        }
    }
}

/// Offset of the codes in an NF4 or Q4_0 tile (after 64 bytes of scales).
const NIBBLES_AT: usize = 64;

/// How far ahead of the line being read the tile kernels prefetch: 3 KiB measured 3-7%
/// faster than 4 KiB for the GEMV of Q4_K, Q4_0 and NF4 (CPU time, one thread, k = 4096),
/// as fast as 2 KiB for those and as fast as 4 KiB for Q5_K (slower at 2 KiB); since s28
/// the one-token tile kernels but Q6_K's do not prefetch (they read in order,
/// [`x86::prefetch_share`]; Q6_K's GEMV runs on its rows, without prefetch since s29).
const PREFETCH_AHEAD: usize = 3072;

/// Tile rows per task when there are few tokens (fewer, larger tasks for a GEMV).
const GEMV_TILE_ROWS_PER_TASK: usize = 4;

/// Offset of the values in a Q8_0 tile (after 16 f16 scales).
const Q8_0_AT: usize = 32;

/// Offset of the int8 group scales in a Q6_K tile (after 16 f16 `d`).
const Q6K_SC_AT: usize = 32;

/// Offset of the levels in a Q6_K tile (after the 256 group scales).
const Q6K_AT: usize = Q6K_SC_AT + 256;

const D_AT: usize = 0;
const DMIN_AT: usize = 32;
const SC_AT: usize = 64;
const MN_AT: usize = 192;
const QS_AT: usize = 320;

/// Offset of the fifth-bit masks in a Q5_K tile: after the Q4_K header, before the low 4
/// bits (at [`Q5_QS_AT`]), so that a kernel reads everything but the codes first.
const Q5_QH_AT: usize = QS_AT;

/// Offset of the low 4 bits in a Q5_K tile (laid out as in a Q4_K tile).
const Q5_QS_AT: usize = Q5_QH_AT + 32 * 16;

/// Offsets in an IQ4_XS tile: the f16 `d` of each row, the group scales, the indices.
const IQ4_XS_D_AT: usize = 0;
const IQ4_XS_LS_AT: usize = 32;
const IQ4_XS_QS_AT: usize = 160;

/// Q4_K, Q5_K, Q6_K, IQ4_XS, NF4, Q4_0 or Q8_0 weights as 16-row tiles, `n / 16` tile rows of
/// `k / values` tiles each.
pub struct Tiled {
    kind: Kind,
    /// Output rows (a multiple of 16).
    pub n: usize,
    /// Values per row.
    pub k: usize,
    tiles: super::hugepage::HugeBuf,
    /// Whether the AVX-512 Q4_K kernel takes the high nibbles with GFNI (the CPU has it;
    /// tests switch it off to check the other path gives the same bits).
    gfni: bool,
}

impl Tiled {
    /// Whether `w` can be tiled (a tiled type with a multiple of 16 rows).
    pub fn fits(w: &QuantMatrix) -> bool {
        Kind::of(w.ty).is_some() && w.n.is_multiple_of(TILE_ROWS)
    }

    /// Whether `w` can be tiled for the AVX2 kernels, which take every tiled type but
    /// Q6_K, Q5_K and IQ4_XS (those keep their rows at AVX2).
    pub fn fits_avx2(w: &QuantMatrix) -> bool {
        Self::fits(w) && !matches!(w.ty, WeightType::Q6K | WeightType::Q5K | WeightType::Iq4Xs)
    }

    /// Repacks `w` (which must [`fit`](Self::fits)), tile rows in parallel.
    pub fn new(w: &QuantMatrix) -> Self {
        assert!(Self::fits(w));
        let kind = Kind::of(w.ty).expect("fits");
        let per_row = w.k / kind.values();
        let mut tiles = super::hugepage::HugeBuf::zeroed(w.n / TILE_ROWS * per_row * kind.bytes());
        tiles
            .par_chunks_mut(per_row * kind.bytes())
            .enumerate()
            .for_each(|(tr, out)| {
                for (i, tile) in out.chunks_exact_mut(kind.bytes()).enumerate() {
                    for r in 0..TILE_ROWS {
                        let row = tr * TILE_ROWS + r;
                        match kind {
                            Kind::Q4K => pack_q4_k(tile, r, block_at(w.row(row), i)),
                            Kind::Nf4 => {
                                let codes = &w.row(row)[i * 32..(i + 1) * 32];
                                pack_nf4(tile, r, codes, w.row_absmax(row)[i]);
                            }
                            Kind::Q4_0 => pack_q4_0(
                                tile,
                                r,
                                [block_at(w.row(row), 2 * i), block_at(w.row(row), 2 * i + 1)],
                            ),
                            Kind::Q8_0 => pack_q8_0(tile, r, block_at(w.row(row), i)),
                            Kind::Q6K => pack_q6_k(tile, r, block_at(w.row(row), i)),
                            Kind::Q5K => pack_q5_k(tile, r, block_at(w.row(row), i)),
                            Kind::Iq4Xs => pack_iq4_xs(tile, r, block_at(w.row(row), i)),
                        }
                    }
                }
            });
        Tiled {
            kind,
            n: w.n,
            k: w.k,
            tiles,
            gfni: crate::cpu::features().gfni,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.tiles.len() as u64
    }

    /// Whether these are Q6_K tiles, which only pay from [`Q6K_TILES_FROM_M`] tokens on.
    pub fn is_q6_k(&self) -> bool {
        self.kind == Kind::Q6K
    }

    /// Bytes of one tile row.
    fn tile_row_bytes(&self) -> usize {
        self.k / self.kind.values() * self.kind.bytes()
    }

    /// The tiles of tile row `tr`.
    fn tile_row(&self, tr: usize) -> &[u8] {
        let len = self.tile_row_bytes();
        &self.tiles[tr * len..(tr + 1) * len]
    }

    /// Tile rows per task for `m` tokens: a panel of about [`PANEL_BYTES`] (the weights
    /// stay in L2 while the tokens stream), at least 4 tasks per thread.
    fn panel(&self, m: usize) -> usize {
        if m < 4 {
            return GEMV_TILE_ROWS_PER_TASK;
        }
        let by_cache = PANEL_BYTES / self.tile_row_bytes();
        let by_threads = self.n / TILE_ROWS / (4 * rayon::current_num_threads());
        by_cache.min(by_threads).max(1)
    }
}

/// Row `r` of a Q4_K tile from the row's ggml block `blk`.
fn pack_q4_k(tile: &mut [u8], r: usize, blk: &BlockQ4K) {
    pack_q4_k_at(tile, r, blk, QS_AT);
}

/// Row `r` of a Q4_K tile's header and, at `qs_at`, its levels.
fn pack_q4_k_at(tile: &mut [u8], r: usize, blk: &BlockQ4K, qs_at: usize) {
    tile[D_AT + 2 * r..D_AT + 2 * r + 2].copy_from_slice(&blk.d);
    tile[DMIN_AT + 2 * r..DMIN_AT + 2 * r + 2].copy_from_slice(&blk.dmin);
    for j in 0..8 {
        let (sc, mn) = get_scale_min_k4(j, &blk.scales);
        tile[SC_AT + j * 16 + r] = sc;
        tile[MN_AT + j * 16 + r] = mn;
    }
    regroup(&mut tile[qs_at..], r, QK_K, |e| level(&blk.qs, e));
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
    regroup(&mut tile[NIBBLES_AT..], r, NF4_BLOCK, code);
}

/// Row `r` of a Q4_0 tile from two consecutive ggml blocks of the row.
fn pack_q4_0(tile: &mut [u8], r: usize, blks: [&BlockQ4_0; 2]) {
    tile[2 * r..2 * r + 2].copy_from_slice(&blks[0].d);
    tile[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&blks[1].d);
    let level = |e: usize| {
        let qs = &blks[e / QK].qs;
        let j = e % QK;
        if j < QK / 2 {
            qs[j] & 0xF
        } else {
            qs[j - QK / 2] >> 4
        }
    };
    regroup(&mut tile[NIBBLES_AT..], r, 2 * QK, level);
}

/// Row `r` of a Q8_0 tile from one ggml block of the row.
fn pack_q8_0(tile: &mut [u8], r: usize, blk: &BlockQ8_0) {
    tile[2 * r..2 * r + 2].copy_from_slice(&blk.d);
    for g in 0..8 {
        for b in 0..4 {
            tile[Q8_0_AT + g * 64 + r * 4 + b] = (blk.qs[4 * g + b] as u8) ^ 0x80;
        }
    }
}

/// Row `r` of a Q6_K tile from the row's ggml block `blk`.
fn pack_q6_k(tile: &mut [u8], r: usize, blk: &BlockQ6K) {
    tile[D_AT + 2 * r..D_AT + 2 * r + 2].copy_from_slice(&blk.d);
    for (g, &sc) in blk.scales.iter().enumerate() {
        tile[Q6K_SC_AT + g * 16 + r] = sc as u8;
    }
    for e in 0..QK_K {
        tile[Q6K_AT + (e / 4) * 64 + r * 4 + e % 4] = q6_level(blk, e) as u8;
    }
}

/// Row `r` of a Q5_K tile from the row's ggml block `blk`: its header and low 4 bits as
/// the Q4_K tile (a Q5_K block is a Q4_K block plus `qh`) with the fifth bits between.
fn pack_q5_k(tile: &mut [u8], r: usize, blk: &BlockQ5K) {
    let low = BlockQ4K {
        d: blk.d,
        dmin: blk.dmin,
        scales: blk.scales,
        qs: blk.qs,
    };
    pack_q4_k_at(tile, r, &low, Q5_QS_AT);
    for g in 0..QK_K / 8 {
        for (half, at) in [(0, Q5_QH_AT + 16 * g), (4, Q5_QH_AT + 16 * g + 8)] {
            let mut mask = u64::from_le_bytes(tile[at..at + 8].try_into().expect("8 bytes"));
            for b in 0..4 {
                let fifth = u64::from(q5_level(blk, 8 * g + half + b) >> 4);
                mask |= fifth << (4 * r + b);
            }
            tile[at..at + 8].copy_from_slice(&mask.to_le_bytes());
        }
    }
}

/// Row `r` of an IQ4_XS tile from the row's ggml block `blk`.
fn pack_iq4_xs(tile: &mut [u8], r: usize, blk: &BlockIq4Xs) {
    tile[IQ4_XS_D_AT + 2 * r..IQ4_XS_D_AT + 2 * r + 2].copy_from_slice(&blk.d);
    for g in 0..8 {
        tile[IQ4_XS_LS_AT + 16 * g + r] = iq4_xs_scale(blk, g) as i8 as u8;
    }
    regroup(&mut tile[IQ4_XS_QS_AT..], r, QK_K, |e| iq4_xs_code(blk, e));
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

/// A group of up to [`MAX_TOKENS`] tokens with everything the kernels read interleaved
/// token by token, so that one pointer serves all the tokens' broadcasts.
struct Group {
    /// Tokens.
    count: usize,
    /// The quantized values: 4 values of each token in turn (`[k / 4][count][4]`).
    xs: Vec<i8>,
    /// Per 32 values: Q5_K's activation sum as f32 (`[blocks][count]`).
    sums: Vec<f32>,
    /// Q4_K: per 64 values the two 32-value activation sums as the low and high i16 halves
    /// (`[k / 64][count]`), for `vpdpwssd` with the tile's mins.
    pairs: Vec<i32>,
    /// Per 32 values (Q6_K: 16): `-bias *` the activation sum (`[blocks][count]`).
    offsets: Vec<i32>,
    /// The activation scales (`[k / block][count]`).
    dx: Vec<f32>,
}

impl Group {
    /// Interleaves tokens `t .. t + count` of `acts` for tiles of `kind`.
    fn new(kind: Kind, acts: &Activations, t: usize, count: usize) -> Group {
        let k = acts.k;
        let tokens: Vec<ActRow<'_>> = (t..t + count).map(|i| acts.token(i)).collect();
        let mut xs = vec![0i8; count * k];
        for (i, chunk) in xs.chunks_exact_mut(4).enumerate() {
            let (g, tt) = (i / count, i % count);
            chunk.copy_from_slice(&tokens[tt].qs[4 * g..4 * g + 4]);
        }
        // Sums of each 32 (Q6_K: 16) activations, block major.
        let per = if kind == Kind::Q6K { 16 } else { 32 };
        let sum = |blk: usize, tt: usize| -> i32 {
            let s = &tokens[tt].sums16[blk * per / 16..(blk + 1) * per / 16];
            s.iter().map(|&v| i32::from(v)).sum()
        };
        let blocks = k / per;
        let interleave = |f: &dyn Fn(usize, usize) -> i32| -> Vec<i32> {
            (0..blocks * count)
                .map(|i| f(i / count, i % count))
                .collect()
        };
        let (sums, offsets) = match kind {
            Kind::Q5K => (
                interleave(&sum).into_iter().map(|s| s as f32).collect(),
                Vec::new(),
            ),
            Kind::Q4K => (Vec::new(), Vec::new()),
            _ => (Vec::new(), interleave(&|b, tt| -kind.bias() * sum(b, tt))),
        };
        let pairs = match kind {
            Kind::Q4K => (0..k / 64 * count)
                .map(|i| {
                    let (b, tt) = (i / count, i % count);
                    (sum(2 * b, tt) & 0xFFFF) | (sum(2 * b + 1, tt) << 16)
                })
                .collect(),
            _ => Vec::new(),
        };
        let per_d = k / acts.block;
        let dx = (0..per_d * count)
            .map(|i| tokens[i % count].d[i / count])
            .collect();
        Group {
            count,
            xs,
            sums,
            pairs,
            offsets,
            dx,
        }
    }
}

/// `y` (m x n, token-major) for activations `acts` (from
/// [`Activations::for_weights`] for the tiled type), panels of tile rows in parallel.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI, FMA and F16C (`Isa::Avx512Vnni`).
pub unsafe fn matmul(w: &Tiled, acts: &Activations, y: &mut [f32]) {
    assert_eq!(acts.k, w.k);
    let group = |t, count| Group::new(w.kind, acts, t, count);
    // Q5_K takes groups of [`PAIR_TOKENS`] on two tile rows at once below [`PAIR_BELOW_M`]
    // tokens.
    let paired = w.kind == Kind::Q5K && acts.tokens() < PAIR_BELOW_M;
    let pair = |tr: usize, g: &TokenGroup<Group>, res: &mut [TileOut; 2]| {
        // SAFETY: the caller guarantees the CPU features; the group holds `PAIR_TOKENS`
        // tokens of `k` values; `tr` and `tr + 1` are tile rows of `w`.
        unsafe { x86::tile_row_pair(w, tr, &g.data, res) }
    };
    drive(
        w,
        acts.tokens(),
        &[MAX_TOKENS, 4, 1],
        paired.then_some(&pair as &PairKernel<'_, Group>),
        group,
        y,
        |tr, g, res| {
            // SAFETY: the caller guarantees the CPU features; the group's arrays hold `count`
            // tokens of `k` values.
            unsafe {
                match g.count {
                    MAX_TOKENS => x86::tile_row::<MAX_TOKENS>(w, tr, &g.data, res),
                    4 => x86::tile_row::<4>(w, tr, &g.data, res),
                    _ => x86::tile_row::<1>(w, tr, &g.data, res),
                }
            }
        },
    );
}

/// The 16 outputs of one tile row for up to [`MAX_TOKENS`] tokens (`[token][row]`).
type TileOut = [[f32; TILE_ROWS]; MAX_TOKENS];

/// Tokens per group of the two-tile-row kernel (Q5_K): a whole register block,
/// so that each weight line read from L2 still feeds `2 *` this many `vpdpbusd`.
const PAIR_TOKENS: usize = MAX_TOKENS;

/// Below this many tokens (one group of [`PAIR_TOKENS`]: the weights stream from memory
/// once) Q5_K takes two tile rows per call: m = 8 measured 8-13% faster for Q4_K and Q5_K
/// with f32 scales (two tiles' lines in flight). From two groups on the panel is read from
/// L2 and the pairs measured 1-7% slower at m = 512 (the vector ports, not the loads, are
/// the limit there). Q4_K, scaled in integers with two chains per token, has no pair
/// kernel (16 tokens' chains would not fit the registers), so that a row's bits never
/// depend on the panel (and so on the thread count).
const PAIR_BELOW_M: usize = 2 * MAX_TOKENS;

/// A kernel over two adjacent tile rows `tr`, `tr + 1` for a group of [`PAIR_TOKENS`]
/// tokens (`out[0]`: row `tr`), so that each activation broadcast feeds both tiles.
type PairKernel<'a, G> = dyn Fn(usize, &TokenGroup<G>, &mut [TileOut; 2]) + Sync + 'a;

/// The tile driver of every ISA: splits the `m` tokens into groups of the sizes in
/// `counts` (largest first, the last 1), builds each group once (`group(t, count)`, in
/// parallel), then runs `kernel(tr, group, out)` for every group on every tile row of a
/// panel ([`Tiled::panel`]: the panel stays in L2 while the groups stream), panels in
/// parallel, and writes the outputs to `y` (m x n, token-major). With `pair`, groups of
/// [`PAIR_TOKENS`] take two tile rows of the panel per call (a lone last row: `kernel`).
fn drive<G: Send + Sync>(
    w: &Tiled,
    m: usize,
    counts: &[usize],
    pair: Option<&PairKernel<'_, G>>,
    group: impl Fn(usize, usize) -> G + Sync + Send,
    y: &mut [f32],
    kernel: impl Fn(usize, &TokenGroup<G>, &mut TileOut) + Sync,
) {
    assert_eq!(y.len(), m * w.n);
    assert!(counts.iter().all(|&c| (1..=MAX_TOKENS).contains(&c)) && counts.last() == Some(&1));
    let mut starts = Vec::new();
    let mut t = 0;
    while t < m {
        let count = counts
            .iter()
            .copied()
            .find(|&c| m - t >= c)
            .expect("1 fits");
        starts.push((t, count));
        t += count;
    }
    let groups: Vec<TokenGroup<G>> = starts
        .into_par_iter()
        .map(|(t, count)| TokenGroup {
            t,
            count,
            data: group(t, count),
        })
        .collect();
    let out = super::SharedOut(y.as_mut_ptr());
    let (n, tile_rows, panel) = (w.n, w.n / TILE_ROWS, w.panel(m));
    (0..tile_rows.div_ceil(panel))
        .into_par_iter()
        .for_each(|p| {
            let rows = p * panel..((p + 1) * panel).min(tile_rows);
            // One output buffer per task, of which only the rows the next call writes are
            // cleared: made per tile row, LLVM cleared all of it (1 KiB) with a call to
            // `memset` before every kernel call.
            let mut res = [[[0f32; TILE_ROWS]; MAX_TOKENS]; 2];
            for g in &groups {
                let mut tr = rows.start;
                while tr < rows.end {
                    let pair = pair.filter(|_| g.count == PAIR_TOKENS && tr + 1 < rows.end);
                    let step = if pair.is_some() { 2 } else { 1 };
                    for r in res[..step].iter_mut().flat_map(|res| &mut res[..g.count]) {
                        *r = [0.0; TILE_ROWS];
                    }
                    match pair {
                        Some(pair) => pair(tr, g, &mut res),
                        None => kernel(tr, g, &mut res[0]),
                    }
                    for (s, res) in res[..step].iter().enumerate() {
                        for (i, r) in res[..g.count].iter().enumerate() {
                            // SAFETY: token g.t + i < m, rows (tr+s)*16 .. (tr+s)*16+16 < n
                            // belong to this task.
                            unsafe {
                                let dst = out.at((g.t + i) * n + (tr + s) * TILE_ROWS);
                                std::ptr::copy_nonoverlapping(r.as_ptr(), dst, TILE_ROWS);
                            }
                        }
                    }
                    tr += step;
                }
            }
        });
}

/// Tokens `t .. t + count` and what a kernel reads of them (`data`).
struct TokenGroup<G> {
    /// First token.
    t: usize,
    /// Tokens.
    count: usize,
    /// The kernel's view of the tokens (the AVX-512 kernels: [`Group`]).
    data: G,
}

mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// The 16 outputs of tile row `tr` for the `T` tokens `acts` into `res` (zeroed).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn tile_row<const T: usize>(
        w: &Tiled,
        tr: usize,
        g: &Group,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        debug_assert_eq!(g.count, T);
        let tiles = w.tile_row(tr);
        let x = Interleaved::<T>(g.xs.as_ptr());
        let (dx, sums, offsets) = (g.dx.as_ptr(), g.sums.as_ptr(), g.offsets.as_ptr());
        match w.kind {
            Kind::Q4K if w.gfni => q4_k::<T, true>(tiles, x, dx, g.pairs.as_ptr(), res),
            Kind::Q4K => q4_k::<T, false>(tiles, x, dx, g.pairs.as_ptr(), res),
            Kind::Q5K => q5_k::<T>(tiles, x, dx, sums, res),
            Kind::Iq4Xs => iq4_xs::<T>(tiles, x, dx, offsets, res),
            Kind::Nf4 => nibbles::<T, Nf4>(tiles, x, dx, offsets, res),
            Kind::Q4_0 => nibbles::<T, Q4_0>(tiles, x, dx, offsets, res),
            Kind::Q8_0 => q8_0::<T>(tiles, x, dx, offsets, res),
            Kind::Q6K => q6_k::<T>(tiles, x, dx, offsets, res),
        }
    }

    /// The 16 outputs of Q5_K tile rows `tr` and `tr + 1` for the
    /// [`PAIR_TOKENS`] tokens `g` into `res[0]` and `res[1]` (zeroed).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn tile_row_pair(w: &Tiled, tr: usize, g: &Group, res: &mut [TileOut; 2]) {
        debug_assert_eq!(g.count, PAIR_TOKENS);
        let tiles = [w.tile_row(tr), w.tile_row(tr + 1)];
        let x = Interleaved::<PAIR_TOKENS>(g.xs.as_ptr());
        let (dx, sums) = (g.dx.as_ptr(), g.sums.as_ptr());
        match w.kind {
            Kind::Q5K => q5_k_pair(tiles, x, dx, sums, res),
            _ => unreachable!("only Q5_K takes two tile rows"),
        }
    }

    /// A group's interleaved activations ([`Group::xs`]) for `T` tokens.
    #[derive(Clone, Copy)]
    struct Interleaved<const T: usize>(*const i8);

    /// Step `s` of the `STEPS` a kernel takes per tile of `BYTES` asks for its share of the
    /// tile [`PREFETCH_AHEAD`] bytes ahead: addresses spread evenly over the tile, less than
    /// a line apart, so that every line of the stream (headers included) is asked for, a few
    /// at each step rather than in bursts (tiles are read in order, so these are lines this
    /// task reads soon; past the end it is only a hint, never a fault). A fixed count per
    /// step: no branch in the kernels' loops.
    #[inline(always)]
    unsafe fn prefetch_tile<const BYTES: usize, const STEPS: usize>(tile: *const u8, s: usize) {
        let per = BYTES.div_ceil(64 * STEPS);
        for k in 0..per {
            let at = (s * per + k) * BYTES / (STEPS * per);
            _mm_prefetch::<_MM_HINT_T0>(tile.wrapping_add(PREFETCH_AHEAD + at).cast());
        }
    }

    /// [`prefetch_tile`] for `T` tokens: with one (the GEMV) none, its reads in address
    /// order ([`weights`]) keep the hardware prefetchers ahead, and the prefetches cost the
    /// GEMV of Q4_K, Q5_K and IQ4_XS 3-11% (one thread).
    #[inline(always)]
    unsafe fn prefetch_share<const T: usize, const BYTES: usize, const STEPS: usize>(
        tile: *const u8,
        s: usize,
    ) {
        if T > 1 {
            prefetch_tile::<BYTES, STEPS>(tile, s);
        }
    }

    /// The 64 weight bytes at `p`. With one token (`T = 1`, the GEMV, which streams its
    /// weights from memory without software prefetch) an `asm` load, which the compiler keeps
    /// in program order with the other weight reads ([`weights_masked`]), so that every
    /// tile is read in address order: left to schedule plain loads, LLVM read an NF4 or Q4_0
    /// tile's second half before its first and the scales last, and the GEMV lost 20-35%.
    /// With more tokens the tiles come from L2 (the panel) and LLVM may place the loads.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn weights<const T: usize>(p: *const u8) -> __m512i {
        if T > 1 {
            return _mm512_loadu_si512(p.cast());
        }
        let v: __m512i;
        std::arch::asm!(
            "vmovdqu64 {v}, zmmword ptr [{p}]",
            v = lateout(zmm_reg) v,
            p = in(reg) p,
            options(readonly, nostack, preserves_flags),
        );
        v
    }

    /// The bytes of the line at `p` that mask `k` selects (the others zero), read as
    /// [`weights`] reads (in program order with it at `T = 1`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn weights_masked<const T: usize>(p: *const u8, k: __mmask64) -> __m512i {
        if T > 1 {
            return _mm512_maskz_loadu_epi8(k, p.cast());
        }
        let v: __m512i;
        std::arch::asm!(
            "vmovdqu8 {v}{{{k}}}{{z}}, zmmword ptr [{p}]",
            v = lateout(zmm_reg) v,
            k = in(kreg) k,
            p = in(reg) p,
            options(readonly, nostack, preserves_flags),
        );
        v
    }

    /// Token `t`'s 4 activations `at .. at + 4` (`at` a multiple of 4) in every lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn bcast<const T: usize>(x: Interleaved<T>, at: usize, t: usize) -> __m512i {
        _mm512_set1_epi32(x.0.add(at * T + 4 * t).cast::<i32>().read_unaligned())
    }

    /// Adds the unsigned codes `lo` (values `at .. at + 4` of 16 rows) and `hi` (values
    /// `at + 4 .. at + 8`) times each token's activations into the accumulators: with 8
    /// tokens there are chains enough to cover `vpdpbusd`'s latency in `acc` alone, with
    /// fewer the high halves go to `hi_acc`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot_group<const T: usize>(
        lo: __m512i,
        hi: __m512i,
        x: Interleaved<T>,
        at: usize,
        acc: &mut [__m512i; T],
        hi_acc: &mut [__m512i; T],
    ) {
        for t in 0..T {
            acc[t] = _mm512_dpbusd_epi32(acc[t], lo, bcast(x, at, t));
            if T >= MAX_TOKENS {
                acc[t] = _mm512_dpbusd_epi32(acc[t], hi, bcast(x, at + 4, t));
            } else {
                hi_acc[t] = _mm512_dpbusd_epi32(hi_acc[t], hi, bcast(x, at + 4, t));
            }
        }
    }

    /// `acc + hi_acc` (all of it in `acc` with 8 tokens), as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn total<const T: usize>(acc: &[__m512i; T], hi_acc: &[__m512i; T], t: usize) -> __m512 {
        if T >= MAX_TOKENS {
            _mm512_cvtepi32_ps(acc[t])
        } else {
            _mm512_cvtepi32_ps(_mm512_add_epi32(acc[t], hi_acc[t]))
        }
    }

    /// `res[t] += v * dx`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn add_scaled(res: &mut [f32; TILE_ROWS], v: __m512, dx: f32) {
        let r = res.as_mut_ptr();
        _mm512_storeu_ps(
            r,
            _mm512_fmadd_ps(v, _mm512_set1_ps(dx), _mm512_loadu_ps(r)),
        );
    }

    /// One Q5_K tile row (16 outputs) for `T` tokens: `res[t][r]` (the Q4_K layout plus the
    /// fifth bits, [`add_fifth_bits`]). Its 16-value sums can pass i16, so unlike
    /// [`q4_k`] it scales each sub-block's sum in f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn q5_k<const T: usize>(
        tiles: &[u8],
        x: Interleaved<T>,
        dx: *const f32,
        sums32: *const f32,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        let m4 = _mm512_set1_epi8(0x0F);
        let mut hdr = Header::<Q5_QS_AT>::new();
        for (sb, tile) in tiles.chunks_exact(Q5_K_TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            // A whole token group reads the tile from L2 (the panel), where the order of
            // the lines matters less than the 13 lines' copy: 1-2% at m = 512.
            let h = if T < MAX_TOKENS {
                hdr.copy_from::<T>(p)
            } else {
                p
            };
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(h.add(D_AT).cast()));
            let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(h.add(DMIN_AT).cast()));
            let mut sbacc = [_mm512_setzero_ps(); T];
            for j in 0..8 {
                let mut acc = [_mm512_setzero_si512(); T];
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in 4 * j..4 * j + 4 {
                    prefetch_share::<T, Q5_K_TILE_BYTES, 32>(p, g);
                    let q = weights::<T>(p.add(Q5_QS_AT + 64 * g));
                    let mut lo = _mm512_and_si512(q, m4);
                    let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                    (lo, hi) = add_fifth_bits(h, g, lo, hi);
                    dot_group(lo, hi, x, sb * QK_K + 8 * g, &mut acc, &mut hi_acc);
                }
                let (sc, mn) = scales_mins(h, j, d, dmin);
                for (t, sbacc) in sbacc.iter_mut().enumerate() {
                    *sbacc = _mm512_fmadd_ps(total(&acc, &hi_acc, t), sc, *sbacc);
                    let s = _mm512_set1_ps(*sums32.add((sb * 8 + j) * T + t));
                    *sbacc = _mm512_fnmadd_ps(mn, s, *sbacc);
                }
            }
            for t in 0..T {
                add_scaled(&mut res[t], sbacc[t], *dx.add(sb * T + t));
            }
        }
    }

    /// A copy of the first `N` bytes of a tile (its scales, before the codes). A kernel
    /// reads a tile's header lines at its sub-blocks' ends, after lines further on; read in
    /// place, those reads go back against the stream and the GEMV loses 5-10% of the read
    /// bandwidth. Copied first (in a GEMV by loads the compiler keeps before the codes',
    /// [`weights_masked`]), every line of the tile is read once, in address order.
    #[repr(C, align(64))]
    struct Header<const N: usize>([u8; N]);

    impl<const N: usize> Header<N> {
        fn new() -> Self {
            Header([0; N])
        }

        /// Copies the first `N` bytes of the tile at `p` here (for a kernel of `T` tokens,
        /// read as [`weights`]) and returns where they now are.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn copy_from<const T: usize>(&mut self, p: *const u8) -> *const u8 {
            let dst = self.0.as_mut_ptr();
            for at in (0..N).step_by(64) {
                let k: __mmask64 = if N - at >= 64 {
                    !0
                } else {
                    (1u64 << (N - at)) - 1
                };
                let v = weights_masked::<T>(p.add(at), k);
                _mm512_mask_storeu_epi8(dst.add(at).cast(), k, v);
            }
            dst
        }
    }

    /// The high i16 of every dword (a `vpblendmw` mask).
    const HIGH_WORDS: __mmask32 = 0xAAAA_AAAA;

    /// The high nibble of every byte of `q`: with `GFNI` one `vgf2p8affineqb` (the bit matrix
    /// that moves bits 4..8 to 0..4; in asm, so that the function needs no `gfni` target
    /// feature and runs only where [`Tiled::gfni`] found it), else a shift and a mask.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn high_nibbles<const GFNI: bool>(q: __m512i, m4: __m512i) -> __m512i {
        if !GFNI {
            return _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
        }
        let shift4 = _mm512_set1_epi64(0x1020_4080_0000_0000);
        let hi: __m512i;
        std::arch::asm!(
            "vgf2p8affineqb {hi}, {q}, {m}, 0",
            hi = lateout(zmm_reg) hi,
            q = in(zmm_reg) q,
            m = in(zmm_reg) shift4,
            options(pure, nomem, nostack, preserves_flags),
        );
        hi
    }

    /// `acc` plus the i16 pair products of `a` and `b` (`vpdpwssd`). Written in asm because
    /// LLVM splits the intrinsic into `vpmaddwd` + `vpaddd` here, two instructions for one.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        let mut acc = acc;
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }

    /// 16 bytes at `lo` and `hi` as the i16 pairs `(lo[r], hi[r])` of dword `r`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn u8_pairs(lo: *const u8, hi: *const u8) -> __m512i {
        let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(lo.cast()));
        let hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(hi.cast()));
        _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi))
    }

    /// One Q4_K tile row (16 outputs) for `T` tokens, scaled in integers: a sub-block's
    /// low and high nibbles go to two `vpdpbusd` chains per token (16 values each, so each
    /// sum fits i16: 16 * 15 * 128 < 2^15); the two sums become the i16 pair of a dword and
    /// one `vpdpwssd` multiplies both by the row's 6-bit scale into an i32 sum per
    /// super-block (8 * 63 * 2 * 30720 < 2^31), and the mins take one `vpdpwssd` per two
    /// sub-blocks with [`Group::pairs`]. Two float conversions per super-block and token, none per
    /// sub-block; 16 chains cover `vpdpbusd`'s latency. With `GFNI` one `vgf2p8affineqb`
    /// takes the high nibbles ([`high_nibbles`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4_k<const T: usize, const GFNI: bool>(
        tiles: &[u8],
        x: Interleaved<T>,
        dx: *const f32,
        pairs: *const i32,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        let m4 = _mm512_set1_epi8(0x0F);
        let mut hdr = Header::<QS_AT>::new();
        for (sb, tile) in tiles.chunks_exact(TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            let h = hdr.copy_from::<T>(p);
            let mut isb = [_mm512_setzero_si512(); T];
            for j in 0..8 {
                let mut lo_acc = [_mm512_setzero_si512(); T];
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in 4 * j..4 * j + 4 {
                    prefetch_share::<T, TILE_BYTES, 32>(p, g);
                    let q = weights::<T>(p.add(QS_AT + 64 * g));
                    let lo = _mm512_and_si512(q, m4);
                    let hi = high_nibbles::<GFNI>(q, m4);
                    let at = sb * QK_K + 8 * g;
                    for t in 0..T {
                        lo_acc[t] = _mm512_dpbusd_epi32(lo_acc[t], lo, bcast(x, at, t));
                        hi_acc[t] = _mm512_dpbusd_epi32(hi_acc[t], hi, bcast(x, at + 4, t));
                    }
                }
                // (scale, scale) as the i16 pair of each row, against the pair (low sum,
                // high sum) of each token (both within i16): one `vpdpwssd` a token takes
                // the sub-block; the shift and the word blend run beside `vpdpbusd`.
                let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(h.add(SC_AT + 16 * j).cast()));
                let sc = _mm512_or_si512(sc, _mm512_slli_epi32::<16>(sc));
                for t in 0..T {
                    let hi = _mm512_slli_epi32::<16>(hi_acc[t]);
                    let sums = _mm512_mask_blend_epi16(HIGH_WORDS, lo_acc[t], hi);
                    isb[t] = dpwssd(isb[t], sums, sc);
                }
            }
            let mut imn = [_mm512_setzero_si512(); T];
            for i in 0..4 {
                let mn = u8_pairs(h.add(MN_AT + 32 * i), h.add(MN_AT + 32 * i + 16));
                for (t, imn) in imn.iter_mut().enumerate() {
                    let s = _mm512_set1_epi32(*pairs.add((sb * 4 + i) * T + t));
                    *imn = dpwssd(*imn, mn, s);
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(h.add(D_AT).cast()));
            let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(h.add(DMIN_AT).cast()));
            for t in 0..T {
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(isb[t]), d);
                let v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imn[t]), dmin, v);
                add_scaled(&mut res[t], v, *dx.add(sb * T + t));
            }
        }
    }

    /// Sub-block `j`'s 16 scales times `d` and 16 mins times `dmin` of the Q4_K/Q5_K tile
    /// super-block at `p`, as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn scales_mins(p: *const u8, j: usize, d: __m512, dmin: __m512) -> (__m512, __m512) {
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
            p.add(SC_AT + 16 * j).cast(),
        )));
        let mn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
            p.add(MN_AT + 16 * j).cast(),
        )));
        (_mm512_mul_ps(sc, d), _mm512_mul_ps(mn, dmin))
    }

    /// Two Q5_K tile rows for [`PAIR_TOKENS`] tokens: as [`q5_k`] on
    /// each, but every activation broadcast feeds both tiles' `vpdpbusd` (the integer sums
    /// are exact, and the f32 steps are [`q5_k`]'s in the same order, so the outputs are
    /// the same bits).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn q5_k_pair(
        tiles: [&[u8]; 2],
        x: Interleaved<PAIR_TOKENS>,
        dx: *const f32,
        sums32: *const f32,
        res: &mut [TileOut; 2],
    ) {
        const T: usize = PAIR_TOKENS;
        let m4 = _mm512_set1_epi8(0x0F);
        let bytes = Q5_K_TILE_BYTES;
        debug_assert_eq!(tiles[0].len(), tiles[1].len());
        let mut hdr = [Header::<Q5_QS_AT>::new(), Header::<Q5_QS_AT>::new()];
        for sb in 0..tiles[0].len() / bytes {
            let p = [
                hdr[0].copy_from::<T>(tiles[0].as_ptr().add(sb * bytes)),
                hdr[1].copy_from::<T>(tiles[1].as_ptr().add(sb * bytes)),
            ];
            let codes = [
                tiles[0].as_ptr().add(sb * bytes),
                tiles[1].as_ptr().add(sb * bytes),
            ];
            let mut sbacc = [[[0f32; TILE_ROWS]; T]; 2];
            for j in 0..8 {
                // 16 chains (each takes a line's low and high halves) cover the latency
                // of `vpdpbusd`; the f32 sums of the sub-blocks live in memory.
                let mut acc = [[_mm512_setzero_si512(); T]; 2];
                for g in 4 * j..4 * j + 4 {
                    let mut lo = [_mm512_setzero_si512(); 2];
                    let mut hi = [_mm512_setzero_si512(); 2];
                    for r in 0..2 {
                        prefetch_share::<T, Q5_K_TILE_BYTES, 32>(codes[r], g);
                        let q = weights::<T>(codes[r].add(Q5_QS_AT + 64 * g));
                        lo[r] = _mm512_and_si512(q, m4);
                        hi[r] = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                        (lo[r], hi[r]) = add_fifth_bits(p[r], g, lo[r], hi[r]);
                    }
                    let at = sb * QK_K + 8 * g;
                    let [acc0, acc1] = &mut acc;
                    for (t, (a0, a1)) in acc0.iter_mut().zip(acc1.iter_mut()).enumerate() {
                        let a = bcast(x, at, t);
                        *a0 = _mm512_dpbusd_epi32(*a0, lo[0], a);
                        *a1 = _mm512_dpbusd_epi32(*a1, lo[1], a);
                        let a = bcast(x, at + 4, t);
                        *a0 = _mm512_dpbusd_epi32(*a0, hi[0], a);
                        *a1 = _mm512_dpbusd_epi32(*a1, hi[1], a);
                    }
                }
                for r in 0..2 {
                    let d = _mm512_cvtph_ps(_mm256_loadu_si256(p[r].add(D_AT).cast()));
                    let dmin = _mm512_cvtph_ps(_mm256_loadu_si256(p[r].add(DMIN_AT).cast()));
                    let (sc, mn) = scales_mins(p[r], j, d, dmin);
                    for t in 0..T {
                        let v = _mm512_cvtepi32_ps(acc[r][t]);
                        let at = sbacc[r][t].as_mut_ptr();
                        let sum = _mm512_fmadd_ps(v, sc, _mm512_loadu_ps(at));
                        let s = _mm512_set1_ps(*sums32.add((sb * 8 + j) * T + t));
                        _mm512_storeu_ps(at, _mm512_fnmadd_ps(mn, s, sum));
                    }
                }
            }
            for r in 0..2 {
                for t in 0..T {
                    let v = _mm512_loadu_ps(sbacc[r][t].as_ptr());
                    add_scaled(&mut res[r][t], v, *dx.add(sb * T + t));
                }
            }
        }
    }

    /// Line `g`'s Q5_K levels from their low 4 bits `lo`, `hi`: 16 added where the tile's
    /// fifth-bit masks of the line have a bit.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn add_fifth_bits(
        p: *const u8,
        g: usize,
        lo: __m512i,
        hi: __m512i,
    ) -> (__m512i, __m512i) {
        let sixteen = _mm512_set1_epi8(16);
        let masks = p.add(Q5_QH_AT + 16 * g).cast::<u64>();
        let (klo, khi) = (masks.read_unaligned(), masks.add(1).read_unaligned());
        (
            _mm512_mask_add_epi8(lo, klo, lo, sixteen),
            _mm512_mask_add_epi8(hi, khi, hi, sixteen),
        )
    }

    /// IQ4_XS table values + 128, as the unsigned bytes `vpdpbusd` takes.
    const IQ4_XS_TABLE: [u8; 16] = {
        let mut t = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            t[i] = (KVALUES_IQ4NL[i] as u8) ^ 0x80;
            i += 1;
        }
        t
    };

    /// One IQ4_XS tile row (16 outputs) for `T` tokens; `offsets` holds `-128 *` the sum
    /// of each 32 activations of the tokens.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn iq4_xs<const T: usize>(
        tiles: &[u8],
        x: Interleaved<T>,
        dx: *const f32,
        offsets: *const i32,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        let m4 = _mm512_set1_epi8(0x0F);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_XS_TABLE.as_ptr().cast()));
        let mut hdr = Header::<IQ4_XS_QS_AT>::new();
        for (sb, tile) in tiles.chunks_exact(IQ4_XS_TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            let h = hdr.copy_from::<T>(p);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(h.add(IQ4_XS_D_AT).cast()));
            let mut sbacc = [_mm512_setzero_ps(); T];
            for j in 0..8 {
                let mut acc: [__m512i; T] =
                    std::array::from_fn(|t| _mm512_set1_epi32(*offsets.add((sb * 8 + j) * T + t)));
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in 4 * j..4 * j + 4 {
                    prefetch_share::<T, IQ4_XS_TILE_BYTES, 32>(p, g);
                    let q = weights::<T>(p.add(IQ4_XS_QS_AT + 64 * g));
                    let lo = _mm512_shuffle_epi8(table, _mm512_and_si512(q, m4));
                    let hi =
                        _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4));
                    dot_group(lo, hi, x, sb * QK_K + 8 * g, &mut acc, &mut hi_acc);
                }
                let ls = _mm512_cvtepi8_epi32(_mm_loadu_si128(h.add(IQ4_XS_LS_AT + 16 * j).cast()));
                let sc = _mm512_mul_ps(_mm512_cvtepi32_ps(ls), d);
                for (t, sbacc) in sbacc.iter_mut().enumerate() {
                    *sbacc = _mm512_fmadd_ps(total(&acc, &hi_acc, t), sc, *sbacc);
                }
            }
            for t in 0..T {
                add_scaled(&mut res[t], sbacc[t], *dx.add(sb * T + t));
            }
        }
    }

    /// One Q6_K tile row (16 outputs) for `T` tokens; `offsets` holds `-32 *` the sum of
    /// each 16 activations of the tokens.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn q6_k<const T: usize>(
        tiles: &[u8],
        x: Interleaved<T>,
        dx: *const f32,
        offsets: *const i32,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        let mut hdr = Header::<Q6K_AT>::new();
        for (sb, tile) in tiles.chunks_exact(Q6K_TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            let h = hdr.copy_from::<T>(p);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(h.add(D_AT).cast()));
            let mut sbacc = [_mm512_setzero_ps(); T];
            for i in 0..16 {
                let mut acc: [__m512i; T] =
                    std::array::from_fn(|t| _mm512_set1_epi32(*offsets.add((sb * 16 + i) * T + t)));
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in [4 * i, 4 * i + 2] {
                    let line = p.add(Q6K_AT + 64 * g);
                    // Every token count: without, the Q6_K GEMV ran 7% slower.
                    prefetch_tile::<Q6K_TILE_BYTES, 32>(p, g / 2);
                    let lo = weights::<T>(line);
                    let hi = weights::<T>(line.add(64));
                    dot_group(lo, hi, x, sb * QK_K + 4 * g, &mut acc, &mut hi_acc);
                }
                let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    h.add(Q6K_SC_AT + 16 * i).cast(),
                )));
                let sc = _mm512_mul_ps(sc, d);
                for (t, sbacc) in sbacc.iter_mut().enumerate() {
                    *sbacc = _mm512_fmadd_ps(total(&acc, &hi_acc, t), sc, *sbacc);
                }
            }
            for t in 0..T {
                add_scaled(&mut res[t], sbacc[t], *dx.add(sb * T + t));
            }
        }
    }

    /// A 4-bit tile kind: how its codes become unsigned bytes and where its scales are.
    pub trait Nibbles {
        /// Code -> unsigned byte (the value plus the kind's offset).
        const TABLE: [u8; 16];
        /// Whether [`TABLE`](Self::TABLE) is the identity (no lookup needed).
        const IDENTITY: bool;
        /// The 16 rows' scales of 32-value half `h` of tile `p`.
        unsafe fn scales(p: *const u8, h: usize) -> __m512;
    }

    /// NF4: the int8 table + 128; one f32 scale (absmax / 127) per row for both halves.
    pub struct Nf4;
    /// Q4_0: the levels themselves (+8 built in); an f16 `d` per row and half.
    pub struct Q4_0;

    impl Nibbles for Nf4 {
        const TABLE: [u8; 16] = {
            let mut t = [0u8; 16];
            let mut i = 0;
            while i < 16 {
                t[i] = (NF4_I8[i] as u8) ^ 0x80;
                i += 1;
            }
            t
        };
        const IDENTITY: bool = false;
        #[inline(always)]
        unsafe fn scales(p: *const u8, _h: usize) -> __m512 {
            _mm512_loadu_ps(p.cast())
        }
    }

    impl Nibbles for Q4_0 {
        const TABLE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        const IDENTITY: bool = true;
        #[inline(always)]
        unsafe fn scales(p: *const u8, h: usize) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32 * h).cast()))
        }
    }

    /// One NF4 or Q4_0 tile row (16 outputs) for `T` tokens: `res[t][r]`; `offsets`
    /// holds `-bias *` the sum of each 32 activations of the tokens.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn nibbles<const T: usize, K: Nibbles>(
        tiles: &[u8],
        x: Interleaved<T>,
        dx: *const f32,
        offsets: *const i32,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        let m4 = _mm512_set1_epi8(0x0F);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(K::TABLE.as_ptr().cast()));
        let lookup = |v: __m512i| {
            if K::IDENTITY {
                v
            } else {
                _mm512_shuffle_epi8(table, v)
            }
        };
        let mut facc = [_mm512_setzero_ps(); T];
        let mut hdr = Header::<NIBBLES_AT>::new();
        for (b, tile) in tiles.chunks_exact(NIBBLE_TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            let head = hdr.copy_from::<T>(p);
            for h in 0..2 {
                let blk = 2 * b + h;
                let mut acc: [__m512i; T] =
                    std::array::from_fn(|t| _mm512_set1_epi32(*offsets.add(blk * T + t)));
                let mut hi_acc = [_mm512_setzero_si512(); T];
                for g in 4 * h..4 * h + 4 {
                    prefetch_share::<T, NIBBLE_TILE_BYTES, 8>(p, g);
                    let q = weights::<T>(p.add(NIBBLES_AT + 64 * g));
                    let lo = lookup(_mm512_and_si512(q, m4));
                    let hi = lookup(_mm512_and_si512(_mm512_srli_epi16::<4>(q), m4));
                    dot_group(lo, hi, x, 64 * b + 8 * g, &mut acc, &mut hi_acc);
                }
                let scale = K::scales(head, h);
                for (t, facc) in facc.iter_mut().enumerate() {
                    accumulate(facc, total(&acc, &hi_acc, t), scale, *dx.add(blk * T + t));
                }
            }
        }
        for t in 0..T {
            _mm512_storeu_ps(res[t].as_mut_ptr(), facc[t]);
        }
    }

    /// One Q8_0 tile row (16 outputs) for `T` tokens; `offsets` as for [`nibbles`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn q8_0<const T: usize>(
        tiles: &[u8],
        x: Interleaved<T>,
        dx: *const f32,
        offsets: *const i32,
        res: &mut [[f32; TILE_ROWS]; MAX_TOKENS],
    ) {
        let mut facc = [_mm512_setzero_ps(); T];
        let mut hdr = Header::<Q8_0_AT>::new();
        for (b, tile) in tiles.chunks_exact(Q8_0_TILE_BYTES).enumerate() {
            let p = tile.as_ptr();
            let h = hdr.copy_from::<T>(p);
            let mut acc: [__m512i; T] =
                std::array::from_fn(|t| _mm512_set1_epi32(*offsets.add(b * T + t)));
            let mut hi_acc = [_mm512_setzero_si512(); T];
            for g in 0..4 {
                prefetch_share::<T, Q8_0_TILE_BYTES, 4>(p, g);
                let lo = weights::<T>(p.add(Q8_0_AT + 128 * g));
                let hi = weights::<T>(p.add(Q8_0_AT + 128 * g + 64));
                dot_group(lo, hi, x, 32 * b + 8 * g, &mut acc, &mut hi_acc);
            }
            let scale = _mm512_cvtph_ps(_mm256_loadu_si256(h.cast()));
            for (t, facc) in facc.iter_mut().enumerate() {
                accumulate(facc, total(&acc, &hi_acc, t), scale, *dx.add(b * T + t));
            }
        }
        for t in 0..T {
            _mm512_storeu_ps(res[t].as_mut_ptr(), facc[t]);
        }
    }

    /// `facc += dot * dx * scale`: one 32-value block of 16 rows for a token (the offset
    /// correction already started the integer accumulator).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    unsafe fn accumulate(facc: &mut __m512, dot: __m512, scale: __m512, dx: f32) {
        let v = _mm512_mul_ps(dot, _mm512_set1_ps(dx));
        *facc = _mm512_fmadd_ps(v, scale, *facc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::WeightType;

    #[test]
    fn pairs_of_tile_rows_give_the_bits_of_single_rows() {
        if !crate::kernels::Isa::available().contains(&crate::kernels::Isa::Avx512Vnni) {
            eprintln!("SKIPPED: no AVX-512 VNNI");
            return;
        }
        let k = 512;
        let x = crate::kernels::test_support::activations(PAIR_TOKENS, k);
        for ty in [WeightType::Q5K] {
            let w = QuantMatrix::random(ty, 3 * TILE_ROWS, k, 7).unwrap();
            let t = Tiled::new(&w);
            let acts = Activations::for_weights(&x, k, ty);
            let g = Group::new(t.kind, &acts, 0, PAIR_TOKENS);
            for tr in 0..2 {
                let mut pair = [[[0f32; TILE_ROWS]; MAX_TOKENS]; 2];
                let mut single = pair;
                // SAFETY: AVX-512 VNNI is available (checked above); the group holds
                // `PAIR_TOKENS` tokens of `k` values; `tr + 1 < 3` tile rows.
                unsafe {
                    x86::tile_row_pair(&t, tr, &g, &mut pair);
                    for (i, s) in single.iter_mut().enumerate() {
                        x86::tile_row::<PAIR_TOKENS>(&t, tr + i, &g, s);
                    }
                }
                for (i, (p, s)) in pair.iter().zip(&single).enumerate() {
                    for (pt, st) in p.iter().zip(s) {
                        let (pb, sb): (Vec<u32>, Vec<u32>) = (
                            pt.iter().map(|v| v.to_bits()).collect(),
                            st.iter().map(|v| v.to_bits()).collect(),
                        );
                        assert_eq!(pb, sb, "{ty:?} tile row {}", tr + i);
                        assert!(pt.iter().all(|v| v.is_finite() && *v != 0.0), "{ty:?}");
                    }
                }
            }
            // Through the driver (panels of 3 tile rows: a pair and a lone row) against the
            // f64 reference, for one group of 8 tokens and one more token.
            let rows = 12 * rayon::current_num_threads() * TILE_ROWS;
            let w = std::sync::Arc::new(QuantMatrix::random(ty, rows, k, 3).unwrap());
            let b = crate::kernels::fused::Fused::new(w.clone(), crate::kernels::Isa::Avx512Vnni);
            assert!(b.is_tiled() && Tiled::new(&w).panel(PAIR_TOKENS) == 3);
            for m in [PAIR_TOKENS, PAIR_TOKENS + 1] {
                let x = crate::kernels::test_support::activations(m, k);
                let mut y = vec![f32::NAN; m * w.n];
                crate::kernels::GemmBackend::matmul(&b, &x, &mut y).unwrap();
                let want = crate::kernels::reference_matmul(&w, &x);
                crate::kernels::test_support::assert_close(
                    &w,
                    &x,
                    &y,
                    &want,
                    &format!("{ty:?} m={m}"),
                );
            }
        }
    }

    /// The Q4_K kernel in integers at its bounds (levels 15, scales and mins 63, every
    /// activation 127 or every one -127, where the i16 sums peak) and on random
    /// blocks, for 8, 4 and 1 tokens: against the f64 reference, and the GFNI and the
    /// shift-and-mask high nibbles give the same bits.
    #[test]
    fn q4_k_integer_scales_stay_exact_at_their_bounds() {
        use crate::kernels::test_support::{activations, assert_close};
        use crate::kernels::{reference_matmul, Isa};
        if !Isa::available().contains(&Isa::Avx512Vnni) {
            eprintln!("SKIPPED: no AVX-512 VNNI");
            return;
        }
        let (n, k) = (2 * TILE_ROWS, 512);
        let one = [0x00, 0x3C]; // f16 1.0
        let extreme = [&one[..], &one[..], &[0xFF; 12], &[0xFF; 128]].concat();
        let extreme = std::sync::Arc::new(QuantMatrix {
            ty: WeightType::Q4K,
            n,
            k,
            data: extreme.repeat(n * k / QK_K).into(),
            absmax: Vec::new(),
        });
        let random = std::sync::Arc::new(QuantMatrix::random(WeightType::Q4K, n, k, 5).unwrap());
        let gfni = crate::cpu::features().gfni;
        for (what, w) in [("extreme", extreme), ("random", random)] {
            for (m, sign) in [(MAX_TOKENS, 1.0), (MAX_TOKENS, -1.0), (4, 1.0), (1, -1.0)] {
                let x: Vec<f32> = if what == "extreme" {
                    vec![sign; m * k]
                } else {
                    activations(m, k)
                };
                let acts = Activations::for_weights(&x, k, WeightType::Q4K);
                let mut t = Tiled::new(&w);
                let mut run = |use_gfni: bool| {
                    t.gfni = use_gfni;
                    let mut y = vec![f32::NAN; m * n];
                    // SAFETY: AVX-512 VNNI is available (checked above); GFNI only if found.
                    unsafe { matmul(&t, &acts, &mut y) };
                    y
                };
                let y = run(false);
                assert_close(
                    &w,
                    &x,
                    &y,
                    &reference_matmul(&w, &x),
                    &format!("{what} m={m}"),
                );
                if gfni {
                    let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&run(true)), bits(&y), "{what} m={m}: GFNI");
                }
            }
        }
    }

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
    }

    /// Every value of rows of a tiled super-block type, as the tile holds it, against the
    /// codec's dequantized row (`value(tile, lane, e)` decodes value `e` of one tile).
    fn assert_tiles_decode(ty: WeightType, value: impl Fn(&[u8], usize, usize) -> f32) {
        let w = QuantMatrix::random(ty, 32, 512, 8).unwrap();
        let t = Tiled::new(&w);
        let kind = Kind::of(ty).unwrap();
        assert_eq!(t.bytes() as usize, 2 * 2 * kind.bytes());
        let mut row = vec![0f32; 512];
        for r in [0, 5, 17, 31] {
            w.dequantize_rows(r..r + 1, &mut row);
            let (tr, lane) = (r / TILE_ROWS, r % TILE_ROWS);
            for (sb, tile) in t.tile_row(tr).chunks_exact(kind.bytes()).enumerate() {
                for e in 0..256 {
                    let want = row[sb * 256 + e];
                    assert_eq!(value(tile, lane, e), want, "{ty:?} row {r} value {e}");
                }
            }
        }
    }

    /// The 4-bit code of value `e` of row `lane` in the lines at `lines`.
    fn code(lines: &[u8], lane: usize, e: usize) -> u8 {
        let (g, b) = (e / 8, e % 8);
        let byte = lines[g * 64 + lane * 4 + b % 4];
        if b < 4 {
            byte & 0xF
        } else {
            byte >> 4
        }
    }

    fn f16_at(tile: &[u8], at: usize) -> f32 {
        half::f16::from_le_bytes([tile[at], tile[at + 1]]).to_f32()
    }

    #[test]
    fn q5_k_and_iq4_xs_tiles_hold_every_value() {
        assert_tiles_decode(WeightType::Q5K, |tile, lane, e| {
            let (d, dmin) = (
                f16_at(tile, D_AT + 2 * lane),
                f16_at(tile, DMIN_AT + 2 * lane),
            );
            let (g, b) = (e / 8, e % 8);
            let at = Q5_QH_AT + 16 * g + if b < 4 { 0 } else { 8 };
            let mask = u64::from_le_bytes(tile[at..at + 8].try_into().unwrap());
            let fifth = ((mask >> (4 * lane + b % 4)) & 1) as u8;
            let q = code(&tile[Q5_QS_AT..], lane, e) | (fifth << 4);
            let j = e / 32;
            let (sc, mn) = (tile[SC_AT + j * 16 + lane], tile[MN_AT + j * 16 + lane]);
            d * f32::from(sc) * f32::from(q) - dmin * f32::from(mn)
        });
        assert_tiles_decode(WeightType::Iq4Xs, |tile, lane, e| {
            let d = f16_at(tile, IQ4_XS_D_AT + 2 * lane);
            let ls = tile[IQ4_XS_LS_AT + 16 * (e / 32) + lane] as i8;
            let v = KVALUES_IQ4NL[usize::from(code(&tile[IQ4_XS_QS_AT..], lane, e))];
            d * f32::from(ls) * f32::from(v)
        });
        for ty in [WeightType::Q5K, WeightType::Iq4Xs] {
            let w = QuantMatrix::random(ty, 32, 256, 1).unwrap();
            assert!(Tiled::fits(&w) && !Tiled::fits_avx2(&w), "{ty:?}");
        }
    }

    #[test]
    fn q6_k_tiles_hold_every_level_and_scale() {
        let w = QuantMatrix::random(WeightType::Q6K, 32, 512, 3).unwrap();
        assert!(Tiled::fits(&w));
        let t = Tiled::new(&w);
        assert!(t.is_q6_k());
        assert_eq!(t.bytes() as usize, 2 * 2 * Q6K_TILE_BYTES);
        let mut row = vec![0f32; 512];
        for r in [0, 7, 16, 31] {
            w.dequantize_rows(r..r + 1, &mut row);
            let (tr, lane) = (r / TILE_ROWS, r % TILE_ROWS);
            for (sb, tile) in t.tile_row(tr).chunks_exact(Q6K_TILE_BYTES).enumerate() {
                let d =
                    half::f16::from_le_bytes([tile[D_AT + 2 * lane], tile[D_AT + 2 * lane + 1]]);
                for e in 0..256 {
                    let level = tile[Q6K_AT + (e / 4) * 64 + lane * 4 + e % 4];
                    assert!(level < 64);
                    let sc = tile[Q6K_SC_AT + (e / 16) * 16 + lane] as i8;
                    let v = d.to_f32() * f32::from(sc) * (f32::from(level) - 32.0);
                    assert_eq!(v, row[sb * 256 + e], "row {r} value {}", sb * 256 + e);
                }
            }
        }
    }

    #[test]
    fn panels_keep_tiles_in_l2_and_every_thread_busy() {
        let w = QuantMatrix::random(WeightType::Q4_0, 16 * 64, 256, 1).unwrap();
        let t = Tiled::new(&w);
        assert_eq!(t.panel(1), GEMV_TILE_ROWS_PER_TASK);
        let p = t.panel(512);
        assert!(p >= 1 && p * t.tile_row_bytes() <= PANEL_BYTES.max(t.tile_row_bytes()));
        assert!(64 / p >= 4 * rayon::current_num_threads() || p == 1);
    }

    #[test]
    fn the_driver_writes_every_token_of_every_row_once() {
        // 40 tile rows: panels of more than one tile row (pairs and a lone last row) with
        // up to 4 threads.
        let w = QuantMatrix::random(WeightType::Q4_0, 16 * 40, 256, 1).unwrap();
        let t = Tiled::new(&w);
        for (m, counts) in [
            (13, &[4, 1][..]),
            (21, &[MAX_TOKENS, 4, 1][..]),
            (2, &[4, 1][..]),
        ] {
            let mut y = vec![f32::NAN; m * t.n];
            let sizes = std::sync::Mutex::new(Vec::new());
            let group = |first: usize, count: usize| {
                sizes.lock().unwrap().push((first, count));
                count
            };
            let fill = |tr: usize, g: &TokenGroup<usize>, res: &mut TileOut| {
                assert_eq!(g.data, g.count);
                for (i, r) in res[..g.count].iter_mut().enumerate() {
                    for (lane, v) in r.iter_mut().enumerate() {
                        *v = ((g.t + i) * 1000 + tr * TILE_ROWS + lane) as f32;
                    }
                }
            };
            let paired = std::sync::atomic::AtomicUsize::new(0);
            let pair = |tr: usize, g: &TokenGroup<usize>, res: &mut [TileOut; 2]| {
                assert_eq!(g.count, PAIR_TOKENS);
                paired.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                fill(tr, g, &mut res[0]);
                fill(tr + 1, g, &mut res[1]);
            };
            // With pairs on the groups of `PAIR_TOKENS` (m = 21) and without.
            let pairs = counts
                .contains(&PAIR_TOKENS)
                .then_some(&pair as &PairKernel<'_, usize>);
            drive(&t, m, counts, pairs, group, &mut y, fill);
            if pairs.is_some() && t.panel(m) > 1 {
                assert!(paired.into_inner() > 0, "m={m}: no pair of tile rows");
            }
            for (i, v) in y.iter().enumerate() {
                assert_eq!(*v, ((i / t.n) * 1000 + i % t.n) as f32, "m={m} at {i}");
            }
            // Largest groups first, each built once, covering the tokens in order.
            let mut sizes = sizes.into_inner().unwrap();
            sizes.sort();
            let mut next = 0;
            for (first, count) in sizes {
                assert_eq!(first, next, "m={m}");
                assert!(count == 1 || m - first >= count);
                let largest = counts.iter().copied().find(|&c| m - first >= c).unwrap();
                assert_eq!(count, largest, "m={m} at {first}");
                next += count;
            }
            assert_eq!(next, m);
        }
    }

    #[test]
    fn nf4_tiles_hold_every_code_and_scale() {
        let w = QuantMatrix::random(WeightType::Nf4, 32, 128, 4).unwrap();
        let t = Tiled::new(&w);
        assert_eq!(t.bytes() as usize, 2 * 2 * NIBBLE_TILE_BYTES);
        assert_eq!(t.bytes(), w.bytes());
        for r in [0, 9, 16, 31] {
            let (tr, lane) = (r / TILE_ROWS, r % TILE_ROWS);
            for (b, tile) in t.tile_row(tr).chunks_exact(NIBBLE_TILE_BYTES).enumerate() {
                let scale = f32::from_le_bytes(tile[4 * lane..4 * lane + 4].try_into().unwrap());
                assert_eq!(scale, w.row_absmax(r)[b] * (1.0 / 127.0));
                for e in 0..64 {
                    let (g, i) = (e / 8, e % 8);
                    let byte = tile[NIBBLES_AT + g * 64 + lane * 4 + i % 4];
                    let code = if i < 4 { byte & 0xF } else { byte >> 4 };
                    let p = w.row(r)[b * 32 + e / 2];
                    let want = if e % 2 == 0 { p >> 4 } else { p & 0xF };
                    assert_eq!(code, want, "row {r} value {e}");
                }
            }
        }
    }
}

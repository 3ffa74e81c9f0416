//! AVX-512 VNNI dot kernels. Each call takes one weight row and up to [`TILE`] tokens:
//! a row's blocks are unpacked into registers once and multiplied with every token.

use super::super::activation::ActRow;
use super::super::weights::{WeightType, NF4_BLOCK};
use super::{iq4_xs_scale, NF4_I8};
use crate::formats::blocks::{
    blocks, Block, BlockIq4Xs, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8_0, QK_K,
};
use crate::quant::ggml::KVALUES_IQ4NL;
use std::arch::x86_64::*;
use std::mem::size_of;

/// Tokens per kernel call.
const TILE: usize = 4;

/// `out[t] = row . acts[t]`, [`TILE`] tokens at a time.
///
/// # Safety
/// The CPU must have AVX-512 VNNI ([`crate::cpu::Features::avx512_vnni`]); `row`, `absmax` and every activation must have the
/// lengths of one row of `ty` (checked by the caller).
pub unsafe fn dot_rows(
    ty: WeightType,
    row: &[u8],
    absmax: &[f32],
    acts: &[ActRow<'_>],
    out: &mut [f32],
) {
    let mut t = 0;
    while t + TILE <= acts.len() {
        tile::<TILE>(ty, row, absmax, &acts[t..t + TILE], &mut out[t..t + TILE]);
        t += TILE;
    }
    for t in t..acts.len() {
        tile::<1>(ty, row, absmax, &acts[t..t + 1], &mut out[t..t + 1]);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const T: usize>(
    ty: WeightType,
    row: &[u8],
    absmax: &[f32],
    acts: &[ActRow<'_>],
    out: &mut [f32],
) {
    let k = acts[0].qs.len();
    match ty {
        WeightType::Q4K => q45_k::<T, BlockQ4K>(row, acts, out),
        WeightType::Q5K => q45_k::<T, BlockQ5K>(row, acts, out),
        WeightType::Iq4Xs => iq4_xs::<T>(row, acts, out),
        WeightType::Q6K => q6_k::<T>(row, acts, out),
        WeightType::Q4_0 => blocks32::<T, Q4_0>(row, absmax, k, acts, out),
        WeightType::Q8_0 => blocks32::<T, Q8_0>(row, absmax, k, acts, out),
        WeightType::Nf4 => blocks32::<T, Nf4>(row, absmax, k, acts, out),
    }
}

/// How far ahead of the block being read the weights are prefetched (bytes).
const PREFETCH_DISTANCE: usize = 2048;

/// Asks for the weight bytes [`PREFETCH_DISTANCE`] ahead of `p` (past the row's end they
/// belong to the next row, which the task reads next); a hint, never a fault.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn prefetch_ahead(p: *const u8) {
    let ahead = p.wrapping_add(PREFETCH_DISTANCE);
    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
}

/// The f16 at `p` (little-endian) as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn f16(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The `vpermw` indices of a super-block's four vectors: in vector `v`, lane `i` picks
/// element `first * v + i / lanes_per_value`. Built at compile time: built per call (a
/// loop of stores into the stack, which LLVM folded in some builds and not in others), they
/// cost the one-token Q6_K rows 6% (1.82 -> 1.94 ms at 4096 x 14336, one thread, s29).
const fn lane_indices(first: i16, lanes_per_value: usize) -> [[i16; 32]; 4] {
    let mut idx = [[0i16; 32]; 4];
    let mut v = 0;
    while v < 4 {
        let mut i = 0;
        while i < 32 {
            idx[v][i] = first * v as i16 + (i / lanes_per_value) as i16;
            i += 1;
        }
        v += 1;
    }
    idx
}

/// Q4_K, Q5_K and IQ4_XS: one 16-bit scale per 32 values, two scales per vector.
static PAIR_INDICES: [[i16; 32]; 4] = lane_indices(2, 16);
/// Q6_K: one scale per 16 values, four per vector.
static QUAD_INDICES: [[i16; 32]; 4] = lane_indices(4, 8);

/// [`lane_indices`] as vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn load_indices(idx: &[[i16; 32]; 4]) -> [__m512i; 4] {
    let at = |v: usize| _mm512_loadu_si512(idx[v].as_ptr().cast());
    [at(0), at(1), at(2), at(3)]
}

/// The eight 6-bit scales and mins of a Q4_K block (ggml's `get_scale_min_k4` on all
/// sub-blocks at once), each as eight bytes of a u64.
#[inline]
fn q4_k_scales(s: &[u8]) -> (u64, u64) {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let sc = (u0 & K1, (u2 & K2) | (((u0 >> 6) & K3) << 4));
    let mn = (u1 & K1, ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4));
    (
        u64::from(sc.0) | (u64::from(sc.1) << 32),
        u64::from(mn.0) | (u64::from(mn.1) << 32),
    )
}

/// A super-block's dot product in i32 lanes: the 256 unsigned levels `w` (64 per vector)
/// times the activations at `x`, each pair of products weighted by the 16-bit scales `s`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn scaled_dot(w: &[__m512i; 4], s: &[__m512i; 4], x: *const i8) -> __m512i {
    let mut acc = _mm512_setzero_si512();
    for (j, (w, s)) in w.iter().zip(s).enumerate() {
        let xv = _mm512_loadu_si512(x.add(64 * j).cast());
        acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(*w, xv), *s);
    }
    acc
}

/// A Q4_K or Q5_K super-block as [`q45_k`] unpacks it.
trait Q45K: Block {
    /// `d`, `dmin` and the packed 6-bit scales and mins.
    fn header(&self) -> ([u8; 2], [u8; 2], &[u8; 12]);
    /// The 256 unsigned levels, values `64p .. 64p + 64` in vector `p`.
    unsafe fn levels(&self) -> [__m512i; 4];
}

/// The 4-bit levels of `qs` (a Q4_K or Q5_K super-block), values `64p .. 64p + 64` in
/// vector `p`: sub-blocks 2p (low nibbles) and 2p+1 (high nibbles) side by side.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn nibble_levels(qs: &[u8; 128]) -> [__m512i; 4] {
    let m4 = _mm512_set1_epi8(0x0F);
    let a = _mm512_loadu_si512(qs.as_ptr().cast());
    let b = _mm512_loadu_si512(qs.as_ptr().add(64).cast());
    let (al, ah) = (
        _mm512_and_si512(a, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(a), m4),
    );
    let (bl, bh) = (
        _mm512_and_si512(b, m4),
        _mm512_and_si512(_mm512_srli_epi16::<4>(b), m4),
    );
    [
        _mm512_shuffle_i64x2::<0x44>(al, ah),
        _mm512_shuffle_i64x2::<0xEE>(al, ah),
        _mm512_shuffle_i64x2::<0x44>(bl, bh),
        _mm512_shuffle_i64x2::<0xEE>(bl, bh),
    ]
}

impl Q45K for BlockQ4K {
    fn header(&self) -> ([u8; 2], [u8; 2], &[u8; 12]) {
        (self.d, self.dmin, &self.scales)
    }
    #[inline(always)]
    unsafe fn levels(&self) -> [__m512i; 4] {
        nibble_levels(&self.qs)
    }
}

impl Q45K for BlockQ5K {
    fn header(&self) -> ([u8; 2], [u8; 2], &[u8; 12]) {
        (self.d, self.dmin, &self.scales)
    }
    #[inline(always)]
    unsafe fn levels(&self) -> [__m512i; 4] {
        let w = nibble_levels(&self.qs);
        // Sub-block s takes bit s of qh[0..32] as its fifth bit (+16).
        let qh = _mm256_loadu_si256(self.qh.as_ptr().cast());
        let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
        let sixteen = _mm512_set1_epi8(16);
        let mut out = w;
        for (p, v) in out.iter_mut().enumerate() {
            let bits = _mm512_inserti64x4::<1>(
                _mm512_set1_epi8((1u8 << (2 * p)) as i8),
                _mm256_set1_epi8((2u8 << (2 * p)) as i8),
            );
            let k = _mm512_test_epi8_mask(qh, bits);
            *v = _mm512_mask_add_epi8(*v, k, *v, sixteen);
        }
        out
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q45_k<const T: usize, B: Q45K>(row: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    let idx = load_indices(&PAIR_INDICES);
    let dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let mut facc = [_mm512_setzero_ps(); T];
    let mut macc = [_mm256_setzero_ps(); T];
    for (sb, blk) in view::<B>(row).iter().enumerate() {
        prefetch_ahead((blk as *const B).cast());
        let (d, dmin, scales) = blk.header();
        let (d, dmin) = (f16(d.as_ptr()), f16(dmin.as_ptr()));
        let (sc, mn) = q4_k_scales(scales);
        let sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let s = idx.map(|i| _mm512_permutexvar_epi16(i, sc16));
        let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_cvtsi64_si128(mn as i64), dup));
        let w = blk.levels();
        for t in 0..T {
            let a = &acts[t];
            let acc = scaled_dot(&w, &s, a.qs.as_ptr().add(sb * QK_K));
            let dx = a.d[sb];
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(d * dx), facc[t]);
            let bs = _mm256_loadu_si256(a.sums16.as_ptr().add(sb * 16).cast());
            let mm = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs));
            macc[t] = _mm256_fmadd_ps(mm, _mm256_set1_ps(dmin * dx), macc[t]);
        }
    }
    for t in 0..T {
        out[t] = _mm512_reduce_add_ps(facc[t]) - hsum256(macc[t]);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k<const T: usize>(row: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    let (m4, m2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(3));
    let idx = load_indices(&QUAD_INDICES);
    let mut facc = [_mm512_setzero_ps(); T];
    for (sb, blk) in view::<BlockQ6K>(row).iter().enumerate() {
        let p: *const u8 = (blk as *const BlockQ6K).cast();
        // One token (the Q6_K GEMV, which runs on these rows) streams the rows faster
        // without: 1.78 against 1.97 ms at 4096 x 14336 (one thread, s29).
        if T > 1 {
            prefetch_ahead(p);
            let scales_at = std::mem::offset_of!(BlockQ6K, scales);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_DISTANCE + scales_at).cast());
        }
        let d = f16(blk.d.as_ptr());
        let sc16y = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.scales.as_ptr().cast()));
        let sc16 = _mm512_castsi256_si512(sc16y);
        let s = idx.map(|i| _mm512_permutexvar_epi16(i, sc16));
        let mut w = [_mm512_setzero_si512(); 4];
        for n in 0..2 {
            let l = _mm512_loadu_si512(blk.ql.as_ptr().add(64 * n).cast());
            let h = _mm256_loadu_si256(blk.qh.as_ptr().add(32 * n).cast());
            let hz = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h), _mm256_srli_epi16::<2>(h));
            let high = |v: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(v, m2));
            w[2 * n] = _mm512_or_si512(_mm512_and_si512(l, m4), high(hz));
            w[2 * n + 1] = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(l), m4),
                high(_mm512_srli_epi16::<4>(hz)),
            );
        }
        for t in 0..T {
            let a = &acts[t];
            let mut acc = scaled_dot(&w, &s, a.qs.as_ptr().add(sb * QK_K));
            // The levels are stored +32: take 32 * scale * sum off each 16-value group.
            let bs = _mm256_loadu_si256(a.sums16.as_ptr().add(sb * 16).cast());
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16y, bs));
            acc = _mm512_sub_epi32(acc, _mm512_inserti64x4::<0>(_mm512_setzero_si512(), corr));
            let scale = _mm512_set1_ps(d * a.d[sb]);
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, facc[t]);
        }
    }
    for t in 0..T {
        out[t] = _mm512_reduce_add_ps(facc[t]);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn iq4_xs<const T: usize>(row: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
    let m4 = _mm512_set1_epi8(0x0F);
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
    let idx = load_indices(&PAIR_INDICES);
    // 64-bit lanes of (low nibbles, high nibbles) that put group g's 16 low-nibble values
    // before its 16 high-nibble ones: groups 0, 1 of the 64 bytes, then groups 2, 3.
    let perm = [
        _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0),
        _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4),
    ];
    let mut facc = [_mm512_setzero_ps(); T];
    for (sb, blk) in view::<BlockIq4Xs>(row).iter().enumerate() {
        prefetch_ahead((blk as *const BlockIq4Xs).cast());
        let d = f16(blk.d.as_ptr());
        let sc: [i16; 8] = std::array::from_fn(|g| iq4_xs_scale(blk, g) as i16);
        let sc16 = _mm512_castsi128_si512(_mm_loadu_si128(sc.as_ptr().cast()));
        let s = idx.map(|i| _mm512_permutexvar_epi16(i, sc16));
        // Signed table values: |w| for vpmaddubsw, the sign moved onto the activations
        // (|w| <= 127, so a pair of products fits in i16).
        let mut w = [_mm512_setzero_si512(); 4];
        for h in 0..2 {
            let q = _mm512_loadu_si512(blk.qs.as_ptr().add(64 * h).cast());
            let (lo, hi) = (
                _mm512_and_si512(q, m4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4),
            );
            for (i, p) in perm.iter().enumerate() {
                let codes = _mm512_permutex2var_epi64(lo, *p, hi);
                w[2 * h + i] = _mm512_shuffle_epi8(table, codes);
            }
        }
        let neg = w.map(|v| _mm512_movepi8_mask(v));
        let abs = w.map(|v| _mm512_abs_epi8(v));
        for t in 0..T {
            let a = &acts[t];
            let x = a.qs.as_ptr().add(sb * QK_K);
            let mut acc = _mm512_setzero_si512();
            for j in 0..4 {
                let xv = _mm512_loadu_si512(x.add(64 * j).cast());
                let xs = _mm512_mask_sub_epi8(xv, neg[j], _mm512_setzero_si512(), xv);
                acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(abs[j], xs), s[j]);
            }
            let scale = _mm512_set1_ps(d * a.d[sb]);
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, facc[t]);
        }
    }
    for t in 0..T {
        out[t] = _mm512_reduce_add_ps(facc[t]);
    }
}

/// The row as blocks of `B` (the caller checked the row length).
fn view<B: Block>(row: &[u8]) -> &[B] {
    blocks(row).expect("rows are whole blocks")
}

/// Blocks `2s` and `2s + 1` of `row`, unchecked.
///
/// # Safety
/// `row` holds at least `2s + 2` blocks of `B` (the callers' loops stay inside the row).
#[inline(always)]
unsafe fn pair<B: Block>(row: &[u8], s: usize) -> [&B; 2] {
    let p = row.as_ptr().cast::<B>().add(2 * s);
    // SAFETY: in bounds (contract above); `B` has alignment 1 and accepts any bytes.
    [&*p, &*p.add(1)]
}

/// A 32-value-block weight type as 64 unsigned bytes at a time (levels plus the type's
/// [`WeightType::lane_bias`], which the activations' lane offsets take off again).
trait Unpack {
    /// Bytes of weights per 64 values.
    const STEP_BYTES: usize;
    /// Values `64 * s .. 64 * s + 64` as unsigned levels, and the scales of their two
    /// 32-value halves.
    unsafe fn unpack(row: &[u8], absmax: &[f32], s: usize) -> (__m512i, f32, f32);
}

struct Q4_0;
struct Q8_0;
struct Nf4;

impl Unpack for Q4_0 {
    const STEP_BYTES: usize = 2 * size_of::<BlockQ4_0>();
    #[inline(always)]
    unsafe fn unpack(row: &[u8], _: &[f32], s: usize) -> (__m512i, f32, f32) {
        let [b0, b1] = pair::<BlockQ4_0>(row, s);
        let v = _mm256_set_m128i(
            _mm_loadu_si128(b1.qs.as_ptr().cast()),
            _mm_loadu_si128(b0.qs.as_ptr().cast()),
        );
        let v = _mm512_castsi256_si512(v);
        // [block 0, block 0, block 1, block 1], then low nibbles in lanes 0 and 2, high in 1 and 3.
        let z = _mm512_shuffle_i64x2::<0x50>(v, v);
        let four = 0x4_0004_0004_0004;
        let shift = _mm512_set_epi64(four, four, 0, 0, four, four, 0, 0);
        let w = _mm512_and_si512(_mm512_srlv_epi16(z, shift), _mm512_set1_epi8(0x0F));
        (w, f16(b0.d.as_ptr()), f16(b1.d.as_ptr()))
    }
}

impl Unpack for Q8_0 {
    const STEP_BYTES: usize = 2 * size_of::<BlockQ8_0>();
    #[inline(always)]
    unsafe fn unpack(row: &[u8], _: &[f32], s: usize) -> (__m512i, f32, f32) {
        let [b0, b1] = pair::<BlockQ8_0>(row, s);
        let lo = _mm512_castsi256_si512(_mm256_loadu_si256(b0.qs.as_ptr().cast()));
        let v = _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(b1.qs.as_ptr().cast()));
        (
            _mm512_xor_si512(v, _mm512_set1_epi8(-128)),
            f16(b0.d.as_ptr()),
            f16(b1.d.as_ptr()),
        )
    }
}

impl Unpack for Nf4 {
    const STEP_BYTES: usize = 32;
    #[inline(always)]
    unsafe fn unpack(row: &[u8], absmax: &[f32], s: usize) -> (__m512i, f32, f32) {
        let table = NF4_I8.map(|v| (v as u8) ^ 0x80);
        let table = _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast()));
        let u = _mm512_cvtepu8_epi16(_mm256_loadu_si256(row.as_ptr().add(32 * s).cast()));
        // High nibble (the first value of a pair) to the low byte of each 16-bit lane.
        let low = _mm512_slli_epi16::<8>(_mm512_and_si512(u, _mm512_set1_epi16(0x0F)));
        let codes = _mm512_or_si512(_mm512_srli_epi16::<4>(u), low);
        let w = _mm512_shuffle_epi8(table, codes);
        let scale = |v: usize| absmax[v / NF4_BLOCK] * (1.0 / 127.0);
        (w, scale(64 * s), scale(64 * s + 32))
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn blocks32<const T: usize, U: Unpack>(
    row: &[u8],
    absmax: &[f32],
    k: usize,
    acts: &[ActRow<'_>],
    out: &mut [f32],
) {
    let mut facc = [_mm512_setzero_ps(); T];
    for s in 0..k / 64 {
        prefetch_ahead(row.as_ptr().wrapping_add(U::STEP_BYTES * s));
        let (w, w0, w1) = U::unpack(row, absmax, s);
        let wscale = _mm512_insertf32x8::<1>(_mm512_set1_ps(w0), _mm256_set1_ps(w1));
        for t in 0..T {
            let a = &acts[t];
            let x = _mm512_loadu_si512(a.qs.as_ptr().add(64 * s).cast());
            // Starting from -bias * (lane sums) leaves the dot of the true levels.
            let offset = _mm512_loadu_si512(a.lane_offset.as_ptr().add(16 * s).cast());
            let dot = _mm512_dpbusd_epi32(offset, w, x);
            let dx = _mm512_loadu_ps(a.lane_d.as_ptr().add(16 * s));
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(wscale, dx), facc[t]);
        }
    }
    for t in 0..T {
        out[t] = _mm512_reduce_add_ps(facc[t]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::ggml::get_scale_min_k4;

    #[test]
    fn q4_k_scales_match_get_scale_min_k4() {
        let mut s = [0u8; 12];
        for seed in 0..50u32 {
            for (i, b) in s.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 3) >> 5) as u8;
            }
            let (sc, mn) = q4_k_scales(&s);
            for j in 0..8 {
                let (a, b) = get_scale_min_k4(j, &s);
                assert_eq!(((sc >> (8 * j)) as u8, (mn >> (8 * j)) as u8), (a, b));
            }
        }
    }
}

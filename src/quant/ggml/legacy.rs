//! The 32-value "legacy" block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

use super::common::{
    abs_max, c_round_i32, c_trunc_i32, imatrix_weights, make_qx_quants_multi, qkx_search_multi,
    read_fp16, sum_sq, write_fp16, Qkx, QkxParams, QkxResult,
};
use super::{simd, Codec};
use crate::formats::blocks::{
    whole_blocks, whole_blocks_mut, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK,
};
use crate::formats::ggml_type::GgmlType;
use std::mem::size_of;

/// Q4_0: `{ f16 d; u8 qs[16] }`, value = `d * (q - 8)`.
pub const Q4_0: Codec = Codec {
    ty: GgmlType::Q4_0,
    quantize_row: quantize_row_q4_0,
    dequantize: dequantize_q4_0,
};

/// Q4_1: `{ f16 d; f16 m; u8 qs[16] }`, value = `d * q + m`.
pub const Q4_1: Codec = Codec {
    ty: GgmlType::Q4_1,
    quantize_row: quantize_row_q4_1,
    dequantize: dequantize_q4_1,
};

/// Q5_0: `{ f16 d; u8 qh[4]; u8 qs[16] }`, value = `d * (q - 16)`.
pub const Q5_0: Codec = Codec {
    ty: GgmlType::Q5_0,
    quantize_row: quantize_row_q5_0,
    dequantize: dequantize_q5_0,
};

/// Q5_1: `{ f16 d; f16 m; u8 qh[4]; u8 qs[16] }`, value = `d * q + m`.
pub const Q5_1: Codec = Codec {
    ty: GgmlType::Q5_1,
    quantize_row: quantize_row_q5_1,
    dequantize: dequantize_q5_1,
};

/// Q8_0: `{ f16 d; i8 qs[32] }`, value = `d * q`. ggml ignores the imatrix.
pub const Q8_0: Codec = Codec {
    ty: GgmlType::Q8_0,
    quantize_row: quantize_row_q8_0,
    dequantize: dequantize_q8_0,
};

/// Pack 32 levels into 16 nibble bytes: `qs[j] = L[j] | L[j + 16] << 4` (as ggml, unmasked:
/// levels above 15 spill into the high nibble the same way).
#[inline(always)]
fn pack_nibbles(l: &[u8; QK], qs: &mut [u8]) {
    let (lo, hi) = halves(l);
    // A byte shifted by 4 as a u128 loses its top nibble to the next byte's low one;
    // ggml's `(uint8_t)(L << 4)` drops it: mask it first.
    let packed = lo | ((hi & u128::from_le_bytes([0x0f; 16])) << 4);
    qs[..16].copy_from_slice(&packed.to_le_bytes());
}

/// The first and last 16 levels as little-endian u128s.
#[inline(always)]
fn halves(l: &[u8; QK]) -> (u128, u128) {
    (
        u128::from_le_bytes(l[..16].try_into().unwrap()),
        u128::from_le_bytes(l[16..].try_into().unwrap()),
    )
}

/// Pack 32 five-bit levels: low nibbles as [`pack_nibbles`] (masked), bit 4 into `qh`
/// (LE u32, bit `j` from level `j`).
#[inline(always)]
fn pack_q5(l: &[u8; QK], qh: &mut [u8], qs: &mut [u8]) {
    let (lo, hi) = halves(l);
    let nib = u128::from_le_bytes([0x0f; 16]);
    qs[..16].copy_from_slice(&((lo & nib) | ((hi & nib) << 4)).to_le_bytes());
    let mut h = 0u32;
    for (k, bytes) in l.chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(bytes.try_into().unwrap());
        h |= (gather_byte_bits((v >> 4) & BYTE_LSBS) as u32) << (8 * k);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

/// Bit 0 of every byte of a u64.
const BYTE_LSBS: u64 = 0x0101_0101_0101_0101;

/// Bit 0 of byte `i` of `v` (its other bits zero) as bit `i` of the result: the multiply
/// moves each into the top byte without carries.
#[inline(always)]
fn gather_byte_bits(v: u64) -> u8 {
    (v.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// The inverse of [`gather_byte_bits`]: bit `i` of `b` as bit 0 of byte `i`.
#[inline(always)]
fn spread_byte_bits(b: u8) -> u64 {
    let picked = (u64::from(b) * BYTE_LSBS) & 0x8040_2010_0804_0201;
    // A byte of `picked` is 0 or one bit: adding 0x7f sets its top bit iff it is not 0.
    ((picked + 0x7f7f_7f7f_7f7f_7f7f) >> 7) & BYTE_LSBS
}

/// The 32 five-bit levels of a Q5 block (`qh`: bit 4 of level `j` at bit `j`).
#[inline(always)]
fn q5_levels(qh: &[u8; 4], qs: &[u8; 16]) -> [u8; QK] {
    let mut l = [0u8; QK];
    for j in 0..16 {
        l[j] = qs[j] & 0x0f;
        l[j + 16] = qs[j] >> 4;
    }
    for (k, lk) in l.chunks_exact_mut(8).enumerate() {
        let hi = spread_byte_bits(qh[k]) << 4;
        let v = u64::from_le_bytes((&*lk).try_into().unwrap()) | hi;
        lk.copy_from_slice(&v.to_le_bytes());
    }
    l
}

/// `sigma2` of the legacy imatrix paths: mean square over the whole row.
#[inline(always)]
fn row_sigma2(src: &[f32]) -> f32 {
    sum_sq(src) / src.len() as f32
}

/// Symmetric reference quantization of one block (Q4_0 / Q5_0): `d = max / -half`.
#[inline(always)]
fn ref_symmetric(x: &[f32], half: i32, l: &mut [u8; QK]) -> f32 {
    let (_, max) = abs_max(x);
    let d = max / -(half as f32);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let bias = half as f32 + 0.5;
    let top = 2 * half - 1;
    for (lo, &v) in l.iter_mut().zip(x) {
        *lo = (c_trunc_i32(v * id + bias) as i8 as i32).min(top) as u8;
    }
    d
}

/// Asymmetric reference quantization of one block (Q4_1 / Q5_1); returns `(d, min)`.
#[inline(always)]
fn ref_asymmetric(x: &[f32], nmax: i32, clamp: bool, l: &mut [u8; QK]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / nmax as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (lo, &v) in l.iter_mut().zip(x) {
        let t = c_trunc_i32((v - min) * id + 0.5);
        // Q4_1: MIN(15, (int8_t)t); Q5_1: (uint8_t)t.
        *lo = if clamp {
            (t as i8 as i32).min(nmax) as u8
        } else {
            t as u8
        };
    }
    (d, min)
}

/// What distinguishes Q4_0, Q4_1, Q5_0 and Q5_1.
struct Kind {
    /// Bytes per block.
    bytes: usize,
    /// Five-bit levels (`qh` + `qs`) instead of nibbles.
    five_bit: bool,
    /// Has a min (`_1` types) instead of being symmetric (`_0` types).
    with_min: bool,
    /// Largest level (`15` or `31`).
    nmax: i32,
}

/// Blocks handled together (the SIMD kernels run one block per lane).
const BATCH: usize = 16;

fn quantize_row(k: &Kind, src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let sigma2 = imatrix.map(|_| row_sigma2(src));
    let half = (k.nmax + 1) / 2;
    let mut l = [0u8; QK * BATCH];
    let mut li = [0i8; QK * BATCH];
    let mut w = [0.0f32; QK * BATCH];
    let mut d = [0.0f32; BATCH];
    let mut m = [0.0f32; BATCH];
    let blocks = src.chunks(QK * BATCH).zip(dst.chunks_mut(k.bytes * BATCH));
    for (c, (x, y)) in blocks.enumerate() {
        let nb = x.len() / QK;
        let (l, d, m) = (&mut l[..x.len()], &mut d[..nb], &mut m[..nb]);
        match imatrix {
            None => {
                let scalar = |xb: &[f32], lb: &mut [u8; QK]| {
                    if k.with_min {
                        ref_asymmetric(xb, k.nmax, k.nmax == 15, lb)
                    } else {
                        (ref_symmetric(xb, half, lb), 0.0)
                    }
                };
                let lanes = simd::LegacyRef {
                    nmax: k.nmax,
                    with_min: k.with_min,
                };
                if !simd::legacy_ref(lanes, x, l, d, m, &scalar) {
                    for (b, xb) in x.chunks_exact(QK).enumerate() {
                        let lb: &mut [u8; QK] = (&mut l[b * QK..(b + 1) * QK]).try_into().unwrap();
                        (d[b], m[b]) = scalar(xb, lb);
                    }
                }
            }
            Some(qw) => {
                let w = &mut w[..x.len()];
                let off = c * QK * BATCH;
                imatrix_weights(&qw[off..off + x.len()], x, sigma2.unwrap_or(0.0), w);
                if k.with_min {
                    // make_qkx3_quants(32, nmax, ..., -0.9, 0.05, 36, false); m = -the_min.
                    let p = QkxParams {
                        nmax: k.nmax,
                        rmin: -0.9,
                        rdelta: 0.05,
                        nstep: 36,
                        use_mad: false,
                        variant: Qkx::V3,
                    };
                    let mut res = [QkxResult {
                        scale: 0.0,
                        the_min: 0.0,
                        levels: None,
                    }; BATCH];
                    let res = &mut res[..nb];
                    qkx_search_multi(&p, QK, x, w, res);
                    for (b, r) in res.iter().enumerate() {
                        let rg = b * QK..(b + 1) * QK;
                        r.write_levels(&p, &x[rg.clone()], &mut l[rg]);
                        (d[b], m[b]) = (r.scale, -r.the_min);
                    }
                } else {
                    // make_qx_quants(32, nmax, x, L, 1, weights).
                    let li = &mut li[..x.len()];
                    make_qx_quants_multi(half, QK, x, w, li, d);
                    for (lo, &v) in l.iter_mut().zip(li.iter()) {
                        *lo = v as u8;
                    }
                }
            }
        }
        for (b, yb) in y.chunks_exact_mut(k.bytes).enumerate() {
            let lb: &[u8; QK] = l[b * QK..(b + 1) * QK].try_into().unwrap();
            write_fp16(yb, 0, d[b]);
            let mut o = 2;
            if k.with_min {
                write_fp16(yb, 2, m[b]);
                o = 4;
            }
            if k.five_bit {
                let (qh, qs) = yb[o..].split_at_mut(4);
                pack_q5(lb, qh, qs);
            } else {
                pack_nibbles(lb, &mut yb[o..]);
            }
        }
    }
}

fn quantize_row_q4_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let k = Kind {
        bytes: size_of::<BlockQ4_0>(),
        five_bit: false,
        with_min: false,
        nmax: 15,
    };
    quantize_row(&k, src, dst, imatrix)
}

fn quantize_row_q4_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let k = Kind {
        bytes: size_of::<BlockQ4_1>(),
        five_bit: false,
        with_min: true,
        nmax: 15,
    };
    quantize_row(&k, src, dst, imatrix)
}

fn quantize_row_q5_0(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let k = Kind {
        bytes: size_of::<BlockQ5_0>(),
        five_bit: true,
        with_min: false,
        nmax: 31,
    };
    quantize_row(&k, src, dst, imatrix)
}

fn quantize_row_q5_1(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let k = Kind {
        bytes: size_of::<BlockQ5_1>(),
        five_bit: true,
        with_min: true,
        nmax: 31,
    };
    quantize_row(&k, src, dst, imatrix)
}

fn quantize_row_q8_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    if !simd::q8_0_row(src, dst, quantize_block_q8_0) {
        for (x, y) in src
            .chunks_exact(QK)
            .zip(dst.chunks_exact_mut(size_of::<BlockQ8_0>()))
        {
            quantize_block_q8_0(x, y);
        }
    }
}

/// `quantize_row_q8_0_ref` of one block: 32 values into its 34 bytes.
fn quantize_block_q8_0(x: &[f32], y: &mut [u8]) {
    let y = &mut whole_blocks_mut::<BlockQ8_0>(y)[0];
    // amax = MAX(amax, fabsf(v)) in order. A NaN resets that chain, so only
    // NaN-free blocks may use the order-free maximum.
    let amax = if x.iter().any(|v| v.is_nan()) {
        x.iter()
            .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() })
    } else {
        abs_max(x).0
    };
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_fp16(&mut y.d, 0, d);
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = c_round_i32(v * id) as i8;
    }
}

fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    if dequantize_simd(Layout::Q4_0, src, dst) {
        return;
    }
    for (b, y) in whole_blocks::<BlockQ4_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = read_fp16(&b.d, 0);
        for j in 0..QK / 2 {
            y[j] = ((b.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    if dequantize_simd(Layout::Q4_1, src, dst) {
        return;
    }
    for (b, y) in whole_blocks::<BlockQ4_1>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let (d, m) = (read_fp16(&b.d, 0), read_fp16(&b.m, 0));
        for j in 0..QK / 2 {
            y[j] = (b.qs[j] & 0x0f) as f32 * d + m;
            y[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    if dequantize_simd(Layout::Q5_0, src, dst) {
        return;
    }
    for (b, y) in whole_blocks::<BlockQ5_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = read_fp16(&b.d, 0);
        for (o, &q) in y.iter_mut().zip(&q5_levels(&b.qh, &b.qs)) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
}

fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    if dequantize_simd(Layout::Q5_1, src, dst) {
        return;
    }
    for (b, y) in whole_blocks::<BlockQ5_1>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let (d, m) = (read_fp16(&b.d, 0), read_fp16(&b.m, 0));
        for (o, &q) in y.iter_mut().zip(&q5_levels(&b.qh, &b.qs)) {
            *o = f32::from(q) * d + m;
        }
    }
}

/// Where a Q4_0/Q4_1/Q5_0/Q5_1 block keeps its parts, for the SIMD decoders.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Bytes per block.
    bytes: usize,
    /// A min after the scale (`_1` types).
    with_min: bool,
    /// Four `qh` bytes before `qs` (Q5 types).
    five_bit: bool,
    /// Subtracted from each level (`_0` types: 8 or 16).
    offset: i32,
}

impl Layout {
    const Q4_0: Layout = Layout {
        bytes: size_of::<BlockQ4_0>(),
        with_min: false,
        five_bit: false,
        offset: 8,
    };
    const Q4_1: Layout = Layout {
        bytes: size_of::<BlockQ4_1>(),
        with_min: true,
        five_bit: false,
        offset: 0,
    };
    const Q5_0: Layout = Layout {
        bytes: size_of::<BlockQ5_0>(),
        with_min: false,
        five_bit: true,
        offset: 16,
    };
    const Q5_1: Layout = Layout {
        bytes: size_of::<BlockQ5_1>(),
        with_min: true,
        five_bit: true,
        offset: 0,
    };
}

/// The SIMD decoder of `k`'s blocks at the AVX2 and AVX-512 levels (the scalar code's
/// results bit for bit, but for which NaN a value gets when the scale and the min both
/// are NaNs: the same conversions, one multiply and one add per value, no fused
/// multiply-add); `false` at the scalar level (nothing written).
fn dequantize_simd(k: Layout, src: &[u8], dst: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    match crate::cpu::level() {
        // SAFETY: the AVX-512 level is only reported on CPUs with AVX-512F, AVX2 and F16C.
        crate::cpu::Level::Avx512 => unsafe { x86::dequantize_avx512(k, src, dst) },
        // SAFETY: the AVX2 level is only reported on CPUs with AVX2 and F16C.
        crate::cpu::Level::Avx2 => unsafe { x86::dequantize_avx2(k, src, dst) },
        crate::cpu::Level::Scalar => return false,
    }
    #[cfg(not(target_arch = "x86_64"))]
    return false;
    #[cfg(target_arch = "x86_64")]
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Layout, QK};
    use std::arch::x86_64::*;

    /// A block's scale and min (0 without one), f16 to f32 as `read_fp16` (exact).
    #[inline(always)]
    unsafe fn scale_min(k: Layout, b: &[u8]) -> (f32, f32) {
        let d = u16::from_le_bytes([b[0], b[1]]);
        let m = if k.with_min {
            u16::from_le_bytes([b[2], b[3]])
        } else {
            0
        };
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(d) | (i32::from(m) << 16)));
        let m = if k.with_min {
            _mm_cvtss_f32(_mm_shuffle_ps::<1>(v, v))
        } else {
            0.0
        };
        (_mm_cvtss_f32(v), m)
    }

    /// `qh` (0 for Q4 types) and the 16 `qs` bytes of a block.
    #[inline(always)]
    unsafe fn parts(k: Layout, b: &[u8]) -> (u32, __m128i) {
        let mut o = if k.with_min { 4 } else { 2 };
        let mut h = 0;
        if k.five_bit {
            h = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            o += 4;
        }
        let qs = &b[o..o + 16];
        (h, _mm_loadu_si128(qs.as_ptr().cast()))
    }

    /// AVX-512: a block is two vectors of 16 values (levels `j` and `j + 16`).
    #[target_feature(enable = "avx512f,avx2,f16c")]
    pub(super) unsafe fn dequantize_avx512(k: Layout, src: &[u8], dst: &mut [f32]) {
        let idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let (nib, one, off) = (
            _mm512_set1_epi32(0x0f),
            _mm512_set1_epi32(1),
            _mm512_set1_epi32(k.offset),
        );
        for (b, y) in src.chunks_exact(k.bytes).zip(dst.chunks_exact_mut(QK)) {
            let (d, m) = scale_min(k, b);
            let (h, qs) = parts(k, b);
            let q = _mm512_cvtepu8_epi32(qs);
            let mut lo = _mm512_and_si512(q, nib);
            let mut hi = _mm512_srli_epi32::<4>(q);
            if k.five_bit {
                let hv = _mm512_set1_epi32(h as i32);
                let bit = |s| _mm512_slli_epi32::<4>(_mm512_and_si512(s, one));
                lo = _mm512_or_si512(lo, bit(_mm512_srlv_epi32(hv, idx)));
                hi = _mm512_or_si512(hi, bit(_mm512_srlv_epi32(_mm512_srli_epi32::<16>(hv), idx)));
            }
            let (vd, vm) = (_mm512_set1_ps(d), _mm512_set1_ps(m));
            for (half, l) in [lo, hi].into_iter().enumerate() {
                let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(l, off));
                let mut v = _mm512_mul_ps(f, vd);
                if k.with_min {
                    v = _mm512_add_ps(v, vm);
                }
                _mm512_storeu_ps(y.as_mut_ptr().add(16 * half), v);
            }
        }
    }

    /// AVX2: a block is four vectors of 8 values.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn dequantize_avx2(k: Layout, src: &[u8], dst: &mut [f32]) {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let (nib, one, off) = (
            _mm256_set1_epi32(0x0f),
            _mm256_set1_epi32(1),
            _mm256_set1_epi32(k.offset),
        );
        for (b, y) in src.chunks_exact(k.bytes).zip(dst.chunks_exact_mut(QK)) {
            let (d, m) = scale_min(k, b);
            let (h, qs) = parts(k, b);
            let (vd, vm) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
            // Quarter `c`: values 8c..8c + 8, from qs[8(c % 2)..] (low nibbles for c < 2).
            for c in 0..4 {
                let bytes = if c % 2 == 0 {
                    qs
                } else {
                    _mm_srli_si128::<8>(qs)
                };
                let q = _mm256_cvtepu8_epi32(bytes);
                let mut l = if c < 2 {
                    _mm256_and_si256(q, nib)
                } else {
                    _mm256_srli_epi32::<4>(q)
                };
                if k.five_bit {
                    let hv = _mm256_set1_epi32((h >> (8 * c)) as i32);
                    let bit = _mm256_and_si256(_mm256_srlv_epi32(hv, idx), one);
                    l = _mm256_or_si256(l, _mm256_slli_epi32::<4>(bit));
                }
                let f = _mm256_cvtepi32_ps(_mm256_sub_epi32(l, off));
                let mut v = _mm256_mul_ps(f, vd);
                if k.with_min {
                    v = _mm256_add_ps(v, vm);
                }
                _mm256_storeu_ps(y.as_mut_ptr().add(8 * c), v);
            }
        }
    }
}

fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ8_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = read_fp16(&b.d, 0);
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::prng::SplitMix64;

    #[test]
    fn q5_bits_pack_and_unpack_as_ggml() {
        let mut r = SplitMix64::new(0x9e37_79b9);
        for _ in 0..200 {
            let mut l = [0u8; QK];
            for v in l.iter_mut() {
                // Any byte: ggml masks levels above 31 the same way.
                *v = (r.next_u64() >> 56) as u8;
            }
            let (mut qh, mut qs) = ([0u8; 4], [0u8; 16]);
            pack_q5(&l, &mut qh, &mut qs);
            // ggml's loop: quantize_row_q5_1_ref.
            let mut h = 0u32;
            for j in 0..16 {
                assert_eq!(qs[j], (l[j] & 0x0f) | ((l[j + 16] & 0x0f) << 4));
                h |= u32::from((l[j] & 0x10) >> 4) << j;
                h |= u32::from((l[j + 16] & 0x10) >> 4) << (j + 16);
            }
            assert_eq!(u32::from_le_bytes(qh), h);
            let mut nib = [0u8; 16];
            pack_nibbles(&l, &mut nib);
            for j in 0..16 {
                assert_eq!(nib[j], l[j] | (l[j + 16] << 4), "nibble byte {j}");
            }
            let back = q5_levels(&qh, &qs);
            for j in 0..QK {
                assert_eq!(back[j], l[j] & 0x1f, "level {j}");
            }
        }
        for b in 0..=255u8 {
            assert_eq!(gather_byte_bits(spread_byte_bits(b)), b);
        }
    }

    /// The SIMD decoders against the scalar ones on random bytes (scales and mins of any
    /// bit pattern, NaNs and infinities included), bit for bit at every level but for the
    /// payload of NaNs.
    #[test]
    fn simd_decoders_equal_scalar_at_every_level() {
        use crate::cpu::{with_level, Level};
        let mut r = SplitMix64::new(0x2545_f491);
        let bytes: Vec<u8> = (0..24 * 4096).map(|_| (r.next_u64() >> 56) as u8).collect();
        for codec in [Q4_0, Q4_1, Q5_0, Q5_1] {
            let bytes_per_block = codec.ty.type_size() as usize;
            for blocks in [4096, 3, 0] {
                let src = &bytes[..blocks * bytes_per_block];
                let n = blocks * QK;
                let mut want = vec![0f32; n];
                with_level(Level::Scalar, || (codec.dequantize)(src, &mut want)).unwrap();
                for level in Level::supported() {
                    let mut got = vec![0f32; n];
                    with_level(level, || (codec.dequantize)(src, &mut got)).unwrap();
                    // NaN payloads may differ: `a * d + m` with NaNs in both `d` and `m`
                    // keeps either one, as the compiler orders the operands.
                    let same = |(i, (a, b)): (usize, (&f32, &f32))| {
                        assert!(
                            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                            "{} at {level}: value {i} is {a:e}, the scalar code gives {b:e}",
                            codec.ty
                        )
                    };
                    got.iter().zip(&want).enumerate().for_each(same);
                }
            }
        }
    }

    /// The SIMD reference encoders (no imatrix) against the scalar path at every level:
    /// random blocks and blocks with ties of opposite sign, zeros, -0.0, tiny and huge
    /// values, NaN and infinities, in rows whose block count is not a multiple of 16.
    #[test]
    fn simd_reference_encoders_equal_scalar_at_every_level() {
        use crate::cpu::{with_level, Level};
        let mut r = SplitMix64::new(0x1234_5678);
        let mut unit = || (r.next_f64() * 2.0 - 1.0) as f32;
        let nb = 37;
        let mut x: Vec<f32> = (0..nb * QK).map(|_| unit()).collect();
        for (b, xb) in x.chunks_exact_mut(QK).enumerate() {
            match b % 12 {
                0 => xb.fill(0.0),
                1 => xb.fill(-0.0),
                2 => {
                    xb[5] = -3.0;
                    xb[20] = 3.0;
                }
                3 => {
                    xb[20] = -3.0;
                    xb[5] = 3.0;
                }
                4 => xb.iter_mut().for_each(|v| *v *= 1e-38),
                5 => xb.iter_mut().for_each(|v| *v *= 1e37),
                6 => xb[9] = f32::NAN,
                7 => xb[31] = f32::INFINITY,
                8 => xb.iter_mut().for_each(|v| *v = v.abs()),
                9 => xb[0] = -f32::MAX,
                _ => {}
            }
        }
        for codec in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
            for n in [nb, 16, 1] {
                let bytes = n * codec.ty.type_size() as usize;
                let src = &x[..n * QK];
                let mut want = vec![0u8; bytes];
                with_level(Level::Scalar, || (codec.quantize_row)(src, &mut want, None)).unwrap();
                for level in Level::supported() {
                    let mut got = vec![0u8; bytes];
                    with_level(level, || (codec.quantize_row)(src, &mut got, None)).unwrap();
                    assert!(got == want, "{} at {level}, {n} blocks", codec.ty);
                }
            }
        }
    }
}

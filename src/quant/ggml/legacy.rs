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

/// Pack 32 levels into 16 nibble bytes: `qs[j] = L[j] | L[j + 16] << 4` (as ggml, unmasked).
#[inline(always)]
fn pack_nibbles(l: &[u8; QK], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

/// Pack 32 five-bit levels: low nibbles as [`pack_nibbles`], bit 4 into `qh` (LE u32).
#[inline(always)]
fn pack_q5(l: &[u8; QK], qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for j in 0..16 {
        let (a, b) = (l[j], l[j + 16]);
        qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
        h |= ((a as u32 & 0x10) >> 4) << j;
        h |= ((b as u32 & 0x10) >> 4) << (j + 16);
    }
    qh.copy_from_slice(&h.to_le_bytes());
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

/// Unpack 5-bit levels of a Q5 block: `(low nibble | high bit << 4)` for `j` and `j + 16`.
#[inline(always)]
fn q5_levels(qh: &[u8], qs: &[u8], j: usize) -> (i32, i32) {
    let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let xh0 = (((h >> j) << 4) & 0x10) as i32;
    let xh1 = ((h >> (j + 12)) & 0x10) as i32;
    ((qs[j] & 0x0f) as i32 | xh0, (qs[j] >> 4) as i32 | xh1)
}

fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
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
    for (b, y) in whole_blocks::<BlockQ5_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = read_fp16(&b.d, 0);
        for j in 0..QK / 2 {
            let (a, c) = q5_levels(&b.qh, &b.qs, j);
            y[j] = (a - 16) as f32 * d;
            y[j + QK / 2] = (c - 16) as f32 * d;
        }
    }
}

fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ5_1>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let (d, m) = (read_fp16(&b.d, 0), read_fp16(&b.m, 0));
        for j in 0..QK / 2 {
            let (a, c) = q5_levels(&b.qh, &b.qs, j);
            y[j] = a as f32 * d + m;
            y[j + QK / 2] = c as f32 * d + m;
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

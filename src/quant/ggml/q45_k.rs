//! Q4_K `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }` and
//! Q5_K `{ f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }` per 256 values.
//!
//! Both use eight 32-value sub-blocks with 6-bit scales and mins and share all of
//! their quantization logic except the number of levels and the bit packing.

use super::common::{
    imatrix_weights, make_qp_quants, nearest_int, qkx_search_multi, read_fp16, sum_sq_groups,
    write_fp16, Qkx, QkxParams, QkxResult, QK_K,
};
use super::Codec;
use crate::formats::blocks::{BlockQ4K, BlockQ5K};
use crate::formats::ggml_type::GgmlType;
use std::mem::{offset_of, size_of};

/// Q4_K codec (ggml type 12).
pub const Q4_K: Codec = Codec {
    ty: GgmlType::Q4_K,
    quantize_row: quantize_row_q4_k,
    dequantize: dequantize_q4_k,
};

/// Q5_K codec (ggml type 13).
pub const Q5_K: Codec = Codec {
    ty: GgmlType::Q5_K,
    quantize_row: quantize_row_q5_k,
    dequantize: dequantize_q5_k,
};

/// The differences between Q4_K and Q5_K.
struct Kind {
    /// Largest level (15 or 31).
    nmax: i32,
    /// Block size in bytes.
    bytes: usize,
    /// `rmin` of the reference scale search.
    ref_rmin: f32,
    /// `nstep` of the reference scale search.
    ref_nstep: i32,
    /// The imatrix path clamps the sub-block scales to 63 (Q5_K does, Q4_K does not).
    impl_clamp: bool,
}

const Q4: Kind = Kind {
    nmax: 15,
    bytes: size_of::<BlockQ4K>(),
    ref_rmin: -1.0,
    ref_nstep: 20,
    impl_clamp: false,
};

const Q5: Kind = Kind {
    nmax: 31,
    bytes: size_of::<BlockQ5K>(),
    ref_rmin: -0.5,
    ref_nstep: 15,
    impl_clamp: true,
};

/// ggml's `get_scale_min_k4`: 6-bit scale and min of sub-block `j`.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Inverse of [`get_scale_min_k4`] for all eight sub-blocks (ggml's packing, bit for bit).
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        let (a, b) = (ls[j] as u32, lm[j] as u32);
        if j < 4 {
            s[j] = a as u8;
            s[j + 4] = b as u8;
        } else {
            s[j + 4] = ((a & 0x0f) | ((b & 0x0f) << 4)) as u8;
            s[j - 4] |= ((a >> 4) << 6) as u8;
            s[j] |= ((b >> 4) << 6) as u8;
        }
    }
    s
}

/// Super-blocks handled together (16 sub-blocks: one per SIMD lane).
const PAIR: usize = 2;

fn quantize_row(k: &Kind, src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let mut w = [0.0f32; QK_K * PAIR];
    let mut res = [QkxResult {
        scale: 0.0,
        the_min: 0.0,
        levels: None,
    }; 8 * PAIR];
    let batches = src.chunks(QK_K * PAIR).zip(dst.chunks_mut(k.bytes * PAIR));
    for (c, (x, y)) in batches.enumerate() {
        let nsb = x.len() / QK_K;
        let w = &mut w[..x.len()];
        let res = &mut res[..8 * nsb];
        let qw = imatrix.map(|q| &q[c * QK_K * PAIR..c * QK_K * PAIR + x.len()]);
        let p = search_params(k, qw.is_some());
        match qw {
            // quantize_row_qN_K_ref: w = sqrt(mean(x^2)) + |x| per sub-block.
            None => {
                let mut ss = [0.0f32; 8 * PAIR];
                sum_sq_groups(x, 32, &mut ss[..8 * nsb]);
                for ((xs, ws), &s2) in x.chunks_exact(32).zip(w.chunks_exact_mut(32)).zip(&ss) {
                    let av_x = (s2 / 32.0).sqrt();
                    for (wi, &v) in ws.iter_mut().zip(xs) {
                        *wi = av_x + v.abs();
                    }
                }
            }
            // quantize_row_qN_K_impl: w = qw * sqrt(sigma2 + x^2) per super-block.
            Some(qw) => {
                let mut ss = [0.0f32; PAIR];
                sum_sq_groups(x, QK_K, &mut ss[..nsb]);
                let blocks = x.chunks_exact(QK_K).zip(w.chunks_exact_mut(QK_K));
                for (((xb, wb), qb), &s2) in blocks.zip(qw.chunks_exact(QK_K)).zip(&ss) {
                    let sigma2 = 2.0 * s2 / QK_K as f32;
                    imatrix_weights(qb, xb, sigma2, wb);
                }
            }
        }
        qkx_search_multi(&p, 32, x, w, res);
        for s in 0..nsb {
            let xb: &[f32; QK_K] = x[s * QK_K..(s + 1) * QK_K].try_into().unwrap();
            let rs: &[QkxResult; 8] = res[8 * s..8 * s + 8].try_into().unwrap();
            let (sc8, mn8) = (rs.map(|r| r.scale), rs.map(|r| r.the_min));
            let (d, dmin, sc) = match qw {
                None => scales_ref(&sc8, &mn8),
                Some(_) => scales_impl(k, &w[s * QK_K..(s + 1) * QK_K], &sc8, &mn8),
            };
            let yb = &mut y[s * k.bytes..(s + 1) * k.bytes];
            let d = write_fp16(yb, 0, d);
            let dmin = write_fp16(yb, 2, dmin);
            yb[4..16].copy_from_slice(&sc);
            let mut l = [0u8; QK_K];
            requantize(&p, xb, d, dmin, &sc, rs, &mut l);
            pack(k, &l, yb);
        }
    }
}

/// Sub-block search parameters: `make_qkx2_quants` for the reference path,
/// `make_qkx3_quants(..., -0.9, 0.05, 36, false)` for the imatrix path.
fn search_params(k: &Kind, imatrix: bool) -> QkxParams {
    if imatrix {
        QkxParams {
            nmax: k.nmax,
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
            variant: Qkx::V3,
        }
    } else {
        QkxParams {
            nmax: k.nmax,
            rmin: k.ref_rmin,
            rdelta: 0.1,
            nstep: k.ref_nstep,
            use_mad: false,
            variant: Qkx::V2,
        }
    }
}

/// Pack the 256 levels of one super-block (after `d`, `dmin` and the scales).
fn pack(k: &Kind, l: &[u8; QK_K], y: &mut [u8]) {
    if k.nmax == 15 {
        let qs_at = offset_of!(BlockQ4K, qs);
        for (n, q) in y[qs_at..k.bytes].chunks_exact_mut(32).enumerate() {
            for j in 0..32 {
                q[j] = l[64 * n + j] | (l[64 * n + j + 32] << 4);
            }
        }
    } else {
        // Bit 4 of value 64n + j goes to bit 2n of qh[j], of 64n + 32 + j to bit 2n + 1.
        let (qh, ql) = y[offset_of!(BlockQ5K, qh)..k.bytes].split_at_mut(QK_K / 8);
        qh.fill(0);
        for (n, q) in ql.chunks_exact_mut(32).enumerate() {
            for j in 0..32 {
                let (l1, l2) = (l[64 * n + j], l[64 * n + j + 32]);
                let (h1, h2) = ((l1 > 15) as u8, (l2 > 15) as u8);
                qh[j] |= (h1 << (2 * n)) | (h2 << (2 * n + 1));
                q[j] = l1.wrapping_sub(16 * h1) | (l2.wrapping_sub(16 * h2) << 4);
            }
        }
    }
}

/// Reference path: sub-block scales and mins quantized against their maxima.
/// Returns `(d, dmin, packed scales)`.
fn scales_ref(scales: &[f32], mins: &[f32]) -> (f32, f32, [u8; 12]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (&s, &m) in scales.iter().zip(mins) {
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (
        max_scale / 63.0,
        max_min / 63.0,
        pack_scale_min_k4(&ls, &lm),
    )
}

/// imatrix path: `make_qp_quants` for the scales and mins, weighted by the sum of
/// each sub-block's weights `w`. Returns `(d, dmin, packed scales)`.
fn scales_impl(k: &Kind, w: &[f32], scales: &[f32], mins: &[f32]) -> (f32, f32, [u8; 12]) {
    let mut sw = [0.0f32; 8];
    for (s, wj) in sw.iter_mut().zip(w.chunks_exact(32)) {
        *s = wj.iter().fold(0.0f32, |a, &b| a + b);
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, mins, &mut lm, &sw);
    if k.impl_clamp {
        for v in ls.iter_mut().chain(lm.iter_mut()) {
            *v = (*v).min(63);
        }
    }
    (d_block, m_block, pack_scale_min_k4(&ls, &lm))
}

/// Re-quantize every sub-block with its stored (fp16-rounded) scale and min; a
/// sub-block whose scale is 0 keeps the levels of its search.
fn requantize(
    p: &QkxParams,
    x: &[f32; QK_K],
    d_all: f32,
    dmin: f32,
    sc: &[u8; 12],
    res: &[QkxResult; 8],
    l: &mut [u8; QK_K],
) {
    let nmax = p.nmax;
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, sc);
        let d = d_all * s as f32;
        if d == 0.0 {
            res[j].write_levels(p, &x[32 * j..32 * j + 32], &mut l[32 * j..32 * j + 32]);
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

fn quantize_row_q4_k(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_row(&Q4, src, dst, imatrix)
}

fn quantize_row_q5_k(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    quantize_row(&Q5, src, dst, imatrix)
}

/// Dequantize with a level accessor `level(byte_block, pair, j, hi)`.
fn dequantize(
    bytes: usize,
    src: &[u8],
    dst: &mut [f32],
    level: impl Fn(&[u8], usize, usize, bool) -> u8,
) {
    for (b, y) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK_K)) {
        let d = read_fp16(b, 0);
        let min = read_fp16(b, 2);
        let sc = &b[4..16];
        for n in 0..4 {
            let (s1, m1) = get_scale_min_k4(2 * n, sc);
            let (s2, m2) = get_scale_min_k4(2 * n + 1, sc);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            for j in 0..32 {
                y[64 * n + j] = d1 * level(b, n, j, false) as f32 - m1;
            }
            for j in 0..32 {
                y[64 * n + 32 + j] = d2 * level(b, n, j, true) as f32 - m2;
            }
        }
    }
}

fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    dequantize(Q4.bytes, src, dst, |b, n, j, hi| {
        let q = b[offset_of!(BlockQ4K, qs) + 32 * n + j];
        if hi {
            q >> 4
        } else {
            q & 0x0f
        }
    })
}

fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    dequantize(Q5.bytes, src, dst, |b, n, j, hi| {
        let q = b[offset_of!(BlockQ5K, qs) + 32 * n + j];
        let h = b[offset_of!(BlockQ5K, qh) + j];
        if hi {
            (q >> 4) + if h & (2 << (2 * n)) != 0 { 16 } else { 0 }
        } else {
            (q & 0x0f) + if h & (1 << (2 * n)) != 0 { 16 } else { 0 }
        }
    })
}

//! Q2_K: `{ u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }` per 256 values.

use super::common::{
    imatrix_weights, make_qp_quants, nearest_int, qkx_search_multi, read_fp16, sum_sq, write_fp16,
    Qkx, QkxParams, QkxResult, QK_K,
};
use super::Codec;
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockQ2K};
use crate::formats::ggml_type::GgmlType;

/// Q2_K codec (ggml type 10).
pub const Q2_K: Codec = Codec {
    ty: GgmlType::Q2_K,
    quantize_row: quantize_row_q2_k,
    dequantize: dequantize_q2_k,
};

/// Pack 256 two-bit levels the k-quant way: byte `j/4 + l` of each 128-value half
/// holds `L[j+l] | L[j+l+32] << 2 | L[j+l+64] << 4 | L[j+l+96] << 6`.
#[inline(always)]
pub(super) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

fn quantize_row_q2_k(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockQ2K>(dst))
        .enumerate()
    {
        let x: &[f32; QK_K] = x.try_into().unwrap();
        match imatrix {
            None => quantize_block_ref(x, y),
            Some(qw) => quantize_block_impl(x, &qw[i * QK_K..(i + 1) * QK_K], y),
        }
    }
}

/// `quantize_row_q2_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K], y: &mut BlockQ2K) {
    let p = QkxParams {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
        variant: Qkx::V2,
    };
    let mut w = [0.0f32; QK_K];
    for (wi, &v) in w.iter_mut().zip(x) {
        *wi = v.abs();
    }
    let (scales, mins, res) = search(&p, x, &w);
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (&s, &m) in scales.iter().zip(&mins) {
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let mut sc = [0u8; 16];
    let d = if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (b, &s) in sc.iter_mut().zip(&scales) {
            *b = nearest_int(iscale * s) as u8;
        }
        write_fp16(&mut y.d, 0, max_scale / 15.0)
    } else {
        write_fp16(&mut y.d, 0, 0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (b, &m) in sc.iter_mut().zip(&mins) {
            *b |= (nearest_int(iscale * m) << 4) as u8;
        }
        write_fp16(&mut y.dmin, 0, max_min / 15.0)
    } else {
        write_fp16(&mut y.dmin, 0, 0.0)
    };
    finish_block(&p, x, d, dmin, &sc, &res, y);
}

/// Sub-block searches of a super-block: `(scales, the_mins, results)`.
fn search(
    p: &QkxParams,
    x: &[f32; QK_K],
    w: &[f32; QK_K],
) -> ([f32; 16], [f32; 16], [QkxResult; 16]) {
    let mut res = [QkxResult {
        scale: 0.0,
        the_min: 0.0,
        levels: None,
    }; 16];
    qkx_search_multi(p, 16, x, w, &mut res);
    (res.map(|r| r.scale), res.map(|r| r.the_min), res)
}

/// `quantize_row_q2_K_impl` for one super-block with importance weights `qw`.
fn quantize_block_impl(x: &[f32; QK_K], qw: &[f32], y: &mut BlockQ2K) {
    let p = QkxParams {
        nmax: 3,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
        variant: Qkx::V3,
    };
    let mut sw = [0.0f32; 16];
    let sigma2 = sum_sq(x) / QK_K as f32;
    let mut w = [0.0f32; QK_K];
    imatrix_weights(qw, x, sigma2, &mut w);
    for (s, wj) in sw.iter_mut().zip(w.chunks_exact(16)) {
        *s = wj.iter().fold(0.0f32, |a, &b| a + b);
    }
    let (scales, mins, res) = search(&p, x, &w);
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let d = write_fp16(&mut y.d, 0, dm);
    let dmin = write_fp16(&mut y.dmin, 0, mm);
    let mut sc = [0u8; 16];
    for j in 0..16 {
        sc[j] = ls[j] | (lm[j] << 4);
    }
    finish_block(&p, x, d, dmin, &sc, &res, y);
}

/// Shared tail of both paths: re-quantize with the stored scales (sub-blocks whose
/// scale is 0 keep the levels of their search), then pack.
fn finish_block(
    p: &QkxParams,
    x: &[f32; QK_K],
    d_all: f32,
    dmin: f32,
    sc: &[u8; 16],
    res: &[QkxResult; 16],
    y: &mut BlockQ2K,
) {
    let mut l = [0u8; QK_K];
    for j in 0..16 {
        let d = d_all * (sc[j] & 0x0f) as f32;
        if d == 0.0 {
            res[j].write_levels(p, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            continue;
        }
        let dm = dmin * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
        }
    }
    y.scales = *sc;
    pack_2bit(&l, &mut y.qs);
}

fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ2K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        let min = read_fp16(&b.dmin, 0);
        let mut out = 0;
        let mut is = 0;
        for n in 0..2 {
            let q = &b.qs[32 * n..32 * n + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = b.scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for k in 0..16 {
                        let v = ((q[16 * half + k] >> shift) & 3) as f32;
                        y[out] = dl * v - ml;
                        out += 1;
                    }
                }
            }
        }
    }
}

//! Q6_K: `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }` per 256 values.

use super::common::{
    make_qx_quants_multi, nearest_int, read_fp16, write_fp16, GROUP_MAX_EPS, QK_K,
};
use super::Codec;
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockQ6K};
use crate::formats::ggml_type::GgmlType;

/// Q6_K codec (ggml type 14).
pub const Q6_K: Codec = Codec {
    ty: GgmlType::Q6_K,
    quantize_row: quantize_row_q6_k,
    dequantize: dequantize_q6_k,
};

/// Both ggml paths: `make_qx_quants(16, 32, x, L, 1, w)` per sub-block with
/// `w = x^2` (reference) or the raw importance weights (imatrix), then 8-bit
/// sub-block scales against the largest one.
fn quantize_row_q6_k(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockQ6K>(dst))
        .enumerate()
    {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut w = [0.0f32; QK_K];
        match imatrix {
            Some(qw) => w.copy_from_slice(&qw[i * QK_K..(i + 1) * QK_K]),
            None => {
                for (wi, &v) in w.iter_mut().zip(x) {
                    *wi = v * v;
                }
            }
        }
        make_qx_quants_multi(32, 16, x, &w, &mut l, &mut scales);
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for &scale in &scales {
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *y = BlockQ6K::ZERO;
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d_all = write_fp16(&mut y.d, 0, 1.0 / iscale);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            let d = d_all * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        y.scales = sc;
        for h in 0..2 {
            let lb = &l[128 * h..128 * h + 128];
            let ql = &mut y.ql[64 * h..64 * h + 64];
            let qh = &mut y.qh[32 * h..32 * h + 32];
            for k in 0..32 {
                let (a, b, c, d) = (
                    lb[k] as u8,
                    lb[k + 32] as u8,
                    lb[k + 64] as u8,
                    lb[k + 96] as u8,
                );
                ql[k] = (a & 0x0f) | ((c & 0x0f) << 4);
                ql[k + 32] = (b & 0x0f) | ((d & 0x0f) << 4);
                qh[k] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((d >> 4) << 6);
            }
        }
    }
}

fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ6K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = read_fp16(&b.d, 0);
        for h in 0..2 {
            let ql = &b.ql[64 * h..64 * h + 64];
            let qh = &b.qh[32 * h..32 * h + 32];
            let sc = &b.scales[8 * h..8 * h + 8];
            let y = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

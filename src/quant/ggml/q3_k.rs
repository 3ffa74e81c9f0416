//! Q3_K: `{ u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }` per 256 values.

use super::common::{
    imatrix_weights, make_q3_quants_multi, make_qx_quants, make_qx_quants_multi, nearest_int,
    read_fp16, sum_sq, write_fp16, QK_K,
};
use super::q2_k::pack_2bit;
use super::Codec;
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockQ3K};
use crate::formats::ggml_type::GgmlType;

/// Q3_K codec (ggml type 11).
pub const Q3_K: Codec = Codec {
    ty: GgmlType::Q3_K,
    quantize_row: quantize_row_q3_k,
    dequantize: dequantize_q3_k,
};

fn quantize_row_q3_k(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockQ3K>(dst))
        .enumerate()
    {
        let x: &[f32; QK_K] = x.try_into().unwrap();
        match imatrix {
            None => quantize_block_ref(x, y),
            Some(qw) => quantize_block_impl(x, &qw[i * QK_K..(i + 1) * QK_K], y),
        }
    }
}

/// Pack sixteen 6-bit scales (`0..=63`, stored with +32 offset) into 12 bytes.
fn pack_scales(ls: &[i32; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &l) in ls.iter().enumerate() {
        if j < 8 {
            s[j] = (l & 0x0f) as u8;
        } else {
            s[j - 8] |= ((l & 0x0f) << 4) as u8;
        }
        let h = l >> 4;
        s[j % 4 + 8] |= (h << (2 * (j / 4))) as u8;
    }
    s
}

/// Signed 6-bit scale `j` (`-32..=31`) from the packed 12 bytes.
#[inline(always)]
fn unpack_scale(s: &[u8; 12], j: usize) -> i32 {
    let lo = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    let sc = lo as i8 as i32 | ((((s[8 + j % 4] >> (2 * (j / 4))) & 3) as i32) << 4);
    (sc as i8).wrapping_sub(32) as i32
}

/// `quantize_row_q3_K_ref` for one super-block.
fn quantize_block_ref(x: &[f32; QK_K], y: &mut BlockQ3K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    make_q3_quants_multi(4, 16, x, &mut l, &mut scales);
    for &s in &scales {
        let scale = s.abs();
        if scale > amax {
            amax = scale;
            max_scale = s;
        }
    }
    let (sc, d) = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut ls = [0i32; 16];
        for (o, &s) in ls.iter_mut().zip(&scales) {
            let l = nearest_int(iscale * s) as i8 as i32;
            *o = l.clamp(-32, 31) + 32;
        }
        (pack_scales(&ls), 1.0 / iscale)
    } else {
        ([0u8; 12], 0.0)
    };
    finish_block(x, d, &sc, &mut l, y);
}

/// `quantize_row_q3_K_impl` for one super-block with importance weights `qw`.
fn quantize_block_impl(x: &[f32; QK_K], qw: &[f32], y: &mut BlockQ3K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut sw = [0.0f32; 16];
    let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
    let mut w = [0.0f32; QK_K];
    imatrix_weights(qw, x, sigma2, &mut w);
    for (s, wj) in sw.iter_mut().zip(w.chunks_exact(16)) {
        *s = wj.iter().fold(0.0f32, |a, &b| a + b);
    }
    make_qx_quants_multi(4, 16, x, &w, &mut l, &mut scales);
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &sw, &mut ls);
    let mut lsi = [0i32; 16];
    for (o, &v) in lsi.iter_mut().zip(&ls) {
        *o = v as i32;
    }
    finish_block(x, d_block, &pack_scales(&lsi), &mut l, y);
}

/// Shared tail: store `d` and scales, re-quantize with them, split off the high bit.
fn finish_block(x: &[f32; QK_K], d: f32, sc: &[u8; 12], l: &mut [i8; QK_K], y: &mut BlockQ3K) {
    let d_all = write_fp16(&mut y.d, 0, d);
    for j in 0..16 {
        let d = d_all * unpack_scale(sc, j) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    // High bit of value j goes to bit j/32 of hmask[j%32] (branch-free: it is random).
    let mut hmask = [0u8; 32];
    let mut lu = [0u8; QK_K];
    for (b, (lb, ub)) in l.chunks_exact(32).zip(lu.chunks_exact_mut(32)).enumerate() {
        for ((h, &v), u) in hmask.iter_mut().zip(lb).zip(ub.iter_mut()) {
            let hi = (v > 3) as u8;
            *h |= hi << b;
            *u = (v as u8).wrapping_sub(4 * hi);
        }
    }
    y.hmask = hmask;
    pack_2bit(&lu, &mut y.qs);
    y.scales = *sc;
}

fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ3K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d_all = read_fp16(&b.d, 0);
        let (sc, hm) = (&b.scales, &b.hmask);
        let mut out = 0;
        let mut is = 0;
        let mut m = 1u8;
        for n in 0..2 {
            let q = &b.qs[32 * n..32 * n + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * unpack_scale(sc, is) as f32;
                    is += 1;
                    for k in 0..16 {
                        let i = 16 * half + k;
                        let v = ((q[i] >> shift) & 3) as i32 - if hm[i] & m != 0 { 0 } else { 4 };
                        y[out] = dl * v as f32;
                        out += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

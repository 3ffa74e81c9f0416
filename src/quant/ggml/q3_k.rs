//! Q3_K: `{ u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }` per 256 values.

use super::common::{
    imatrix_weights, make_q3_quants, make_qx_quants, make_qx_quants_multi, nearest_int, read_fp16,
    sum_sq, write_fp16, QK_K,
};
use super::q2_k::pack_2bit;
use super::{simd, Codec};
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockQ3K};
use crate::formats::ggml_type::GgmlType;

/// Q3_K codec (ggml type 11).
pub const Q3_K: Codec = Codec {
    ty: GgmlType::Q3_K,
    quantize_row: quantize_row_q3_k,
    dequantize: dequantize_q3_k,
};

fn quantize_row_q3_k(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let Some(qw) = imatrix else {
        return quantize_row_ref(src, dst);
    };
    for (i, (x, y)) in src
        .chunks_exact(QK_K)
        .zip(whole_blocks_mut::<BlockQ3K>(dst))
        .enumerate()
    {
        let x: &[f32; QK_K] = x.try_into().unwrap();
        quantize_block_impl(x, &qw[i * QK_K..(i + 1) * QK_K], y);
    }
}

/// Super-blocks the SIMD reference path takes at once.
const CHUNK: usize = 4;

/// `quantize_row_q3_K_ref`: the SIMD kernel where it runs, the scalar code otherwise.
fn quantize_row_ref(src: &[f32], dst: &mut [u8]) {
    let mut t = [0u8; CHUNK * QK_K];
    for (x, y) in src
        .chunks(CHUNK * QK_K)
        .zip(whole_blocks_mut::<BlockQ3K>(dst).chunks_mut(CHUNK))
    {
        if simd::q3k_ref(x, &mut t, &mut |sb, scales| ref_scales(scales, &mut y[sb])) {
            for (tb, yb) in t.chunks_exact(QK_K).zip(y.iter_mut()) {
                pack_transposed(tb.try_into().unwrap(), yb);
            }
        } else {
            for (x, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
                quantize_block_ref(x.try_into().unwrap(), yb);
            }
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

/// Stores `d` (as fp16) and the packed scales; returns each group's `d * scale`.
fn store_scales(d: f32, sc: [u8; 12], y: &mut BlockQ3K) -> [f32; 16] {
    let d_all = write_fp16(&mut y.d, 0, d);
    y.scales = sc;
    std::array::from_fn(|j| d_all * unpack_scale(&sc, j) as f32)
}

/// The reference path's super-block scales from its 16 group scales: stored in `y`;
/// returns each group's `d`.
fn ref_scales(scales: &[f32; 16], y: &mut BlockQ3K) -> [f32; 16] {
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for &s in scales {
        let scale = s.abs();
        if scale > amax {
            amax = scale;
            max_scale = s;
        }
    }
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let mut ls = [0i32; 16];
        for (o, &s) in ls.iter_mut().zip(scales) {
            let l = nearest_int(iscale * s) as i8 as i32;
            *o = l.clamp(-32, 31) + 32;
        }
        store_scales(1.0 / iscale, pack_scales(&ls), y)
    } else {
        store_scales(0.0, [0u8; 12], y)
    }
}

/// `quantize_row_q3_K_ref` for one super-block (scalar; the SIMD kernel is
/// [`simd::q3k_ref`]).
fn quantize_block_ref(x: &[f32; QK_K], y: &mut BlockQ3K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    for ((s, xg), lg) in scales
        .iter_mut()
        .zip(x.chunks_exact(16))
        .zip(l.chunks_exact_mut(16))
    {
        *s = make_q3_quants(4, xg, lg);
    }
    let d = ref_scales(&scales, y);
    finish_block(x, &d, &mut l, y);
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
    let d = store_scales(d_block, pack_scales(&lsi), y);
    finish_block(x, &d, &mut l, y);
}

/// Shared tail: re-quantize with the groups' `d` (groups whose `d` is 0 keep the
/// search's levels), split off the high bit and pack.
fn finish_block(x: &[f32; QK_K], dg: &[f32; 16], l: &mut [i8; QK_K], y: &mut BlockQ3K) {
    for (j, &d) in dg.iter().enumerate() {
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
}

/// Bits 0, 16, 32 and 48 of `v` to bits 0..4 (the multiply moves each to bit 45 + k
/// without carries: every partial product lands on its own bit).
#[inline(always)]
fn gather_4_bits(v: u64) -> u8 {
    ((v & 0x0001_0001_0001_0001).wrapping_mul(1 + (1 << 15) + (1 << 30) + (1 << 45)) >> 45) as u8
        & 0x0f
}

/// [`finish_block`]'s packing of levels `0..=7` stored transposed (`t[i * 16 + group]`:
/// value `16 * group + i`), as `hmask` and `qs` bytes.
fn pack_transposed(t: &[u8; QK_K], y: &mut BlockQ3K) {
    // Value e = 16g + i is bit e/32 of hmask[e%32] and bits 2*(e%128/32) of
    // qs[32*(e/128) + e%32]: for row i, groups 0,2,4,6 make qs[i], 1,3,5,7 qs[16+i],
    // 8,10,12,14 qs[32+i], 9,...,15 qs[48+i]; even groups make hmask[i], odd hmask[16+i].
    for (i, row) in t.chunks_exact(16).enumerate() {
        let r = [
            u64::from_le_bytes(row[..8].try_into().unwrap()),
            u64::from_le_bytes(row[8..].try_into().unwrap()),
        ];
        let mut h = [0u8; 2];
        for (half, &rh) in r.iter().enumerate() {
            let low = rh & 0x0303_0303_0303_0303;
            let a = low | (low >> 14); // byte k: L[k] | L[k+2] << 2
            let b = a | (a >> 28); // byte k: ... | L[k+4] << 4 | L[k+6] << 6
            y.qs[32 * half + i] = b as u8;
            y.qs[32 * half + 16 + i] = (b >> 8) as u8;
            let hi = rh >> 2; // bit 0 of each byte: level > 3
            h[0] |= gather_4_bits(hi) << (4 * half);
            h[1] |= gather_4_bits(hi >> 8) << (4 * half);
        }
        y.hmask[i] = h[0];
        y.hmask[16 + i] = h[1];
    }
}

/// A block's group scales `d * scale` (the decoders' `dl`).
fn group_scales(b: &BlockQ3K) -> [f32; 16] {
    let d_all = read_fp16(&b.d, 0);
    std::array::from_fn(|j| d_all * unpack_scale(&b.scales, j) as f32)
}

fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    let dl = |bytes: &[u8]| group_scales(&whole_blocks::<BlockQ3K>(bytes)[0]);
    if simd::q3k_dequantize(src, dst, dl) {
        return;
    }
    for (b, y) in whole_blocks::<BlockQ3K>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let dl = group_scales(b);
        // Value 128n + 32s + 16h + k: bits 2s of qs[32n + 16h + k], high bit 4n + s of
        // hmask[16h + k], scale 8n + 2s + h. Branch-free, so the loop vectorizes.
        for (n, yn) in y.chunks_exact_mut(128).enumerate() {
            for (s, ys) in yn.chunks_exact_mut(32).enumerate() {
                let m = 1u8 << (4 * n + s);
                for (h, yh) in ys.chunks_exact_mut(16).enumerate() {
                    let dl = dl[8 * n + 2 * s + h];
                    let q = &b.qs[32 * n + 16 * h..32 * n + 16 * h + 16];
                    let hm = &b.hmask[16 * h..16 * h + 16];
                    for ((o, &qk), &hk) in yh.iter_mut().zip(q).zip(hm) {
                        let v = ((qk >> (2 * s)) & 3) as i32 - 4 * ((hk & m) == 0) as i32;
                        *o = dl * v as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{with_level, Level};
    use crate::kv::prng::SplitMix64;

    /// Uniform in `[-1, 1)`.
    fn unit(r: &mut SplitMix64) -> f32 {
        (r.next_f64() * 2.0 - 1.0) as f32
    }

    #[test]
    fn transposed_packing_equals_the_scalar_packing() {
        let mut r = SplitMix64::new(7);
        for _ in 0..100 {
            let mut l = [0i8; QK_K];
            l.iter_mut().for_each(|v| *v = r.next_below(8) as i8);
            let mut t = [0u8; QK_K];
            for (e, &v) in l.iter().enumerate() {
                t[(e % 16) * 16 + e / 16] = v as u8;
            }
            let size = std::mem::size_of::<BlockQ3K>();
            let (mut a, mut b) = (vec![0u8; size], vec![0u8; size]);
            let (a, b) = (
                &mut whole_blocks_mut::<BlockQ3K>(&mut a)[0],
                &mut whole_blocks_mut::<BlockQ3K>(&mut b)[0],
            );
            // d = 0 everywhere: finish_block keeps the levels and only packs.
            finish_block(&[0.0; QK_K], &[0.0; 16], &mut l, a);
            pack_transposed(&t, b);
            assert_eq!((a.hmask, a.qs), (b.hmask, b.qs));
        }
    }

    /// Rows of 1..=9 super-blocks (whole chunks and tails) of random and adversarial
    /// values: the SIMD reference path gives the scalar bytes at every level, ties, zero
    /// groups, tiny and huge values, and non-finite values (scalar fallback) included.
    #[test]
    fn simd_reference_path_equals_scalar_at_every_level() {
        let mut r = SplitMix64::new(0x51);
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for nsb in 1..=9 {
            rows.push((0..nsb * QK_K).map(|_| unit(&mut r)).collect());
        }
        // Adversarial groups mixed into random rows.
        for case in 0..12 {
            let mut x: Vec<f32> = (0..6 * QK_K).map(|_| unit(&mut r) * 3.0).collect();
            for g in 0..x.len() / 16 {
                let v = &mut x[16 * g..16 * g + 16];
                match (case + g) % 12 {
                    0 => v.fill(0.0),
                    1 => v
                        .iter_mut()
                        .for_each(|a| *a = if r.next_u64() & 1 == 0 { 0.5 } else { -0.5 }),
                    2 => v.iter_mut().for_each(|a| *a *= 1e-17),
                    3 => v.iter_mut().for_each(|a| *a *= 1e30),
                    4 => v.iter_mut().for_each(|a| *a = (*a * 4.0).round()),
                    5 => v[r.next_below(16) as usize] = 1e6,
                    6 => v.iter_mut().for_each(|a| *a *= 1e-30),
                    7 => v.iter_mut().for_each(|a| *a = a.abs()),
                    8 => v.iter_mut().for_each(|a| *a = -(r.next_below(3) as f32)),
                    9 => v.fill(-0.0),
                    _ => {}
                }
            }
            if case == 11 {
                x[3 * QK_K + 17] = f32::NAN;
                x[5 * QK_K + 3] = f32::INFINITY;
            }
            rows.push(x);
        }
        for (n, x) in rows.iter().enumerate() {
            let bytes = x.len() / QK_K * std::mem::size_of::<BlockQ3K>();
            let mut want = vec![0u8; bytes];
            with_level(Level::Scalar, || quantize_row_q3_k(x, &mut want, None)).unwrap();
            for level in Level::supported() {
                let mut got = vec![0u8; bytes];
                with_level(level, || quantize_row_q3_k(x, &mut got, None)).unwrap();
                assert!(got == want, "row {n} at {level}: not the scalar bytes");
            }
        }
    }

    /// The decoder against ggml's `dequantize_row_q3_K` loop on random blocks (scales of
    /// any bit pattern, NaN and infinite `d` included).
    #[test]
    fn dequantize_equals_ggmls_loop() {
        let mut r = SplitMix64::new(3);
        let size = std::mem::size_of::<BlockQ3K>();
        let bytes: Vec<u8> = (0..40 * size).map(|_| (r.next_u64() >> 56) as u8).collect();
        let mut got = vec![0f32; 40 * QK_K];
        dequantize_q3_k(&bytes, &mut got);
        for (b, y) in whole_blocks::<BlockQ3K>(&bytes)
            .iter()
            .zip(got.chunks_exact(QK_K))
        {
            let d_all = read_fp16(&b.d, 0);
            let (mut out, mut is, mut m) = (0, 0, 1u8);
            for n in 0..2 {
                for shift in [0u32, 2, 4, 6] {
                    for half in 0..2 {
                        let dl = d_all * unpack_scale(&b.scales, is) as f32;
                        is += 1;
                        for k in 0..16 {
                            let i = 16 * half + k;
                            let q = ((b.qs[32 * n + i] >> shift) & 3) as i32;
                            let v = q - if b.hmask[i] & m != 0 { 0 } else { 4 };
                            let want = dl * v as f32;
                            assert!(
                                y[out].to_bits() == want.to_bits()
                                    || want.is_nan() && y[out].is_nan()
                            );
                            out += 1;
                        }
                    }
                    m <<= 1;
                }
            }
        }
    }
}

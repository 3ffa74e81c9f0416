//! Q1_0 (128 signs times the block's mean absolute value) and Q2_0 (64 values in
//! `{-1, 0, 1, 2} * amax`). ggml runs the same reference code with or without importance
//! weights.

use super::common::{c_round_i32, read_fp16, write_fp16};
use super::{simd, Codec};
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockQ1_0, BlockQ2_0};
use crate::formats::ggml_type::GgmlType;

/// Q1_0 codec (ggml type 41).
pub const Q1_0: Codec = Codec {
    ty: GgmlType::Q1_0,
    quantize_row: quantize_row_q1_0,
    dequantize: dequantize_q1_0,
};

/// Q2_0 codec (ggml type 42).
pub const Q2_0: Codec = Codec {
    ty: GgmlType::Q2_0,
    quantize_row: quantize_row_q2_0,
    dequantize: dequantize_q2_0,
};

const QK1_0: usize = GgmlType::Q1_0.block_size() as usize;
const QK2_0: usize = GgmlType::Q2_0.block_size() as usize;

/// Q2_0's values before the scale: stored level minus one.
const LEVELS: [f32; 4] = [-1.0, 0.0, 1.0, 2.0];

fn quantize_row_q1_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (x, y) in src
        .chunks_exact(QK1_0)
        .zip(whole_blocks_mut::<BlockQ1_0>(dst))
    {
        let mut sum_abs = 0.0f32;
        for &v in x {
            sum_abs += v.abs();
        }
        write_fp16(&mut y.d, 0, sum_abs / QK1_0 as f32);
        for (q, xb) in y.qs.iter_mut().zip(x.chunks_exact(8)) {
            *q = xb
                .iter()
                .enumerate()
                .fold(0u8, |acc, (k, &v)| acc | (((v >= 0.0) as u8) << k));
        }
    }
}

fn quantize_row_q2_0(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (x, y) in src
        .chunks_exact(QK2_0)
        .zip(whole_blocks_mut::<BlockQ2_0>(dst))
    {
        // NaN is skipped here (`>` is false), so only a finite block may take the SIMD max.
        let amax = simd::finite_abs_max(x).unwrap_or_else(|| {
            let mut amax = 0.0f32;
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                }
            }
            amax
        });
        let id = if amax > 0.0 { 1.0 / amax } else { 0.0 };
        write_fp16(&mut y.d, 0, amax);
        let mut l = [0u8; QK2_0];
        if !simd::offset_levels(x, id, 0, 3, &mut l) {
            for (l, &v) in l.iter_mut().zip(x) {
                *l = c_round_i32(v * id).wrapping_add(1).clamp(0, 3) as u8;
            }
        }
        for (q, l) in y.qs.iter_mut().zip(l.chunks_exact(4)) {
            *q = l[0] | (l[1] << 2) | (l[2] << 4) | (l[3] << 6);
        }
    }
}

fn dequantize_q1_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ1_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK1_0))
    {
        let d = read_fp16(&b.d, 0);
        for (j, v) in y.iter_mut().enumerate() {
            *v = if (b.qs[j / 8] >> (j % 8)) & 1 != 0 {
                d
            } else {
                -d
            };
        }
    }
}

fn dequantize_q2_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockQ2_0>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK2_0))
    {
        let d = read_fp16(&b.d, 0);
        for (&q, y) in b.qs.iter().zip(y.chunks_exact_mut(4)) {
            for (k, v) in y.iter_mut().enumerate() {
                *v = LEVELS[((q >> (2 * k)) & 3) as usize] * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::round_trip;
    use super::*;

    #[test]
    fn q1_0_keeps_signs_at_the_mean_magnitude() {
        let x: Vec<f32> = (0..2 * QK1_0)
            .map(|i| if i % 3 == 0 { -1.5 } else { 0.75 })
            .collect();
        let y = round_trip(&Q1_0, &x);
        for (b, (xb, yb)) in x.chunks(QK1_0).zip(y.chunks(QK1_0)).enumerate() {
            let mean = xb.iter().map(|v| v.abs()).sum::<f32>() / QK1_0 as f32;
            for (a, v) in xb.iter().zip(yb) {
                assert_eq!(v.abs(), half::f16::from_f32(mean).to_f32(), "block {b}");
                assert_eq!(v.is_sign_negative(), *a < 0.0);
            }
        }
        // Zeros (and -0.0) count as positive, with d = 0.
        assert!(round_trip(&Q1_0, &[-0.0; QK1_0]).iter().all(|&v| v == 0.0));
        // Huge values: the f16 scale overflows to inf, as in ggml.
        assert!(round_trip(&Q1_0, &[1e30; QK1_0])
            .iter()
            .all(|&v| v == f32::INFINITY));
    }

    #[test]
    fn q2_0_levels_and_edge_rows() {
        // -d, 0 and d are exact (level 2, `2 * d`, is out of reach of `|x| <= d`).
        let x: Vec<f32> = (0..QK2_0)
            .map(|i| [-2.0f32, 0.0, 2.0, 0.0][i % 4])
            .collect();
        assert_eq!(round_trip(&Q2_0, &x), x);
        // Half-way values round away from zero: -1 and 1 at d = 2 become -d and d.
        let x: Vec<f32> = (0..QK2_0)
            .map(|i| [-2.0f32, -1.0, 0.0, 1.0][i % 4])
            .collect();
        assert_eq!(round_trip(&Q2_0, &x)[..4], [-2.0, -2.0, 0.0, 2.0]);
        assert!(round_trip(&Q2_0, &[0.0; QK2_0]).iter().all(|&v| v == 0.0));
        assert!(round_trip(&Q2_0, &[-5.0; QK2_0]).iter().all(|&v| v == -5.0));
        // Error bound on a spread row: |x - y| <= d / 2 (plus f16 rounding of d).
        let x: Vec<f32> = (0..QK2_0).map(|i| (i as f32 - 31.0) / 9.0).collect();
        let d = 32.0 / 9.0;
        for (a, b) in x.iter().zip(round_trip(&Q2_0, &x)) {
            assert!((a - b).abs() <= d * 0.5 + 1e-2, "{a} {b}");
        }
    }
}

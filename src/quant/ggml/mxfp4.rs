//! MXFP4 (OCP microscaling): 32 E2M1 values sharing a power-of-two (E8M0) scale. ggml
//! ignores importance weights.

use super::common::c_trunc_i32;
use super::Codec;
use crate::formats::blocks::{whole_blocks, whole_blocks_mut, BlockMxfp4, QK};
use crate::formats::ggml_type::GgmlType;

/// MXFP4 codec (ggml type 39).
pub const MXFP4: Codec = Codec {
    ty: GgmlType::MXFP4,
    quantize_row: quantize_row_mxfp4,
    dequantize: dequantize_mxfp4,
};

/// ggml's `kvalues_mxfp4`: the E2M1 values, doubled.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `GGML_E8M0_TO_FP32_HALF`: `2^(e - 128)`, the scale of the doubled E2M1 values.
#[inline]
pub fn e8m0_to_fp32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        ((e - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

/// ggml's `best_index_mxfp4`: the first index of the smallest `|value * e - x|`.
#[inline(always)]
fn best_index(x: f32, e: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * e - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * e - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

fn quantize_row_mxfp4(src: &[f32], dst: &mut [u8], _imatrix: Option<&[f32]>) {
    for (x, y) in src
        .chunks_exact(QK)
        .zip(whole_blocks_mut::<BlockMxfp4>(dst))
    {
        let mut amax = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        // `(uint8_t)(floorf(log2f(amax)) - 2 + 127)`: glibc's log2f (what Rust's
        // `f32::log2` calls on Linux), then C's float-to-integer conversion.
        let e = if amax > 0.0 {
            c_trunc_i32(amax.log2().floor() - 2.0 + 127.0) as u8
        } else {
            0
        };
        y.e = [e];
        let d = e8m0_to_fp32_half(e);
        for j in 0..QK / 2 {
            y.qs[j] = best_index(x[j], d) | (best_index(x[j + QK / 2], d) << 4);
        }
    }
}

fn dequantize_mxfp4(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockMxfp4>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = e8m0_to_fp32_half(b.e[0]);
        for j in 0..QK / 2 {
            y[j] = KVALUES_MXFP4[(b.qs[j] & 0x0f) as usize] as f32 * d;
            y[j + QK / 2] = KVALUES_MXFP4[(b.qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(x: &[f32]) -> Vec<f32> {
        super::super::round_trip(&MXFP4, x)
    }

    #[test]
    fn e8m0_half_is_a_power_of_two() {
        assert_eq!(e8m0_to_fp32_half(128), 1.0);
        assert_eq!(e8m0_to_fp32_half(127), 0.5);
        assert_eq!(e8m0_to_fp32_half(1), f32::from_bits(1 << 22)); // 2^-127
        assert_eq!(e8m0_to_fp32_half(0), f32::from_bits(1 << 21)); // 2^-128
        assert_eq!(e8m0_to_fp32_half(255), 2f32.powi(127));
    }

    #[test]
    fn e2m1_values_round_trip_and_errors_are_bounded() {
        // amax = 6 -> e = 129, d = 2^1 / 2... every E2M1 value times 1 is exact.
        let vals = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let x: Vec<f32> = (0..QK)
            .map(|i| vals[i % 8] * if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        assert_eq!(round_trip(&x), x);
        // Zeros and constants.
        assert!(round_trip(&[0.0; QK]).iter().all(|&v| v == 0.0));
        assert!(round_trip(&[3.0; QK]).iter().all(|&v| v == 3.0));
        // A spread row: the error is at most half the largest gap (2 at this scale).
        let x: Vec<f32> = (0..QK).map(|i| (i as f32 - 15.5) / 2.7).collect();
        for (a, b) in x.iter().zip(round_trip(&x)) {
            assert!((a - b).abs() <= 1.0, "{a} {b}");
        }
        // Huge values stay finite: the largest scale is 2^127.
        let y = round_trip(&[3e38; QK]);
        assert!(y.iter().all(|v| v.is_finite() && *v > 1e38), "{y:?}");
    }
}

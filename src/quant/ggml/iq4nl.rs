//! IQ4_NL: `{ f16 d; u8 qs[16] }` per 32 values, levels from a fixed non-linear table.

use super::common::{abs_max, imatrix_weights, read_fp16, sum_sq, write_fp16, GROUP_MAX_EPS};
use super::simd;
use super::Codec;
use crate::formats::blocks::{whole_blocks, BlockIq4Nl, QK};
use crate::formats::ggml_type::GgmlType;
use std::mem::size_of;

/// ggml's `kvalues_iq4nl`.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL codec (ggml type 20). ggml always runs its imatrix-capable path.
pub const IQ4_NL: Codec = Codec {
    ty: GgmlType::IQ4_NL,
    quantize_row: quantize_row_iq4_nl,
    dequantize: dequantize_iq4_nl,
};

/// Doubled midpoints between consecutive table values: `val[j-1] + val[j]`, `j = 1..16`.
pub const IQ4NL_MID2: [f32; 15] = {
    let mut m = [0.0f32; 15];
    let mut j = 1;
    while j < 16 {
        m[j - 1] = (KVALUES_IQ4NL[j - 1] as i32 + KVALUES_IQ4NL[j] as i32) as f32;
        j += 1;
    }
    m
};

/// ggml's `best_index_int8` for the IQ4_NL table: the level `x` rounds to, where a
/// value exactly on a midpoint takes the upper level.
#[inline(always)]
pub fn best_index(x: f32) -> usize {
    let x2 = x + x;
    let mut idx = 0usize;
    let mut step = 8usize;
    while step > 0 {
        let j = idx + step;
        if x2 >= IQ4NL_MID2[j - 1] {
            idx = j;
        }
        step >>= 1;
    }
    idx
}

fn quantize_row_iq4_nl(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    let mut w = [0.0f32; QK];
    for (ib, (x, y)) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(size_of::<BlockIq4Nl>()))
        .enumerate()
    {
        match imatrix {
            Some(qw) => {
                let sigma2 = sum_sq(x) * (2.0 / QK as f32);
                imatrix_weights(&qw[ib * QK..(ib + 1) * QK], x, sigma2, &mut w);
            }
            None => {
                for (wi, &v) in w.iter_mut().zip(x) {
                    *wi = v * v;
                }
            }
        }
        let (amax, max) = abs_max(x);
        let d = if amax < GROUP_MAX_EPS {
            0.0
        } else {
            block_scale(x, &w, max)
        };
        write_fp16(y, 0, d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut l = [0u8; QK];
        simd::iq4nl_levels(x.try_into().unwrap(), id, &mut l);
        for j in 0..16 {
            y[2 + j] = l[j] | (l[j + 16] << 4);
        }
    }
}

/// The scale search of `quantize_row_iq4_nl_impl` (`ntry = 7`) for a non-zero block.
fn block_scale(x: &[f32], w: &[f32], max: f32) -> f32 {
    // Candidate 0: ggml's initial `id = 1/d` with `d = -max/values[0]`;
    // candidates 1..=15: `id = (itry + values[0])/max` for `itry = -7..=7`.
    let mut ids = [0.0f32; 16];
    let d0 = -max / KVALUES_IQ4NL[0] as f32;
    ids[0] = 1.0 / d0;
    for (k, itry) in (-7i32..=7).enumerate() {
        ids[k + 1] = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
    }
    let mut sumqx = [0.0f32; 16];
    let mut sumq2 = [0.0f32; 16];
    simd::iq4nl_sums(x, w, &ids, &mut sumqx, &mut sumq2);
    let mut d = if sumq2[0] > 0.0 {
        sumqx[0] / sumq2[0]
    } else {
        0.0
    };
    let mut best = d * sumqx[0];
    for c in 1..16 {
        if sumq2[c] > 0.0 && sumqx[c] * sumqx[c] > best * sumq2[c] {
            d = sumqx[c] / sumq2[c];
            best = d * sumqx[c];
        }
    }
    d
}

/// Scalar kernel of the IQ4_NL scale search: `sum w*q*x` and `sum w*q*q` per candidate.
pub fn iq4nl_sums_scalar(x: &[f32], w: &[f32], ids: &[f32], sumqx: &mut [f32], sumq2: &mut [f32]) {
    for (c, &id) in ids.iter().enumerate() {
        let mut sqx = 0.0f32;
        let mut sq2 = 0.0f32;
        for (&v, &wi) in x.iter().zip(w) {
            let q = KVALUES_IQ4NL[best_index(id * v)] as f32;
            sqx += wi * q * v;
            sq2 += wi * q * q;
        }
        sumqx[c] = sqx;
        sumq2[c] = sq2;
    }
}

fn dequantize_iq4_nl(src: &[u8], dst: &mut [f32]) {
    for (b, y) in whole_blocks::<BlockIq4Nl>(src)
        .iter()
        .zip(dst.chunks_exact_mut(QK))
    {
        let d = read_fp16(&b.d, 0);
        for j in 0..QK / 2 {
            y[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0x0f) as usize] as f32;
            y[j + QK / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's older `best_index_int8` (nearest value, bisection with explicit ends).
    fn best_index_linear(x: f32) -> usize {
        let v = KVALUES_IQ4NL;
        if x <= v[0] as f32 {
            return 0;
        }
        if x >= v[15] as f32 {
            return 15;
        }
        let mut best = 0;
        for j in 1..16 {
            if x + x >= (v[j - 1] as i32 + v[j] as i32) as f32 {
                best = j;
            }
        }
        best
    }

    #[test]
    fn best_index_matches_linear_scan() {
        for i in -3000..3000 {
            let x = i as f32 * 0.05;
            assert_eq!(best_index(x), best_index_linear(x), "{x}");
        }
        // Midpoints go up.
        assert_eq!(best_index(-4.5), 8);
        assert_eq!(best_index(-4.5001), 7);
    }
}

//! Portable dot products of one quantized weight row with one token's 8-bit activations.
//! The integer sums are the same the SIMD kernels compute; only the order of the final
//! f32 additions differs.

use super::super::activation::ActRow;
use super::super::weights::{WeightType, NF4_BLOCK};
use super::NF4_I8;
use crate::formats::blocks::{
    blocks, f16_le, Block, BlockIq4Xs, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8_0, QK, QK_K,
};
use crate::quant::ggml::{get_scale_min_k4, KVALUES_IQ4NL};

/// `row . token` for a row of type `ty` (`absmax`: the row's NF4 block maxima).
pub fn dot(ty: WeightType, row: &[u8], absmax: &[f32], a: &ActRow<'_>) -> f32 {
    match ty {
        WeightType::Q4K => q4_k(row, a),
        WeightType::Q6K => q6_k(row, a),
        WeightType::Q8_0 => q8_0(row, a),
        WeightType::Q4_0 => q4_0(row, a),
        WeightType::Nf4 => nf4(row, absmax, a),
        WeightType::Q5K => q5_k(row, a),
        WeightType::Iq4Xs => iq4_xs(row, a),
    }
}

/// The row as blocks of `B` (the caller checked the row length).
fn view<B: Block>(row: &[u8]) -> &[B] {
    blocks(row).expect("rows are whole blocks")
}

fn q4_k(row: &[u8], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (sb, blk) in view::<BlockQ4K>(row).iter().enumerate() {
        let (d, dmin) = (f16_le(blk.d), f16_le(blk.dmin));
        let x = &a.qs[sb * QK_K..(sb + 1) * QK_K];
        let sums = &a.sums16[sb * 16..(sb + 1) * 16];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, mn) = get_scale_min_k4(j, &blk.scales);
            let q = &blk.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            let dot: i32 = q
                .iter()
                .zip(&x[j * 32..j * 32 + 32])
                .map(|(&b, &v)| i32::from((b >> shift) & 0xF) * i32::from(v))
                .sum();
            sumi += i32::from(sc) * dot;
            summ += i32::from(mn) * (i32::from(sums[2 * j]) + i32::from(sums[2 * j + 1]));
        }
        acc += a.d[sb] * (d * sumi as f32 - dmin * summ as f32);
    }
    acc
}

/// The 5-bit level (0..=31) of value `e` of a Q5_K block: the nibble as in Q4_K, the fifth
/// bit in bit `e / 32` of `qh[e % 32]`.
pub fn q5_level(blk: &BlockQ5K, e: usize) -> u8 {
    let (pair, j) = (e / 64, e % 64);
    let b = blk.qs[pair * 32 + j % 32];
    let low = if j < 32 { b & 0xF } else { b >> 4 };
    low | (((blk.qh[e % 32] >> (e / 32)) & 1) << 4)
}

fn q5_k(row: &[u8], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (sb, blk) in view::<BlockQ5K>(row).iter().enumerate() {
        let (d, dmin) = (f16_le(blk.d), f16_le(blk.dmin));
        let x = &a.qs[sb * QK_K..(sb + 1) * QK_K];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, mn) = get_scale_min_k4(j, &blk.scales);
            let dot: i32 = (j * 32..j * 32 + 32)
                .map(|e| i32::from(q5_level(blk, e)) * i32::from(x[e]))
                .sum();
            sumi += i32::from(sc) * dot;
            summ += i32::from(mn) * sum32(a, sb * 8 + j);
        }
        acc += a.d[sb] * (d * sumi as f32 - dmin * summ as f32);
    }
    acc
}

/// The signed 6-bit scale (-32..=31) of 32-value group `g` of an IQ4_XS block.
pub fn iq4_xs_scale(blk: &BlockIq4Xs, g: usize) -> i32 {
    let low = (blk.scales_l[g / 2] >> (4 * (g % 2))) & 0xF;
    let high = (u16::from_le_bytes(blk.scales_h) >> (2 * g)) & 3;
    (i32::from(low) | (i32::from(high) << 4)) - 32
}

/// The 4-bit table index of value `e` of an IQ4_XS block (group `e / 32`: the first 16
/// values in the low nibbles of its 16 bytes, the last 16 in the high ones).
pub fn iq4_xs_code(blk: &BlockIq4Xs, e: usize) -> u8 {
    let (g, j) = (e / 32, e % 32);
    let b = blk.qs[16 * g + j % 16];
    if j < 16 {
        b & 0xF
    } else {
        b >> 4
    }
}

fn iq4_xs(row: &[u8], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (sb, blk) in view::<BlockIq4Xs>(row).iter().enumerate() {
        let x = &a.qs[sb * QK_K..(sb + 1) * QK_K];
        let sumi: i32 = (0..8)
            .map(|g| {
                let dot: i32 = (g * 32..g * 32 + 32)
                    .map(|e| {
                        i32::from(KVALUES_IQ4NL[usize::from(iq4_xs_code(blk, e))]) * i32::from(x[e])
                    })
                    .sum();
                iq4_xs_scale(blk, g) * dot
            })
            .sum();
        acc += a.d[sb] * f16_le(blk.d) * sumi as f32;
    }
    acc
}

/// The 6-bit level (0..=63) of value `e` of a Q6_K block.
pub(crate) fn q6_level(blk: &BlockQ6K, e: usize) -> i32 {
    let (n, g, l) = (e / 128, (e % 128) / 32, e % 32);
    let b = blk.ql[n * 64 + (g % 2) * 32 + l];
    let low = if g < 2 { b & 0xF } else { b >> 4 };
    let high = (blk.qh[n * 32 + l] >> (2 * g)) & 3;
    i32::from(low | (high << 4))
}

fn q6_k(row: &[u8], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (sb, blk) in view::<BlockQ6K>(row).iter().enumerate() {
        let x = &a.qs[sb * QK_K..(sb + 1) * QK_K];
        let mut sumi = 0i32;
        for (g, &sc) in blk.scales.iter().enumerate() {
            let dot: i32 = (g * 16..g * 16 + 16)
                .map(|e| q6_level(blk, e) * i32::from(x[e]))
                .sum();
            let offset = 32 * i32::from(a.sums16[sb * 16 + g]);
            sumi += i32::from(sc) * (dot - offset);
        }
        acc += a.d[sb] * f16_le(blk.d) * sumi as f32;
    }
    acc
}

/// Sum of two adjacent 16-value sums: the sum of 32-value block `b`.
fn sum32(a: &ActRow<'_>, b: usize) -> i32 {
    i32::from(a.sums16[2 * b]) + i32::from(a.sums16[2 * b + 1])
}

fn q4_0(row: &[u8], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in view::<BlockQ4_0>(row).iter().enumerate() {
        let x = &a.qs[b * QK..(b + 1) * QK];
        let dot: i32 = (0..QK / 2)
            .map(|j| {
                i32::from(blk.qs[j] & 0xF) * i32::from(x[j])
                    + i32::from(blk.qs[j] >> 4) * i32::from(x[j + QK / 2])
            })
            .sum();
        acc += f16_le(blk.d) * a.d[b] * (dot - 8 * sum32(a, b)) as f32;
    }
    acc
}

fn q8_0(row: &[u8], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in view::<BlockQ8_0>(row).iter().enumerate() {
        let x = &a.qs[b * QK..(b + 1) * QK];
        let dot: i32 = blk
            .qs
            .iter()
            .zip(x)
            .map(|(&w, &v)| i32::from(w) * i32::from(v))
            .sum();
        acc += f16_le(blk.d) * a.d[b] * dot as f32;
    }
    acc
}

fn nf4(row: &[u8], absmax: &[f32], a: &ActRow<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, packed) in row.chunks_exact(16).enumerate() {
        let x = &a.qs[b * 32..(b + 1) * 32];
        let dot: i32 = packed
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                i32::from(NF4_I8[usize::from(p >> 4)]) * i32::from(x[2 * i])
                    + i32::from(NF4_I8[usize::from(p & 0xF)]) * i32::from(x[2 * i + 1])
            })
            .sum();
        acc += absmax[b * 32 / NF4_BLOCK] / 127.0 * a.d[b] * dot as f32;
    }
    acc
}

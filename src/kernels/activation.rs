//! 8-bit activations for the fused kernels: each token's `k` values in blocks of 32 or
//! 256, symmetric (`d = absmax / 127`, values in -127..=127), with the sum of every 16
//! quantized values kept for the kernels' offset and min corrections.
//!
//! For the 32-value-block kernels two more per-lane arrays are kept, one entry per four
//! values (an i32 lane of `vpdpbusd`): the block scale of the lane and `-bias` times the
//! sum of the lane's four values, which starts the accumulator so that weights stored
//! with an offset (`level + bias`) need no correction afterwards.

use super::weights::WeightType;
use rayon::prelude::*;

/// Quantized activations of `m` tokens.
pub struct Activations {
    /// Values per token.
    pub k: usize,
    /// Values per scale (32 or 256).
    pub block: usize,
    /// Quantized values, `m * k`, token after token.
    pub qs: Vec<i8>,
    /// One scale per block, `m * k / block`.
    pub d: Vec<f32>,
    /// Sum of every 16 quantized values, `m * k / 16`.
    pub sums16: Vec<i16>,
    /// The weight offset the lane arrays were made for.
    pub lane_bias: Option<i32>,
    /// Per four values: the block scale (`m * k / 4`; empty without a lane bias).
    pub lane_d: Vec<f32>,
    /// Per four values: `-bias * sum` (`m * k / 4`; empty without a lane bias).
    pub lane_offset: Vec<i32>,
}

/// One token's quantized activations.
#[derive(Clone, Copy)]
pub struct ActRow<'a> {
    /// `k` quantized values.
    pub qs: &'a [i8],
    /// One scale per block.
    pub d: &'a [f32],
    /// Sum of every 16 quantized values.
    pub sums16: &'a [i16],
    /// The weight offset the lane arrays were made for.
    pub lane_bias: Option<i32>,
    /// Per four values: the block scale (empty without a lane bias).
    pub lane_d: &'a [f32],
    /// Per four values: `-bias * sum` (empty without a lane bias).
    pub lane_offset: &'a [i32],
}

impl Activations {
    /// Quantizes `x` (`m` tokens of `k` values, token-major), tokens in parallel;
    /// `lane_bias` asks for the per-lane arrays with that weight offset.
    pub fn quantize(x: &[f32], k: usize, block: usize, lane_bias: Option<i32>) -> Activations {
        assert!(block.is_multiple_of(16) && k.is_multiple_of(block) && x.len().is_multiple_of(k));
        let m = x.len() / k;
        let lanes = if lane_bias.is_some() { m * k / 4 } else { 0 };
        let mut a = Activations {
            k,
            block,
            qs: vec![0; m * k],
            d: vec![0.0; m * k / block],
            sums16: vec![0; m * k / 16],
            lane_bias,
            lane_d: vec![0.0; lanes],
            lane_offset: vec![0; lanes],
        };
        a.qs.par_chunks_mut(k)
            .zip(a.d.par_chunks_mut(k / block))
            .zip(a.sums16.par_chunks_mut(k / 16))
            .zip(x.par_chunks(k))
            .for_each(|(((qs, d), sums), x)| quantize_token(x, block, qs, d, sums));
        if let Some(bias) = lane_bias {
            a.lane_d
                .par_chunks_mut(k / 4)
                .zip(a.lane_offset.par_chunks_mut(k / 4))
                .zip(a.qs.par_chunks(k).zip(a.d.par_chunks(k / block)))
                .for_each(|((lane_d, lane_offset), (qs, d))| {
                    for (i, (ld, lo)) in lane_d.iter_mut().zip(lane_offset).enumerate() {
                        *ld = d[4 * i / block];
                        *lo = -bias
                            * qs[4 * i..4 * i + 4]
                                .iter()
                                .map(|&v| i32::from(v))
                                .sum::<i32>();
                    }
                });
        }
        a
    }

    /// Quantizes `x` for the fused kernels of weight type `ty`.
    pub fn for_weights(x: &[f32], k: usize, ty: WeightType) -> Activations {
        Self::quantize(x, k, ty.activation_block(), ty.lane_bias())
    }

    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.qs.len() / self.k
    }

    /// Token `t`.
    pub fn token(&self, t: usize) -> ActRow<'_> {
        let (k, b) = (self.k, self.block);
        ActRow {
            qs: &self.qs[t * k..(t + 1) * k],
            d: &self.d[t * k / b..(t + 1) * k / b],
            sums16: &self.sums16[t * k / 16..(t + 1) * k / 16],
            lane_bias: self.lane_bias,
            lane_d: self.lane_d.get(t * k / 4..(t + 1) * k / 4).unwrap_or(&[]),
            lane_offset: self
                .lane_offset
                .get(t * k / 4..(t + 1) * k / 4)
                .unwrap_or(&[]),
        }
    }

    /// Bytes held (values, scales, sums).
    pub fn bytes(&self) -> u64 {
        (self.qs.len() + (self.d.len() + self.lane_d.len() + self.lane_offset.len()) * 4) as u64
            + self.sums16.len() as u64 * 2
    }
}

/// Quantizes one token: blocks of `block` values to i8 with an f32 scale each.
fn quantize_token(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], sums: &mut [i16]) {
    for ((xb, qb), db) in x.chunks_exact(block).zip(qs.chunks_exact_mut(block)).zip(d) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        *db = amax / 127.0;
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in qb.iter_mut().zip(xb) {
            // Round half away from zero without a libm call (`as` truncates).
            let r = v * id;
            *q = (r + 0.5f32.copysign(r)).clamp(-127.0, 127.0) as i8;
        }
    }
    for (s, q) in sums.iter_mut().zip(qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| i16::from(v)).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_scales_and_sums() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.5).collect();
        x[33] = -100.0;
        let a = Activations::quantize(&x, 32, 32, Some(8));
        assert_eq!(a.tokens(), 2);
        let t0 = a.token(0);
        assert_eq!(t0.d[0], 10.0 / 127.0);
        assert_eq!(t0.qs[0], -127);
        assert_eq!(t0.qs[31], 70); // 5.5 / 10 * 127 = 69.85
        let t1 = a.token(1);
        assert_eq!(t1.qs[1], -127);
        assert_eq!(t1.d[0], 100.0 / 127.0);
        let s: i16 = t0.qs[..16].iter().map(|&v| i16::from(v)).sum();
        assert_eq!(t0.sums16[0], s);
        // Dequantized values are within half a step.
        for (i, v) in x[..32].iter().enumerate() {
            assert!((f32::from(t0.qs[i]) * t0.d[0] - v).abs() <= t0.d[0] * 0.5 + 1e-6);
        }
        let lane: i32 = t0.qs[4..8].iter().map(|&v| i32::from(v)).sum();
        assert_eq!((t0.lane_offset[1], t0.lane_d[1]), (-8 * lane, t0.d[0]));
        assert_eq!((t1.lane_d.len(), t1.lane_offset.len()), (8, 8));
        let z = Activations::quantize(&[0.0; 256], 256, 256, None);
        assert_eq!((z.d[0], z.qs[5], z.sums16[3]), (0.0, 0, 0));
        assert!(z.token(0).lane_d.is_empty());
    }
}

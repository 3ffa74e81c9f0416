//! How far a product with 8-bit activations may be from the exact one: the yardstick
//! [`QuantLinear`](super::QuantLinear) and candle's `QMatMul` are both checked with.
//!
//! Both round each token's activations in blocks to `q = round(x / d)`, `d = amax / 127`,
//! and multiply `q` exactly with the stored weights. The blocks: QuantLinear's are 32
//! values for Q8_0, Q4_0 and NF4 and 256 for the k-quants
//! (`WeightType::activation_block`); candle-core 0.11 uses ggml's Q8_0 (32) or Q8_K (256),
//! and on x86-64 with AVX-512 VNNI it runs Q8_0 weights with `k` a multiple of 256 through
//! repacked kernels with Q8_K activations, whose error is larger (`sigma` grows with the
//! block's `amax`). An activation's rounding error is then at
//! most `d / 2`; candle (as ggml) keeps `d` as an f16, which moves `q * d` by at most
//! `127 * 2^-11 * d` more, so `9/16 d` bounds both. Output `r` of a token, `sum_i w_ri x_i`,
//! is therefore off by at most `sum_i |w_ri| * 9/16 * d_b(i)` ([`ActivationError::bound`]),
//! and, taking the rounding errors as independent and uniform on `±d/2`, by a standard
//! deviation of `sqrt(sum_i w_ri^2 * d_b(i)^2 / 12)` ([`ActivationError::sigma`]).
//! NF4 adds our kernels' int8 codes (`code * 127` rounded: at most `absmax / 254` per
//! weight), counted the same way.

use crate::kernels::weights::NF4_BLOCK;
use crate::kernels::{QuantMatrix, WeightType};

/// Per-output error scales of `y = x W^T` with 8-bit activations, `m x n` token-major.
pub struct ActivationError {
    /// Worst-case `|y - exact|` of each output.
    pub bound: Vec<f64>,
    /// Standard deviation of `y - exact` of each output (independent uniform rounding).
    pub sigma: Vec<f64>,
}

/// The error scales of `x W^T` (`x`: `m` tokens of `w.k` values) with activations rounded
/// in blocks of `block` values, against the exact product of the dequantized weights
/// (`crate::kernels::reference_matmul`).
pub fn activation_error(w: &QuantMatrix, x: &[f32], block: usize) -> ActivationError {
    let (n, k) = (w.n, w.k);
    assert!(
        x.len().is_multiple_of(k) && k.is_multiple_of(block),
        "x is m x k, k blocks"
    );
    let m = x.len() / k;
    // Per token and activation block: the step d.
    let steps: Vec<f64> = x
        .chunks_exact(block)
        .map(|b| f64::from(b.iter().fold(0f32, |a, v| a.max(v.abs()))) / 127.0)
        .collect();
    let mut bound = vec![0f64; m * n];
    let mut sigma = vec![0f64; m * n];
    let mut row = vec![0f32; k];
    for r in 0..n {
        w.dequantize_rows(r..r + 1, &mut row);
        // NF4: the step of the int8 codes, per weight block.
        let code_step: Vec<f64> = match w.ty {
            WeightType::Nf4 => w
                .row_absmax(r)
                .iter()
                .map(|&a| f64::from(a) / 127.0)
                .collect(),
            _ => Vec::new(),
        };
        for t in 0..m {
            let (xt, dt) = (&x[t * k..(t + 1) * k], &steps[t * k / block..]);
            let (mut b, mut v) = (0f64, 0f64);
            for (i, (&wi, &xi)) in row.iter().zip(xt).enumerate() {
                let (wi, d) = (f64::from(wi).abs(), dt[i / block]);
                b += wi * 9.0 / 16.0 * d;
                v += wi * wi * d * d / 12.0;
                if let Some(&c) = code_step.get(i / NF4_BLOCK) {
                    let xi = f64::from(xi).abs();
                    b += c / 2.0 * xi;
                    v += c * c * xi * xi / 12.0;
                }
            }
            bound[t * n + r] = b;
            sigma[t * n + r] = v.sqrt();
        }
    }
    ActivationError { bound, sigma }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::Fused;
    use crate::kernels::{reference_matmul, synthetic_activations, GemmBackend, Isa};
    use std::sync::Arc;

    /// Every ISA of the fused kernels stays within the bound, and its errors have the
    /// size sigma predicts (their RMS over many outputs is sigma's within a factor 2).
    #[test]
    fn fused_errors_are_within_the_bound_and_of_sigmas_size() {
        for ty in WeightType::ALL {
            let w = Arc::new(QuantMatrix::random(ty, 64, 512, 3).unwrap());
            let x = synthetic_activations(7, 512, 5);
            let want = reference_matmul(&w, &x);
            let e = activation_error(&w, &x, ty.activation_block());
            for isa in Isa::available() {
                let mut y = vec![0f32; 7 * 64];
                Fused::rows(w.clone(), isa).matmul(&x, &mut y).unwrap();
                let mut z2 = 0f64;
                for i in 0..y.len() {
                    let err = (f64::from(y[i]) - want[i]).abs();
                    assert!(
                        err <= e.bound[i] + 1e-6,
                        "{ty:?} {isa:?} output {i}: {err} > {}",
                        e.bound[i]
                    );
                    z2 += (err / e.sigma[i]).powi(2);
                }
                let rms = (z2 / y.len() as f64).sqrt();
                assert!(
                    (0.5..2.0).contains(&rms),
                    "{ty:?} {isa:?}: RMS error / sigma = {rms}"
                );
            }
        }
    }

    #[test]
    fn zero_activations_make_no_error() {
        let w = QuantMatrix::random(WeightType::Q8_0, 16, 64, 1).unwrap();
        let e = activation_error(&w, &[0.0; 128], 32);
        assert!(e.bound.iter().chain(&e.sigma).all(|&v| v == 0.0));
        assert_eq!(e.bound.len(), 2 * 16);
    }
}

//! Dequant-GEMM/GEMV backends: `y = x W^T` with `W` (`n x k`) kept quantized, `x` holding
//! `m` tokens of `k` f32 values and `y` their `n` outputs (both token-major).
//!
//! Strategies behind one trait, [`GemmBackend`]:
//! - [`fused::Fused`] (ours): activations quantized to 8-bit blocks, integer dot products
//!   straight from the quantized blocks (AVX-512 VNNI or scalar, picked at run time);
//!   Q4_K, NF4, Q4_0 and Q8_0 are repacked at load into 16-row tiles (`tiled`) for a
//!   register-blocked GEMM;
//! - [`dequant::LazyDequant`]: each task dequantizes a tile of rows into a transient f32
//!   buffer and runs an f32 GEMM on it;
//! - [`dequant::EagerDequant`]: the whole matrix dequantized to f32 at load;
//! - [`candle_peer::CandleQMatMul`]: candle-core's `QMatMul`, the peer we measure against;
//! - [`llamacpp_peer`]: llama.cpp's ggml CPU matmul, timed by `tools/ggml-peer` in its own
//!   process (bench-gemm only).
//!
//! [`cuda`] runs the same product on an NVIDIA GPU (`bench-gemm --device cuda`).
//!
//! [`roofline`] measures the memory bandwidth and int8 peak the figures are compared with;
//! [`bench`](mod@bench) is the `bench-gemm` measurement of every strategy.

pub mod activation;
pub mod bench;
pub mod candle_peer;
pub mod cuda;
pub mod dequant;
pub mod dot;
pub mod fused;
pub mod hugepage;
pub mod llamacpp_peer;
pub mod roofline;
#[cfg(target_arch = "x86_64")]
pub mod tiled;
pub mod weights;

pub use dot::Isa;
pub use weights::{QuantMatrix, WeightType};

use anyhow::Result;

/// A way of computing `y = x W^T` for one weight matrix it was built from.
pub trait GemmBackend: Send + Sync {
    /// Name in reports (`fused`, `lazy-dequant`, `eager-dequant`, `candle`).
    fn name(&self) -> &'static str;
    /// Bytes of weights the backend keeps resident (quantized, or f32 when eager).
    fn weight_bytes(&self) -> u64;
    /// Bytes of weights one call with `m` tokens reads (what the bandwidth figures count):
    /// all of them unless the backend keeps several layouts and picks one by `m`.
    fn bytes_read(&self, _m: usize) -> u64 {
        self.weight_bytes()
    }
    /// Transient bytes one call with `m` tokens allocates (activations, tiles, outputs).
    fn scratch_bytes(&self, m: usize) -> u64;
    /// `y[t * n + r] = sum_i x[t * k + i] * W[r, i]` for the `m = x.len() / k` tokens.
    fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()>;
}

/// The strategies `bench-gemm` can run, by name.
/// `llamacpp` is [`llamacpp_peer`], a separate program that `bench-gemm` runs itself.
pub const BACKENDS: [&str; 5] = [
    "fused",
    "lazy-dequant",
    "eager-dequant",
    "candle",
    llamacpp_peer::NAME,
];

/// Builds backend `name` over `w` (`isa` for the fused kernels).
pub fn backend(
    name: &str,
    w: std::sync::Arc<QuantMatrix>,
    isa: Isa,
) -> Result<Box<dyn GemmBackend>> {
    Ok(match name {
        "fused" => Box::new(fused::Fused::new(w, isa)),
        "lazy-dequant" => Box::new(dequant::LazyDequant::new(w)),
        "eager-dequant" => Box::new(dequant::EagerDequant::new(&w)),
        "candle" => Box::new(candle_peer::CandleQMatMul::new(&w)?),
        llamacpp_peer::NAME => {
            anyhow::bail!("the llama.cpp peer is a separate program: bench-gemm runs it")
        }
        _ => crate::bail_invalid!("unknown backend {name:?}: one of {}", BACKENDS.join(", ")),
    })
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: only used by tasks that write disjoint index sets of one live slice.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer to element `i` (a method, so closures capture the whole `SharedOut`).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Seeded activations, `m x k`: N(0, 1) with every 211th value 8x larger (outlier
/// channels, as real activations have).
pub fn synthetic_activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::kv::prng::SplitMix64::new(seed);
    (0..m * k)
        .map(|i| {
            let v = rng.next_gaussian() as f32;
            if i % 211 == 3 {
                8.0 * v
            } else {
                v
            }
        })
        .collect()
}

/// Reference `y = x W^T` in f64 from the exactly dequantized weights (tests and checks).
pub fn reference_matmul(w: &QuantMatrix, x: &[f32]) -> Vec<f64> {
    reference_rows(w, x, &(0..w.n).collect::<Vec<_>>())
}

/// [`reference_matmul`] on output rows `rows` only: `out[t * rows.len() + j]` is row
/// `rows[j]` for token `t`.
pub fn reference_rows(w: &QuantMatrix, x: &[f32], rows: &[usize]) -> Vec<f64> {
    let mut row = vec![0f32; w.k];
    let mut out = vec![0f64; x.len() / w.k * rows.len()];
    for (j, &r) in rows.iter().enumerate() {
        w.dequantize_rows(r..r + 1, &mut row);
        for (t, xt) in x.chunks_exact(w.k).enumerate() {
            let dot = row
                .iter()
                .zip(xt)
                .map(|(&a, &b)| f64::from(a) * f64::from(b));
            out[t * rows.len() + j] = dot.sum();
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Deterministic test activations, `m x k`.
    pub fn activations(m: usize, k: usize) -> Vec<f32> {
        synthetic_activations(m, k, 11)
    }

    /// Asserts that `y` is `want` within the error 8-bit activations can make (a few
    /// quantization steps of the token times the row's weight norm) and, for NF4, the
    /// int8 rounding of the codes (half a step of 1/127 of the block absmax per weight).
    pub fn assert_close(w: &QuantMatrix, x: &[f32], y: &[f32], want: &[f64], what: &str) {
        let norm = |v: &[f32]| {
            v.iter()
                .map(|&a| f64::from(a) * f64::from(a))
                .sum::<f64>()
                .sqrt()
        };
        let mut row = vec![0f32; w.k];
        let (mut wnorm, mut code_err) = (vec![0f64; w.n], vec![0f64; w.n]);
        for r in 0..w.n {
            w.dequantize_rows(r..r + 1, &mut row);
            wnorm[r] = norm(&row);
            let amax = w.row_absmax(r).iter().fold(0f32, |m, v| m.max(*v));
            code_err[r] = f64::from(amax) * 0.5 / 127.0;
        }
        for (i, (&got, &want)) in y.iter().zip(want).enumerate() {
            let (t, r) = (i / w.n, i % w.n);
            let xt = &x[t * w.k..(t + 1) * w.k];
            let amax = xt.iter().fold(0f32, |m, v| m.max(v.abs()));
            let tol = 4.0 * (wnorm[r] * f64::from(amax) / 127.0 + code_err[r] * norm(xt)) + 1e-6;
            assert!(
                (f64::from(got) - want).abs() <= tol,
                "{what}: y[{t}][{r}] = {got}, want {want} (tol {tol})"
            );
        }
    }
}

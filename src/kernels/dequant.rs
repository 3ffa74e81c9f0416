//! The two dequantize-then-f32-GEMM strategies, for comparison with the fused kernels:
//! lazy (a tile of rows dequantized per task into a transient buffer) and eager (the
//! whole matrix dequantized once at load). The f32 GEMM is the `gemm` crate's.

use super::{GemmBackend, QuantMatrix, SharedOut};
use anyhow::Result;
use rayon::prelude::*;
use std::sync::Arc;

/// Rows a lazy task dequantizes at once (64 x 4096 x 4 B = 1 MiB: fits L2).
pub const LAZY_TILE_ROWS: usize = 64;

/// `y[:, cols]` (`m x cols`, row stride `n`) = `x` (`m x k`) times `tile^T`, where `tile`
/// holds `cols` rows of `k` f32 values.
///
/// # Safety
/// `y` must point at `m` rows of stride `n` with `cols` writable values each, not
/// written by anyone else during the call.
unsafe fn gemm_rows(
    x: &[f32],
    k: usize,
    tile: &[f32],
    y: *mut f32,
    n: usize,
    parallelism: gemm::Parallelism,
) {
    let (m, cols) = (x.len() / k, tile.len() / k);
    gemm::gemm(
        m,
        cols,
        k,
        y,
        1,
        n as isize,
        false,
        x.as_ptr(),
        1,
        k as isize,
        tile.as_ptr(),
        k as isize,
        1,
        0.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// Lazy dequantization: each task turns [`LAZY_TILE_ROWS`] rows into f32 and multiplies.
pub struct LazyDequant {
    w: Arc<QuantMatrix>,
}

impl LazyDequant {
    /// A lazy-dequantization backend over `w`.
    pub fn new(w: Arc<QuantMatrix>) -> Self {
        LazyDequant { w }
    }
}

impl GemmBackend for LazyDequant {
    fn name(&self) -> &'static str {
        "lazy-dequant"
    }

    fn weight_bytes(&self) -> u64 {
        self.w.bytes()
    }

    fn scratch_bytes(&self, _m: usize) -> u64 {
        (rayon::current_num_threads() * LAZY_TILE_ROWS * self.w.k * 4) as u64
    }

    fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let (n, k) = (self.w.n, self.w.k);
        assert!(
            x.len().is_multiple_of(k) && y.len() == x.len() / k * n,
            "x is m x k, y is m x n"
        );
        let out = SharedOut(y.as_mut_ptr());
        (0..n.div_ceil(LAZY_TILE_ROWS))
            .into_par_iter()
            .for_each_init(
                || vec![0f32; LAZY_TILE_ROWS * k],
                |buf, task| {
                    let rows = task * LAZY_TILE_ROWS..((task + 1) * LAZY_TILE_ROWS).min(n);
                    let tile = &mut buf[..rows.len() * k];
                    self.w.dequantize_rows(rows.clone(), tile);
                    // SAFETY: this task alone writes columns `rows` of the m x n output.
                    unsafe {
                        let y = out.at(rows.start);
                        gemm_rows(x, k, tile, y, n, gemm::Parallelism::None);
                    }
                },
            );
        Ok(())
    }
}

/// Eager dequantization: the matrix is f32 from load on (4 bytes per weight).
pub struct EagerDequant {
    k: usize,
    w: Vec<f32>,
}

impl EagerDequant {
    /// Dequantizes all of `w` (rows in parallel).
    pub fn new(w: &QuantMatrix) -> Self {
        let mut f = vec![0f32; w.n * w.k];
        f.par_chunks_mut(w.k)
            .enumerate()
            .for_each(|(r, row)| w.dequantize_rows(r..r + 1, row));
        EagerDequant { k: w.k, w: f }
    }
}

impl GemmBackend for EagerDequant {
    fn name(&self) -> &'static str {
        "eager-dequant"
    }

    fn weight_bytes(&self) -> u64 {
        (self.w.len() * 4) as u64
    }

    fn scratch_bytes(&self, _m: usize) -> u64 {
        0
    }

    fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let (n, k) = (self.w.len() / self.k, self.k);
        assert!(
            x.len().is_multiple_of(k) && y.len() == x.len() / k * n,
            "x is m x k, y is m x n"
        );
        let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
        // SAFETY: `y` is exactly m x n and borrowed mutably for the call.
        unsafe { gemm_rows(x, k, &self.w, y.as_mut_ptr(), n, threads) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::activations;
    use super::super::{reference_matmul, WeightType};
    use super::*;

    #[test]
    fn lazy_and_eager_equal_the_reference_to_f32_rounding() {
        for ty in WeightType::ALL {
            let w = Arc::new(QuantMatrix::random(ty, 130, 256, 4).unwrap());
            for m in [1, 7] {
                let x = activations(m, 256);
                let want = reference_matmul(&w, &x);
                let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
                let backends: [Box<dyn GemmBackend>; 2] = [
                    Box::new(LazyDequant::new(w.clone())),
                    Box::new(EagerDequant::new(&w)),
                ];
                for b in backends {
                    let mut y = vec![f32::NAN; m * 130];
                    b.matmul(&x, &mut y).unwrap();
                    for (got, want) in y.iter().zip(&want) {
                        let err = (f64::from(*got) - want).abs();
                        assert!(
                            err <= 1e-4 * scale,
                            "{ty:?} {} m={m}: {got} vs {want}",
                            b.name()
                        );
                    }
                }
            }
        }
    }
}

//! The fused backend: integer dot products straight from the quantized blocks.
//!
//! The activations are quantized once per call; rayon splits the output rows into
//! tasks; a task walks its rows for each group of tokens, so a row (a few KiB) is read
//! from L2 for every group while the group's activations stay in L1.

use super::activation::{ActRow, Activations};
use super::dot::{dot_rows, Isa};
use super::{GemmBackend, QuantMatrix, SharedOut};
use anyhow::Result;
use rayon::prelude::*;
use std::sync::Arc;

/// Tokens whose activations a task keeps hot while it walks its rows.
const TOKEN_GROUP: usize = 16;

/// Fused quantized GEMM/GEMV over one weight matrix.
pub struct Fused {
    w: Arc<QuantMatrix>,
    isa: Isa,
}

impl Fused {
    /// A fused backend over `w` running on `isa`.
    pub fn new(w: Arc<QuantMatrix>, isa: Isa) -> Self {
        Fused { w, isa }
    }
}

impl GemmBackend for Fused {
    fn name(&self) -> &'static str {
        "fused"
    }

    fn weight_bytes(&self) -> u64 {
        self.w.bytes()
    }

    fn scratch_bytes(&self, m: usize) -> u64 {
        let k = self.w.k as u64;
        let block = self.w.ty.activation_block() as u64;
        m as u64 * (k + k / block * 4 + k / 16 * 2)
    }

    fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let (n, k) = (self.w.n, self.w.k);
        assert!(
            x.len().is_multiple_of(k) && y.len() == x.len() / k * n,
            "x is m x k, y is m x n"
        );
        let acts = Activations::for_weights(x, k, self.w.ty);
        let tokens: Vec<ActRow<'_>> = (0..acts.tokens()).map(|t| acts.token(t)).collect();
        let m = tokens.len();
        // Enough tasks to balance the threads, few enough to keep per-task overhead small.
        let rows_per_task = if m == 1 { 64 } else { 16 };
        let out = SharedOut(y.as_mut_ptr());
        (0..n.div_ceil(rows_per_task))
            .into_par_iter()
            .for_each(|task| {
                let rows = task * rows_per_task..((task + 1) * rows_per_task).min(n);
                let mut dots = [0f32; TOKEN_GROUP];
                for (g, group) in tokens.chunks(TOKEN_GROUP).enumerate() {
                    for r in rows.clone() {
                        let dots = &mut dots[..group.len()];
                        dot_rows(self.isa, &self.w, r, group, dots);
                        for (i, &v) in dots.iter().enumerate() {
                            let t = g * TOKEN_GROUP + i;
                            // SAFETY: `t < m`, `r < n`, and each (t, r) is written by the one
                            // task that owns row r, while `y` (m x n) outlives the loop.
                            unsafe { *out.at(t * n + r) = v };
                        }
                    }
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{activations, assert_close};
    use super::super::{reference_matmul, WeightType};
    use super::*;

    #[test]
    fn fused_matches_the_f64_reference_on_every_isa_and_token_count() {
        for ty in WeightType::ALL {
            let w = Arc::new(QuantMatrix::random(ty, 70, 512, 5).unwrap());
            for m in [1, 5, 21] {
                let x = activations(m, 512);
                let want = reference_matmul(&w, &x);
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; m * 70];
                    Fused::new(w.clone(), isa).matmul(&x, &mut y).unwrap();
                    assert_close(&w, &x, &y, &want, &format!("{ty:?} {isa:?} m={m}"));
                }
            }
        }
    }

    /// The ggml reference bytes of `fixtures/golden/ggml` (64 rows of 512, outlier, zero
    /// and constant rows among them) as weights: every ISA against the f64 reference.
    #[test]
    fn fused_on_ggml_golden_blocks() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/ggml");
        for (ty, file) in [
            (WeightType::Q4K, "Q4_K"),
            (WeightType::Q6K, "Q6_K"),
            (WeightType::Q8_0, "Q8_0"),
            (WeightType::Q4_0, "Q4_0"),
            (WeightType::Q4K, "Q4_K.imatrix"),
        ] {
            let data = std::fs::read(dir.join(format!("{file}.bin"))).unwrap();
            let w = Arc::new(QuantMatrix {
                ty,
                n: 64,
                k: 512,
                data,
                absmax: Vec::new(),
            });
            assert_eq!(w.data.len(), 64 * w.row_bytes(), "{file}");
            let x = activations(9, 512);
            let want = reference_matmul(&w, &x);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; 9 * 64];
                Fused::new(w.clone(), isa).matmul(&x, &mut y).unwrap();
                assert_close(&w, &x, &y, &want, &format!("golden {file} {isa:?}"));
            }
        }
    }

    #[test]
    fn simd_and_scalar_agree_to_rounding() {
        let isas = Isa::available();
        for ty in WeightType::ALL {
            let w = Arc::new(QuantMatrix::random(ty, 33, 1024, 9).unwrap());
            let x = activations(6, 1024);
            let mut ys = Vec::new();
            for &isa in &isas {
                let mut y = vec![0f32; 6 * 33];
                Fused::new(w.clone(), isa).matmul(&x, &mut y).unwrap();
                ys.push(y);
            }
            for y in &ys[1..] {
                for (a, b) in y.iter().zip(&ys[0]) {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1e-2),
                        "{ty:?}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

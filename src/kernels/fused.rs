//! The fused backend: integer dot products straight from the quantized blocks.
//!
//! The activations are quantized once per call; rayon splits the output rows into
//! tasks; a task walks its rows for each group of tokens, so a row (a few KiB) is read
//! from L2 for every group while the group's activations stay in L1.

use super::activation::{ActRow, Activations};
use super::dot::{dot_rows, Isa};
use super::{GemmBackend, QuantMatrix, SharedOut, WeightType};
use anyhow::Result;
use rayon::prelude::*;
use std::sync::Arc;

/// Tokens whose activations a task keeps hot while it walks its rows.
const TOKEN_GROUP: usize = 16;

/// How the fused backend holds its weights.
enum Layout {
    /// ggml / bitsandbytes rows, as read from the file.
    Rows(Arc<QuantMatrix>),
    /// Q4_K, Q5_K, IQ4_XS, NF4, Q4_0 or Q8_0 in 16-row tiles (AVX-512 VNNI; AVX2 but
    /// Q5_K and IQ4_XS).
    #[cfg(target_arch = "x86_64")]
    Tiled(super::tiled::Tiled),
    /// Q6_K: the rows for fewer than [`super::tiled::Q6K_TILES_FROM_M`] tokens (its
    /// tiles hold bytes, not 6 bits), the tiles from there on (AVX-512 VNNI only).
    #[cfg(target_arch = "x86_64")]
    RowsAndTiles(Arc<QuantMatrix>, super::tiled::Tiled),
}

/// The weights one call runs on ([`Fused::pick`]).
enum Picked<'a> {
    Rows(&'a QuantMatrix),
    #[cfg(target_arch = "x86_64")]
    Tiles(&'a super::tiled::Tiled),
}

/// Fused quantized GEMM/GEMV over one weight matrix.
pub struct Fused {
    ty: WeightType,
    n: usize,
    k: usize,
    layout: Layout,
    isa: Isa,
}

impl Fused {
    /// A fused backend over `w` running on `isa`; on AVX-512 VNNI every type with a
    /// multiple of 16 rows is repacked into tiles (and the rows are then dropped, but for
    /// Q6_K, which keeps them for few tokens); on AVX2 every such type but Q6_K, Q5_K and
    /// IQ4_XS (no AVX2 tile kernels: they run their row kernels).
    pub fn new(w: Arc<QuantMatrix>, isa: Isa) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let fits = match isa {
                Isa::Avx512Vnni => super::tiled::Tiled::fits(&w),
                Isa::Avx2 => super::tiled::Tiled::fits_avx2(&w),
                _ => false,
            };
            if fits {
                let tiles = super::tiled::Tiled::new(&w);
                let (ty, n, k) = (w.ty, w.n, w.k);
                let layout = if tiles.is_q6_k() {
                    // The rows serve the GEMV, which streams them: on huge pages.
                    Layout::RowsAndTiles(Arc::new(w.on_huge_pages()), tiles)
                } else {
                    Layout::Tiled(tiles)
                };
                return Fused {
                    ty,
                    n,
                    k,
                    layout,
                    isa,
                };
            }
        }
        Self::rows(w, isa)
    }

    /// A fused backend over `w` in its own row layout on `isa`: no repacked copy, so the
    /// weights stay where they are (a memory-mapped file, for `crate::candle`).
    pub fn rows(w: Arc<QuantMatrix>, isa: Isa) -> Self {
        Fused {
            ty: w.ty,
            n: w.n,
            k: w.k,
            layout: Layout::Rows(w),
            isa,
        }
    }

    /// Whether the weights are held as 16-row tiles.
    pub fn is_tiled(&self) -> bool {
        !matches!(self.layout, Layout::Rows(_))
    }

    /// The weights a call with `m` tokens runs on (Q6_K: rows below
    /// [`super::tiled::Q6K_TILES_FROM_M`] tokens, tiles from there on).
    fn pick(&self, m: usize) -> Picked<'_> {
        match &self.layout {
            Layout::Rows(w) => Picked::Rows(w),
            #[cfg(target_arch = "x86_64")]
            Layout::RowsAndTiles(w, _) if m < super::tiled::Q6K_TILES_FROM_M => Picked::Rows(w),
            #[cfg(target_arch = "x86_64")]
            Layout::Tiled(t) | Layout::RowsAndTiles(_, t) => Picked::Tiles(t),
        }
    }
}

impl GemmBackend for Fused {
    fn name(&self) -> &'static str {
        "fused"
    }

    fn weight_bytes(&self) -> u64 {
        match &self.layout {
            Layout::Rows(w) => w.bytes(),
            #[cfg(target_arch = "x86_64")]
            Layout::Tiled(t) => t.bytes(),
            #[cfg(target_arch = "x86_64")]
            Layout::RowsAndTiles(w, t) => w.bytes() + t.bytes(),
        }
    }

    fn bytes_read(&self, m: usize) -> u64 {
        match self.pick(m) {
            Picked::Rows(w) => w.bytes(),
            #[cfg(target_arch = "x86_64")]
            Picked::Tiles(t) => t.bytes(),
        }
    }

    fn scratch_bytes(&self, m: usize) -> u64 {
        let k = self.k as u64;
        let block = self.ty.activation_block() as u64;
        // Only the row kernels read the per-lane arrays; tiles correct per block.
        let lanes = match (&self.layout, self.ty.lane_bias()) {
            (Layout::Rows(_), Some(_)) => k / 4 * 8,
            _ => 0,
        };
        m as u64 * (k + k / block * 4 + k / 16 * 2 + lanes)
    }

    fn matmul(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        let (n, k) = (self.n, self.k);
        assert!(
            x.len().is_multiple_of(k) && y.len() == x.len() / k * n,
            "x is m x k, y is m x n"
        );
        let m = x.len() / k;
        let w = match self.pick(m) {
            Picked::Rows(w) => w,
            #[cfg(target_arch = "x86_64")]
            Picked::Tiles(t) => {
                // The tile kernels correct offsets per block: no lane arrays needed.
                let acts = Activations::quantize(x, k, self.ty.activation_block(), None);
                // SAFETY: tiles are only built for `Isa::Avx512Vnni` and `Isa::Avx2`, which
                // come from a detected level.
                unsafe {
                    match self.isa {
                        Isa::Avx2 => super::tiled::matmul_avx2(t, &acts, y),
                        _ if m == 1 => super::tiled::gemv(t, &acts, y),
                        _ => super::tiled::matmul(t, &acts, y),
                    }
                };
                return Ok(());
            }
        };
        let acts = Activations::for_weights(x, k, self.ty);
        let tokens: Vec<ActRow<'_>> = (0..acts.tokens()).map(|t| acts.token(t)).collect();
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
                        dot_rows(self.isa, w, r, group, dots);
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
    use super::super::reference_matmul;
    use super::super::test_support::{activations, assert_close};
    use super::*;

    #[test]
    fn fused_matches_the_f64_reference_on_every_isa_and_token_count() {
        for ty in WeightType::ALL {
            // 70 rows: the row kernels; 48: tiles on AVX-512 (Q6_K: from 4 tokens on) and
            // AVX2 (but Q6_K, Q5_K and IQ4_XS).
            for n in [70, 48] {
                let w = Arc::new(QuantMatrix::random(ty, n, 512, 5).unwrap());
                for m in [1, 5, 21] {
                    let x = activations(m, 512);
                    let want = reference_matmul(&w, &x);
                    for isa in Isa::available() {
                        // `new` (tiles where they fit) and `rows` (the row layout always).
                        for (b, how) in [
                            (Fused::new(w.clone(), isa), "new"),
                            (Fused::rows(w.clone(), isa), "rows"),
                        ] {
                            let mut y = vec![f32::NAN; m * n];
                            b.matmul(&x, &mut y).unwrap();
                            assert_close(
                                &w,
                                &x,
                                &y,
                                &want,
                                &format!("{ty:?} {isa:?} {how} n={n} m={m}"),
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bytes_read_count_the_layout_each_token_count_runs_on() {
        let w = Arc::new(QuantMatrix::random(WeightType::Q6K, 48, 512, 5).unwrap());
        for isa in Isa::available() {
            let b = Fused::new(w.clone(), isa);
            let few = b.bytes_read(1);
            assert_eq!(few, w.bytes(), "{isa:?}: few tokens run on the rows");
            let many = b.bytes_read(512);
            assert_eq!(
                b.weight_bytes(),
                if many == few { few } else { few + many },
                "{isa:?}"
            );
        }
        let rows = Fused::rows(w.clone(), Isa::available()[0]);
        assert_eq!(rows.bytes_read(512), w.bytes());
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
            (WeightType::Q5K, "Q5_K"),
            (WeightType::Q5K, "Q5_K.imatrix"),
            (WeightType::Iq4Xs, "IQ4_XS"),
            (WeightType::Iq4Xs, "IQ4_XS.imatrix"),
        ] {
            let data = std::fs::read(dir.join(format!("{file}.bin"))).unwrap();
            let w = Arc::new(QuantMatrix {
                ty,
                n: 64,
                k: 512,
                data: data.into(),
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
        // 33 rows: the row kernels; 32: tiles on AVX-512 (all types) and AVX2 (but Q6_K,
        // Q5_K and IQ4_XS).
        let all = |n: usize| WeightType::ALL.map(|t| (t, n));
        for (ty, n) in all(33).into_iter().chain(all(32)) {
            let w = Arc::new(QuantMatrix::random(ty, n, 1024, 9).unwrap());
            let x = activations(6, 1024);
            let mut ys = Vec::new();
            for &isa in &isas {
                let mut y = vec![0f32; 6 * n];
                let b = Fused::new(w.clone(), isa);
                let avx2_rows = matches!(ty, WeightType::Q6K | WeightType::Q5K | WeightType::Iq4Xs);
                let tiles = n == 32 && (isa == Isa::Avx512Vnni || (isa == Isa::Avx2 && !avx2_rows));
                assert_eq!(b.is_tiled(), tiles, "{ty:?} {isa:?} n={n}");
                b.matmul(&x, &mut y).unwrap();
                ys.push(y);
            }
            for y in &ys[1..] {
                for (a, b) in y.iter().zip(&ys[0]) {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1e-2),
                        "{ty:?} n={n}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

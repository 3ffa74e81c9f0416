//! Nearest-codeword search, the encoder's hot spot.
//!
//! `argmin_i ||b - c_i||² = argmax_i (b·c_i - ||c_i||²/2)`, so each codebook
//! is stored as structure-of-arrays columns `c_j[i]` plus a bias
//! `-||c_i||²/2`. Blocks are also laid out structure-of-arrays ("lanes"),
//! so one codeword is compared against 16 blocks per vector instruction.
//!
//! Every kernel computes exactly the same score per (block, codeword):
//! `s = bias_i; s = fma(b_j, c_j[i], s)` for `j = 0..k` in order (single
//! rounding per step, `f32::mul_add` in the portable kernel), and keeps the
//! first index with the strictly largest score. Therefore all kernels return
//! identical indices; the tests check this.

use anyhow::{bail, Result};

use super::codebook::Codebook;
use crate::cpu::Level;

/// Lane buffers passed to [`NearestSearch::nearest_lanes`] must have a stride that is a
/// multiple of this.
pub const LANE_MULTIPLE: usize = 64;

/// Search tables for one codebook.
#[derive(Debug, Clone)]
pub struct NearestSearch {
    k: usize,
    n: usize,
    cols: Vec<f32>,
    bias: Vec<f32>,
    kernel: Level,
}

impl NearestSearch {
    /// Builds tables using the best kernel for this CPU.
    pub fn new(cb: &Codebook) -> Self {
        Self::build(cb, crate::cpu::level())
    }

    /// Builds tables forcing the kernel of `kernel` ([`Level::Scalar`]: the plain Rust
    /// reference with `f32::mul_add`; `Avx2`: the same code compiled with AVX2 + FMA;
    /// `Avx512`: AVX-512F intrinsics); errors if the CPU lacks it.
    pub fn with_kernel(cb: &Codebook, kernel: Level) -> Result<Self> {
        if !kernel.is_supported() {
            bail!("search kernel {kernel} is not supported on this CPU");
        }
        Ok(Self::build(cb, kernel))
    }

    fn build(cb: &Codebook, kernel: Level) -> Self {
        let (k, n) = (cb.k(), cb.n());
        let mut cols = vec![0.0f32; k * n];
        let mut bias = vec![0.0f32; n];
        for i in 0..n {
            let c = cb.codeword(i);
            let mut nn = 0.0f64;
            for (j, &v) in c.iter().enumerate() {
                cols[j * n + i] = v;
                nn += f64::from(v) * f64::from(v);
            }
            bias[i] = (-0.5 * nn) as f32;
        }
        Self {
            k,
            n,
            cols,
            bias,
            kernel,
        }
    }

    /// Level in use.
    pub fn kernel(&self) -> Level {
        self.kernel
    }

    /// Block dimension k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Nearest codeword for each of `stride` lanes. `lanes[j * stride + l]` is coordinate
    /// `j` of block `l`; `stride` must be a multiple of [`LANE_MULTIPLE`],
    /// `lanes.len() >= k * stride`, `out.len() >= stride`.
    pub fn nearest_lanes(&self, lanes: &[f32], stride: usize, out: &mut [u16]) -> Result<()> {
        if !stride.is_multiple_of(LANE_MULTIPLE)
            || lanes.len() < self.k * stride
            || out.len() < stride
        {
            bail!(
                "lane buffer mismatch: stride {stride} (multiple of {LANE_MULTIPLE}), {} values for k={}, {} outputs",
                lanes.len(),
                self.k,
                out.len()
            );
        }
        self.nearest_lanes_unchecked(lanes, stride, out);
        Ok(())
    }

    pub(super) fn nearest_lanes_unchecked(&self, lanes: &[f32], stride: usize, out: &mut [u16]) {
        match self.kernel {
            Level::Scalar => portable(self.k, self.n, &self.cols, &self.bias, lanes, stride, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the kernel was checked to be supported at construction.
            Level::Avx2 => unsafe { x86::avx2(self, lanes, stride, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx512 => unsafe { x86::avx512(self, lanes, stride, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => portable(self.k, self.n, &self.cols, &self.bias, lanes, stride, out),
        }
    }

    /// Nearest codeword for each k-block of `blocks` (block-major, `out.len()` blocks).
    pub fn nearest_blocks(&self, blocks: &[f32], out: &mut [u16]) -> Result<()> {
        let k = self.k;
        if blocks.len() != out.len() * k {
            bail!(
                "{} values do not form {} blocks of {k}",
                blocks.len(),
                out.len()
            );
        }
        const CHUNK: usize = 16 * LANE_MULTIPLE;
        let mut lanes = vec![0.0f32; k * CHUNK];
        let mut idx = vec![0u16; CHUNK];
        for (bchunk, ochunk) in blocks.chunks(CHUNK * k).zip(out.chunks_mut(CHUNK)) {
            let count = ochunk.len();
            let stride = count.div_ceil(LANE_MULTIPLE) * LANE_MULTIPLE;
            for (l, b) in bchunk.chunks_exact(k).enumerate() {
                for (j, &v) in b.iter().enumerate() {
                    lanes[j * stride + l] = v;
                }
            }
            for j in 0..k {
                lanes[j * stride + count..(j + 1) * stride].fill(0.0);
            }
            self.nearest_lanes_unchecked(&lanes[..k * stride], stride, &mut idx[..stride]);
            ochunk.copy_from_slice(&idx[..count]);
        }
        Ok(())
    }
}

/// Reference kernel: 16 lanes at a time, codewords in order, strict `>` keeps the first best.
#[inline(always)]
fn portable(
    k: usize,
    n: usize,
    cols: &[f32],
    bias: &[f32],
    lanes: &[f32],
    stride: usize,
    out: &mut [u16],
) {
    const W: usize = 16;
    let mut b = [[0.0f32; W]; 8];
    for base in (0..stride).step_by(W) {
        for (j, bj) in b.iter_mut().enumerate().take(k) {
            bj.copy_from_slice(&lanes[j * stride + base..j * stride + base + W]);
        }
        let mut best = [f32::NEG_INFINITY; W];
        let mut idx = [0u32; W];
        for i in 0..n {
            let mut s = [bias[i]; W];
            for (j, bj) in b.iter().enumerate().take(k) {
                let c = cols[j * n + i];
                for (sl, &bl) in s.iter_mut().zip(bj) {
                    *sl = bl.mul_add(c, *sl);
                }
            }
            for l in 0..W {
                let better = s[l] > best[l];
                best[l] = if better { s[l] } else { best[l] };
                idx[l] = if better { i as u32 } else { idx[l] };
            }
        }
        for (o, &v) in out[base..base + W].iter_mut().zip(&idx) {
            *o = v as u16;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NearestSearch;
    use std::arch::x86_64::*;

    /// AVX2 + FMA dispatch: explicit 8-lane kernels specialized on k.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(s: &NearestSearch, lanes: &[f32], stride: usize, out: &mut [u16]) {
        let (n, c, b) = (s.n, &s.cols[..], &s.bias[..]);
        match s.k {
            1 => kernel8::<1, 4>(n, c, b, lanes, stride, out),
            2 => kernel8::<2, 4>(n, c, b, lanes, stride, out),
            4 => kernel8::<4, 4>(n, c, b, lanes, stride, out),
            8 => kernel8::<8, 2>(n, c, b, lanes, stride, out),
            _ => super::portable(s.k, n, c, b, lanes, stride, out),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel8<const K: usize, const G: usize>(
        n: usize,
        cols: &[f32],
        bias: &[f32],
        lanes: &[f32],
        stride: usize,
        out: &mut [u16],
    ) {
        debug_assert!(
            stride.is_multiple_of(8 * G) && lanes.len() >= K * stride && out.len() >= stride
        );
        debug_assert!(cols.len() == K * n && bias.len() == n);
        let lp = lanes.as_ptr();
        let cp = cols.as_ptr();
        let bp = bias.as_ptr();
        let mut base = 0;
        while base < stride {
            let mut b = [[_mm256_setzero_ps(); K]; G];
            for (g, bg) in b.iter_mut().enumerate() {
                for (j, v) in bg.iter_mut().enumerate() {
                    // SAFETY: j * stride + base + 8g + 7 < K * stride <= lanes.len().
                    *v = unsafe { _mm256_loadu_ps(lp.add(j * stride + base + g * 8)) };
                }
            }
            let mut best = [_mm256_set1_ps(f32::NEG_INFINITY); G];
            let mut idx = [_mm256_setzero_si256(); G];
            for i in 0..n {
                let iv = _mm256_set1_epi32(i as i32);
                // SAFETY: i < n = bias.len(), j * n + i < K * n = cols.len().
                let bi = _mm256_set1_ps(unsafe { *bp.add(i) });
                let mut c = [_mm256_setzero_ps(); K];
                for (j, cj) in c.iter_mut().enumerate() {
                    *cj = _mm256_set1_ps(unsafe { *cp.add(j * n + i) });
                }
                for g in 0..G {
                    let mut sc = bi;
                    for j in 0..K {
                        sc = _mm256_fmadd_ps(b[g][j], c[j], sc);
                    }
                    let m = _mm256_cmp_ps::<_CMP_LT_OQ>(best[g], sc);
                    best[g] = _mm256_blendv_ps(best[g], sc, m);
                    idx[g] = _mm256_blendv_epi8(idx[g], iv, _mm256_castps_si256(m));
                }
            }
            for (g, ig) in idx.iter().enumerate() {
                let mut tmp = [0i32; 8];
                // SAFETY: tmp holds 8 i32 = 32 bytes.
                unsafe { _mm256_storeu_si256(tmp.as_mut_ptr() as *mut __m256i, *ig) };
                for (o, &v) in out[base + g * 8..base + g * 8 + 8].iter_mut().zip(&tmp) {
                    *o = v as u16;
                }
            }
            base += 8 * G;
        }
    }

    /// Dispatches to a kernel specialized on k (block dim) and G (16-lane groups per pass).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(s: &NearestSearch, lanes: &[f32], stride: usize, out: &mut [u16]) {
        let (n, c, b) = (s.n, &s.cols[..], &s.bias[..]);
        match s.k {
            1 => kernel::<1, 4>(n, c, b, lanes, stride, out),
            2 => kernel::<2, 4>(n, c, b, lanes, stride, out),
            3 => kernel::<3, 4>(n, c, b, lanes, stride, out),
            4 => kernel::<4, 4>(n, c, b, lanes, stride, out),
            5 => kernel::<5, 2>(n, c, b, lanes, stride, out),
            6 => kernel::<6, 2>(n, c, b, lanes, stride, out),
            7 => kernel::<7, 2>(n, c, b, lanes, stride, out),
            _ => kernel::<8, 2>(n, c, b, lanes, stride, out),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const K: usize, const G: usize>(
        n: usize,
        cols: &[f32],
        bias: &[f32],
        lanes: &[f32],
        stride: usize,
        out: &mut [u16],
    ) {
        debug_assert!(
            stride.is_multiple_of(16 * G) && lanes.len() >= K * stride && out.len() >= stride
        );
        debug_assert!(cols.len() == K * n && bias.len() == n);
        let lp = lanes.as_ptr();
        let cp = cols.as_ptr();
        let bp = bias.as_ptr();
        let mut base = 0;
        while base < stride {
            let mut b = [[_mm512_setzero_ps(); K]; G];
            for (g, bg) in b.iter_mut().enumerate() {
                for (j, v) in bg.iter_mut().enumerate() {
                    // SAFETY: j * stride + base + 16g + 15 < K * stride <= lanes.len().
                    *v = unsafe { _mm512_loadu_ps(lp.add(j * stride + base + g * 16)) };
                }
            }
            let mut best = [_mm512_set1_ps(f32::NEG_INFINITY); G];
            let mut idx = [_mm512_setzero_si512(); G];
            for i in 0..n {
                let iv = _mm512_set1_epi32(i as i32);
                // SAFETY: i < n = bias.len(), j * n + i < K * n = cols.len().
                let bi = _mm512_set1_ps(unsafe { *bp.add(i) });
                let mut c = [_mm512_setzero_ps(); K];
                for (j, cj) in c.iter_mut().enumerate() {
                    *cj = _mm512_set1_ps(unsafe { *cp.add(j * n + i) });
                }
                for g in 0..G {
                    let mut sc = bi;
                    for j in 0..K {
                        sc = _mm512_fmadd_ps(b[g][j], c[j], sc);
                    }
                    let m = _mm512_cmplt_ps_mask(best[g], sc);
                    best[g] = _mm512_mask_mov_ps(best[g], m, sc);
                    idx[g] = _mm512_mask_mov_epi32(idx[g], m, iv);
                }
            }
            for (g, ig) in idx.iter().enumerate() {
                let packed = _mm512_cvtepi32_epi16(*ig);
                // SAFETY: base + 16g + 15 < stride <= out.len(); 16 u16 = 32 bytes.
                unsafe {
                    _mm256_storeu_si256(out.as_mut_ptr().add(base + g * 16) as *mut __m256i, packed)
                };
            }
            base += 16 * G;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::prng::SplitMix64;
    use super::*;

    fn random_codebook(k: usize, n: usize, seed: u64, dup: bool) -> Codebook {
        let mut r = SplitMix64::new(seed);
        let mut cw: Vec<f32> = (0..n * k).map(|_| r.next_gaussian() as f32 * 0.2).collect();
        if dup {
            // Exact duplicates force ties; the lowest index must win everywhere.
            let (a, b) = cw.split_at_mut(k * n / 2);
            b.copy_from_slice(a);
        }
        Codebook::new(k, n, 64, cw).unwrap()
    }

    fn brute_force(cb: &Codebook, block: &[f32]) -> u16 {
        let mut best = (f64::INFINITY, 0);
        for i in 0..cb.n() {
            let d: f64 = cb
                .codeword(i)
                .iter()
                .zip(block)
                .map(|(&c, &b)| (f64::from(c) - f64::from(b)).powi(2))
                .sum();
            if d < best.0 {
                best = (d, i);
            }
        }
        best.1 as u16
    }

    #[test]
    fn all_kernels_agree_exactly() {
        for &(k, n) in &[(1, 4), (2, 16), (3, 8), (4, 32), (4, 256), (5, 16), (8, 64)] {
            for dup in [false, true] {
                let cb = random_codebook(k, n, 11 + k as u64, dup);
                let mut r = SplitMix64::new(3);
                let count = 1000;
                let mut blocks: Vec<f32> = (0..count * k)
                    .map(|_| r.next_gaussian() as f32 * 0.2)
                    .collect();
                // Blocks equal to codewords and to zero exercise ties.
                blocks[..k].copy_from_slice(cb.codeword(n - 1));
                blocks[k..2 * k].fill(0.0);
                let reference = NearestSearch::with_kernel(&cb, Level::Scalar).unwrap();
                let mut want = vec![0u16; count];
                reference.nearest_blocks(&blocks, &mut want).unwrap();
                for kernel in [Level::Avx2, Level::Avx512] {
                    let Ok(s) = NearestSearch::with_kernel(&cb, kernel) else {
                        continue;
                    };
                    let mut got = vec![0u16; count];
                    s.nearest_blocks(&blocks, &mut got).unwrap();
                    assert_eq!(got, want, "kernel {kernel:?} k={k} n={n} dup={dup}");
                }
                if dup {
                    assert!(want.iter().all(|&i| (i as usize) < n / 2));
                }
            }
        }
    }

    #[test]
    fn matches_brute_force_distance() {
        let cb = random_codebook(4, 64, 5, false);
        let s = NearestSearch::new(&cb);
        let mut r = SplitMix64::new(8);
        let blocks: Vec<f32> = (0..400).map(|_| r.next_gaussian() as f32 * 0.2).collect();
        let mut got = vec![0u16; 100];
        s.nearest_blocks(&blocks, &mut got).unwrap();
        let mut mismatches = 0;
        for (b, &g) in blocks.chunks(4).zip(&got) {
            if brute_force(&cb, b) != g {
                mismatches += 1;
            }
        }
        // The bias form rounds differently from direct distances only on near-ties.
        assert!(mismatches <= 1, "{mismatches} mismatches");
    }

    #[test]
    fn rejects_bad_buffers() {
        let cb = random_codebook(2, 4, 1, false);
        let s = NearestSearch::new(&cb);
        assert!(s.nearest_blocks(&[0.0; 3], &mut [0; 2]).is_err());
        assert!(s.nearest_lanes(&[0.0; 128], 63, &mut [0; 64]).is_err());
        assert!(s.nearest_lanes(&[0.0; 64], 64, &mut [0; 64]).is_err());
    }
}

//! Training data and deterministic Lloyd-Max (k-means) refinement.
//!
//! Determinism: samples are split into fixed chunks of [`CHUNK_BLOCKS`] blocks
//! (independent of the thread count); each chunk's assignment, squared-error
//! sum and per-cell `f64` coordinate sums are computed in sample order, and the
//! chunk results are merged in chunk order. The same inputs therefore give the
//! same codebook bytes for any rayon thread count on the same machine and build.

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::codebook::Codebook;
use super::prng::{SplitMix64, TRAINING_STREAM};
use super::rotation::Rotation;
use super::search::NearestSearch;

/// Blocks per deterministic work chunk.
pub const CHUNK_BLOCKS: usize = 8192;

/// `count` k-blocks of uniformly random unit vectors in R^D (the spherical-Beta source).
///
/// Vector `v` is `D` Gaussians from [`SplitMix64`] seeded with `seed ^ TRAINING_STREAM`
/// (Box-Muller, `f64`), normalized; its `D/k` consecutive blocks are appended in
/// order until `count` blocks exist.
pub fn spherical_beta_blocks(
    padded_dim: usize,
    k: usize,
    count: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    if k == 0 || !padded_dim.is_multiple_of(k) {
        bail!("padded_dim {padded_dim} is not a multiple of block_dim {k}");
    }
    let mut rng = SplitMix64::new(seed ^ TRAINING_STREAM);
    let mut out = Vec::with_capacity(count * k);
    let mut v = vec![0.0f64; padded_dim];
    while out.len() < count * k {
        let mut n2 = 0.0;
        for x in v.iter_mut() {
            *x = rng.next_gaussian();
            n2 += *x * *x;
        }
        let inv = 1.0 / n2.sqrt();
        let take = (count * k - out.len()).min(padded_dim);
        out.extend(v[..take].iter().map(|x| (x * inv) as f32));
    }
    Ok(out)
}

/// Rotated unit k-blocks of calibration vectors (`rows` of length `rotation.dim()`).
///
/// Zero rows are skipped. If more than `max_blocks` blocks result, every
/// `ceil(total / max_blocks)`-th block is kept (deterministic subsampling).
pub fn calibration_blocks(
    rotation: &Rotation,
    k: usize,
    rows: &[f32],
    max_blocks: usize,
) -> Result<Vec<f32>> {
    let d = rotation.dim();
    let dd = rotation.padded_dim();
    if k == 0 || !dd.is_multiple_of(k) {
        bail!("padded_dim {dd} is not a multiple of block_dim {k}");
    }
    if !rows.len().is_multiple_of(d) {
        bail!(
            "calibration data length {} is not a multiple of head_dim {d}",
            rows.len()
        );
    }
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        bail!("calibration value {i} is not finite");
    }
    let mut all = Vec::with_capacity(rows.len() / d * dd);
    let mut y = vec![0.0f32; dd];
    for row in rows.chunks_exact(d) {
        let n2: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if n2 == 0.0 {
            continue;
        }
        rotation.forward_scaled(row, (1.0 / n2.sqrt()) as f32, &mut y);
        all.extend_from_slice(&y);
    }
    let total = all.len() / k;
    if total > max_blocks && max_blocks > 0 {
        let step = total.div_ceil(max_blocks);
        let kept: Vec<f32> = all
            .chunks_exact(k)
            .step_by(step)
            .flatten()
            .copied()
            .collect();
        return Ok(kept);
    }
    Ok(all)
}

/// Outcome of [`refine`].
#[derive(Debug, Clone, PartialEq)]
pub struct LloydReport {
    /// Mean squared error per block before each update (`iterations + 1` entries).
    pub distortion: Vec<f64>,
    /// Index into `distortion` of the returned codebook.
    pub best_iteration: usize,
    /// Number of empty cells re-seeded over all iterations.
    pub reseeded: usize,
}

struct ChunkStats {
    sq_err: f64,
    sums: Vec<f64>,
    counts: Vec<u64>,
    errs: Vec<f32>,
}

fn chunk_stats(cb: &Codebook, search: &NearestSearch, samples: &[f32]) -> Result<ChunkStats> {
    let k = cb.k();
    let count = samples.len() / k;
    let mut idx = vec![0u16; count];
    search.nearest_blocks(samples, &mut idx)?;
    let mut st = ChunkStats {
        sq_err: 0.0,
        sums: vec![0.0; cb.n() * k],
        counts: vec![0; cb.n()],
        errs: Vec::with_capacity(count),
    };
    for (b, &i) in samples.chunks_exact(k).zip(&idx) {
        let i = i as usize;
        let c = cb.codeword(i);
        let mut e = 0.0f64;
        for j in 0..k {
            let v = f64::from(b[j]);
            e += (v - f64::from(c[j])).powi(2);
            st.sums[i * k + j] += v;
        }
        st.counts[i] += 1;
        st.sq_err += e;
        st.errs.push(e as f32);
    }
    Ok(st)
}

/// Runs `iterations` Lloyd updates from `init` on `samples` (block-major) and
/// returns the codebook with the lowest training distortion seen (never worse than `init`).
///
/// Empty cells are re-seeded, in cell order, at the samples with the largest
/// current error (ties: lower sample index first).
pub fn refine(
    init: &Codebook,
    samples: &[f32],
    iterations: u32,
) -> Result<(Codebook, LloydReport)> {
    let k = init.k();
    let n = init.n();
    if samples.is_empty() || !samples.len().is_multiple_of(k) {
        bail!("training samples must be a non-empty multiple of block_dim {k}");
    }
    if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
        bail!("training sample value {i} is not finite");
    }
    let count = samples.len() / k;
    let mut cur = init.clone();
    let mut best = init.clone();
    let mut report = LloydReport {
        distortion: Vec::new(),
        best_iteration: 0,
        reseeded: 0,
    };
    for it in 0..=iterations {
        let search = NearestSearch::new(&cur);
        let parts: Vec<ChunkStats> = samples
            .par_chunks(CHUNK_BLOCKS * k)
            .map(|c| chunk_stats(&cur, &search, c))
            .collect::<Result<_>>()?;
        let mut sums = vec![0.0f64; n * k];
        let mut counts = vec![0u64; n];
        let mut sq = 0.0f64;
        for p in &parts {
            sq += p.sq_err;
            for (a, b) in sums.iter_mut().zip(&p.sums) {
                *a += b;
            }
            for (a, b) in counts.iter_mut().zip(&p.counts) {
                *a += b;
            }
        }
        let dist = sq / count as f64;
        if report.distortion.is_empty() || dist < report.distortion[report.best_iteration] {
            report.best_iteration = it as usize;
            best = cur.clone();
        }
        report.distortion.push(dist);
        if it == iterations {
            break;
        }
        let mut cw = cur.codewords().to_vec();
        for i in 0..n {
            if counts[i] > 0 {
                for j in 0..k {
                    cw[i * k + j] = (sums[i * k + j] / counts[i] as f64) as f32;
                }
            }
        }
        let empty: Vec<usize> = (0..n).filter(|&i| counts[i] == 0).collect();
        if !empty.is_empty() {
            let errs: Vec<f32> = parts.iter().flat_map(|p| p.errs.iter().copied()).collect();
            let mut order: Vec<usize> = (0..count).collect();
            order.sort_by(|&a, &b| errs[b].total_cmp(&errs[a]).then(a.cmp(&b)));
            for (cell, &s) in empty.iter().zip(&order) {
                cw[cell * k..(cell + 1) * k].copy_from_slice(&samples[s * k..(s + 1) * k]);
                report.reseeded += 1;
            }
        }
        cur = Codebook::new(k, n, cur.padded_dim(), cw)?;
    }
    Ok((best, report))
}

/// Mean squared error per block of `samples` quantized with `cb`.
pub fn distortion(cb: &Codebook, samples: &[f32]) -> Result<f64> {
    let k = cb.k();
    if samples.is_empty() || !samples.len().is_multiple_of(k) {
        bail!("samples must be a non-empty multiple of block_dim {k}");
    }
    let search = NearestSearch::new(cb);
    let parts: Vec<ChunkStats> = samples
        .par_chunks(CHUNK_BLOCKS * k)
        .map(|c| chunk_stats(cb, &search, c))
        .collect::<Result<_>>()?;
    Ok(parts.iter().map(|p| p.sq_err).sum::<f64>() / (samples.len() / k) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spherical_beta_blocks_have_expected_energy() {
        let b = spherical_beta_blocks(64, 4, 16 * 200, 1).unwrap();
        // E ||block||^2 = k / D.
        let e: f64 = b.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / (16.0 * 200.0);
        assert!((e - 4.0 / 64.0).abs() < 1e-6, "{e}");
        assert!(spherical_beta_blocks(64, 3, 10, 1).is_err());
    }

    #[test]
    fn lloyd_reduces_distortion_and_is_deterministic() {
        let init = Codebook::initial(4, 32, 64).unwrap();
        let samples = spherical_beta_blocks(64, 4, 20_000, 7).unwrap();
        let (cb, rep) = refine(&init, &samples, 8).unwrap();
        assert_eq!(rep.distortion.len(), 9);
        let last = rep.distortion[rep.best_iteration];
        assert!(last < rep.distortion[0], "{:?}", rep.distortion);
        assert!((distortion(&cb, &samples).unwrap() - last).abs() < 1e-12);
        let (cb2, _) = refine(&init, &samples, 8).unwrap();
        assert_eq!(cb.to_bytes(), cb2.to_bytes());
        // Thread count does not matter.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (cb3, _) = pool.install(|| refine(&init, &samples, 8)).unwrap();
        assert_eq!(cb.to_bytes(), cb3.to_bytes());
    }

    #[test]
    fn empty_cells_are_reseeded() {
        // All codewords start far away except one, so most cells are empty at first.
        let mut cw = vec![10.0f32; 8 * 2];
        cw[0] = 0.0;
        cw[1] = 0.0;
        let init = Codebook::new(2, 8, 16, cw).unwrap();
        let samples = spherical_beta_blocks(16, 2, 2000, 3).unwrap();
        let (cb, rep) = refine(&init, &samples, 5).unwrap();
        assert!(rep.reseeded >= 7);
        assert!(cb.codewords().iter().all(|v| v.abs() < 2.0));
    }

    #[test]
    fn calibration_blocks_are_unit_rotated() {
        let r = Rotation::new(6, 1).unwrap();
        let rows = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let b = calibration_blocks(&r, 2, &rows, 100).unwrap();
        assert_eq!(b.len(), 8); // zero row skipped, D = 8
        let n2: f32 = b.iter().map(|v| v * v).sum();
        assert!((n2 - 1.0).abs() < 1e-5);
        assert_eq!(calibration_blocks(&r, 2, &rows, 2).unwrap().len(), 4);
        assert!(calibration_blocks(&r, 2, &rows[..5], 10).is_err());
        assert!(calibration_blocks(&r, 3, &rows, 10).is_err());
    }
}

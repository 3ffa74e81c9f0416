//! Deterministic synthetic KV caches with the structure of real ones.
//!
//! Per (layer, KV head), from a [`SplitMix64`] stream derived from
//! `seed ^ SYNTH_STREAM`, the layer and the head:
//! * keys: a per-head channel mean plus per-channel scales (log-normal),
//!   `outlier_channels` channels scaled by `outlier_scale` (massive channels),
//!   temporally correlated content (AR(1), ρ = 0.6), then RoPE applied at the
//!   token position (NeoX pairing `(i, i + d/2)`, frequency `θ^(-2i/d)`), i.e.
//!   "post-rope" keys;
//! * values: Gaussian per channel scale, times a per-token log-normal gain;
//! * queries (per query head, GQA-mapped to its KV head): 70% aim at a random
//!   key (`q ∝ k_t` scaled so its logit is in [2, 10]), plus noise giving logit
//!   spread ~1.5 over other keys; 30% are noise only (diffuse attention).

use anyhow::{bail, Result};
use rayon::prelude::*;

use super::prng::{SplitMix64, SYNTH_STREAM};
use super::tensor::{KvData, LayerKv, Matrix, Queries};

/// Synthetic cache configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Layers.
    pub layers: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Query heads per layer (multiple of `kv_heads`).
    pub query_heads: usize,
    /// Head dimension (even).
    pub head_dim: usize,
    /// Tokens per head.
    pub tokens: usize,
    /// Queries per query head.
    pub n_queries: usize,
    /// Seed.
    pub seed: u64,
    /// Key channels with large magnitude.
    pub outlier_channels: usize,
    /// Magnitude multiplier of outlier channels.
    pub outlier_scale: f32,
    /// RoPE base.
    pub rope_theta: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 128,
            tokens: 512,
            n_queries: 32,
            seed: 0,
            outlier_channels: 4,
            outlier_scale: 8.0,
            rope_theta: 10_000.0,
        }
    }
}

fn stream(seed: u64, layer: usize, head: usize, what: u64) -> SplitMix64 {
    let mut s = SplitMix64::new(seed ^ SYNTH_STREAM);
    let a = s.next_u64();
    SplitMix64::new(a ^ ((layer as u64) << 40) ^ ((head as u64) << 20) ^ what)
}

fn rope_in_place(row: &mut [f32], pos: usize, theta: f64) {
    let half = row.len() / 2;
    for i in 0..half {
        let freq = theta.powf(-2.0 * i as f64 / row.len() as f64);
        let (s, c) = (pos as f64 * freq).sin_cos();
        let (a, b) = (f64::from(row[i]), f64::from(row[i + half]));
        row[i] = (a * c - b * s) as f32;
        row[i + half] = (a * s + b * c) as f32;
    }
}

fn head_kv(cfg: &SynthConfig, layer: usize, head: usize) -> Result<(Matrix, Matrix)> {
    let (d, t) = (cfg.head_dim, cfg.tokens);
    let mut r = stream(cfg.seed, layer, head, 1);
    let scale: Vec<f32> = (0..d)
        .map(|_| (0.5 * r.next_gaussian()).exp() as f32)
        .collect();
    let mut kscale = scale.clone();
    for _ in 0..cfg.outlier_channels.min(d) {
        kscale[r.next_below(d as u64) as usize] *= cfg.outlier_scale;
    }
    let mean: Vec<f32> = kscale
        .iter()
        .map(|s| s * 0.7 * r.next_gaussian() as f32)
        .collect();
    let rho = 0.6f64;
    let innov = (1.0 - rho * rho).sqrt();
    let mut z: Vec<f64> = (0..d).map(|_| r.next_gaussian()).collect();
    let mut keys = Vec::with_capacity(t * d);
    let mut values = Vec::with_capacity(t * d);
    let vscale: Vec<f32> = (0..d)
        .map(|_| (0.3 * r.next_gaussian()).exp() as f32)
        .collect();
    for pos in 0..t {
        let start = keys.len();
        for c in 0..d {
            z[c] = rho * z[c] + innov * r.next_gaussian();
            keys.push(mean[c] + kscale[c] * z[c] as f32);
        }
        rope_in_place(&mut keys[start..], pos, cfg.rope_theta);
        let gain = (0.4 * r.next_gaussian()).exp() as f32;
        for s in &vscale {
            values.push(gain * s * r.next_gaussian() as f32);
        }
    }
    Ok((Matrix::new(t, d, keys)?, Matrix::new(t, d, values)?))
}

fn head_queries(cfg: &SynthConfig, layer: usize, qh: usize, keys: &Matrix) -> Result<Matrix> {
    let (d, t) = (cfg.head_dim, cfg.tokens);
    let mut r = stream(cfg.seed, layer, qh, 2);
    let rms = (keys
        .data()
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        / t as f64)
        .sqrt()
        .max(1e-12);
    let sd = (d as f64).sqrt();
    let noise = 1.5 * sd / rms;
    let mut q = Vec::with_capacity(cfg.n_queries * d);
    for _ in 0..cfg.n_queries {
        let start = q.len();
        q.extend((0..d).map(|_| (noise * r.next_gaussian()) as f32));
        if r.next_f64() < 0.7 {
            let target = keys.row(r.next_below(t as u64) as usize);
            let kn = target
                .iter()
                .map(|&v| f64::from(v).powi(2))
                .sum::<f64>()
                .sqrt();
            let logit = 2.0 + 8.0 * r.next_f64();
            let g = (logit * sd / (kn * kn).max(1e-12)) as f32;
            for (a, &b) in q[start..].iter_mut().zip(target) {
                *a += g * b;
            }
        }
    }
    Matrix::new(cfg.n_queries, d, q)
}

/// Generates `(kv, queries)` for `cfg`.
pub fn synth_kv(cfg: &SynthConfig) -> Result<(KvData, Queries)> {
    if cfg.layers == 0 || cfg.kv_heads == 0 || cfg.tokens == 0 || cfg.n_queries == 0 {
        bail!("synthetic config needs at least one layer, KV head, token and query");
    }
    if cfg.head_dim == 0 || !cfg.head_dim.is_multiple_of(2) {
        bail!(
            "synthetic head_dim must be even and positive, got {}",
            cfg.head_dim
        );
    }
    if cfg.query_heads == 0 || !cfg.query_heads.is_multiple_of(cfg.kv_heads) {
        bail!(
            "query_heads {} must be a positive multiple of kv_heads {}",
            cfg.query_heads,
            cfg.kv_heads
        );
    }
    if !cfg.outlier_scale.is_finite() || !cfg.rope_theta.is_finite() || cfg.rope_theta <= 0.0 {
        bail!("outlier_scale and rope_theta must be finite (rope_theta > 0)");
    }
    let group = cfg.query_heads / cfg.kv_heads;
    let layers: Vec<(LayerKv, Vec<Matrix>)> = (0..cfg.layers)
        .into_par_iter()
        .map(|l| {
            let heads: Vec<(Matrix, Matrix)> = (0..cfg.kv_heads)
                .into_par_iter()
                .map(|h| head_kv(cfg, l, h))
                .collect::<Result<_>>()?;
            let (keys, values): (Vec<Matrix>, Vec<Matrix>) = heads.into_iter().unzip();
            let queries = (0..cfg.query_heads)
                .into_par_iter()
                .map(|qh| head_queries(cfg, l, qh, &keys[qh / group]))
                .collect::<Result<_>>()?;
            Ok((LayerKv { keys, values }, queries))
        })
        .collect::<Result<_>>()?;
    let (kv_layers, q_layers) = layers.into_iter().unzip();
    Ok((KvData { layers: kv_layers }, Queries { layers: q_layers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 16,
            tokens: 64,
            n_queries: 8,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn deterministic_and_shaped() {
        let (kv, q) = synth_kv(&small()).unwrap();
        let (kv2, q2) = synth_kv(&small()).unwrap();
        assert_eq!(kv, kv2);
        assert_eq!(q, q2);
        let d = kv.dims().unwrap();
        assert_eq!((d.layers, d.kv_heads, d.tokens, d.head_dim), (2, 2, 64, 16));
        assert_eq!(q.check(2, 4, 16).unwrap(), 8);
        let other = synth_kv(&SynthConfig { seed: 1, ..small() }).unwrap().0;
        assert_ne!(kv, other);
    }

    #[test]
    fn keys_have_outlier_channels() {
        let cfg = SynthConfig {
            tokens: 256,
            head_dim: 64,
            rope_theta: 1e9, // nearly no rotation: channel energy stays put
            ..small()
        };
        let (kv, _) = synth_kv(&cfg).unwrap();
        let k = &kv.layers[0].keys[0];
        let mut energy = vec![0.0f64; 64];
        for t in 0..k.rows() {
            for (e, &v) in energy.iter_mut().zip(k.row(t)) {
                *e += f64::from(v).powi(2);
            }
        }
        let mut sorted = energy.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert!(
            sorted[0] > 10.0 * sorted[32],
            "{} vs {}",
            sorted[0],
            sorted[32]
        );
    }

    #[test]
    fn rope_preserves_norm() {
        let mut row = vec![1.0f32, 2.0, 3.0, 4.0];
        rope_in_place(&mut row, 17, 10_000.0);
        let n: f32 = row.iter().map(|v| v * v).sum();
        assert!((n - 30.0).abs() < 1e-4);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(synth_kv(&SynthConfig {
            query_heads: 3,
            ..small()
        })
        .is_err());
        assert!(synth_kv(&SynthConfig {
            head_dim: 7,
            ..small()
        })
        .is_err());
        assert!(synth_kv(&SynthConfig {
            tokens: 0,
            ..small()
        })
        .is_err());
    }
}

//! Attention-fidelity and reconstruction metrics, all accumulated in `f64`.
//!
//! For a query row `q` and keys `K` (`T x d`): logits `l_t = q·k_t / sqrt(d)`,
//! `p = softmax(l)`; the same with reconstructed keys gives `p̂`. Attention is
//! non-causal (every query sees every token). Per query row:
//! * key-logit squared error `Σ_t (l_t - l̂_t)²` (averaged over all pairs),
//! * total variation `½ Σ_t |p_t - p̂_t|`,
//! * `KL(p ‖ p̂)` computed from log-softmax (finite even when `p̂` underflows),
//! * top-k disagreement `1 - |top_k(p) ∩ top_k(p̂)| / k` (`k = min(k, T)`;
//!   ties broken toward the lower token index),
//! * value aggregation: `o = pV` vs `ô = p̂V̂` (both errors), `p̂V` (keys only)
//!   and `pV̂` (values only); squared errors averaged over rows and channels.
//!
//! Reconstruction: MSE over all values and mean per-row cosine similarity
//! (two zero rows count as 1, one zero row as 0). GQA: query head `h` reads
//! KV head `h / (query_heads / kv_heads)`.

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::tensor::Matrix;

/// KV head read by query head `h` under grouped-query attention.
pub fn kv_head_for(h: usize, query_heads: usize, kv_heads: usize) -> Result<usize> {
    if kv_heads == 0 || query_heads == 0 || !query_heads.is_multiple_of(kv_heads) {
        bail!("query_heads {query_heads} must be a positive multiple of kv_heads {kv_heads}");
    }
    if h >= query_heads {
        bail!("query head {h} out of range 0..{query_heads}");
    }
    Ok(h / (query_heads / kv_heads))
}

/// Compression ratio against fp16 storage: `16 / bits_per_value`.
pub fn compression_ratio_vs_fp16(bits_per_value: f64) -> f64 {
    16.0 / bits_per_value
}

/// `(softmax(l), log_softmax(l))`, max-subtracted.
pub fn softmax(logits: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|&l| (l - m).exp()).sum();
    let lz = m + z.ln();
    let logp: Vec<f64> = logits.iter().map(|&l| l - lz).collect();
    (logp.iter().map(|v| v.exp()).collect(), logp)
}

/// Indices of the `k` largest entries, by value descending then index ascending.
pub fn top_k_indices(p: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Reconstruction error sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconSums {
    /// Rows compared.
    pub rows: u64,
    /// Values compared.
    pub values: u64,
    /// Σ (x - x̂)².
    pub sq_err: f64,
    /// Σ cos(x, x̂) over rows.
    pub cos_sum: f64,
}

impl ReconSums {
    /// Sums over two equally shaped matrices.
    pub fn compare(orig: &Matrix, recon: &Matrix) -> Result<Self> {
        same_shape(orig, recon, "reconstruction")?;
        let mut s = ReconSums::default();
        for r in 0..orig.rows() {
            let (a, b) = (orig.row(r), recon.row(r));
            let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (f64::from(x), f64::from(y));
                s.sq_err += (x - y) * (x - y);
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            s.cos_sum += match (na == 0.0, nb == 0.0) {
                (true, true) => 1.0,
                (true, false) | (false, true) => 0.0,
                _ => dot / (na.sqrt() * nb.sqrt()),
            };
            s.rows += 1;
            s.values += a.len() as u64;
        }
        Ok(s)
    }

    /// Adds another set of sums.
    pub fn merge(&mut self, o: &ReconSums) {
        self.rows += o.rows;
        self.values += o.values;
        self.sq_err += o.sq_err;
        self.cos_sum += o.cos_sum;
    }

    /// Mean squared error (0 if empty).
    pub fn mse(&self) -> f64 {
        ratio(self.sq_err, self.values)
    }

    /// Mean row cosine (1 if empty).
    pub fn cosine(&self) -> f64 {
        if self.rows == 0 {
            1.0
        } else {
            self.cos_sum / self.rows as f64
        }
    }
}

fn ratio(num: f64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num / den as f64
    }
}

fn same_shape(a: &Matrix, b: &Matrix, what: &str) -> Result<()> {
    if a.rows() != b.rows() || a.cols() != b.cols() {
        bail!(
            "{what}: shapes differ ({}x{} vs {}x{})",
            a.rows(),
            a.cols(),
            b.rows(),
            b.cols()
        );
    }
    Ok(())
}

/// Additive metric sums; merge across heads/layers, then [`MetricSums::finish`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSums {
    /// Query rows (softmax rows).
    pub query_rows: u64,
    /// (query, key) pairs.
    pub logit_pairs: u64,
    /// Σ (l - l̂)².
    pub logit_sq_err: f64,
    /// Σ TV.
    pub tv_sum: f64,
    /// Σ KL(p ‖ p̂).
    pub kl_sum: f64,
    /// Σ top-k disagreement.
    pub topk_sum: f64,
    /// Output values (query rows × d).
    pub out_values: u64,
    /// Σ (pV - p̂V̂)².
    pub out_sq_err: f64,
    /// Σ (pV - p̂V)².
    pub out_sq_err_keys_only: f64,
    /// Σ (pV - pV̂)².
    pub out_sq_err_values_only: f64,
    /// Σ (pV)², for the relative error.
    pub out_sq_ref: f64,
    /// Key reconstruction.
    pub keys: ReconSums,
    /// Value reconstruction.
    pub values: ReconSums,
}

/// Final metric values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    /// Mean squared error of attention logits `q·k/sqrt(d)`.
    pub key_logit_mse: f64,
    /// Mean total variation between attention rows.
    pub attention_tv: f64,
    /// Mean KL(p_orig ‖ p_recon).
    pub attention_kl: f64,
    /// `k` used for top-k disagreement.
    pub top_k: usize,
    /// Mean top-k disagreement.
    pub topk_disagreement: f64,
    /// MSE of `p̂V̂` vs `pV` (both reconstructed).
    pub value_agg_mse: f64,
    /// MSE of `p̂V` vs `pV` (key error only).
    pub value_agg_mse_keys_only: f64,
    /// MSE of `pV̂` vs `pV` (value error only).
    pub value_agg_mse_values_only: f64,
    /// `Σ(pV - p̂V̂)² / Σ(pV)²`.
    pub value_agg_rel_mse: f64,
    /// Key reconstruction MSE.
    pub key_mse: f64,
    /// Mean key row cosine.
    pub key_cosine: f64,
    /// Value reconstruction MSE.
    pub value_mse: f64,
    /// Mean value row cosine.
    pub value_cosine: f64,
    /// Query rows evaluated.
    pub query_rows: u64,
}

impl MetricSums {
    /// Adds another set of sums.
    pub fn merge(&mut self, o: &MetricSums) {
        self.query_rows += o.query_rows;
        self.logit_pairs += o.logit_pairs;
        self.logit_sq_err += o.logit_sq_err;
        self.tv_sum += o.tv_sum;
        self.kl_sum += o.kl_sum;
        self.topk_sum += o.topk_sum;
        self.out_values += o.out_values;
        self.out_sq_err += o.out_sq_err;
        self.out_sq_err_keys_only += o.out_sq_err_keys_only;
        self.out_sq_err_values_only += o.out_sq_err_values_only;
        self.out_sq_ref += o.out_sq_ref;
        self.keys.merge(&o.keys);
        self.values.merge(&o.values);
    }

    /// Means.
    pub fn finish(&self, top_k: usize) -> QualityMetrics {
        let rows = self.query_rows;
        QualityMetrics {
            key_logit_mse: ratio(self.logit_sq_err, self.logit_pairs),
            attention_tv: ratio(self.tv_sum, rows),
            attention_kl: ratio(self.kl_sum, rows),
            top_k,
            topk_disagreement: ratio(self.topk_sum, rows),
            value_agg_mse: ratio(self.out_sq_err, self.out_values),
            value_agg_mse_keys_only: ratio(self.out_sq_err_keys_only, self.out_values),
            value_agg_mse_values_only: ratio(self.out_sq_err_values_only, self.out_values),
            value_agg_rel_mse: if self.out_sq_ref > 0.0 {
                self.out_sq_err / self.out_sq_ref
            } else {
                0.0
            },
            key_mse: self.keys.mse(),
            key_cosine: self.keys.cosine(),
            value_mse: self.values.mse(),
            value_cosine: self.values.cosine(),
            query_rows: rows,
        }
    }
}

fn logits(q: &[f32], keys: &Matrix, scale: f64) -> Vec<f64> {
    (0..keys.rows())
        .map(|t| {
            let dot: f64 = q
                .iter()
                .zip(keys.row(t))
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            dot * scale
        })
        .collect()
}

fn aggregate(p: &[f64], values: &Matrix) -> Vec<f64> {
    let mut o = vec![0.0f64; values.cols()];
    for (t, &w) in p.iter().enumerate() {
        for (a, &v) in o.iter_mut().zip(values.row(t)) {
            *a += w * f64::from(v);
        }
    }
    o
}

fn sq_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Attention sums for one query head's queries against its KV head
/// (original `k`, `v` and reconstructed `k_hat`, `v_hat`). Reconstruction sums are not included.
pub fn attention_sums(
    queries: &Matrix,
    k: &Matrix,
    k_hat: &Matrix,
    v: &Matrix,
    v_hat: &Matrix,
    top_k: usize,
) -> Result<MetricSums> {
    same_shape(k, k_hat, "keys")?;
    same_shape(v, v_hat, "values")?;
    same_shape(k, v, "keys vs values")?;
    if queries.cols() != k.cols() {
        bail!("queries have dim {}, keys {}", queries.cols(), k.cols());
    }
    if top_k == 0 {
        bail!("top_k must be positive");
    }
    let mut s = MetricSums::default();
    if k.rows() == 0 {
        return Ok(s);
    }
    let scale = 1.0 / (k.cols() as f64).sqrt();
    let kk = top_k.min(k.rows());
    for r in 0..queries.rows() {
        let q = queries.row(r);
        let l = logits(q, k, scale);
        let lh = logits(q, k_hat, scale);
        let (p, logp) = softmax(&l);
        let (ph, logph) = softmax(&lh);
        s.logit_sq_err += sq_diff(&l, &lh);
        s.logit_pairs += l.len() as u64;
        s.tv_sum += 0.5 * p.iter().zip(&ph).map(|(a, b)| (a - b).abs()).sum::<f64>();
        s.kl_sum += p
            .iter()
            .zip(logp.iter().zip(&logph))
            .map(|(&pi, (a, b))| if pi > 0.0 { pi * (a - b) } else { 0.0 })
            .sum::<f64>();
        let ta = top_k_indices(&p, kk);
        let tb = top_k_indices(&ph, kk);
        let common = ta.iter().filter(|i| tb.contains(i)).count();
        s.topk_sum += 1.0 - common as f64 / kk as f64;
        let o = aggregate(&p, v);
        s.out_sq_err += sq_diff(&o, &aggregate(&ph, v_hat));
        s.out_sq_err_keys_only += sq_diff(&o, &aggregate(&ph, v));
        s.out_sq_err_values_only += sq_diff(&o, &aggregate(&p, v_hat));
        s.out_sq_ref += o.iter().map(|x| x * x).sum::<f64>();
        s.out_values += o.len() as u64;
        s.query_rows += 1;
    }
    Ok(s)
}

/// Original and reconstructed KV of one layer, one matrix per KV head.
#[derive(Debug, Clone, Copy)]
pub struct LayerPair<'a> {
    /// Original keys.
    pub keys: &'a [Matrix],
    /// Reconstructed keys.
    pub keys_hat: &'a [Matrix],
    /// Original values.
    pub values: &'a [Matrix],
    /// Reconstructed values.
    pub values_hat: &'a [Matrix],
}

/// All sums for one layer: every query head against its GQA-mapped KV head,
/// plus key/value reconstruction over every KV head. Parallel over query heads,
/// merged in head order (deterministic).
pub fn layer_sums(queries: &[Matrix], kv: LayerPair<'_>, top_k: usize) -> Result<MetricSums> {
    let kvh = kv.keys.len();
    if kv.keys_hat.len() != kvh || kv.values.len() != kvh || kv.values_hat.len() != kvh {
        bail!("layer KV head counts differ between original and reconstruction");
    }
    let per_head: Vec<MetricSums> = (0..queries.len())
        .into_par_iter()
        .map(|h| {
            let g = kv_head_for(h, queries.len(), kvh)?;
            attention_sums(
                &queries[h],
                &kv.keys[g],
                &kv.keys_hat[g],
                &kv.values[g],
                &kv.values_hat[g],
                top_k,
            )
        })
        .collect::<Result<_>>()?;
    let mut total = MetricSums::default();
    per_head.iter().for_each(|s| total.merge(s));
    for g in 0..kvh {
        total
            .keys
            .merge(&ReconSums::compare(&kv.keys[g], &kv.keys_hat[g])?);
        total
            .values
            .merge(&ReconSums::compare(&kv.values[g], &kv.values_hat[g])?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, v: &[f32]) -> Matrix {
        Matrix::new(rows, cols, v.to_vec()).unwrap()
    }

    #[test]
    fn hand_computed_two_keys() {
        // d = 2, q = (sqrt(2)·ln 3, 0): logits (ln 3, 0) -> p = (3/4, 1/4).
        // Reconstructed k1 = 0: logits (0, 0) -> p̂ = (1/2, 1/2).
        let ln3 = 3f64.ln();
        let q = m(1, 2, &[(2f64.sqrt() * ln3) as f32, 0.0]);
        let k = m(2, 2, &[1.0, 0.0, 0.0, 1.0]);
        let kh = m(2, 2, &[0.0, 0.0, 0.0, 1.0]);
        let v = m(2, 2, &[1.0, 0.0, 0.0, 1.0]);
        let s = attention_sums(&q, &k, &kh, &v, &v, 1).unwrap();
        let r = s.finish(1);
        // The f32 query makes logit 0 differ from ln 3 by < 1e-7.
        assert!((r.key_logit_mse - ln3 * ln3 / 2.0).abs() < 1e-6);
        assert!((r.attention_tv - 0.25).abs() < 1e-7);
        let kl = 0.75 * (1.5f64).ln() + 0.25 * (0.5f64).ln();
        assert!((r.attention_kl - kl).abs() < 1e-7);
        // top-1: p picks key 0; p̂ ties and picks the lower index 0 -> agree.
        assert_eq!(r.topk_disagreement, 0.0);
        // pV = (3/4, 1/4), p̂V = (1/2, 1/2): MSE = (1/16 + 1/16) / 2.
        assert!((r.value_agg_mse - 0.0625).abs() < 1e-7);
        assert!((r.value_agg_mse_keys_only - 0.0625).abs() < 1e-7);
        assert_eq!(r.value_agg_mse_values_only, 0.0);
        assert!((r.value_agg_rel_mse - 0.125 / 0.625).abs() < 1e-7);
    }

    #[test]
    fn top_k_disagreement_counts_swaps() {
        // Logits (2, 1, 0) vs reconstructed order (0, 1, 2): top-1 differs, top-2 shares key 1.
        let q = m(1, 1, &[1.0]);
        let k = m(3, 1, &[2.0, 1.0, 0.0]);
        let kh = m(3, 1, &[0.0, 1.0, 2.0]);
        let v = Matrix::zeros(3, 1);
        assert_eq!(
            attention_sums(&q, &k, &kh, &v, &v, 1)
                .unwrap()
                .finish(1)
                .topk_disagreement,
            1.0
        );
        assert_eq!(
            attention_sums(&q, &k, &kh, &v, &v, 2)
                .unwrap()
                .finish(2)
                .topk_disagreement,
            0.5
        );
        // k larger than T is clamped: all 3 shared.
        assert_eq!(
            attention_sums(&q, &k, &kh, &v, &v, 8)
                .unwrap()
                .finish(8)
                .topk_disagreement,
            0.0
        );
    }

    #[test]
    fn identical_reconstruction_is_perfect() {
        let q = m(2, 2, &[0.3, -1.0, 2.0, 0.5]);
        let k = m(3, 2, &[1.0, 2.0, -1.0, 0.0, 0.5, 0.5]);
        let s = attention_sums(&q, &k, &k, &k, &k, 2).unwrap().finish(2);
        assert_eq!(
            (s.key_logit_mse, s.attention_tv, s.attention_kl),
            (0.0, 0.0, 0.0)
        );
        assert_eq!((s.topk_disagreement, s.value_agg_mse), (0.0, 0.0));
    }

    #[test]
    fn recon_and_cosine() {
        let a = m(3, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        let b = m(3, 2, &[0.0, 1.0, 0.0, 0.0, 2.0, 2.0]);
        let r = ReconSums::compare(&a, &b).unwrap();
        // Squared errors 1 + 1 + 0 + 0 + 1 + 1 = 4 over 6 values; cosines 0, 1, 1.
        assert!((r.mse() - 4.0 / 6.0).abs() < 1e-15);
        assert!((r.cosine() - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn gqa_mapping_and_errors() {
        assert_eq!(kv_head_for(5, 8, 2).unwrap(), 1);
        assert_eq!(kv_head_for(3, 8, 2).unwrap(), 0);
        assert!(kv_head_for(0, 6, 4).is_err());
        assert!(kv_head_for(8, 8, 2).is_err());
        assert_eq!(compression_ratio_vs_fp16(2.0), 8.0);
        let k = m(2, 2, &[1.0; 4]);
        assert!(attention_sums(&m(1, 3, &[0.0; 3]), &k, &k, &k, &k, 1).is_err());
        assert!(attention_sums(&m(1, 2, &[0.0; 2]), &k, &k, &k, &k, 0).is_err());
    }

    #[test]
    fn layer_sums_uses_gqa() {
        // Query heads 0, 1 read KV head 0 (exact); heads 2, 3 read KV head 1, whose
        // keys reconstruct as zeros: logits (5, 5) -> (0, 0), 50 per query head.
        let q = vec![m(1, 1, &[1.0]); 4];
        let k = vec![m(2, 1, &[1.0, 0.0]), m(2, 1, &[5.0, 5.0])];
        let kh = vec![m(2, 1, &[1.0, 0.0]), m(2, 1, &[0.0, 0.0])];
        let pair = LayerPair {
            keys: &k,
            keys_hat: &kh,
            values: &k,
            values_hat: &k,
        };
        let s = layer_sums(&q, pair, 1).unwrap();
        assert_eq!(s.query_rows, 4);
        assert_eq!(s.logit_pairs, 8);
        assert_eq!(s.logit_sq_err, 100.0);
        assert_eq!(s.keys.sq_err, 50.0);
        assert_eq!(s.keys.rows, 4);
    }
}

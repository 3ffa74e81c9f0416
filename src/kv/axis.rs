//! Axis policies (fib-quant's names) and the per-channel treatment learned from
//! calibration.
//!
//! The codec quantizes token vectors (one row of `head_dim` values per token and head).
//! Post-RoPE keys have outlier channels: a few channels carry a large, nearly constant
//! offset and most of the norm, so the row-norm codec spends its precision on them. A
//! per-channel affine map learned from calibration, `x' = (x − mean) / scale` for each
//! (layer, KV head, channel), is applied to the coded rows before encoding and undone
//! after decoding (protected raw rows are never touched, so they stay bit-exact):
//!
//! | policy | keys | values |
//! |---|---|---|
//! | `raw` | raw | raw |
//! | `per_token` | token vectors | token vectors |
//! | `per_channel` | channel-normalized token vectors | channel-normalized token vectors |
//! | `role_aware_kivi_style` | channel-normalized token vectors | token vectors |
//!
//! `mean` is the calibration mean of the channel, `scale` its standard deviation about
//! that mean (floored at [`MIN_SCALE`] times the head's largest).

use super::symeig;
use super::tensor::{KvData, Matrix, Queries};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Smallest scale, relative to the largest scale of the same head.
pub const MIN_SCALE: f32 = 1e-3;

/// How keys and values are cut into vectors (fib-quant's `KvAxisPolicyV1` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AxisPolicy {
    /// Nothing is compressed.
    Raw,
    /// Each token vector is coded as is.
    #[default]
    PerToken,
    /// Keys and values are normalized per channel, then coded per token.
    PerChannel,
    /// Keys per channel, values per token (KIVI's split).
    RoleAwareKiviStyle,
}

impl AxisPolicy {
    /// Whether this is the default (`per_token`), which the profile JSON omits.
    pub fn is_per_token(&self) -> bool {
        *self == AxisPolicy::PerToken
    }

    /// Whether keys / values get a per-channel map.
    pub fn channels(self) -> (bool, bool) {
        match self {
            AxisPolicy::Raw | AxisPolicy::PerToken => (false, false),
            AxisPolicy::PerChannel => (true, true),
            AxisPolicy::RoleAwareKiviStyle => (true, false),
        }
    }
}

/// Largest `|B·Bᵀ − I|` entry accepted for a stored basis.
const BASIS_TOLERANCE: f32 = 1e-3;

/// One (layer, KV head) channel map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMap {
    /// Per-channel offset.
    pub mean: Vec<f32>,
    /// Per-channel scale (positive); with a basis, per basis direction.
    pub scale: Vec<f32>,
    /// A learned orthonormal basis (`basis` build option), row-major `d × d`: row `j` is
    /// direction `j`, and the map codes `(B·(x − mean))_j / scale_j`. Omitted: the
    /// channels themselves (`B = I`), as in profiles written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<Vec<f32>>,
}

impl ChannelMap {
    /// `(x − mean) / scale` for every row of `m` (with a basis, `B·(x − mean) / scale`).
    pub fn forward(&self, m: &mut [f32]) {
        let d = self.mean.len();
        let mut c = vec![0f32; d];
        for row in m.chunks_exact_mut(d) {
            let Some(b) = &self.basis else {
                for ((x, mu), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                    *x = (*x - mu) / s;
                }
                continue;
            };
            for ((ci, x), mu) in c.iter_mut().zip(row.iter()).zip(&self.mean) {
                *ci = x - mu;
            }
            for ((x, dir), s) in row.iter_mut().zip(b.chunks_exact(d)).zip(&self.scale) {
                let dot = dir.iter().zip(&c).fold(0f32, |a, (u, v)| u.mul_add(*v, a));
                *x = dot / s;
            }
        }
    }

    /// `x · scale + mean` for every row of `m` (with a basis, `Bᵀ·(x · scale) + mean`).
    pub fn inverse(&self, m: &mut [f32]) {
        let d = self.mean.len();
        let mut y = vec![0f32; d];
        for row in m.chunks_exact_mut(d) {
            let Some(b) = &self.basis else {
                for ((x, mu), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                    *x = x.mul_add(*s, *mu);
                }
                continue;
            };
            for ((yj, x), s) in y.iter_mut().zip(row.iter()).zip(&self.scale) {
                *yj = x * s;
            }
            row.copy_from_slice(&self.mean);
            for (yj, dir) in y.iter().zip(b.chunks_exact(d)) {
                for (x, u) in row.iter_mut().zip(dir) {
                    *x = u.mul_add(*yj, *x);
                }
            }
        }
    }

    /// [`ChannelMap::learn_basis`] with `basis`, else [`ChannelMap::learn`] (`query`: the
    /// reading queries' second moment, the full matrix or its diagonal to match).
    pub fn learn_any(m: &Matrix, query: Option<&[f64]>, basis: bool) -> ChannelMap {
        if basis {
            ChannelMap::learn_basis(m, query)
        } else {
            ChannelMap::learn(m, query)
        }
    }

    /// A map in a learned basis: with the covariance `C` of the rows of `m` and the second
    /// moment `Q` of the queries that read them (`query_cov`, row-major `d × d`; the
    /// identity for values), the positive definite `P` with `P·C·P = Q` (the matrix
    /// geometric mean of `C⁻¹` and `Q`) minimizes the expected error `E[(q·Δx)²]` of a
    /// codec whose error is isotropic in the mapped space and proportional to the mapped
    /// row's norm; the map is `x' = diag(μ)^½·Bᵀ·(x − mean)` with `P = B·diag(μ)·Bᵀ`
    /// (basis rows = eigenvectors, descending `μ`, scale `μ^-½`). With diagonal `C` and
    /// `Q` it is [`ChannelMap::learn`]'s query-weighted map. Scales are floored at
    /// [`MIN_SCALE`] times the largest.
    pub fn learn_basis(m: &Matrix, query_cov: Option<&[f64]>) -> ChannelMap {
        let (n, d) = (m.rows().max(1) as f64, m.cols());
        let mut mean = vec![0f64; d];
        for t in 0..m.rows() {
            for (mu, &x) in mean.iter_mut().zip(m.row(t)) {
                *mu += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|mu| *mu /= n);
        let mut cov = vec![0f64; d * d];
        for t in 0..m.rows() {
            let c: Vec<f64> = m
                .row(t)
                .iter()
                .zip(&mean)
                .map(|(&x, mu)| f64::from(x) - mu)
                .collect();
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] += c[i] * c[j];
                }
            }
        }
        cov.iter_mut().for_each(|v| *v /= n);
        let identity: Vec<f64>;
        let q = match query_cov {
            Some(q) => q,
            None => {
                identity = (0..d * d)
                    .map(|i| f64::from(u8::from(i % (d + 1) == 0)))
                    .collect();
                &identity
            }
        };
        let p = symeig::geometric_mean_inv(&cov, q, d);
        let (mu, vecs) = symeig::eigh(&p, d);
        let sd: Vec<f64> = mu
            .iter()
            .map(|&u| 1.0 / u.max(f64::MIN_POSITIVE).sqrt())
            .collect();
        let top = sd.iter().fold(0f64, |a, &b| a.max(b));
        let floor = (top * f64::from(MIN_SCALE)).max(f64::from(f32::MIN_POSITIVE));
        let mut basis = vec![0f32; d * d];
        for j in 0..d {
            for i in 0..d {
                basis[j * d + i] = vecs[i * d + j] as f32;
            }
        }
        ChannelMap {
            mean: mean.iter().map(|&v| v as f32).collect(),
            scale: sd.iter().map(|&v| v.max(floor) as f32).collect(),
            basis: Some(basis),
        }
    }

    /// Mean and scale of the rows of `m`: the standard deviation `σ_c`, or with the mean
    /// square `E[q_c²]` of the queries that read this head, `(σ_c² / E[q_c²])^¼`, which
    /// minimizes the expected logit error `E[(q·Δk)²]` of a codec whose error is
    /// isotropic in the mapped space and proportional to the mapped row's norm
    /// (Cauchy–Schwarz). Each is floored at [`MIN_SCALE`] times the head's largest.
    pub fn learn(m: &Matrix, query_power: Option<&[f64]>) -> ChannelMap {
        let (n, d) = (m.rows().max(1) as f64, m.cols());
        let mut sum = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for t in 0..m.rows() {
            for (c, &x) in m.row(t).iter().enumerate() {
                sum[c] += f64::from(x);
                sq[c] += f64::from(x) * f64::from(x);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let var: Vec<f64> = sq
            .iter()
            .zip(&mean)
            .map(|(q, mu)| (q / n - mu * mu).max(0.0))
            .collect();
        let sd: Vec<f64> = match query_power {
            None => var.iter().map(|v| v.sqrt()).collect(),
            Some(qp) => {
                let top = qp.iter().fold(0f64, |a, &b| a.max(b));
                let floor = (top * 1e-6).max(f64::MIN_POSITIVE);
                var.iter()
                    .zip(qp)
                    .map(|(v, q)| (v / q.max(floor)).sqrt().sqrt())
                    .collect()
            }
        };
        let top = sd.iter().fold(0f64, |a, &b| a.max(b));
        let floor = (top * f64::from(MIN_SCALE)).max(f64::from(f32::MIN_POSITIVE));
        ChannelMap {
            mean: mean.iter().map(|&v| v as f32).collect(),
            scale: sd.iter().map(|&v| v.max(floor) as f32).collect(),
            basis: None,
        }
    }

    fn check(&self, d: usize) -> Result<()> {
        if self.mean.len() != d || self.scale.len() != d {
            bail!(
                "channel map has {} means and {} scales, head_dim is {d}",
                self.mean.len(),
                self.scale.len()
            );
        }
        if self.mean.iter().any(|v| !v.is_finite())
            || self.scale.iter().any(|v| !v.is_finite() || *v <= 0.0)
        {
            bail!("channel map has a non-finite mean or a scale that is not positive");
        }
        if let Some(b) = &self.basis {
            if b.len() != d * d || b.iter().any(|v| !v.is_finite()) {
                bail!(
                    "channel map basis has {} values, head_dim {d} needs {} finite ones",
                    b.len(),
                    d * d
                );
            }
            for (i, u) in b.chunks_exact(d).enumerate() {
                for (j, v) in b.chunks_exact(d).enumerate() {
                    let dot: f32 = u.iter().zip(v).map(|(a, c)| a * c).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    if (dot - want).abs() > BASIS_TOLERANCE {
                        bail!("channel map basis is not orthonormal (rows {i} and {j}: {dot})");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Channel maps of a profile, `[layer][kv_head]`; empty for a role without one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMaps {
    /// Key maps.
    pub keys: Vec<Vec<ChannelMap>>,
    /// Value maps.
    pub values: Vec<Vec<ChannelMap>>,
}

impl ChannelMaps {
    /// Learns the maps `policy` needs from calibration KV; key scales are weighted by
    /// the calibration queries ([`ChannelMap::learn`]), value scales are the standard
    /// deviations. With `basis`, every map is [`ChannelMap::learn_basis`]'s (keys weighted
    /// by the queries' second moment, values by the identity).
    pub fn learn(
        policy: AxisPolicy,
        kv: &KvData,
        queries: &Queries,
        basis: bool,
    ) -> Result<ChannelMaps> {
        let (k, v) = policy.channels();
        if k && queries.layers.len() != kv.layers.len() {
            bail!(
                "calibration has queries for {} of {} layers",
                queries.layers.len(),
                kv.layers.len()
            );
        }
        let keys = if k {
            kv.layers
                .iter()
                .zip(&queries.layers)
                .map(|(l, qs)| {
                    let moments = query_moments(qs, l.keys.len(), basis)?;
                    Ok(l.keys
                        .iter()
                        .zip(&moments)
                        .map(|(m, p)| ChannelMap::learn_any(m, Some(p), basis))
                        .collect())
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let values = if v {
            kv.layers
                .iter()
                .map(|l| {
                    l.values
                        .iter()
                        .map(|m| ChannelMap::learn_any(m, None, basis))
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(ChannelMaps { keys, values })
    }

    /// The map of a stream, if any.
    pub fn get(&self, layer: usize, head: usize, key: bool) -> Option<&ChannelMap> {
        let maps = if key { &self.keys } else { &self.values };
        maps.get(layer).and_then(|l| l.get(head))
    }

    /// Checks the maps against the policy and shape `[layers, kv_heads, head_dim]`.
    pub fn check(&self, policy: AxisPolicy, dims: [usize; 3]) -> Result<()> {
        let (k, v) = policy.channels();
        for (name, maps, on) in [("keys", &self.keys, k), ("values", &self.values, v)] {
            let want = if on { dims[0] } else { 0 };
            if maps.len() != want {
                bail!(
                    "channels.{name}: {} layers, the {policy:?} policy needs {want}",
                    maps.len()
                );
            }
            for l in maps {
                if l.len() != dims[1] {
                    bail!("channels.{name}: {} heads, shape has {}", l.len(), dims[1]);
                }
                for m in l {
                    m.check(dims[2])?;
                }
            }
        }
        Ok(())
    }

    /// Multiplies every map's scales by the median norm of its mapped calibration rows, so
    /// that mapped rows have norms near 1 (what 8-bit log-scale norms cover,
    /// [`super::codec::NormCode`]).
    pub fn center_norms(&mut self, kv: &KvData) {
        for (l, layer) in kv.layers.iter().enumerate() {
            for (key, streams) in [(true, &layer.keys), (false, &layer.values)] {
                let maps = if key {
                    &mut self.keys
                } else {
                    &mut self.values
                };
                for (h, m) in streams.iter().enumerate() {
                    let Some(map) = maps.get_mut(l).and_then(|ms| ms.get_mut(h)) else {
                        continue;
                    };
                    let mut rows = m.data().to_vec();
                    map.forward(&mut rows);
                    let mut norms: Vec<f64> = rows
                        .chunks_exact(m.cols().max(1))
                        .map(|r| {
                            r.iter()
                                .map(|&x| f64::from(x) * f64::from(x))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .collect();
                    norms.sort_by(f64::total_cmp);
                    let median = norms.get(norms.len() / 2).copied().unwrap_or(0.0);
                    if median.is_finite() && median > 0.0 {
                        map.scale
                            .iter_mut()
                            .for_each(|s| *s = (f64::from(*s) * median) as f32);
                    }
                }
            }
        }
    }

    /// `kv` with every mapped stream put through its forward map (for codebook training).
    pub fn apply(&self, kv: &KvData) -> KvData {
        let mut out = kv.clone();
        for (l, layer) in out.layers.iter_mut().enumerate() {
            for (h, m) in layer.keys.iter_mut().enumerate() {
                if let Some(map) = self.get(l, h, true) {
                    map.forward(m.data_mut());
                }
            }
            for (h, m) in layer.values.iter_mut().enumerate() {
                if let Some(map) = self.get(l, h, false) {
                    map.forward(m.data_mut());
                }
            }
        }
        out
    }
}

/// Per KV head, the mean square of each channel over the queries of the heads that read
/// it (query head `h` reads KV head `h / (query_heads / kv_heads)`); with `full`, the whole
/// second-moment matrix `E[q·qᵀ]` (row-major `d × d`).
fn query_moments(qs: &[Matrix], kv_heads: usize, full: bool) -> Result<Vec<Vec<f64>>> {
    if kv_heads == 0 || qs.is_empty() || !qs.len().is_multiple_of(kv_heads) {
        bail!(
            "{} query heads do not group onto {kv_heads} KV heads",
            qs.len()
        );
    }
    let g = qs.len() / kv_heads;
    Ok(qs
        .chunks(g)
        .map(|group| {
            let d = group[0].cols();
            let mut p = vec![0f64; if full { d * d } else { d }];
            let mut n = 0usize;
            for m in group {
                for t in 0..m.rows() {
                    let r = &m.row(t)[..d.min(m.cols())];
                    for (c, &x) in r.iter().enumerate() {
                        if full {
                            for (e, &y) in r.iter().enumerate() {
                                p[c * d + e] += f64::from(x) * f64::from(y);
                            }
                        } else {
                            p[c] += f64::from(x) * f64::from(x);
                        }
                    }
                    n += 1;
                }
            }
            p.iter().map(|v| v / n.max(1) as f64).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_map_centres_and_scales_and_inverts() {
        let m = Matrix::new(4, 2, vec![10.0, 0.0, 12.0, 1.0, 10.0, 0.0, 12.0, 1.0]).unwrap();
        let map = ChannelMap::learn(&m, None);
        assert_eq!(map.mean, vec![11.0, 0.5]);
        assert_eq!(map.scale, vec![1.0, 0.5]);
        let mut x = m.data().to_vec();
        map.forward(&mut x);
        assert_eq!(&x[..2], &[-1.0, -1.0]);
        map.inverse(&mut x);
        assert_eq!(x, m.data());
        // A constant channel gets the floor, not zero.
        let c = ChannelMap::learn(&Matrix::new(2, 2, vec![3.0, 1.0, 3.0, -1.0]).unwrap(), None);
        assert_eq!(c.scale[0], MIN_SCALE);
        assert!(c.check(2).is_ok() && c.check(3).is_err());
        // Query-weighted: (σ² / E[q²])^¼ = (1 / 16)^¼ = 0.5 and (0.25 / 0.25)^¼ = 1.
        let w = ChannelMap::learn(&m, Some(&[16.0, 0.25]));
        assert_eq!(w.scale, vec![0.5, 1.0]);
    }

    /// `tr(A·C·Aᵀ) · tr(A⁻ᵀ·Q·A⁻¹)`: the modelled error of an isotropic codec behind the
    /// map `A`, computed by mapping unit vectors (the columns of `A⁻¹` come from `inverse`).
    fn modelled_error(map: &ChannelMap, rows: &Matrix, q: &[f64]) -> f64 {
        let d = rows.cols();
        let mut mapped = rows.data().to_vec();
        map.forward(&mut mapped);
        let n = rows.rows() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|c| mapped.chunks_exact(d).map(|r| f64::from(r[c])).sum::<f64>() / n)
            .collect();
        let energy: f64 = mapped
            .chunks_exact(d)
            .map(|r| {
                r.iter()
                    .zip(&mean)
                    .map(|(&x, m)| (f64::from(x) - m).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n;
        // Column j of A⁻¹ = inverse(e_j) − inverse(0).
        let mut zero = vec![0f32; d];
        map.inverse(&mut zero);
        let mut metric = 0f64;
        for j in 0..d {
            let mut e = vec![0f32; d];
            e[j] = 1.0;
            map.inverse(&mut e);
            let col: Vec<f64> = e.iter().zip(&zero).map(|(a, b)| f64::from(a - b)).collect();
            for a in 0..d {
                for b in 0..d {
                    metric += col[a] * q[a * d + b] * col[b];
                }
            }
        }
        energy * metric
    }

    #[test]
    fn learned_basis_inverts_and_lowers_the_modelled_error() {
        let mut r = crate::kv::prng::SplitMix64::new(7);
        let d = 4;
        // Correlated rows with an offset, and correlated queries.
        let rows: Vec<f32> = (0..400)
            .flat_map(|_| {
                let (a, b, c) = (r.next_gaussian(), r.next_gaussian(), r.next_gaussian());
                [5.0 + 3.0 * a + b, 3.0 * a - b, 0.3 * c, 0.1 * b + c].map(|v| v as f32)
            })
            .collect();
        let m = Matrix::new(400, d, rows).unwrap();
        let q = [
            4.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.5, 0.0, 0.0, 1.0,
        ];
        let qdiag: Vec<f64> = (0..d).map(|i| q[i * d + i]).collect();
        let basis = ChannelMap::learn_basis(&m, Some(&q));
        basis.check(d).unwrap();
        let diag = ChannelMap::learn(&m, Some(&qdiag));
        let (eb, ed) = (
            modelled_error(&basis, &m, &q),
            modelled_error(&diag, &m, &q),
        );
        assert!(eb < 0.9 * ed, "basis {eb}, diagonal {ed}");
        let mut x = m.data().to_vec();
        basis.forward(&mut x);
        basis.inverse(&mut x);
        for (a, b) in x.iter().zip(m.data()) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // A map without a basis serializes as before (old profiles keep their digests).
        let json = serde_json::to_string(&diag).unwrap();
        assert!(!json.contains("basis"));
        let mut bad = basis.clone();
        bad.basis.as_mut().unwrap()[0] *= 1.5;
        assert!(bad
            .check(d)
            .unwrap_err()
            .to_string()
            .contains("orthonormal"));
    }

    #[test]
    fn learned_basis_of_independent_channels_is_the_diagonal_map() {
        let m = Matrix::new(4, 2, vec![10.0, 0.0, 12.0, 0.0, 10.0, 1.0, 12.0, 1.0]).unwrap();
        let b = ChannelMap::learn_basis(&m, Some(&[16.0, 0.0, 0.0, 0.25]));
        // Directions sorted by descending μ = scale⁻²: channel 0 (scale 0.5) first.
        assert_eq!(
            b.basis
                .as_ref()
                .unwrap()
                .iter()
                .map(|v| v.abs())
                .collect::<Vec<_>>(),
            [1.0, 0.0, 0.0, 1.0]
        );
        assert!(
            (b.scale[0] - 0.5).abs() < 1e-6 && (b.scale[1] - 1.0).abs() < 1e-6,
            "{:?}",
            b.scale
        );
    }

    #[test]
    fn policies_choose_roles() {
        assert_eq!(AxisPolicy::RoleAwareKiviStyle.channels(), (true, false));
        assert_eq!(AxisPolicy::PerChannel.channels(), (true, true));
        assert_eq!(
            serde_json::to_string(&AxisPolicy::RoleAwareKiviStyle).unwrap(),
            "\"role_aware_kivi_style\""
        );
    }
}

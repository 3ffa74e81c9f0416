//! Quasi-uniform unit directions in R^k used to seed codebook shells.
//!
//! * `k = 1`: the two directions `+1, -1`.
//! * `k = 2`: Fibonacci spiral on the circle, evenly spaced angles
//!   `θ_i = 2π (i + shell/shells) / M` (each shell offset by a fraction of a step).
//! * `k = 3`: Fibonacci sphere, `z_i = 1 - (2i + 1)/M`, longitude
//!   `i · golden_angle + 2π · frac(shell / φ)`.
//! * `k ≥ 4`: Roberts-Kronecker sequence `t_n = frac(0.5 + n · α)` in `[0,1)^k`
//!   with `α_j = φ_k^-(j+1)`, `φ_k` the positive root of `x^(k+1) = x + 1`
//!   (generalized golden ratio); each point is mapped through the normal
//!   quantile coordinate-wise and normalized onto the sphere. Shell `l` uses
//!   sequence numbers `n = l·M .. (l+1)·M`, so shells interleave.
//!
//! All arithmetic is `f64`.

use anyhow::{bail, Result};

use super::special::normal_quantile;

const GOLDEN: f64 = 1.618_033_988_749_895;

/// Generalized golden ratio: the positive root of `x^(k+1) = x + 1` (Newton from 2).
pub fn generalized_golden_ratio(k: usize) -> f64 {
    let p = (k + 1) as i32;
    let mut x = 2.0f64;
    for _ in 0..100 {
        let f = x.powi(p) - x - 1.0;
        let df = p as f64 * x.powi(p - 1) - 1.0;
        let next = x - f / df;
        if (next - x).abs() < 1e-15 {
            return next;
        }
        x = next;
    }
    x
}

/// `m` unit directions in R^k for shell `shell` of `shells`, row-major (`m * k` values).
pub fn shell_directions(k: usize, m: usize, shell: usize, shells: usize) -> Result<Vec<f64>> {
    if m == 0 || shells == 0 || shell >= shells {
        bail!("invalid direction request: m={m}, shell={shell}, shells={shells}");
    }
    let tau = 2.0 * std::f64::consts::PI;
    let mut out = Vec::with_capacity(m * k);
    match k {
        0 => bail!("block dimension must be >= 1"),
        1 => {
            if m != 2 {
                bail!("k = 1 has exactly 2 directions, asked for {m}");
            }
            out.extend_from_slice(&[1.0, -1.0]);
        }
        2 => {
            let off = shell as f64 / shells as f64;
            for i in 0..m {
                let t = tau * (i as f64 + off) / m as f64;
                out.extend_from_slice(&[t.cos(), t.sin()]);
            }
        }
        3 => {
            let golden_angle = std::f64::consts::PI * (3.0 - 5f64.sqrt());
            let off = tau * (shell as f64 / GOLDEN).fract();
            for i in 0..m {
                let z = 1.0 - (2 * i + 1) as f64 / m as f64;
                let rho = (1.0 - z * z).max(0.0).sqrt();
                let phi = i as f64 * golden_angle + off;
                out.extend_from_slice(&[rho * phi.cos(), rho * phi.sin(), z]);
            }
        }
        _ => {
            let g = generalized_golden_ratio(k);
            let alpha: Vec<f64> = (1..=k).map(|j| g.powi(-(j as i32))).collect();
            for i in 0..m {
                let n = (shell * m + i + 1) as f64;
                let start = out.len();
                let mut norm2 = 0.0;
                for a in &alpha {
                    let t = (0.5 + n * a).fract();
                    let v = normal_quantile(t);
                    norm2 += v * v;
                    out.push(v);
                }
                let inv = 1.0 / norm2.sqrt().max(1e-300);
                for v in &mut out[start..] {
                    *v *= inv;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_ratios() {
        assert!((generalized_golden_ratio(1) - GOLDEN).abs() < 1e-14);
        // Plastic number for k = 2.
        assert!((generalized_golden_ratio(2) - 1.324_717_957_244_746).abs() < 1e-14);
    }

    #[test]
    fn directions_are_unit_and_spread() {
        for k in 1..=8 {
            let m = if k == 1 { 2 } else { 64 };
            let d = shell_directions(k, m, 1, 3).unwrap();
            assert_eq!(d.len(), m * k);
            let mut mean = vec![0.0; k];
            for row in d.chunks(k) {
                let n: f64 = row.iter().map(|v| v * v).sum();
                assert!((n - 1.0).abs() < 1e-12, "k={k}");
                for (a, b) in mean.iter_mut().zip(row) {
                    *a += b / m as f64;
                }
            }
            // Quasi-uniform sets are nearly centred.
            let c: f64 = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(c < 0.2, "k={k} centroid norm {c}");
        }
    }

    #[test]
    fn circle_is_evenly_spaced() {
        let d = shell_directions(2, 4, 0, 1).unwrap();
        let want = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, -1.0];
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 1e-15);
        }
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(shell_directions(1, 3, 0, 1).is_err());
        assert!(shell_directions(4, 8, 2, 2).is_err());
        assert!(shell_directions(0, 8, 0, 1).is_err());
    }
}

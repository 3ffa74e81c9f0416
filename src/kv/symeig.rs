//! Eigendecomposition of small symmetric matrices (cyclic Jacobi, f64) and the functions
//! of them the learned channel bases need (square roots, the matrix geometric mean).
//!
//! Matrices are row-major `n × n` slices. Deterministic: fixed sweep order, fixed
//! stopping rule, no threads.

/// Sweeps at most; a 64 × 64 matrix converges in under 10.
const MAX_SWEEPS: usize = 50;

/// Eigenvalues (descending) and eigenvectors (`vectors[i * n + j]` = component `i` of
/// eigenvector `j`, the columns in the order of the values) of a symmetric matrix.
pub fn eigh(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "eigh: matrix is not {n} x {n}");
    let mut m = a.to_vec();
    // Symmetrize, so that rounding in the caller cannot make the rotations drift.
    for i in 0..n {
        for j in 0..i {
            let s = 0.5 * (m[i * n + j] + m[j * n + i]);
            m[i * n + j] = s;
            m[j * n + i] = s;
        }
    }
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * akp - s * akq;
                    m[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * apk - s * aqk;
                    m[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| m[b * n + b].total_cmp(&m[a * n + a]).then(a.cmp(&b)));
    let values = order.iter().map(|&j| m[j * n + j]).collect();
    let mut vectors = vec![0f64; n * n];
    for (col, &j) in order.iter().enumerate() {
        for i in 0..n {
            vectors[i * n + col] = v[i * n + j];
        }
    }
    (values, vectors)
}

/// `V · diag(f(λ)) · Vᵀ` for the eigendecomposition of a symmetric matrix.
pub fn apply_fn(a: &[f64], n: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
    let (lam, v) = eigh(a, n);
    let fl: Vec<f64> = lam.iter().map(|&l| f(l)).collect();
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| v[i * n + k] * fl[k] * v[j * n + k]).sum();
        }
    }
    out
}

/// Row-major product of two `n × n` matrices.
pub fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}

/// The matrix geometric mean of `C⁻¹` and `Q` for symmetric positive definite `C` and `Q`:
/// `P = C^-½ (C^½ Q C^½)^½ C^-½`, the unique positive definite `P` with `P C P = Q`.
/// Eigenvalues below `1e-12` times the largest are raised to it first.
pub fn geometric_mean_inv(c: &[f64], q: &[f64], n: usize) -> Vec<f64> {
    let top = eigh(c, n).0.first().copied().unwrap_or(0.0).max(1e-300);
    let floor = top * 1e-12;
    let ch = apply_fn(c, n, |l| l.max(floor).sqrt());
    let cih = apply_fn(c, n, |l| 1.0 / l.max(floor).sqrt());
    let m = matmul(&matmul(&ch, q, n), &ch, n);
    let mtop = eigh(&m, n).0.first().copied().unwrap_or(0.0).max(1e-300);
    let mh = apply_fn(&m, n, |l| l.max(mtop * 1e-12).sqrt());
    matmul(&matmul(&cih, &mh, n), &cih, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn eigh_reconstructs_and_sorts() {
        let n = 5;
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = 1.0 / (1.0 + i as f64 + j as f64) + if i == j { 2.0 } else { 0.0 };
            }
        }
        let (lam, v) = eigh(&a, n);
        assert!(lam.windows(2).all(|w| w[0] >= w[1]), "{lam:?}");
        let back = apply_fn(&a, n, |l| l);
        assert!(close(&back, &a, 1e-12));
        // Orthonormal eigenvectors, A v = λ v.
        for j in 0..n {
            for k in 0..n {
                let d: f64 = (0..n).map(|i| v[i * n + j] * v[i * n + k]).sum();
                assert!((d - f64::from(u8::from(j == k))).abs() < 1e-12);
            }
            for i in 0..n {
                let av: f64 = (0..n).map(|k| a[i * n + k] * v[k * n + j]).sum();
                assert!((av - lam[j] * v[i * n + j]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn geometric_mean_solves_pcp_eq_q() {
        let n = 4;
        let c = [
            4.0, 1.0, 0.0, 0.0, 1.0, 3.0, 0.5, 0.0, 0.0, 0.5, 2.0, 0.1, 0.0, 0.0, 0.1, 1.0,
        ];
        let q = [
            1.0, 0.2, 0.0, 0.3, 0.2, 2.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.3, 0.0, 0.0, 1.5,
        ];
        let p = geometric_mean_inv(&c, &q, n);
        let pcp = matmul(&matmul(&p, &c, n), &p, n);
        assert!(close(&pcp, &q, 1e-10), "{pcp:?}");
        // Diagonal case: sqrt(q / c).
        let p = geometric_mean_inv(&[4.0, 0.0, 0.0, 9.0], &[1.0, 0.0, 0.0, 4.0], 2);
        assert!(close(&p, &[0.5, 0.0, 0.0, 2.0 / 3.0], 1e-12), "{p:?}");
    }
}

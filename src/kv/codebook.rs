//! Radial-angular codebooks and their byte artifact.
//!
//! A codebook holds `N` codewords in R^k matched to the "spherical-Beta"
//! source: the k-blocks of a uniformly random unit vector in R^D, whose squared
//! norm is `Beta(k/2, (D-k)/2)`.
//!
//! Initial construction ([`Codebook::initial`]): `N = L · M` with `L` radius
//! levels ("shells") and `M` directions per shell (see [`shell_split`]).
//! Shell `l` has radius `r_l = sqrt(Q((l + 0.5)/L))`, `Q` the Beta quantile,
//! and directions from [`super::directions::shell_directions`]. Codeword index
//! `l·M + i` is direction `i` of shell `l`. Lloyd refinement (`lloyd.rs`) then
//! moves the codewords.
//!
//! Byte layout (all little-endian), `24 + 4·N·k` bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `QFKVCB01` |
//! | 8 | 4 | u32 format version = 1 |
//! | 12 | 4 | u32 block_dim k |
//! | 16 | 4 | u32 codebook_size N |
//! | 20 | 4 | u32 padded_dim D |
//! | 24 | 4·N·k | f32 codewords, codeword-major (`c[0][0..k], c[1][0..k], ...`) |
//!
//! The artifact digest is the lowercase hex SHA-256 of these bytes.

use anyhow::{bail, Result};

use super::digest::sha256_hex;
use super::directions::shell_directions;
use super::special::beta_quantile;

/// Magic bytes opening a serialized codebook.
pub const CODEBOOK_MAGIC: [u8; 8] = *b"QFKVCB01";
/// Serialized codebook format version.
pub const CODEBOOK_VERSION: u32 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 24;
/// Largest block dimension.
pub const MAX_BLOCK_DIM: usize = 8;
/// Largest codebook size (12-bit indices).
pub const MAX_CODEBOOK_SIZE: usize = 1 << 12;

/// Splits `N` codewords into `(L shells, M directions)`, `L·M = N`.
///
/// `k = 1`: `M = 2` (±), `L = N/2` (this is the symmetric scalar quantizer).
/// `k ≥ 2`: `L = 2^round(log2(N)/k)` (one of the k degrees of freedom is radial,
/// so about `N^(1/k)` levels), then halved while `M = N/L < 2k` so every shell
/// has enough directions to span R^k.
pub fn shell_split(k: usize, n: usize) -> (usize, usize) {
    if k <= 1 {
        return ((n / 2).max(1), n.min(2));
    }
    let bits = n.trailing_zeros() as f64;
    let mut levels = 1usize << ((bits / k as f64).round() as u32);
    while levels > 1 && n / levels < 2 * k {
        levels /= 2;
    }
    (levels, n / levels)
}

/// Validates `(k, N, D)` for a codebook.
pub fn check_dims(k: usize, n: usize, padded_dim: usize) -> Result<()> {
    if k == 0 || k > MAX_BLOCK_DIM {
        bail!("block_dim must be in 1..={MAX_BLOCK_DIM}, got {k}");
    }
    if !n.is_power_of_two() || !(2..=MAX_CODEBOOK_SIZE).contains(&n) {
        bail!("codebook_size must be a power of two in 2..={MAX_CODEBOOK_SIZE}, got {n}");
    }
    if !padded_dim.is_power_of_two() || padded_dim <= k {
        bail!("padded_dim must be a power of two greater than block_dim {k}, got {padded_dim}");
    }
    Ok(())
}

/// A codebook of `N` codewords in R^k for padded dimension `D`.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    k: usize,
    n: usize,
    padded_dim: usize,
    codewords: Vec<f32>,
}

impl Codebook {
    /// Wraps explicit codewords (`n·k` finite values, codeword-major).
    pub fn new(k: usize, n: usize, padded_dim: usize, codewords: Vec<f32>) -> Result<Self> {
        check_dims(k, n, padded_dim)?;
        if codewords.len() != n * k {
            bail!(
                "codebook has {} values, expected N*k = {}",
                codewords.len(),
                n * k
            );
        }
        if let Some(i) = codewords.iter().position(|v| !v.is_finite()) {
            bail!("codebook value {i} is not finite");
        }
        Ok(Self {
            k,
            n,
            padded_dim,
            codewords,
        })
    }

    /// Radial-angular initial codebook (Beta-quantile radii × quasi-uniform directions).
    pub fn initial(k: usize, n: usize, padded_dim: usize) -> Result<Self> {
        check_dims(k, n, padded_dim)?;
        let (levels, dirs) = shell_split(k, n);
        let a = k as f64 / 2.0;
        let b = (padded_dim - k) as f64 / 2.0;
        let mut cw = Vec::with_capacity(n * k);
        for l in 0..levels {
            let r = beta_quantile(a, b, (l as f64 + 0.5) / levels as f64).sqrt();
            for v in shell_directions(k, dirs, l, levels)? {
                cw.push((r * v) as f32);
            }
        }
        Self::new(k, n, padded_dim, cw)
    }

    /// Block dimension k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of codewords N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Index width `log2 N`.
    pub fn bits(&self) -> u32 {
        self.n.trailing_zeros()
    }

    /// Padded dimension D the codebook was designed for.
    pub fn padded_dim(&self) -> usize {
        self.padded_dim
    }

    /// All codewords, codeword-major.
    pub fn codewords(&self) -> &[f32] {
        &self.codewords
    }

    /// Codeword `i` (`i < N`).
    pub fn codeword(&self, i: usize) -> &[f32] {
        &self.codewords[i * self.k..(i + 1) * self.k]
    }

    /// Serializes to the documented little-endian byte layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.codewords.len());
        out.extend_from_slice(&CODEBOOK_MAGIC);
        for v in [
            CODEBOOK_VERSION,
            self.k as u32,
            self.n as u32,
            self.padded_dim as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.codewords {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses the byte layout, rejecting bad magic, version, dims, length or non-finite values.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN {
            bail!("codebook is {} bytes, shorter than its header", bytes.len());
        }
        if bytes[..8] != CODEBOOK_MAGIC {
            bail!("codebook magic mismatch (expected QFKVCB01)");
        }
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
        let version = word(8);
        if version != CODEBOOK_VERSION {
            bail!("unsupported codebook version {version}");
        }
        let (k, n, d) = (word(12) as usize, word(16) as usize, word(20) as usize);
        check_dims(k, n, d)?;
        let want = HEADER_LEN + 4 * n * k;
        if bytes.len() != want {
            bail!("codebook is {} bytes, header says {want}", bytes.len());
        }
        let cw = bytes[HEADER_LEN..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::new(k, n, d, cw)
    }

    /// Lowercase hex SHA-256 of [`Codebook::to_bytes`].
    pub fn sha256(&self) -> String {
        sha256_hex(&self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_splits() {
        assert_eq!(shell_split(1, 8), (4, 2));
        assert_eq!(shell_split(2, 4), (1, 4));
        assert_eq!(shell_split(2, 256), (16, 16));
        assert_eq!(shell_split(4, 32), (2, 16));
        assert_eq!(shell_split(4, 256), (4, 64));
        assert_eq!(shell_split(8, 256), (2, 128));
        assert_eq!(shell_split(8, 16), (1, 16));
    }

    #[test]
    fn initial_radii_follow_beta_quantiles() {
        let cb = Codebook::initial(4, 32, 128).unwrap();
        let norms: Vec<f64> = (0..32)
            .map(|i| {
                cb.codeword(i)
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let r0 = beta_quantile(2.0, 62.0, 0.25).sqrt();
        let r1 = beta_quantile(2.0, 62.0, 0.75).sqrt();
        for (i, r) in norms.iter().enumerate() {
            let want = if i < 16 { r0 } else { r1 };
            assert!((r - want).abs() < 1e-6, "codeword {i}: {r} vs {want}");
        }
        // Scalar (k = 1) init is symmetric.
        let s = Codebook::initial(1, 4, 128).unwrap();
        assert_eq!(s.codeword(0)[0], -s.codeword(1)[0]);
        assert_eq!(s.codeword(2)[0], -s.codeword(3)[0]);
    }

    #[test]
    fn bytes_round_trip_and_layout() {
        let cb = Codebook::new(2, 2, 8, vec![1.0, -2.0, 0.5, 0.0]).unwrap();
        let b = cb.to_bytes();
        assert_eq!(&b[..8], b"QFKVCB01");
        assert_eq!(&b[8..24], &[1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0]);
        assert_eq!(&b[24..28], &1.0f32.to_le_bytes());
        assert_eq!(b.len(), 24 + 16);
        assert_eq!(Codebook::from_bytes(&b).unwrap(), cb);
        assert_eq!(cb.sha256(), sha256_hex(&b));
        assert_eq!(cb.sha256().len(), 64);
    }

    #[test]
    fn rejects_corrupt_bytes() {
        let cb = Codebook::initial(4, 16, 64).unwrap();
        let good = cb.to_bytes();
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(Codebook::from_bytes(&bad).is_err());
        assert!(Codebook::from_bytes(&good[..good.len() - 1]).is_err());
        let mut nan = good.clone();
        nan[24..28].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Codebook::from_bytes(&nan).is_err());
        let mut dims = good;
        dims[16] = 3; // N = 3
        assert!(Codebook::from_bytes(&dims).is_err());
        assert!(Codebook::new(9, 16, 64, vec![0.0; 144]).is_err());
        assert!(Codebook::new(4, 16, 4, vec![0.0; 64]).is_err());
    }
}

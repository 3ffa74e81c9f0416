//! Seeded randomized Walsh-Hadamard rotation.
//!
//! `R(x) = H_D · diag(s) · pad(x) / sqrt(D)` where `D` is the next power of two
//! at or above the head dimension `d`, `pad` appends `D - d` zeros, `H_D` is the
//! (symmetric, unnormalized) Sylvester Hadamard matrix applied by the in-place
//! fast transform, and `s_i ∈ {+1, -1}` for `i = 0..D` are drawn in order from
//! [`SplitMix64`] seeded with the profile seed: `s_i = -1` iff bit 63 of the
//! `i`-th output is set. `R` is orthogonal, so `R⁻¹(y) = diag(s) · H_D · y / sqrt(D)`
//! followed by dropping the padding. Only IEEE add/sub/mul are used, in a fixed
//! order, so results are bit-identical on every machine.

use anyhow::{bail, Result};

use super::prng::SplitMix64;

/// Largest supported head dimension.
pub const MAX_DIM: usize = 1 << 16;

/// Smallest power of two `>= d` (the padded dimension `D`).
pub fn padded_dim(d: usize) -> usize {
    d.next_power_of_two()
}

/// In-place unnormalized fast Walsh-Hadamard transform; errors unless `y.len()`
/// is a power of two.
///
/// Butterflies are `(a, b) -> (a + b, a - b)` for stride `h = 1, 2, 4, ...`; the
/// result is bit-identical whichever instruction set runs it (runtime-dispatched).
pub fn fwht(y: &mut [f32]) -> Result<()> {
    if !y.len().is_power_of_two() {
        bail!("Walsh-Hadamard length {} is not a power of two", y.len());
    }
    fwht_pow2(y);
    Ok(())
}

/// [`fwht`] for a length already known to be a power of two.
fn fwht_pow2(y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        match crate::cpu::level() {
            // SAFETY: `cpu::level` only returns levels this CPU supports.
            crate::cpu::Level::Avx512 => return unsafe { fwht_avx512(y) },
            // SAFETY: as above.
            crate::cpu::Level::Avx2 => return unsafe { fwht_avx2(y) },
            crate::cpu::Level::Scalar => {}
        }
    }
    fwht_impl(y)
}

/// Explicit AVX-512 transform: strides 1..8 as in-register permutes, larger
/// strides as 16-wide butterflies; sizes 16..=256 stay entirely in registers.
/// Same IEEE operations, in the same pairing, as [`fwht_impl`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwht_avx512(y: &mut [f32]) {
    match y.len() {
        16 => x86::fwht_regs::<1>(y),
        32 => x86::fwht_regs::<2>(y),
        64 => x86::fwht_regs::<4>(y),
        128 => x86::fwht_regs::<8>(y),
        256 => x86::fwht_regs::<16>(y),
        n if n < 16 => fwht_impl(y),
        _ => x86::fwht_large(y),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Strides 1, 2, 4, 8 inside one register: the lower partner gets `a + q`,
    /// the upper gets `q - a` (q = partner), exactly as the scalar butterfly.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn within(mut a: __m512) -> __m512 {
        let q = _mm512_permute_ps::<0xB1>(a);
        a = _mm512_mask_sub_ps(_mm512_add_ps(a, q), 0xAAAA, q, a);
        let q = _mm512_permute_ps::<0x4E>(a);
        a = _mm512_mask_sub_ps(_mm512_add_ps(a, q), 0xCCCC, q, a);
        let q = _mm512_shuffle_f32x4::<0xB1>(a, a);
        a = _mm512_mask_sub_ps(_mm512_add_ps(a, q), 0xF0F0, q, a);
        let q = _mm512_shuffle_f32x4::<0x4E>(a, a);
        _mm512_mask_sub_ps(_mm512_add_ps(a, q), 0xFF00, q, a)
    }

    /// Whole transform of `16 * M` values held in `M` registers.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fwht_regs<const M: usize>(y: &mut [f32]) {
        debug_assert_eq!(y.len(), 16 * M);
        let p = y.as_mut_ptr();
        let mut r = [_mm512_setzero_ps(); M];
        for (i, v) in r.iter_mut().enumerate() {
            // SAFETY: 16 * i + 16 <= y.len().
            *v = within(unsafe { _mm512_loadu_ps(p.add(16 * i)) });
        }
        let mut h = 1;
        while h < M {
            for base in (0..M).step_by(2 * h) {
                for j in base..base + h {
                    let (x, z) = (r[j], r[j + h]);
                    r[j] = _mm512_add_ps(x, z);
                    r[j + h] = _mm512_sub_ps(x, z);
                }
            }
            h *= 2;
        }
        for (i, v) in r.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(p.add(16 * i), *v) };
        }
    }

    /// Transform of more than 256 values (power of two) through memory.
    #[target_feature(enable = "avx512f")]
    pub(super) fn fwht_large(y: &mut [f32]) {
        let n = y.len();
        let p = y.as_mut_ptr();
        for c in (0..n).step_by(16) {
            // SAFETY: c + 16 <= n.
            unsafe { _mm512_storeu_ps(p.add(c), within(_mm512_loadu_ps(p.add(c)))) };
        }
        let mut h = 16;
        while h < n {
            for base in (0..n).step_by(2 * h) {
                for j in (base..base + h).step_by(16) {
                    // SAFETY: j + h + 16 <= base + 2h <= n.
                    unsafe {
                        let x = _mm512_loadu_ps(p.add(j));
                        let z = _mm512_loadu_ps(p.add(j + h));
                        _mm512_storeu_ps(p.add(j), _mm512_add_ps(x, z));
                        _mm512_storeu_ps(p.add(j + h), _mm512_sub_ps(x, z));
                    }
                }
            }
            h *= 2;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fwht_avx2(y: &mut [f32]) {
    fwht_impl(y)
}

/// Portable transform with plain stride loops.
#[inline(always)]
fn fwht_impl(y: &mut [f32]) {
    let n = y.len();
    let mut h = 1;
    while h < n {
        for chunk in y.chunks_exact_mut(2 * h) {
            let (a, b) = chunk.split_at_mut(h);
            for (x, z) in a.iter_mut().zip(b.iter_mut()) {
                let (p, q) = (*x, *z);
                *x = p + q;
                *z = p - q;
            }
        }
        h *= 2;
    }
}

/// Reference O(D log D) transform with plain stride loops (tests only).
#[cfg(test)]
fn fwht_reference(y: &mut [f32]) {
    let n = y.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (p, q) = (y[j], y[j + h]);
                y[j] = p + q;
                y[j + h] = p - q;
            }
        }
        h *= 2;
    }
}

/// The seeded randomized Hadamard rotation for one head dimension.
#[derive(Debug, Clone)]
pub struct Rotation {
    dim: usize,
    padded: usize,
    seed: u64,
    signs: Vec<f32>,
    inv_sqrt_padded: f32,
}

impl Rotation {
    /// Builds the rotation for head dimension `dim` (1..=65536) from `seed`.
    pub fn new(dim: usize, seed: u64) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            bail!("head_dim must be in 1..={MAX_DIM}, got {dim}");
        }
        let padded = padded_dim(dim);
        let mut rng = SplitMix64::new(seed);
        let signs = (0..padded).map(|_| rng.next_sign()).collect();
        Ok(Self {
            dim,
            padded,
            seed,
            signs,
            inv_sqrt_padded: 1.0 / (padded as f32).sqrt(),
        })
    }

    /// Head dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Padded dimension `D` (power of two).
    pub fn padded_dim(&self) -> usize {
        self.padded
    }

    /// Seed the signs were drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The `D` random signs.
    pub fn signs(&self) -> &[f32] {
        &self.signs
    }

    /// `out = R(x) * scale` without length checks (`x.len() == d`, `out.len() == D`).
    pub(super) fn forward_scaled(&self, x: &[f32], scale: f32, out: &mut [f32]) {
        let s = scale * self.inv_sqrt_padded;
        for ((o, &v), &sg) in out.iter_mut().zip(x).zip(&self.signs) {
            *o = v * s * sg;
        }
        out[self.dim..].fill(0.0);
        fwht_pow2(out);
    }

    /// `out = R⁻¹(y) * scale`; `y` (length `D`) is used as scratch and clobbered.
    pub(super) fn inverse_scaled(&self, y: &mut [f32], scale: f32, out: &mut [f32]) {
        fwht_pow2(y);
        let s = scale * self.inv_sqrt_padded;
        for ((o, &v), &sg) in out.iter_mut().zip(y.iter()).zip(&self.signs) {
            *o = v * s * sg;
        }
    }

    /// Rotates `x` (length `d`) into `out` (length `D`).
    pub fn forward(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.check(x.len(), self.dim, "input")?;
        self.check(out.len(), self.padded, "output")?;
        self.forward_scaled(x, 1.0, out);
        Ok(())
    }

    /// Inverts the rotation: `y` (length `D`) back to `out` (length `d`), dropping padding.
    pub fn inverse(&self, y: &[f32], out: &mut [f32]) -> Result<()> {
        self.check(y.len(), self.padded, "input")?;
        self.check(out.len(), self.dim, "output")?;
        let mut tmp = y.to_vec();
        self.inverse_scaled(&mut tmp, 1.0, out);
        Ok(())
    }

    fn check(&self, got: usize, want: usize, what: &str) -> Result<()> {
        if got != want {
            bail!("rotation {what} length {got}, expected {want}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fwht_small_exact() {
        let mut y = [1.0, 2.0, 3.0, 4.0];
        fwht(&mut y).unwrap();
        assert!(fwht(&mut [0.0; 6]).is_err());
        assert_eq!(y, [10.0, -2.0, -4.0, 0.0]);
    }

    #[test]
    fn fast_fwht_matches_reference_bit_exactly() {
        for n in [1usize, 2, 8, 16, 32, 128, 1024] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 113) as f32 * 0.013 - 0.7)
                .collect();
            let mut a = x.clone();
            let mut b = x.clone();
            let mut c = x;
            fwht(&mut a).unwrap();
            fwht_reference(&mut b);
            fwht_impl(&mut c);
            assert_eq!(a, b, "n={n}");
            assert_eq!(c, b, "n={n}");
        }
    }

    #[test]
    fn rotation_is_orthogonal() {
        // Columns R(e_i) must be orthonormal (d = D = 16).
        let r = Rotation::new(16, 9).unwrap();
        let cols: Vec<Vec<f32>> = (0..16)
            .map(|i| {
                let mut e = vec![0.0; 16];
                e[i] = 1.0;
                let mut out = vec![0.0; 16];
                r.forward(&e, &mut out).unwrap();
                out
            })
            .collect();
        for i in 0..16 {
            for j in 0..16 {
                let dot: f32 = cols[i].iter().zip(&cols[j]).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-6, "({i},{j}) = {dot}");
            }
        }
    }

    #[test]
    fn inverse_recovers_input_with_padding() {
        for &d in &[1usize, 5, 96, 128] {
            let r = Rotation::new(d, 42).unwrap();
            let x: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let mut y = vec![0.0; r.padded_dim()];
            r.forward(&x, &mut y).unwrap();
            let n_in: f32 = x.iter().map(|v| v * v).sum();
            let n_out: f32 = y.iter().map(|v| v * v).sum();
            assert!((n_in - n_out).abs() <= 1e-4 * n_in.max(1.0));
            let mut back = vec![0.0; d];
            r.inverse(&y, &mut back).unwrap();
            for (a, b) in x.iter().zip(&back) {
                assert!((a - b).abs() < 1e-5, "d={d}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn power_of_two_inverse_is_exact_for_dyadic_values() {
        // With D = 4 every intermediate is exactly representable.
        let r = Rotation::new(4, 1).unwrap();
        let x = [1.0, -2.0, 0.5, 4.0];
        let mut y = [0.0; 4];
        r.forward(&x, &mut y).unwrap();
        let mut back = [0.0; 4];
        r.inverse(&y, &mut back).unwrap();
        assert_eq!(back, x);
    }

    #[test]
    fn seeded_signs_are_reproducible() {
        let a = Rotation::new(64, 5).unwrap();
        let b = Rotation::new(64, 5).unwrap();
        let c = Rotation::new(64, 6).unwrap();
        assert_eq!(a.signs(), b.signs());
        assert_ne!(a.signs(), c.signs());
        assert_eq!(Rotation::new(100, 1).unwrap().padded_dim(), 128);
    }

    #[test]
    fn bad_lengths_error() {
        let r = Rotation::new(8, 0).unwrap();
        assert!(r.forward(&[0.0; 7], &mut [0.0; 8]).is_err());
        assert!(r.inverse(&[0.0; 8], &mut [0.0; 9]).is_err());
        assert!(Rotation::new(0, 0).is_err());
    }
}

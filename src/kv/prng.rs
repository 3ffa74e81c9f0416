//! Seeded, portable pseudo-random numbers (SplitMix64).
//!
//! The integer stream is bit-identical on every platform; it drives the
//! rotation signs, so encoded data is portable. The floating-point helpers
//! ([`SplitMix64::next_f64`] is exact, [`SplitMix64::next_gaussian`] uses
//! `ln`/`sqrt`/`cos`) are only used for training data, whose results are
//! shipped as an explicit codebook artifact.

/// Domain-separation constant XORed into the seed for codebook training samples.
pub const TRAINING_STREAM: u64 = 0x7472_6169_6e69_6e67; // "training"
/// Domain-separation constant XORed into the seed for synthetic KV data.
pub const SYNTH_STREAM: u64 = 0x7379_6e74_6865_7469; // "syntheti"

/// SplitMix64 generator (Steele, Lea & Flood 2014): state += 0x9E3779B97F4A7C15,
/// then the standard 30/27/31 xor-shift-multiply finalizer.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator whose first output is `mix(seed + golden)`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` from the top 53 bits (exact, portable).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (`n > 0`), by 128-bit multiply-shift.
    pub fn next_below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Random sign: `-1.0` if the top bit of the next output is set, else `+1.0`.
    pub fn next_sign(&mut self) -> f32 {
        if self.next_u64() >> 63 == 1 {
            -1.0
        } else {
            1.0
        }
    }

    /// Standard normal sample (Box-Muller, one output per two uniforms).
    pub fn next_gaussian(&mut self) -> f64 {
        // 1 - u is in (0, 1], so ln never sees 0.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // Reference outputs of SplitMix64 seeded with 1234567.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn uniform_and_gaussian_ranges() {
        let mut r = SplitMix64::new(7);
        let mut sum = 0.0;
        let mut sq = 0.0;
        let n = 20000;
        for _ in 0..n {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
            let g = r.next_gaussian();
            sum += g;
            sq += g * g;
            assert!(r.next_below(10) < 10);
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}

//! TurboQuant-style scalar baseline: same normalize + rotate + fp16 norm as
//! FibQuant, then each rotated coordinate is quantized independently with a
//! `2^b`-level Lloyd-Max scalar quantizer trained on the Beta coordinate
//! marginal (`x² ~ Beta(1/2, (D-1)/2)`) or on calibration data. It is
//! [`VqCodec`] with block_dim `k = 1`, so it costs `(16 + D·b) / d` bits per value.

use anyhow::{bail, Result};

use super::super::codec::{VqCodec, VqParams};

/// Codec parameters for a `bits`-bit scalar quantizer (1..=8 bits).
pub fn turboquant_params(head_dim: usize, bits: u32, seed: u64) -> Result<VqParams> {
    if !(1..=8).contains(&bits) {
        bail!("TurboQuant bits must be in 1..=8, got {bits}");
    }
    let mut p = VqParams::new(head_dim, 1, 1 << bits);
    p.seed = seed;
    p.validate()?;
    Ok(p)
}

/// Trains and builds the scalar codec named `turboquant-b{bits}`.
pub fn turboquant(
    head_dim: usize,
    bits: u32,
    seed: u64,
    calibration: Option<&[f32]>,
) -> Result<VqCodec> {
    turboquant_params(head_dim, bits, seed)?.build(&format!("turboquant-b{bits}"), calibration)
}

#[cfg(test)]
mod tests {
    use super::super::super::codec::KvCodec;
    use super::super::super::prng::SplitMix64;
    use super::super::super::tensor::Matrix;
    use super::*;

    #[test]
    fn scalar_codebook_is_symmetric_lloyd_max() {
        let c = turboquant(64, 2, 1, None).unwrap();
        let cw = c.codebook().codewords();
        assert_eq!(cw.len(), 4);
        // Trained levels stay nearly symmetric: {-a, a, -b, b} (shell-major).
        assert!(
            (cw[0] + cw[1]).abs() < 0.02 && (cw[2] + cw[3]).abs() < 0.02,
            "{cw:?}"
        );
        assert!((c.bits_per_value() - (16.0 + 128.0) / 64.0).abs() < 1e-12);
    }

    #[test]
    fn more_bits_less_error() {
        let mut r = SplitMix64::new(2);
        let m = Matrix::new(
            200,
            64,
            (0..200 * 64).map(|_| r.next_gaussian() as f32).collect(),
        )
        .unwrap();
        let err = |b| {
            let out = turboquant(64, b, 0, None).unwrap().round_trip(&m).unwrap();
            m.data()
                .iter()
                .zip(out.data())
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
        };
        let (e2, e4) = (err(2), err(4));
        assert!(e4 < e2 * 0.25, "{e4} vs {e2}");
        assert!(turboquant(64, 9, 0, None).is_err());
    }
}

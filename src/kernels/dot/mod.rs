//! Fused dot products of quantized weight rows with 8-bit activations, with run-time
//! dispatch between an AVX-512 VNNI path, an AVX2 path and a portable scalar path.
//!
//! - Q4_K, Q5_K, Q6_K and IQ4_XS pair with 256-value activation blocks: `vpmaddubsw` of
//!   the unsigned 4/5/6-bit levels with the i8 activations, then `vpdpwssd` with the 16-bit
//!   sub-block scales, so a whole super-block accumulates in i32 before one f32 multiply;
//!   the mins (Q4_K, Q5_K) and the level offset 32 (Q6_K) come from the activation sums.
//!   IQ4_XS's signed table values (`vpshufb`) go in as `|w|` with their signs moved onto
//!   the activations, and its signed 6-bit group scales as the 16-bit scales.
//! - Q4_0, Q8_0 and NF4 pair with 32-value blocks: the weights become unsigned bytes
//!   (Q4_0 levels, Q8_0 values + 128, NF4 codes through a 16-entry int8 table in
//!   registers with `vpshufb`), `vpdpbusd` multiplies them with the activations, and the
//!   offset is taken off with the activation sums.
//!
//! NF4 uses the codes rounded to int8 (`NF4_I8`, code * 127); everything else is exact
//! integer arithmetic on the stored levels, so the only approximation of the ggml types
//! is the 8-bit activation quantization.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::activation::ActRow;
use super::weights::QuantMatrix;

pub use scalar::dot as dot_scalar;
pub(crate) use scalar::q6_level;
pub use scalar::{iq4_xs_code, iq4_xs_scale, q5_level};

use crate::cpu::Level;

/// NF4 codes times 127, rounded: the int8 table the kernels multiply with.
pub const NF4_I8: [i8; 16] = [
    -127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127,
];

/// The dot-kernel variant that runs at a [`Level`] (the level comes from [`crate::cpu`],
/// the one place that detects features and takes overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, no SIMD intrinsics.
    Scalar,
    /// AVX2 and FMA (`vpmaddubsw` with the sign trick), one token at a time.
    Avx2,
    /// AVX-512 F/BW with VNNI (`vpdpbusd`, `vpdpwssd`), FMA and F16C.
    Avx512Vnni,
}

impl Isa {
    /// The variant for `level`: [`Level::Avx512`] runs the VNNI kernels where the CPU has
    /// VNNI (see [`crate::cpu::Features::avx512_vnni`]) and the AVX2 ones otherwise.
    pub fn for_level(level: Level) -> Isa {
        match level {
            Level::Scalar => Isa::Scalar,
            Level::Avx512 if crate::cpu::features().avx512_vnni() => Isa::Avx512Vnni,
            Level::Avx2 | Level::Avx512 => Isa::Avx2,
        }
    }

    /// The variant for the calling thread's [`crate::cpu::level`].
    pub fn current() -> Isa {
        Self::for_level(crate::cpu::level())
    }

    /// Every variant this CPU can run, scalar first.
    pub fn available() -> Vec<Isa> {
        let mut v: Vec<Isa> = Level::supported()
            .into_iter()
            .map(Self::for_level)
            .collect();
        v.dedup();
        v
    }

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }
}

/// `out[t] = row r of w . acts[t]` for every token in `acts` (`out.len() == acts.len()`);
/// the activations come from [`Activations::for_weights`](super::activation::Activations::for_weights) for `w.ty`.
pub fn dot_rows(isa: Isa, w: &QuantMatrix, r: usize, acts: &[ActRow<'_>], out: &mut [f32]) {
    assert_eq!(acts.len(), out.len());
    let (row, absmax) = (w.row(r), w.row_absmax(r));
    for a in acts {
        assert!(a.qs.len() == w.k && a.d.len() * w.ty.activation_block() == w.k);
        assert!(a.sums16.len() * 16 == w.k);
        assert_eq!(
            a.lane_bias,
            w.ty.lane_bias(),
            "activations made for another weight type"
        );
    }
    match isa {
        Isa::Scalar => {
            for (o, a) in out.iter_mut().zip(acts) {
                *o = dot_scalar(w.ty, row, absmax, a);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            for (o, a) in out.iter_mut().zip(acts) {
                // SAFETY: `Avx2` only comes from a level the CPU supports; the lengths of
                // the row and of every activation were checked above.
                *o = unsafe { avx2::dot(w.ty, row, absmax, a) };
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512Vnni` is only constructed when the CPU supports it (`for_level`),
        // and the lengths of the row and of every activation were checked above.
        Isa::Avx512Vnni => unsafe { x86::dot_rows(w.ty, row, absmax, acts, out) },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2 | Isa::Avx512Vnni => unreachable!("x86 ISAs are never detected off x86_64"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::activation::Activations;
    use super::super::weights::WeightType;
    use super::*;
    use crate::quant::bnb::{code_table, FourBit};

    #[test]
    fn nf4_table_is_the_codes_times_127() {
        for (c, t) in code_table(FourBit::Nf4).iter().zip(NF4_I8) {
            assert_eq!((c * 127.0).round() as i8, t);
        }
    }

    /// Exact reference: the dequantized weights (NF4: the int8 table) times the
    /// dequantized activations, in f64.
    fn reference(w: &QuantMatrix, r: usize, a: &ActRow<'_>) -> f64 {
        let mut row = vec![0f32; w.k];
        match w.ty {
            WeightType::Nf4 => {
                for (i, v) in row.iter_mut().enumerate() {
                    let p = w.row(r)[i / 2];
                    let code = if i % 2 == 0 { p >> 4 } else { p & 0xF };
                    *v = f32::from(NF4_I8[usize::from(code)]) / 127.0
                        * w.row_absmax(r)[i / super::super::weights::NF4_BLOCK];
                }
            }
            _ => w.dequantize_rows(r..r + 1, &mut row),
        }
        let b = w.ty.activation_block();
        row.iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) * f64::from(a.qs[i]) * f64::from(a.d[i / b]))
            .sum()
    }

    #[test]
    fn every_isa_matches_the_exact_integer_reference() {
        let (n, k) = (9, 768);
        for ty in WeightType::ALL {
            let w = QuantMatrix::random(ty, n, k, 3).unwrap();
            let x: Vec<f32> = (0..7 * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let acts = Activations::for_weights(&x, k, ty);
            let rows: Vec<ActRow<'_>> = (0..acts.tokens()).map(|t| acts.token(t)).collect();
            for isa in Isa::available() {
                for r in 0..n {
                    let mut out = vec![0f32; rows.len()];
                    dot_rows(isa, &w, r, &rows, &mut out);
                    for (t, a) in rows.iter().enumerate() {
                        let want = reference(&w, r, a);
                        let scale: f64 =
                            (0..k).map(|i| f64::from(x[t * k + i]).abs()).sum::<f64>() * 0.1;
                        assert!(
                            (f64::from(out[t]) - want).abs() <= 1e-5 * scale.max(1e-3),
                            "{ty:?} {isa:?} row {r} token {t}: {} vs {want}",
                            out[t]
                        );
                    }
                }
            }
        }
    }
}

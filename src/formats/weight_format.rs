//! The one vocabulary of weight types every other converts from and to: a ggml type (the
//! table in [`ggml_type`](super::ggml_type)) or a bitsandbytes 4-bit type.
//!
//! NF4 and FP4 are not ggml types (they have no ggml id, and their block size is chosen per
//! file, with a separate absmax array), so [`WeightFormat`] is `Ggml` or `Bnb`. The other
//! vocabularies are views of it, converted with `From` / `TryFrom` (never through names or
//! raw ids):
//! - [`TensorType`] (a tensor as a file stores it): `TryFrom<TensorType> for GgmlType`;
//! - [`qnat::Scheme`](crate::formats::qnat::Scheme) (what QNAT stores): `From<Scheme> for WeightFormat`, `TryFrom` back;
//! - [`cli::Scheme`] (`export-native --scheme`): `From<cli::Scheme>` for both;
//! - [`FourBit`]: `From<FourBit> for WeightFormat`, `TryFrom` back;
//! - [`WeightType`] (the GEMM kernels'): `From<WeightType> for WeightFormat`, `TryFrom` back;
//! - [`Mix`]: `From<Mix> for GgmlType` (its base type).

use super::ggml_type::GgmlType;
use super::qnat::Scheme;
use super::TensorType;
use crate::cli;
use crate::kernels::WeightType;
use crate::quant::bnb::FourBit;
use crate::quant::mix::Mix;
use std::fmt;

/// A weight type: a ggml type or a bitsandbytes 4-bit type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// A ggml type (block quant or float).
    Ggml(GgmlType),
    /// bitsandbytes NF4 or FP4 with a per-block absmax.
    Bnb(FourBit),
}

/// A conversion to a vocabulary that lacks the type (the message names both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRepresentable(String);

impl fmt::Display for NotRepresentable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotRepresentable {}

impl WeightFormat {
    /// Upper-case name (`Q4_K`, `NF4`).
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Ggml(t) => t.name(),
            WeightFormat::Bnb(FourBit::Nf4) => "NF4",
            WeightFormat::Bnb(FourBit::Fp4) => "FP4",
        }
    }

    /// Parses a name case-insensitively (`q4_k`, `NF4`).
    pub fn from_name(name: &str) -> Option<WeightFormat> {
        [FourBit::Nf4, FourBit::Fp4]
            .map(WeightFormat::Bnb)
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .or_else(|| GgmlType::from_name(name).map(WeightFormat::Ggml))
    }

    fn not(self, to: &str) -> NotRepresentable {
        NotRepresentable(format!("{self} has no {to}"))
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<GgmlType> for WeightFormat {
    fn from(t: GgmlType) -> Self {
        WeightFormat::Ggml(t)
    }
}

impl From<FourBit> for WeightFormat {
    fn from(k: FourBit) -> Self {
        WeightFormat::Bnb(k)
    }
}

impl TryFrom<WeightFormat> for GgmlType {
    type Error = NotRepresentable;
    fn try_from(f: WeightFormat) -> Result<Self, NotRepresentable> {
        match f {
            WeightFormat::Ggml(t) => Ok(t),
            WeightFormat::Bnb(_) => Err(f.not("ggml type")),
        }
    }
}

impl TryFrom<WeightFormat> for FourBit {
    type Error = NotRepresentable;
    fn try_from(f: WeightFormat) -> Result<Self, NotRepresentable> {
        match f {
            WeightFormat::Bnb(k) => Ok(k),
            WeightFormat::Ggml(_) => Err(f.not("bitsandbytes 4-bit type")),
        }
    }
}

impl From<Scheme> for WeightFormat {
    fn from(s: Scheme) -> Self {
        s.format()
    }
}

impl TryFrom<WeightFormat> for Scheme {
    type Error = NotRepresentable;
    fn try_from(f: WeightFormat) -> Result<Self, NotRepresentable> {
        Scheme::ALL
            .iter()
            .copied()
            .find(|s| s.format() == f)
            .ok_or(f.not("QNAT scheme"))
    }
}

impl TryFrom<GgmlType> for Scheme {
    type Error = NotRepresentable;
    fn try_from(t: GgmlType) -> Result<Self, NotRepresentable> {
        Scheme::try_from(WeightFormat::Ggml(t))
    }
}

impl TryFrom<Scheme> for GgmlType {
    type Error = NotRepresentable;
    fn try_from(s: Scheme) -> Result<Self, NotRepresentable> {
        GgmlType::try_from(s.format())
    }
}

impl From<FourBit> for Scheme {
    fn from(k: FourBit) -> Self {
        match k {
            FourBit::Nf4 => Scheme::Nf4,
            FourBit::Fp4 => Scheme::Fp4,
        }
    }
}

impl From<cli::Scheme> for Scheme {
    fn from(s: cli::Scheme) -> Self {
        use cli::Scheme as C;
        match s {
            C::Nf4 => Scheme::Nf4,
            C::Fp4 => Scheme::Fp4,
            C::Q4K => Scheme::Q4_K,
            C::Q5K => Scheme::Q5_K,
            C::Q6K => Scheme::Q6_K,
            C::Q8_0 => Scheme::Q8_0,
            C::F16 => Scheme::F16,
            C::Bf16 => Scheme::BF16,
            C::F32 => Scheme::F32,
        }
    }
}

impl From<cli::Scheme> for WeightFormat {
    fn from(s: cli::Scheme) -> Self {
        Scheme::from(s).format()
    }
}

impl From<WeightType> for WeightFormat {
    fn from(t: WeightType) -> Self {
        match t {
            WeightType::Q4K => WeightFormat::Ggml(GgmlType::Q4_K),
            WeightType::Q6K => WeightFormat::Ggml(GgmlType::Q6_K),
            WeightType::Q8_0 => WeightFormat::Ggml(GgmlType::Q8_0),
            WeightType::Q4_0 => WeightFormat::Ggml(GgmlType::Q4_0),
            WeightType::Nf4 => WeightFormat::Bnb(FourBit::Nf4),
            WeightType::Q5K => WeightFormat::Ggml(GgmlType::Q5_K),
            WeightType::Iq4Xs => WeightFormat::Ggml(GgmlType::IQ4_XS),
        }
    }
}

impl TryFrom<WeightFormat> for WeightType {
    type Error = NotRepresentable;
    fn try_from(f: WeightFormat) -> Result<Self, NotRepresentable> {
        WeightType::ALL
            .into_iter()
            .find(|&t| WeightFormat::from(t) == f)
            .ok_or(f.not("GEMM kernel"))
    }
}

impl From<Mix> for GgmlType {
    /// The mix's base type (`Q4_K_M` -> `Q4_K`).
    fn from(m: Mix) -> Self {
        m.base_type()
    }
}

impl TryFrom<TensorType> for GgmlType {
    type Error = NotRepresentable;
    /// The type as a ggml type where one exists (F32, F16, BF16, I8..I64, F64 and all ggml
    /// block types); not for NF4/FP4 or a safetensors dtype ggml lacks.
    fn try_from(t: TensorType) -> Result<Self, NotRepresentable> {
        use ::safetensors::Dtype as D;
        match t {
            TensorType::Ggml(t) => Ok(t),
            TensorType::Qnat(s) => GgmlType::try_from(s),
            TensorType::Safetensors(d) => Ok(match d {
                D::F32 => GgmlType::F32,
                D::F16 => GgmlType::F16,
                D::BF16 => GgmlType::BF16,
                D::F64 => GgmlType::F64,
                D::I8 => GgmlType::I8,
                D::I16 => GgmlType::I16,
                D::I32 => GgmlType::I32,
                D::I64 => GgmlType::I64,
                _ => return Err(NotRepresentable(format!("{d:?} has no ggml type"))),
            }),
        }
    }
}

impl From<GgmlType> for TensorType {
    fn from(t: GgmlType) -> Self {
        TensorType::Ggml(t)
    }
}

impl From<Scheme> for TensorType {
    fn from(s: Scheme) -> Self {
        TensorType::Qnat(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_scheme_round_trips_and_keeps_its_name() {
        for &s in Scheme::ALL {
            let f = WeightFormat::from(s);
            assert_eq!(Scheme::try_from(f), Ok(s));
            assert_eq!(s.name(), f.name().to_ascii_lowercase(), "stored name");
            assert_eq!(WeightFormat::from_name(s.name()), Some(f));
            assert_eq!(
                GgmlType::try_from(s).ok(),
                GgmlType::from_name(s.name()),
                "{s}"
            );
        }
        assert!(Scheme::try_from(GgmlType::Q8_1).is_err());
        assert_eq!(Scheme::from(FourBit::Fp4), Scheme::Fp4);
        assert_eq!(GgmlType::try_from(Scheme::Q6_K), Ok(GgmlType::Q6_K));
        assert!(GgmlType::try_from(Scheme::Nf4).is_err());
    }

    #[test]
    fn cli_schemes_weight_types_and_four_bit_convert() {
        for &c in cli::Scheme::value_variants() {
            let name = c.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(Scheme::from(c).name(), name);
            assert_eq!(WeightFormat::from(c), WeightFormat::from(Scheme::from(c)));
        }
        for t in WeightType::ALL {
            let f = WeightFormat::from(t);
            assert_eq!(WeightType::try_from(f), Ok(t));
            assert_eq!(f.name().to_ascii_lowercase(), t.name());
        }
        assert!(WeightType::try_from(WeightFormat::Ggml(GgmlType::Q3_K)).is_err());
        for k in [FourBit::Nf4, FourBit::Fp4] {
            assert_eq!(FourBit::try_from(WeightFormat::from(k)), Ok(k));
        }
        assert!(FourBit::try_from(WeightFormat::Ggml(GgmlType::F16)).is_err());
        assert!(GgmlType::try_from(WeightFormat::Bnb(FourBit::Nf4)).is_err());
        assert_eq!(GgmlType::from(Mix::Q4_K_M), GgmlType::Q4_K);
    }

    #[test]
    fn tensor_types_convert_without_names() {
        use ::safetensors::Dtype as D;
        assert_eq!(
            GgmlType::try_from(TensorType::Safetensors(D::BF16)),
            Ok(GgmlType::BF16)
        );
        assert!(GgmlType::try_from(TensorType::Safetensors(D::U8)).is_err());
        assert_eq!(
            GgmlType::try_from(TensorType::from(Scheme::Q4_K)),
            Ok(GgmlType::Q4_K)
        );
        assert!(GgmlType::try_from(TensorType::from(Scheme::Nf4)).is_err());
        assert_eq!(
            GgmlType::try_from(TensorType::from(GgmlType::IQ2_XS)),
            Ok(GgmlType::IQ2_XS)
        );
    }
}

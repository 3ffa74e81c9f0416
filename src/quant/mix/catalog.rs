//! Every type and mix llama-quantize knows: `QUANT_OPTIONS` of llama.cpp
//! `tools/quantize/quantize.cpp` (same revision as the rules), with each one's
//! `llama_ftype`, its base tensor type (`llama_ftype_get_default_type`) and
//! llama.cpp's own description, in llama-quantize's order.

use super::rules::type_requires_imatrix;
use super::Mix;
use crate::formats::ggml_type::GgmlType;

/// One entry of llama-quantize's `QUANT_OPTIONS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantOption {
    /// The name llama-quantize takes (`Q4_K_M`).
    pub name: &'static str,
    /// Its `llama_ftype` (GGUF `general.file_type`).
    pub ftype: u32,
    /// The base tensor type of the file type; `None` for `COPY` (tensors keep their type).
    pub base: Option<GgmlType>,
    /// llama.cpp's description (size and perplexity on a reference model, or bpw).
    pub description: &'static str,
}

impl QuantOption {
    /// The mix qforge plans for this name, or `None` where qforge does not implement it.
    pub fn mix(&self) -> Option<Mix> {
        Mix::from_name(self.name)
    }

    /// The other name this one is an alias for (`Q4_K` -> `Q4_K_M`).
    pub fn alias_of(&self) -> Option<&'static str> {
        self.description
            .strip_prefix("alias for ")
            .and_then(|target| {
                QUANT_OPTIONS
                    .iter()
                    .find(|o| o.name == target)
                    .map(|o| o.name)
            })
    }

    /// Bits per weight of the base type (the mix rules raise some tensors above it).
    pub fn base_bits_per_weight(&self) -> Option<f64> {
        self.base.map(GgmlType::bits_per_weight)
    }

    /// Whether llama.cpp refuses the mix's base type without an importance matrix
    /// (`tensor_requires_imatrix` for the bulk of the tensors).
    pub fn imatrix_required(&self) -> bool {
        self.base
            .is_some_and(|b| type_requires_imatrix(b, self.name == "Q2_K_S"))
    }
}

macro_rules! options {
    ($($name:literal, $ftype:literal, $base:ident, $desc:literal;)*) => {
        &[$(QuantOption { name: $name, ftype: $ftype, base: options!(@base $base), description: $desc }),*]
    };
    (@base COPY) => { None };
    (@base $t:ident) => { Some(GgmlType::$t) };
}

/// llama-quantize's `QUANT_OPTIONS`, in its order.
pub const QUANT_OPTIONS: &[QuantOption] = options! {
    "Q1_0", 40, Q1_0, "1.125 bpw quantization";
    "Q2_0", 41, Q2_0, "2.25 bpw quantization (group 64)";
    "Q4_0", 2, Q4_0, "4.34G, +0.4685 ppl @ Llama-3-8B";
    "Q4_1", 3, Q4_1, "4.78G, +0.4511 ppl @ Llama-3-8B";
    "MXFP4_MOE", 38, MXFP4, "MXFP4 MoE";
    "Q5_0", 8, Q5_0, "5.21G, +0.1316 ppl @ Llama-3-8B";
    "Q5_1", 9, Q5_1, "5.65G, +0.1062 ppl @ Llama-3-8B";
    "IQ2_XXS", 19, IQ2_XXS, "2.06 bpw quantization";
    "IQ2_XS", 20, IQ2_XS, "2.31 bpw quantization";
    "IQ2_S", 28, IQ2_XS, "2.5  bpw quantization";
    "IQ2_M", 29, IQ2_S, "2.7  bpw quantization";
    "IQ1_S", 24, IQ1_S, "1.56 bpw quantization";
    "IQ1_M", 31, IQ1_M, "1.75 bpw quantization";
    "TQ1_0", 36, TQ1_0, "1.69 bpw ternarization";
    "TQ2_0", 37, TQ2_0, "2.06 bpw ternarization";
    "Q2_K", 10, Q2_K, "2.96G, +3.5199 ppl @ Llama-3-8B";
    "Q2_K_S", 21, Q2_K, "2.96G, +3.1836 ppl @ Llama-3-8B";
    "IQ3_XXS", 23, IQ3_XXS, "3.06 bpw quantization";
    "IQ3_S", 26, IQ3_S, "3.44 bpw quantization";
    "IQ3_M", 27, IQ3_S, "3.66 bpw quantization mix";
    "Q3_K", 12, Q3_K, "alias for Q3_K_M";
    "IQ3_XS", 22, IQ3_S, "3.3 bpw quantization";
    "Q3_K_S", 11, Q3_K, "3.41G, +1.6321 ppl @ Llama-3-8B";
    "Q3_K_M", 12, Q3_K, "3.74G, +0.6569 ppl @ Llama-3-8B";
    "Q3_K_L", 13, Q3_K, "4.03G, +0.5562 ppl @ Llama-3-8B";
    "IQ4_NL", 25, IQ4_NL, "4.50 bpw non-linear quantization";
    "IQ4_XS", 30, IQ4_XS, "4.25 bpw non-linear quantization";
    "Q4_K", 15, Q4_K, "alias for Q4_K_M";
    "Q4_K_S", 14, Q4_K, "4.37G, +0.2689 ppl @ Llama-3-8B";
    "Q4_K_M", 15, Q4_K, "4.58G, +0.1754 ppl @ Llama-3-8B";
    "Q5_K", 17, Q5_K, "alias for Q5_K_M";
    "Q5_K_S", 16, Q5_K, "5.21G, +0.1049 ppl @ Llama-3-8B";
    "Q5_K_M", 17, Q5_K, "5.33G, +0.0569 ppl @ Llama-3-8B";
    "Q6_K", 18, Q6_K, "6.14G, +0.0217 ppl @ Llama-3-8B";
    "Q8_0", 7, Q8_0, "7.96G, +0.0026 ppl @ Llama-3-8B";
    "F16", 1, F16, "14.00G, +0.0020 ppl @ Mistral-7B";
    "BF16", 32, BF16, "14.00G, -0.0050 ppl @ Mistral-7B";
    "F32", 0, F32, "26.00G              @ 7B";
    "COPY", 0, COPY, "only copy tensors, no quantizing";
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mix_is_listed_with_its_ftype_and_base_type() {
        for &mix in Mix::ALL {
            let o = QUANT_OPTIONS
                .iter()
                .find(|o| o.name == mix.name())
                .unwrap_or_else(|| panic!("{mix} missing"));
            assert_eq!(o.ftype, mix.file_type(), "{mix}");
            let base = (mix != Mix::COPY).then(|| mix.base_type());
            assert_eq!(o.base, base, "{mix}");
            assert_eq!(o.mix(), Some(mix));
        }
    }

    #[test]
    fn aliases_point_at_the_same_ftype() {
        let aliases: Vec<_> = QUANT_OPTIONS
            .iter()
            .filter_map(|o| o.alias_of().map(|a| (o, a)))
            .collect();
        assert_eq!(aliases.len(), 3);
        for (o, target) in aliases {
            let t = QUANT_OPTIONS.iter().find(|x| x.name == target).unwrap();
            assert_eq!((o.ftype, o.base), (t.ftype, t.base), "{}", o.name);
            assert_eq!(o.mix(), t.mix());
        }
    }

    #[test]
    fn names_are_unique_and_flags_follow_llama_cpp() {
        for (i, o) in QUANT_OPTIONS.iter().enumerate() {
            assert!(QUANT_OPTIONS[..i]
                .iter()
                .all(|p| !p.name.eq_ignore_ascii_case(o.name)));
        }
        let imatrix: Vec<_> = QUANT_OPTIONS
            .iter()
            .filter(|o| o.imatrix_required())
            .map(|o| o.name)
            .collect();
        assert_eq!(
            imatrix,
            ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "Q2_K_S", "IQ3_XXS"]
        );
        let copy = QUANT_OPTIONS.last().unwrap();
        assert_eq!(
            (copy.name, copy.mix(), copy.base_bits_per_weight()),
            ("COPY", Some(Mix::COPY), None)
        );
        assert_eq!(
            QUANT_OPTIONS
                .iter()
                .find(|o| o.name == "Q4_K_M")
                .unwrap()
                .base_bits_per_weight(),
            Some(4.5)
        );
    }
}

//! The llama-quantize file types ("mixes") qforge offers, with their llama.cpp names,
//! `llama_ftype` values and base types.

use crate::formats::ggml_type::GgmlType;
use std::fmt;

/// A llama-quantize file type ("mix"): the base tensor type plus per-tensor rules.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mix {
    /// `Q4_0`: legacy 4-bit, 32-element blocks.
    Q4_0,
    /// `Q4_1`: legacy 4-bit with minimum.
    Q4_1,
    /// `Q5_0`: legacy 5-bit.
    Q5_0,
    /// `Q5_1`: legacy 5-bit with minimum.
    Q5_1,
    /// `Q2_K`: Q2_K base, attn_v/ffn_down/attn_output raised to Q3_K (or more).
    Q2_K,
    /// `Q2_K_S`: Q2_K base, needs an importance matrix.
    Q2_K_S,
    /// `IQ3_XXS`: IQ3_XXS base (3.06 bpw grid), attn_q/attn_k IQ2_S, needs an importance matrix.
    IQ3_XXS,
    /// `IQ3_S`: IQ3_S base (3.44 bpw grid).
    IQ3_S,
    /// `IQ3_M`: IQ3_S base with Q4_K attn_v, attn_output and first ffn_down.
    IQ3_M,
    /// `IQ3_XS`: IQ3_S base with IQ3_XXS attn_q, attn_k and middle ffn_gate/ffn_up.
    IQ3_XS,
    /// `Q3_K_S`: Q3_K throughout (output Q6_K).
    Q3_K_S,
    /// `Q3_K_M`: Q3_K base with Q4_K/Q5_K attn_v, ffn_down, attn_output.
    Q3_K_M,
    /// `Q3_K_L`: Q3_K base with Q5_K attn_v, ffn_down, attn_output.
    Q3_K_L,
    /// `IQ4_NL`: IQ4_NL base (non-linear 4-bit, 32-element blocks).
    IQ4_NL,
    /// `Q4_K_S`: Q4_K base, first layers' attn_v/ffn_down Q5_K.
    Q4_K_S,
    /// `Q4_K_M`: Q4_K base, half of attn_v/ffn_down Q6_K.
    Q4_K_M,
    /// `Q5_K_S`: Q5_K throughout (output Q6_K).
    Q5_K_S,
    /// `Q5_K_M`: Q5_K base, half of attn_v/ffn_down Q6_K.
    Q5_K_M,
    /// `Q6_K`: Q6_K throughout.
    Q6_K,
    /// `Q8_0`: Q8_0 throughout.
    Q8_0,
    /// `F16`: 2-D weights to F16.
    F16,
    /// `BF16`: 2-D weights to BF16.
    BF16,
    /// `F32`: 2-D weights to F32 (`LLAMA_FTYPE_ALL_F32`).
    F32,
}

impl Mix {
    /// Every mix, in llama-quantize's listing order.
    pub const ALL: &'static [Mix] = &[
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::Q2_K,
        Mix::Q2_K_S,
        Mix::IQ3_XXS,
        Mix::IQ3_S,
        Mix::IQ3_M,
        Mix::IQ3_XS,
        Mix::Q3_K_S,
        Mix::Q3_K_M,
        Mix::Q3_K_L,
        Mix::IQ4_NL,
        Mix::Q4_K_S,
        Mix::Q4_K_M,
        Mix::Q5_K_S,
        Mix::Q5_K_M,
        Mix::Q6_K,
        Mix::Q8_0,
        Mix::F16,
        Mix::BF16,
        Mix::F32,
    ];

    /// Parses a llama-quantize type name case-insensitively, including its aliases
    /// (`Q3_K` = `Q3_K_M`, `Q4_K` = `Q4_K_M`, `Q5_K` = `Q5_K_M`) and, like llama-quantize,
    /// a decimal `llama_ftype` number (`15`).
    pub fn from_name(name: &str) -> Option<Mix> {
        let name = name.trim();
        if let Some(m) = Mix::ALL
            .iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
        {
            return Some(*m);
        }
        match name.to_ascii_uppercase().as_str() {
            "Q3_K" => Some(Mix::Q3_K_M),
            "Q4_K" => Some(Mix::Q4_K_M),
            "Q5_K" => Some(Mix::Q5_K_M),
            _ => name.parse::<u32>().ok().and_then(Mix::from_file_type),
        }
    }

    /// The mix whose `llama_ftype` (GGUF `general.file_type`) is `ft`.
    pub fn from_file_type(ft: u32) -> Option<Mix> {
        Mix::ALL.iter().copied().find(|m| m.file_type() == ft)
    }

    /// llama-quantize's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        match self {
            Mix::Q4_0 => "Q4_0",
            Mix::Q4_1 => "Q4_1",
            Mix::Q5_0 => "Q5_0",
            Mix::Q5_1 => "Q5_1",
            Mix::Q2_K => "Q2_K",
            Mix::Q2_K_S => "Q2_K_S",
            Mix::IQ3_XXS => "IQ3_XXS",
            Mix::IQ3_S => "IQ3_S",
            Mix::IQ3_M => "IQ3_M",
            Mix::IQ3_XS => "IQ3_XS",
            Mix::Q3_K_S => "Q3_K_S",
            Mix::Q3_K_M => "Q3_K_M",
            Mix::Q3_K_L => "Q3_K_L",
            Mix::IQ4_NL => "IQ4_NL",
            Mix::Q4_K_S => "Q4_K_S",
            Mix::Q4_K_M => "Q4_K_M",
            Mix::Q5_K_S => "Q5_K_S",
            Mix::Q5_K_M => "Q5_K_M",
            Mix::Q6_K => "Q6_K",
            Mix::Q8_0 => "Q8_0",
            Mix::F16 => "F16",
            Mix::BF16 => "BF16",
            Mix::F32 => "F32",
        }
    }

    /// The default tensor type (`llama_ftype_get_default_type`).
    pub fn base_type(self) -> GgmlType {
        match self {
            Mix::Q4_0 => GgmlType::Q4_0,
            Mix::Q4_1 => GgmlType::Q4_1,
            Mix::Q5_0 => GgmlType::Q5_0,
            Mix::Q5_1 => GgmlType::Q5_1,
            Mix::Q2_K | Mix::Q2_K_S => GgmlType::Q2_K,
            Mix::IQ3_XXS => GgmlType::IQ3_XXS,
            Mix::IQ3_S | Mix::IQ3_M | Mix::IQ3_XS => GgmlType::IQ3_S,
            Mix::Q3_K_S | Mix::Q3_K_M | Mix::Q3_K_L => GgmlType::Q3_K,
            Mix::IQ4_NL => GgmlType::IQ4_NL,
            Mix::Q4_K_S | Mix::Q4_K_M => GgmlType::Q4_K,
            Mix::Q5_K_S | Mix::Q5_K_M => GgmlType::Q5_K,
            Mix::Q6_K => GgmlType::Q6_K,
            Mix::Q8_0 => GgmlType::Q8_0,
            Mix::F16 => GgmlType::F16,
            Mix::BF16 => GgmlType::BF16,
            Mix::F32 => GgmlType::F32,
        }
    }

    /// The `llama_ftype` value, written to GGUF `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            Mix::F32 => 0,
            Mix::F16 => 1,
            Mix::Q4_0 => 2,
            Mix::Q4_1 => 3,
            Mix::Q8_0 => 7,
            Mix::Q5_0 => 8,
            Mix::Q5_1 => 9,
            Mix::Q2_K => 10,
            Mix::Q3_K_S => 11,
            Mix::Q3_K_M => 12,
            Mix::Q3_K_L => 13,
            Mix::Q4_K_S => 14,
            Mix::Q4_K_M => 15,
            Mix::Q5_K_S => 16,
            Mix::Q5_K_M => 17,
            Mix::Q6_K => 18,
            Mix::Q2_K_S => 21,
            Mix::IQ3_XS => 22,
            Mix::IQ3_XXS => 23,
            Mix::IQ4_NL => 25,
            Mix::IQ3_S => 26,
            Mix::IQ3_M => 27,
            Mix::BF16 => 32,
        }
    }

    /// Every type this mix can give a tensor (before user overrides), fallbacks included.
    pub fn possible_types(self) -> &'static [GgmlType] {
        use GgmlType as T;
        match self {
            Mix::Q4_0 => &[T::Q4_0, T::Q4_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q4_1 => &[T::Q4_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q5_0 => &[T::Q5_0, T::Q5_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q5_1 => &[T::Q5_1, T::Q6_K, T::Q8_0, T::F16],
            Mix::Q2_K | Mix::Q2_K_S | Mix::Q3_K_S | Mix::Q3_K_M | Mix::Q3_K_L => &[
                T::Q2_K,
                T::Q3_K,
                T::Q4_K,
                T::Q5_K,
                T::Q6_K,
                T::Q4_0,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
            Mix::IQ4_NL => &[T::IQ4_NL, T::Q5_K, T::Q6_K, T::Q5_1, T::Q8_0, T::F16],
            Mix::IQ3_XXS => &[
                T::IQ3_XXS,
                T::IQ3_S,
                T::IQ2_S,
                T::Q3_K,
                T::Q4_K,
                T::Q5_K,
                T::IQ4_NL,
                T::Q4_0,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
            Mix::IQ3_S | Mix::IQ3_M | Mix::IQ3_XS => &[
                T::IQ3_S,
                T::IQ3_XXS,
                T::Q4_K,
                T::Q5_K,
                T::Q6_K,
                T::IQ4_NL,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
            Mix::Q4_K_S | Mix::Q4_K_M | Mix::Q5_K_S | Mix::Q5_K_M | Mix::Q6_K => {
                &[T::Q4_K, T::Q5_K, T::Q6_K, T::Q5_0, T::Q5_1, T::Q8_0, T::F16]
            }
            Mix::Q8_0 => &[T::Q8_0, T::F16],
            Mix::F16 => &[T::F16],
            Mix::BF16 => &[T::BF16],
            Mix::F32 => &[T::F32],
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

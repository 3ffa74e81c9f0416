//! The llama-quantize file types ("mixes") qforge offers, with their llama.cpp names,
//! `llama_ftype` values and base types.

use crate::formats::ggml_type::GgmlType;
use std::fmt;

/// A llama-quantize file type ("mix"): the base tensor type plus per-tensor rules.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mix {
    /// `Q1_0`: Q1_0 base (signs times a 128-value block's mean magnitude).
    Q1_0,
    /// `Q2_0`: Q2_0 base (2-bit, 64-element blocks); token embeddings Q4_K.
    Q2_0,
    /// `Q4_0`: legacy 4-bit, 32-element blocks.
    Q4_0,
    /// `Q4_1`: legacy 4-bit with minimum.
    Q4_1,
    /// `MXFP4_MOE`: MXFP4 for MoE expert tensors (3-D), Q8_0 for everything else.
    MXFP4_MOE,
    /// `Q5_0`: legacy 5-bit.
    Q5_0,
    /// `Q5_1`: legacy 5-bit with minimum.
    Q5_1,
    /// `TQ1_0`: ternary TQ1_0 base; token embeddings Q4_K.
    TQ1_0,
    /// `TQ2_0`: ternary TQ2_0 base; token embeddings Q4_K.
    TQ2_0,
    /// `IQ2_XXS`: IQ2_XXS base (2.06 bpw), needs an importance matrix.
    IQ2_XXS,
    /// `IQ2_XS`: IQ2_XS base (2.31 bpw), needs an importance matrix.
    IQ2_XS,
    /// `IQ2_S`: IQ2_XS base with IQ3_S attn_v/first ffn_down/attn_output (2.5 bpw).
    IQ2_S,
    /// `IQ2_M`: IQ2_S base with IQ3_S attn_v/first ffn_down/attn_output (2.7 bpw).
    IQ2_M,
    /// `IQ1_S`: IQ1_S base (1.56 bpw), needs an importance matrix.
    IQ1_S,
    /// `IQ1_M`: IQ1_M base (1.75 bpw), needs an importance matrix.
    IQ1_M,
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
    /// `IQ4_XS`: IQ4_XS base (IQ4_NL groups in 256-value super-blocks), IQ4_NL's rules.
    IQ4_XS,
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
    /// `COPY`: every tensor copied as it is (llama-quantize's `only_copy`); the file type
    /// stays the input's.
    COPY,
}

impl Mix {
    /// Every mix, in llama-quantize's listing order.
    pub const ALL: &'static [Mix] = &[
        Mix::Q1_0,
        Mix::Q2_0,
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::MXFP4_MOE,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::IQ2_XXS,
        Mix::IQ2_XS,
        Mix::IQ2_S,
        Mix::IQ2_M,
        Mix::IQ1_S,
        Mix::IQ1_M,
        Mix::TQ1_0,
        Mix::TQ2_0,
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
        Mix::IQ4_XS,
        Mix::Q4_K_S,
        Mix::Q4_K_M,
        Mix::Q5_K_S,
        Mix::Q5_K_M,
        Mix::Q6_K,
        Mix::Q8_0,
        Mix::F16,
        Mix::BF16,
        Mix::F32,
        Mix::COPY,
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
            Mix::Q1_0 => "Q1_0",
            Mix::Q2_0 => "Q2_0",
            Mix::Q4_0 => "Q4_0",
            Mix::Q4_1 => "Q4_1",
            Mix::MXFP4_MOE => "MXFP4_MOE",
            Mix::TQ1_0 => "TQ1_0",
            Mix::TQ2_0 => "TQ2_0",
            Mix::IQ4_XS => "IQ4_XS",
            Mix::COPY => "COPY",
            Mix::Q5_0 => "Q5_0",
            Mix::Q5_1 => "Q5_1",
            Mix::IQ2_XXS => "IQ2_XXS",
            Mix::IQ2_XS => "IQ2_XS",
            Mix::IQ2_S => "IQ2_S",
            Mix::IQ2_M => "IQ2_M",
            Mix::IQ1_S => "IQ1_S",
            Mix::IQ1_M => "IQ1_M",
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

    /// The default tensor type (`llama_ftype_get_default_type`); for `COPY`, F32, the
    /// default type of its nominal `LLAMA_FTYPE_ALL_F32` (no tensor is converted).
    pub fn base_type(self) -> GgmlType {
        match self {
            Mix::Q1_0 => GgmlType::Q1_0,
            Mix::Q2_0 => GgmlType::Q2_0,
            Mix::MXFP4_MOE => GgmlType::MXFP4,
            Mix::TQ1_0 => GgmlType::TQ1_0,
            Mix::TQ2_0 => GgmlType::TQ2_0,
            Mix::IQ4_XS => GgmlType::IQ4_XS,
            Mix::COPY => GgmlType::F32,
            Mix::Q4_0 => GgmlType::Q4_0,
            Mix::Q4_1 => GgmlType::Q4_1,
            Mix::Q5_0 => GgmlType::Q5_0,
            Mix::Q5_1 => GgmlType::Q5_1,
            Mix::IQ2_XXS => GgmlType::IQ2_XXS,
            Mix::IQ2_XS | Mix::IQ2_S => GgmlType::IQ2_XS,
            Mix::IQ2_M => GgmlType::IQ2_S,
            Mix::IQ1_S => GgmlType::IQ1_S,
            Mix::IQ1_M => GgmlType::IQ1_M,
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

    /// The `llama_ftype` value, written to GGUF `general.file_type` (`COPY`: 0, its
    /// nominal value; the file keeps the input's, see [`crate::quant::mix::input_file_type`]).
    pub fn file_type(self) -> u32 {
        match self {
            Mix::F32 | Mix::COPY => 0,
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
            Mix::IQ2_XXS => 19,
            Mix::IQ2_XS => 20,
            Mix::Q2_K_S => 21,
            Mix::IQ1_S => 24,
            Mix::IQ4_NL => 25,
            Mix::IQ2_S => 28,
            Mix::IQ2_M => 29,
            Mix::IQ4_XS => 30,
            Mix::IQ1_M => 31,
            Mix::IQ3_XS => 22,
            Mix::IQ3_XXS => 23,
            Mix::IQ3_S => 26,
            Mix::IQ3_M => 27,
            Mix::BF16 => 32,
            Mix::TQ1_0 => 36,
            Mix::TQ2_0 => 37,
            Mix::MXFP4_MOE => 38,
            Mix::Q1_0 => 40,
            Mix::Q2_0 => 41,
        }
    }

    /// The IQ1/IQ2 file types, which share one branch of llama.cpp's rules.
    pub fn is_iq1_iq2(self) -> bool {
        matches!(
            self,
            Mix::IQ2_XXS | Mix::IQ2_XS | Mix::IQ2_S | Mix::IQ2_M | Mix::IQ1_S | Mix::IQ1_M
        )
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
            Mix::IQ4_XS => &[
                T::IQ4_XS,
                T::IQ4_NL,
                T::Q5_K,
                T::Q6_K,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
            // Base, Q2_K/Q4_K/Q5_K raises (IQ2_XXS for IQ1 attn_output), their fallbacks.
            Mix::IQ2_XXS | Mix::IQ2_XS | Mix::IQ1_S | Mix::IQ1_M => &[
                T::IQ2_XXS,
                T::IQ2_XS,
                T::IQ1_S,
                T::IQ1_M,
                T::Q2_K,
                T::Q4_K,
                T::Q5_K,
                T::IQ4_NL,
                T::Q4_0,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
            Mix::Q1_0 => &[T::Q1_0, T::Q6_K, T::Q8_0, T::F16],
            // Base, its Q4_0 fallback, Q4_K token embeddings (Q5_0 fallback), output.
            Mix::Q2_0 => &[T::Q2_0, T::Q4_0, T::Q4_K, T::Q5_0, T::Q6_K, T::Q8_0, T::F16],
            Mix::TQ1_0 => &[
                T::TQ1_0,
                T::Q4_0,
                T::Q4_K,
                T::Q5_0,
                T::Q6_K,
                T::Q8_0,
                T::F16,
            ],
            Mix::TQ2_0 => &[
                T::TQ2_0,
                T::Q4_0,
                T::Q4_K,
                T::Q5_0,
                T::Q6_K,
                T::Q8_0,
                T::F16,
            ],
            Mix::MXFP4_MOE => &[T::MXFP4, T::Q8_0, T::F16],
            Mix::COPY => &[],
            Mix::IQ2_S | Mix::IQ2_M => &[
                T::IQ2_XS,
                T::IQ2_S,
                T::IQ3_S,
                T::Q4_K,
                T::Q5_K,
                T::IQ4_NL,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::F16,
            ],
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

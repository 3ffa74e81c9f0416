//! What llama.cpp's model loader decides about an input file that llama-quantize's output
//! inherits: the tensor order (`weights_map`, sorted by `weight_name_comparer`), in which
//! llama-quantize plans and writes the tensors, and the file type
//! (`llama_model_loader::ftype`), which `COPY` writes back: `general.file_type` when the
//! file has it, else a guess from the most common tensor type, marked
//! `LLAMA_FTYPE_GUESSED`.

use super::names::parse_blk;
use crate::formats::ggml_type::GgmlType;
use std::cmp::Ordering;
use std::collections::HashMap;

/// llama.cpp's `LLAMA_FTYPE_GUESSED` bit.
pub const FTYPE_GUESSED: u32 = 1024;

/// The input's file type: `file_type_key` (`general.file_type`) if present, else
/// [`guess_file_type`] of its tensors.
pub fn input_file_type<'a>(
    file_type_key: Option<u32>,
    tensors: impl IntoIterator<Item = (&'a str, GgmlType)>,
) -> u32 {
    file_type_key.unwrap_or_else(|| guess_file_type(tensors))
}

/// The loader's guess: the `llama_ftype` of the most common tensor type (the first to reach
/// the highest count in its tensor-name order), with [`FTYPE_GUESSED`] set.
pub fn guess_file_type<'a>(tensors: impl IntoIterator<Item = (&'a str, GgmlType)>) -> u32 {
    let mut sorted: Vec<(&str, GgmlType)> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| weight_name_order(a.0, b.0));
    let mut counts: HashMap<GgmlType, u32> = HashMap::new();
    let (mut n_max, mut ty_max) = (0u32, GgmlType::F32);
    for (_, ty) in sorted {
        let n = counts.entry(ty).or_default();
        *n += 1;
        if n_max < *n {
            n_max = *n;
            ty_max = ty;
        }
    }
    type_file_type(ty_max) | FTYPE_GUESSED
}

/// The loader's `weight_name_comparer`: by `blk.N` layer (-1 without one), then by name
/// (bytewise).
pub fn weight_name_order(a: &str, b: &str) -> Ordering {
    let layer = |n: &str| parse_blk(n).map_or(-1, |l| l as i32 as i64);
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

/// The `llama_ftype` the loader guesses for a most common tensor type (0, `ALL_F32`, for
/// types it does not list).
fn type_file_type(ty: GgmlType) -> u32 {
    use GgmlType as T;
    match ty {
        T::F16 => 1,
        T::BF16 => 32,
        T::Q4_0 => 2,
        T::Q4_1 => 3,
        T::Q5_0 => 8,
        T::Q5_1 => 9,
        T::Q8_0 => 7,
        T::Q2_K => 10,
        T::Q3_K => 12,
        T::Q4_K => 15,
        T::Q5_K => 17,
        T::Q6_K => 18,
        T::TQ1_0 => 36,
        T::TQ2_0 => 37,
        T::IQ2_XXS => 19,
        T::IQ2_XS => 20,
        T::IQ2_S => 28,
        T::IQ3_XXS => 23,
        T::IQ1_S => 24,
        T::IQ1_M => 31,
        T::IQ4_NL => 25,
        T::IQ4_XS => 30,
        T::IQ3_S => 26,
        T::NVFP4 => 39,
        T::Q1_0 => 40,
        T::Q2_0 => 41,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType as T;

    #[test]
    fn tensor_order_is_by_layer_then_name() {
        let mut n = vec![
            "blk.10.attn_q.weight",
            "blk.2.ffn_down.weight",
            "token_embd.weight",
            "blk.2.attn_q.weight",
            "output_norm.weight",
            "blk.-1.x",
        ];
        n.sort_by(|a, b| weight_name_order(a, b));
        assert_eq!(
            n,
            [
                "blk.-1.x",
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_q.weight",
                "blk.2.ffn_down.weight",
                "blk.10.attn_q.weight"
            ]
        );
    }

    #[test]
    fn the_key_wins_else_the_most_common_type_guessed() {
        let t = [
            ("blk.0.attn_norm.weight", T::F32),
            ("blk.0.attn_q.weight", T::Q4_K),
            ("blk.0.ffn_down.weight", T::Q6_K),
            ("blk.1.attn_q.weight", T::Q4_K),
            ("output_norm.weight", T::F32),
        ];
        assert_eq!(input_file_type(Some(15), t), 15);
        // Q4_K: 2, F32: 2; in the loader's order (output_norm first: no layer) F32
        // reaches 2 first and wins.
        assert_eq!(guess_file_type(t), FTYPE_GUESSED);
        // Ties go to the type that reached the count first in the loader's order.
        let t = [("b.weight", T::Q8_0), ("a.weight", T::BF16)];
        assert_eq!(guess_file_type(t), 32 | FTYPE_GUESSED);
        // Layer order before name order: blk.10 after blk.9.
        let t = [
            ("blk.10.x", T::Q8_0),
            ("blk.9.x", T::BF16),
            ("blk.9.y", T::Q8_0),
            ("blk.11.x", T::BF16),
        ];
        assert_eq!(guess_file_type(t), 7 | FTYPE_GUESSED);
        assert_eq!(guess_file_type([("a", T::I32)]), FTYPE_GUESSED);
        assert_eq!(guess_file_type([]), FTYPE_GUESSED);
    }
}

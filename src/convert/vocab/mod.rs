//! The tokenizer metadata of a Hugging Face folder, exactly as `convert_hf_to_gguf.py` writes it.
//!
//! One function per convert vocabulary routine, each returning the `tokenizer.*` keys (and
//! the few others a `set_vocab` adds) in the order convert's `GGUFWriter` receives them,
//! with the same value types:
//! - [`set_vocab_gpt2`] (`_set_vocab_gpt2`: BPE from tokenizer.json, pre-tokenizer by hash),
//! - [`set_vocab_sentencepiece`] (`_set_vocab_sentencepiece`: tokenizer.model),
//! - [`set_vocab_llama_hf`] (`_set_vocab_llama_hf`: a SentencePiece-style BPE tokenizer.json),
//! - [`set_vocab_bert`] (`BertModel.set_vocab`: WordPiece with phantom spaces),
//! - [`set_vocab_phi3`] (`Phi3MiniModel.set_vocab`),
//! - [`SpecialVocab`] (`gguf.SpecialVocab(...).add_to_gguf`),
//!
//! and the per-architecture `set_vocab` bodies that chain them ([`arch`]): Llama and
//! Mistral [`set_vocab_llama`], Qwen2 and Qwen3 [`set_vocab_qwen2`], [`set_vocab_gemma2`],
//! [`set_vocab_gemma3`], [`set_vocab_phi3`], BERT [`set_vocab_bert`]. A routine whose file
//! is absent returns a [`Missing`] error ([`is_missing`]), convert's `FileNotFoundError`
//! on which those bodies fall back to the next routine.
//!
//! The reference is llama.cpp's `conversion/base.py`, `bert.py`, `llama.py`, `gemma.py`,
//! `phi.py` and gguf-py's `vocab.py`; where convert raises, these return an exit-2 error.

pub mod arch;
mod bpe;
mod hf_tokenizer;
mod json;
mod llama_hf;
pub mod pre_hashes;
pub mod proto;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod robustness;
mod sentencepiece;
mod special;

use crate::formats::gguf::{Value, ValueType};

pub use arch::{
    set_vocab_gemma2, set_vocab_gemma3, set_vocab_llama, set_vocab_phi3, set_vocab_qwen2,
};
pub use bpe::{
    get_vocab_base, get_vocab_base_tokens, pre_tokenizer_name, set_vocab_bert, set_vocab_gpt2,
    BpeVocab,
};
pub use hf_tokenizer::HfTokenizer;
pub use llama_hf::{llama_hf_check, set_vocab_llama_hf, LlamaHfCheck};
pub use sentencepiece::{create_vocab_sentencepiece, set_vocab_sentencepiece, SpmVocab};
pub use special::SpecialVocab;

/// Metadata in the order a `GGUFWriter` received it.
pub type Kv = Vec<(String, Value)>;

/// The largest vocabulary accepted (real ones stay under 300k); a config asking for more
/// would make us allocate a list of placeholder tokens that large.
pub const MAX_VOCAB: u64 = 1 << 22;

/// gguf's `TokenType` (and convert's `SentencePieceTokenTypes`, the same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    /// An ordinary token.
    Normal = 1,
    /// The unknown token.
    Unknown = 2,
    /// A control (special) token.
    Control = 3,
    /// A user-defined (added, not special) token.
    UserDefined = 4,
    /// A placeholder.
    Unused = 5,
    /// A byte-fallback token `<0xNN>`.
    Byte = 6,
}

/// An ordered key/value list with `GGUFWriter.add_key_value`'s semantics: a key added
/// again keeps its first position and takes the new value; empty strings and empty arrays
/// are not added (`add_string` / `add_array` skip them).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KvList(Kv);

impl From<Kv> for KvList {
    fn from(kv: Kv) -> Self {
        let mut list = KvList::new();
        list.extend(kv);
        list
    }
}

impl KvList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or overwrites `key` (in place, as Python's dict does).
    pub fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Removes `key` (`GGUFWriter.remove_key`).
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// `add_string`: skipped when empty.
    pub fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.set(key, Value::string(value));
        }
    }

    /// `add_array` of strings (byte strings, as convert's `bytes` tokens): skipped when empty.
    pub fn strings<S: AsRef<[u8]>>(&mut self, key: &str, values: &[S]) {
        let items = values.iter().map(|s| Value::String(s.as_ref().to_vec()));
        self.array(key, ValueType::String, items.collect());
    }

    /// `add_array` of Python ints (written as int32): skipped when empty.
    pub fn i32s(&mut self, key: &str, values: impl IntoIterator<Item = i32>) {
        let items = values.into_iter().map(Value::I32).collect();
        self.array(key, ValueType::I32, items);
    }

    /// `add_array` of Python floats (written as float32): skipped when empty.
    pub fn f32s(&mut self, key: &str, values: &[f32]) {
        let items = values.iter().map(|&v| Value::F32(v)).collect();
        self.array(key, ValueType::F32, items);
    }

    /// `add_uint32`.
    pub fn u32(&mut self, key: &str, value: u32) {
        self.set(key, Value::U32(value));
    }

    /// `add_bool`.
    pub fn bool(&mut self, key: &str, value: bool) {
        self.set(key, Value::Bool(value));
    }

    /// Appends every entry of `other` with [`KvList::set`]'s semantics.
    pub fn extend(&mut self, other: Kv) {
        for (k, v) in other {
            self.set(&k, v);
        }
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.0
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The ordered list.
    pub fn into_vec(self) -> Kv {
        self.0
    }

    fn array(&mut self, key: &str, ty: ValueType, items: Vec<Value>) {
        if !items.is_empty() {
            self.set(key, Value::Array(ty, items));
        }
    }
}

/// gguf-py's `Keys.Tokenizer` names used here.
pub mod keys {
    /// `tokenizer.ggml.model`
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// `tokenizer.ggml.pre`
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// `tokenizer.ggml.tokens`
    pub const LIST: &str = "tokenizer.ggml.tokens";
    /// `tokenizer.ggml.token_type`
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// `tokenizer.ggml.token_type_count`
    pub const TOKEN_TYPE_COUNT: &str = "tokenizer.ggml.token_type_count";
    /// `tokenizer.ggml.scores`
    pub const SCORES: &str = "tokenizer.ggml.scores";
    /// `tokenizer.ggml.merges`
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// `tokenizer.ggml.add_space_prefix`
    pub const ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// `tokenizer.ggml.add_bos_token`
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// `tokenizer.chat_template`
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    /// `tokenizer.chat_templates`
    pub const CHAT_TEMPLATES: &str = "tokenizer.chat_templates";
    /// `tokenizer.ggml.normalizer.lowercase`
    pub const NORMALIZER_LOWERCASE: &str = "tokenizer.ggml.normalizer.lowercase";
    /// `tokenizer.ggml.normalizer.strip_accents`
    pub const NORMALIZER_STRIP_ACCENTS: &str = "tokenizer.ggml.normalizer.strip_accents";

    /// The `tokenizer.ggml.<typ>_token_id` key `GGUFWriter.add_<typ>_token_id` writes, for
    /// the special-token types that have a handler (the others are skipped by convert).
    pub fn special_id(typ: &str) -> Option<&'static str> {
        Some(match typ {
            "bos" => "tokenizer.ggml.bos_token_id",
            "eos" => "tokenizer.ggml.eos_token_id",
            "unk" => "tokenizer.ggml.unknown_token_id",
            "sep" => "tokenizer.ggml.seperator_token_id",
            "pad" => "tokenizer.ggml.padding_token_id",
            "mask" => "tokenizer.ggml.mask_token_id",
            "eot" => "tokenizer.ggml.eot_token_id",
            "eom" => "tokenizer.ggml.eom_token_id",
            _ => return None,
        })
    }

    /// The `tokenizer.ggml.add_<typ>_token` key `GGUFWriter.add_add_<typ>_token` writes.
    pub fn add_special(typ: &str) -> Option<&'static str> {
        Some(match typ {
            "bos" => ADD_BOS,
            "eos" => "tokenizer.ggml.add_eos_token",
            "sep" => "tokenizer.ggml.add_sep_token",
            _ => return None,
        })
    }
}

/// `ModelBase.does_token_look_special`: added tokens convert marks CONTROL even when their
/// `special` flag is false.
pub fn does_token_look_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<\u{ff5c}") && token.ends_with("\u{ff5c}>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

/// A tokenizer file a routine needs is absent: convert's `FileNotFoundError` (or the
/// `TypeError` `LlamaHfVocab` raises for Llama 3), on which `set_vocab` bodies fall back to
/// another routine. Still an exit-2 error when nothing catches it.
#[derive(Debug)]
pub struct Missing(crate::error::InvalidInput);

impl Missing {
    /// A [`Missing`] error with its message.
    pub fn error(message: String) -> anyhow::Error {
        anyhow::Error::new(Missing(crate::error::InvalidInput::new(
            crate::error::InvalidKind::Unreadable,
            message,
        )))
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Missing {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `err` is a [`Missing`] (a fallback signal rather than a failure).
pub fn is_missing(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Missing>())
}

/// The vocabulary size convert pads to, checked against [`MAX_VOCAB`].
fn checked_vocab_size(n: u64) -> anyhow::Result<usize> {
    if n > MAX_VOCAB {
        crate::bail_invalid!(kind: Implausible, "vocab_size {n} is larger than the {MAX_VOCAB} supported");
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_list_overwrites_in_place_and_skips_empty() {
        let mut kv = KvList::new();
        kv.bool("a", true);
        kv.string("b", "");
        kv.strings::<&str>("c", &[]);
        kv.u32("d", 1);
        kv.bool("a", false);
        assert_eq!(
            kv.into_vec(),
            vec![
                ("a".to_string(), Value::Bool(false)),
                ("d".to_string(), Value::U32(1))
            ]
        );
    }

    #[test]
    fn special_looking_tokens() {
        for t in [
            "<pad>",
            "<|im_end|>",
            "<\u{ff5c}begin\u{ff5c}>",
            "<unused12>",
            "[@BOS@]",
        ] {
            assert!(does_token_look_special(t), "{t}");
        }
        for t in ["<s>", "[CLS]", "<|im_end", "hello", "<unused"] {
            assert!(!does_token_look_special(t), "{t}");
        }
    }

    #[test]
    fn missing_is_exit_2_and_detectable() {
        let err = Missing::error("File not found: x".into());
        assert!(is_missing(&err));
        assert_eq!(crate::error::exit_code(&err), 2);
        assert_eq!(crate::error::one_line(&err), "File not found: x");
        assert!(!is_missing(&crate::invalid!("x")));
    }

    #[test]
    fn vocab_size_is_bounded() {
        assert_eq!(checked_vocab_size(32000).unwrap(), 32000);
        assert!(checked_vocab_size(MAX_VOCAB + 1).is_err());
    }
}

//! Where the converter calls the tokenizer side (`src/convert/vocab/`, branch
//! s12-vocab): an architecture names the routine(s) its `set_vocab` tries, this module
//! adds the keys `set_vocab` itself writes around them.
//!
//! Until the vocab functions are merged, [`call_routine`] fails with "vocab not built
//! yet" (convert with `--no-vocab` meanwhile); wiring them in is a change to that one
//! function.

use super::arch::Kv;
use crate::formats::gguf::Value;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::path::Path;

/// A convert vocabulary routine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VocabRoutine {
    /// No routine (an empty [`VocabCall`]).
    #[default]
    None,
    /// `_set_vocab_sentencepiece` (tokenizer.model).
    SentencePiece,
    /// `_set_vocab_llama_hf` (tokenizer.json of a Llama-style BPE).
    LlamaHf,
    /// `_set_vocab_gpt2` (tokenizer.json BPE with the pre-tokenizer hash).
    Gpt2,
    /// BERT's WordPiece (vocab.txt / tokenizer.json).
    WordPiece,
    /// `Phi3MiniModel.set_vocab`'s own SentencePiece reading (tokenizer.model, then
    /// added_tokens.json, tokenizer_config.json's added_tokens_decoder and
    /// tokenizer.json's added_tokens as user-defined or control tokens).
    Phi3SentencePiece,
}

/// What an architecture's `set_vocab` does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VocabCall {
    /// Keys `set_vocab` writes before the routine's (BERT's token type count).
    pub before: Kv,
    /// Routines tried in order; the first whose files exist is used.
    pub routines: Vec<VocabRoutine>,
    /// `hparams["vocab_size"]`.
    pub n_vocab: u64,
    /// Write `tokenizer.ggml.add_space_prefix` from tokenizer_config.json's
    /// `add_prefix_space` before the vocabulary (llama).
    pub add_prefix_space_from_config: bool,
    /// Write `tokenizer.ggml.add_space_prefix` with this value after the vocabulary
    /// (Gemma's `add_add_space_prefix(False)`).
    pub add_space_prefix_after: Option<bool>,
    /// CodeLlama (vocab 32016): prefix/suffix/middle/eot token ids 32007..32010.
    pub codellama_infill: bool,
    /// Granite-small / SmolLM2 (vocab 49152): `add_bos_token` forced false.
    pub no_add_bos: bool,
}

/// The tokenizer keys for `call`, in the order convert adds them.
pub fn tokenizer_keys(call: &VocabCall, dir: &Path) -> Result<Kv> {
    let has = |f: &str| dir.join(f).is_file();
    let wordpiece = call.routines.contains(&VocabRoutine::WordPiece) && has("vocab.txt");
    if !(has("tokenizer.model") || has("tokenizer.json") || wordpiece) {
        bail_invalid!(
            "{} has no tokenizer (tokenizer.model or tokenizer.json); pass --no-vocab to convert without one",
            dir.display()
        );
    }
    let mut kv: Kv = call.before.clone();
    if call.add_prefix_space_from_config {
        if let Some(v) = tokenizer_config(dir)?
            .get("add_prefix_space")
            .and_then(|v| v.as_bool())
        {
            kv.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(v)));
        }
    }
    let mut found = None;
    for &routine in &call.routines {
        if let Some(keys) = call_routine(routine, dir, call.n_vocab)? {
            found = Some(keys);
            break;
        }
    }
    let keys = found.ok_or_else(|| {
        invalid!(
            "{}: no tokenizer usable by {:?}",
            dir.display(),
            call.routines
        )
    })?;
    for (k, v) in keys {
        set(&mut kv, &k, v);
    }
    if call.codellama_infill {
        for (name, id) in [
            ("prefix", 32007),
            ("suffix", 32008),
            ("middle", 32009),
            ("eot", 32010),
        ] {
            set(
                &mut kv,
                &format!("tokenizer.ggml.{name}_token_id"),
                Value::U32(id),
            );
        }
    }
    if let Some(v) = call.add_space_prefix_after {
        set(&mut kv, "tokenizer.ggml.add_space_prefix", Value::Bool(v));
    }
    if call.no_add_bos {
        set(&mut kv, "tokenizer.ggml.add_bos_token", Value::Bool(false));
    }
    Ok(kv)
}

/// gguf-py's `add_key_value`: a key set twice keeps its first position, takes the new value.
pub fn set(kv: &mut Kv, key: &str, value: Value) {
    match kv.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => kv.push((key.to_string(), value)),
    }
}

fn tokenizer_config(dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let path = dir.join("tokenizer_config.json");
    match std::fs::read(&path) {
        Err(_) => Ok(Default::default()),
        Ok(text) => match serde_json::from_slice(&text) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => bail_invalid!("{} is not a JSON object", path.display()),
        },
    }
}

/// Runs one vocabulary routine: `Ok(None)` when its files are absent (convert's
/// `FileNotFoundError` fall-through).
fn call_routine(routine: VocabRoutine, dir: &Path, n_vocab: u64) -> Result<Option<Kv>> {
    let _ = (dir, n_vocab);
    bail_invalid!(
        "vocab not built yet: the {routine:?} tokenizer routine is not in this build; pass --no-vocab"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_tokenizer_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let call = VocabCall {
            routines: vec![VocabRoutine::SentencePiece],
            n_vocab: 10,
            add_prefix_space_from_config: true,
            add_space_prefix_after: None,
            codellama_infill: false,
            no_add_bos: false,
            ..VocabCall::default()
        };
        let e = tokenizer_keys(&call, dir.path()).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(e.to_string().contains("--no-vocab"), "{e}");
    }

    #[test]
    fn setting_a_key_twice_keeps_its_place() {
        let mut kv = vec![
            ("a".to_string(), Value::U32(1)),
            ("b".to_string(), Value::U32(2)),
        ];
        set(&mut kv, "a", Value::U32(3));
        set(&mut kv, "c", Value::U32(4));
        assert_eq!(kv[0], ("a".to_string(), Value::U32(3)));
        assert_eq!(kv[2].0, "c");
    }
}

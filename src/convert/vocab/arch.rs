//! The `set_vocab` bodies of the architectures qforge converts, chaining the routines as
//! convert's model classes do (llama.py, qwen.py, gemma.py, phi.py, bert.py).
//!
//! `vocab_size` is config.json's `vocab_size` (`None` when absent).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::{
    is_missing, json, keys, set_vocab_gpt2, set_vocab_llama_hf, set_vocab_sentencepiece, Kv,
    KvList, SpecialVocab,
};

pub use super::sentencepiece::set_vocab_phi3;

/// `LlamaModel.set_vocab` (LlamaForCausalLM, MistralForCausalLM): tokenizer_config's
/// `add_prefix_space`, then SentencePiece, else `LlamaHfVocab`, else GPT-2 BPE; CodeLlama's
/// infill ids for a 32016 vocabulary; `add_bos_token = false` for a 49152 one.
pub fn set_vocab_llama(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    let mut kv = KvList::new();
    if let Some(config) = json::read_if_file(&dir.join("tokenizer_config.json"))? {
        let config = json::obj(&config, "tokenizer_config.json")?;
        if let Some(v) = config.get("add_prefix_space").filter(|v| !v.is_null()) {
            let v = json::opt_bool(Some(v), "tokenizer_config.json add_prefix_space")?;
            kv.bool(keys::ADD_PREFIX, v.unwrap_or(false));
        }
        if config.get("tokenizer_class").and_then(Value::as_str) == Some("HybridDNATokenizer") {
            crate::bail_invalid!("the HybridDNA tokenizer is not supported");
        }
    }
    if dir.join("tekken.json").is_file() && !dir.join("tokenizer.json").is_file() {
        crate::bail_invalid!("Mistral's tekken.json tokenizer is not supported");
    }
    let vocab = match set_vocab_sentencepiece(dir, vocab_size) {
        Err(e) if is_missing(&e) => match set_vocab_llama_hf(dir) {
            Err(e) if is_missing(&e) => set_vocab_gpt2(dir, vocab_size)?,
            other => other?,
        },
        other => other?,
    };
    kv.extend(vocab);
    let n = vocab_size.unwrap_or(32000);
    if n == 32016 {
        let types = ["prefix", "suffix", "middle", "eot"];
        let mut sv = SpecialVocab::load(dir, false, Some(&types), None)?;
        for (typ, id) in [
            ("prefix", 32007),
            ("suffix", 32008),
            ("middle", 32009),
            ("eot", 32010),
        ] {
            sv.set_special_token(typ, Some(&Value::from(id)))?;
        }
        sv.add_to(&mut kv)?;
    }
    if n == 49152 {
        kv.bool(keys::ADD_BOS, false);
    }
    Ok(kv.into_vec())
}

/// `Qwen2Model.set_vocab` (Qwen2ForCausalLM, Qwen3ForCausalLM): SentencePiece, else GPT-2 BPE.
pub fn set_vocab_qwen2(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    match set_vocab_sentencepiece(dir, vocab_size) {
        Err(e) if is_missing(&e) => set_vocab_gpt2(dir, vocab_size),
        other => other,
    }
}

/// `Gemma2Model.set_vocab`: SentencePiece, then `add_space_prefix = false`.
pub fn set_vocab_gemma2(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    let mut kv = KvList::from(set_vocab_sentencepiece(dir, vocab_size)?);
    kv.bool(keys::ADD_PREFIX, false);
    Ok(kv.into_vec())
}

/// `Gemma3Model.set_vocab`: SentencePiece (then `add_space_prefix = false`) when
/// tokenizer.model exists, else GPT-2 BPE.
pub fn set_vocab_gemma3(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    if dir.join("tokenizer.model").is_file() {
        set_vocab_gemma2(dir, vocab_size)
    } else {
        set_vocab_gpt2(dir, vocab_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_without_any_tokenizer_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = set_vocab_llama(dir.path(), None).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(
            crate::error::one_line(&err).contains("no tokenizer.json"),
            "{err:#}"
        );
        let err = set_vocab_gemma2(dir.path(), None).unwrap_err();
        assert!(
            crate::error::one_line(&err).contains("tokenizer.model"),
            "{err:#}"
        );
    }
}

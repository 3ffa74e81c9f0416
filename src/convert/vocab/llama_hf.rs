//! `_set_vocab_llama_hf` (gguf-py's `LlamaHfVocab`): a SentencePiece-style BPE
//! tokenizer.json (byte fallback, a `Sequence` decoder) without a tokenizer.model.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::bpe::reverse_vocab;
use super::hf_tokenizer::{all_special_tokens, HfTokenizer, SpecialTokens};
use super::json;
use super::{checked_vocab_size, keys, Kv, KvList, Missing, SpecialVocab, TokenType};

/// Whether tokenizer.json is one `LlamaHfVocab` converts (its pre-check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaHfCheck {
    /// A byte-fallback BPE with a `Sequence` decoder: `LlamaHfVocab` applies.
    Applies,
    /// No tokenizer.json, or not that kind of tokenizer (convert's `FileNotFoundError`,
    /// or its `TypeError` for Llama 3): the caller falls back to GPT-2 BPE.
    Fallback,
}

/// `LlamaHfVocab.__init__`'s pre-check of tokenizer.json.
pub fn llama_hf_check(dir: &Path) -> Result<LlamaHfCheck> {
    let Some(tj) = json::read_if_file(&dir.join("tokenizer.json"))? else {
        return Ok(LlamaHfCheck::Fallback);
    };
    let model = json::obj(&tj, "tokenizer.json")?
        .get("model")
        .ok_or_else(|| crate::invalid!("tokenizer.json has no model"))?;
    let model = json::obj(model, "tokenizer.json model")?;
    let is_bpe = model.get("type").and_then(Value::as_str) == Some("BPE");
    let flag = |k: &str, default: bool| model.get(k).map_or(default, |v| json::truthy(Some(v)));
    if is_bpe && flag("ignore_merges", false) && !flag("byte_fallback", true) {
        return Ok(LlamaHfCheck::Fallback); // "Llama 3 must be converted with BpeVocab"
    }
    if !is_bpe || !flag("byte_fallback", false) {
        return Ok(LlamaHfCheck::Fallback);
    }
    let decoder = tj
        .get("decoder")
        .ok_or_else(|| crate::invalid!("tokenizer.json has no decoder"))?;
    match decoder {
        // `None['type']` is a TypeError, which convert's caller catches too.
        Value::Null => Ok(LlamaHfCheck::Fallback),
        d => match json::get(d, "type", "tokenizer.json decoder")? {
            Some(Value::String(t)) if t == "Sequence" => Ok(LlamaHfCheck::Applies),
            _ => Ok(LlamaHfCheck::Fallback),
        },
    }
}

/// `_set_vocab_llama_hf`: base tokens (BYTE for `<0xNN>`, CONTROL for special ids, score
/// -1000), then added tokens past the base vocabulary, model `llama`, pre `default`, and
/// `SpecialVocab` sized to the vocabulary. A tokenizer.json it does not apply to is a
/// [`Missing`] error.
pub fn set_vocab_llama_hf(dir: &Path) -> Result<Kv> {
    if llama_hf_check(dir)? == LlamaHfCheck::Fallback {
        return Err(Missing::error("Cannot find Llama BPE tokenizer".into()));
    }
    let hf = HfTokenizer::load(dir)?;
    let vocab = hf.tk.get_vocab(true);
    let base = hf.tk.get_vocab_size(false);

    // get_added_vocab(), sorted by id; those past the base vocabulary are appended.
    let decoder = hf.tk.get_added_tokens_decoder();
    let mut added: Vec<(u32, String)> = decoder
        .iter()
        .map(|(id, t)| (*id, t.content.clone()))
        .collect();
    added.sort();
    let added_list: Vec<&(u32, String)> = added
        .iter()
        .filter(|(id, _)| *id as usize >= base)
        .collect();

    // all_special_tokens / all_special_ids as the tokenizer class defines them.
    let specials = SpecialTokens::load(dir, &hf.config)?;
    let base_class = hf.class.as_deref().map(|c| c.trim_end_matches("Fast"));
    let all_special = all_special_tokens(&specials, base_class);
    let mut special_ids = HashSet::new();
    for tok in &all_special {
        let Some(&id) = vocab.get(tok) else {
            crate::bail_invalid!(
                "special token {tok:?} is not in the vocabulary (transformers would add it)"
            );
        };
        special_ids.insert(id);
    }

    let reverse = reverse_vocab(&hf.tk, &vocab, checked_vocab_size(base as u64)?);
    let mut tokens = Vec::with_capacity(base + added_list.len());
    let mut toktypes = Vec::with_capacity(tokens.capacity());
    for (id, tok) in reverse.iter().enumerate().take(base) {
        let Some(tok) = tok else {
            crate::bail_invalid!("tokenizer.json has no token with id {id}");
        };
        toktypes.push(if is_byte_token(tok) {
            TokenType::Byte
        } else if special_ids.contains(&(id as u32)) {
            TokenType::Control
        } else {
            TokenType::Normal
        });
        tokens.push(tok.to_string());
    }
    for (_, text) in added_list {
        let special = all_special.contains(text);
        tokens.push(text.clone());
        toktypes.push(if special {
            TokenType::Control
        } else {
            TokenType::UserDefined
        });
    }
    let scores = vec![-1000.0; tokens.len()];
    let mut kv = KvList::new();
    kv.string(keys::MODEL, "llama");
    kv.string(keys::PRE, "default");
    kv.strings(keys::LIST, &tokens);
    kv.f32s(keys::SCORES, &scores);
    kv.i32s(keys::TOKEN_TYPE, toktypes.iter().map(|&t| t as i32));
    SpecialVocab::load(dir, false, None, Some(tokens.len()))?.add_to(&mut kv)?;
    Ok(kv.into_vec())
}

/// `re.fullmatch(br"<0x[0-9A-Fa-f]{2}>", token)`.
fn is_byte_token(tok: &str) -> bool {
    let b = tok.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens() {
        assert!(is_byte_token("<0x0A>"));
        assert!(is_byte_token("<0xfF>"));
        assert!(!is_byte_token("<0x0G>"));
        assert!(!is_byte_token("<0x0A>x"));
    }

    #[test]
    fn precheck_falls_back_like_convert() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(llama_hf_check(dir.path()).unwrap(), LlamaHfCheck::Fallback);
        let write = |j: &str| std::fs::write(dir.path().join("tokenizer.json"), j).unwrap();
        write(
            r#"{"model": {"type": "BPE", "ignore_merges": true, "byte_fallback": false}, "decoder": null}"#,
        );
        assert_eq!(llama_hf_check(dir.path()).unwrap(), LlamaHfCheck::Fallback);
        write(
            r#"{"model": {"type": "BPE", "byte_fallback": true}, "decoder": {"type": "ByteLevel"}}"#,
        );
        assert_eq!(llama_hf_check(dir.path()).unwrap(), LlamaHfCheck::Fallback);
        write(r#"{"model": {"type": "BPE", "byte_fallback": true}, "decoder": null}"#);
        assert_eq!(llama_hf_check(dir.path()).unwrap(), LlamaHfCheck::Fallback);
        write(
            r#"{"model": {"type": "BPE", "byte_fallback": true}, "decoder": {"type": "Sequence"}}"#,
        );
        assert_eq!(llama_hf_check(dir.path()).unwrap(), LlamaHfCheck::Applies);
        write(r#"{"model": {"type": "BPE", "byte_fallback": true}}"#);
        assert!(
            llama_hf_check(dir.path()).is_err(),
            "no decoder key: KeyError in convert"
        );
        write(r#"{"model": {"type": "WordPiece"}, "decoder": {"type": "Sequence"}}"#);
        let err = set_vocab_llama_hf(dir.path()).unwrap_err();
        assert!(crate::convert::vocab::is_missing(&err));
    }
}

//! `get_vocab_base` / `get_vocab_base_pre` / `_set_vocab_gpt2` and BERT's WordPiece
//! `set_vocab`: tokens from tokenizer.json through Hugging Face's `tokenizers` crate (what
//! transformers' fast tokenizer wraps), and the pre-tokenizer named by convert's hash.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::hf_tokenizer::HfTokenizer;
use super::pre_hashes::{CHKTXT, PRE_HASHES};
use super::{
    checked_vocab_size, does_token_look_special, keys, Kv, KvList, SpecialVocab, TokenType,
};

/// `get_vocab_base`'s result: tokens, their types, and the pre-tokenizer name.
#[derive(Debug, Clone)]
pub struct BpeVocab {
    /// Token texts, `[PAD{i}]` where the vocabulary has a hole.
    pub tokens: Vec<String>,
    /// Token types.
    pub toktypes: Vec<TokenType>,
    /// `tokenizer.ggml.pre`.
    pub tokpre: String,
}

/// `_set_vocab_gpt2`: model `gpt2`, the pre-tokenizer, tokens, types, then `SpecialVocab`
/// with merges. `vocab_size` is config.json's `vocab_size` (absent: the tokenizer's).
pub fn set_vocab_gpt2(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    let vocab = get_vocab_base(dir, vocab_size)?;
    let mut kv = KvList::new();
    kv.string(keys::MODEL, "gpt2");
    kv.string(keys::PRE, &vocab.tokpre);
    kv.strings(keys::LIST, &vocab.tokens);
    kv.i32s(keys::TOKEN_TYPE, vocab.toktypes.iter().map(|&t| t as i32));
    SpecialVocab::load(dir, true, None, None)?.add_to(&mut kv)?;
    Ok(kv.into_vec())
}

/// `BertModel.set_vocab`: the token-type count, then WordPiece tokens in llama.cpp's
/// phantom-space form (`##x` becomes `x`, other non-control tokens get a leading U+2581),
/// model `bert`, and `SpecialVocab` sized to the vocabulary.
pub fn set_vocab_bert(dir: &Path, vocab_size: Option<u64>, type_vocab_size: u32) -> Result<Kv> {
    let vocab = get_vocab_base(dir, vocab_size)?;
    let mut kv = KvList::new();
    kv.u32(keys::TOKEN_TYPE_COUNT, type_vocab_size);
    let tokens: Vec<String> = vocab
        .tokens
        .iter()
        .zip(&vocab.toktypes)
        .map(|(tok, &ty)| match tok.strip_prefix("##") {
            _ if ty == TokenType::Control => tok.clone(),
            Some(rest) => rest.to_string(),
            None => format!("\u{2581}{tok}"),
        })
        .collect();
    kv.string(keys::MODEL, "bert");
    kv.string(keys::PRE, &vocab.tokpre);
    kv.strings(keys::LIST, &tokens);
    kv.i32s(keys::TOKEN_TYPE, vocab.toktypes.iter().map(|&t| t as i32));
    SpecialVocab::load(dir, false, None, Some(tokens.len()))?.add_to(&mut kv)?;
    Ok(kv.into_vec())
}

/// `get_vocab_base`: the vocabulary padded to `vocab_size` with `[PAD{i}]` (UNUSED), added
/// tokens CONTROL when special (or special-looking) and USER_DEFINED otherwise, and the
/// pre-tokenizer name.
pub fn get_vocab_base(dir: &Path, vocab_size: Option<u64>) -> Result<BpeVocab> {
    let hf = HfTokenizer::load(dir)?;
    let mut tokpre = String::new();
    let (tokens, toktypes) = base_tokens(&hf, vocab_size, |hf| {
        tokpre = pre_tokenizer_name(hf)?;
        Ok(())
    })?;
    Ok(BpeVocab {
        tokens,
        toktypes,
        tokpre,
    })
}

/// [`get_vocab_base`]'s tokens and types without the pre-tokenizer name (which no small
/// tokenizer has): what the fuzz target reaches.
pub fn get_vocab_base_tokens(
    dir: &Path,
    vocab_size: Option<u64>,
) -> Result<(Vec<String>, Vec<TokenType>)> {
    base_tokens(&HfTokenizer::load(dir)?, vocab_size, |_| Ok(()))
}

/// The tokens and types; `between` runs where convert computes the pre-tokenizer (after
/// the vocabulary-size check, before the token loop), so errors come in convert's order.
fn base_tokens(
    hf: &HfTokenizer,
    vocab_size: Option<u64>,
    between: impl FnOnce(&HfTokenizer) -> Result<()>,
) -> Result<(Vec<String>, Vec<TokenType>)> {
    let vocab = hf.tk.get_vocab(true);
    let n = checked_vocab_size(vocab_size.unwrap_or(vocab.len() as u64))?;
    let max_id = vocab.values().copied().max().unwrap_or(0) as usize;
    if !vocab.is_empty() && max_id >= n {
        crate::bail_invalid!("tokenizer.json has token id {max_id}, not under vocab_size {n}");
    }
    between(hf)?;

    let decoder = hf.tk.get_added_tokens_decoder();
    let mut added_sorted: Vec<_> = decoder.iter().collect();
    added_sorted.sort_by_key(|(id, _)| **id);
    let added_vocab: HashMap<&str, u32> = added_sorted
        .iter()
        .map(|(id, t)| (t.content.as_str(), **id))
        .collect();
    let reverse = reverse_vocab(&hf.tk, &vocab, n);

    let mut tokens = Vec::with_capacity(n);
    let mut toktypes = Vec::with_capacity(n);
    for (i, tok) in reverse.iter().enumerate() {
        let Some(tok) = tok else {
            tokens.push(format!("[PAD{i}]"));
            toktypes.push(TokenType::Unused);
            continue;
        };
        let mut token = tok.to_string();
        if added_vocab.contains_key(tok) {
            let Some(added) = decoder.get(&(i as u32)) else {
                crate::bail_invalid!("tokenizer.json: added token {tok:?} is not at id {i}");
            };
            if !added.normalized {
                token = hf.round_trip(&token)?;
            }
            if added.special || does_token_look_special(&token) {
                toktypes.push(TokenType::Control);
            } else {
                token = token.replace('\u{2581}', " ");
                toktypes.push(TokenType::UserDefined);
            }
        } else {
            toktypes.push(TokenType::Normal);
        }
        tokens.push(token);
    }
    Ok((tokens, toktypes))
}

/// `{id: token for token, id in tokenizer.vocab.items()}` over ids `0..n` (`None` for a
/// hole; ids from `n` on are left out). Where an added token shares an id with a base
/// token, the added one is kept.
pub(crate) fn reverse_vocab<'a>(
    tk: &Tokenizer,
    vocab: &'a HashMap<String, u32>,
    n: usize,
) -> Vec<Option<&'a str>> {
    let decoder = tk.get_added_tokens_decoder();
    let mut reverse: Vec<Option<&str>> = vec![None; n];
    for (tok, &id) in vocab {
        let Some(slot) = reverse.get_mut(id as usize) else {
            continue;
        };
        if slot.is_none() || decoder.get(&id).is_some_and(|t| &t.content == tok) {
            *slot = Some(tok.as_str());
        }
    }
    reverse
}

/// `get_vocab_base_pre`: the sha256 of `str(tokenizer.encode(chktxt))` looked up in
/// convert's table (the last matching entry wins, as in its if-chain).
pub fn pre_tokenizer_name(hf: &HfTokenizer) -> Result<String> {
    let ids = hf.encode_with_specials(CHKTXT)?;
    let hash = chk_hash(&ids);
    match PRE_HASHES.iter().rev().find(|(h, _)| *h == hash) {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(crate::invalid!(kind: UnknownType,
            "BPE pre-tokenizer was not recognized (chkhsh {hash}): convert_hf_to_gguf.py does not know this tokenizer either"
        )),
    }
}

/// sha256 hex of Python's `str(list_of_ints)`.
fn chk_hash(ids: &[u32]) -> String {
    let text = format!(
        "[{}]",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::vocab::pre_hashes::CHKTXT_SHA256;

    #[test]
    fn check_text_is_converts() {
        let hash: String = Sha256::digest(CHKTXT.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, CHKTXT_SHA256);
    }

    #[test]
    fn hash_is_of_pythons_list_repr() {
        let expect: String = Sha256::digest(b"[1, 22, 333]")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(chk_hash(&[1, 22, 333]), expect);
        let empty: String = Sha256::digest(b"[]")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(chk_hash(&[]), empty);
    }

    /// A tiny WordPiece tokenizer.json, BERT-style.
    fn wordpiece_json() -> String {
        let vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "##lo", "world"]
            .iter()
            .enumerate()
            .map(|(i, t)| format!("\"{t}\": {i}"))
            .collect();
        format!(
            r###"{{"version": "1.0", "truncation": {{"max_length": 2, "strategy": "LongestFirst", "stride": 0}},
            "padding": null,
            "added_tokens": [
              {{"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
              {{"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
              {{"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}],
            "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
            "pre_tokenizer": {{"type": "BertPreTokenizer"}},
            "post_processor": {{"type": "TemplateProcessing",
               "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
               "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
               "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
            "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
            "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
               "vocab": {{{}}}}}}}"###,
            vocab.join(", ")
        )
    }

    #[test]
    fn wordpiece_vocab_pads_types_and_ignores_truncation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), wordpiece_json()).unwrap();
        let hf = HfTokenizer::load(dir.path()).unwrap();
        // Truncation to 2 tokens in the file is off, as transformers' encode turns it off.
        assert_eq!(
            hf.encode_with_specials("hello hello world").unwrap(),
            [2, 4, 4, 6, 3]
        );
        // This tokenizer is in no table: a clear exit-2 error.
        let err = get_vocab_base(dir.path(), Some(9)).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(
            format!("{err:#}").contains("pre-tokenizer was not recognized"),
            "{err:#}"
        );
    }

    #[test]
    fn check_text_encodes_as_transformers_does() {
        // fixtures/tokenizers/tiny-bpe.tokenizer.json through transformers 4.57.6
        // (PreTrainedTokenizerFast): 422 ids, and this sha256 of str(ids).
        let dir = tempfile::tempdir().unwrap();
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/tokenizers/tiny-bpe.tokenizer.json"
        );
        std::fs::copy(fixture, dir.path().join("tokenizer.json")).unwrap();
        let hf = HfTokenizer::load(dir.path()).unwrap();
        let ids = hf.encode_with_specials(CHKTXT).unwrap();
        assert_eq!(ids.len(), 422);
        assert_eq!(
            ids[..10],
            [200, 222, 200, 200, 222, 200, 200, 200, 222, 199]
        );
        let err = get_vocab_base(dir.path(), None).unwrap_err();
        let line = crate::error::one_line(&err);
        assert!(
            line.contains("bdb432208b13d99d4e06305b558c4eadb3d938e51742b38714190b644de296f6"),
            "{line}"
        );
    }
}

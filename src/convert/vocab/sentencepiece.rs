//! `_create_vocab_sentencepiece` / `_set_vocab_sentencepiece` and Phi-3's own variant:
//! pieces from tokenizer.model, then added_tokens.json, tokenizer_config.json's
//! `added_tokens_decoder` (and, for Phi-3, tokenizer.json's `added_tokens`).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::json::{self, py_int};
use super::proto::{self, PieceType};
use super::{
    checked_vocab_size, does_token_look_special, keys, Kv, KvList, Missing, SpecialVocab, TokenType,
};

/// A SentencePiece vocabulary as convert builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmVocab {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Scores.
    pub scores: Vec<f32>,
    /// Types.
    pub toktypes: Vec<TokenType>,
}

impl SpmVocab {
    fn set(&mut self, index: usize, token: String, score: f32, ty: TokenType) {
        self.tokens[index] = token;
        self.scores[index] = score;
        self.toktypes[index] = ty;
    }

    /// Writes model `llama`, pre `default`, tokens, scores and types.
    fn write(&self, kv: &mut KvList) {
        kv.string(keys::MODEL, "llama");
        kv.string(keys::PRE, "default");
        kv.strings(keys::LIST, &self.tokens);
        kv.f32s(keys::SCORES, &self.scores);
        kv.i32s(keys::TOKEN_TYPE, self.toktypes.iter().map(|&t| t as i32));
    }
}

/// `_set_vocab_sentencepiece`. A missing tokenizer.model is a [`Missing`] error (convert's
/// `FileNotFoundError`, on which several architectures fall back to another routine).
pub fn set_vocab_sentencepiece(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    let vocab = create_vocab_sentencepiece(dir, vocab_size)?;
    let mut kv = KvList::new();
    vocab.write(&mut kv);
    SpecialVocab::load(dir, false, None, Some(vocab.tokens.len()))?.add_to(&mut kv)?;
    Ok(kv.into_vec())
}

/// `_create_vocab_sentencepiece`: `vocab_size` is config.json's (absent or 0: the model's).
pub fn create_vocab_sentencepiece(dir: &Path, vocab_size: Option<u64>) -> Result<SpmVocab> {
    let model = load_model(dir)?;
    let n = match vocab_size {
        Some(n) if n > 0 => checked_vocab_size(n)?,
        _ => model.pieces.len(),
    };
    let mut vocab = placeholders(n);
    for (id, piece) in model.pieces.iter().enumerate() {
        if id >= n {
            tracing::warn!(
                "ignore tokens from {id}: id is out of range, max={}",
                n as i64 - 1
            );
            break;
        }
        vocab.set(id, piece.piece.clone(), piece.score, piece_type(piece.kind));
    }
    apply_added_tokens_json(dir, &mut vocab)?;
    if let Some(decoder) = added_tokens_decoder(dir)? {
        for (key, data) in &decoder {
            let id = py_int_str(key)?;
            let token = content_of(data, "added_tokens_decoder")?;
            let Some(index) = index_in_range(id, n)? else {
                continue;
            };
            let special = json::truthy(data.get("special"));
            let (token, ty) = if special || does_token_look_special(token) {
                (token.to_string(), TokenType::Control)
            } else {
                (token.replace('\u{2581}', " "), TokenType::UserDefined)
            };
            vocab.set(index, token, -1000.0, ty);
        }
    }
    Ok(vocab)
}

/// `Phi3MiniModel.set_vocab`: GPT-2 BPE when tokenizer_config names `GPT2Tokenizer`,
/// otherwise its own SentencePiece variant (no range checks on added tokens, no
/// special-looking heuristic, tokenizer.json's added tokens applied last).
pub fn set_vocab_phi3(dir: &Path, vocab_size: Option<u64>) -> Result<Kv> {
    if let Some(config) = json::read_if_file(&dir.join("tokenizer_config.json"))? {
        let class = json::obj(&config, "tokenizer_config.json")?
            .get("tokenizer_class")
            .ok_or_else(|| crate::invalid!("tokenizer_config.json has no tokenizer_class"))?;
        if class.as_str() == Some("GPT2Tokenizer") {
            return super::set_vocab_gpt2(dir, vocab_size);
        }
    }
    if !dir.join("tokenizer.model").is_file() {
        crate::bail_invalid!("missing {}", dir.join("tokenizer.model").display());
    }
    let model = load_model(dir)?;
    let n = checked_vocab_size(vocab_size.unwrap_or(model.pieces.len() as u64))?;
    if model.pieces.len() > n {
        crate::bail_invalid!(
            "tokenizer.model has {} pieces, more than vocab_size {n}",
            model.pieces.len()
        );
    }
    let mut vocab = placeholders(n);
    for (id, piece) in model.pieces.iter().enumerate() {
        vocab.set(id, piece.piece.clone(), piece.score, piece_type(piece.kind));
    }
    apply_added_tokens_json(dir, &mut vocab)?;
    let set_flagged = |vocab: &mut SpmVocab, id: i128, data: &Value, what: &str| -> Result<()> {
        let token = content_of(data, what)?.to_string();
        let index = py_index(id, n)?;
        let ty = if json::truthy(data.get("special")) {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        vocab.set(index, token, -1000.0, ty);
        Ok(())
    };
    if let Some(decoder) = added_tokens_decoder(dir)? {
        for (key, data) in &decoder {
            set_flagged(&mut vocab, py_int_str(key)?, data, "added_tokens_decoder")?;
        }
    }
    if let Some(tj) = json::read_if_file(&dir.join("tokenizer.json"))? {
        if let Some(added) = json::get(&tj, "added_tokens", "tokenizer.json")? {
            let added = added
                .as_array()
                .ok_or_else(|| crate::invalid!("tokenizer.json: added_tokens is not a list"))?;
            for data in added {
                let id = match data.get("id") {
                    Some(Value::String(s)) => py_int_str(s)?,
                    v => py_int(v).ok_or_else(|| {
                        crate::invalid!("tokenizer.json: an added token has no integer id")
                    })?,
                };
                set_flagged(&mut vocab, id, data, "tokenizer.json added_tokens")?;
            }
        }
    }
    let mut kv = KvList::new();
    vocab.write(&mut kv);
    SpecialVocab::load(dir, false, None, Some(n))?.add_to(&mut kv)?;
    Ok(kv.into_vec())
}

fn load_model(dir: &Path) -> Result<proto::ModelProto> {
    let path = dir.join("tokenizer.model");
    if !path.is_file() {
        return Err(Missing::error(format!(
            "File not found: {}",
            path.display()
        )));
    }
    let bytes = json::read_bytes(&path, proto::MAX_MODEL_BYTES)?;
    proto::parse_model(&bytes)
}

fn placeholders(n: usize) -> SpmVocab {
    SpmVocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; n],
        toktypes: vec![TokenType::Unused; n],
    }
}

/// `IsUnknown` / `IsControl` / `IsUnused` / `IsByte`, else NORMAL (user-defined pieces too).
fn piece_type(kind: PieceType) -> TokenType {
    match kind {
        PieceType::Unknown => TokenType::Unknown,
        PieceType::Control => TokenType::Control,
        PieceType::Unused => TokenType::Unused,
        PieceType::Byte => TokenType::Byte,
        PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
    }
}

/// added_tokens.json (`{"token": id}`): USER_DEFINED, score -1000; ids past the vocabulary
/// skipped.
fn apply_added_tokens_json(dir: &Path, vocab: &mut SpmVocab) -> Result<()> {
    let Some(added) = json::read_if_file(&dir.join("added_tokens.json"))? else {
        return Ok(());
    };
    let n = vocab.tokens.len();
    for (key, id) in json::obj(&added, "added_tokens.json")? {
        let id = py_int(Some(id)).ok_or_else(|| {
            crate::invalid!("added_tokens.json: the id of {key:?} is not an integer")
        })?;
        let Some(index) = index_in_range(id, n)? else {
            continue;
        };
        vocab.set(index, key.clone(), -1000.0, TokenType::UserDefined);
    }
    Ok(())
}

/// tokenizer_config.json's `added_tokens_decoder` (`{"id": {"content": ..., ...}}`), if any.
fn added_tokens_decoder(dir: &Path) -> Result<Option<Vec<(String, Value)>>> {
    let Some(config) = json::read_if_file(&dir.join("tokenizer_config.json"))? else {
        return Ok(None);
    };
    match json::get(&config, "added_tokens_decoder", "tokenizer_config.json")? {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )),
        Some(_) => Err(crate::invalid!(
            "tokenizer_config.json: added_tokens_decoder is not an object"
        )),
    }
}

fn content_of<'a>(data: &'a Value, what: &str) -> Result<&'a str> {
    data.get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| crate::invalid!("{what}: an entry has no string content"))
}

/// Python's `int(str)` for a decimal id.
fn py_int_str(s: &str) -> Result<i128> {
    s.trim()
        .parse::<i128>()
        .map_err(|_| crate::invalid!("invalid token id {s:?}"))
}

/// The list index of token `id` when it is under `n`; `None` (with convert's warning)
/// for an id past the vocabulary, which convert skips.
fn index_in_range(id: i128, n: usize) -> Result<Option<usize>> {
    if id >= n as i128 {
        tracing::warn!(
            "ignore token {id}: id is out of range, max={}",
            n as i64 - 1
        );
        return Ok(None);
    }
    py_index(id, n).map(Some)
}

/// A Python list index (negative counts from the end); out of range is an error.
fn py_index(id: i128, len: usize) -> Result<usize> {
    let len_i = len as i128;
    let index = if id < 0 { id + len_i } else { id };
    if (0..len_i).contains(&index) {
        Ok(index as usize)
    } else {
        Err(crate::invalid!(kind: OutOfBounds,
            "token id {id} is out of range for a vocabulary of {len}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::vocab::proto::tests::{model, piece};

    fn folder(model_bytes: &[u8], files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.model"), model_bytes).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn spm() -> Vec<u8> {
        model(&[
            piece("<unk>", 0.0, Some(2)),
            piece("<s>", 0.0, Some(3)),
            piece("<0x0A>", 0.0, Some(6)),
            piece("\u{2581}a", -1.0, None),
            piece("<x>", 0.0, Some(4)),
        ])
    }

    #[test]
    fn pieces_padding_and_added_tokens() {
        let dir = folder(
            &spm(),
            &[
                ("added_tokens.json", r#"{"<extra>": 5, "<far>": 99}"#),
                (
                    "tokenizer_config.json",
                    r#"{"added_tokens_decoder": {"6": {"content": "\u2581user"}, "7": {"content": "<|x|>"}, "100": {"content": "z"}}}"#,
                ),
            ],
        );
        let v = create_vocab_sentencepiece(dir.path(), Some(9)).unwrap();
        assert_eq!(
            v.tokens,
            [
                "<unk>",
                "<s>",
                "<0x0A>",
                "\u{2581}a",
                "<x>",
                "<extra>",
                " user",
                "<|x|>",
                "[PAD8]"
            ]
        );
        assert_eq!(
            v.scores,
            [0.0, 0.0, 0.0, -1.0, 0.0, -1000.0, -1000.0, -1000.0, -10000.0]
        );
        use TokenType::*;
        assert_eq!(
            v.toktypes,
            [
                Unknown,
                Control,
                Byte,
                Normal,
                Normal,
                UserDefined,
                UserDefined,
                Control,
                Unused
            ]
        );
        // vocab_size smaller than the model: the rest is ignored.
        assert_eq!(
            create_vocab_sentencepiece(dir.path(), Some(2))
                .unwrap()
                .tokens,
            ["<unk>", "<s>"]
        );
        // 0 or absent: the model's size.
        assert_eq!(
            create_vocab_sentencepiece(dir.path(), Some(0))
                .unwrap()
                .tokens
                .len(),
            5
        );
    }

    #[test]
    fn key_order_and_missing_file() {
        let dir = folder(
            &spm(),
            &[("config.json", r#"{"bos_token_id": 1, "eos_token_id": 2}"#)],
        );
        let kv = set_vocab_sentencepiece(dir.path(), None).unwrap();
        let names: Vec<_> = kv.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "tokenizer.ggml.model",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id",
            ]
        );
        let empty = tempfile::tempdir().unwrap();
        let err = set_vocab_sentencepiece(empty.path(), None).unwrap_err();
        assert!(super::super::is_missing(&err));
    }

    #[test]
    fn phi3_variant() {
        let dir = folder(
            &spm(),
            &[
                (
                    "tokenizer_config.json",
                    r#"{"tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": {"5": {"content": "<|end|>", "special": false}}}"#,
                ),
                (
                    "tokenizer.json",
                    r#"{"added_tokens": [{"id": 6, "content": "<|s|>", "special": true}]}"#,
                ),
            ],
        );
        let kv = set_vocab_phi3(dir.path(), Some(7)).unwrap();
        let types = &kv
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.token_type")
            .unwrap()
            .1;
        let crate::formats::gguf::Value::Array(_, t) = types else {
            panic!()
        };
        assert_eq!(t[5], crate::formats::gguf::Value::I32(4));
        assert_eq!(t[6], crate::formats::gguf::Value::I32(3));
        let dir = folder(
            &spm(),
            &[("tokenizer_config.json", r#"{"added_tokens_decoder": {}}"#)],
        );
        assert!(
            set_vocab_phi3(dir.path(), None).is_err(),
            "no tokenizer_class: convert raises KeyError"
        );
    }

    #[test]
    fn python_indexing() {
        assert_eq!(py_index(-1, 4).unwrap(), 3);
        assert!(py_index(-5, 4).is_err());
        assert!(py_index(4, 4).is_err());
        assert_eq!(py_int_str(" 12 ").unwrap(), 12);
        assert!(py_int_str("x").is_err());
    }
}

//! `get_vocab_base` / `get_vocab_base_pre` / `_set_vocab_gpt2` and BERT's WordPiece
//! `set_vocab`: tokens from tokenizer.json through Hugging Face's `tokenizers` crate (what
//! transformers' fast tokenizer wraps), and the pre-tokenizer named by convert's hash.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::{AddedToken, Tokenizer};

use super::json::{self, token_content};
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

/// A folder's tokenizer as transformers' `AutoTokenizer` presents it: the tokenizer.json
/// backend, with the post-processor the tokenizer class rebuilds, no truncation, no padding.
pub struct HfTokenizer {
    /// The `tokenizers` backend.
    pub tk: Tokenizer,
    /// `[bos]` / `[eos]` ids the class's `update_post_processor` puts around a sequence,
    /// when the class rebuilds it (Llama, Gemma); `None` keeps tokenizer.json's.
    template: Option<(Option<u32>, Option<u32>)>,
    clean_up_spaces: bool,
    /// The transformers tokenizer class `AutoTokenizer` picks, when known.
    pub class: Option<String>,
    /// tokenizer_config.json (an empty object when absent).
    pub config: Value,
}

impl HfTokenizer {
    /// Loads tokenizer.json (required) and the class behaviour from tokenizer_config.json /
    /// config.json.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = json::read_if_file(&dir.join("tokenizer_config.json"))?
            .unwrap_or_else(|| Value::Object(Default::default()));
        json::obj(&config, "tokenizer_config.json")?;
        let class = tokenizer_class(dir, &config)?;
        let base_class = class.as_deref().map(|c| c.trim_end_matches("Fast"));
        let specials = SpecialTokens::load(dir, &config)?;
        let path = dir.join("tokenizer.json");
        let mut raw = if path.is_file() {
            let bytes = json::read_bytes(&path, json::MAX_JSON_BYTES)?;
            json::parse(&bytes).map_err(|e| e.context("tokenizer.json"))?
        } else if base_class == Some("BertTokenizer") && dir.join("vocab.txt").is_file() {
            bert_from_vocab_txt(dir, &config, &specials)?
        } else {
            crate::bail_invalid!(
                "{}: no tokenizer.json (a fast tokenizer built from vocab files is supported for BERT's vocab.txt only)",
                dir.display()
            );
        };
        sync_prefix_space(&mut raw, &config, base_class);
        let mut tk = tokenizer_from_json(raw)?;
        tk.with_truncation(None)
            .map_err(|e| crate::invalid!("tokenizer.json: {e}"))?;
        tk.with_padding(None);
        sync_added_tokens(&mut tk, &config, &specials, base_class)?;
        let clean_up_spaces = matches!(
            config.get("clean_up_tokenization_spaces"),
            Some(Value::Bool(true))
        );
        let template = match class.as_deref().map(|c| c.trim_end_matches("Fast")) {
            Some("LlamaTokenizer" | "CodeLlamaTokenizer") => Some(("<s>", "</s>", true)),
            Some("GemmaTokenizer") => Some(("<bos>", "<eos>", true)),
            _ => None,
        };
        let template = match template {
            None => None,
            Some((bos, eos, bos_default)) => {
                let add_bos = json::opt_bool(config.get("add_bos_token"), "add_bos_token")?
                    .unwrap_or(bos_default);
                let add_eos =
                    json::opt_bool(config.get("add_eos_token"), "add_eos_token")?.unwrap_or(false);
                let id = |name: &str, default: &str, add: bool| -> Result<Option<u32>> {
                    if !add {
                        return Ok(None);
                    }
                    let Some(tok) = specials.get(name, Some(default)) else {
                        crate::bail_invalid!("add_{name} = True but {name} = None");
                    };
                    tk.token_to_id(&tok).map(Some).ok_or_else(|| {
                        crate::invalid!(
                            "{name} {tok:?} is not in the vocabulary (transformers would add it)"
                        )
                    })
                };
                Some((
                    id("bos_token", bos, add_bos)?,
                    id("eos_token", eos, add_eos)?,
                ))
            }
        };
        Ok(HfTokenizer {
            tk,
            template,
            clean_up_spaces,
            class,
            config,
        })
    }

    /// `tokenizer.encode(text)` (special tokens added).
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        match self.template {
            None => self.encode(text, true),
            Some((bos, eos)) => {
                let mut ids: Vec<u32> = bos.into_iter().collect();
                ids.extend(self.encode(text, false)?);
                ids.extend(eos);
                Ok(ids)
            }
        }
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = guard(|| self.tk.encode(text, add_special_tokens))?
            .map_err(|e| crate::invalid!("tokenizer.json cannot encode: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))`.
    fn round_trip(&self, token: &str) -> Result<String> {
        let ids = self.encode(token, false)?;
        let text = guard(|| self.tk.decode(&ids, false))?
            .map_err(|e| crate::invalid!("tokenizer.json cannot decode: {e}"))?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// Builds the `tokenizers` backend from tokenizer.json's JSON (exit 2 when it rejects it).
fn tokenizer_from_json(raw: Value) -> Result<Tokenizer> {
    guard(|| serde_json::from_value::<Tokenizer>(raw))?
        .map_err(|e| crate::invalid!("tokenizer.json: {e}"))
}

/// The tokenizer.json transformers' `BertConverter` makes from vocab.txt and
/// tokenizer_config.json (a BERT folder without tokenizer.json).
fn bert_from_vocab_txt(dir: &Path, config: &Value, specials: &SpecialTokens) -> Result<Value> {
    let path = dir.join("vocab.txt");
    let bytes = json::read_bytes(&path, json::MAX_JSON_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| crate::invalid!(kind: BadEncoding, "{} is not UTF-8", path.display()))?;
    // readlines() in text mode, then rstrip("\n"); a repeated line keeps its last index.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut vocab = serde_json::Map::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        vocab.insert(line.trim_end_matches('\n').to_string(), Value::from(i));
    }
    let flag = |k: &str, default: bool| config.get(k).and_then(Value::as_bool).unwrap_or(default);
    let basic = flag("do_basic_tokenize", true);
    let strip_accents = if basic {
        config.get("strip_accents").cloned().unwrap_or(Value::Null)
    } else {
        Value::Bool(false)
    };
    let token = |name: &str, default: &str| specials.get(name, Some(default));
    let unk = token("unk_token", "[UNK]").unwrap_or_else(|| "None".into());
    let cls = token("cls_token", "[CLS]").unwrap_or_else(|| "None".into());
    let sep = token("sep_token", "[SEP]").unwrap_or_else(|| "None".into());
    let id_of = |t: &str| {
        vocab
            .get(t)
            .or_else(|| vocab.get(&unk))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (cls_id, sep_id) = (id_of(&cls), id_of(&sep));
    let special =
        |t: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    Ok(serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": true,
            "handle_chinese_chars": basic && flag("tokenize_chinese_chars", true),
            "strip_accents": strip_accents,
            "lowercase": basic && flag("do_lower_case", true),
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(&cls, 0), seq("A", 0), special(&sep, 0)],
            "pair": [special(&cls, 0), seq("A", 0), special(&sep, 0), seq("B", 1), special(&sep, 1)],
            "special_tokens": {
                cls.clone(): {"id": cls, "ids": [cls_id], "tokens": [cls]},
                sep.clone(): {"id": sep, "ids": [sep_id], "tokens": [sep]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece",
            "unk_token": unk,
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": vocab,
        },
    }))
}

/// transformers' fast-tokenizer `__init__` rebuilds a top-level pre-tokenizer whose
/// `add_prefix_space` differs from the tokenizer's (tokenizer_config's value, else the
/// class default: `None` for Llama, which leaves it alone, `False` otherwise).
fn sync_prefix_space(raw: &mut Value, config: &Value, base_class: Option<&str>) {
    let target = match config.get("add_prefix_space") {
        Some(v) => v.as_bool(),
        None if matches!(base_class, Some("LlamaTokenizer" | "CodeLlamaTokenizer")) => None,
        None => Some(false),
    };
    let Some(target) = target else { return };
    if let Some(Value::Object(pre)) = raw.get_mut("pre_tokenizer") {
        if let Some(v) = pre.get_mut("add_prefix_space") {
            if v.as_bool() != Some(target) {
                *v = Value::Bool(target);
            }
        }
    }
}

/// The special tokens a transformers tokenizer class has when tokenizer_config does not
/// name them.
fn class_default_specials(base_class: Option<&str>) -> &'static [(&'static str, &'static str)] {
    match base_class {
        Some("LlamaTokenizer" | "CodeLlamaTokenizer") => &[
            ("bos_token", "<s>"),
            ("eos_token", "</s>"),
            ("unk_token", "<unk>"),
        ],
        Some("GemmaTokenizer") => &[
            ("bos_token", "<bos>"),
            ("eos_token", "<eos>"),
            ("unk_token", "<unk>"),
            ("pad_token", "<pad>"),
        ],
        Some("BertTokenizer") => &[
            ("unk_token", "[UNK]"),
            ("sep_token", "[SEP]"),
            ("pad_token", "[PAD]"),
            ("cls_token", "[CLS]"),
            ("mask_token", "[MASK]"),
        ],
        Some("GPT2Tokenizer") => &[
            ("bos_token", "<|endoftext|>"),
            ("eos_token", "<|endoftext|>"),
            ("unk_token", "<|endoftext|>"),
        ],
        Some("Qwen2Tokenizer") => &[
            ("eos_token", "<|endoftext|>"),
            ("unk_token", "<|endoftext|>"),
            ("pad_token", "<|endoftext|>"),
        ],
        _ => &[],
    }
}

/// The special-token attributes transformers knows, in its order.
const SPECIAL_NAMES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// `all_special_tokens`: the class's special tokens (tokenizer_config over class defaults),
/// then `additional_special_tokens`, as contents, without repeats.
pub(crate) fn all_special_tokens(
    specials: &SpecialTokens,
    base_class: Option<&str>,
) -> Vec<String> {
    let defaults = class_default_specials(base_class);
    let mut all: Vec<String> = Vec::new();
    let named = SPECIAL_NAMES.iter().filter_map(|name| {
        let default = defaults.iter().find(|(n, _)| n == name).map(|(_, d)| *d);
        specials.get(name, default)
    });
    for tok in named.chain(specials.additional()) {
        if !all.contains(&tok) {
            all.push(tok);
        }
    }
    all
}

/// What transformers' fast-tokenizer `__init__` does with tokenizer_config.json: its
/// `added_tokens_decoder` entries that tokenizer.json lacks (or has with other flags) and
/// special tokens not yet added are added to the backend, special when named special.
fn sync_added_tokens(
    tk: &mut Tokenizer,
    config: &Value,
    specials: &SpecialTokens,
    base_class: Option<&str>,
) -> Result<()> {
    let existing: Vec<AddedToken> = tk.get_added_tokens_decoder().into_values().collect();
    let all_special = all_special_tokens(specials, base_class);
    let mut to_add: Vec<AddedToken> = Vec::new();
    if let Some(Value::Object(decoder)) = config.get("added_tokens_decoder") {
        let mut entries = Vec::new();
        for (id, data) in decoder {
            let id: i128 = id.trim().parse().map_err(|_| {
                crate::invalid!("tokenizer_config.json: invalid added token id {id:?}")
            })?;
            entries.push((id, data));
        }
        entries.sort_by_key(|(id, _)| *id);
        for (_, data) in entries {
            let (token, normalized_explicit) = added_token_from(data)?;
            if existing.contains(&token) {
                continue;
            }
            to_add.push(finish_special(token, normalized_explicit, &all_special));
        }
    }
    let mut encoder: Vec<String> = existing.iter().map(|t| t.content.clone()).collect();
    encoder.extend(to_add.iter().map(|t| t.content.clone()));
    let defaults = class_default_specials(base_class);
    for name in SPECIAL_NAMES {
        let default = defaults.iter().find(|(n, _)| *n == name).map(|(_, d)| *d);
        match specials.raw(name) {
            // An AddedToken-shaped entry is always re-added (identical ones are skipped).
            Some(data @ Value::Object(_)) => {
                let (token, normalized_explicit) = added_token_from(data)?;
                let token = finish_special(token, normalized_explicit, &all_special);
                if !to_add.contains(&token) {
                    to_add.push(token);
                }
            }
            Some(Value::String(s)) => push_special_str(s, &mut encoder, &mut to_add),
            Some(_) => {}
            None => {
                if let Some(d) = default {
                    push_special_str(d, &mut encoder, &mut to_add);
                }
            }
        }
    }
    for tok in specials.additional() {
        push_special_str(&tok, &mut encoder, &mut to_add);
    }
    if !to_add.is_empty() {
        guard(|| tk.add_tokens(to_add))?.map_err(|e| crate::invalid!("tokenizer.json: {e}"))?;
    }
    Ok(())
}

fn push_special_str(content: &str, encoder: &mut Vec<String>, to_add: &mut Vec<AddedToken>) {
    if encoder.iter().any(|e| e == content) || to_add.iter().any(|t| t.content == content) {
        return;
    }
    encoder.push(content.to_string());
    to_add.push(AddedToken::from(content.to_string(), true).normalized(false));
}

/// `AddedToken(**entry)`: the token, and whether `normalized` was given (its default is
/// `not special`, evaluated when the token is used).
fn added_token_from(data: &Value) -> Result<(AddedToken, bool)> {
    let obj = json::obj(data, "tokenizer_config.json added token")?;
    let content = obj
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| crate::invalid!("tokenizer_config.json: an added token has no content"))?;
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool);
    let special = flag("special").unwrap_or(false);
    let token = AddedToken::from(content.to_string(), special)
        .single_word(flag("single_word").unwrap_or(false))
        .lstrip(flag("lstrip").unwrap_or(false))
        .rstrip(flag("rstrip").unwrap_or(false))
        .normalized(flag("normalized").unwrap_or(!special));
    Ok((token, flag("normalized").is_some()))
}

/// `token.special = token.special or str(token) in all_special_tokens`.
fn finish_special(
    mut token: AddedToken,
    normalized_explicit: bool,
    all_special: &[String],
) -> AddedToken {
    if !token.special && all_special.contains(&token.content) {
        token.special = true;
        if !normalized_explicit {
            token.normalized = false;
        }
    }
    token
}

/// Runs third-party tokenizer code, turning a panic on hostile input into an exit-2 error.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| crate::invalid!("tokenizer.json: the tokenizers library rejected it"))
}

/// transformers' `clean_up_tokenization`.
fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// The tokenizer class `AutoTokenizer` picks: tokenizer_config's `tokenizer_class`, else
/// config.json's, else the one transformers maps the model type to (for the types whose
/// class changes the post-processor).
fn tokenizer_class(dir: &Path, config: &Value) -> Result<Option<String>> {
    if let Some(c) = config.get("tokenizer_class").and_then(Value::as_str) {
        return Ok(Some(c.to_string()));
    }
    let Some(model_config) = json::read_if_file(&dir.join("config.json"))? else {
        return Ok(None);
    };
    if let Some(c) = model_config.get("tokenizer_class").and_then(Value::as_str) {
        return Ok(Some(c.to_string()));
    }
    Ok(
        match model_config.get("model_type").and_then(Value::as_str) {
            Some("llama" | "mistral" | "phi3") => Some("LlamaTokenizerFast".into()),
            Some("bert") => Some("BertTokenizerFast".into()),
            Some("gemma" | "gemma2" | "gemma3" | "gemma3_text") => {
                Some("GemmaTokenizerFast".into())
            }
            _ => None,
        },
    )
}

/// The special tokens a transformers tokenizer is built with: tokenizer_config.json's
/// entries, overridden by special_tokens_map.json when the config predates
/// `added_tokens_decoder` (transformers' legacy path).
pub(crate) struct SpecialTokens {
    map: serde_json::Map<String, Value>,
}

impl SpecialTokens {
    pub(crate) fn load(dir: &Path, config: &Value) -> Result<Self> {
        let mut map = json::obj(config, "tokenizer_config.json")?.clone();
        if !map.contains_key("added_tokens_decoder") {
            if let Some(stm) = json::read_if_file(&dir.join("special_tokens_map.json"))? {
                for (k, v) in json::obj(&stm, "special_tokens_map.json")? {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(SpecialTokens { map })
    }

    /// The token named `name` (`bos_token`, ...): its content; `default` when the key is
    /// absent; `None` when it is null.
    pub(crate) fn get(&self, name: &str, default: Option<&str>) -> Option<String> {
        match self.map.get(name) {
            None => default.map(str::to_string),
            Some(v) => token_content(Some(v)).map(str::to_string),
        }
    }

    /// The raw entry named `name` (null included), if present.
    pub(crate) fn raw(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// `additional_special_tokens`, as contents.
    pub(crate) fn additional(&self) -> Vec<String> {
        match self.map.get("additional_special_tokens") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|t| token_content(Some(t)).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
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

    #[test]
    fn cleanup_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("a . b , c n't it 's"),
            "a. b, cn't it's"
        );
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

    #[test]
    fn bert_vocab_txt_becomes_a_wordpiece_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\n";
        std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
        let hf = HfTokenizer::load(dir.path()).unwrap();
        assert_eq!(
            hf.encode_with_specials("Hello WORLDS!").unwrap(),
            [2, 5, 6, 7, 1, 3]
        );
        // The special tokens are added tokens (CONTROL in convert's vocabulary).
        let (_, types) = get_vocab_base_tokens(dir.path(), None).unwrap();
        use TokenType::*;
        assert_eq!(
            types,
            [Control, Control, Control, Control, Control, Normal, Normal, Normal]
        );
        // Not BERT: no tokenizer.json is an error.
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
        assert!(HfTokenizer::load(dir.path()).is_err());
    }

    #[test]
    fn special_tokens_precedence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("special_tokens_map.json"),
            r#"{"bos_token": {"content": "<b>"}}"#,
        )
        .unwrap();
        let legacy = serde_json::json!({"bos_token": "<s>", "eos_token": null});
        let sp = SpecialTokens::load(dir.path(), &legacy).unwrap();
        assert_eq!(sp.get("bos_token", None).as_deref(), Some("<b>"));
        assert_eq!(sp.get("eos_token", Some("</s>")), None);
        assert_eq!(sp.get("unk_token", Some("<unk>")).as_deref(), Some("<unk>"));
        let modern = serde_json::json!({"bos_token": "<s>", "added_tokens_decoder": {}});
        let sp = SpecialTokens::load(dir.path(), &modern).unwrap();
        assert_eq!(sp.get("bos_token", None).as_deref(), Some("<s>"));
    }
}

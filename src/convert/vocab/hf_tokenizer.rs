//! A folder's tokenizer as transformers' `AutoTokenizer` presents it to convert: the
//! tokenizer.json backend (Hugging Face's `tokenizers` crate, what the fast tokenizer
//! wraps) with what the tokenizer class's `__init__` changes — the post-processor Llama
//! and Gemma rebuild, tokenizer_config's added and special tokens, the pre-tokenizer's
//! `add_prefix_space`, no truncation or padding — or, for BERT without tokenizer.json, the
//! tokenizer `BertConverter` builds from vocab.txt.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use super::json::{self, token_content};

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
    pub(crate) fn round_trip(&self, token: &str) -> Result<String> {
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
    use crate::convert::vocab::{get_vocab_base_tokens, TokenType};

    #[test]
    fn cleanup_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("a . b , c n't it 's"),
            "a. b, cn't it's"
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

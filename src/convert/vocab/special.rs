//! gguf-py's `SpecialVocab`: special token ids, add_bos/eos/sep, chat template, merges and
//! normalizer flags, read from tokenizer.json, tokenizer_config.json, chat_template.jinja /
//! chat_template.json, config.json and merges.txt in `vocab.py`'s order of precedence.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value};

use super::json::{self, get, obj, opt_bool, py_int, truthy};
use super::{keys, KvList};

/// The special token types `SpecialVocab` looks for by default.
pub const DEFAULT_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// `gguf.SpecialVocab`, loaded from a folder; [`SpecialVocab::add_to`] writes it.
#[derive(Debug, Clone, Default)]
pub struct SpecialVocab {
    /// BPE merges (`"a b"`), when loaded.
    pub merges: Vec<String>,
    /// `add_<typ>_token` flags, in insertion order.
    pub add_special_token: Vec<(String, bool)>,
    /// Special token ids, in insertion order.
    pub special_token_ids: Vec<(String, u64)>,
    /// The chat template: a string, a list of `{name, template}`, or `None`.
    pub chat_template: Option<Value>,
    /// `normalizer_lowercase`.
    pub normalizer_lowercase: Option<bool>,
    /// `normalizer_strip_accents`.
    pub normalizer_strip_accents: Option<bool>,
    n_vocab: Option<usize>,
    load_merges: bool,
    special_token_types: Vec<String>,
}

impl SpecialVocab {
    /// `SpecialVocab(path, load_merges, special_token_types, n_vocab)`.
    pub fn load(
        dir: &Path,
        load_merges: bool,
        special_token_types: Option<&[&str]>,
        n_vocab: Option<usize>,
    ) -> Result<Self> {
        let types = special_token_types.unwrap_or(&DEFAULT_TYPES);
        let mut sv = SpecialVocab {
            n_vocab,
            load_merges,
            special_token_types: types.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        sv.try_load_from_tokenizer_json(dir)?;
        sv.try_load_from_config_json(dir)?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.try_load_merges_txt(dir)?;
        }
        Ok(sv)
    }

    /// `add_to_gguf`: merges, special ids, add_* flags, chat template, normalizer flags.
    pub fn add_to(&self, kv: &mut KvList) -> Result<()> {
        kv.strings(keys::MERGES, &self.merges);
        for (typ, id) in &self.special_token_ids {
            if let Some(key) = keys::special_id(typ) {
                let id = u32::try_from(*id).map_err(|_| {
                    crate::invalid!("special token {typ} id {id} does not fit in a uint32")
                })?;
                kv.u32(key, id);
            }
        }
        for (typ, value) in &self.add_special_token {
            if let Some(key) = keys::add_special(typ) {
                kv.bool(key, *value);
            }
        }
        if let Some(template) = &self.chat_template {
            add_chat_template(kv, template)?;
        }
        if let Some(v) = self.normalizer_lowercase {
            kv.bool(keys::NORMALIZER_LOWERCASE, v);
        }
        if let Some(v) = self.normalizer_strip_accents {
            kv.bool(keys::NORMALIZER_STRIP_ACCENTS, v);
        }
        Ok(())
    }

    /// `_set_special_token`: the first id of a type wins; ids past `n_vocab` are skipped.
    pub fn set_special_token(&mut self, typ: &str, tid: Option<&Value>) -> Result<()> {
        let Some(tid) = py_int(tid) else {
            return Ok(());
        };
        if tid < 0 {
            crate::bail_invalid!("invalid value for special token type {typ}: {tid}");
        }
        if self.n_vocab.is_none_or(|n| tid < n as i128) {
            if self.special_token_ids.iter().all(|(t, _)| t != typ) {
                let id = u64::try_from(tid)
                    .map_err(|_| crate::invalid!("special token {typ} id {tid} is too large"))?;
                self.special_token_ids.push((typ.to_string(), id));
            }
        } else {
            tracing::warn!("special token type {typ}, id {tid} out of range, must be under {n_vocab:?} - skipping", n_vocab = self.n_vocab);
        }
        Ok(())
    }

    fn set_add(&mut self, typ: &str, value: bool) {
        match self.add_special_token.iter_mut().find(|(t, _)| t == typ) {
            Some(slot) => slot.1 = value,
            None => self.add_special_token.push((typ.to_string(), value)),
        }
    }

    fn set_add_default(&mut self, typ: &str, value: bool) {
        if self.add_special_token.iter().all(|(t, _)| t != typ) {
            self.add_special_token.push((typ.to_string(), value));
        }
    }

    fn has_type(&self, typ: &str) -> bool {
        self.special_token_types.iter().any(|t| t == typ)
    }

    fn parse_normalizer(&mut self, normalizer: &Value, depth: u32) -> Result<()> {
        if depth > 64 {
            crate::bail_invalid!("tokenizer.json: normalizer nested too deeply");
        }
        let ty = get(normalizer, "type", "tokenizer.json normalizer")?;
        match ty.and_then(Value::as_str) {
            Some("Lowercase") => self.normalizer_lowercase = Some(true),
            Some("StripAccents") => self.normalizer_strip_accents = Some(true),
            Some("BertNormalizer") => {
                let o = obj(normalizer, "normalizer")?;
                if let Some(v) = o.get("lowercase") {
                    self.normalizer_lowercase = opt_bool(Some(v), "normalizer lowercase")?;
                }
                if let Some(v) = o.get("strip_accents") {
                    self.normalizer_strip_accents = opt_bool(Some(v), "normalizer strip_accents")?;
                }
            }
            Some("Sequence") => {
                if let Some(list) = get(normalizer, "normalizers", "normalizer")? {
                    let list = list.as_array().ok_or_else(|| {
                        crate::invalid!("tokenizer.json: normalizers is not a list")
                    })?;
                    for n in list {
                        self.parse_normalizer(n, depth + 1)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn load_merges_from(&mut self, tokenizer: &Value) -> Result<()> {
        let model = match obj(tokenizer, "tokenizer.json")?.get("model") {
            None => return Ok(()),
            Some(m) => m,
        };
        let Some(Value::Array(merges)) = obj(model, "tokenizer.json model")?.get("merges") else {
            return Ok(());
        };
        let Some(first) = merges.first() else {
            return Ok(());
        };
        let bad = || crate::invalid!("tokenizer.json: unknown tokenizer merges format");
        if first.is_string() {
            self.merges = merges
                .iter()
                .map(|m| m.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<_>>()?;
        } else if first
            .as_array()
            .is_some_and(|p| p.len() == 2 && p[0].is_string())
        {
            // Since transformers 4.45 a merge is a pair; spaces inside become U+0120.
            self.merges = merges
                .iter()
                .map(|pair| {
                    let parts = pair.as_array().ok_or_else(bad)?;
                    let parts = parts
                        .iter()
                        .map(|p| {
                            p.as_str()
                                .map(|s| s.replace(' ', "\u{120}"))
                                .ok_or_else(bad)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(parts.join(" "))
                })
                .collect::<Result<_>>()?;
        } else {
            return Err(bad());
        }
        Ok(())
    }

    fn try_load_from_tokenizer_json(&mut self, dir: &Path) -> Result<()> {
        let tokenizer = json::read_if_file(&dir.join("tokenizer.json"))?;
        let mut added_tokens: &[Value] = &[];
        if let Some(tok) = &tokenizer {
            obj(tok, "tokenizer.json")?;
            if self.load_merges {
                self.load_merges_from(tok)?;
            }
            if let Some(n) = tok.get("normalizer").filter(|n| truthy(Some(n))) {
                self.parse_normalizer(n, 0)?;
            }
            added_tokens = match tok.get("added_tokens") {
                None => &[],
                Some(Value::Array(a)) => a,
                Some(Value::Object(o)) if o.is_empty() => &[],
                Some(_) => crate::bail_invalid!("tokenizer.json: added_tokens is not a list"),
            };
        }
        let mut config: Option<Map<String, Value>> =
            match json::read_if_file(&dir.join("tokenizer_config.json"))? {
                None => None,
                Some(Value::Object(o)) => Some(o),
                Some(_) => crate::bail_invalid!("tokenizer_config.json is not a JSON object"),
            };
        if let Some(tok) = tokenizer.as_ref().filter(|t| truthy(Some(t))) {
            self.apply_post_processor(tok, &mut config)?;
        }
        let Some(config) = config.filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        self.load_chat_template(dir, &config)?;
        let types = self.special_token_types.clone();
        for typ in &types {
            if let Some(Value::Bool(add)) = config.get(&format!("add_{typ}_token")) {
                match self.add_special_token.iter().find(|(t, _)| t == typ) {
                    None => self.add_special_token.push((typ.clone(), *add)),
                    Some((_, cur)) if cur != add => tracing::warn!(
                        "mismatch between tokenizer_config add_{typ}_token({add}) and tokenizer post_processor<{typ}>({cur}) - opting for the latter"
                    ),
                    Some(_) => {}
                }
            }
            let entry = config.get(&format!("{typ}_token"));
            let content = match entry {
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            // The first added token with that content.
            let id = added_tokens
                .iter()
                .find(|t| t.get("content").and_then(Value::as_str) == Some(content))
                .and_then(|t| t.get("id"));
            self.set_special_token(typ, id)?;
        }
        Ok(())
    }

    /// The post-processor half of `_try_load_from_tokenizer_json`: which special tokens
    /// the tokenizer adds, and the tokenizer_config entries convert infers from it.
    fn apply_post_processor(
        &mut self,
        tok: &Value,
        config: &mut Option<Map<String, Value>>,
    ) -> Result<()> {
        let cfg_get = |c: &Option<Map<String, Value>>, k: &str| -> Option<Value> {
            c.as_ref().and_then(|c| c.get(k)).cloned()
        };
        let cfg_truthy = |c: &Option<Map<String, Value>>| c.as_ref().is_some_and(|c| !c.is_empty());
        let mut special_bos = cfg_get(config, "bos_token");
        let mut special_cls = cfg_get(config, "cls_token");
        let mut special_eos = cfg_get(config, "eos_token");
        let special_sep = cfg_get(config, "sep_token");
        if !truthy(special_bos.as_ref()) && truthy(special_cls.as_ref()) && cfg_truthy(config) {
            special_bos = special_cls.clone();
            set_cfg(config, "bos_token", special_bos.clone());
        }
        if !truthy(special_eos.as_ref()) && truthy(special_sep.as_ref()) && cfg_truthy(config) {
            special_eos = special_sep.clone();
            set_cfg(config, "eos_token", special_eos.clone());
        }
        let Some(post) = tok.get("post_processor").filter(|p| truthy(Some(p))) else {
            return Ok(());
        };
        let processors: Vec<&Value> = match get(post, "processors", "post_processor")? {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(_) => crate::bail_invalid!("tokenizer.json: processors is not a list"),
            None => vec![post],
        };
        let mut special_sep = special_sep;
        for processor in processors {
            let ptype = get(processor, "type", "post_processor")?.and_then(Value::as_str);
            match ptype {
                Some("ByteLevel") => {
                    self.set_add_default("bos", false);
                    self.set_add_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.set_add("bos", true);
                    self.set_add("eos", true);
                    self.set_add("sep", true);
                    if !truthy(special_cls.as_ref()) && cfg_truthy(config) {
                        special_cls = first_of(processor, "cls", special_bos.as_ref())?;
                        set_cfg(config, "cls_token", special_cls.clone());
                    }
                    if !truthy(special_sep.as_ref()) && cfg_truthy(config) {
                        special_sep = first_of(processor, "sep", special_eos.as_ref())?;
                        set_cfg(config, "sep_token", special_sep.clone());
                    }
                }
                Some("TemplateProcessing") => {
                    let single = template_list(processor, "single")?;
                    let pair = template_list(processor, "pair")?;
                    let mut special_first = None;
                    let mut special_last = None;
                    if single.len() > 1 {
                        special_first = special_token_id(&single[0])?;
                        if let Some(first) = special_first.clone().filter(|f| truthy(Some(f))) {
                            let known = Some(&first) == special_bos.as_ref()
                                || Some(&first) == special_cls.as_ref();
                            if !cfg_truthy(config) {
                                special_bos = Some(first.clone());
                            } else if !known {
                                if !truthy(special_bos.as_ref()) {
                                    special_bos = Some(first.clone());
                                    set_cfg(config, "bos_token", special_bos.clone());
                                }
                                if !truthy(special_cls.as_ref()) {
                                    special_cls = Some(first.clone());
                                    set_cfg(config, "cls_token", special_cls.clone());
                                }
                            }
                            let known = Some(&first) == special_bos.as_ref()
                                || Some(&first) == special_cls.as_ref();
                            self.set_add("bos", known);
                        }
                        special_last = special_token_id(&single[single.len() - 1])?;
                        if let Some(last) = special_last.clone().filter(|l| truthy(Some(l))) {
                            if !cfg_truthy(config) {
                                special_eos = Some(last.clone());
                            } else if Some(&last) != special_eos.as_ref() {
                                if !self.has_type("eot") {
                                    self.special_token_types.push("eot".into());
                                    set_cfg(config, "eot_token", special_eos.clone());
                                } else if !self.has_type("eom") {
                                    self.special_token_types.push("eom".into());
                                    set_cfg(config, "eom_token", special_eos.clone());
                                } else {
                                    tracing::warn!("overriding EOS token without EOT/EOM fallback");
                                }
                                special_eos = Some(last.clone());
                                set_cfg(config, "eos_token", special_eos.clone());
                            }
                            self.set_add("eos", Some(&last) == special_eos.as_ref());
                        }
                    }
                    if !pair.is_empty() {
                        let first_t = special_first.as_ref().filter(|f| truthy(Some(f)));
                        let last_t = special_last.as_ref().filter(|l| truthy(Some(l)));
                        let start = usize::from(
                            first_t.is_some() && special_token_id(&pair[0])?.as_ref() == first_t,
                        );
                        let stop = last_t.is_some()
                            && special_token_id(&pair[pair.len() - 1])?.as_ref() == last_t;
                        let end = if stop { pair.len() - 1 } else { pair.len() };
                        let inner = if start <= end {
                            &pair[start..end]
                        } else {
                            &[][..]
                        };
                        if !inner.is_empty() {
                            let seq_a = sequence_id(&inner[0])?;
                            let seq_b = sequence_id(&inner[inner.len() - 1])?;
                            let middle = if inner.len() >= 2 {
                                &inner[1..inner.len() - 1]
                            } else {
                                &[][..]
                            };
                            if seq_a.as_deref() == Some("A")
                                && seq_b.as_deref() == Some("B")
                                && !middle.is_empty()
                            {
                                let mut add_sep = false;
                                let is_sep = |e: &Option<Value>| {
                                    e.as_ref() == special_sep.as_ref()
                                        || e.as_ref() == special_eos.as_ref()
                                };
                                let entry = special_token_id(&middle[0])?;
                                if truthy(entry.as_ref()) && is_sep(&entry) && last_t.is_none() {
                                    add_sep = true;
                                }
                                if middle.len() == 2 {
                                    let entry = special_token_id(&middle[1])?;
                                    if truthy(entry.as_ref()) && is_sep(&entry) {
                                        add_sep = true;
                                    }
                                }
                                self.set_add("sep", add_sep);
                                if add_sep && !truthy(special_sep.as_ref()) && cfg_truthy(config) {
                                    set_cfg(config, "sep_token", special_eos.clone());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn load_chat_template(&mut self, dir: &Path, config: &Map<String, Value>) -> Result<()> {
        let jinja = dir.join("chat_template.jinja");
        let json_file = dir.join("chat_template.json");
        let mut alt: Option<Value> = None;
        if jinja.is_file() {
            let text = read_text(&jinja)?;
            let extra = additional_templates(&dir.join("additional_chat_templates"))?;
            if extra.is_empty() {
                alt = Some(Value::String(text));
            } else {
                let mut list = vec![template_entry("default", text)];
                for (name, path) in extra {
                    list.push(template_entry(&name, read_text(&path)?));
                }
                alt = Some(Value::Array(list));
            }
        } else if json_file.is_file() {
            let v = json::read(&json_file)?;
            alt = get(&v, "chat_template", "chat_template.json")?.cloned();
        }
        // dict.get(key, default): a present null is None, not the default.
        let template = match config.get("chat_template") {
            Some(v) => Some(v.clone()).filter(|v| !v.is_null()),
            None => alt,
        };
        match template {
            None => self.chat_template = None,
            Some(v @ (Value::String(_) | Value::Array(_))) => self.chat_template = Some(v),
            Some(_) => tracing::warn!(
                "bad type for chat_template field in tokenizer_config.json - ignoring"
            ),
        }
        Ok(())
    }

    fn try_load_from_config_json(&mut self, dir: &Path) -> Result<()> {
        let Some(config) = json::read_if_file(&dir.join("config.json"))? else {
            return Ok(());
        };
        obj(&config, "config.json")?;
        let text_config = config.get("text_config");
        for typ in self.special_token_types.clone() {
            let key = format!("{typ}_token_id");
            let mut id = config.get(&key).filter(|v| !v.is_null());
            if id.is_none() {
                if let Some(tc) = text_config {
                    id = get(tc, &key, "config.json text_config")?;
                }
            }
            self.set_special_token(&typ, id)?;
        }
        Ok(())
    }

    fn try_load_merges_txt(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = read_text(&path)?;
        self.merges = parse_merges_txt(&text);
        Ok(())
    }
}

/// `merges.txt` as `_try_load_merges_txt` reads it: an optional `#` header line, then one
/// `a b` pair per line (Python's whitespace split; malformed lines skipped).
pub fn parse_merges_txt(text: &str) -> Vec<String> {
    // Python's text mode turns \r\n and \r into \n.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines = text.split_inclusive('\n').peekable();
    if lines.peek().is_some_and(|l| py_strip(l).starts_with('#')) {
        lines.next();
    }
    let mut merges = Vec::new();
    for line in lines {
        let line = py_strip(line);
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line
            .split(is_py_space)
            .filter(|p| !p.is_empty())
            .take(3)
            .collect();
        if parts.len() == 2 {
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
    }
    merges
}

/// Python's `str.isspace` for one character (Unicode White_Space plus the ASCII
/// information separators \x1c-\x1f).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = json::read_bytes(path, json::MAX_JSON_BYTES)?;
    String::from_utf8(bytes)
        .map_err(|_| crate::invalid!(kind: BadEncoding, "{} is not UTF-8", path.display()))
}

fn template_entry(name: &str, template: String) -> Value {
    serde_json::json!({"name": name, "template": template})
}

/// `(path / 'additional_chat_templates').glob('*.jinja')`, as (stem, path), sorted by name.
fn additional_templates(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if let (Some(stem), Some("jinja")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) {
            out.push((stem.to_string(), path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// `GGUFWriter.add_chat_template` for a string or a list of named templates.
fn add_chat_template(kv: &mut KvList, value: &Value) -> Result<()> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(list) => {
            let mut default = None;
            let mut names: Vec<String> = Vec::new();
            for choice in list {
                let name = get(choice, "name", "chat template entry")?
                    .map(|n| {
                        n.as_str()
                            .ok_or_else(|| crate::invalid!("chat template name is not a string"))
                    })
                    .transpose()?
                    .unwrap_or("");
                let name: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let template = get(choice, "template", "chat template entry")?;
                let Some(template) = template else { continue };
                let template = template
                    .as_str()
                    .ok_or_else(|| crate::invalid!("chat template {name} is not a string"))?;
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(template.to_string());
                } else {
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                    kv.string(&format!("tokenizer.chat_template.{name}"), template);
                }
            }
            kv.strings(keys::CHAT_TEMPLATES, &names);
            match default {
                Some(t) => t,
                None => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    kv.string(keys::CHAT_TEMPLATE, &text);
    Ok(())
}

fn set_cfg(config: &mut Option<Map<String, Value>>, key: &str, value: Option<Value>) {
    if let Some(c) = config.as_mut() {
        c.insert(key.to_string(), value.unwrap_or(Value::Null));
    }
}

/// `processor.get(key, [default])[0]`.
fn first_of(processor: &Value, key: &str, default: Option<&Value>) -> Result<Option<Value>> {
    match obj(processor, "post_processor")?.get(key) {
        None => Ok(default.cloned()),
        Some(Value::Array(a)) => Ok(a.first().cloned()),
        Some(_) => Err(crate::invalid!(
            "tokenizer.json: post_processor {key} is not a list"
        )),
    }
}

fn template_list<'a>(processor: &'a Value, key: &str) -> Result<&'a [Value]> {
    match obj(processor, "post_processor")?.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(crate::invalid!(
            "tokenizer.json: TemplateProcessing {key} is not a list"
        )),
    }
}

/// `piece.get('SpecialToken', {}).get('id')`.
fn special_token_id(piece: &Value) -> Result<Option<Value>> {
    let st = obj(piece, "TemplateProcessing piece")?.get("SpecialToken");
    match st {
        None => Ok(None),
        Some(st) => Ok(get(st, "id", "SpecialToken")?.cloned()),
    }
}

/// `piece.get('Sequence', {}).get('id')` as a string.
fn sequence_id(piece: &Value) -> Result<Option<String>> {
    let seq = obj(piece, "TemplateProcessing piece")?.get("Sequence");
    match seq {
        None => Ok(None),
        Some(s) => Ok(get(s, "id", "Sequence")?
            .and_then(Value::as_str)
            .map(str::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn kv_of(sv: &SpecialVocab) -> Vec<(String, crate::formats::gguf::Value)> {
        let mut kv = KvList::new();
        sv.add_to(&mut kv).unwrap();
        kv.into_vec()
    }

    #[test]
    fn bert_template_processing() {
        let tok = json!({
            "added_tokens": [
                {"id": 0, "content": "[PAD]"}, {"id": 100, "content": "[UNK]"},
                {"id": 101, "content": "[CLS]"}, {"id": 102, "content": "[SEP]"},
                {"id": 103, "content": "[MASK]"}],
            "normalizer": {"type": "BertNormalizer", "lowercase": true, "strip_accents": null},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "[SEP]"}}],
                "pair": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "[SEP]"}},
                         {"Sequence": {"id": "B"}}, {"SpecialToken": {"id": "[SEP]"}}]}
        });
        let cfg = json!({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                         "cls_token": "[CLS]", "mask_token": "[MASK]"});
        let dir = folder(&[
            ("tokenizer.json", &tok.to_string()),
            ("tokenizer_config.json", &cfg.to_string()),
            ("config.json", r#"{"pad_token_id": 0}"#),
        ]);
        let sv = SpecialVocab::load(dir.path(), false, None, Some(30522)).unwrap();
        let names: Vec<_> = kv_of(&sv)
            .into_iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        // What convert_hf_to_gguf.py writes for all-MiniLM-L6-v2.
        assert_eq!(
            names,
            [
                "tokenizer.ggml.bos_token_id=U32(101)",
                "tokenizer.ggml.eos_token_id=U32(102)",
                "tokenizer.ggml.unknown_token_id=U32(100)",
                "tokenizer.ggml.seperator_token_id=U32(102)",
                "tokenizer.ggml.padding_token_id=U32(0)",
                "tokenizer.ggml.mask_token_id=U32(103)",
                "tokenizer.ggml.add_bos_token=Bool(true)",
                "tokenizer.ggml.add_eos_token=Bool(true)",
                "tokenizer.ggml.add_sep_token=Bool(false)",
                "tokenizer.ggml.normalizer.lowercase=Bool(true)",
            ]
        );
    }

    #[test]
    fn merges_pairs_encode_spaces_and_txt_fallback() {
        let tok = json!({"model": {"merges": [["a b", "c"], ["d", "e"]]}});
        let dir = folder(&[("tokenizer.json", &tok.to_string())]);
        let sv = SpecialVocab::load(dir.path(), true, None, None).unwrap();
        assert_eq!(sv.merges, ["a\u{120}b c", "d e"]);
        let dir = folder(&[(
            "merges.txt",
            "#version: 0.2\r\nx y\n\nbad\nq  r s\n u  v \n",
        )]);
        let sv = SpecialVocab::load(dir.path(), true, None, None).unwrap();
        assert_eq!(sv.merges, ["x y", "u v"]);
        let dir = folder(&[("tokenizer.json", r#"{"model": {"merges": [1]}}"#)]);
        assert!(SpecialVocab::load(dir.path(), true, None, None).is_err());
    }

    #[test]
    fn chat_template_sources_and_special_ids() {
        let dir = folder(&[
            (
                "tokenizer_config.json",
                r#"{"add_bos_token": false, "bos_token": "<s>"}"#,
            ),
            ("chat_template.jinja", "{{ x }}"),
            (
                "config.json",
                r#"{"bos_token_id": 5, "eos_token_id": [1, 2], "pad_token_id": 99}"#,
            ),
        ]);
        let sv = SpecialVocab::load(dir.path(), false, None, Some(10)).unwrap();
        assert_eq!(sv.special_token_ids, [("bos".to_string(), 5)]);
        assert_eq!(sv.add_special_token, [("bos".to_string(), false)]);
        assert_eq!(sv.chat_template, Some(json!("{{ x }}")));
        // An explicit null in tokenizer_config wins over the file.
        let dir = folder(&[
            (
                "tokenizer_config.json",
                r#"{"chat_template": null, "x": 1}"#,
            ),
            ("chat_template.jinja", "{{ x }}"),
        ]);
        assert_eq!(
            SpecialVocab::load(dir.path(), false, None, None)
                .unwrap()
                .chat_template,
            None
        );
        let dir = folder(&[("config.json", r#"{"bos_token_id": -1}"#)]);
        assert!(SpecialVocab::load(dir.path(), false, None, None).is_err());
    }

    #[test]
    fn named_chat_templates() {
        let mut kv = KvList::new();
        let list =
            json!([{"name": "default", "template": "D"}, {"name": "tool use", "template": "T"}]);
        add_chat_template(&mut kv, &list).unwrap();
        let keys: Vec<_> = kv.entries().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tokenizer.chat_template.tool_use",
                "tokenizer.chat_templates",
                "tokenizer.chat_template"
            ]
        );
    }
}

//! `general.*` metadata derived as gguf-py's `Metadata.load` and
//! `Metadata.set_gguf_meta_model` derive it: the model card's front matter, config.json's
//! `_name_or_path`, the folder name, generation_config.json's sampling values, then a
//! `--metadata FILE` override and `--name`.

use crate::formats::gguf::{Value, ValueType};
use regex::Regex;
use serde_json::{Map, Value as Json};
use std::sync::LazyLock;

/// Everything the derivation reads.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// README.md front matter.
    pub card: Map<String, Json>,
    /// config.json.
    pub hparams: Map<String, Json>,
    /// generation_config.json (empty when missing or invalid, as in gguf-py).
    pub generation: Map<String, Json>,
    /// The `--metadata` override file's object.
    pub overrides: Map<String, Json>,
    /// `--name`.
    pub name: Option<String>,
    /// The model folder's name (`dir_model.name`).
    pub dir_name: String,
    /// Parameter counts of the converted tensors: total, shared, expert, expert count.
    pub params: ParamCount,
}

/// `GGUFWriter.get_total_parameter_count()`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ParamCount {
    /// All elements.
    pub total: u64,
    /// Elements outside expert tensors.
    pub shared: u64,
    /// Elements of one expert, summed over expert tensors.
    pub expert: u64,
    /// Average experts per expert tensor.
    pub expert_count: u64,
}

impl ParamCount {
    /// Counts the converted tensors (GGUF names, row-major shapes).
    pub fn of<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u64])>) -> ParamCount {
        let mut c = ParamCount::default();
        let (mut expert_sum, mut n_expert) = (0u64, 0u64);
        for (name, shape) in tensors {
            let size: u64 = shape.iter().product();
            if name.contains("_exps.") && shape.len() >= 3 {
                let count = shape[shape.len() - if name.contains(".bias") { 2 } else { 3 }];
                c.expert += size / count.max(1);
                expert_sum += count;
                n_expert += 1;
            } else {
                c.shared += size;
            }
            c.total += size;
        }
        c.expert_count = expert_sum.checked_div(n_expert).unwrap_or(0);
        c
    }
}

/// The authorship fields of gguf-py's `Metadata` that become `general.*` keys.
#[derive(Debug, Default, Clone)]
struct Meta {
    name: Option<Json>,
    author: Option<Json>,
    version: Option<Json>,
    organization: Option<Json>,
    finetune: Option<Json>,
    basename: Option<Json>,
    description: Option<Json>,
    quantized_by: Option<Json>,
    size_label: Option<Json>,
    url: Option<Json>,
    doi: Option<Json>,
    uuid: Option<Json>,
    repo_url: Option<Json>,
    source_url: Option<Json>,
    source_doi: Option<Json>,
    source_uuid: Option<Json>,
    source_repo_url: Option<Json>,
    license: Option<Json>,
    license_name: Option<Json>,
    license_link: Option<Json>,
    base_models: Option<Vec<Json>>,
    datasets: Option<Vec<Json>>,
    tags: Option<Vec<Json>>,
    languages: Option<Vec<Json>>,
}

/// Sampling keys: generation_config.json name(s), GGUF key suffix, integer or float.
const SAMPLING: &[(&[&str], &str, bool)] = &[
    (&["sequence"], "sequence", false),
    (&["top_k"], "top_k", true),
    (&["top_p"], "top_p", false),
    (&["min_p"], "min_p", false),
    (&["xtc_probability"], "xtc_probability", false),
    (&["xtc_threshold"], "xtc_threshold", false),
    (&["temperature"], "temp", false),
    (&["penalty_last_n"], "penalty_last_n", true),
    (
        &["penalty_repeat", "repetition_penalty"],
        "penalty_repeat",
        false,
    ),
    (&["mirostat"], "mirostat", true),
    (&["mirostat_tau"], "mirostat_tau", false),
    (&["mirostat_eta"], "mirostat_eta", false),
];

/// The `general.type` and authorship keys convert writes after `general.architecture`,
/// in its order.
pub fn general_keys(inp: &Inputs) -> Vec<(String, Value)> {
    let mut m = Meta::default();
    apply_card(&mut m, &inp.card, inp.params.total);
    if let Some(Json::String(id)) = inp.hparams.get("_name_or_path") {
        if id.matches('/').count() <= 1 {
            apply_id(&mut m, id, inp.params.total);
        }
    }
    apply_id(&mut m, &inp.dir_name, inp.params.total);

    let mut out = vec![("general.type".to_string(), Value::string("model"))];
    // Sampling values: generation config, then the override file.
    for (names, key, int) in SAMPLING {
        let full = format!("general.sampling.{key}");
        let v = inp
            .overrides
            .get(&full)
            .or_else(|| names.iter().find_map(|n| inp.generation.get(*n)));
        if let Some(v) = v.filter(|v| !v.is_null()) {
            if let Some(v) = if *key == "sequence" {
                v.as_str().map(Value::string)
            } else {
                number(v, *int)
            } {
                out.push((full, v));
            }
        }
    }
    let o = |k: &str| inp.overrides.get(k).cloned();
    let set = |slot: &mut Option<Json>, k: &str| {
        if let Some(v) = o(k) {
            *slot = Some(v);
        }
    };
    set(&mut m.name, "general.name");
    set(&mut m.author, "general.author");
    set(&mut m.version, "general.version");
    set(&mut m.organization, "general.organization");
    set(&mut m.finetune, "general.finetune");
    set(&mut m.basename, "general.basename");
    set(&mut m.description, "general.description");
    set(&mut m.quantized_by, "general.quantized_by");
    set(&mut m.size_label, "general.size_label");
    set(&mut m.license_name, "general.license.name");
    set(&mut m.license_link, "general.license.link");
    set(&mut m.url, "general.url");
    set(&mut m.doi, "general.doi");
    set(&mut m.uuid, "general.uuid");
    set(&mut m.repo_url, "general.repo_url");
    set(&mut m.source_url, "general.source.url");
    set(&mut m.source_doi, "general.source.doi");
    set(&mut m.source_uuid, "general.source.uuid");
    set(&mut m.source_repo_url, "general.source.repo_url");
    let list = |k: &str| o(k).and_then(|v| v.as_array().cloned());
    if let Some(v) = list("general.base_models") {
        m.base_models = Some(v);
    }
    if let Some(v) = list("general.datasets") {
        m.datasets = Some(v);
    }
    if let Some(v) = list("general.tags") {
        m.tags = Some(v);
    }
    if let Some(v) = list("general.languages") {
        m.languages = Some(v);
    }
    if let Some(n) = &inp.name {
        m.name = Some(Json::String(n.clone()));
    }
    // prepare_metadata: the folder name as the last resort, then the size label.
    if m.name.is_none() {
        m.name = Some(Json::String(inp.dir_name.clone()));
    }
    if m.size_label.is_none() && inp.params.total > 0 {
        m.size_label = Some(Json::String(size_label(&inp.params)));
    }

    let mut put = |key: &str, v: &Option<Json>| {
        if let Some(v) = v {
            out.push((key.to_string(), Value::string(&text(v))));
        }
    };
    put("general.name", &m.name);
    put("general.author", &m.author);
    put("general.version", &m.version);
    put("general.organization", &m.organization);
    put("general.finetune", &m.finetune);
    put("general.basename", &m.basename);
    put("general.description", &m.description);
    put("general.quantized_by", &m.quantized_by);
    put("general.size_label", &m.size_label);
    let license = m.license.as_ref().map(|l| match l {
        Json::Array(a) => Json::String(a.iter().map(text).collect::<Vec<_>>().join(",")),
        other => other.clone(),
    });
    put("general.license", &license);
    put("general.license.name", &m.license_name);
    put("general.license.link", &m.license_link);
    put("general.url", &m.url);
    put("general.doi", &m.doi);
    put("general.uuid", &m.uuid);
    put("general.repo_url", &m.repo_url);
    put("general.source.url", &m.source_url);
    put("general.source.doi", &m.source_doi);
    put("general.source.uuid", &m.source_uuid);
    put("general.source.repo_url", &m.source_repo_url);
    for (prefix, entries) in [("base_model", &m.base_models), ("dataset", &m.datasets)] {
        let Some(entries) = entries else { continue };
        out.push((
            format!("general.{prefix}.count"),
            Value::U32(entries.len() as u32),
        ));
        for (i, e) in entries.iter().enumerate() {
            for field in [
                "name",
                "author",
                "version",
                "organization",
                "description",
                "url",
                "doi",
                "uuid",
                "repo_url",
            ] {
                if let Some(v) = e.get(field) {
                    out.push((
                        format!("general.{prefix}.{i}.{field}"),
                        Value::string(&text(v)),
                    ));
                }
            }
        }
    }
    for (key, v) in [
        ("general.tags", &m.tags),
        ("general.languages", &m.languages),
    ] {
        if let Some(v) = v {
            let items = v.iter().map(|s| Value::string(&text(s))).collect();
            out.push((key.to_string(), Value::Array(ValueType::String, items)));
        }
    }
    out
}

/// A JSON value as the string Python's `str()` would give for a scalar.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Json, int: bool) -> Option<Value> {
    if int {
        v.as_i64().map(|n| Value::I32(n as i32))
    } else {
        v.as_f64().map(|f| Value::F32(f as f32))
    }
}

fn apply_card(m: &mut Meta, card: &Map<String, Json>, total: u64) {
    let pairs: &[(&str, &str)] = &[
        ("name", "name"),
        ("author", "author"),
        ("version", "version"),
        ("organization", "organization"),
        ("description", "description"),
        ("finetune", "finetune"),
        ("basename", "basename"),
        ("size_label", "size_label"),
        ("source_url", "url"),
        ("source_doi", "doi"),
        ("source_uuid", "uuid"),
        ("source_repo_url", "repo_url"),
        ("name", "model_name"),
        ("author", "model_author"),
        ("version", "model_version"),
        ("organization", "model_organization"),
        ("description", "model_description"),
        ("finetune", "model_finetune"),
        ("basename", "model_basename"),
        ("size_label", "model_size_label"),
        ("source_url", "model_url"),
        ("source_doi", "model_doi"),
        ("source_uuid", "model_uuid"),
        ("source_repo_url", "model_repo_url"),
        ("name", "model_name"),
        ("author", "model_creator"),
        ("basename", "model_type"),
    ];
    for (field, key) in pairs {
        if let Some(v) = card.get(*key) {
            let slot = slot(m, field);
            if slot.is_none() {
                *slot = Some(v.clone());
            }
        }
    }
    for (out, keys) in [
        (
            &mut m.base_models,
            ["base_model", "base_models", "base_model_sources"],
        ),
        (&mut m.datasets, ["datasets", "dataset", "dataset_sources"]),
    ] {
        let Some(value) = keys.iter().find_map(|k| card.get(*k)) else {
            continue;
        };
        let ids: Vec<Json> = match value {
            Json::String(_) => vec![value.clone()],
            Json::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        let list = out.get_or_insert_with(Vec::new);
        for id in ids {
            list.push(match id {
                Json::String(s) => Json::Object(source_entry(&s, total)),
                Json::Object(map) => Json::Object(map),
                _ => Json::Object(Map::new()),
            });
        }
    }
    for (field, key) in [
        ("license", "license"),
        ("license_name", "license_name"),
        ("license_link", "license_link"),
    ] {
        if let Some(v) = card.get(key) {
            let slot = slot(m, field);
            if slot.is_none() {
                *slot = Some(v.clone());
            }
        }
    }
    for (tags, key) in [
        (true, "tags"),
        (true, "pipeline_tag"),
        (false, "languages"),
        (false, "language"),
    ] {
        let out = if tags { &mut m.tags } else { &mut m.languages };
        match card.get(key) {
            Some(s @ Json::String(_)) => out.get_or_insert_with(Vec::new).push(s.clone()),
            Some(Json::Array(a)) => out.get_or_insert_with(Vec::new).extend(a.iter().cloned()),
            _ => {}
        }
    }
}

fn slot<'a>(m: &'a mut Meta, field: &str) -> &'a mut Option<Json> {
    match field {
        "name" => &mut m.name,
        "author" => &mut m.author,
        "version" => &mut m.version,
        "organization" => &mut m.organization,
        "description" => &mut m.description,
        "finetune" => &mut m.finetune,
        "basename" => &mut m.basename,
        "size_label" => &mut m.size_label,
        "source_url" => &mut m.source_url,
        "source_doi" => &mut m.source_doi,
        "source_uuid" => &mut m.source_uuid,
        "source_repo_url" => &mut m.source_repo_url,
        "license" => &mut m.license,
        "license_name" => &mut m.license_name,
        "license_link" => &mut m.license_link,
        other => unreachable!("no metadata field {other}"),
    }
}

/// A base model or dataset entry from a Hugging Face id or URL.
fn source_entry(id: &str, total: u64) -> Map<String, Json> {
    let mut e = Map::new();
    let s = |v: String| Json::String(v);
    if ["http://", "https://", "ssh://"]
        .iter()
        .any(|p| id.starts_with(p))
    {
        e.insert("repo_url".into(), s(id.to_string()));
        static HF: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^https?://huggingface.co/([^/]+/[^/]+)$").unwrap());
        if id.contains("huggingface.co") {
            if let Some(c) = HF.captures(id) {
                let p = id_components(&c[1], total);
                if let Some(n) = p.full_name {
                    e.insert("name".into(), s(id_to_title(&n)));
                }
                if let Some(o) = p.org {
                    e.insert("organization".into(), s(id_to_title(&o)));
                }
                if let Some(v) = p.version {
                    e.insert("version".into(), s(v));
                }
            }
        }
    } else {
        let p = id_components(id, total);
        if let Some(n) = &p.full_name {
            e.insert("name".into(), s(id_to_title(n)));
        }
        if let Some(o) = &p.org {
            e.insert("organization".into(), s(id_to_title(o)));
        }
        if let Some(v) = p.version {
            e.insert("version".into(), s(v));
        }
        if let (Some(o), Some(n)) = (p.org, p.full_name) {
            e.insert(
                "repo_url".into(),
                s(format!("https://huggingface.co/{o}/{n}")),
            );
        }
    }
    e
}

fn apply_id(m: &mut Meta, id: &str, total: u64) {
    let p = id_components(id, total);
    let fill = |slot: &mut Option<Json>, v: Option<String>| {
        if slot.is_none() {
            if let Some(v) = v {
                *slot = Some(Json::String(v));
            }
        }
    };
    fill(&mut m.name, p.full_name.as_deref().map(id_to_title));
    fill(&mut m.organization, p.org.as_deref().map(id_to_title));
    fill(&mut m.basename, p.basename);
    fill(&mut m.finetune, p.finetune);
    fill(&mut m.version, p.version);
    fill(&mut m.size_label, p.size_label);
}

/// The parts `Metadata.get_model_id_components` finds in a model id.
#[derive(Debug, Default, PartialEq)]
pub struct IdParts {
    /// The name after `org/`.
    pub full_name: Option<String>,
    /// The organization before `/`.
    pub org: Option<String>,
    /// Base name.
    pub basename: Option<String>,
    /// Fine-tune tags.
    pub finetune: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// Size label (`7B`).
    pub size_label: Option<String>,
}

const VERSION: u8 = 1;
const TYPE: u8 = 2;
const SIZE: u8 = 4;
const FINETUNE: u8 = 8;
const BASENAME: u8 = 16;

/// `Metadata.get_model_id_components`.
pub fn id_components(id: &str, total: u64) -> IdParts {
    static VERSION_RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^(v|iter)?\d+([.]\d+)*$").unwrap());
    static TYPE_RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^(i?q\d(_\w)*|b?fp?(16|32))$").unwrap());
    static SIZE_RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)^((A|\d+x)?\d+([._]\d+)?[KMBT]\d?|small|mini|medium|large|x?xl)$").unwrap()
    });
    static FT_RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?i)^(chat|instruct|vision|lora)$").unwrap());
    if id.contains(' ') {
        return IdParts {
            full_name: Some(id.to_string()),
            ..IdParts::default()
        };
    }
    let (mut org, full) = match id.split_once('/') {
        Some((o, f)) => (Some(o.to_string()), f.to_string()),
        None => (None, id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut types = vec![0u8; parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if VERSION_RE.is_match(&part) {
            types[i] |= VERSION;
        } else if TYPE_RE.is_match(&part) {
            types[i] |= TYPE;
            parts[i] = part.to_uppercase();
        } else if i > 0 && SIZE_RE.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            if p[n - 1].is_numeric() && n >= 2 {
                // bloom-7b1 -> 7.1B
                let (a, b) = (p[n - 2], p[n - 1]);
                p.truncate(n - 2);
                p.extend(['.', b, a]);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_numeric() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total != 0 {
                let n = p.len();
                let num: String = p[..n - 1].iter().collect();
                if let Ok(v) = num.parse::<f64>() {
                    let exp = " KMBT".find(p[n - 1]).map_or(-1, |e| e as i32);
                    let label = v * 1000f64.powi(exp);
                    if (label - total as f64).abs() > (7 * u128::from(total) / 8) as f64 {
                        types[i] |= FINETUNE;
                        p[n - 1] = p[n - 1].to_ascii_lowercase();
                    }
                }
            }
            if types[i] == 0 {
                types[i] |= SIZE;
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && FT_RE.is_match(&part) {
            types[i] |= FINETUNE;
        }
    }
    let has_numeric_size = parts
        .iter()
        .zip(&types)
        .any(|(p, t)| t & SIZE != 0 && p.chars().any(char::is_numeric));
    if has_numeric_size {
        for (p, t) in parts.iter().zip(types.iter_mut()) {
            if *t & SIZE != 0 && p.chars().all(char::is_alphabetic) {
                *t &= !SIZE;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(types.iter_mut()) {
        let alpha = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((*t == 0 && alpha) || *t & VERSION != 0) {
            *t |= BASENAME;
        } else {
            at_start = false;
            if *t == 0 {
                *t |= FINETUNE;
            }
        }
    }
    for t in types.iter_mut().rev() {
        if *t & BASENAME != 0 && *t != BASENAME {
            *t &= !BASENAME;
        } else {
            break;
        }
    }
    let join = |want: u8, not: u8| {
        let v: Vec<&str> = parts
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t & want != 0 && **t & not == 0)
            .map(|(p, _)| p.as_str())
            .collect();
        (!v.is_empty()).then(|| v.join("-"))
    };
    let mut basename = join(BASENAME, 0);
    let mut sizes: Vec<&str> = Vec::new();
    for (p, t) in parts.iter().zip(&types) {
        if t & SIZE != 0 && !sizes.contains(&p.as_str()) {
            sizes.push(p);
        }
    }
    let size_label = (!sizes.is_empty()).then(|| sizes.join("-"));
    let finetune = join(FINETUNE, 0);
    let version = join(VERSION, BASENAME);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdParts {
        full_name: Some(full),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

/// `Metadata.id_to_title`: title-case lower-case words except versions and numbers.
pub fn id_to_title(s: &str) -> String {
    static KEEP: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(v\d+(?:\.\d+)*|\d.*)$").unwrap());
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if is_lower(w) && !KEEP.is_match(w) {
                title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.islower()`.
fn is_lower(w: &str) -> bool {
    let mut cased = false;
    for c in w.chars() {
        if c.is_uppercase() {
            return false;
        }
        cased |= c.is_lowercase();
    }
    cased
}

/// Python's `str.title()`.
fn title(w: &str) -> String {
    let mut out = String::with_capacity(w.len());
    let mut prev_cased = false;
    for c in w.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased && !prev_cased {
            out.extend(c.to_uppercase());
        } else if cased {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// `gguf.size_label`: `76K`, `1.5B`, `8x7.2B`.
pub fn size_label(p: &ParamCount) -> String {
    if p.expert_count > 0 {
        format!(
            "{}x{}",
            p.expert_count,
            rounded_notation(p.shared + p.expert)
        )
    } else {
        rounded_notation(p.total)
    }
}

/// `model_weight_count_rounded_notation(n, min_digits=2)`.
fn rounded_notation(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let int_digits = format!("{}", scaled.round_ties_even() as u64);
    let fix = 2usize.saturating_sub(int_digits.trim_start_matches('0').len());
    format!("{scaled:.fix$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(
        id: &str,
        total: u64,
    ) -> (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        let p = id_components(id, total);
        (p.basename, p.finetune, p.version, p.size_label)
    }

    /// Expected values from gguf-py's own doctest-like cases in its test suite.
    #[test]
    fn model_id_components_follow_gguf_py() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            parts("Mixtral-8x7B-Instruct-v0.1", 0),
            (s("Mixtral"), s("Instruct"), s("v0.1"), s("8x7B"))
        );
        assert_eq!(parts("hf-tiny-llama", 76_000), (None, None, None, None));
        assert_eq!(
            parts("SmolLM2-135M-Instruct", 134_515_008),
            (s("SmolLM2"), s("Instruct"), None, s("135M"))
        );
        assert_eq!(
            parts("Meta-Llama-3-8B", 0),
            (s("Meta-Llama-3"), None, None, s("8B"))
        );
        assert_eq!(parts("bloom-7b1", 0), (s("bloom"), None, None, s("7.1B")));
        let p = id_components("./some/thing", 0);
        assert_eq!(p.org, None);
        assert_eq!(id_to_title("hf-tiny-llama"), "Hf Tiny Llama");
        assert_eq!(
            id_to_title("SmolLM2-135M-instruct"),
            "SmolLM2 135M Instruct"
        );
        assert_eq!(id_to_title("v0.1 7b"), "v0.1 7b");
    }

    #[test]
    fn size_labels_round_like_python() {
        let p = |total| ParamCount {
            total,
            ..Default::default()
        };
        assert_eq!(size_label(&p(76_096)), "76K");
        assert_eq!(size_label(&p(134_515_008)), "135M");
        assert_eq!(size_label(&p(1_235_814_400)), "1.2B");
        assert_eq!(size_label(&p(8_030_261_248)), "8.0B");
        assert_eq!(size_label(&p(999)), "1.0K");
    }

    #[test]
    fn keys_come_in_convert_order() {
        let card = crate::convert::card::front_matter(
            "---\nlicense: apache-2.0\nlanguage:\n- en\ntags:\n- tiny\npipeline_tag: text-generation\n---\n",
        );
        let inp = Inputs {
            card,
            dir_name: "hf-tiny-llama".into(),
            params: ParamCount {
                total: 76_096,
                shared: 76_096,
                ..Default::default()
            },
            ..Default::default()
        };
        let keys: Vec<String> = general_keys(&inp).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "general.type",
                "general.name",
                "general.size_label",
                "general.license",
                "general.tags",
                "general.languages"
            ]
        );
        let mut inp = inp;
        inp.name = Some("X".into());
        inp.generation = serde_json::from_str(r#"{"temperature":0.6,"top_k":20}"#).unwrap();
        let kv = general_keys(&inp);
        assert_eq!(kv[1], ("general.sampling.top_k".into(), Value::I32(20)));
        assert_eq!(kv[2], ("general.sampling.temp".into(), Value::F32(0.6)));
        assert_eq!(kv[3], ("general.name".into(), Value::string("X")));
    }
}

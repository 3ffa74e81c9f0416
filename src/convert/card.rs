//! README.md front matter: the YAML block between the first two `---` lines of a model
//! card, read the way gguf-py's `Metadata.load_model_card` reads it.
//!
//! Model cards use a small part of YAML, so this is a small reader of that part rather
//! than a YAML dependency: top-level `key: value` pairs whose values are scalars (plain,
//! single- or double-quoted), flow lists (`[a, b]`), block lists (`- item`), lists of
//! one-level maps (`- name: x`), and `|`/`>` block scalars. Anything deeper (a nested
//! map such as `model-index`) is skipped and its key left out. Scalars stay strings:
//! every key convert takes from a card is a string or a list of strings.

use serde_json::{Map, Value as Json};

/// Largest README read (front matter is at its start; the rest is ignored).
pub const MAX_CARD_BYTES: usize = 1 << 20;

/// The front matter of a model card as a JSON object (empty when there is none).
pub fn front_matter(text: &str) -> Map<String, Json> {
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return Map::new();
    }
    // The same text fix-ups as gguf-py: tabs become two spaces.
    let body: Vec<String> = lines
        .take_while(|l| *l != "---")
        .map(|l| l.replace('\t', "  "))
        .collect();
    parse_block(&body)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn parse_block(lines: &[String]) -> Map<String, Json> {
    let mut out = Map::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        i += 1;
        if is_blank(line) || indent(line) > 0 {
            continue;
        }
        let Some((key, rest)) = split_key(line) else {
            continue;
        };
        // The lines that belong to this key: more indented, or list items at column 0.
        let start = i;
        while i < lines.len()
            && (is_blank(&lines[i])
                || indent(&lines[i]) > 0
                || lines[i].trim_start().starts_with("- ")
                || lines[i].trim() == "-")
        {
            i += 1;
        }
        let child = &lines[start..i];
        let value = match rest.trim() {
            "" => parse_nested(child),
            r @ ("|" | "|-" | "|+" | ">" | ">-" | ">+") => Some(block_scalar(r, child)),
            r => Some(scalar_or_flow(r)),
        };
        if let Some(v) = value {
            out.insert(key.to_string(), v);
        }
    }
    out
}

/// `key: rest` at the start of a line (the key may be quoted).
fn split_key(line: &str) -> Option<(String, &str)> {
    let t = line.trim_start();
    if let Some(q) = t.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = t[1..].find(q)? + 1;
        let rest = t[end + 1..].trim_start().strip_prefix(':')?;
        return Some((t[1..end].to_string(), rest));
    }
    let pos = t
        .find(": ")
        .or_else(|| t.ends_with(':').then(|| t.len() - 1))?;
    Some((t[..pos].trim_end().to_string(), &t[pos + 1..]))
}

/// The value of a key with nothing after its colon: a block list, or (unsupported)
/// a nested map.
fn parse_nested(child: &[String]) -> Option<Json> {
    let items: Vec<&String> = child.iter().filter(|l| !is_blank(l)).collect();
    let first = items.first()?;
    let base = indent(first);
    if !first.trim_start().starts_with('-') {
        return None; // a nested map: not used by convert's keys we read
    }
    let mut list = Vec::new();
    let mut k = 0;
    while k < items.len() {
        let line = items[k];
        k += 1;
        if indent(line) != base || !line.trim_start().starts_with('-') {
            continue;
        }
        let item = line.trim_start()[1..].trim_start();
        if let Some((key, rest)) = split_key(item) {
            // A map item: `- key: value` and its more-indented continuation lines.
            let mut map = Map::new();
            map.insert(key, scalar_or_flow(rest.trim()));
            while k < items.len() && indent(items[k]) > base {
                if let Some((k2, r2)) = split_key(items[k]) {
                    map.insert(k2, scalar_or_flow(r2.trim()));
                }
                k += 1;
            }
            list.push(Json::Object(map));
            continue;
        }
        list.push(scalar_or_flow(item));
    }
    Some(Json::Array(list))
}

fn block_scalar(style: &str, child: &[String]) -> Json {
    let lines: Vec<&str> = child.iter().map(|l| l.trim()).collect();
    let text = if style.starts_with('|') {
        lines.join("\n")
    } else {
        lines
            .iter()
            .filter(|l| !l.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = text.trim_end_matches('\n');
    Json::String(if style.ends_with('-') {
        text.to_string()
    } else {
        format!("{text}\n")
    })
}

fn scalar_or_flow(raw: &str) -> Json {
    let raw = strip_comment(raw.trim());
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return Json::Array(
            split_flow(inner)
                .into_iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Json::String(unquote(s.trim())))
                .collect(),
        );
    }
    Json::String(unquote(raw))
}

/// Splits a flow list's inside on commas outside quotes.
fn split_flow(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quote) = (0, None);
    for (i, c) in inner.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
}

/// Drops a ` # comment` after an unquoted scalar.
fn strip_comment(raw: &str) -> &str {
    if raw.starts_with(['"', '\'']) {
        return raw;
    }
    match raw.find(" #") {
        Some(p) => raw[..p].trim_end(),
        None => raw,
    }
}

fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        let inner = &s[1..s.len() - 1];
        return inner
            .replace("\\\"", "\"")
            .replace("\\n", "\n")
            .replace("\\\\", "\\");
    }
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        return s[1..s.len() - 1].replace("''", "'");
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_keys_model_cards_use() {
        let card = "---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\ntags: [a, \"b c\"]\n\
                    pipeline_tag: text-generation # why\nbase_model:\n  - org/Model-7B\n\
                    datasets:\n- name: D\n  url: https://x\nmodel-index:\n  - name: m\n    results: []\n\
                    description: |\n  line one\n  line two\nname: 'It''s'\n---\n# Title\nlicense: no\n";
        let m = front_matter(card);
        assert_eq!(m["license"], json!("apache-2.0"));
        assert_eq!(m["language"], json!(["en", "fr"]));
        assert_eq!(m["tags"], json!(["a", "b c"]));
        assert_eq!(m["pipeline_tag"], json!("text-generation"));
        assert_eq!(m["base_model"], json!(["org/Model-7B"]));
        assert_eq!(m["datasets"], json!([{"name": "D", "url": "https://x"}]));
        assert_eq!(m["description"], json!("line one\nline two\n"));
        assert_eq!(m["name"], json!("It's"));
        assert_eq!(m["model-index"], json!([{"name": "m", "results": []}]));
    }

    #[test]
    fn no_front_matter_is_empty() {
        assert!(front_matter("# Title\n---\nlicense: x\n---\n").is_empty());
        assert!(front_matter("").is_empty());
        assert!(front_matter("---\n").is_empty());
    }
}

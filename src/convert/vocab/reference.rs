//! A check against the real `convert_hf_to_gguf.py` (run by hand; CI's whole-file
//! comparison lives in tests/cli/convert.rs): for each `FOLDER=REFERENCE.gguf` in
//! `QFORGE_VOCAB_REF` (`;`-separated), the tokenizer keys this module produces for the
//! architecture the reference names must equal the reference's, value for value, in order.
//!
//! `FOLDER=!ARCH` says convert failed on that folder: ours must fail too (exit 2).
//! `scripts/vocab_cases.py OUT` makes the edge-case folders, runs convert on them and
//! writes the list to `OUT/QFORGE_VOCAB_REF`; tests/cli/convert.rs's folders work too.
//!
//! ```text
//! python convert_hf_to_gguf.py --vocab-only --outfile ref.gguf folder/
//! QFORGE_VOCAB_REF="folder=ref.gguf;bad=!llama" cargo test --lib vocab::reference -- --ignored
//! ```

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{arch, set_vocab_bert, Kv};
use crate::formats::gguf::{read_header, Value};

/// The keys `set_vocab` produces for `folder`, for the architecture `arch_name` (as in
/// `general.architecture`).
fn vocab_for(folder: &Path, arch_name: &str) -> Result<Kv> {
    let config = super::json::read(&folder.join("config.json"))?;
    let vocab_size = config.get("vocab_size").and_then(serde_json::Value::as_u64);
    match arch_name {
        "llama" => arch::set_vocab_llama(folder, vocab_size),
        "qwen2" | "qwen3" => arch::set_vocab_qwen2(folder, vocab_size),
        "gemma2" => arch::set_vocab_gemma2(folder, vocab_size),
        "gemma3" => arch::set_vocab_gemma3(folder, vocab_size),
        "phi3" => arch::set_vocab_phi3(folder, vocab_size),
        "bert" => {
            let types = config
                .get("type_vocab_size")
                .and_then(serde_json::Value::as_u64);
            set_vocab_bert(folder, vocab_size, types.unwrap_or(1) as u32)
        }
        other => bail!("no set_vocab for architecture {other}"),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Array(ty, items) => {
            format!("{ty:?}[{}] {:?}", items.len(), &items[..items.len().min(4)])
        }
        Value::String(s) => format!("{:?}", String::from_utf8_lossy(&s[..s.len().min(80)])),
        other => format!("{other:?}"),
    }
}

/// Compares one folder with its reference GGUF; the differences, one per line.
pub fn compare(folder: &Path, reference: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(reference).with_context(|| reference.display().to_string())?;
    let header = read_header(&bytes)?;
    let arch_name = header
        .metadata
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.as_str())
        .context("reference has no general.architecture")?
        .into_owned();
    let ours = vocab_for(folder, &arch_name)?;
    let theirs: Vec<&(String, Value)> = header
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.") || ours.iter().any(|(o, _)| o == k))
        .collect();
    let mut diffs = Vec::new();
    let our_keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    let their_keys: Vec<&str> = theirs.iter().map(|(k, _)| k.as_str()).collect();
    if our_keys != their_keys {
        diffs.push(format!(
            "key order: ours {our_keys:?}\n  theirs {their_keys:?}"
        ));
    }
    for (k, v) in theirs {
        match ours.iter().find(|(o, _)| o == k) {
            None => {}
            Some((_, mine)) if mine == v => {}
            Some((_, mine)) => {
                let detail = match (mine, v) {
                    (Value::Array(_, a), Value::Array(_, b)) if a.len() == b.len() => {
                        let i = (0..a.len()).find(|&i| a[i] != b[i]).unwrap_or(0);
                        format!(
                            "first difference at [{i}]: ours {:?} theirs {:?}",
                            a[i], b[i]
                        )
                    }
                    _ => format!("ours {} theirs {}", describe(mine), describe(v)),
                };
                diffs.push(format!("{k}: {detail}"));
            }
        }
    }
    Ok(diffs)
}

#[test]
#[ignore = "needs QFORGE_VOCAB_REF: folders and the GGUFs convert_hf_to_gguf.py made of them"]
fn matches_convert_hf_to_gguf() {
    let spec = std::env::var("QFORGE_VOCAB_REF").expect("QFORGE_VOCAB_REF=folder=ref.gguf;...");
    let mut failures = Vec::new();
    for pair in spec.split(';').filter(|p| !p.is_empty()) {
        let (folder, reference) = pair.split_once('=').expect("FOLDER=REFERENCE.gguf");
        if let Some(arch_name) = reference.strip_prefix('!') {
            match vocab_for(Path::new(folder), arch_name) {
                Err(e) if crate::error::exit_code(&e) == 2 => {
                    eprintln!(
                        "{folder}: fails as convert does: {}",
                        crate::error::one_line(&e)
                    )
                }
                Err(e) => failures.push(format!("{folder}: fails, but not with exit 2: {e:#}")),
                Ok(_) => failures.push(format!("{folder}: convert fails, ours does not")),
            }
            continue;
        }
        match compare(Path::new(folder), Path::new(reference)) {
            Ok(diffs) if diffs.is_empty() => eprintln!("{folder}: identical"),
            Ok(diffs) => failures.push(format!("{folder}:\n  {}", diffs.join("\n  "))),
            Err(e) => failures.push(format!("{folder}: error: {e:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

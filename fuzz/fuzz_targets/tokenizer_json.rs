//! tokenizer.json readers (`qforge::convert::vocab`): the input is written as a folder's
//! tokenizer.json (and, from the same bytes, its tokenizer_config.json and config.json),
//! then every routine that reads it runs. Any bytes give `Ok` or `Err`, never a panic;
//! on `Ok` the token list and the type list have one entry per id.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qforge::convert::vocab::{self, SpecialVocab};
use qforge::formats::gguf::Value;

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qforge-fuzz-tokenizer-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn len_of(kv: &[(String, Value)], key: &str) -> Option<usize> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| match v {
        Value::Array(_, items) => items.len(),
        _ => panic!("{key} is not an array"),
    })
}

fn check<E>(kv: Result<vocab::Kv, E>) {
    if let Ok(kv) = kv {
        assert_eq!(len_of(&kv, "tokenizer.ggml.tokens"), len_of(&kv, "tokenizer.ggml.token_type"));
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    // The first byte picks which companion files also hold the input.
    let (flags, body) = data.split_first().unwrap_or((&0, data));
    std::fs::write(dir.join("tokenizer.json"), body).unwrap();
    for (bit, name) in [(1, "tokenizer_config.json"), (2, "config.json"), (4, "merges.txt")] {
        let path = dir.join(name);
        if flags & bit != 0 {
            std::fs::write(&path, body).unwrap();
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = SpecialVocab::load(dir, true, None, None).map(|sv| sv.add_to(&mut vocab::KvList::new()));
    check(vocab::set_vocab_gpt2(dir, None));
    if let Ok((tokens, types)) = vocab::get_vocab_base_tokens(dir, None) {
        assert_eq!(tokens.len(), types.len());
    }
    check(vocab::set_vocab_bert(dir, Some(64), 2));
    check(vocab::set_vocab_llama_hf(dir));
});

//! Hostile tokenizer folders: structural mutations of real tokenizer files (a value swapped
//! for one of another type, an id pushed out of range) must give `Ok` or an exit-2 error,
//! never a panic. A cheap, deterministic complement to the cargo-fuzz targets.

use std::path::Path;

use serde_json::{json, Value};

use super::{
    arch, get_vocab_base_tokens, proto, set_vocab_bert, set_vocab_gpt2, set_vocab_llama_hf,
    SpecialVocab,
};

const TINY_BPE: &str = include_str!("../../../fixtures/tokenizers/tiny-bpe.tokenizer.json");
const SPM: &[u8] = include_bytes!("../../../fixtures/tokenizers/spm-bpe.model");

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn replacement(rng: &mut Rng) -> Value {
    let choices = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(4_000_000_000u64),
        json!(1.5),
        json!(""),
        json!("<|im_start|>"),
        json!([]),
        json!([["a", "b"]]),
        json!({}),
        json!({"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}),
        json!({"SpecialToken": {"id": "<|endoftext|>"}}),
    ];
    choices[rng.below(choices.len())].clone()
}

/// Replaces one node of `v`, chosen by walking down at random.
fn mutate(v: &mut Value, rng: &mut Rng, depth: u32) {
    let stop = depth > 0 && rng.below(3) == 0;
    match v {
        Value::Object(map) if !map.is_empty() && !stop => {
            let key = map.keys().nth(rng.below(map.len())).unwrap().clone();
            mutate(map.get_mut(&key).unwrap(), rng, depth + 1);
        }
        Value::Array(list) if !list.is_empty() && !stop => {
            let i = rng.below(list.len().min(8));
            mutate(&mut list[i], rng, depth + 1);
        }
        _ => *v = replacement(rng),
    }
}

fn run_all(dir: &Path) {
    let results = [
        set_vocab_gpt2(dir, None),
        set_vocab_bert(dir, Some(400), 2),
        set_vocab_llama_hf(dir),
        arch::set_vocab_llama(dir, Some(400)),
        arch::set_vocab_phi3(dir, None),
    ];
    for r in results {
        if let Err(e) = r {
            assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        }
    }
    match get_vocab_base_tokens(dir, Some(400)) {
        Ok((tokens, types)) => assert_eq!(tokens.len(), types.len()),
        Err(e) => assert_eq!(crate::error::exit_code(&e), 2, "{e:#}"),
    }
    let _ = SpecialVocab::load(dir, true, None, Some(10));
}

#[test]
fn mutated_tokenizer_folders_never_panic() {
    let base: Value = serde_json::from_str(TINY_BPE).unwrap();
    let config = json!({
        "tokenizer_class": "LlamaTokenizerFast", "bos_token": "<|im_start|>",
        "add_bos_token": true, "chat_template": "x",
        "added_tokens_decoder": {"0": {"content": "<|endoftext|>", "special": true}}
    });
    let model_config = json!({"bos_token_id": 1, "eos_token_id": [0, 1], "vocab_size": 400});
    let mut rng = Rng(7);
    for round in 0..120 {
        let dir = tempfile::tempdir().unwrap();
        let (mut tok, mut cfg, mut mcfg) = (base.clone(), config.clone(), model_config.clone());
        for _ in 0..1 + rng.below(3) {
            match rng.below(3) {
                0 => mutate(&mut tok, &mut rng, 0),
                1 => mutate(&mut cfg, &mut rng, 0),
                _ => mutate(&mut mcfg, &mut rng, 0),
            }
        }
        std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        std::fs::write(dir.path().join("config.json"), mcfg.to_string()).unwrap();
        if round % 2 == 0 {
            std::fs::write(dir.path().join("tokenizer.model"), SPM).unwrap();
        }
        run_all(dir.path());
    }
}

#[test]
fn corrupted_sentencepiece_models_never_panic() {
    let mut rng = Rng(11);
    for _ in 0..2000 {
        let mut bytes = SPM.to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        let cut = bytes.len() - rng.below(64);
        if let Err(e) = proto::parse_model(&bytes[..cut]) {
            assert_eq!(crate::error::exit_code(&e), 2);
        }
    }
}

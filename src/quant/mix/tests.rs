//! Tests of the mix rules and the planner.

use super::names::parse_blk;
use super::*;
use crate::formats::ggml_type::GgmlType;
use regex::Regex;
use GgmlType as T;

/// Layers of a 32-layer model that `use_more_bits` picks, worked out by hand:
/// i < 4, i >= 28, or (i - 4) % 3 == 2.
const MORE_BITS_32: &[u32] = &[0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31];

/// A llama-style tensor list in GGUF names and ggml order (innermost first).
fn llama_like(
    n_layer: u32,
    hidden: u64,
    ff: u64,
    kv: u64,
    vocab: u64,
    tied: bool,
) -> Vec<(String, Vec<u64>)> {
    let mut t = vec![("token_embd.weight".to_string(), vec![hidden, vocab])];
    for i in 0..n_layer {
        let b = |s: &str| format!("blk.{i}.{s}");
        t.push((b("attn_norm.weight"), vec![hidden]));
        t.push((b("attn_q.weight"), vec![hidden, hidden]));
        t.push((b("attn_k.weight"), vec![hidden, kv]));
        t.push((b("attn_v.weight"), vec![hidden, kv]));
        t.push((b("attn_output.weight"), vec![hidden, hidden]));
        t.push((b("ffn_norm.weight"), vec![hidden]));
        t.push((b("ffn_gate.weight"), vec![hidden, ff]));
        t.push((b("ffn_up.weight"), vec![hidden, ff]));
        t.push((b("ffn_down.weight"), vec![ff, hidden]));
    }
    t.push(("output_norm.weight".to_string(), vec![hidden]));
    if !tied {
        t.push(("output.weight".to_string(), vec![hidden, vocab]));
    }
    t
}

fn facts(arch: &str, n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> ModelFacts {
    ModelFacts {
        arch: arch.to_string(),
        n_layer,
        n_head,
        n_head_kv,
        n_expert,
        llm_type_70b: None,
    }
}

fn llama7b() -> (ModelFacts, Vec<(String, Vec<u64>)>) {
    (
        facts("llama", 32, 32, 32, 0),
        llama_like(32, 4096, 11008, 4096, 32000, false),
    )
}

fn llama3_8b() -> (ModelFacts, Vec<(String, Vec<u64>)>) {
    (
        facts("llama", 32, 32, 8, 0),
        llama_like(32, 4096, 14336, 1024, 128256, false),
    )
}

/// Runs the planner over the list; returns (name, Some(type) or None for copied).
fn run(
    mix: Mix,
    f: &ModelFacts,
    opts: Options,
    t: &[(String, Vec<u64>)],
) -> Vec<(String, Option<GgmlType>)> {
    let choices = plan(mix, f.clone(), opts, t).expect("plan");
    t.iter()
        .zip(choices)
        .map(|((n, _), c)| (n.clone(), c.target()))
        .collect()
}

fn layer_of(name: &str) -> Option<u32> {
    parse_blk(name).map(|b| b as u32)
}

/// Checks every tensor of `t` against `expect(name, layer)`; norms, routers and other
/// 1-D tensors must be copied.
fn check(
    mix: Mix,
    f: &ModelFacts,
    opts: Options,
    t: &[(String, Vec<u64>)],
    expect: impl Fn(&str, Option<u32>) -> GgmlType,
) {
    for ((name, got), (_, ne)) in run(mix, f, opts, t).into_iter().zip(t) {
        if name.ends_with("_norm.weight") || name.contains("ffn_gate_inp") || n_dims(ne) < 2 {
            assert_eq!(got, None, "{mix} {name}");
        } else {
            assert_eq!(got, Some(expect(&name, layer_of(&name))), "{mix} {name}");
        }
    }
}

fn is(name: &str, part: &str) -> bool {
    name.contains(part)
}

#[test]
fn names_and_file_types() {
    assert_eq!(Mix::from_name("q4_k_m"), Some(Mix::Q4_K_M));
    assert_eq!(Mix::from_name("Q4_K"), Some(Mix::Q4_K_M));
    assert_eq!(Mix::from_name("q3_k"), Some(Mix::Q3_K_M));
    assert_eq!(Mix::from_name("Q5_K"), Some(Mix::Q5_K_M));
    assert_eq!(Mix::from_name("bf16"), Some(Mix::BF16));
    assert_eq!(Mix::from_name("15"), Some(Mix::Q4_K_M));
    assert_eq!(Mix::from_name("iq2_xs"), Some(Mix::IQ2_XS));
    assert_eq!(Mix::from_name("29"), Some(Mix::IQ2_M));
    assert_eq!(Mix::from_name("Q8_K"), None);
    let expected = [
        (Mix::F32, 0),
        (Mix::F16, 1),
        (Mix::Q4_0, 2),
        (Mix::Q4_1, 3),
        (Mix::Q8_0, 7),
        (Mix::Q5_0, 8),
        (Mix::Q5_1, 9),
        (Mix::Q2_K, 10),
        (Mix::Q3_K_S, 11),
        (Mix::Q3_K_M, 12),
        (Mix::Q3_K_L, 13),
        (Mix::Q4_K_S, 14),
        (Mix::Q4_K_M, 15),
        (Mix::Q5_K_S, 16),
        (Mix::Q5_K_M, 17),
        (Mix::Q6_K, 18),
        (Mix::IQ2_XXS, 19),
        (Mix::IQ2_XS, 20),
        (Mix::Q2_K_S, 21),
        (Mix::IQ1_S, 24),
        (Mix::IQ4_NL, 25),
        (Mix::IQ4_XS, 30),
        (Mix::IQ2_S, 28),
        (Mix::IQ2_M, 29),
        (Mix::IQ1_M, 31),
        (Mix::IQ3_XS, 22),
        (Mix::IQ3_XXS, 23),
        (Mix::IQ3_S, 26),
        (Mix::IQ3_M, 27),
        (Mix::BF16, 32),
        (Mix::TQ1_0, 36),
        (Mix::TQ2_0, 37),
        (Mix::MXFP4_MOE, 38),
        (Mix::Q1_0, 40),
        (Mix::Q2_0, 41),
    ];
    // COPY shares F32's nominal ftype 0 (llama-quantize lists it after F32 so that 0
    // means F32).
    assert_eq!(expected.len() + 1, Mix::ALL.len());
    assert_eq!(
        (Mix::COPY.file_type(), Mix::from_name("copy")),
        (0, Some(Mix::COPY))
    );
    for (m, ft) in expected {
        assert_eq!(m.file_type(), ft, "{m}");
        assert_eq!(Mix::from_file_type(ft), Some(m));
        assert_eq!(Mix::from_name(&m.name().to_lowercase()), Some(m));
    }
    assert_eq!(Mix::Q3_K_L.base_type(), T::Q3_K);
    assert_eq!(Mix::Q2_K_S.base_type(), T::Q2_K);
    assert_eq!(Mix::IQ4_NL.base_type(), T::IQ4_NL);
}

#[test]
fn use_more_bits_matches_hand_worked_layers() {
    let got: Vec<u32> = (0..32).filter(|&i| use_more_bits(i as i64, 32)).collect();
    assert_eq!(got, MORE_BITS_32);
    // 1 layer: 1/8 == 0, 7/8 == 0, so layer 0 is ">= 7n/8".
    assert!(use_more_bits(0, 1));
    // 80 layers: 10..70, every third from 12.
    let got: Vec<i64> = (0..80).filter(|&i| use_more_bits(i, 80)).collect();
    let mut want: Vec<i64> = (0..10).chain(70..80).collect();
    want.extend((12..70).step_by(3));
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn q4_k_m_llama7b() {
    let (f, t) = llama7b();
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
        let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
        if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
            T::Q6_K
        } else {
            T::Q4_K // token_embd stays at the base type
        }
    });
}

#[test]
fn q4_k_s_llama7b() {
    let (f, t) = llama7b();
    check(Mix::Q4_K_S, &f, Options::default(), &t, |n, l| {
        match (n, l) {
            ("output.weight", _) => T::Q6_K,
            (n, Some(l)) if (is(n, "attn_v") || is(n, "ffn_down")) && l < 4 => T::Q5_K,
            _ => T::Q4_K,
        }
    });
}

#[test]
fn q3_k_m_llama7b() {
    let (f, t) = llama7b();
    check(Mix::Q3_K_M, &f, Options::default(), &t, |n, l| {
        let l = l.unwrap_or(0);
        if n == "output.weight" {
            T::Q6_K
        } else if is(n, "attn_v") || is(n, "ffn_down") {
            // attn_v: first 2 counted; ffn_down: layer < 32/16 = 2.
            if l < 2 {
                T::Q5_K
            } else {
                T::Q4_K
            }
        } else if is(n, "attn_output") {
            T::Q4_K
        } else {
            T::Q3_K
        }
    });
}

#[test]
fn q3_k_l_and_q3_k_s_llama7b() {
    let (f, t) = llama7b();
    check(Mix::Q3_K_L, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
            T::Q5_K
        } else {
            T::Q3_K
        }
    });
    check(Mix::Q3_K_S, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else {
            T::Q3_K
        }
    });
}

#[test]
fn q5_k_m_and_q5_k_s_llama7b() {
    let (f, t) = llama7b();
    check(Mix::Q5_K_M, &f, Options::default(), &t, |n, l| {
        let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
        if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
            T::Q6_K
        } else {
            T::Q5_K
        }
    });
    check(Mix::Q5_K_S, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else {
            T::Q5_K
        }
    });
}

#[test]
fn q2_k_llama7b_mha() {
    let (f, t) = llama7b();
    check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
            T::Q3_K // attn_v: n_gqa 1 < 4
        } else {
            T::Q2_K
        }
    });
}

#[test]
fn q6_k_q8_0_q4_0_f16_llama7b() {
    let (f, t) = llama7b();
    check(Mix::Q6_K, &f, Options::default(), &t, |_, _| T::Q6_K);
    check(Mix::Q8_0, &f, Options::default(), &t, |_, _| T::Q8_0);
    check(Mix::Q4_0, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else {
            T::Q4_0
        }
    });
    // With an imatrix the first eighth of ffn_down goes to Q4_1 (Q5_0 -> Q5_1).
    let opts = Options {
        has_imatrix: true,
        ..Options::default()
    };
    check(Mix::Q4_0, &f, opts.clone(), &t, |n, l| match (n, l) {
        ("output.weight", _) => T::Q6_K,
        (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q4_1,
        _ => T::Q4_0,
    });
    check(Mix::Q5_0, &f, opts, &t, |n, l| match (n, l) {
        ("output.weight", _) => T::Q6_K,
        (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q5_1,
        _ => T::Q5_0,
    });
    check(Mix::Q4_1, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else {
            T::Q4_1
        }
    });
    check(Mix::F16, &f, Options::default(), &t, |_, _| T::F16);
    check(Mix::BF16, &f, Options::default(), &t, |_, _| T::BF16);
}

#[test]
fn gqa_llama3_8b() {
    let (f, t) = llama3_8b();
    assert_eq!(f.n_gqa(), 4);
    // Q4_K_M, Q4_K_S, Q3_K_M do not look at GQA: same as 7B.
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
        let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
        if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
            T::Q6_K
        } else {
            T::Q4_K
        }
    });
    check(Mix::Q3_K_M, &f, Options::default(), &t, |n, l| {
        let l = l.unwrap_or(0);
        if n == "output.weight" {
            T::Q6_K
        } else if (is(n, "attn_v") || is(n, "ffn_down")) && l < 2 {
            T::Q5_K
        } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
            T::Q4_K
        } else {
            T::Q3_K
        }
    });
    // Q2_K: attn_v gets Q4_K with n_gqa >= 4.
    check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q6_K
        } else if is(n, "attn_v") {
            T::Q4_K
        } else if is(n, "ffn_down") || is(n, "attn_output") {
            T::Q3_K
        } else {
            T::Q2_K
        }
    });
    // IQ4_NL: attn_v Q5_K with GQA; ffn_down Q5_K on the first eighth without imatrix.
    check(Mix::IQ4_NL, &f, Options::default(), &t, |n, l| {
        match (n, l) {
            ("output.weight", _) => T::Q6_K,
            (n, _) if is(n, "attn_v") => T::Q5_K,
            (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q5_K,
            _ => T::IQ4_NL,
        }
    });
    // Q2_K_S: needs an imatrix; with one, attn_v Q4_K and ffn_down Q4_K on layers < 4.
    let err = plan(Mix::Q2_K_S, f.clone(), Options::default(), &t).unwrap_err();
    assert_eq!(
        err,
        MixError::NeedsImatrix {
            name: "blk.0.attn_q.weight".into(),
            ty: T::Q2_K
        }
    );
    let opts = Options {
        has_imatrix: true,
        ..Options::default()
    };
    check(Mix::Q2_K_S, &f, opts, &t, |n, l| match (n, l) {
        ("output.weight", _) => T::Q6_K,
        (n, _) if is(n, "attn_v") => T::Q4_K,
        (n, Some(l)) if is(n, "ffn_down") && l < 4 => T::Q4_K,
        _ => T::Q2_K,
    });
}

#[test]
fn llama_70b_bumps_attn_v() {
    let f = facts("llama", 80, 64, 8, 0);
    assert!(f.is_70b());
    assert!(!facts("llama", 80, 64, 64, 0).is_70b()); // LLaMA-1 65B
    assert!(facts("qwen2", 80, 64, 8, 0).is_70b());
    let t = llama_like(80, 8192, 28672, 1024, 128256, false);
    let more80 = |l: u32| use_more_bits(l as i64, 80);
    // Q3_K_M: Q5_K for the first two, Q4_K bumped to Q5_K: all Q5_K.
    // Q4_K_M: Q6_K on more-bits layers, Q4_K bumped to Q5_K elsewhere.
    // Q2_K: n_gqa 8 gives Q4_K, bumped to Q5_K.
    type Rule = fn(bool) -> GgmlType;
    let rules: [(Mix, Rule); 5] = [
        (Mix::Q3_K_M, |_| T::Q5_K),
        (Mix::Q4_K_M, |more| if more { T::Q6_K } else { T::Q5_K }),
        (Mix::Q2_K, |_| T::Q5_K),
        (Mix::Q3_K_L, |_| T::Q5_K),
        (Mix::Q6_K, |_| T::Q6_K),
    ];
    for (mix, rule) in rules {
        for (name, got) in run(mix, &f, Options::default(), &t) {
            if is(&name, "attn_v") {
                let l = layer_of(&name).unwrap();
                assert_eq!(got, Some(rule(more80(l))), "{mix} {name}");
            }
        }
    }
}

#[test]
fn tiny_one_layer_tied_embeddings() {
    // hidden 256, ff 768, 4 heads, no output.weight: token_embd plays the output role.
    let f = facts("llama", 1, 4, 4, 0);
    let t = llama_like(1, 256, 768, 256, 1000, true);
    let planner = Planner::new(Mix::Q4_K_M, f.clone(), Options::default(), &t);
    assert!(planner.has_tied_embeddings());
    assert_eq!(planner.n_attention_wv(), 1);
    // n_layer 1: use_more_bits(0, 1) is true.
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" || is(n, "attn_v") || is(n, "ffn_down") {
            T::Q6_K
        } else {
            T::Q4_K
        }
    });
    // Q4_K_S: attn_v counter 0 < 4 -> Q5_K; ffn_down 0 < 1/8 is false -> Q4_K.
    check(Mix::Q4_K_S, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" {
            T::Q6_K
        } else if is(n, "attn_v") {
            T::Q5_K
        } else {
            T::Q4_K
        }
    });
    // Q3_K_M: attn_v Q5_K (counter < 2); ffn_down 0 < 1/16 false -> Q4_K.
    check(Mix::Q3_K_M, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" {
            T::Q6_K
        } else if is(n, "attn_v") {
            T::Q5_K
        } else if is(n, "ffn_down") || is(n, "attn_output") {
            T::Q4_K
        } else {
            T::Q3_K
        }
    });
    check(Mix::Q3_K_L, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" {
            T::Q6_K
        } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
            T::Q5_K
        } else {
            T::Q3_K
        }
    });
    check(Mix::Q5_K_M, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" || is(n, "attn_v") || is(n, "ffn_down") {
            T::Q6_K
        } else {
            T::Q5_K
        }
    });
    check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" {
            T::Q6_K
        } else if is(n, "attn_v") || is(n, "ffn_down") || is(n, "attn_output") {
            T::Q3_K
        } else {
            T::Q2_K
        }
    });
    check(Mix::Q6_K, &f, Options::default(), &t, |_, _| T::Q6_K);
    check(Mix::Q8_0, &f, Options::default(), &t, |_, _| T::Q8_0);
    // Legacy mixes also give tied embeddings Q6_K.
    check(Mix::Q4_0, &f, Options::default(), &t, |n, _| {
        if n == "token_embd.weight" {
            T::Q6_K
        } else {
            T::Q4_0
        }
    });
    // --output-tensor-type reaches tied embeddings; --token-embedding-type wins over it.
    let opts = Options {
        output_tensor_type: Some(T::Q8_0),
        ..Options::default()
    };
    let out = run(Mix::Q4_K_M, &f, opts.clone(), &t);
    assert_eq!(out[0], ("token_embd.weight".into(), Some(T::Q8_0)));
    let opts = Options {
        token_embedding_type: Some(T::Q4_0),
        ..opts
    };
    let out = run(Mix::Q4_K_M, &f, opts, &t);
    assert_eq!(out[0], ("token_embd.weight".into(), Some(T::Q4_0)));
}

#[test]
fn one_d_and_non_weights_are_never_quantized() {
    let f = facts("llama", 1, 4, 4, 0);
    let t: Vec<(String, Vec<u64>)> = vec![
        ("blk.0.attn_norm.weight".into(), vec![256]),
        ("blk.0.attn_q.bias".into(), vec![256]),
        ("blk.0.attn_q.bias2d".into(), vec![256, 256]),
        ("blk.0.attn_v.weight".into(), vec![256, 1]), // [256, 1] has ggml n_dims 1
        ("blk.0.ffn_gate_inp.weight".into(), vec![256, 8]),
        ("blk.0.attn_q_norm.weight".into(), vec![64, 4]),
        ("position_embd.weight".into(), vec![256, 2048]),
        ("token_types.weight".into(), vec![256, 2]),
        ("blk.0.ssm_conv1d.weight".into(), vec![4, 256]),
        ("output.weight".into(), vec![256, 1000]),
    ];
    for mix in Mix::ALL {
        let choices = plan(*mix, f.clone(), Options::default(), &t).unwrap();
        for ((n, _), c) in t.iter().zip(&choices) {
            let want = n == "output.weight" && *mix != Mix::COPY;
            assert_eq!(c.quantize, want, "{mix} {n}: {}", c.reason);
        }
    }
    assert!(!should_quantize("blk.0.ffn_norm.weight", 1, false));
    assert!(!should_quantize("model.norm.weight", 1, false));
    assert!(should_quantize("output.weight", 2, false));
    assert!(!should_quantize("output.weight", 2, true));
    assert!(!should_quantize("lm_head.weight", 2, true));
    assert!(!should_quantize(
        "model.layers.0.block_sparse_moe.gate.weight",
        2,
        false
    ));
    assert_eq!(n_dims(&[4096, 1, 1, 1]), 1);
    assert_eq!(n_dims(&[4096, 1, 8]), 3);
    assert_eq!(n_dims(&[]), 1);
    // llama.cpp's size_t quirk: any 5-byte 2-D name passes the "ends in weight" test.
    assert!(should_quantize("abcde", 2, false));
    assert!(!should_quantize("abcdef", 2, false));
}

#[test]
fn leave_output_tensor_copies_output() {
    let (f, t) = llama7b();
    let opts = Options {
        leave_output_tensor: true,
        ..Options::default()
    };
    let out = run(Mix::Q4_K_M, &f, opts, &t);
    let (name, got) = out.last().unwrap();
    assert_eq!((name.as_str(), *got), ("output.weight", None));
    // Not tied: token_embd keeps the base type.
    assert_eq!(out[0].1, Some(T::Q4_K));
}

#[test]
fn forced_output_and_embedding_types() {
    let (f, t) = llama7b();
    let opts = Options {
        output_tensor_type: Some(T::Q8_0),
        token_embedding_type: Some(T::Q6_K),
        ..Options::default()
    };
    let out = run(Mix::Q4_K_M, &f, opts, &t);
    assert_eq!(out[0].1, Some(T::Q6_K));
    assert_eq!(out.last().unwrap().1, Some(T::Q8_0));
    // They apply even for F16 files and with --pure, and are not subject to overrides.
    let opts = Options {
        output_tensor_type: Some(T::Q8_0),
        pure: true,
        overrides: vec![(Regex::new("output").unwrap(), T::Q2_K)],
        ..Options::default()
    };
    let out = run(Mix::F16, &f, opts.clone(), &t);
    assert_eq!(out.last().unwrap().1, Some(T::Q8_0));
    let out = run(Mix::Q4_K_M, &f, opts, &t);
    assert_eq!(out.last().unwrap().1, Some(T::Q8_0));
    // A forced type that does not fit the row is an error (llama.cpp fails in ggml).
    let t = vec![("output.weight".to_string(), vec![4160u64, 1000])];
    let opts = Options {
        output_tensor_type: Some(T::Q4_K),
        ..Options::default()
    };
    let mut p = Planner::new(Mix::Q4_K_M, f.clone(), opts, &t);
    assert!(matches!(
        p.try_choose("output.weight", &[4160, 1000]),
        Err(MixError::ForcedTypeDoesNotFit { .. })
    ));
    let c = p.choose("output.weight", &[4160, 1000]);
    assert_eq!((c.ty, c.fallback_from), (T::Q5_0, Some(T::Q4_K)));
}

#[test]
fn overrides_first_match_wins_and_skip_counters() {
    let (f, t) = llama7b();
    let opts = Options {
        overrides: vec![
            (Regex::new(r"blk\.0\.attn_v").unwrap(), T::Q8_0),
            (Regex::new(r"blk\.0\.").unwrap(), T::Q2_K),
            (Regex::new(r"attn_q").unwrap(), T::Q6_K),
        ],
        ..Options::default()
    };
    let out = run(Mix::Q4_K_S, &f, opts, &t);
    let get = |n: &str| out.iter().find(|(m, _)| m == n).unwrap().1;
    assert_eq!(get("blk.0.attn_v.weight"), Some(T::Q8_0));
    assert_eq!(get("blk.0.attn_q.weight"), Some(T::Q2_K)); // earlier pattern wins
    assert_eq!(get("blk.0.ffn_down.weight"), Some(T::Q2_K));
    assert_eq!(get("blk.1.attn_q.weight"), Some(T::Q6_K));
    // An overridden tensor skips the rule and so does not advance llama.cpp's counters:
    // attn_v of layers 1..=4 see i_attention_wv 0..=3 and all get Q5_K.
    for l in 1..=4 {
        assert_eq!(
            get(&format!("blk.{l}.attn_v.weight")),
            Some(T::Q5_K),
            "layer {l}"
        );
    }
    assert_eq!(get("blk.5.attn_v.weight"), Some(T::Q4_K));
    // ffn_down of layer 0 overridden: layers 1..=4 get Q5_K (counter 0..=3).
    assert_eq!(get("blk.4.ffn_down.weight"), Some(T::Q5_K));
    assert_eq!(get("blk.5.ffn_down.weight"), Some(T::Q4_K));

    // Overrides are ignored for float mixes (llama.cpp only consults them for block
    // types), and still get the row-length fallback.
    let opts = Options {
        overrides: vec![(Regex::new("attn_q").unwrap(), T::Q4_K)],
        ..Options::default()
    };
    let out = run(Mix::F16, &f, opts.clone(), &t);
    assert!(out
        .iter()
        .all(|(n, ty)| n.ends_with("_norm.weight") || *ty == Some(T::F16)));
    let t2 = vec![("blk.0.attn_q.weight".to_string(), vec![4160u64, 4160])];
    let out = run(Mix::Q8_0, &f, opts, &t2);
    assert_eq!(out[0].1, Some(T::Q5_0));
}

#[test]
fn pure_uses_base_type_everywhere() {
    let (f, t) = llama7b();
    let opts = Options {
        pure: true,
        ..Options::default()
    };
    check(Mix::Q4_K_M, &f, opts.clone(), &t, |_, _| T::Q4_K);
    check(Mix::Q3_K_L, &f, opts.clone(), &t, |_, _| T::Q3_K);
    // Fallbacks still apply under --pure.
    let t = vec![(
        "blk.0.ffn_down.weight".to_string(),
        vec![14336u64 + 32, 4096],
    )];
    let out = run(Mix::Q4_K_M, &f, opts, &t);
    assert_eq!(out[0].1, Some(T::Q5_0));
}

#[test]
fn fallbacks_for_rows_not_multiple_of_256() {
    // hidden 4160 = 16*256 + 64 (a multiple of 32); ff 14336+32 = 14368.
    let f = facts("llama", 32, 32, 32, 0);
    let t = llama_like(32, 4160, 14368, 4160, 32000, false);
    let fb = |ty: GgmlType| fallback_type(ty).unwrap();
    assert_eq!(fb(T::Q4_K), T::Q5_0);
    assert_eq!(fb(T::Q5_K), T::Q5_1);
    assert_eq!(fb(T::Q6_K), T::Q8_0);
    assert_eq!(fb(T::Q2_K), T::Q4_0);
    assert_eq!(fb(T::Q3_K), T::Q4_0);
    assert_eq!(fb(T::IQ4_XS), T::IQ4_NL);
    assert_eq!(fallback_type(T::Q8_0), None);
    // Q4_K_M: every k-quant falls back; output picks Q8_0 directly (its row is not a
    // multiple of Q4_K's block), which is no fallback.
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
        let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
        if n == "output.weight" || ((is(n, "attn_v") || is(n, "ffn_down")) && more) {
            T::Q8_0
        } else {
            T::Q5_0
        }
    });
    let mut p = Planner::new(Mix::Q4_K_M, f.clone(), Options::default(), &t);
    let choices: Vec<Choice> = t
        .iter()
        .map(|(n, ne)| p.try_choose(n, ne).unwrap())
        .collect();
    let n_weights = choices.iter().filter(|c| c.quantize).count();
    assert_eq!(p.fallbacks(), n_weights - 1); // all but output.weight
    let out = choices.last().unwrap();
    assert_eq!(
        (out.ty, out.fallback_from, out.reason),
        (T::Q8_0, None, "mix: output")
    );
    let c = &choices[0];
    assert_eq!(c.fallback_from, Some(T::Q4_K));
    assert_eq!(
        c.reason,
        "fallback: Q4_K -> Q5_0 (row not a multiple of 256)"
    );
    // Q2_K / Q3_K fall back to Q4_0, Q5_K to Q5_1.
    check(Mix::Q2_K, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q8_0
        } else {
            T::Q4_0
        }
    });
    check(Mix::Q5_K_S, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q8_0
        } else {
            T::Q5_1
        }
    });
    // Legacy 32-element mixes fit these rows.
    check(Mix::Q4_0, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q8_0
        } else {
            T::Q4_0
        }
    });
}

#[test]
fn rows_not_multiple_of_32() {
    let f = facts("llama", 1, 4, 4, 0);
    let t = vec![("blk.0.attn_q.weight".to_string(), vec![4100u64, 4100])];
    // k-quant: fallback type does not fit either -> F16.
    for mix in [Mix::Q4_K_M, Mix::Q2_K, Mix::Q6_K, Mix::Q5_K_S] {
        let c = plan(mix, f.clone(), Options::default(), &t).unwrap()[0];
        assert_eq!(c.ty, T::F16, "{mix}");
        assert_eq!(c.reason, "fallback: F16 (row not a multiple of 32)");
    }
    // 32-element types have nothing smaller to go to: F16 (llama.cpp's default case).
    for mix in [
        Mix::Q4_0,
        Mix::Q4_1,
        Mix::Q5_0,
        Mix::Q5_1,
        Mix::Q8_0,
        Mix::IQ4_NL,
        Mix::MXFP4_MOE,
    ] {
        let c = plan(mix, f.clone(), Options::default(), &t).unwrap()[0];
        assert_eq!(c.ty, T::F16, "{mix}");
        assert_eq!(c.reason, "fallback: F16 (row not a multiple of 32)");
    }
    // Larger blocks without a fallback (Q1_0): llama.cpp aborts; choose() uses F16.
    let t1 = vec![("blk.0.attn_q.weight".to_string(), vec![576u64, 576])];
    let err = plan(Mix::Q1_0, f.clone(), Options::default(), &t1).unwrap_err();
    assert!(matches!(
        err,
        MixError::NoFallback {
            ncols: 576,
            ty: T::Q1_0,
            ..
        }
    ));
    let mut p = Planner::new(Mix::Q1_0, f.clone(), Options::default(), &t1);
    let c = p.choose("blk.0.attn_q.weight", &[576, 576]);
    assert_eq!((c.ty, c.fallback_from), (T::F16, Some(T::Q1_0)));
    // The other new block types fall back as llama.cpp's table says.
    for (mix, to) in [
        (Mix::Q2_0, T::Q4_0),
        (Mix::TQ1_0, T::Q4_0),
        (Mix::TQ2_0, T::Q4_0),
        (Mix::IQ4_XS, T::IQ4_NL),
    ] {
        let c = plan(
            mix,
            f.clone(),
            Options::default(),
            &[("blk.0.attn_q.weight", [96u64, 96])],
        )
        .unwrap()[0];
        assert_eq!(
            (c.ty, c.fallback_from),
            (to, Some(mix.base_type())),
            "{mix}"
        );
    }
    // Output row 4100: Q8_0 by the output rule, then F16.
    let t = vec![("output.weight".to_string(), vec![4100u64, 1000])];
    assert_eq!(
        plan(Mix::Q4_K_M, f.clone(), Options::default(), &t).unwrap()[0].ty,
        T::F16
    );
    // Float mixes never fall back.
    assert_eq!(
        plan(Mix::F16, f, Options::default(), &t).unwrap()[0].ty,
        T::F16
    );
}

#[test]
fn moe_rules_and_layer_parsing() {
    // Mixtral-like: 8 experts, merged 3-D expert tensors, router not quantized.
    let f = facts("llama", 32, 32, 8, 8);
    let mut t: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![4096, 32000])];
    for i in 0..32 {
        t.push((format!("blk.{i}.attn_q.weight"), vec![4096, 4096]));
        t.push((format!("blk.{i}.attn_k.weight"), vec![4096, 1024]));
        t.push((format!("blk.{i}.attn_v.weight"), vec![4096, 1024]));
        t.push((format!("blk.{i}.attn_output.weight"), vec![4096, 4096]));
        t.push((format!("blk.{i}.ffn_gate_inp.weight"), vec![4096, 8]));
        t.push((
            format!("blk.{i}.ffn_gate_exps.weight"),
            vec![4096, 14336, 8],
        ));
        t.push((format!("blk.{i}.ffn_up_exps.weight"), vec![4096, 14336, 8]));
        t.push((
            format!("blk.{i}.ffn_down_exps.weight"),
            vec![14336, 4096, 8],
        ));
    }
    // Layers out of order: the layer comes from the name, not the counter.
    // (layer 3 is a more-bits layer, layer 4 is not)
    t.swap(1 + 8 * 3 + 7, 1 + 8 * 4 + 7);
    t.push(("output.weight".into(), vec![4096, 32000]));
    assert!(!f.is_70b());
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
        let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
        if n == "output.weight" || (is(n, "ffn_down") && more) {
            T::Q6_K
        } else if is(n, "attn_v") || is(n, "attn_k") {
            T::Q8_0
        } else if is(n, "attn_output") {
            T::Q5_K
        } else {
            T::Q4_K
        }
    });
    let out = run(Mix::Q4_K_M, &f, Options::default(), &t);
    assert!(out
        .iter()
        .any(|(n, ty)| n == "blk.0.ffn_gate_inp.weight" && ty.is_none()));
    // An FFN tensor without blk.N in an MoE model: llama.cpp aborts.
    let t = vec![("ffn_down_exps.weight".to_string(), vec![14336u64, 4096, 8])];
    assert!(matches!(
        plan(Mix::Q4_K_M, f.clone(), Options::default(), &t),
        Err(MixError::BadLayer { .. })
    ));
    let t = vec![(
        "blk.32.ffn_up_exps.weight".to_string(),
        vec![4096u64, 14336, 8],
    )];
    assert!(plan(Mix::Q4_K_M, f, Options::default(), &t).is_err());
}

#[test]
fn fused_qkv_counts_as_attn_v() {
    // Phi-3-like: attn_qkv follows the attn_v rules in this llama.cpp revision.
    let f = facts("phi3", 32, 32, 32, 0);
    let mut t = vec![("token_embd.weight".to_string(), vec![3072u64, 32064])];
    for i in 0..32 {
        t.push((format!("blk.{i}.attn_qkv.weight"), vec![3072, 9216]));
        t.push((format!("blk.{i}.attn_output.weight"), vec![3072, 3072]));
        t.push((format!("blk.{i}.ffn_up.weight"), vec![3072, 16384]));
        t.push((format!("blk.{i}.ffn_down.weight"), vec![8192, 3072]));
    }
    t.push(("output.weight".to_string(), vec![3072, 32064]));
    assert_eq!(
        Planner::new(Mix::Q4_K_M, f.clone(), Options::default(), &t).n_attention_wv(),
        32
    );
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
        let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
        if n == "output.weight" || ((is(n, "attn_qkv") || is(n, "ffn_down")) && more) {
            T::Q6_K
        } else {
            T::Q4_K
        }
    });
}

#[test]
fn falcon_rules() {
    let f = facts("falcon", 32, 71, 1, 0);
    let mut t = vec![("token_embd.weight".to_string(), vec![4544u64, 65024])];
    for i in 0..32 {
        t.push((format!("blk.{i}.attn_qkv.weight"), vec![4544, 4672]));
        t.push((format!("blk.{i}.attn_output.weight"), vec![4544, 4544]));
        t.push((format!("blk.{i}.ffn_up.weight"), vec![4544, 18176]));
        t.push((format!("blk.{i}.ffn_down.weight"), vec![18176, 4544]));
    }
    t.push(("output.weight".to_string(), vec![4544, 65024]));
    // 4544 = 17*256 + 192: every 4544-row k-quant falls back. ffn_down rows are 18176
    // = 71*256: Q4_K_M's falcon rule gives Q6_K below 32/16 = 2, Q5_K on more-bits
    // layers, else Q4_K. attn_qkv is attn_v-like: Q6_K -> Q8_0 or Q4_K -> Q5_0.
    // output is always Q8_0 for falcon.
    check(Mix::Q4_K_M, &f, Options::default(), &t, |n, l| {
        let l = l.unwrap_or(0);
        let more = MORE_BITS_32.contains(&l);
        if n == "output.weight" {
            T::Q8_0
        } else if is(n, "ffn_down") {
            if l < 2 {
                T::Q6_K
            } else if more {
                T::Q5_K
            } else {
                T::Q4_K
            }
        } else if is(n, "attn_qkv") && more {
            T::Q8_0
        } else {
            T::Q5_0
        }
    });
    // Q3_K_L on falcon: ffn_down Q4_K, attn_output Q4_K -> Q5_0 (4544 rows).
    check(Mix::Q3_K_L, &f, Options::default(), &t, |n, _| {
        if n == "output.weight" {
            T::Q8_0
        } else if is(n, "ffn_down") {
            T::Q4_K
        } else if is(n, "attn_output") {
            T::Q5_0
        } else if is(n, "attn_qkv") {
            T::Q5_1 // Q5_K by the attn_v rule, then fallback
        } else {
            T::Q4_0 // Q3_K -> Q4_0
        }
    });
}

#[test]
fn hf_names_map_to_gguf_roles() {
    let cases = [
        ("model.embed_tokens.weight", Some("token_embd.weight")),
        ("lm_head.weight", Some("output.weight")),
        ("model.norm.weight", Some("output_norm.weight")),
        (
            "model.layers.7.input_layernorm.weight",
            Some("blk.7.attn_norm.weight"),
        ),
        (
            "model.layers.7.post_attention_layernorm.weight",
            Some("blk.7.ffn_norm.weight"),
        ),
        (
            "model.layers.7.self_attn.v_proj.weight",
            Some("blk.7.attn_v.weight"),
        ),
        (
            "model.layers.7.self_attn.q_proj.bias",
            Some("blk.7.attn_q.bias"),
        ),
        (
            "model.layers.7.self_attn.o_proj.weight",
            Some("blk.7.attn_output.weight"),
        ),
        (
            "model.layers.7.mlp.down_proj.weight",
            Some("blk.7.ffn_down.weight"),
        ),
        (
            "model.layers.7.mlp.experts.3.down_proj.weight",
            Some("blk.7.ffn_down.3.weight"),
        ),
        (
            "model.layers.7.block_sparse_moe.experts.3.w3.weight",
            Some("blk.7.ffn_up.3.weight"),
        ),
        (
            "model.layers.7.block_sparse_moe.gate.weight",
            Some("blk.7.ffn_gate_inp.weight"),
        ),
        (
            "model.language_model.layers.0.self_attn.k_proj.weight",
            Some("blk.0.attn_k.weight"),
        ),
        (
            "transformer.h.2.self_attention.query_key_value.weight",
            Some("blk.2.attn_qkv.weight"),
        ),
        (
            "transformer.h.2.mlp.dense_4h_to_h.weight",
            Some("blk.2.ffn_down.weight"),
        ),
        ("blk.7.attn_v.weight", None),
        ("model.layers.x.self_attn.v_proj.weight", None),
        ("model.layers.7.self_attn.rotary_emb.inv_freq", None),
    ];
    for (hf, gguf) in cases {
        assert_eq!(gguf_name(hf).as_deref(), gguf, "{hf}");
    }
    assert_eq!(
        canonical_role("model.layers.0.self_attn.v_proj.weight"),
        Role::AttnV
    );
    assert_eq!(canonical_role("lm_head.weight"), Role::Output);
    assert_eq!(
        canonical_role("model.layers.0.mlp.gate_proj.weight"),
        Role::FfnGate
    );
    assert_eq!(
        canonical_role("model.layers.0.mlp.up_proj.weight"),
        Role::FfnUp
    );
    assert_eq!(canonical_role("model.embed_tokens.weight"), Role::TokenEmbd);
}

/// The GGUF list rewritten with Hugging Face llama names.
fn to_hf(t: &[(String, Vec<u64>)]) -> Vec<(String, Vec<u64>)> {
    let map = |n: &str| -> String {
        match n {
            "token_embd.weight" => return "model.embed_tokens.weight".into(),
            "output.weight" => return "lm_head.weight".into(),
            "output_norm.weight" => return "model.norm.weight".into(),
            _ => {}
        }
        let l = layer_of(n).unwrap();
        let tail = n.split_once(&format!("blk.{l}.")).unwrap().1;
        let hf = match tail {
            "attn_norm.weight" => "input_layernorm.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            other => panic!("{other}"),
        };
        format!("model.layers.{l}.{hf}")
    };
    t.iter().map(|(n, ne)| (map(n), ne.clone())).collect()
}

#[test]
fn hf_names_get_the_same_choices() {
    for (f, t) in [llama7b(), llama3_8b()] {
        let hf = to_hf(&t);
        for tied in [false, true] {
            let (t, hf): (Vec<_>, Vec<_>) = t
                .iter()
                .cloned()
                .zip(hf.iter().cloned())
                .filter(|((n, _), _)| !tied || n != "output.weight")
                .unzip();
            for mix in Mix::ALL {
                let opts = Options {
                    has_imatrix: true,
                    ..Options::default()
                };
                let a = plan(*mix, f.clone(), opts.clone(), &t).unwrap();
                let b = plan(*mix, f.clone(), opts, &hf).unwrap();
                assert_eq!(a, b, "{mix} tied={tied}");
            }
        }
    }
    // Overrides match the HF name or the GGUF name.
    let (f, t) = llama7b();
    let hf = to_hf(&t);
    let opts = Options {
        overrides: vec![
            (Regex::new(r"v_proj").unwrap(), T::Q8_0),
            (Regex::new(r"blk\.3\.ffn_down").unwrap(), T::Q2_K),
        ],
        ..Options::default()
    };
    let out = run(Mix::Q4_K_M, &f, opts, &hf);
    let get = |n: &str| out.iter().find(|(m, _)| m == n).unwrap().1;
    assert_eq!(get("model.layers.5.self_attn.v_proj.weight"), Some(T::Q8_0));
    assert_eq!(get("model.layers.3.mlp.down_proj.weight"), Some(T::Q2_K));
    assert_eq!(get("lm_head.weight"), Some(T::Q6_K));
}

#[test]
fn n_layer_inferred_when_missing_and_hf_arch_names() {
    let (_, t) = llama7b();
    let p = Planner::new(Mix::Q4_K_M, ModelFacts::default(), Options::default(), &t);
    assert_eq!(p.n_layer(), 32);
    let m = facts("mistral", 80, 64, 8, 0);
    assert_eq!(m.llama_arch(), "llama");
    assert!(m.is_70b());
    assert_eq!(
        facts("RefinedWebModel", 32, 71, 1, 0).llama_arch(),
        "falcon"
    );
    let forced = ModelFacts {
        llm_type_70b: Some(true),
        ..facts("gemma", 10, 8, 8, 0)
    };
    assert!(forced.is_70b());
    assert_eq!(facts("llama", 32, 32, 0, 0).n_gqa(), 1);
}

#[test]
fn chosen_types_stay_within_qforge_codecs() {
    // qforge encodes every type llama.cpp's rules pick for the offered mixes.
    let shapes: &[(u64, u64)] = &[
        (4096, 11008),
        (4096, 14336),
        (4160, 14368),
        (4100, 4128),
        (256, 768),
    ];
    for &(hidden, ff) in shapes {
        for (arch, kv, n_expert) in [
            ("llama", 32, 0),
            ("llama", 8, 0),
            ("llama", 8, 8),
            ("falcon", 1, 0),
        ] {
            let f = facts(arch, 32, 32, kv, n_expert);
            let t = llama_like(32, hidden, ff, hidden / 4, 1000, false);
            for mix in Mix::ALL {
                for has_imatrix in [false, true] {
                    let opts = Options {
                        has_imatrix,
                        ..Options::default()
                    };
                    let mut p = Planner::new(*mix, f.clone(), opts, &t);
                    for (n, ne) in &t {
                        let c = p.choose(n, ne);
                        if c.quantize {
                            assert!(c.ty.codec().is_some(), "{mix} {n} {}", c.ty);
                            assert!(mix.possible_types().contains(&c.ty), "{mix} {n} {}", c.ty);
                            assert_eq!(ne[0] % c.ty.block_size(), 0, "{mix} {n}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn iq1_iq2_mixes_follow_llama_cpp() {
    // llama-quant.cpp's IQ1/IQ2 branch, written out for llama-7B (gqa 1) and llama-3-8B (gqa 4).
    let with_imatrix = || Options {
        has_imatrix: true,
        ..Options::default()
    };
    for (f, t) in [llama7b(), llama3_8b()] {
        let gqa4 = f.n_gqa() >= 4;
        for mix in [
            Mix::IQ2_XXS,
            Mix::IQ2_XS,
            Mix::IQ2_S,
            Mix::IQ2_M,
            Mix::IQ1_S,
            Mix::IQ1_M,
        ] {
            let s_m = matches!(mix, Mix::IQ2_S | Mix::IQ2_M);
            let low = if s_m { T::IQ3_S } else { T::Q2_K };
            check(mix, &f, with_imatrix(), &t, |n, l| {
                if n == "token_embd.weight" {
                    low
                } else if n == "output.weight" {
                    T::Q5_K
                } else if is(n, "attn_v") {
                    if gqa4 {
                        T::Q4_K
                    } else {
                        low
                    }
                } else if is(n, "ffn_down") && l.unwrap() < 4 {
                    low
                } else if is(n, "attn_output") && matches!(mix, Mix::IQ1_S | Mix::IQ1_M) {
                    T::IQ2_XXS
                } else if is(n, "attn_output") && s_m {
                    T::IQ3_S
                } else {
                    mix.base_type()
                }
            });
        }
    }
    // Without an imatrix they refuse, like llama-quantize.
    let (f, t) = llama7b();
    assert!(plan(Mix::IQ1_M, f.clone(), Options::default(), &t).is_err());
    // ggml needs weights for IQ2_XXS even on tensors llama.cpp exempts.
    assert!(requires_imatrix(
        "token_embd.weight",
        T::IQ2_XXS,
        Mix::Q4_K_M
    ));
    assert!(!requires_imatrix("token_embd.weight", T::IQ2_S, Mix::IQ2_M));
    assert!(requires_imatrix(
        "blk.0.attn_q.weight",
        T::IQ2_S,
        Mix::IQ2_M
    ));
}

/// The IQ3 mixes on a 7B llama (MHA) and a GQA 8B, with and without an imatrix, as
/// llama-quant.cpp's branches for them give (worked out from the source by hand).
#[test]
fn iq3_mixes_llama7b_and_gqa() {
    let im = Options {
        has_imatrix: true,
        ..Options::default()
    };
    for (f, t) in [llama7b(), llama3_8b()] {
        let gqa = f.n_gqa() >= 4;
        check(Mix::IQ3_M, &f, Options::default(), &t, |n, l| {
            if n == "output.weight" {
                T::Q6_K
            } else if is(n, "attn_v") || is(n, "attn_output") || (is(n, "ffn_down") && l < Some(4))
            {
                T::Q4_K
            } else {
                T::IQ3_S
            }
        });
        check(Mix::IQ3_S, &f, Options::default(), &t, |n, _| {
            if n == "output.weight" {
                T::Q6_K
            } else if gqa && is(n, "attn_v") {
                T::Q4_K
            } else {
                T::IQ3_S
            }
        });
        check(Mix::IQ3_XS, &f, im.clone(), &t, |n, l| {
            let middle = l.is_some_and(|l| (4..28).contains(&l));
            if n == "output.weight" {
                T::Q6_K
            } else if gqa && is(n, "attn_v") {
                T::Q4_K
            } else if is(n, "attn_q")
                || is(n, "attn_k")
                || ((is(n, "ffn_gate") || is(n, "ffn_up")) && middle)
            {
                T::IQ3_XXS
            } else {
                T::IQ3_S
            }
        });
        for has_imatrix in [false, true] {
            let opts = Options {
                has_imatrix,
                ..Options::default()
            };
            let expect = |n: &str, l: Option<u32>| {
                if n == "output.weight" {
                    T::Q5_K
                } else if n == "token_embd.weight" {
                    T::IQ3_S
                } else if is(n, "attn_v") {
                    match (gqa, has_imatrix) {
                        (true, _) => T::Q4_K,
                        (false, false) => T::IQ3_S,
                        (false, true) => T::IQ3_XXS,
                    }
                } else if is(n, "attn_q") || is(n, "attn_k") {
                    T::IQ2_S
                } else if is(n, "attn_output") {
                    T::IQ3_S
                } else if is(n, "ffn_down") && !has_imatrix {
                    if l < Some(4) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                } else {
                    T::IQ3_XXS
                }
            };
            if has_imatrix {
                check(Mix::IQ3_XXS, &f, opts, &t, expect);
            } else {
                // llama-quantize stops at the first IQ2_S attn_q without an imatrix; the
                // lenient planner shows the rest of its choices.
                assert!(matches!(
                    plan(Mix::IQ3_XXS, f.clone(), opts.clone(), &t),
                    Err(MixError::NeedsImatrix { ty: T::IQ2_S, .. })
                ));
                let mut p = Planner::new(Mix::IQ3_XXS, f.clone(), opts, &t);
                for (n, ne) in &t {
                    let c = p.choose(n, ne);
                    if c.quantize {
                        assert_eq!(c.ty, expect(n, layer_of(n)), "{n}");
                    }
                }
            }
        }
        assert!(matches!(
            plan(Mix::IQ3_XS, f.clone(), Options::default(), &t),
            Err(MixError::NeedsImatrix { ty: T::IQ3_XXS, .. })
        ));
    }
    // IQ3_XXS and IQ3_XS tensors need the imatrix; output and token embeddings never do.
    assert!(requires_imatrix(
        "blk.0.attn_q.weight",
        T::IQ3_XXS,
        Mix::IQ3_XS
    ));
    assert!(!requires_imatrix(
        "token_embd.weight",
        T::IQ3_XXS,
        Mix::IQ3_XXS
    ));
    assert!(!requires_imatrix(
        "blk.0.attn_q.weight",
        T::IQ3_S,
        Mix::IQ3_M
    ));
}

/// MoE (8 experts): attn_output Q5_K, attn_v/attn_k Q8_0, IQ3_M's ffn_down by use_more_bits.
#[test]
fn iq3_mixes_moe() {
    let f = facts("llama", 32, 32, 8, 8);
    let t = llama_like(32, 4096, 14336, 1024, 32000, false);
    for mix in [Mix::IQ3_M, Mix::IQ3_S, Mix::IQ3_XS, Mix::IQ3_XXS] {
        let got = run(
            mix,
            &f,
            Options {
                has_imatrix: true,
                ..Options::default()
            },
            &t,
        );
        for (n, ty) in got {
            let l = layer_of(&n);
            if is(&n, "attn_output") {
                assert_eq!(ty, Some(T::Q5_K), "{mix} {n}");
            } else if is(&n, "attn_v") || (is(&n, "attn_k") && !is(&n, "norm")) {
                assert_eq!(ty, Some(T::Q8_0), "{mix} {n}");
            } else if mix == Mix::IQ3_M && is(&n, "ffn_down") {
                let more = l.is_some_and(|l| MORE_BITS_32.contains(&l));
                let want = if l < Some(4) || more {
                    T::Q4_K
                } else {
                    T::IQ3_S
                };
                assert_eq!(ty, Some(want), "{mix} {n}");
            }
        }
    }
}

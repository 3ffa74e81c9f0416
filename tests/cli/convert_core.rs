//! `qforge quantize FOLDER`: a Hugging Face folder converted as convert_hf_to_gguf.py
//! converts it (and quantized as llama-quantize quantizes that), end to end on the
//! shipped `fixtures/hf-tiny-llama`. Expected key and tensor orders and types were read
//! from the reference tools' output for this fixture (convert_hf_to_gguf.py, then
//! llama-quantize); the byte-for-byte comparison with them runs in tests/cli/convert.rs.

use crate::common::*;
use qforge::formats::ggml_type::GgmlType;
use qforge::formats::gguf::Value;
use qforge::formats::{TensorSource, TensorType};
use std::path::{Path, PathBuf};

fn hf() -> PathBuf {
    fixture("hf-tiny-llama")
}

/// Converts `input` with `args` (plus --no-vocab) into `dir/out.gguf`, returning it.
fn convert(dir: &Path, input: &Path, args: &[&str]) -> PathBuf {
    let out = dir.join("out.gguf");
    let mut all = vec![
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-vocab",
    ];
    all.extend_from_slice(args);
    let r = qforge(&all);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    out
}

/// A copy of the fixture folder to break.
fn copy_fixture(dir: &Path) -> PathBuf {
    let to = dir.join("hf-tiny-llama");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(hf()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    to
}

fn keys(s: &TensorSource) -> Vec<&str> {
    s.metadata.iter().map(|(k, _)| k.as_str()).collect()
}

fn names(s: &TensorSource) -> Vec<&str> {
    s.tensors.iter().map(|t| t.name.as_str()).collect()
}

const HPARAMS: &[&str] = &[
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.attention.key_length",
    "llama.attention.value_length",
];

const GENERAL: &[&str] = &[
    "general.architecture",
    "general.type",
    "general.name",
    "general.size_label",
    "general.license",
    "general.tags",
    "general.languages",
];

/// convert's tensor order: shard by shard, Hugging Face names sorted.
const CONVERT_ORDER: &[&str] = &[
    "output.weight",
    "token_embd.weight",
    "blk.0.attn_norm.weight",
    "blk.0.ffn_down.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_up.weight",
    "blk.0.ffn_norm.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_output.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_v.weight",
    "blk.1.attn_norm.weight",
    "blk.1.ffn_down.weight",
    "blk.1.ffn_gate.weight",
    "blk.1.ffn_up.weight",
    "blk.1.ffn_norm.weight",
    "blk.1.attn_k.weight",
    "blk.1.attn_output.weight",
    "blk.1.attn_q.weight",
    "blk.1.attn_v.weight",
    "output_norm.weight",
];

fn source_bytes<'a>(src: &'a TensorSource, name: &str) -> &'a [u8] {
    src.data(src.tensors.iter().find(|t| t.name == name).unwrap())
}

#[test]
fn outtypes_write_convert_keys_in_order_and_its_tensor_types() {
    let dir = tempfile::tempdir().unwrap();
    let src = TensorSource::open(&hf().join("model.safetensors")).unwrap();
    for (t, file_type, weight_ty) in [
        ("F32", 0, GgmlType::F32),
        ("F16", 1, GgmlType::F16),
        ("BF16", 32, GgmlType::BF16),
        ("Q8_0", 7, GgmlType::Q8_0),
    ] {
        let out = convert(dir.path(), &hf(), &["-t", t]);
        let g = TensorSource::open(&out).unwrap();
        let mut want: Vec<&str> = GENERAL.to_vec();
        want.extend_from_slice(HPARAMS);
        want.extend([
            "general.file_type",
            "llama.vocab_size",
            "llama.rope.dimension_count",
            "general.quantization_version",
        ]);
        assert_eq!(keys(&g), want, "-t {t}");
        assert_eq!(g.get("general.file_type"), Some(&Value::U32(file_type)));
        assert_eq!(g.get("general.name"), Some(&Value::string("Hf Tiny Llama")));
        assert_eq!(g.get("general.size_label"), Some(&Value::string("76K")));
        assert_eq!(g.get("llama.rope.dimension_count"), Some(&Value::U32(8)));
        assert_eq!(
            g.get("llama.attention.layer_norm_rms_epsilon"),
            Some(&Value::F32(1e-5))
        );
        assert_eq!(names(&g), CONVERT_ORDER, "-t {t}");
        for t in &g.tensors {
            let want = if t.shape.len() == 1 {
                GgmlType::F32
            } else {
                weight_ty
            };
            assert_eq!(t.ty, TensorType::Ggml(want), "{}", t.name);
        }
        if t == "BF16" {
            // Unpermuted tensors are the checkpoint's bf16 bytes.
            let embd = g
                .tensors
                .iter()
                .find(|t| t.name == "token_embd.weight")
                .unwrap();
            assert_eq!(
                g.data(embd),
                source_bytes(&src, "model.embed_tokens.weight")
            );
            // attn_q rows are permuted per head (4 heads of 8: rows 0,4,1,5,2,6,3,7).
            let q = g
                .tensors
                .iter()
                .find(|t| t.name == "blk.0.attn_q.weight")
                .unwrap();
            let hf_q = source_bytes(&src, "model.layers.0.self_attn.q_proj.weight");
            let row = 32 * 2;
            for (r, s) in [(0, 0), (1, 4), (2, 1), (3, 5), (8, 8), (9, 12)] {
                assert_eq!(
                    &g.data(q)[r * row..(r + 1) * row],
                    &hf_q[s * row..(s + 1) * row],
                    "row {r}"
                );
            }
        }
    }
}

#[test]
fn q4_k_m_is_llama_quantize_over_convert_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path(), &hf(), &["-t", "Q4_K_M"]);
    let g = TensorSource::open(&out).unwrap();
    let mut want: Vec<&str> = GENERAL.to_vec();
    want.extend_from_slice(HPARAMS);
    want.extend([
        "llama.vocab_size",
        "llama.rope.dimension_count",
        "general.quantization_version",
        "general.file_type",
    ]);
    assert_eq!(keys(&g), want);
    assert_eq!(g.get("general.file_type"), Some(&Value::U32(15)));
    // llama-quantize's order and types for this model (rows of 32 fall back to Q5_0).
    use GgmlType::*;
    let want = [
        ("output.weight", Q8_0),
        ("output_norm.weight", F32),
        ("token_embd.weight", Q5_0),
        ("blk.0.attn_k.weight", Q5_0),
        ("blk.0.attn_norm.weight", F32),
        ("blk.0.attn_output.weight", Q5_0),
        ("blk.0.attn_q.weight", Q5_0),
        ("blk.0.attn_v.weight", Q5_0),
        ("blk.0.ffn_down.weight", Q4_K),
        ("blk.0.ffn_gate.weight", Q5_0),
        ("blk.0.ffn_norm.weight", F32),
        ("blk.0.ffn_up.weight", Q5_0),
        ("blk.1.attn_k.weight", Q5_0),
        ("blk.1.attn_norm.weight", F32),
        ("blk.1.attn_output.weight", Q5_0),
        ("blk.1.attn_q.weight", Q5_0),
        ("blk.1.attn_v.weight", Q8_0),
        ("blk.1.ffn_down.weight", Q6_K),
        ("blk.1.ffn_gate.weight", Q5_0),
        ("blk.1.ffn_norm.weight", F32),
        ("blk.1.ffn_up.weight", Q5_0),
    ];
    let got: Vec<(&str, TensorType)> = g.tensors.iter().map(|t| (t.name.as_str(), t.ty)).collect();
    let want: Vec<(&str, TensorType)> = want
        .iter()
        .map(|&(n, t)| (n, TensorType::Ggml(t)))
        .collect();
    assert_eq!(got, want);
    // ffn_down (rows of 256) is the codec's Q4_K of the bf16 values.
    let src = TensorSource::open(&hf().join("model.safetensors")).unwrap();
    let hf_down = src
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.0.mlp.down_proj.weight")
        .unwrap();
    let mut x = vec![0f32; hf_down.elements() as usize];
    qforge::quant::decode(hf_down.ty, src.data(hf_down), &mut x).unwrap();
    let c = Q4_K.codec().unwrap();
    let mut want = vec![0u8; 32 * 144];
    for (r, d) in x.chunks(256).zip(want.chunks_mut(144)) {
        (c.quantize_row)(r, d, None);
    }
    let down = g
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_down.weight")
        .unwrap();
    assert_eq!(g.data(down), &want[..]);
}

/// The tokenizer keys convert writes for the fixture (SentencePiece), in its order.
const TOKENIZER: &[&str] = &[
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
];

#[test]
fn with_the_tokenizer_keys_follow_convert_then_llama_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("full.gguf");
    for (t, tail) in [
        ("F16", &["general.quantization_version"][..]),
        ("Q4_K_M", &[][..]),
    ] {
        let r = qforge(&[
            "quantize",
            hf().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-t",
            t,
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let g = TensorSource::open(&out).unwrap();
        let mut want: Vec<&str> = GENERAL.to_vec();
        want.extend_from_slice(HPARAMS);
        if t == "F16" {
            want.push("general.file_type");
        }
        want.extend(["llama.vocab_size", "llama.rope.dimension_count"]);
        want.extend_from_slice(tail);
        want.extend_from_slice(TOKENIZER);
        if t == "Q4_K_M" {
            want.extend(["general.quantization_version", "general.file_type"]);
        }
        assert_eq!(keys(&g), want, "-t {t}");
        assert_eq!(g.get("tokenizer.ggml.model"), Some(&Value::string("llama")));
        match g.get("tokenizer.ggml.tokens") {
            Some(Value::Array(_, tokens)) => assert_eq!(tokens.len(), 320),
            other => panic!("tokens: {other:?}"),
        }
    }
}

#[test]
fn name_and_metadata_override_general_keys() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.json");
    std::fs::write(
        &meta,
        r#"{"general.author": "Someone", "general.name": "From File", "general.tags": ["x"]}"#,
    )
    .unwrap();
    let out = convert(
        dir.path(),
        &hf(),
        &["-t", "F16", "--metadata", meta.to_str().unwrap()],
    );
    let g = TensorSource::open(&out).unwrap();
    assert_eq!(g.get("general.name"), Some(&Value::string("From File")));
    assert_eq!(g.get("general.author"), Some(&Value::string("Someone")));
    assert_eq!(
        g.get("general.tags"),
        Some(&Value::Array(
            qforge::formats::gguf::ValueType::String,
            vec![Value::string("x")]
        ))
    );
    let out = convert(
        dir.path(),
        &hf(),
        &[
            "-t",
            "F16",
            "--metadata",
            meta.to_str().unwrap(),
            "--name",
            "Flag",
        ],
    );
    let g = TensorSource::open(&out).unwrap();
    assert_eq!(g.get("general.name"), Some(&Value::string("Flag")));
}

#[test]
fn raw_names_keeps_hugging_face_names_and_dry_run_plans_gguf_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("raw.gguf");
    let r = qforge(&[
        "quantize",
        hf().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--raw-names",
        "-t",
        "Q8_0",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let g = TensorSource::open(&out).unwrap();
    assert!(names(&g).contains(&"model.layers.0.self_attn.q_proj.weight"));

    let r = qforge(&[
        "quantize",
        hf().to_str().unwrap(),
        "--dry-run",
        "--json",
        "--no-vocab",
        "-t",
        "Q4_K_M",
    ]);
    let j = json(&r);
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["tensors"][0]["name"], "output.weight");
    assert_eq!(j["tensors"][0]["in_type"], "BF16");
    assert_eq!(j["tensors"][0]["out_type"], "Q8_0");
    assert!(j["output"].is_null());
}

/// Runs a conversion expected to fail: one line, exit 2, nothing written.
fn assert_refused(input: &Path, extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let mut all = vec![
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "Q4_K_M",
    ];
    all.extend_from_slice(extra);
    assert_invalid(&qforge(&all), needle);
    assert!(!out.exists(), "nothing written");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[test]
fn bad_folders_are_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = copy_fixture(dir.path());
    let cfg = std::fs::read_to_string(f.join("config.json")).unwrap();

    // No tokenizer without --no-vocab.
    std::fs::rename(f.join("tokenizer.model"), dir.path().join("tok")).unwrap();
    assert_refused(&f, &[], "no tokenizer");
    std::fs::rename(dir.path().join("tok"), f.join("tokenizer.model")).unwrap();

    // config.json invalid, then missing.
    std::fs::write(f.join("config.json"), "{\"architectures\": [").unwrap();
    assert_refused(&f, &["--no-vocab"], "config.json");
    std::fs::remove_file(f.join("config.json")).unwrap();
    assert_refused(&f, &["--no-vocab"], "has no config.json");

    // An unsupported architecture names the supported ones.
    std::fs::write(
        f.join("config.json"),
        cfg.replace("LlamaForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    assert_refused(&f, &["--no-vocab"], "LlamaForCausalLM");

    // A shape that disagrees with the config.
    std::fs::write(
        f.join("config.json"),
        cfg.replace("\"intermediate_size\": 256", "\"intermediate_size\": 128"),
    )
    .unwrap();
    assert_refused(&f, &["--no-vocab"], "config.json implies");
    std::fs::write(f.join("config.json"), &cfg).unwrap();

    // An unsupported dtype.
    let bad = dir.path().join("int");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("config.json"), &cfg).unwrap();
    let header = r#"{"model.norm.weight":{"dtype":"I32","shape":[32],"data_offsets":[0,128]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header.as_bytes());
    st.extend_from_slice(&[0u8; 128]);
    std::fs::write(bad.join("model.safetensors"), st).unwrap();
    assert_refused(&bad, &["--no-vocab"], "dtype");

    // A missing shard.
    std::fs::write(
        f.join("model.safetensors.index.json"),
        r#"{"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    std::fs::remove_file(f.join("model.safetensors")).unwrap();
    assert_refused(&f, &["--no-vocab"], "listed in the index: No such file");
}

#[test]
fn vocab_flags_need_a_folder() {
    assert_invalid(
        &qforge(&[
            "quantize",
            fixture("tiny-llama.safetensors").to_str().unwrap(),
            "--dry-run",
            "--no-vocab",
        ]),
        "Hugging Face folder",
    );
}

//! `qforge quantize` end to end: real binary, shipped fixtures, outputs read back by our
//! reader, compared against direct codec calls, and (when available) by gguf-py.

use crate::common::*;
use qforge::formats::ggml_type::GgmlType;
use qforge::formats::gguf::writer::{GgufLayout, GgufStream, TensorSpec};
use qforge::formats::gguf::Value;
use qforge::formats::{TensorSource, TensorType};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn quantize(args: &[&str], input: &Path, out: &Path) -> Json {
    let mut all = vec![
        "quantize",
        "--json",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    json(&qforge(&all))
}

fn tensor<'a>(r: &'a Json, name: &str) -> &'a Json {
    r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name}"))
}

/// Decodes a source tensor to f32 with the library (F16/F32 inputs).
fn decoded(src: &TensorSource, name: &str) -> Vec<f32> {
    let t = src.tensors.iter().find(|t| t.name == name).unwrap();
    let mut out = vec![0f32; t.elements() as usize];
    qforge::quant::decode(t.ty, src.data(t), &mut out).unwrap();
    out
}

/// Quantizes rows directly with the codec, as ggml_quantize_chunk would.
fn codec_bytes(ty: GgmlType, x: &[f32], row: usize, imatrix: Option<&[f32]>) -> Vec<u8> {
    let c = ty.codec().unwrap();
    let rb = row / c.block_size() * c.type_size();
    let mut out = vec![0u8; x.len() / row * rb];
    for (r, d) in x.chunks(row).zip(out.chunks_mut(rb)) {
        (c.quantize_row)(r, d, imatrix);
    }
    out
}

#[test]
fn safetensors_to_q4_k_m_follows_llama_cpp_rules_and_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-Q4_K_M.gguf");
    let r = quantize(
        &["-t", "q4_k_m", "--digest"],
        &fixture("tiny-llama.safetensors"),
        &out,
    );
    assert_eq!(r["schema"], "qforge.quantize/2");
    assert_eq!(r["type"], "Q4_K_M");
    let ty = |n: &str| tensor(&r, n)["out_type"].as_str().unwrap().to_string();
    // llama.cpp Q4_K_M: attn_v and ffn_down get Q6_K on use_more_bits layers (the only
    // layer of a 1-layer model is one), output gets Q6_K, the rest Q4_K; 1-D stays.
    assert_eq!(ty("model.layers.0.self_attn.v_proj.weight"), "Q6_K");
    assert_eq!(ty("model.layers.0.mlp.down_proj.weight"), "Q6_K");
    assert_eq!(ty("lm_head.weight"), "Q6_K");
    assert_eq!(ty("model.layers.0.self_attn.q_proj.weight"), "Q4_K");
    assert_eq!(ty("model.embed_tokens.weight"), "Q4_K");
    assert_eq!(ty("model.norm.weight"), "F32");
    // Copied unchanged: exactly no error, and no value was read to count non-finites.
    assert_eq!(tensor(&r, "model.norm.weight")["rel_rmse"], 0.0);
    assert!(tensor(&r, "model.norm.weight")["non_finite"].is_null());

    // Our reader reads the output; every tensor kept its HF name and row-major shape.
    let src = TensorSource::open(&fixture("tiny-llama.safetensors")).unwrap();
    let q = TensorSource::open(&out).unwrap();
    assert_eq!(q.version, Some(3));
    assert_eq!(q.tensors.len(), src.tensors.len());
    assert_eq!(
        q.get("general.file_type"),
        Some(&Value::U32(15)),
        "LLAMA_FTYPE_MOSTLY_Q4_K_M"
    );
    assert_eq!(q.get("general.quantization_version"), Some(&Value::U32(2)));
    assert_eq!(
        q.get("general.architecture"),
        Some(&Value::string("llama")),
        "from config.json"
    );
    // Bytes equal direct codec output on the decoded input.
    for (name, ggml_ty) in [
        ("model.layers.0.self_attn.q_proj.weight", GgmlType::Q4_K),
        ("model.layers.0.self_attn.v_proj.weight", GgmlType::Q6_K),
    ] {
        let t = q.tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(t.ty, TensorType::Ggml(ggml_ty));
        assert_eq!(
            t.shape,
            src.tensors.iter().find(|s| s.name == name).unwrap().shape
        );
        assert_eq!(
            q.data(t),
            &codec_bytes(ggml_ty, &decoded(&src, name), 256, None)[..],
            "{name}"
        );
    }
    // Norms are copied byte for byte.
    let n = q
        .tensors
        .iter()
        .find(|t| t.name == "model.norm.weight")
        .unwrap();
    let s = src
        .tensors
        .iter()
        .find(|t| t.name == "model.norm.weight")
        .unwrap();
    assert_eq!(q.data(n), src.data(s));
    // The reported sha256 is the file's, and sizes add up.
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(r["totals"]["file_bytes"], bytes.len() as u64);
    use sha2::Digest;
    assert_eq!(
        r["sha256"],
        qforge::formats::atomic::hex(&sha2::Sha256::digest(&bytes))
    );
    let rmse = tensor(&r, "model.layers.0.self_attn.q_proj.weight")["rel_rmse"]
        .as_f64()
        .unwrap();
    assert!(rmse > 0.01 && rmse < 0.2, "Q4_K rel rmse {rmse}");
}

#[test]
fn same_bytes_for_any_thread_count_and_dry_run_predicts_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = dir.path().join(format!("t{threads}.gguf"));
        let r = quantize(
            &["-t", "Q3_K_M", "--threads", threads, "--digest"],
            &fixture("tiny-llama.gguf"),
            &out,
        );
        assert!(r["sha256"].is_string());
        digests.push(r["sha256"].clone());
    }
    // Without --digest no digest is computed.
    let plain = quantize(
        &["-t", "Q3_K_M"],
        &fixture("tiny-llama.gguf"),
        &dir.path().join("plain.gguf"),
    );
    assert_eq!(plain["sha256"], Json::Null);
    assert_eq!(
        std::fs::read(dir.path().join("plain.gguf")).unwrap(),
        std::fs::read(dir.path().join("t1.gguf")).unwrap()
    );
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], digests[2]);
    let out = dir.path().join("dry.gguf");
    let dry = quantize(
        &["-t", "Q3_K_M", "--dry-run"],
        &fixture("tiny-llama.gguf"),
        &out,
    );
    assert!(!out.exists(), "dry run writes nothing");
    assert_eq!(dry["sha256"], Json::Null);
    let real = std::fs::metadata(dir.path().join("t1.gguf")).unwrap().len();
    assert_eq!(dry["totals"]["file_bytes"], real);
}

#[test]
fn gguf_input_keeps_metadata_in_order_and_sets_file_type_last() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    quantize(&["-t", "Q8_0"], &fixture("tiny-llama.gguf"), &out);
    let src = TensorSource::open(&fixture("tiny-llama.gguf")).unwrap();
    let q = TensorSource::open(&out).unwrap();
    let keys = |s: &TensorSource| {
        s.metadata
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    // llama-quantize's gguf_set_val removes a key and appends it.
    let mut expected: Vec<String> = keys(&src)
        .into_iter()
        .filter(|k| k != "general.file_type" && k != "general.quantization_version")
        .collect();
    expected.push("general.quantization_version".into());
    expected.push("general.file_type".into());
    assert_eq!(
        keys(&q),
        expected,
        "same keys, same order, the two set ones last"
    );
    for (k, v) in &src.metadata {
        if k != "general.file_type" {
            assert_eq!(q.get(k), Some(v), "{k} unchanged");
        }
    }
    assert_eq!(
        q.get("general.file_type"),
        Some(&Value::U32(7)),
        "LLAMA_FTYPE_MOSTLY_Q8_0"
    );
    let t = q
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(t.ty, TensorType::Ggml(GgmlType::Q8_0));
    assert_eq!(
        q.data(t),
        &codec_bytes(
            GgmlType::Q8_0,
            &decoded(&src, "blk.0.attn_q.weight"),
            256,
            None
        )[..]
    );

    // Re-quantizing the Q8_0 output needs --allow-requantize.
    let out2 = dir.path().join("q4.gguf");
    let o = qforge(&[
        "quantize",
        out.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
        "-t",
        "Q4_K_M",
    ]);
    assert_invalid(&o, "--allow-requantize");
    assert!(!out2.exists());
    let r = quantize(&["-t", "Q4_K_M", "--allow-requantize"], &out, &out2);
    assert_eq!(tensor(&r, "blk.0.attn_q.weight")["in_type"], "Q8_0");
    assert_eq!(tensor(&r, "blk.0.attn_q.weight")["out_type"], "Q4_K");
}

#[test]
fn overrides_first_match_wins_and_pure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let r = quantize(
        &[
            "-t",
            "Q4_K_M",
            "--tensor-type",
            "attn_[qk]=Q8_0",
            "--tensor-type",
            "attn_q=Q5_0",
            "--output-tensor-type",
            "Q4_0",
            "--token-embedding-type",
            "F16",
        ],
        &fixture("tiny-llama.gguf"),
        &out,
    );
    let ty = |n: &str| tensor(&r, n)["out_type"].as_str().unwrap().to_string();
    assert_eq!(ty("blk.0.attn_q.weight"), "Q8_0");
    assert_eq!(ty("blk.0.attn_k.weight"), "Q8_0");
    assert_eq!(ty("output.weight"), "Q4_0");
    assert_eq!(ty("token_embd.weight"), "F16");
    let r = quantize(
        &["-t", "Q4_K_M", "--pure"],
        &fixture("tiny-llama.gguf"),
        &out,
    );
    for t in r["tensors"].as_array().unwrap() {
        let shape = t["shape"].as_array().unwrap();
        let want = if shape.len() >= 2 { "Q4_K" } else { "F32" };
        assert_eq!(t["out_type"], want, "{}", t["name"]);
    }
    let bad = qforge(&[
        "quantize",
        fixture("tiny-llama.gguf").to_str().unwrap(),
        "--dry-run",
        "-t",
        "Q9_X",
    ]);
    assert_invalid(&bad, "unknown type");
    let bad = qforge(&[
        "quantize",
        fixture("tiny-llama.gguf").to_str().unwrap(),
        "--dry-run",
        "--tensor-type",
        "nope",
    ]);
    assert_invalid(&bad, "REGEX=TYPE");
}

/// Writes a GGUF imatrix (llama-imatrix's format) with importance values for `names`.
fn write_gguf_imatrix(path: &Path, entries: &[(&str, Vec<f32>)]) {
    let mut specs = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for (name, v) in entries {
        specs.push(TensorSpec {
            name: format!("{name}.in_sum2"),
            ne: vec![v.len() as u64, 1],
            ty: GgmlType::F32,
        });
        data.push(
            v.iter()
                .map(|x| x * 4.0)
                .flat_map(f32::to_le_bytes)
                .collect(),
        );
        specs.push(TensorSpec {
            name: format!("{name}.counts"),
            ne: vec![1, 1],
            ty: GgmlType::F32,
        });
        data.push(4.0f32.to_le_bytes().to_vec());
    }
    let meta = vec![
        ("general.type".to_string(), Value::string("imatrix")),
        (
            "imatrix.datasets".to_string(),
            Value::Array(
                qforge::formats::gguf::ValueType::String,
                vec![Value::string("test.txt")],
            ),
        ),
        ("imatrix.chunk_count".to_string(), Value::U32(4)),
        ("imatrix.chunk_size".to_string(), Value::U32(512)),
    ];
    let layout = GgufLayout::new(&meta, &specs).unwrap();
    let mut s = GgufStream::start(Vec::new(), &layout).unwrap();
    for d in &data {
        s.write_data(d).unwrap();
    }
    std::fs::write(path, s.finish().unwrap()).unwrap();
}

#[test]
fn imatrix_gguf_and_legacy_change_the_bytes_exactly_like_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let name = "blk.0.attn_q.weight";
    let w: Vec<f32> = (0..256).map(|i| 0.1 + (i % 7) as f32).collect();
    let im = dir.path().join("imatrix.gguf");
    write_gguf_imatrix(&im, &[(name, w.clone())]);
    // Legacy .dat with the same values (stored as mean * ncall).
    let legacy = dir.path().join("imatrix.dat");
    let mut v = 1i32.to_le_bytes().to_vec();
    v.extend_from_slice(&(name.len() as i32).to_le_bytes());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&2i32.to_le_bytes());
    v.extend_from_slice(&256i32.to_le_bytes());
    for x in &w {
        v.extend_from_slice(&(x * 2.0).to_le_bytes());
    }
    std::fs::write(&legacy, v).unwrap();

    let src = TensorSource::open(&fixture("tiny-llama.gguf")).unwrap();
    let x = decoded(&src, name);
    let with = codec_bytes(GgmlType::Q4_K, &x, 256, Some(&w));
    let without = codec_bytes(GgmlType::Q4_K, &x, 256, None);
    assert_ne!(
        with, without,
        "the imatrix must matter for this test to mean anything"
    );
    for file in [&im, &legacy] {
        let out = dir.path().join("im.gguf");
        quantize(
            &["-t", "Q4_K_S", "--imatrix", file.to_str().unwrap()],
            &fixture("tiny-llama.gguf"),
            &out,
        );
        let q = TensorSource::open(&out).unwrap();
        let t = q.tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(q.data(t), &with[..], "{}", file.display());
        // --exclude-weights drops the entry: back to the reference path.
        quantize(
            &[
                "-t",
                "Q4_K_S",
                "--imatrix",
                file.to_str().unwrap(),
                "--exclude-weights",
                "attn_q",
            ],
            &fixture("tiny-llama.gguf"),
            &out,
        );
        let q = TensorSource::open(&out).unwrap();
        let t = q.tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(q.data(t), &without[..]);
    }
}

fn nan_model(dir: &Path) -> PathBuf {
    let mut x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
    x[17] = f32::NAN;
    x[300] = f32::INFINITY;
    let specs = vec![TensorSpec {
        name: "blk.0.attn_q.weight".into(),
        ne: vec![256, 2],
        ty: GgmlType::F32,
    }];
    let meta = vec![("general.architecture".to_string(), Value::string("llama"))];
    let layout = GgufLayout::new(&meta, &specs).unwrap();
    let mut s = GgufStream::start(Vec::new(), &layout).unwrap();
    s.write_data(&x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        .unwrap();
    let p = dir.join("nan.gguf");
    std::fs::write(&p, s.finish().unwrap()).unwrap();
    p
}

#[test]
fn non_finite_weights_are_refused_unless_allowed_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = nan_model(dir.path());
    let out = dir.path().join("out.gguf");
    std::fs::write(&out, b"previous").unwrap();
    let o = qforge(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "Q8_0",
    ]);
    assert_invalid(&o, "2 NaN or infinite values");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"previous",
        "previous file untouched"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("qforge-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp file removed");
    let r = quantize(&["-t", "Q8_0", "--allow-nonfinite"], &input, &out);
    assert_eq!(r["tensors"][0]["non_finite"], 2);
}

/// gguf-py (llama.cpp's reference reader) reads our output. CI installs it
/// (QFORGE_PYTHON points at a venv); elsewhere the test needs `python3 -c "import gguf"`.
#[test]
fn gguf_py_reads_our_output() {
    let python = std::env::var("QFORGE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_gguf = std::process::Command::new(&python)
        .args(["-c", "import gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_gguf {
        assert!(
            std::env::var_os("QFORGE_REQUIRE_PYTHON").is_none(),
            "QFORGE_REQUIRE_PYTHON is set but {python} cannot import gguf"
        );
        eprintln!("skipping: {python} has no gguf module (pip install gguf numpy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let r = quantize(&["-t", "Q4_K_M"], &fixture("tiny-llama.gguf"), &out);
    let script = r#"
import sys, json, gguf
import numpy as np
r = gguf.GGUFReader(sys.argv[1])
out = {"tensors": [], "file_type": int(r.fields["general.file_type"].parts[-1][0])}
for t in r.tensors:
    d = gguf.quants.dequantize(t.data, t.tensor_type)
    out["tensors"].append({"name": t.name, "type": t.tensor_type.name, "ne": [int(x) for x in t.shape],
                           "n_bytes": int(t.n_bytes), "sum": float(np.asarray(d, dtype=np.float64).sum())})
print(json.dumps(out))
"#;
    let o = std::process::Command::new(&python)
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let py: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(py["file_type"], 15);
    let q = TensorSource::open(&out).unwrap();
    let py_t = py["tensors"].as_array().unwrap();
    assert_eq!(py_t.len(), q.tensors.len());
    for (p, t) in py_t.iter().zip(&q.tensors) {
        assert_eq!(p["name"], t.name.as_str());
        assert_eq!(p["type"], t.ty.to_string().as_str());
        assert_eq!(p["ne"], serde_json::json!(t.ne()));
        assert_eq!(p["n_bytes"], t.bytes);
        // gguf-py's own dequantizer agrees with ours.
        let mut y = vec![0f32; t.elements() as usize];
        qforge::quant::decode(t.ty, q.data(t), &mut y).unwrap();
        let ours: f64 = y.iter().map(|&v| v as f64).sum();
        let theirs = p["sum"].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() <= 1e-3 * (1.0 + theirs.abs()),
            "{}: {ours} vs {theirs}",
            t.name
        );
    }
    assert_eq!(r["tensors"].as_array().unwrap().len(), py_t.len());
}

#[test]
fn config_json_text_config_and_invalid_config() {
    // A multimodal-style STEM.config.json: the LM's hyperparameters under text_config.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mm.safetensors");
    std::fs::copy(fixture("tiny-llama.safetensors"), &input).unwrap();
    let cfg = dir.path().join("mm.config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type": "llava", "text_config": {"model_type": "llama", "num_hidden_layers": 1}}"#,
    )
    .unwrap();
    let out = dir.path().join("mm.gguf");
    quantize(&["-t", "Q4_K_M"], &input, &out);
    assert_eq!(
        TensorSource::open(&out)
            .unwrap()
            .get("general.architecture"),
        Some(&Value::string("llama")),
        "text_config's model_type"
    );
    // A config that exists but is not JSON: one line, exit 2, nothing written.
    std::fs::write(&cfg, "{not json").unwrap();
    let bad = dir.path().join("bad.gguf");
    let o = qforge(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_invalid(&o, "not JSON");
    assert!(!bad.exists());
}

/// The out type of every tensor of a `--json` report, by name.
fn out_types(r: &Json) -> std::collections::HashMap<String, String> {
    r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["out_type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn iq4_xs_ternary_q1_0_q2_0_mixes_follow_llama_cpp_and_match_the_codecs() {
    // tiny-llama: 1 layer, 4 heads over 1 KV head (n_gqa 4), untied output, rows of 256.
    let dir = tempfile::tempdir().unwrap();
    let src = TensorSource::open(&fixture("tiny-llama.gguf")).unwrap();
    let q = GgmlType::from_name;
    // (mix, file type, base, token_embd, attn_v, output)
    for (mix, ftype, base, embd, attn_v, output) in [
        ("IQ4_XS", 30, "IQ4_XS", "IQ4_XS", "Q5_K", "Q6_K"),
        ("TQ1_0", 36, "TQ1_0", "Q4_K", "TQ1_0", "Q6_K"),
        ("TQ2_0", 37, "TQ2_0", "Q4_K", "TQ2_0", "Q6_K"),
        ("Q1_0", 40, "Q1_0", "Q1_0", "Q1_0", "Q6_K"),
        ("Q2_0", 41, "Q2_0", "Q4_K", "Q2_0", "Q6_K"),
    ] {
        let out = dir.path().join(format!("{mix}.gguf"));
        let r = quantize(&["-t", mix], &fixture("tiny-llama.gguf"), &out);
        let types = out_types(&r);
        assert_eq!(types["token_embd.weight"], embd, "{mix}");
        assert_eq!(types["blk.0.attn_v.weight"], attn_v, "{mix}");
        assert_eq!(types["output.weight"], output, "{mix}");
        assert_eq!(types["blk.0.attn_norm.weight"], "F32", "{mix}");
        for n in ["blk.0.attn_q.weight", "blk.0.ffn_down.weight"] {
            assert_eq!(types[n], base, "{mix} {n}");
        }
        let g = TensorSource::open(&out).unwrap();
        assert_eq!(
            g.get("general.file_type"),
            Some(&Value::U32(ftype)),
            "{mix}"
        );
        for n in ["blk.0.attn_q.weight", "token_embd.weight", "output.weight"] {
            let ty = q(&types[n]).unwrap();
            let t = g.tensors.iter().find(|t| t.name == n).unwrap();
            assert_eq!(t.ty, TensorType::Ggml(ty));
            assert_eq!(
                g.data(t),
                &codec_bytes(ty, &decoded(&src, n), 256, None)[..],
                "{mix} {n}"
            );
        }
        let rmse = tensor(&r, "blk.0.attn_q.weight")["rel_rmse"]
            .as_f64()
            .unwrap();
        let bound = if mix == "IQ4_XS" { 0.12 } else { 0.9 };
        assert!(rmse > 0.0 && rmse < bound, "{mix} rel rmse {rmse}");
    }
    // IQ4_XS with an importance matrix: the codec's imatrix path, ffn_down stays IQ4_XS.
    let w: Vec<f32> = (0..256).map(|i| 0.5 + (i % 7) as f32).collect();
    let im = dir.path().join("im.gguf");
    write_gguf_imatrix(&im, &[("blk.0.attn_q.weight", w.clone())]);
    let out = dir.path().join("iq4_xs_im.gguf");
    let r = quantize(
        &["-t", "IQ4_XS", "--imatrix", im.to_str().unwrap()],
        &fixture("tiny-llama.gguf"),
        &out,
    );
    assert_eq!(out_types(&r)["blk.0.ffn_down.weight"], "IQ4_XS");
    let g = TensorSource::open(&out).unwrap();
    let t = g
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    let x = decoded(&src, "blk.0.attn_q.weight");
    assert_eq!(
        g.data(t),
        &codec_bytes(GgmlType::IQ4_XS, &x, 256, Some(&w))[..]
    );
    assert_ne!(g.data(t), &codec_bytes(GgmlType::IQ4_XS, &x, 256, None)[..]);
}

/// A small F32 MoE model in GGUF (`general.file_type` 0 when `file_type_key`): `(name, ne)`
/// tensors filled with a deterministic pattern, which it returns.
fn write_moe_gguf(path: &Path, tensors: &[(&str, Vec<u64>)], file_type_key: bool) -> Vec<Vec<f32>> {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(n, ne)| TensorSpec {
            name: n.to_string(),
            ne: ne.clone(),
            ty: GgmlType::F32,
        })
        .collect();
    let data: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(k, (_, ne))| {
            let n: u64 = ne.iter().product();
            (0..n)
                .map(|i| (((i * 7919 + k as u64 * 31) % 1000) as f32 - 500.0) / 300.0)
                .collect()
        })
        .collect();
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            Value::string("qwen2moe"),
        ),
        ("qwen2moe.block_count".to_string(), Value::U32(1)),
        ("qwen2moe.attention.head_count".to_string(), Value::U32(4)),
        (
            "qwen2moe.attention.head_count_kv".to_string(),
            Value::U32(4),
        ),
        ("qwen2moe.expert_count".to_string(), Value::U32(4)),
    ];
    if file_type_key {
        meta.push(("general.file_type".to_string(), Value::U32(0)));
    }
    let layout = GgufLayout::new(&meta, &specs).unwrap();
    let mut s = GgufStream::start(Vec::new(), &layout).unwrap();
    for d in &data {
        s.write_data(&d.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
            .unwrap();
    }
    std::fs::write(path, s.finish().unwrap()).unwrap();
    data
}

#[test]
fn mxfp4_moe_quantizes_only_expert_tensors_and_q1_0_refuses_short_rows() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("moe.gguf");
    let data = write_moe_gguf(
        &model,
        &[
            ("token_embd.weight", vec![64, 16]),
            ("blk.0.attn_norm.weight", vec![64]),
            ("blk.0.attn_q.weight", vec![64, 64]),
            ("blk.0.ffn_gate_inp.weight", vec![64, 4]),
            ("blk.0.ffn_up_exps.weight", vec![64, 32, 4]),
            ("blk.0.ffn_down_exps.weight", vec![32, 64, 4]),
            ("output.weight", vec![64, 16]),
        ],
        true,
    );
    let out = dir.path().join("mxfp4.gguf");
    let r = quantize(&["-t", "MXFP4_MOE"], &model, &out);
    let types = out_types(&r);
    for (n, want) in [
        ("token_embd.weight", "Q8_0"),
        ("blk.0.attn_norm.weight", "F32"),
        ("blk.0.attn_q.weight", "Q8_0"),
        ("blk.0.ffn_gate_inp.weight", "F32"),
        ("blk.0.ffn_up_exps.weight", "MXFP4"),
        ("blk.0.ffn_down_exps.weight", "MXFP4"),
        ("output.weight", "Q8_0"),
    ] {
        assert_eq!(types[n], want, "{n}");
    }
    let g = TensorSource::open(&out).unwrap();
    assert_eq!(g.get("general.file_type"), Some(&Value::U32(38)));
    let t = g
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_up_exps.weight")
        .unwrap();
    assert_eq!(
        g.data(t),
        &codec_bytes(GgmlType::MXFP4, &data[4], 64, None)[..]
    );

    // Q1_0 has 128-value blocks and, in llama.cpp, no fallback: rows of 64 are refused.
    let out = dir.path().join("q1.gguf");
    let o = qforge(&[
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "Q1_0",
    ]);
    assert_invalid(&o, "defines no fallback for Q1_0");
    assert!(!out.exists());
}

#[test]
fn copy_keeps_every_tensor_and_the_input_file_type() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.gguf");
    let r = quantize(&["-t", "COPY"], &fixture("tiny-llama.gguf"), &out);
    assert_eq!(r["type"], "COPY");
    let src = TensorSource::open(&fixture("tiny-llama.gguf")).unwrap();
    let g = TensorSource::open(&out).unwrap();
    assert_eq!(g.metadata, {
        let mut m = src.metadata.clone();
        m.retain(|(k, _)| k != "general.file_type");
        m.push(("general.quantization_version".into(), Value::U32(2)));
        m.push(("general.file_type".into(), Value::U32(1)));
        m
    });
    // Every tensor, in llama.cpp's loader order (by layer, then name).
    let mut names: Vec<&str> = src.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_by(|a, b| qforge::quant::mix::weight_name_order(a, b));
    let got: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(got, names);
    for b in &g.tensors {
        let a = src.tensors.iter().find(|a| a.name == b.name).unwrap();
        assert_eq!((a.ty, &a.shape), (b.ty, &b.shape));
        assert_eq!(src.data(a), g.data(b), "{}", a.name);
    }
    assert_eq!(g.get("general.file_type"), Some(&Value::U32(1)));
    // Without general.file_type the loader's guess is written, marked as guessed
    // (LLAMA_FTYPE_GUESSED | the most common type's: here MOSTLY_Q8_0).
    let model = dir.path().join("nokey.gguf");
    write_moe_gguf(&model, &[("blk.0.attn_q.weight", vec![64, 64])], false);
    let q8 = dir.path().join("q8.gguf");
    quantize(&["-t", "Q8_0"], &model, &q8);
    let mut g = std::fs::read(&q8).unwrap();
    // Rename the key so that the file has none (same length: the layout stays valid).
    let at = g
        .windows(17)
        .position(|w| w == b"general.file_type")
        .unwrap();
    g[at..at + 17].copy_from_slice(b"general.file_typX");
    std::fs::write(&q8, &g).unwrap();
    let out = dir.path().join("copy2.gguf");
    quantize(&["-t", "COPY"], &q8, &out);
    let g = TensorSource::open(&out).unwrap();
    assert_eq!(g.get("general.file_type"), Some(&Value::U32(1024 | 7)));
    // A folder has no GGUF tensors to copy.
    let o = qforge(&[
        "quantize",
        fixture("hf-tiny-llama").to_str().unwrap(),
        "-o",
        dir.path().join("x.gguf").to_str().unwrap(),
        "-t",
        "COPY",
    ]);
    assert_invalid(&o, "-t COPY copies a GGUF file's tensors");
}

/// IQ1/IQ2 mixes end to end with an imatrix: llama.cpp's types per tensor and every
/// tensor's bytes equal to the codec's (with the tensor's importance weights); without
/// an imatrix, one error line and exit 2.
#[test]
fn iq1_iq2_mixes_with_an_imatrix_are_the_codec_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.gguf");
    let src = TensorSource::open(&input).unwrap();
    let mut entries = Vec::new();
    for t in src.tensors.iter().filter(|t| t.shape.len() == 2) {
        let cols = t.ne()[0] as usize;
        let w: Vec<f32> = (0..cols).map(|i| 0.2 + ((i * 7) % 11) as f32).collect();
        entries.push((t.name.as_str(), w));
    }
    let im = dir.path().join("imatrix.gguf");
    write_gguf_imatrix(&im, &entries);
    let expect: &[(&str, &[(&str, &str)])] = &[
        (
            "IQ2_XXS",
            &[
                ("token_embd.weight", "Q2_K"),
                ("output.weight", "Q5_K"),
                ("blk.0.attn_v.weight", "Q4_K"),
                ("blk.0.attn_q.weight", "IQ2_XXS"),
                ("blk.0.ffn_down.weight", "IQ2_XXS"),
            ],
        ),
        ("IQ2_XS", &[("blk.0.ffn_up.weight", "IQ2_XS")]),
        (
            "IQ1_S",
            &[
                ("blk.0.attn_output.weight", "IQ2_XXS"),
                ("blk.0.attn_k.weight", "IQ1_S"),
            ],
        ),
        ("IQ1_M", &[("blk.0.ffn_gate.weight", "IQ1_M")]),
    ];
    for (mix, types) in expect {
        let out = dir.path().join(format!("{mix}.gguf"));
        let r = quantize(
            &["-t", mix, "--imatrix", im.to_str().unwrap()],
            &input,
            &out,
        );
        for (name, ty) in *types {
            assert_eq!(tensor(&r, name)["out_type"], *ty, "{mix} {name}");
        }
        let q = TensorSource::open(&out).unwrap();
        for t in q.tensors.iter().filter(|t| t.shape.len() == 2) {
            let ty = t.ty.as_ggml().unwrap();
            let w = &entries.iter().find(|(n, _)| *n == t.name).unwrap().1;
            let x = decoded(&src, &t.name);
            let want = codec_bytes(ty, &x, t.ne()[0] as usize, Some(w));
            assert_eq!(q.data(t), &want[..], "{mix} {}", t.name);
        }
        // llama-quantize refuses these mixes without an imatrix.
        let o = qforge(&[
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-t",
            mix,
        ]);
        assert_invalid(&o, "imatrix");
    }
    // A type ggml cannot quantize without weights, forced onto a tensor the imatrix lacks.
    let o = qforge(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        dir.path().join("x.gguf").to_str().unwrap(),
        "-t",
        "Q4_K_M",
        "--token-embedding-type",
        "IQ2_XS",
    ]);
    assert_invalid(&o, "token_embd.weight");
}

/// The IQ3 mixes end to end: llama-quant.cpp's choices on the fixture (GQA 4, one layer),
/// tensors equal to the codec's bytes, and IQ3_XS refused without an imatrix.
#[test]
fn iq3_mixes_choose_like_llama_cpp_and_encode_with_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.gguf");
    let src = TensorSource::open(&input).unwrap();
    let out = dir.path().join("iq3m.gguf");
    let r = quantize(&["-t", "IQ3_M"], &input, &out);
    for (name, ty) in [
        ("output.weight", "Q6_K"),
        ("token_embd.weight", "IQ3_S"),
        ("blk.0.attn_v.weight", "Q4_K"),
        ("blk.0.attn_output.weight", "Q4_K"),
        ("blk.0.attn_q.weight", "IQ3_S"),
        ("blk.0.ffn_down.weight", "IQ3_S"),
    ] {
        assert_eq!(tensor(&r, name)["out_type"], ty, "{name}");
    }
    let q = TensorSource::open(&out).unwrap();
    let name = "blk.0.ffn_up.weight";
    let t = q.tensors.iter().find(|t| t.name == name).unwrap();
    let x = decoded(&src, name);
    assert_eq!(q.data(t), &codec_bytes(GgmlType::IQ3_S, &x, 256, None)[..]);

    // IQ3_XS puts attn_q/attn_k in IQ3_XXS, which needs importance data.
    let refused = dir.path().join("refused.gguf");
    let o = qforge(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        refused.to_str().unwrap(),
        "-t",
        "IQ3_XS",
    ]);
    assert_invalid(&o, "importance");
    assert!(!refused.exists());

    let im = dir.path().join("imatrix.gguf");
    let w: Vec<f32> = (0..256).map(|i| 0.5 + (i % 5) as f32).collect();
    write_gguf_imatrix(
        &im,
        &[
            ("blk.0.attn_q.weight", w.clone()),
            ("blk.0.attn_k.weight", w.clone()),
        ],
    );
    let out = dir.path().join("iq3xs.gguf");
    let r = quantize(
        &["-t", "iq3_xs", "--imatrix", im.to_str().unwrap()],
        &input,
        &out,
    );
    let q = TensorSource::open(&out).unwrap();
    for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight"] {
        assert_eq!(tensor(&r, name)["out_type"], "IQ3_XXS", "{name}");
        let t = q.tensors.iter().find(|t| t.name == name).unwrap();
        let x = decoded(&src, name);
        let want = codec_bytes(GgmlType::IQ3_XXS, &x, 256, Some(&w));
        assert_ne!(want, codec_bytes(GgmlType::IQ3_XXS, &x, 256, None));
        assert_eq!(q.data(t), &want[..], "{name}");
    }
    assert_eq!(tensor(&r, "blk.0.attn_v.weight")["out_type"], "Q4_K");
    assert_eq!(tensor(&r, "blk.0.ffn_gate.weight")["out_type"], "IQ3_S");
}

#[test]
fn text_summary_says_what_was_written_with_or_without_digest() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.gguf");
    let last_line = |args: &[&str], out: &Path| {
        let mut all = vec![
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let o = qforge(&all);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        text.lines().last().unwrap().to_string()
    };
    let plain = last_line(&["-t", "Q4_0"], &dir.path().join("a.gguf"));
    assert!(plain.starts_with("wrote "), "{plain}");
    assert!(!plain.contains("sha256"), "{plain}");
    let hashed = last_line(&["-t", "Q4_0", "--digest"], &dir.path().join("b.gguf"));
    assert!(
        hashed.starts_with("wrote ") && hashed.contains(", sha256 "),
        "{hashed}"
    );
    let dry = last_line(&["-t", "Q4_0", "--dry-run"], &dir.path().join("c.gguf"));
    assert_eq!(dry, "dry run: nothing written");
}

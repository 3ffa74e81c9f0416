//! `quantize --format bnb-safetensors`: the Hugging Face bitsandbytes 4-bit layout.

use crate::common::*;
use qforge::formats::TensorSource;
use qforge::quant::bnb::{self, FourBit};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn layout_and_bytes_match_the_bitsandbytes_codec() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bnb");
    let o = qforge(&[
        "quantize",
        fixture("tiny-llama.safetensors").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "bnb-safetensors",
        "--double-quant",
        "--json",
    ]);
    let r = json(&o);
    assert_eq!(r["totals"]["quantized"], 7, "q,k,v,o,gate,up,down");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let qc = &cfg["quantization_config"];
    assert_eq!(qc["quant_method"], "bitsandbytes");
    assert_eq!(qc["bnb_4bit_quant_type"], "nf4");
    assert_eq!(qc["bnb_4bit_use_double_quant"], true);
    assert_eq!(
        cfg["model_type"], "llama",
        "source config.json carried over"
    );

    let q = TensorSource::open(&out.join("model.safetensors")).unwrap();
    let src = TensorSource::open(&fixture("tiny-llama.safetensors")).unwrap();
    let get = |s: &TensorSource, n: &str| {
        s.tensors
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("{n}"))
            .clone()
    };
    let name = "model.layers.0.self_attn.q_proj.weight";
    let w = get(&q, name);
    assert_eq!(w.shape, [256 * 256 / 2, 1]);
    assert_eq!(w.ty.to_string(), "U8");
    // Same codes, absmax and double-quant arrays as the codec gives for the decoded input.
    let t = get(&src, name);
    let mut x = vec![0f32; t.elements() as usize];
    qforge::quant::decode(t.ty, src.data(&t), &mut x).unwrap();
    let ref_q = bnb::quantize_4bit(FourBit::Nf4, &x, 64);
    let dq = bnb::double_quantize(&ref_q.absmax);
    assert_eq!(q.data(&w), &ref_q.packed[..]);
    assert_eq!(q.data(&get(&q, &format!("{name}.absmax"))), &dq.codes[..]);
    assert_eq!(
        f32s(q.data(&get(&q, &format!("{name}.nested_absmax")))),
        dq.nested_absmax
    );
    assert_eq!(
        f32s(q.data(&get(&q, &format!("{name}.quant_map")))),
        bnb::code_table(FourBit::Nf4)
    );
    assert_eq!(
        f32s(q.data(&get(&q, &format!("{name}.nested_quant_map")))),
        bnb::dynamic_map_signed()
    );
    let state = String::from_utf8(
        q.data(&get(&q, &format!("{name}.quant_state.bitsandbytes__nf4")))
            .to_vec(),
    )
    .unwrap();
    assert!(state.starts_with(r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [256, 256], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": "#), "{state}");
    // Kept tensors are byte for byte the source.
    for kept in [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.norm.weight",
    ] {
        assert_eq!(q.data(&get(&q, kept)), src.data(&get(&src, kept)), "{kept}");
    }
    // An existing output folder is refused, FP4 and block size are honoured.
    assert_invalid(
        &qforge(&[
            "quantize",
            fixture("tiny-llama.safetensors").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "bnb-safetensors",
        ]),
        "already exists",
    );
    let out2 = dir.path().join("fp4");
    json(&qforge(&[
        "quantize",
        fixture("tiny-llama.safetensors").to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
        "--format",
        "bnb-safetensors",
        "-t",
        "fp4",
        "--block-size",
        "128",
        "--json",
    ]));
    let q2 = TensorSource::open(&out2.join("model.safetensors")).unwrap();
    let ref2 = bnb::quantize_4bit(FourBit::Fp4, &x, 128);
    assert_eq!(q2.data(&get(&q2, name)), &ref2.packed[..]);
    assert_eq!(
        f32s(q2.data(&get(&q2, &format!("{name}.absmax")))),
        ref2.absmax
    );
}

/// QFORGE_BNB_PYTHON, or `None` (a skip) when it is not set and QFORGE_REQUIRE_BNB is not.
fn bnb_python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("QFORGE_BNB_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("QFORGE_REQUIRE_BNB").is_none(),
            "QFORGE_REQUIRE_BNB set without QFORGE_BNB_PYTHON"
        );
        eprintln!(
            "skipping: set QFORGE_BNB_PYTHON to a python with torch, bitsandbytes, transformers"
        );
    }
    python
}

/// transformers + bitsandbytes load the folder and its codes equal bitsandbytes' own
/// quantization of the original weights. Needs QFORGE_BNB_PYTHON: a Python with torch,
/// bitsandbytes and transformers (CI installs one); skipped otherwise unless
/// QFORGE_REQUIRE_BNB is set.
#[test]
fn transformers_loads_it_and_bitsandbytes_agrees() {
    let Some(python) = bnb_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.safetensors");
    for (extra, label) in [
        (vec!["--double-quant"], "nf4+dq"),
        (vec!["-t", "fp4"], "fp4"),
    ] {
        let out = dir.path().join(label.replace('+', "_"));
        bnb_of(&input, &out, &extra);
        let o = std::process::Command::new(&python)
            .arg(root().join("scripts/bnb_load_check.py"))
            .arg(&out)
            .arg(fixture("tiny-llama.safetensors"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(line["checked"], 7, "{label}");
        assert_eq!(
            line["exact_codes"], 7,
            "{label}: codes differ from bitsandbytes"
        );
        assert_eq!(line["max_dequant_diff"], 0.0, "{label}");
        assert_eq!(line["logits_finite"], true);
    }
}

/// Runs `quantize INPUT -o OUT --format bnb-safetensors EXTRA...`.
fn bnb_run(input: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "bnb-safetensors",
    ];
    args.extend_from_slice(extra);
    qforge(&args)
}

/// [`bnb_run`] with `--json`; the report.
fn bnb_of(input: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    json(&bnb_run(input, out, &[extra, &["--json"]].concat()))
}

fn gguf_of(folder: &std::path::Path, out: &std::path::Path, ty: &str) {
    json(&qforge(&[
        "quantize",
        folder.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        ty,
        "--json",
    ]));
}

fn values(s: &TensorSource, name: &str) -> Vec<f32> {
    let t = s
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name}"));
    let mut x = vec![0f32; t.elements() as usize];
    qforge::quant::decode(t.ty, s.data(t), &mut x).unwrap();
    x
}

fn config(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// Folder -> F32 GGUF (llama.cpp names, Q/K rows permuted) -> bnb gives the same folder as
/// folder -> bnb: the same Hugging Face names (o_proj included), the same NF4 codes
/// (so the rope permutation is undone exactly), the same kept values, and a config.json
/// with the source's hyperparameters.
#[test]
fn a_gguf_goes_back_to_hugging_face_names_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture("hf-tiny-llama");
    let gguf = dir.path().join("f32.gguf");
    gguf_of(&folder, &gguf, "F32");
    let (back, direct) = (dir.path().join("back"), dir.path().join("direct"));
    let r = bnb_of(&gguf, &back, &["--double-quant"]);
    bnb_of(&folder, &direct, &["--double-quant"]);
    assert_eq!(r["totals"]["quantized"], 14, "7 linear weights in 2 blocks");
    let b = TensorSource::open(&back.join("model.safetensors")).unwrap();
    let d = TensorSource::open(&direct.join("model.safetensors")).unwrap();
    let names = |s: &TensorSource| {
        let mut n: Vec<String> = s.tensors.iter().map(|t| t.name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&b), names(&d));
    assert!(names(&b).contains(&"model.layers.1.self_attn.o_proj.weight".to_string()));
    // The GGUF's Q rows are permuted: the equality below is not the identity's.
    let g = TensorSource::open(&gguf).unwrap();
    let src = TensorSource::open(&folder.join("model.safetensors")).unwrap();
    let q = "model.layers.0.self_attn.q_proj.weight";
    assert_ne!(values(&g, "blk.0.attn_q.weight"), values(&src, q));
    for t in &d.tensors {
        let bt = b.tensors.iter().find(|x| x.name == t.name).unwrap();
        if t.name.contains(".quant_state.") {
            let text = |s: &TensorSource, t| String::from_utf8(s.data(t).to_vec()).unwrap();
            let want = text(&d, t).replace("\"bfloat16\"", "\"float32\"");
            assert_eq!(text(&b, bt), want, "{}", t.name);
        } else if t.ty.to_string() == "U8" {
            assert_eq!(bt.shape, t.shape, "{}", t.name);
            assert_eq!(b.data(bt), d.data(t), "{}", t.name);
        } else {
            assert_eq!(values(&b, &t.name), values(&d, &t.name), "{}", t.name);
        }
    }
    let (cb, cs) = (config(&back), config(&folder));
    for key in [
        "architectures",
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "vocab_size",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "hidden_act",
    ] {
        assert_eq!(cb[key], cs[key], "{key}");
    }
    assert_eq!(cb["quantization_config"]["bnb_4bit_use_double_quant"], true);
}

/// A GGUF in a quantized ggml type is dequantized through its codec first: the 4-bit
/// weights and the kept (now F32) tensors stay close to the source folder's values.
#[test]
fn a_quantized_gguf_is_dequantized_first() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture("hf-tiny-llama");
    let gguf = dir.path().join("q8.gguf");
    gguf_of(&folder, &gguf, "Q8_0");
    let back = dir.path().join("back");
    bnb_of(&gguf, &back, &[]);
    let b = TensorSource::open(&back.join("model.safetensors")).unwrap();
    let src = TensorSource::open(&folder.join("model.safetensors")).unwrap();
    let rel = |x: &[f32], y: &[f32]| {
        let e: f64 = x.iter().zip(y).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let n: f64 = y.iter().map(|b| f64::from(*b).powi(2)).sum();
        (e / n).sqrt()
    };
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ] {
        let want = values(&src, name);
        let n = want.len();
        let packed = b.data(b.tensors.iter().find(|t| t.name == name).unwrap());
        let absmax = values(&b, &format!("{name}.absmax"));
        let mut got = vec![0f32; n];
        bnb::dequantize_4bit(FourBit::Nf4, packed, &absmax, 64, n, &mut got);
        let e = rel(&got, &want);
        assert!(e < 0.15, "{name}: relative error {e}");
    }
    let embd = "model.embed_tokens.weight";
    let t = b.tensors.iter().find(|t| t.name == embd).unwrap();
    assert_eq!(t.ty.to_string(), "F32");
    let e = rel(&values(&b, embd), &values(&src, embd));
    assert!(e < 0.01, "Q8_0 embedding: relative error {e}");
}

/// What cannot be written back is refused with one line and no output folder.
#[test]
fn gguf_inputs_that_cannot_go_back_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // llama3 rope scaling lives in rope_freqs; config.json's rope_scaling is not rebuilt.
    let folder = dir.path().join("llama3");
    std::fs::create_dir(&folder).unwrap();
    for f in std::fs::read_dir(fixture("hf-tiny-llama")).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, folder.join(p.file_name().unwrap())).unwrap();
    }
    let mut cfg = config(&folder);
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 128});
    std::fs::write(folder.join("config.json"), cfg.to_string()).unwrap();
    let gguf = dir.path().join("llama3.gguf");
    gguf_of(&folder, &gguf, "F32");
    let out = dir.path().join("out");
    let run = |input: &std::path::Path| bnb_run(input, &out, &[]);
    assert_invalid(&run(&gguf), "rope_freqs");
    assert_invalid(&run(&fixture("mixed-types.gguf")), "supported: llama");
    assert!(!out.exists());
}

/// A folder's tokenizer and generation files travel with the weights, byte for byte.
#[test]
fn a_folder_carries_its_tokenizer_and_generation_files() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture("hf-tiny-llama");
    let out = dir.path().join("out");
    bnb_of(&folder, &out, &[]);
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(folder.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(
        !out.join("README.md").exists(),
        "only tokenizer and generation files"
    );
    // A safetensors file with config.json beside it is its folder too.
    let out2 = dir.path().join("out2");
    bnb_of(&folder.join("model.safetensors"), &out2, &[]);
    assert!(out2.join("tokenizer.model").is_file());
}

/// With QFORGE_BNB_PYTHON: AutoTokenizer loads the output of a folder, and transformers +
/// bitsandbytes load both outputs (folder, and folder -> GGUF -> back) to the same logits.
#[test]
fn transformers_loads_the_tokenizer_and_the_gguf_round_trip() {
    let Some(python) = bnb_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = root().join("scripts/bnb_folder_check.py");
    let py = |args: &[&std::path::Path]| {
        let o = std::process::Command::new(&python)
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let folder = dir.path().join("tiny");
    py(&[
        std::path::Path::new("--make-tiny"),
        &fixture("hf-tiny-llama"),
        &folder,
    ]);
    let gguf = dir.path().join("f32.gguf");
    gguf_of(&folder, &gguf, "F32");
    let (back, direct) = (dir.path().join("back"), dir.path().join("direct"));
    bnb_of(&gguf, &back, &[]);
    bnb_of(&folder, &direct, &[]);
    let check = |out: &std::path::Path| -> serde_json::Value {
        let stdout = py(&[out, &folder]);
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    };
    let (b, d) = (check(&back), check(&direct));
    assert_eq!(d["tokenizer_matches"], true, "{d}");
    for r in [&b, &d] {
        assert_eq!(r["logits_finite"], true, "{r}");
        assert!(r["logits_rel_err"].as_f64().unwrap() < 0.5, "{r}");
    }
    let (eb, ed) = (
        b["logits_rel_err"].as_f64().unwrap(),
        d["logits_rel_err"].as_f64().unwrap(),
    );
    assert!(
        (eb - ed).abs() < 1e-4,
        "GGUF round trip {eb} vs folder {ed}"
    );
}

/// Gemma2's norms go to GGUF as `w + 1` and come back as `w`; its extra norms get their
/// Hugging Face names back.
#[test]
fn gemma_norms_come_back_without_the_plus_one() {
    use safetensors::tensor::TensorView;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("gemma2");
    std::fs::create_dir(&folder).unwrap();
    let (hidden, ff, vocab) = (32usize, 64usize, 64usize);
    let cfg = serde_json::json!({
        "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "vocab_size": vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "sliding_window": 64, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    });
    std::fs::write(folder.join("config.json"), cfg.to_string()).unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
    ];
    let l = "model.layers.0";
    for (n, shape) in [
        ("input_layernorm", vec![hidden]),
        ("post_attention_layernorm", vec![hidden]),
        ("pre_feedforward_layernorm", vec![hidden]),
        ("post_feedforward_layernorm", vec![hidden]),
        ("self_attn.q_proj", vec![32, hidden]),
        ("self_attn.k_proj", vec![16, hidden]),
        ("self_attn.v_proj", vec![16, hidden]),
        ("self_attn.o_proj", vec![hidden, 32]),
        ("mlp.gate_proj", vec![ff, hidden]),
        ("mlp.up_proj", vec![ff, hidden]),
        ("mlp.down_proj", vec![hidden, ff]),
    ] {
        tensors.push((format!("{l}.{n}.weight"), shape));
    }
    // Norm values a float32 `+ 1 - 1` keeps exactly.
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(k, (_, s))| {
            let n: usize = s.iter().product();
            (0..n)
                .flat_map(|i| (((i * 7 + k * 3) % 16) as f32 / 8.0 - 1.0).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| {
            let v = TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &folder.join("model.safetensors")).unwrap();
    let gguf = dir.path().join("g.gguf");
    json(&qforge(&[
        "quantize",
        folder.to_str().unwrap(),
        "-o",
        gguf.to_str().unwrap(),
        "-t",
        "F32",
        "--no-vocab",
        "--json",
    ]));
    let back = dir.path().join("back");
    bnb_of(&gguf, &back, &[]);
    let src = TensorSource::open(&folder.join("model.safetensors")).unwrap();
    let g = TensorSource::open(&gguf).unwrap();
    let b = TensorSource::open(&back.join("model.safetensors")).unwrap();
    let plus_one: Vec<f32> = values(&src, "model.norm.weight")
        .iter()
        .map(|v| v + 1.0)
        .collect();
    assert_eq!(values(&g, "output_norm.weight"), plus_one, "forward adds 1");
    for (name, _) in tensors.iter().filter(|(n, _)| n.contains("norm")) {
        assert_eq!(values(&b, name), values(&src, name), "{name}");
    }
    let c = config(&back);
    assert_eq!(c["architectures"][0], "Gemma2ForCausalLM");
    assert_eq!(c["query_pre_attn_scalar"], 8);
    assert_eq!(c["final_logit_softcapping"], 30.0);
    assert_eq!(c["tie_word_embeddings"], true);
}

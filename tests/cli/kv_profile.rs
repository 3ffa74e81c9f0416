//! `qforge kv-profile build` / `verify` end to end: exit codes, tamper rejection,
//! safetensors KV input with the documented naming, baselines, shape from a model.

use crate::common::*;
use qforge::formats::safetensors_writer::{header_estimate, SafetensorsWriter, StTensor};
use qforge::kv::synth::{synth_kv, SynthConfig};
use qforge::kv::tensor::tensor_name;
use std::path::Path;

const SHAPE: &str = "layers=2,kv_heads=2,query_heads=4,head_dim=64,tokens=256";

fn build(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let mut args = vec![
        "kv-profile",
        "build",
        "--shape",
        SHAPE,
        "-o",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = json(&qforge(&args));
    assert_eq!(r["codec"], "fibquant-k4-n256");
    out
}

/// Writes KV (and queries) as safetensors with the documented names and layouts.
fn write_kv(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cfg = SynthConfig {
        layers: 2,
        kv_heads: 2,
        query_heads: 4,
        head_dim: 64,
        tokens: 256,
        n_queries: 8,
        seed: 5,
        ..SynthConfig::default()
    };
    let (kv, q) = synth_kv(&cfg).unwrap();
    let write = |path: &Path, tensors: Vec<(String, Vec<u64>, Vec<f32>)>| {
        let est = header_estimate(
            &tensors
                .iter()
                .map(|(n, s, _)| (n.len(), s.len()))
                .collect::<Vec<_>>(),
            &Default::default(),
        );
        let f = std::fs::File::create(path).unwrap();
        let mut w = SafetensorsWriter::new(f, est, Default::default()).unwrap();
        for (name, shape, data) in tensors {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.tensor(
                StTensor {
                    name,
                    dtype: "F32",
                    shape,
                },
                &bytes,
            )
            .unwrap();
        }
        w.finish().unwrap();
    };
    let mut kv_t = Vec::new();
    for (i, l) in kv.layers.iter().enumerate() {
        for (kind, heads) in [("key", &l.keys), ("value", &l.values)] {
            let data: Vec<f32> = heads.iter().flat_map(|m| m.data().to_vec()).collect();
            kv_t.push((
                tensor_name(i, kind),
                vec![heads.len() as u64, 256, 64],
                data,
            ));
        }
    }
    let q_t = q
        .layers
        .iter()
        .enumerate()
        .map(|(i, heads)| {
            let data: Vec<f32> = heads.iter().flat_map(|m| m.data().to_vec()).collect();
            (
                tensor_name(i, "query"),
                vec![heads.len() as u64, 8, 64],
                data,
            )
        })
        .collect();
    let (kp, qp) = (dir.join("kv.safetensors"), dir.join("q.safetensors"));
    write(&kp, kv_t);
    write(&qp, q_t);
    (kp, qp)
}

#[test]
fn verify_passes_fails_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let loose = build(
        dir.path(),
        "loose.json",
        &["--max-attention-tv", "0.9", "--max-key-logit-mse", "100"],
    );
    let tight = build(dir.path(), "tight.json", &["--max-attention-tv", "0.001"]);
    let receipt = dir.path().join("receipt.json");
    let out = qforge(&[
        "kv-profile",
        "verify",
        loose.to_str().unwrap(),
        "-o",
        receipt.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["verdict"], "pass");
    assert_eq!(r["eval_source"], "synthetic");
    assert_eq!(r["bits_per_value"], 2.25, "(16 + 16 * 8) / 64");
    assert_eq!(r["checks"].as_array().unwrap().len(), 2);
    let tv = r["metrics"]["attention_tv"].as_f64().unwrap();
    assert!(tv > 0.0 && tv < 0.9, "{tv}");

    let out = qforge(&["kv-profile", "verify", tight.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "over budget exits 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_attention_tv"));

    // Tampering with a parameter, a budget, or the codebook bytes is rejected (exit 2).
    let text = std::fs::read_to_string(&loose).unwrap();
    let p: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex = p["codebook"]["data"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if hex.starts_with('0') { "1" } else { "0" },
        &hex[1..]
    );
    for (what, tampered) in [
        (
            "budget",
            text.replace("\"max_attention_tv\": 0.9", "\"max_attention_tv\": 0.95"),
        ),
        ("codebook", text.replace(&hex, &flipped)),
        ("seed", text.replacen("\"seed\": 0", "\"seed\": 7", 1)),
    ] {
        assert_ne!(tampered, text, "{what} edit applied");
        let t = dir.path().join(format!("tampered-{what}.json"));
        std::fs::write(&t, tampered).unwrap();
        let out = qforge(&["kv-profile", "verify", t.to_str().unwrap()]);
        assert_invalid(&out, "");
    }
    assert_invalid(
        &qforge(&["kv-profile", "verify", "/nonexistent.json"]),
        "cannot read",
    );

    // Several profiles on one evaluation: their receipts in order, each as verified alone
    // (the synthetic KV is the first profile's: same shape and seed here); over budget
    // names the profile; a bad one is invalid input.
    let both = dir.path().join("both.json");
    let lt = [loose.to_str().unwrap(), tight.to_str().unwrap()];
    let out = qforge(
        &[
            &["kv-profile", "verify"],
            &lt[..],
            &["--json", "-o"],
            &[both.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "one of them over budget exits 3"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tight.json: max_attention_tv"), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "qforge.kv-receipts/1");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&both).unwrap()).unwrap();
    assert_eq!(written, doc);
    let receipts = doc["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0], r, "the first receipt as verified alone");
    assert_eq!(receipts[1]["verdict"], "fail");
    assert_eq!(receipts[1]["metrics"], r["metrics"], "same codec, same KV");
    assert_invalid(
        &qforge(&["kv-profile", "verify", lt[0], "/nonexistent.json"]),
        "cannot read",
    );
}

#[test]
fn verify_on_safetensors_kv_with_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let profile = build(
        dir.path(),
        "p.json",
        &["--protect-first", "4", "--max-attention-tv", "0.9"],
    );
    let (kv, q) = write_kv(dir.path());
    let r = json(&qforge(&[
        "kv-profile",
        "verify",
        profile.to_str().unwrap(),
        "--eval",
        kv.to_str().unwrap(),
        "--queries",
        q.to_str().unwrap(),
        "--compare",
        "--json",
    ]));
    assert_eq!(r["shape"]["tokens"], 256);
    assert_eq!(r["shape"]["queries_per_head"], 8);
    assert!(
        r["storage"]["raw_rows"].as_u64().unwrap() >= 2 * 2 * 2 * 4,
        "protected first tokens stored raw"
    );
    let names: Vec<&str> = r["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["codec"].as_str().unwrap())
        .collect();
    // KIVI at group 32 and, appended, at the group nearest the profile's 2.25 bits from
    // above (keys 2.25, values one group of 64 channels 2.5: 2.375 bits).
    assert_eq!(
        names,
        [
            "turboquant-b2",
            "kivi-b2-g32",
            "q8_0",
            "q4_0",
            "kivi-b2-g128"
        ]
    );
    assert_eq!(r["baselines"][4]["bits_per_value"], 2.375);
    let q8_tv = r["baselines"][2]["metrics"]["attention_tv"]
        .as_f64()
        .unwrap();
    let ours = r["metrics"]["attention_tv"].as_f64().unwrap();
    assert!(
        q8_tv < ours,
        "8.5-bit q8_0 beats 2.25-bit fibquant on TV: {q8_tv} vs {ours}"
    );
    // A calibration file changes the profile and is recorded by digest.
    let cal = json(&qforge(&[
        "kv-profile",
        "build",
        "--shape",
        SHAPE,
        "--calibration",
        kv.to_str().unwrap(),
        "-o",
        dir.path().join("cal.json").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(cal["calibration_digest"].as_str().unwrap().len(), 64);
    // Missing tensors and wrong head_dim are invalid input.
    assert_invalid(
        &qforge(&[
            "kv-profile",
            "verify",
            profile.to_str().unwrap(),
            "--eval",
            q.to_str().unwrap(),
            "--queries",
            q.to_str().unwrap(),
        ]),
        "layer.0.key",
    );
}

#[test]
fn build_from_gguf_metadata_and_config_json_and_bad_args() {
    let dir = tempfile::tempdir().unwrap();
    for model in [
        fixture("tiny-llama.gguf"),
        fixture("tiny-llama.config.json"),
    ] {
        let out = dir.path().join("m.json");
        json(&qforge(&[
            "kv-profile",
            "build",
            "--from-model",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]));
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(p["shape"]["layers"], 1, "{}", model.display());
        assert_eq!(p["shape"]["kv_heads"], 1);
        assert_eq!(p["shape"]["query_heads"], 4);
        assert_eq!(p["shape"]["head_dim"], 64);
    }
    let out = dir.path().join("x.json");
    assert_invalid(
        &qforge(&[
            "kv-profile",
            "build",
            "--shape",
            "layers=1",
            "-o",
            out.to_str().unwrap(),
        ]),
        "missing kv_heads",
    );
    assert_invalid(
        &qforge(&[
            "kv-profile",
            "build",
            "--shape",
            SHAPE,
            "--codebook-size",
            "100",
            "-o",
            out.to_str().unwrap(),
        ]),
        "",
    );
    assert!(!out.exists(), "nothing written on error");
}

/// `capture` on the tiny llama fixture, a role-aware profile from that capture, and
/// `verify --model` with perplexity in the receipt.
#[test]
fn capture_build_and_verify_with_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("hf-tiny-llama");
    let tok = fixture("tokenizers/tiny-bpe.tokenizer.json");
    let text = fixture("kv/calibration.txt");
    let cap = dir.path().join("cap.safetensors");
    let [m, t, x, c] = [&model, &tok, &text, &cap].map(|p| p.to_str().unwrap().to_string());
    let r = json(&qforge(&[
        "kv-profile",
        "capture",
        "--model",
        &m,
        "--tokenizer",
        &t,
        "--text",
        &x,
        "--tokens",
        "64",
        "--queries",
        "4",
        "-o",
        &c,
        "--json",
    ]));
    assert_eq!(r["schema"], "qforge.kv-capture/1");
    assert_eq!(
        [
            &r["layers"],
            &r["kv_heads"],
            &r["query_heads"],
            &r["head_dim"],
            &r["tokens"]
        ],
        [2, 2, 4, 8, 64]
    );
    assert_eq!(r["perplexity"]["scored"], 31);
    // The capture is a calibration file for build, with the documented layout.
    let profile = dir.path().join("p.json");
    let p = profile.to_str().unwrap();
    let cfg = model.join("config.json");
    let build = |axis: &str, calibration: bool, extra: &[&str]| {
        let mut a = vec![
            "kv-profile",
            "build",
            "--from-model",
            cfg.to_str().unwrap(),
            "--block-dim",
            "2",
            "--bits",
            "6",
            "--axis",
            axis,
            "--max-perplexity-delta",
            "1000",
            "-o",
            p,
        ];
        if calibration {
            a.extend(["--calibration", &c]);
        }
        a.extend_from_slice(extra);
        qforge(&a)
    };
    assert_invalid(&build("role-aware", false, &[]), "calibration");
    assert!(build("role-aware", true, &[]).status.success());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(doc["axis"], "role_aware_kivi_style");
    assert_eq!(doc["channels"]["keys"].as_array().unwrap().len(), 2);
    assert!(doc["channels"]["values"].as_array().unwrap().is_empty());
    assert!(doc["digests"]["axis"].is_string());
    let verify = |chunks: &str| {
        qforge(&[
            "kv-profile",
            "verify",
            p,
            "--model",
            &m,
            "--tokenizer",
            &t,
            "--text",
            &x,
            "--tokens",
            "64",
            "--model-queries",
            "4",
            "--chunks",
            chunks,
            "--json",
        ])
    };
    let r = json(&verify("1"));
    let ppl = &r["perplexity"];
    assert_eq!(ppl["tokens"], 64);
    assert!(ppl["fp16"].as_f64().unwrap() > 1.0, "{ppl}");
    let delta = ppl["compressed"].as_f64().unwrap() - ppl["fp16"].as_f64().unwrap();
    assert_eq!(ppl["delta"].as_f64().unwrap(), delta);
    assert!(r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "max_perplexity_delta" && c["pass"] == true));
    // Perplexity over two chunks (llama-perplexity's --chunks): twice the tokens scored,
    // the attention metrics still on the first chunk.
    let r2 = json(&verify("2"));
    assert_eq!(r2["perplexity"]["tokens"], 128);
    assert_eq!(r2["perplexity"]["scored"], 62);
    assert_ne!(r2["perplexity"]["fp16"], ppl["fp16"]);
    assert_eq!(r2["metrics"], r["metrics"]);
    assert_invalid(&verify("0"), "--chunks");
    // Maps in learned bases (--channel-basis): d x d per map, applied as the model runs.
    let basis = |axis: &str| build(axis, true, &["--channel-basis"]);
    assert_invalid(&basis("per-token"), "--channel-basis");
    assert!(basis("per-channel").status.success());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    for role in ["keys", "values"] {
        assert_eq!(
            doc["channels"][role][1][1]["basis"]
                .as_array()
                .unwrap()
                .len(),
            64
        );
    }
    let rb = json(&verify("1"));
    assert_eq!(rb["perplexity"]["fp16"], ppl["fp16"]);
    assert_ne!(rb["perplexity"]["compressed"], ppl["compressed"]);
    // 8-bit norms: one byte less per row; they need a map for every coded role.
    let eight = |axis: &str| build(axis, true, &["--norm-bits", "8", "--json"]);
    assert_invalid(&eight("role-aware"), "8-bit norms");
    let b8 = json(&eight("per-channel"));
    assert!(b8["codec"].as_str().unwrap().ends_with("-norm8"), "{b8}");
    // head_dim 8: (8 + 4 blocks x 6 bits) / 8 against (16 + 24) / 8.
    assert_eq!(b8["bits_per_value"], 4.0);
    let r8 = json(&verify("1"));
    assert!(r8["perplexity"]["compressed"].as_f64().unwrap().is_finite());
    // A tampered channel scale is caught by the digests.
    let text = std::fs::read_to_string(&profile).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["channels"]["keys"][0][0]["scale"][0] = serde_json::json!(123.0);
    std::fs::write(&profile, serde_json::to_string(&doc).unwrap()).unwrap();
    assert_invalid(&qforge(&["kv-profile", "verify", p]), "digest mismatch");
}

#[test]
fn capture_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let o = out.to_str().unwrap();
    let text = fixture("kv/calibration.txt");
    let x = text.to_str().unwrap();
    let tok = fixture("tokenizers/tiny-bpe.tokenizer.json");
    let t = tok.to_str().unwrap();
    let model = fixture("hf-tiny-llama");
    let m = model.to_str().unwrap();
    // No tokenizer.json beside the model.
    assert_invalid(
        &qforge(&["kv-profile", "capture", "--model", m, "--text", x, "-o", o]),
        "--tokenizer",
    );
    let gguf = fixture("tiny-llama.gguf");
    assert_invalid(
        &qforge(&[
            "kv-profile",
            "capture",
            "--model",
            gguf.to_str().unwrap(),
            "--text",
            x,
            "-o",
            o,
        ]),
        "--tokenizer",
    );
    assert_invalid(
        &qforge(&[
            "kv-profile",
            "capture",
            "--model",
            m,
            "--tokenizer",
            t,
            "--text",
            x,
            "--tokens",
            "1000000",
            "-o",
            o,
        ]),
        "fewer than --tokens",
    );
    assert_invalid(
        &qforge(&[
            "kv-profile",
            "capture",
            "--model",
            m,
            "--tokenizer",
            x,
            "--text",
            x,
            "-o",
            o,
        ]),
        "not a tokenizer.json",
    );
    assert!(!out.exists());
}

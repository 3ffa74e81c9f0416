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

/// transformers + bitsandbytes load the folder and its codes equal bitsandbytes' own
/// quantization of the original weights. Needs QFORGE_BNB_PYTHON: a Python with torch,
/// bitsandbytes and transformers (CI installs one); skipped otherwise unless
/// QFORGE_REQUIRE_BNB is set.
#[test]
fn transformers_loads_it_and_bitsandbytes_agrees() {
    let Some(python) = std::env::var_os("QFORGE_BNB_PYTHON") else {
        assert!(
            std::env::var_os("QFORGE_REQUIRE_BNB").is_none(),
            "QFORGE_REQUIRE_BNB set without QFORGE_BNB_PYTHON"
        );
        eprintln!(
            "skipping: set QFORGE_BNB_PYTHON to a python with torch, bitsandbytes, transformers"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.safetensors");
    for (extra, label) in [
        (vec!["--double-quant"], "nf4+dq"),
        (vec!["-t", "fp4"], "fp4"),
    ] {
        let out = dir.path().join(label.replace('+', "_"));
        let mut args = vec![
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "bnb-safetensors",
            "--json",
        ];
        args.extend(extra);
        json(&qforge(&args));
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

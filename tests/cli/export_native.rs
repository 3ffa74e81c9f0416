//! `qforge export-native` (QNAT v2), `--dequantize`, `inspect --verify`, and
//! `quantize --format qnat`.

use crate::common::*;
use qforge::formats::TensorSource;
use qforge::quant::bnb::{self, FourBit};

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn decoded(src: &TensorSource, name: &str) -> Vec<f32> {
    let t = src.tensors.iter().find(|t| t.name == name).unwrap();
    let mut out = vec![0f32; t.elements() as usize];
    qforge::quant::decode(t.ty, src.data(t), &mut out).unwrap();
    out
}

#[test]
fn nf4_round_trip_is_exact_and_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.safetensors");
    let src = TensorSource::open(&input).unwrap();
    for (dq, kind, scheme) in [(true, FourBit::Nf4, "nf4"), (false, FourBit::Fp4, "fp4")] {
        let out = dir.path().join(format!("{scheme}.qnat"));
        let mut args = vec![
            "export-native",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--scheme",
            scheme,
            "--json",
            "--model-name",
            "tiny",
        ];
        if dq {
            args.push("--double-quant");
        }
        let r = json(&qforge(&args));
        assert_eq!(
            r["totals"]["quantized"], 9,
            "2-D weights; 1-D norms repacked"
        );
        let v = json(&qforge_on(&["inspect", "--json", "--verify"], &out));
        assert_eq!(v["format"], "qnat");
        assert_eq!(v["version"], 2);
        assert_eq!(v["verify"]["ok"], true);
        assert_eq!(v["verify"]["tensors"], 12);
        let meta = v["metadata"].as_array().unwrap();
        assert!(meta
            .iter()
            .any(|m| m["key"] == "qnat.model.name" && m["value"] == "tiny"));
        assert!(meta
            .iter()
            .any(|m| m["key"].as_str().unwrap().starts_with("qnat.source.")
                && m["value"].as_str().unwrap().len() == 64));

        let deq = dir.path().join(format!("{scheme}.safetensors"));
        json(&qforge(&[
            "export-native",
            out.to_str().unwrap(),
            "--dequantize",
            "-o",
            deq.to_str().unwrap(),
            "--json",
        ]));
        let back = TensorSource::open(&deq).unwrap();
        for t in &src.tensors {
            let x = decoded(&src, &t.name);
            let y = decoded(&back, &t.name);
            if t.shape.len() < 2 {
                assert_eq!(x, y, "{} kept exactly", t.name);
                continue;
            }
            let q = bnb::quantize_4bit(kind, &x, 64);
            let absmax = if dq {
                let d = bnb::double_quantize(&q.absmax);
                let mut a = vec![0f32; q.absmax.len()];
                bnb::double_dequantize(&d, &mut a);
                a
            } else {
                q.absmax.clone()
            };
            let mut want = vec![0f32; x.len()];
            bnb::dequantize_4bit(kind, &q.packed, &absmax, 64, x.len(), &mut want);
            assert_eq!(
                y, want,
                "{}: dequantized values equal bitsandbytes' dequantization",
                t.name
            );
        }
        // Flip one data byte: --verify names the tensor and exits 2; a header byte: open fails.
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[200] ^= 0x55;
        let bad = dir.path().join("bad.qnat");
        std::fs::write(&bad, &bytes).unwrap();
        assert_invalid(
            &qforge_on(&["inspect", "--verify"], &bad),
            "verification failed",
        );
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&bad, &bytes).unwrap();
        assert_invalid(&qforge_on(&["inspect"], &bad), "");
    }
    assert_invalid(
        &qforge_on(&["inspect", "--verify"], &fixture("tiny-llama.gguf")),
        "store none",
    );
}

#[test]
fn ggml_schemes_repack_losslessly_and_quantize_format_qnat_shares_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("q8.gguf");
    json(&qforge(&[
        "quantize",
        "--json",
        fixture("tiny-llama.gguf").to_str().unwrap(),
        "-o",
        q8.to_str().unwrap(),
        "-t",
        "Q8_0",
        "--pure",
    ]));
    let out = dir.path().join("q8.qnat");
    let r = json(&qforge(&[
        "export-native",
        "--json",
        q8.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
    let t = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(t["out_type"], "Q8_0");
    assert_eq!(t["reason"], "repacked losslessly");
    let (g, n) = (
        TensorSource::open(&q8).unwrap(),
        TensorSource::open(&out).unwrap(),
    );
    let gt = g
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    let nt = n
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(g.data(gt), n.data(nt), "same bytes");
    assert_eq!(nt.shape, gt.shape);

    // quantize --format qnat -t q4_k == export-native --scheme q4_k (same pipeline).
    let a = dir.path().join("a.qnat");
    let b = dir.path().join("b.qnat");
    let ra = json(&qforge(&[
        "quantize",
        "--json",
        fixture("tiny-llama.gguf").to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--format",
        "qnat",
        "-t",
        "q4_k",
        "--digest",
    ]));
    let rb = json(&qforge(&[
        "export-native",
        "--json",
        fixture("tiny-llama.gguf").to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "--scheme",
        "q4_k",
    ]));
    assert!(ra["sha256"].is_string());
    assert_eq!(ra["sha256"], rb["sha256"]);
    let src = TensorSource::open(&fixture("tiny-llama.gguf")).unwrap();
    let x = decoded(&src, "blk.0.ffn_up.weight");
    let qa = TensorSource::open(&a).unwrap();
    let ta = qa
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.ffn_up.weight")
        .unwrap();
    let c = qforge::formats::ggml_type::GgmlType::Q4_K.codec().unwrap();
    let mut want = vec![0u8; x.len() / 256 * 144];
    for (r, d) in x.chunks(256).zip(want.chunks_mut(144)) {
        (c.quantize_row)(r, d, None);
    }
    assert_eq!(qa.data(ta), &want[..]);
    // Dequantize gives the codec's decode.
    let deq = dir.path().join("a.safetensors");
    json(&qforge(&[
        "export-native",
        a.to_str().unwrap(),
        "--dequantize",
        "-o",
        deq.to_str().unwrap(),
        "--json",
    ]));
    let back = TensorSource::open(&deq).unwrap();
    let mut y = vec![0f32; x.len()];
    (c.dequantize)(&want, &mut y);
    assert_eq!(
        f32s(
            back.data(
                back.tensors
                    .iter()
                    .find(|t| t.name == "blk.0.ffn_up.weight")
                    .unwrap()
            )
        ),
        y
    );
    assert_invalid(
        &qforge(&[
            "export-native",
            a.to_str().unwrap(),
            "-o",
            dir.path().join("c.qnat").to_str().unwrap(),
        ]),
        "already QNAT v2",
    );
}

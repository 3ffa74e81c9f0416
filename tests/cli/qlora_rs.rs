//! qlora-rs's own QNAT files (fixtures/qlora-rs/v1.0.5 and v1.3.0, made by
//! tools/qlora-gen with the real crates) read as they are: `inspect` (+ `--json`,
//! `--verify`), `export-native --dequantize` with `--scales stored|exact`, and migration,
//! every value equal to qlora-rs's own decode written next to each file.

use crate::common::*;
use qforge::formats::TensorSource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const VERSIONS: [&str; 2] = ["v1.0.5", "v1.3.0"];

fn files(version: &str) -> Vec<PathBuf> {
    let dir = root().join("fixtures/qlora-rs").join(version);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "qnat"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "{}: fixtures missing", dir.display());
    v
}

/// Every tensor of a safetensors file as f32 bit patterns.
fn f32_bits(path: &Path) -> BTreeMap<String, Vec<u32>> {
    let src = TensorSource::open(path).unwrap();
    src.tensors
        .iter()
        .map(|t| {
            let mut out = vec![0f32; t.elements() as usize];
            qforge::quant::decode(t.ty, src.data(t), &mut out).unwrap();
            (t.name.clone(), out.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

fn expected(qnat: &Path) -> BTreeMap<String, Vec<u32>> {
    f32_bits(&qnat.with_extension("expected.safetensors"))
}

fn dequantize(input: &Path, out: &Path, scales: &str) -> std::process::Output {
    qforge(&[
        "export-native",
        input.to_str().unwrap(),
        "--dequantize",
        "--scales",
        scales,
        "-o",
        out.to_str().unwrap(),
    ])
}

#[test]
fn dequantize_equals_qlora_rs_own_decode() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for version in VERSIONS {
        for f in files(version) {
            let want = expected(&f);
            let out = dir.path().join("stored.safetensors");
            let o = dequantize(&f, &out, "stored");
            assert!(
                o.status.success(),
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            let got = f32_bits(&out);
            for (name, values) in &got {
                assert_eq!(Some(values), want.get(name), "{} {name}", f.display());
                checked += 1;
            }
            let exact: Vec<&String> = want.keys().filter(|k| k.ends_with("@exact")).collect();
            let o = dequantize(&f, &out, "exact");
            let has_dq_without_exact = version == "v1.3.0" && got.keys().any(|k| k.contains("dq"));
            if has_dq_without_exact {
                assert_invalid(&o, "no exact scales");
                continue;
            }
            assert!(
                o.status.success(),
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            let got_exact = f32_bits(&out);
            for name in exact {
                let plain = name.trim_end_matches("@exact");
                assert_eq!(
                    got_exact.get(plain),
                    want.get(name),
                    "{} {name}",
                    f.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} tensors compared");
}

#[test]
fn migration_keeps_qlora_rs_values_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    for version in VERSIONS {
        for f in files(version) {
            let want = expected(&f);
            let migrated = dir.path().join("m.qnat");
            let o = qforge(&[
                "export-native",
                f.to_str().unwrap(),
                "-o",
                migrated.to_str().unwrap(),
            ]);
            assert!(
                o.status.success(),
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            let v = qforge(&["inspect", migrated.to_str().unwrap(), "--verify"]);
            assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
            let out = dir.path().join("m.safetensors");
            let o = dequantize(&migrated, &out, "stored");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            for (name, values) in f32_bits(&out) {
                assert_eq!(Some(&values), want.get(&name), "{} {name}", f.display());
            }
        }
    }
}

#[test]
fn inspect_reads_both_layouts_and_verify_checks_values() {
    for (version, layout) in [("v1.0.5", "qlora-rs-v1"), ("v1.3.0", "qlora-rs-v2")] {
        let f = root()
            .join("fixtures/qlora-rs")
            .join(version)
            .join("mixed.qnat");
        let o = qforge(&["inspect", f.to_str().unwrap(), "--json", "--verify"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j = json(&o);
        assert_eq!(j["format"], "qnat");
        assert_eq!(j["layout"], layout);
        assert_eq!(j["verify"]["ok"], true);
        let tensors = j["tensors"].as_array().unwrap();
        let by_name = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap().clone();
        assert_eq!(by_name("b7")["qlora"]["block_size"], 7);
        assert_eq!(by_name("b50")["qlora"]["block_size"], 50);
        assert_eq!(by_name("zp_b32")["qlora"]["zero_points"], true);
        assert_eq!(by_name("dq_b64")["qlora"]["double_quant"], true);
        assert_eq!(
            by_name("dq_b64")["qlora"]["exact_scales"],
            version == "v1.0.5"
        );
        let per_channel = &by_name("pc_50")["qlora"]["per_channel"];
        if version == "v1.3.0" {
            assert_eq!(per_channel, &serde_json::json!(true));
        } else {
            assert!(per_channel.is_null());
        }
        assert_eq!(j["metadata"][0]["value"], "qlora-gen-mixed");
        // A padding nibble set after an odd block is found by --verify (there is no
        // checksum to find it otherwise).
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.qnat");
        let mut bytes = std::fs::read(&f).unwrap();
        let codes = by_name("b7")["offset"].as_u64().unwrap() as usize;
        bytes[codes + 3] |= 0x50; // block 0 holds 7 codes in 4 bytes: the 8th nibble is padding
        std::fs::write(&bad, &bytes).unwrap();
        let o = qforge(&["inspect", bad.to_str().unwrap(), "--verify"]);
        assert_invalid(&o, "block 0 has a non-zero padding nibble");
    }
}

#[test]
fn qforge_v2_and_qlora_rs_v2_are_told_apart_by_the_header() {
    // qlora-rs's version 2 used to be reported as a corrupt qforge v2 file.
    let f = root().join("fixtures/qlora-rs/v1.3.0/plain.qnat");
    let o = qforge(&["quantize", f.to_str().unwrap(), "--dry-run", "-t", "Q8_0"]);
    assert_invalid(&o, "qlora-rs QNAT file (qlora-rs-v2)");
    let o = qforge(&["inspect", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("qlora-rs-v2"));
}

//! The one instruction-set override (`--isa` on every computing subcommand, `QFORGE_ISA`)
//! and the type names parsed by the type table (`--tensor-type`, `--output-tensor-type`,
//! `--token-embedding-type`, bench-gemm `--type`).

use crate::common::*;
use qforge::cpu::Level;
use std::path::Path;
use std::process::{Command, Output};

/// A small `kv-profile build` (without `-o`).
const KV_BUILD: [&str; 6] = [
    "kv-profile",
    "build",
    "--shape",
    "layers=1,kv_heads=2,query_heads=2,head_dim=64,tokens=256",
    "--bits",
    "6",
];

/// Runs `qforge` with `QFORGE_ISA` set (or removed).
fn qforge_env(args: &[&str], isa: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qforge"));
    cmd.args(args).env_remove("RUST_LOG");
    match isa {
        Some(v) => cmd.env("QFORGE_ISA", v),
        None => cmd.env_remove("QFORGE_ISA"),
    };
    cmd.output().expect("running qforge")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bytes one command writes to `out`, with `--isa` (or `QFORGE_ISA`) set to `level`.
fn output_at(args: &[&str], out: &Path, level: &str, by_env: bool) -> Vec<u8> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", out.to_str().unwrap()]);
    if !by_env {
        all.extend(["--isa", level]);
    }
    ok(&qforge_env(&all, by_env.then_some(level)));
    std::fs::read(out).unwrap()
}

/// Every computing subcommand takes `--isa` (and `QFORGE_ISA`) and writes the same bytes at
/// every level this CPU has: the codecs, NF4 and the KV search are bit-exact per level.
#[test]
fn every_level_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = fixture("tiny-llama.gguf");
    let st = fixture("tiny-llama.safetensors");
    let commands: [Vec<&str>; 5] = [
        vec!["quantize", gguf.to_str().unwrap(), "-t", "Q4_K_M"],
        vec!["quantize", st.to_str().unwrap(), "-t", "IQ4_NL"],
        vec!["quantize", gguf.to_str().unwrap(), "-t", "IQ4_XS"],
        vec!["export-native", st.to_str().unwrap(), "--scheme", "nf4"],
        KV_BUILD.to_vec(),
    ];
    for (i, args) in commands.iter().enumerate() {
        let out = dir.path().join(format!("out-{i}"));
        let want = output_at(args, &out, "auto", false);
        for level in Level::supported() {
            for by_env in [false, true] {
                let got = output_at(args, &out, level.name(), by_env);
                assert!(got == want, "{args:?} at {level} (env: {by_env})");
            }
        }
    }
}

#[test]
fn kv_profile_verify_and_bench_gemm_honour_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("kv.json");
    ok(&qforge(
        &[KV_BUILD.as_slice(), &["-o", profile.to_str().unwrap()]].concat(),
    ));
    let receipt = |level: &str| {
        let out = qforge(&[
            "kv-profile",
            "verify",
            profile.to_str().unwrap(),
            "--isa",
            level,
            "--json",
        ]);
        json(&out)
    };
    assert_eq!(receipt("scalar"), receipt("auto"));

    let bench = |extra: &[&str], env: Option<&str>| {
        let mut args = vec![
            "bench-gemm",
            "--type",
            "Q8_0",
            "--m",
            "1",
            "--k",
            "256",
            "--n",
            "32",
            "--reps",
            "1",
            "--backends",
            "fused",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&qforge_env(&args, env))["isa"].clone()
    };
    assert_eq!(bench(&["--isa", "scalar"], None), "scalar");
    assert_eq!(bench(&[], Some("scalar")), "scalar");
    if Level::Avx2.is_supported() {
        assert_eq!(
            bench(&["--isa", "avx2"], Some("scalar")),
            "avx2",
            "flag wins"
        );
    }
}

#[test]
fn bad_levels_are_one_line_exit_2() {
    let st = fixture("tiny-llama.safetensors");
    let out = qforge_env(
        &["quantize", st.to_str().unwrap(), "--dry-run"],
        Some("neon"),
    );
    assert_invalid(&out, "QFORGE_ISA");
    let out = qforge(&[
        "quantize",
        st.to_str().unwrap(),
        "--dry-run",
        "--isa",
        "neon",
    ]);
    assert_invalid(&out, "neon");
    // inspect computes nothing: QFORGE_ISA does not concern it.
    ok(&qforge_env(
        &["inspect", st.to_str().unwrap()],
        Some("neon"),
    ));
    for level in Level::ALL.into_iter().filter(|l| !l.is_supported()) {
        let out = qforge(&[
            "quantize",
            st.to_str().unwrap(),
            "--dry-run",
            "--isa",
            level.name(),
        ]);
        assert_invalid(&out, "not supported by this CPU");
    }
}

#[test]
fn type_names_come_from_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let gguf = fixture("tiny-llama.gguf");
    let r = json(&qforge(&[
        "quantize",
        gguf.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tensor-type",
        "attn_q=q5_1",
        "--output-tensor-type",
        "iq4_nl",
        "--token-embedding-type",
        "Bf16",
        "--json",
    ]));
    let ty = |n: &str| {
        r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()["out_type"]
            .clone()
    };
    assert_eq!(ty("blk.0.attn_q.weight"), "Q5_1");
    assert_eq!(ty("output.weight"), "IQ4_NL");
    assert_eq!(ty("token_embd.weight"), "BF16");

    let bad: [(&[&str], &str); 5] = [
        (
            &["--tensor-type", "attn_q=IQ2_XS"],
            "requires an importance matrix",
        ),
        (&["--tensor-type", "attn_q"], "REGEX=TYPE"),
        (&["--tensor-type", "(=Q4_0"], "--tensor-type"),
        (&["--output-tensor-type", "q9_k"], "unknown ggml type"),
        (&["--token-embedding-type", "nf4"], "unknown ggml type"),
    ];
    for (extra, needle) in bad {
        let mut args = vec!["quantize", gguf.to_str().unwrap(), "--dry-run"];
        args.extend_from_slice(extra);
        assert_invalid(&qforge(&args), needle);
    }
    let help = qforge(&["quantize", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    // Every llama-quantize type has a codec, so --help offers them all.
    for name in ["Q4_K", "IQ4_NL", "BF16", "IQ2_XS", "IQ3_M", "TQ1_0"] {
        assert!(help.contains(name), "{name} listed in --help");
    }
    let out = qforge(&["bench-gemm", "--type", "q3_k"]);
    assert_invalid(&out, "q4_k, q6_k, q8_0, q4_0, nf4, q5_k, iq4_xs");
}

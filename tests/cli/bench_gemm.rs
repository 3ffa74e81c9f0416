//! `qforge bench-gemm` end to end: the JSON report on a small random matrix and on a
//! tensor of a fixture, the human table, and bad arguments (exit 2, one line).

use crate::common::*;

/// Small shapes, one repetition: a correctness run of every strategy, not a benchmark.
fn small(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench-gemm",
        "--m",
        "1,5",
        "--reps",
        "1",
        "--threads",
        "2",
        "--backends",
        "fused,lazy-dequant,eager-dequant,candle",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&qforge(&args))
}

#[test]
fn json_report_for_every_type_and_strategy() {
    for ty in ["q4_k", "q6_k", "q8_0", "q4_0", "nf4", "q5_k", "iq4_xs"] {
        let r = small(&["--type", ty, "--k", "512", "--n", "96"]);
        assert_eq!(r["schema"], "qforge.bench-gemm/2");
        assert_eq!(r["weight_type"], ty);
        assert_eq!((r["n"].as_u64(), r["k"].as_u64()), (Some(96), Some(512)));
        assert_eq!(r["weights"], "random");
        assert_eq!(r["threads"], 2);
        let bpw = r["bits_per_weight"].as_f64().unwrap();
        let want = match ty {
            "q6_k" => 6.5625,
            "q8_0" => 8.5,
            "q5_k" => 5.5,
            "iq4_xs" => 4.25,
            _ => 4.5,
        };
        assert!((bpw - want).abs() < 1e-9, "{ty}: {bpw}");
        assert!(r["roofline"]["bandwidth_gbs"].as_f64().unwrap() > 0.0);
        assert!(r["roofline"]["l3_cache_bytes"].as_u64().unwrap() > 0);
        let backends: Vec<&str> = r["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["backend"].as_str().unwrap())
            .collect();
        let results = r["results"].as_array().unwrap();
        // candle-core has neither NF4 nor IQ4_XS.
        let no_candle = ty == "nf4" || ty == "iq4_xs";
        if no_candle {
            assert_eq!(backends, ["fused", "lazy-dequant", "eager-dequant"]);
            assert_eq!(r["skipped"][0]["backend"], "candle");
            let reason = r["skipped"][0]["reason"].as_str().unwrap();
            assert!(reason.contains(&ty.to_uppercase()), "{reason}");
        } else {
            assert_eq!(
                backends,
                ["candle", "fused", "lazy-dequant", "eager-dequant"]
            );
        }
        assert_eq!(results.len(), backends.len() * 2);
        for m in results {
            let name = m["backend"].as_str().unwrap();
            let ms = m["median_ms"].as_f64().unwrap();
            assert!(
                ms > 0.0 && m["min_ms"].as_f64().unwrap() <= ms,
                "{ty} {name}"
            );
            for f in [
                "batched_ms",
                "batched_pct_bandwidth",
                "batched_pdl_ms",
                "batched_pdl_pct_bandwidth",
            ] {
                assert!(m[f].is_null(), "{ty} {name}: {f}");
            }
            // Our strategies pair every timed call with a read pass of the roofline's buffer.
            let paired = m["paired_read_gbs"].as_f64().unwrap();
            let pct = m["pct_paired_bandwidth"].as_f64().unwrap();
            let gbs = m["effective_gbs"].as_f64().unwrap();
            assert!(paired > 0.0 && (pct - 100.0 * gbs / paired).abs() < 1e-9 * pct);
            let tokens = m["m"].as_u64().unwrap() as f64;
            let gflops = 2.0 * tokens * 96.0 * 512.0 / (ms * 1e-3) / 1e9;
            assert!((m["gflops"].as_f64().unwrap() / gflops - 1.0).abs() < 1e-9);
            // 8-bit activations cost about 1% (more with the outliers); f32 GEMM is exact
            // to rounding.
            let err = m["rel_err"].as_f64().unwrap();
            let limit = if name.ends_with("dequant") {
                1e-5
            } else {
                0.05
            };
            assert!(err < limit, "{ty} {name}: rel_err {err}");
            assert_eq!(m["speedup_vs_candle"].is_null(), no_candle, "{ty} {name}");
        }
        for b in r["backends"].as_array().unwrap() {
            let copies = b["copies"].as_u64().unwrap();
            let bytes = b["weight_bytes"].as_u64().unwrap();
            // Enough copies to exceed the cache, at least 128 MiB (capped at 64 copies).
            assert!(copies == 64 || copies * bytes >= 128 << 20, "{b}");
        }
    }
}

#[test]
fn weights_from_a_fixture_tensor_and_the_text_table() {
    let path = fixture("tiny-llama.safetensors");
    let r = json(&qforge(&[
        "bench-gemm",
        "--type",
        "q4_0",
        "--weights",
        path.to_str().unwrap(),
        "--tensor",
        "model.layers.0.mlp.up_proj.weight",
        "--m",
        "1",
        "--reps",
        "1",
        "--backends",
        "fused,eager-dequant",
        "--isa",
        "scalar",
        "--json",
    ]));
    assert!(r["weights"]
        .as_str()
        .unwrap()
        .ends_with(":model.layers.0.mlp.up_proj.weight"));
    assert_eq!(r["isa"], "scalar");
    assert_eq!(r["roofline"]["int8_peak_gops"], serde_json::Value::Null);
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    assert!(r["results"][0]["rel_err"].as_f64().unwrap() < 0.05);

    let out = qforge(&[
        "bench-gemm",
        "--type",
        "q8_0",
        "--k",
        "256",
        "--n",
        "64",
        "--m",
        "2",
        "--reps",
        "1",
        "--backends",
        "fused",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("bench-gemm q8_0 n=64 k=256"), "{text}");
    assert!(text.contains("roofline: read bandwidth"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fused") && l.split_whitespace().nth(1) == Some("2")),
        "{text}"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let cases: [&[&str]; 8] = [
        &["--type", "q3_k"],
        &["--type", "q4_k", "--k", "100", "--n", "8"],
        &["--type", "q4_0", "--k", "96", "--n", "8"],
        &["--m", "0"],
        &["--reps", "0"],
        &["--backends", "fused,mkl"],
        &["--isa", "neon"],
        &[
            "--weights",
            "fixtures/tiny-llama.safetensors",
            "--tensor",
            "no.such.tensor",
        ],
    ];
    for extra in cases {
        // Every case fails before any weights are built (the default shape is large).
        let mut args = vec!["bench-gemm"];
        args.extend_from_slice(extra);
        let out = qforge(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{extra:?}: {stderr}");
    }
}

/// bench-gemm with the llama.cpp peer only (and fused, to compare), `extra` appended, with
/// the environment variable naming the peer set to `peer` (removed when `None`).
fn with_peer(peer: Option<&str>, extra: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qforge"));
    cmd.args([
        "bench-gemm",
        "--k",
        "512",
        "--n",
        "64",
        "--m",
        "1,8",
        "--reps",
        "3",
        "--threads",
        "2",
        "--backends",
        "fused,llamacpp",
        "--json",
    ])
    .args(extra)
    .env_remove("RUST_LOG");
    match peer {
        Some(p) => cmd.env("QFORGE_GGML_PEER", p),
        None => cmd.env_remove("QFORGE_GGML_PEER"),
    };
    cmd.output().expect("running qforge")
}

#[test]
fn llamacpp_peer_is_skipped_with_the_reason_when_absent() {
    let r = json(&with_peer(None, &["--type", "q4_k"]));
    assert_eq!(r["skipped"][0]["backend"], "llamacpp");
    let why = r["skipped"][0]["reason"].as_str().unwrap();
    assert!(
        why.contains("QFORGE_GGML_PEER") && why.contains("--llamacpp-peer"),
        "{why}"
    );
    for m in r["results"].as_array().unwrap() {
        assert_eq!(m["backend"], "fused");
        assert!(m["speedup_vs_llamacpp"].is_null());
    }
    let r = json(&with_peer(
        Some("/nonexistent/ggml-peer"),
        &["--type", "q4_k"],
    ));
    let why = r["skipped"][0]["reason"].as_str().unwrap();
    assert!(why.contains("/nonexistent/ggml-peer"), "{why}");
    let out = with_peer(None, &["--llamacpp-peer", "/nonexistent/ggml-peer"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: --llamacpp-peer /nonexistent/ggml-peer"),
        "{err}"
    );
}

/// The peer end to end (tools/ggml-peer/make.sh builds it; CI sets QFORGE_GGML_PEER and
/// QFORGE_REQUIRE_GGML_PEER=1): both ggml buffers where they apply, ggml's outputs checked
/// against the f64 reference like ours, the speedups of every strategy against the faster mode.
#[test]
fn llamacpp_peer_runs_both_ggml_buffers() {
    let Some(peer) = std::env::var_os("QFORGE_GGML_PEER") else {
        assert!(
            std::env::var("QFORGE_REQUIRE_GGML_PEER").as_deref() != Ok("1"),
            "QFORGE_REQUIRE_GGML_PEER=1 but QFORGE_GGML_PEER is not set"
        );
        eprintln!(
            "SKIPPED: set QFORGE_GGML_PEER (tools/ggml-peer/make.sh) to run the llama.cpp peer"
        );
        return;
    };
    let peer = peer.to_str().unwrap();
    // q4_0 and q4_K have a CPU_REPACK layout on x86 with AVX2; q6_K has none there.
    for (ty, repack) in [
        ("q4_0", true),
        ("q4_k", true),
        ("q6_k", false),
        ("q8_0", false),
    ] {
        let r = json(&with_peer(Some(peer), &["--type", ty]));
        let names: Vec<&str> = r["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["backend"].as_str().unwrap())
            .collect();
        let want: &[&str] = if repack {
            &["llamacpp-repack", "llamacpp-plain", "fused"]
        } else {
            &["llamacpp-plain", "fused"]
        };
        if !repack && names.len() == 3 {
            // A newer ggml may add a layout: then both modes must have run.
            assert_eq!(
                names,
                ["llamacpp-repack", "llamacpp-plain", "fused"],
                "{ty}"
            );
        } else {
            assert_eq!(names, want, "{ty}");
        }
        if names.len() == 2 {
            assert_eq!(r["skipped"][0]["backend"], "llamacpp-repack", "{ty}");
            assert!(r["skipped"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("CPU_REPACK"));
        }
        let results = r["results"].as_array().unwrap();
        assert_eq!(results.len(), 2 * names.len(), "{ty}");
        for m in results {
            let (name, tokens) = (m["backend"].as_str().unwrap(), m["m"].as_u64().unwrap());
            let err = m["rel_err"].as_f64().unwrap();
            assert!(err < 0.05, "{ty} {name} m={tokens}: rel_err {err}");
            let best = results
                .iter()
                .filter(|o| {
                    o["m"] == m["m"] && o["backend"].as_str().unwrap().starts_with("llamacpp-")
                })
                .map(|o| o["median_ms"].as_f64().unwrap())
                .fold(f64::INFINITY, f64::min);
            let want = best / m["median_ms"].as_f64().unwrap();
            let got = m["speedup_vs_llamacpp"].as_f64().unwrap();
            assert!(
                (got / want - 1.0).abs() < 1e-9,
                "{ty} {name}: {got} vs {want}"
            );
        }
    }
    let r = json(&with_peer(Some(peer), &["--type", "nf4"]));
    assert_eq!(r["skipped"][0]["backend"], "llamacpp");
    assert!(r["skipped"][0]["reason"].as_str().unwrap().contains("nf4"));
}

/// `--device cuda` on a machine without a GPU (CI): exit 2, one line, no panic, for every
/// type. On a machine with one it runs every type (scripts/cuda-bench.sh checks its numbers)
/// and reports both timings.
#[test]
fn device_cuda_without_a_gpu_is_one_line() {
    for ty in ["q4_k", "q5_k", "iq4_xs"] {
        let out = qforge(&[
            "bench-gemm",
            "--device",
            "cuda",
            "--type",
            ty,
            "--n",
            "128",
            "--k",
            "512",
            "--m",
            "1,9",
            "--reps",
            "1",
            "--json",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(0) {
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(r["device"], "cuda");
            for x in r["results"].as_array().unwrap() {
                assert!(x["rel_err"].as_f64().unwrap() < 0.05, "{ty}: {x}");
                assert!(x["batched_ms"].as_f64().unwrap() > 0.0, "{ty}: {x}");
                assert!(x["batched_pdl_ms"].as_f64().unwrap() > 0.0, "{ty}: {x}");
            }
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: --device cuda: "), "{err}");
    }
}

//! `kv-profile capture` / `verify --model` on a real checkpoint (SmolLM2-135M-Instruct,
//! llama): the Rust forward's perplexity against llama-perplexity on the same text, the
//! GGUF and Hugging Face sources giving the same run, and the issue #16 bars on a
//! calibration text different from the evaluation text (fixtures/kv/).
//!
//! Runs when `QFORGE_HF_MODELS` (the model folders) is set; the llama.cpp comparison also
//! needs `QFORGE_HF_REF` and `QFORGE_LLAMA_BIN`. Unset, they are skipped unless
//! `QFORGE_REQUIRE_HF_REF` is set (CI sets it).

use crate::common::*;
use std::path::PathBuf;

const MODEL: &str = "SmolLM2-135M-Instruct";
/// Tokens per run, as the thresholds were measured.
const TOKENS: &str = "1024";

fn env_path(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("QFORGE_REQUIRE_HF_REF").is_none(),
                "QFORGE_REQUIRE_HF_REF set without {var}"
            );
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

fn text(name: &str) -> String {
    fixture(&format!("kv/{name}.txt")).display().to_string()
}

fn capture(model: &str, extra: &[&str], out: &std::path::Path) -> serde_json::Value {
    let mut args = vec![
        "kv-profile",
        "capture",
        "--model",
        model,
        "--tokens",
        TOKENS,
        "-o",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&qforge(&args))
}

#[test]
fn forward_matches_llama_perplexity_and_gguf_matches_safetensors() {
    let (Some(models), Some(reference), Some(bin)) = (
        env_path("QFORGE_HF_MODELS"),
        env_path("QFORGE_HF_REF"),
        env_path("QFORGE_LLAMA_BIN"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hf = models.join(MODEL);
    let gguf = reference.join(MODEL).join("f16.gguf");
    let eval = text("evaluation");
    let ours = capture(
        hf.to_str().unwrap(),
        &["--text", &eval],
        &dir.path().join("a.safetensors"),
    );
    assert_eq!(ours["tokens"], 1024);
    assert_eq!(ours["layers"], 30);
    let ppl = ours["perplexity"]["perplexity"].as_f64().unwrap();
    let from_gguf = capture(
        gguf.to_str().unwrap(),
        &[
            "--text",
            &eval,
            "--tokenizer",
            hf.join("tokenizer.json").to_str().unwrap(),
        ],
        &dir.path().join("b.safetensors"),
    );
    let ppl_gguf = from_gguf["perplexity"]["perplexity"].as_f64().unwrap();
    // bf16 weights against their f16 conversion.
    assert!(
        (ppl_gguf / ppl - 1.0).abs() < 2e-3,
        "safetensors {ppl}, gguf {ppl_gguf}"
    );
    let out = std::process::Command::new(bin.join("llama-perplexity"))
        .args(["-m", gguf.to_str().unwrap(), "-f", &eval])
        .args(["-c", TOKENS, "--chunks", "1", "--no-repack", "-t", "2"])
        .output()
        .expect("running llama-perplexity");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let reference: f64 = log
        .split("Final estimate: PPL = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no final estimate in llama-perplexity's log:\n{log}"));
    assert!(
        (ppl / reference - 1.0).abs() < 2e-3,
        "qforge {ppl}, llama-perplexity {reference}"
    );
}

/// Builds a profile from the calibration capture and verifies it on the evaluation text.
fn verify(
    hf: &str,
    calibration: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    build: &[&str],
) -> serde_json::Value {
    let profile = dir.join(format!("{name}.json"));
    let mut args = vec![
        "kv-profile",
        "build",
        "--from-model",
        hf,
        "--calibration",
        calibration.to_str().unwrap(),
        "-o",
        profile.to_str().unwrap(),
    ];
    args.extend_from_slice(build);
    json(&qforge(&[&args[..], &["--json"]].concat()));
    let eval = text("evaluation");
    let model = PathBuf::from(hf);
    let model = model.parent().unwrap().to_str().unwrap();
    let out = qforge(&[
        "kv-profile",
        "verify",
        profile.to_str().unwrap(),
        "--model",
        model,
        "--text",
        &eval,
        "--tokens",
        TOKENS,
        "--compare",
        "--json",
    ]);
    json(&out)
}

#[test]
fn role_aware_profiles_beat_the_baselines_on_real_kv() {
    let Some(models) = env_path("QFORGE_HF_MODELS") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hf = models.join(MODEL);
    let cal = dir.path().join("cal.safetensors");
    capture(
        hf.to_str().unwrap(),
        &["--text", &text("calibration")],
        &cal,
    );
    let config = hf.join("config.json");
    let config = config.to_str().unwrap();
    // Measured at 1024 tokens with unbiased norms (docs/kv-profile.md §6a): role-aware
    // k4 N4096 3.26 bits TV 0.094 +2.98 ppl. The 4.30-bit profile keeps a recent window of
    // 16 fp16 tokens (each query reads its newest 16 tokens exact, as a real cache holds
    // them; 16 bits each, counted) and mixes four codecs per layer and role, as
    // scripts/kv_allocate.py allocates them at 4.10 nominal bits from the calibration text's
    // sensitivities measured with that window: over three chunks TV 0.040 and +0.12 ppl
    // (seed 0); without the window the best 4.28-bit mix had +0.62..+0.81. llama.cpp's
    // Hadamard-rotated q4_0 cache (4.5 bits) has TV 0.089 +2.30: better than the 3.26-bit
    // profile.
    const KEYS: &str = "1,1,0,2,2,2,2,2,3,2,3,1,0,0,2,0,1,2,2,0,2,0,0,2,2,1,0,1,0,1";
    const VALUES: &str = "1,1,1,0,0,0,0,0,0,1,1,1,1,1,1,1,1,0,0,1,0,1,1,2,0,1,1,1,1,1";
    let mixed = [
        "--block-dim",
        "2",
        "--bits",
        "8",
        "--axis",
        "per-channel",
        "--tier",
        "4x12",
        "--tier",
        "2x10",
        "--tier",
        "2x12",
        "--key-codecs",
        KEYS,
        "--value-codecs",
        VALUES,
        "--protect-last",
        "16",
    ];
    for (name, build, max_bits, max_tv, max_delta, beats_kivi, beats_q4) in [
        (
            "k4n4096",
            &["--block-dim", "4", "--bits", "12", "--axis", "role-aware"][..],
            3.3,
            0.12,
            3.5,
            true,
            false,
        ),
        // One chunk: −0.18 measured on a Xeon, +0.39 on a Zen 4 (candle's matmul blocks by
        // the caches, so the forward differs by machine); the bar of 0.1 is over more
        // chunks (docs §6a), one chunk's swing is bounded here.
        ("window16", &mixed[..], 4.3, 0.05, 0.5, false, true),
    ] {
        let common = ["--protect-first", "1", "--unbiased-norm"];
        let r = verify(
            config,
            &cal,
            dir.path(),
            name,
            &[build, &common[..]].concat(),
        );
        let bits = r["storage"]["effective_bits_per_value"].as_f64().unwrap();
        let tv = r["metrics"]["attention_tv"].as_f64().unwrap();
        let ppl = &r["perplexity"];
        let compressed = ppl["compressed"].as_f64().unwrap();
        assert!(bits <= max_bits, "{name}: {bits} bits");
        assert!(tv <= max_tv, "{name}: attention TV {tv}");
        let delta = ppl["delta"].as_f64().unwrap();
        assert!(delta <= max_delta, "{name}: perplexity {ppl}");
        let baseline = |prefix: &str| {
            r["baselines"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["codec"].as_str().unwrap().starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} baseline"))
                .clone()
        };
        // The TurboQuant-style baseline at about the same bits is worse in attention TV
        // and perplexity.
        let tq = baseline("turboquant");
        assert!(
            tv < tq["metrics"]["attention_tv"].as_f64().unwrap(),
            "{name} {tv} vs {tq}"
        );
        assert!(
            compressed < tq["perplexity"]["compressed"].as_f64().unwrap(),
            "{name} {ppl} vs {tq}"
        );
        // KIVI is compared at the fewest bits not below the profile's (4.0 for 3.26);
        // for the 4.30-bit profile (4.10 nominal) the next KIVI has 5.0 bits (5.17 with the
        // same window): one chunk has it at TV 0.041 −0.14, too close to assert.
        if beats_kivi {
            let kivi = baseline("kivi");
            assert!(
                tv < kivi["metrics"]["attention_tv"].as_f64().unwrap()
                    && compressed < kivi["perplexity"]["compressed"].as_f64().unwrap(),
                "{name} {tv} {ppl} vs {kivi}"
            );
        }
        let q4 = baseline("q4_0");
        assert!(
            !beats_q4
                || (tv < q4["metrics"]["attention_tv"].as_f64().unwrap()
                    && compressed < q4["perplexity"]["compressed"].as_f64().unwrap()),
            "{name} {tv} {ppl} vs {q4}"
        );
        // q8_0 (8.5 bits, as llama.cpp's cache runs it) is within llama-perplexity's
        // own q8_0 delta (-0.05) and the single-chunk noise (about 0.15).
        let q8 = baseline("q8_0")["perplexity"]["delta"].as_f64().unwrap();
        assert!(q8.abs() < 0.2, "q8_0 {q8}");
    }
}

//! The command line as a whole: closed value sets (case-insensitive, `-t` names only),
//! `quantize --list-types`, EXAMPLES in every help, output paths checked before any work,
//! `-q`, `-v`/`-vv`, and a documented string schema id on every `--json` document.

use crate::common::*;
use clap::{CommandFactory, Parser};
use serde_json::Value as Json;
use std::path::Path;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn enum_values_are_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.gguf");
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    for (t, out) in [("Q4_K_M", &a), ("q4_k_m", &b)] {
        let r = qforge(&[
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-t",
            t,
            "-q",
        ]);
        assert!(r.status.success(), "{t}: {}", stderr_of(&r));
    }
    assert_eq!(bytes_of(&a), bytes_of(&b));
    // --format, -t NF4 and --compute-dtype in other cases.
    let bnb = dir.path().join("bnb");
    let r = qforge(&[
        "quantize",
        fixture("tiny-llama.safetensors").to_str().unwrap(),
        "-o",
        bnb.to_str().unwrap(),
        "--format",
        "BNB-SAFETENSORS",
        "-t",
        "nf4",
        "--compute-dtype",
        "BF16",
        "-q",
    ]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    let en = dir.path().join("x.qnat");
    let r = qforge(&[
        "export-native",
        fixture("tiny-llama.safetensors").to_str().unwrap(),
        "-o",
        en.to_str().unwrap(),
        "--scheme",
        "Q8_0",
        "-q",
    ]);
    assert!(r.status.success(), "{}", stderr_of(&r));
    for (args, field) in [
        (
            &["bench-gemm", "--backends", "FUSED,Candle"][..],
            "backends",
        ),
        (
            &[
                "kv-profile",
                "build",
                "--codec",
                "TurboQuant",
                "--role",
                "KEY",
                "--fallback",
                "Keep-Raw",
            ][..],
            "kv",
        ),
    ] {
        let mut all = vec!["qforge"];
        all.extend_from_slice(args);
        if field == "kv" {
            all.extend_from_slice(&[
                "--shape",
                "layers=1,kv_heads=1,query_heads=1,head_dim=8,tokens=8",
                "-o",
                "k.json",
            ]);
        }
        qforge::cli::Cli::try_parse_from(&all).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
}

#[test]
fn type_takes_names_only() {
    for n in ["8", "15"] {
        let out = qforge(&["quantize", "in.gguf", "-o", "out.gguf", "-t", n]);
        assert_invalid(&out, "names only");
        assert!(stderr_of(&out).contains("--list-types"));
    }
    let out = qforge(&["quantize", "in.gguf", "-o", "out.gguf", "-t", "Q4_K_X"]);
    assert_invalid(&out, "unknown type \"Q4_K_X\"");
    // Every accepted name is in the help and in the completions.
    let help = String::from_utf8(qforge(&["quantize", "--help"]).stdout).unwrap();
    let bash = std::fs::read_to_string(root().join("completions/qforge.bash")).unwrap();
    for t in qforge::cli::TypeName::all() {
        assert!(help.contains(t.0), "{} not in --help", t.0);
        assert!(bash.contains(t.0), "{} not in completions", t.0);
    }
}

#[test]
fn list_types_text_and_json() {
    let text = qforge(&["quantize", "--list-types"]);
    assert!(text.status.success(), "{}", stderr_of(&text));
    let text = String::from_utf8(text.stdout).unwrap();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_string()
    };
    assert!(line("Q4_K_M").contains("4.5000") && line("Q4_K_M").contains("gguf"));
    assert!(line("IQ2_XXS").contains("required") && line("IQ2_XXS").contains(" gguf"));
    assert!(line("NF4").contains("bnb-safetensors"));
    let doc = json(&qforge(&["quantize", "--list-types", "--json"]));
    assert_eq!(doc["schema"], "qforge.quantize-types/1");
    let types = doc["types"].as_array().unwrap();
    // llama-quantize's 39 QUANT_OPTIONS entries, then NF4 and FP4.
    assert_eq!(types.len(), 41);
    let get = |n: &str| types.iter().find(|t| t["name"] == n).unwrap();
    assert_eq!(get("Q4_K_M")["ftype"], 15);
    assert_eq!(get("Q4_K_M")["bits_per_weight"], 4.5);
    assert_eq!(get("Q4_K_M")["implemented"], true);
    assert_eq!(get("Q2_K_S")["imatrix_required"], true);
    assert_eq!(get("IQ1_S")["implemented"], true);
    assert!(
        types.iter().all(|t| t["implemented"] == true),
        "every type implemented"
    );
    assert_eq!(get("Q5_K")["alias_of"], "Q5_K_M");
    assert_eq!(get("COPY")["bits_per_weight"], Json::Null);
    // Every implemented name is accepted by -t, every other one is refused.
    for t in types {
        let name = t["name"].as_str().unwrap();
        let parsed =
            qforge::cli::Cli::try_parse_from(["qforge", "quantize", "m", "--dry-run", "-t", name]);
        assert_eq!(parsed.is_ok(), t["implemented"] == true, "{name}");
    }
}

/// Every subcommand path (`["kv-profile", "build"]`, ...).
fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.clone();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, path, out);
        }
    }
    let mut out = vec![Vec::new()];
    walk(&qforge::cli::Cli::command(), Vec::new(), &mut out);
    out
}

#[test]
fn every_help_has_examples_that_name_the_command() {
    let paths = subcommand_paths();
    assert!(paths.len() >= 8, "{paths:?}");
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = qforge(&args);
        assert!(out.status.success(), "{path:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let examples = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("{path:?}: no Examples section"))
            .1;
        let prefix = std::iter::once("qforge")
            .chain(args[..args.len() - 1].iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let commands: Vec<&str> = examples
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("qforge"))
            .collect();
        assert!(!commands.is_empty(), "{path:?}");
        for c in commands {
            assert!(c.starts_with(&prefix), "{path:?}: {c}");
        }
        // And in the man page.
        let page = std::iter::once("qforge")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-");
        let man = std::fs::read_to_string(root().join("man").join(format!("{page}.1"))).unwrap();
        assert!(man.contains("Examples:"), "{page}.1");
    }
}

#[test]
fn output_paths_are_checked_before_reading_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let missing = format!("{d}/no/such/folder/out");
    // The input does not exist either: the output error comes first.
    let cases: Vec<Vec<String>> = vec![
        vec![
            "quantize".into(),
            "/nonexistent/in.gguf".into(),
            "-o".into(),
            missing.clone(),
        ],
        vec![
            "quantize".into(),
            "/nonexistent/in".into(),
            "--format".into(),
            "bnb-safetensors".into(),
            "-o".into(),
            missing.clone(),
        ],
        vec![
            "export-native".into(),
            "/nonexistent/in".into(),
            "-o".into(),
            missing.clone(),
        ],
        vec![
            "kv-profile".into(),
            "build".into(),
            "--from-model".into(),
            "/nonexistent/in".into(),
            "-o".into(),
            missing.clone(),
        ],
        vec![
            "kv-profile".into(),
            "verify".into(),
            "/nonexistent/p.json".into(),
            "-o".into(),
            missing.clone(),
        ],
    ];
    for c in &cases {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        assert_invalid(&qforge(&args), "does not exist");
    }
    // An existing folder as a file output.
    for c in &cases {
        if c.contains(&"bnb-safetensors".to_string()) {
            continue; // that output is a folder
        }
        let args: Vec<&str> = c
            .iter()
            .map(|a| if *a == missing { d } else { a.as_str() })
            .collect();
        assert_invalid(&qforge(&args), "is an existing folder");
    }
    // Nothing was created.
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
}

#[test]
fn quiet_leaves_out_text_but_not_json_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let input = fixture("tiny-llama.gguf");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let loud = qforge(&["quantize", i, "-o", o]);
    assert!(!loud.stdout.is_empty());
    for args in [
        vec!["quantize", i, "-o", o, "-q"],
        vec!["-q", "inspect", i],
        vec![
            "export-native",
            i,
            "-o",
            dir.path().join("x.qnat").to_str().unwrap(),
            "--quiet",
        ],
    ] {
        let r = qforge(&args);
        assert!(r.status.success(), "{args:?}: {}", stderr_of(&r));
        assert!(
            r.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stdout)
        );
        assert!(r.stderr.is_empty(), "{args:?}: {}", stderr_of(&r));
    }
    assert_eq!(
        json(&qforge(&["quantize", i, "-o", o, "-q", "--json"]))["schema"],
        "qforge.quantize/2"
    );
    assert_invalid(
        &qforge(&["inspect", "-q", "/nonexistent/x.gguf"]),
        "cannot open",
    );
}

#[test]
fn verbose_logs_the_plan_and_per_tensor_timing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.gguf");
    let args = |v: &'static str| {
        vec![
            v,
            "quantize",
            fixture("tiny-llama.gguf")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            "-o",
            out.to_str().unwrap().to_string().leak(),
            "-q",
        ]
    };
    let info = stderr_of(&qforge(&args("-v")));
    assert!(
        info.contains("plan: blk.0.attn_q.weight F16 -> Q4_K"),
        "{info}"
    );
    assert!(!info.contains("encoded"), "{info}");
    let debug = stderr_of(&qforge(&args("-vv")));
    assert!(
        debug.contains("encoded blk.0.attn_q.weight: ") && debug.contains(" ms"),
        "{debug}"
    );
    assert!(debug.contains("copied blk.0.attn_norm.weight"), "{debug}");
}

#[test]
fn every_json_document_has_a_documented_string_schema() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let st = fixture("tiny-llama.safetensors")
        .to_str()
        .unwrap()
        .to_string();
    let runs: Vec<Vec<String>> = vec![
        vec!["quantize".into(), st.clone(), "-o".into(), p("a.gguf")],
        vec!["quantize".into(), "--list-types".into()],
        vec!["inspect".into(), st.clone()],
        vec!["export-native".into(), st.clone(), "-o".into(), p("a.qnat")],
        vec![
            "export-native".into(),
            p("a.qnat"),
            "--dequantize".into(),
            "-o".into(),
            p("d.safetensors"),
        ],
        vec![
            "kv-profile".into(),
            "build".into(),
            "--shape".into(),
            "layers=1,kv_heads=1,query_heads=2,head_dim=32,tokens=64".into(),
            "--bits".into(),
            "8".into(),
            "-o".into(),
            p("kv.json"),
        ],
        vec!["kv-profile".into(), "verify".into(), p("kv.json")],
        vec![
            "bench-gemm".into(),
            "--type".into(),
            "q8_0".into(),
            "--m".into(),
            "1".into(),
            "--k".into(),
            "64".into(),
            "--n".into(),
            "8".into(),
            "--reps".into(),
            "1".into(),
        ],
    ];
    let docs: String = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    for mut run in runs {
        run.push("--json".into());
        let args: Vec<&str> = run.iter().map(String::as_str).collect();
        let doc = json(&qforge(&args));
        let schema = doc["schema"]
            .as_str()
            .unwrap_or_else(|| panic!("{args:?}: schema {}", doc["schema"]));
        assert!(
            schema.starts_with("qforge.") && schema.contains('/'),
            "{schema}"
        );
        assert!(
            docs.contains(&format!("`{schema}`")) || docs.contains(&format!("\"{schema}\"")),
            "{schema} is not in docs/"
        );
    }
}

#[test]
fn kv_profile_takes_threads_and_its_bytes_do_not_depend_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for t in ["1", "3"] {
        let profile = dir.path().join(format!("kv-{t}.json"));
        let receipt = dir.path().join(format!("r-{t}.json"));
        let (p, r) = (profile.to_str().unwrap(), receipt.to_str().unwrap());
        let shape = "layers=1,kv_heads=2,query_heads=4,head_dim=32,tokens=128";
        let build = qforge(&[
            "kv-profile",
            "build",
            "--shape",
            shape,
            "--bits",
            "8",
            "-o",
            p,
            "--threads",
            t,
            "-q",
        ]);
        assert!(build.status.success(), "{}", stderr_of(&build));
        let verify = qforge(&["kv-profile", "verify", p, "-o", r, "--threads", t, "-q"]);
        assert!(verify.status.success(), "{}", stderr_of(&verify));
        outputs.push((bytes_of(&profile), bytes_of(&receipt)));
    }
    assert!(
        outputs[0] == outputs[1],
        "bytes differ between --threads 1 and 3"
    );
    let zero = qforge(&[
        "kv-profile",
        "build",
        "--shape",
        "layers=1,kv_heads=1,query_heads=1,head_dim=8,tokens=8",
        "-o",
        dir.path().join("z.json").to_str().unwrap(),
        "--threads",
        "0",
    ]);
    assert_invalid(&zero, "--threads must be at least 1");
}

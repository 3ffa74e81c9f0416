//! Issue #13's whole-file comparison: for every type of llama-quantize's list, and for the
//! extra cases of `scripts/quantize_reference.sh` (an imatrix with a k-quant, GGUF and legacy
//! `.dat` imatrix files, `--include/--exclude-weights`, `--prune-layers`, `--override-kv`,
//! `--tensor-type-file`, `--pure`, a split input with and without `--keep-split`), qforge is
//! run with llama-quantize's own command line on the real-weight SmolLM2-135M-Instruct
//! `bf16.gguf` and its output must equal llama-quantize's, byte for byte, every file. Q1_0,
//! which llama-quantize refuses on SmolLM2, is compared on all-MiniLM-L6-v2's `f16.gguf`
//! (case `Q1_0-minilm`), whose rows it takes.
//!
//! The reference files and `manifest.tsv` (one case a line) come from
//! `scripts/quantize_reference.sh`, run by `.ci/run`; they are never committed. The test
//! runs when `QFORGE_QUANT_REF` names that folder; unset, it is skipped unless
//! `QFORGE_REQUIRE_QUANT_REF` is set (CI sets both).
//!
//! A case whose type qforge does not implement fails naming the type, unless the type is in
//! [`PENDING`]. Where llama-quantize refuses a type for this model (Q1_0: rows of 576 and no
//! fallback), qforge must refuse it too: exit 2, one line.

use crate::common::*;
use qforge::formats::TensorSource;
use qforge::quant::mix::QUANT_OPTIONS;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Types of llama-quantize's list that qforge does not implement yet; their cases are not
/// run (the test fails while an implemented type is still listed here). Every type is
/// implemented: the list stays, empty, for a type llama.cpp adds.
const PENDING: &[&str] = &[];

/// Cases run at once (each qforge run uses 1 thread of the 2 CI cores).
const WORKERS: usize = 2;

fn reference_dir() -> Option<PathBuf> {
    match std::env::var_os("QFORGE_QUANT_REF") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("QFORGE_REQUIRE_QUANT_REF").is_none(),
                "QFORGE_REQUIRE_QUANT_REF set without QFORGE_QUANT_REF (scripts/quantize_reference.sh's folder)"
            );
            eprintln!("skipping: QFORGE_QUANT_REF is not set");
            None
        }
    }
}

/// One line of manifest.tsv.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    qtype: String,
    imatrix: Option<String>,
    flags: Vec<String>,
    input: String,
    /// llama-quantize's output path, or `Err(message)` where it refused.
    output: Result<String, String>,
}

fn manifest(dir: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(dir.join("manifest.tsv")).expect("manifest.tsv");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "manifest line {line:?}");
            Case {
                name: f[0].into(),
                qtype: f[1].into(),
                imatrix: (f[2] != "-").then(|| f[2].into()),
                flags: match f[3] {
                    "-" => Vec::new(),
                    s => s.split_whitespace().map(String::from).collect(),
                },
                input: f[4].into(),
                output: match f[5].strip_prefix('!') {
                    Some(why) => Err(why.into()),
                    None => Ok(f[5].into()),
                },
            }
        })
        .collect()
}

/// The files llama-quantize wrote for `out`: itself, or its `-0000i-of-0000N.gguf` files.
fn written(out: &str, keep_split: bool) -> Vec<PathBuf> {
    if !keep_split {
        return vec![PathBuf::from(out)];
    }
    let prefix = out.strip_suffix(".gguf").unwrap_or(out);
    let dir = Path::new(prefix).parent().unwrap();
    let stem = Path::new(prefix).file_name().unwrap().to_str().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(&format!("{stem}-")) && n.contains("-of-") && n.ends_with(".gguf")
        })
        .collect();
    files.sort();
    files
}

/// Whether two files are equal, streamed; on a difference, where.
fn same_file(ours: &Path, theirs: &Path) -> Result<(), String> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let (mut a, mut b) = (open(ours)?, open(theirs)?);
    let (la, lb) = (a.metadata().unwrap().len(), b.metadata().unwrap().len());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = a.read(&mut x).unwrap();
        let m = b.read(&mut y[..n.max(1)]).unwrap();
        let common = n.min(m);
        if let Some(i) = (0..common).find(|&i| x[i] != y[i]) {
            return Err(format!(
                "first difference at byte {} ({}); sizes {la} and {lb}",
                at + i as u64,
                where_in(theirs, at + i as u64)
            ));
        }
        if n != m || n == 0 {
            return if la == lb {
                Ok(())
            } else {
                Err(format!("sizes differ: ours {la}, llama-quantize's {lb}"))
            };
        }
        at += n as u64;
    }
}

/// What lies at byte `offset` of a GGUF: the header or a tensor's data.
fn where_in(path: &Path, offset: u64) -> String {
    let Ok(src) = TensorSource::open(path) else {
        return "unreadable".into();
    };
    match src
        .tensors
        .iter()
        .find(|t| (t.offset..t.offset + t.bytes).contains(&offset))
    {
        Some(t) => format!("data of {} ({})", t.name, t.ty),
        None if src.tensors.iter().all(|t| offset < t.offset) => "header".into(),
        None => "padding".into(),
    }
}

/// Runs one case; `Err` says how it differs.
fn run_case(case: &Case, tmp: &Path) -> Result<(), String> {
    let keep_split = case.flags.iter().any(|f| f == "--keep-split");
    let out = tmp.join(format!("{}.gguf", case.name));
    let mut args: Vec<String> = vec!["quantize".into(), "-q".into()];
    if let Some(m) = &case.imatrix {
        args.extend(["--imatrix".into(), m.clone()]);
    }
    args.extend(case.flags.iter().cloned());
    args.extend([
        case.input.clone(),
        out.to_str().unwrap().into(),
        case.qtype.clone(),
        "1".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = qforge(&argv);
    let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
    let result = match &case.output {
        Err(why) => match o.status.code() {
            Some(2) if stderr.lines().count() == 1 && stderr.starts_with("error: ") => Ok(()),
            code => Err(format!(
                "llama-quantize refuses it ({why}); qforge: exit {code:?}, {stderr:?}"
            )),
        },
        Ok(_) if !o.status.success() => Err(format!("qforge failed: {stderr}")),
        Ok(theirs_path) => {
            let (ours, theirs) = (
                written(out.to_str().unwrap(), keep_split),
                written(theirs_path, keep_split),
            );
            // File names after the output's stem: "" or "-00001-of-00003.gguf", ...
            let tails = |v: &[PathBuf], out: &str| -> Vec<String> {
                let stem = Path::new(out.strip_suffix(".gguf").unwrap_or(out))
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                v.iter()
                    .map(|p| p.file_name().unwrap().to_string_lossy()[stem.len()..].to_string())
                    .collect()
            };
            let (our_tails, their_tails) = (
                tails(&ours, out.to_str().unwrap()),
                tails(&theirs, theirs_path),
            );
            if our_tails != their_tails {
                Err(format!(
                    "files {our_tails:?}, llama-quantize wrote {their_tails:?}"
                ))
            } else {
                ours.iter().zip(&theirs).try_for_each(|(a, b)| {
                    same_file(a, b).map_err(|e| format!("{}: {e}", b.display()))
                })
            }
        }
    };
    for f in written(out.to_str().unwrap(), keep_split) {
        let _ = std::fs::remove_file(f);
    }
    result
}

#[test]
fn every_llama_quantize_type_and_flag_gives_llama_quantizes_whole_file() {
    let Some(dir) = reference_dir() else { return };
    let cases = manifest(&dir);
    // The manifest covers llama-quantize's whole list, with an imatrix exactly where needed.
    for o in QUANT_OPTIONS {
        let case = cases
            .iter()
            .find(|c| c.name == o.name)
            .unwrap_or_else(|| panic!("manifest.tsv has no case for {}", o.name));
        assert_eq!(case.qtype, o.name);
        assert_eq!(
            case.imatrix.is_some(),
            o.imatrix_required(),
            "{}: imatrix given where llama-quantize requires one",
            o.name
        );
    }
    // Q1_0 has one case on real weights that llama-quantize quantizes (not a refusal).
    assert!(
        cases
            .iter()
            .any(|c| c.name == "Q1_0-minilm" && c.qtype == "Q1_0" && c.output.is_ok()),
        "manifest.tsv has no Q1_0-minilm case with llama-quantize's output"
    );
    for p in PENDING {
        let o = QUANT_OPTIONS.iter().find(|o| o.name == *p);
        assert!(
            o.is_some_and(|o| o.mix().is_none()),
            "{p} is implemented now (or unknown): remove it from PENDING in tests/cli/llama_quantize.rs"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let todo: Mutex<Vec<&Case>> = Mutex::new(
        cases
            .iter()
            .filter(|c| !PENDING.contains(&c.qtype.as_str()))
            .rev()
            .collect(),
    );
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let Some(case) = todo.lock().unwrap().pop() else {
                    break;
                };
                let t0 = std::time::Instant::now();
                let r = run_case(case, tmp.path());
                eprintln!(
                    "{:24} {:5.1} s  {}",
                    case.name,
                    t0.elapsed().as_secs_f64(),
                    if r.is_ok() { "same" } else { "DIFFERENT" }
                );
                if let Err(e) = r {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{} ({}): {e}", case.name, case.qtype));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from llama-quantize:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

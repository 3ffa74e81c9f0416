//! Reliability (issue #7), through the real binary where that is fast enough and through
//! the library parse functions everywhere:
//! - corruption: every truncation, and a byte flip at every byte, of a small file of each
//!   format (GGUF, safetensors, QNAT, KV profile, legacy imatrix) gives a clean error or a
//!   consistent parse, never a panic; flips in tensor data change nothing else;
//! - atomic outputs: `quantize` killed with SIGKILL at any moment, or stopped by a full
//!   disk (`ulimit -f`), leaves the destination absent or the previous complete file;
//! - hostile input: shard paths and symlinks leaving the folder, control characters in
//!   names (kept as data, escaped in every output), NaN/Inf weights (counted per tensor,
//!   refused by `quantize` unless `--allow-nonfinite`), shapes whose element count
//!   overflows;
//! - determinism: quantized bytes do not depend on `--threads`.
//!
//! `docs/reliability.md` describes these tests and the fuzz targets in `fuzz/`.

use crate::common::*;
use qforge::kv::profile::RopeState;
use qforge::kv::{build_profile, KvProfile, KvRole, KvShape, ProfileSpec};
use std::ops::Range;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a single qforge run may take before the test calls it a hang.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs qforge with stdout and stderr going to files in `scratch`, killing it (and
/// failing the test) if it runs past [`RUN_LIMIT`].
fn run_bounded(args: &[&str], scratch: &Path) -> Output {
    run_cmd(
        Command::new(env!("CARGO_BIN_EXE_qforge")).args(args),
        scratch,
    )
}

fn run_cmd(cmd: &mut Command, scratch: &Path) -> Output {
    let (out_path, err_path) = (scratch.join("stdout"), scratch.join("stderr"));
    let mut child = cmd
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting qforge");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("qforge {cmd:?} hung for {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// Asserts a clean failure with `code`: one `error:` line on stderr and no panic.
fn assert_clean_failure(out: &Output, code: i32, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panic: {stderr}");
    assert_eq!(out.status.code(), Some(code), "{what}: stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
}

// ---------------------------------------------------------------------------------------
// Corruption: truncations and byte flips.
// ---------------------------------------------------------------------------------------

/// A small file of one format and how to read it.
struct Subject {
    /// File name for the binary runs.
    name: &'static str,
    /// The intact file.
    bytes: Vec<u8>,
    /// Byte ranges holding payload (tensor data, importance values): a flip there must
    /// still parse, to the same structure. Everything else counts as header.
    payload: Vec<Range<usize>>,
    /// Truncation lengths that are themselves valid files (optional trailer, newline).
    valid_prefixes: Vec<usize>,
    /// Whether every flip of a header byte must be rejected (digested formats).
    header_flips_fail: bool,
    /// Whether library errors must map to exit code 2 (`InvalidInput` in the chain).
    lib_errors_are_invalid_input: bool,
    /// Parses with the library, checking invariants on success (a panic fails the
    /// test); `Ok` describes the structure read, not the payload.
    parse: fn(&[u8]) -> anyhow::Result<String>,
    /// qforge arguments; `FILE` stands for the corrupted file.
    cli: Vec<String>,
    /// Whether stdout of a successful run only depends on the structure (so a payload
    /// flip must print exactly what the intact file prints).
    stdout_is_structure: bool,
    /// xor masks: 0xff everywhere; text formats add 0x01, which keeps a byte ASCII.
    masks: &'static [u8],
    /// Run the binary on every `stride`-th truncation and flip (the library on all).
    stride: usize,
}

/// Whether the product of `dims` fits in u64 in forward and reverse order.
fn product_fits(dims: &[u64]) -> bool {
    let fwd = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let rev = dims.iter().rev().try_fold(1u64, |a, &d| a.checked_mul(d));
    fwd.is_some() && rev.is_some()
}

fn parse_gguf(b: &[u8]) -> anyhow::Result<String> {
    let h = qforge::formats::gguf::read_header(b)?;
    for t in &h.tensors {
        let end = h
            .data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.bytes));
        assert!(end.is_some_and(|e| e <= b.len() as u64), "{t:?} past EOF");
        assert!(product_fits(&t.ne), "{t:?}: element count overflows");
    }
    Ok(format!(
        "v{} {:?} {:?} @{}",
        h.version, h.metadata, h.tensors, h.data_offset
    ))
}

fn parse_safetensors(b: &[u8]) -> anyhow::Result<String> {
    let s = qforge::formats::safetensors::read_shard(b, 0)?;
    for t in &s.tensors {
        assert!(t.offset + t.bytes <= b.len() as u64, "{t:?} past EOF");
        assert!(product_fits(&t.shape), "{t:?}: element count overflows");
    }
    Ok(format!("{:?} {:?}", s.tensors, s.metadata))
}

fn parse_profile(b: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(b)?;
    KvProfile::from_json(text)?.to_json()
}

fn parse_imatrix(b: &[u8]) -> anyhow::Result<String> {
    let m = qforge::quant::imatrix::parse_legacy(b)?;
    let values: usize = m.entries.values().map(Vec::len).sum();
    assert!(values * 4 <= b.len(), "more values than bytes");
    let shape: Vec<(&String, usize)> = m.entries.iter().map(|(k, v)| (k, v.len())).collect();
    Ok(format!("{shape:?} {:?} {:?}", m.datasets, m.chunks))
}

/// Runs `parse`, turning a panic into a test failure that names the corruption.
fn parse_guarded(s: &Subject, bytes: &[u8], what: &str) -> anyhow::Result<String> {
    match catch_unwind(AssertUnwindSafe(|| (s.parse)(bytes))) {
        Ok(r) => r,
        Err(_) => panic!("{}: parser panicked on {what}", s.name),
    }
}

/// The subject's qforge arguments with `FILE` replaced by `path`.
fn cli_args<'a>(s: &'a Subject, path: &'a str) -> Vec<&'a str> {
    s.cli
        .iter()
        .map(|a| if a == "FILE" { path } else { a.as_str() })
        .collect()
}

/// Checks one corrupted file with the binary: the exit code agrees with the library,
/// errors are one clean line, and a payload-only change prints what the intact file does.
fn check_binary(s: &Subject, dir: &Path, bytes: &[u8], lib_ok: bool, same_as: Option<&[u8]>) {
    let path = dir.join(s.name);
    std::fs::write(&path, bytes).unwrap();
    let p = path.to_str().unwrap();
    let out = run_bounded(&cli_args(s, p), dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if lib_ok {
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", s.name);
        if let Some(expected) = same_as {
            assert_eq!(
                out.stdout, expected,
                "{}: payload flip changed stdout",
                s.name
            );
        }
    } else {
        assert_clean_failure(&out, 2, s.name);
    }
}

/// Every truncation and every byte flip of `s` (see [`Subject`]).
fn check_corruptions(s: &Subject) {
    let original = (s.parse)(&s.bytes).unwrap_or_else(|e| panic!("{}: intact: {e:#}", s.name));
    let dir = tempfile::tempdir().unwrap();
    let intact_stdout = s.stdout_is_structure.then(|| {
        let path = dir.path().join(s.name);
        std::fs::write(&path, &s.bytes).unwrap();
        let p = path.to_str().unwrap();
        let out = run_bounded(&cli_args(s, p), dir.path());
        assert!(out.status.success(), "{}: intact file fails", s.name);
        out.stdout
    });
    let expect_invalid = |e: &anyhow::Error, what: &str| {
        if s.lib_errors_are_invalid_input {
            assert_eq!(qforge::error::exit_code(e), 2, "{}: {what}: {e:#}", s.name);
        }
    };
    let mut case = 0usize;
    for len in 0..s.bytes.len() {
        let what = format!("truncation to {len} bytes");
        let r = parse_guarded(s, &s.bytes[..len], &what);
        if s.valid_prefixes.contains(&len) {
            assert!(r.is_ok(), "{}: {what}: {:?}", s.name, r.err());
        } else if let Err(e) = &r {
            expect_invalid(e, &what);
        } else {
            panic!("{}: {what} parsed", s.name);
        }
        if case.is_multiple_of(s.stride) {
            check_binary(s, dir.path(), &s.bytes[..len], r.is_ok(), None);
        }
        case += 1;
    }
    for &mask in s.masks {
        for i in 0..s.bytes.len() {
            let what = format!("byte {i} ^ {mask:#04x}");
            let mut b = s.bytes.clone();
            b[i] ^= mask;
            let r = parse_guarded(s, &b, &what);
            let in_payload = s.payload.iter().any(|p| p.contains(&i));
            match &r {
                Ok(desc) if in_payload => {
                    assert_eq!(desc, &original, "{}: {what} changed the structure", s.name)
                }
                Err(e) if in_payload => panic!("{}: {what} in payload: {e:#}", s.name),
                Ok(_) if s.header_flips_fail => panic!("{}: {what} was accepted", s.name),
                Ok(_) => {}
                Err(e) => expect_invalid(e, &what),
            }
            if case.is_multiple_of(s.stride) {
                let same = intact_stdout.as_deref().filter(|_| in_payload);
                check_binary(s, dir.path(), &b, r.is_ok(), same);
            }
            case += 1;
        }
    }
}

#[test]
fn corrupted_gguf_fails_cleanly() {
    let bytes = std::fs::read(fixture("mixed-types.gguf")).unwrap();
    let h = qforge::formats::gguf::read_header(&bytes).unwrap();
    let payload = h
        .tensors
        .iter()
        .map(|t| {
            let start = (h.data_offset + t.offset) as usize;
            start..start + t.bytes as usize
        })
        .collect();
    check_corruptions(&Subject {
        name: "mixed-types.gguf",
        bytes,
        payload,
        valid_prefixes: vec![],
        header_flips_fail: false,
        lib_errors_are_invalid_input: true,
        parse: parse_gguf,
        cli: args(&["inspect", "--json", "--tensors", "FILE"]),
        stdout_is_structure: true,
        masks: &[0xff],
        stride: 7,
    });
}

#[test]
fn corrupted_safetensors_fails_cleanly() {
    let bytes = std::fs::read(fixture("sharded/model-00002-of-00002.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    check_corruptions(&Subject {
        name: "shard.safetensors",
        payload: std::iter::once(header_end..bytes.len()).collect(),
        bytes,
        valid_prefixes: vec![],
        header_flips_fail: false,
        lib_errors_are_invalid_input: true,
        parse: parse_safetensors,
        cli: args(&["inspect", "--json", "--tensors", "FILE"]),
        stdout_is_structure: true,
        masks: &[0xff],
        stride: 3,
    });
}

fn parse_qnat(b: &[u8]) -> anyhow::Result<String> {
    let index = qforge::formats::qnat::parse_index(b)?;
    for t in &index.tensors {
        for s in &t.sections {
            let data = index
                .section_data(b, s)
                .expect("a parsed section lies inside");
            assert_eq!(data.len() as u64, s.bytes, "{}: section length", t.name);
        }
    }
    Ok(format!("{:?}", index))
}

/// A QNAT file as `quantize --format qnat` writes it, from a one-tensor GGUF.
fn small_qnat() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut g = GgufBytes::header(3, 1, 1);
    g.str(b"general.architecture").u32(8).str(b"llama");
    g.tensor(b"blk.0.attn_q.weight", &[64, 2], 0, 0).data(0);
    let x: Vec<f32> = (0..128).map(|j| (j as f32 * 0.37).sin()).collect();
    g.0.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    let (input, dest) = (dir.path().join("in.gguf"), dir.path().join("small.qnat"));
    std::fs::write(&input, g.0).unwrap();
    let (i, d) = (input.to_str().unwrap(), dest.to_str().unwrap());
    let out = qforge(&["quantize", i, "-o", d, "--format", "qnat", "-t", "NF4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&dest).unwrap()
}

#[test]
fn corrupted_qnat_fails_cleanly() {
    let bytes = small_qnat();
    let index = qforge::formats::qnat::parse_index(&bytes).unwrap();
    let base = index.header.data_offset;
    let payload = index
        .tensors
        .iter()
        .flat_map(|t| &t.sections)
        .map(|s| (base + s.offset) as usize..(base + s.offset + s.bytes) as usize)
        .collect();
    check_corruptions(&Subject {
        name: "small.qnat",
        bytes,
        payload,
        valid_prefixes: vec![],
        // Section padding is only checked by `inspect --verify`.
        header_flips_fail: false,
        lib_errors_are_invalid_input: true,
        parse: parse_qnat,
        cli: args(&["inspect", "--json", "--tensors", "FILE"]),
        stdout_is_structure: true,
        masks: &[0xff],
        stride: 5,
    });
}

/// A small profile written as `kv-profile build` writes it (pretty JSON and a newline).
fn small_profile() -> Vec<u8> {
    let mut spec = ProfileSpec::new(KvShape {
        layers: 1,
        kv_heads: 1,
        query_heads: 2,
        head_dim: 8,
        tokens: 16,
        role: KvRole::Both,
        rope: RopeState::PostRope,
        rope_theta: Some(10_000.0),
    });
    spec.codec.block_dim = 2;
    spec.codec.codebook_size = 4;
    spec.codec.lloyd_iterations = Some(2);
    spec.codec.training_blocks = Some(64);
    spec.pages.tokens_per_page = 8;
    spec.protected.first_tokens = 1;
    let profile = build_profile(&spec, None).unwrap();
    (profile.to_json().unwrap() + "\n").into_bytes()
}

#[test]
fn corrupted_kv_profile_is_always_rejected() {
    let bytes = small_profile();
    check_corruptions(&Subject {
        name: "profile.json",
        valid_prefixes: vec![bytes.len() - 1],
        bytes,
        payload: vec![],
        // Every part is digested: no single changed byte may pass.
        header_flips_fail: true,
        lib_errors_are_invalid_input: false,
        parse: parse_profile,
        cli: args(&["kv-profile", "verify", "FILE"]),
        stdout_is_structure: false,
        masks: &[0xff, 0x01],
        stride: 11,
    });
}

/// A legacy imatrix (`i32 n`, entries, dataset trailer) and its value byte ranges.
fn legacy_imatrix() -> (Vec<u8>, Vec<Range<usize>>, usize) {
    let entries: [(&str, i32, &[f32]); 2] = [
        ("imx.0.weight", 4, &[8.0, 2.0, 1.0, 0.5, 3.0, 7.0, 1.5, 2.5]),
        ("imx.1.weight", 0, &[1.0, 2.0, 3.0, 4.0]),
    ];
    let mut v = (entries.len() as i32).to_le_bytes().to_vec();
    let mut payload = Vec::new();
    for (name, ncall, vals) in entries {
        v.extend_from_slice(&(name.len() as i32).to_le_bytes());
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&ncall.to_le_bytes());
        v.extend_from_slice(&(vals.len() as i32).to_le_bytes());
        let start = v.len();
        vals.iter()
            .for_each(|x| v.extend_from_slice(&x.to_le_bytes()));
        payload.push(start..v.len());
    }
    let entries_end = v.len();
    v.extend_from_slice(&10i32.to_le_bytes());
    v.extend_from_slice(&9i32.to_le_bytes());
    v.extend_from_slice(b"calib.txt");
    (v, payload, entries_end)
}

#[test]
fn corrupted_legacy_imatrix_fails_cleanly() {
    let (bytes, payload, entries_end) = legacy_imatrix();
    check_corruptions(&Subject {
        name: "imatrix.dat",
        bytes,
        payload,
        // The dataset trailer is optional.
        valid_prefixes: vec![entries_end],
        header_flips_fail: false,
        lib_errors_are_invalid_input: true,
        parse: parse_imatrix,
        cli: args(&[
            "quantize",
            "--dry-run",
            "-t",
            "Q8_0",
            fixture("tiny-llama.gguf").to_str().unwrap(),
            "--imatrix",
            "FILE",
        ]),
        stdout_is_structure: false,
        masks: &[0xff],
        stride: 3,
    });
}

/// An argument list from string slices.
fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Atomic outputs.
// ---------------------------------------------------------------------------------------

/// What a destination may hold after an interrupted run.
fn assert_not_partial(dest: &Path, previous: Option<&[u8]>, complete: &[u8], what: &str) {
    match (std::fs::read(dest).ok(), previous) {
        (None, None) => {}
        (None, Some(_)) => panic!("{what}: the previous file was removed"),
        (Some(b), _) if b == complete => {}
        (Some(b), Some(p)) if b == p => {}
        (Some(b), _) => panic!("{what}: destination holds {} partial bytes", b.len()),
    }
}

/// Leftover temporary files in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".qforge-tmp."))
        .collect()
}

fn quantize_cmd(input: &Path, dest: &Path, ty: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qforge"));
    cmd.args(["quantize", input.to_str().unwrap(), "-o"])
        .arg(dest)
        .args(["-t", ty])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

const PREVIOUS: &[u8] = b"a previous, complete output file";

/// A fresh folder `name` under `dir` and the output path in it, holding [`PREVIOUS`]
/// when `with_previous`; returns the path and what it holds.
fn output_case(
    dir: &Path,
    name: &str,
    with_previous: bool,
) -> (std::path::PathBuf, Option<&'static [u8]>) {
    let case = dir.join(name);
    std::fs::create_dir(&case).unwrap();
    let dest = case.join("out.gguf");
    let previous = with_previous.then_some(PREVIOUS);
    if let Some(p) = previous {
        std::fs::write(&dest, p).unwrap();
    }
    (dest, previous)
}

#[test]
fn sigkill_at_any_moment_leaves_no_partial_output() {
    let input = fixture("tiny-llama.gguf");
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.gguf");
    let out = run_cmd(&mut quantize_cmd(&input, &reference, "Q8_0"), dir.path());
    assert!(out.status.success());
    let complete = std::fs::read(&reference).unwrap();

    let mut killed = 0;
    for (i, ms) in [0u64, 5, 20, 50, 100, 200].into_iter().enumerate() {
        for with_previous in [false, true] {
            let (dest, previous) = output_case(
                dir.path(),
                &format!("case{i}-{with_previous}"),
                with_previous,
            );
            let mut child = quantize_cmd(&input, &dest, "Q8_0").spawn().unwrap();
            std::thread::sleep(Duration::from_millis(ms));
            let _ = child.kill(); // SIGKILL; fails only if it already exited
            let status = child.wait().unwrap();
            killed += usize::from(status.signal() == Some(9));
            assert_not_partial(&dest, previous, &complete, &format!("killed after {ms} ms"));
        }
    }
    assert!(killed > 0, "no run was actually interrupted");
}

#[test]
fn sigkill_while_the_temporary_file_is_written_leaves_no_partial_output() {
    // F32 output (1.5 MiB) overflows the writer's 1 MiB buffer, so the temporary file
    // holds a partial tensor section for a while before the rename.
    let input = fixture("tiny-llama.gguf");
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.gguf");
    assert!(
        run_cmd(&mut quantize_cmd(&input, &reference, "F32"), dir.path())
            .status
            .success()
    );
    let complete = std::fs::read(&reference).unwrap();
    let mut seen_temp = 0;
    for (i, min_len) in [0u64, 1, 0, 1].into_iter().enumerate() {
        let case = dir.path().join(format!("watch{i}"));
        std::fs::create_dir(&case).unwrap();
        let dest = case.join("out.gguf");
        let previous = (i % 2 == 0).then_some(PREVIOUS);
        if let Some(p) = previous {
            std::fs::write(&dest, p).unwrap();
        }
        let mut child = quantize_cmd(&input, &dest, "F32").spawn().unwrap();
        // Kill as soon as a temporary file of at least `min_len` bytes is seen.
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() && start.elapsed() < RUN_LIMIT {
            let tmp = temp_files(&case).into_iter().next();
            let len = tmp.and_then(|t| std::fs::metadata(case.join(t)).ok());
            if len.is_some_and(|m| m.len() >= min_len) {
                seen_temp += 1;
                break;
            }
        }
        let _ = child.kill();
        child.wait().unwrap();
        assert_not_partial(&dest, previous, &complete, &format!("watch case {i}"));
    }
    assert!(
        seen_temp > 0,
        "never saw a temporary file to kill the run on"
    );
}

/// `sh -c` wrapper limiting the file size to 64 blocks (32 KiB in dash, 64 KiB in bash),
/// far below the ~400 KiB output; with `ignore_xfsz` write() fails with EFBIG instead.
fn quantize_with_file_limit(dest: &Path, ignore_xfsz: bool, scratch: &Path) -> Output {
    let trap = if ignore_xfsz { "trap '' XFSZ; " } else { "" };
    let script = format!("{trap}ulimit -f 64 && exec \"$0\" \"$@\"");
    run_cmd(
        Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_qforge"), "quantize"])
            .arg(fixture("tiny-llama.gguf"))
            .arg("-o")
            .arg(dest)
            .args(["-t", "Q8_0"]),
        scratch,
    )
}

#[test]
fn disk_full_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    for ignore_xfsz in [false, true] {
        for with_previous in [false, true] {
            let (dest, previous) = output_case(
                dir.path(),
                &format!("{ignore_xfsz}-{with_previous}"),
                with_previous,
            );
            let out = quantize_with_file_limit(&dest, ignore_xfsz, dir.path());
            let what = format!("ulimit -f, SIGXFSZ ignored: {ignore_xfsz}");
            if ignore_xfsz {
                // write() fails with EFBIG: a runtime error, exit 1, one line.
                assert_clean_failure(&out, 1, &what);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.contains("too large"), "{stderr}");
            } else {
                assert_eq!(out.status.signal(), Some(25), "{what}: killed by SIGXFSZ");
            }
            assert_not_partial(&dest, previous, &[], &what);
        }
    }
}

/// A clean runtime error must remove its temporary file (a kill may leave one).
#[test]
fn disk_full_error_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case");
    std::fs::create_dir(&case).unwrap();
    let out = quantize_with_file_limit(&case.join("out.gguf"), true, dir.path());
    assert_clean_failure(&out, 1, "EFBIG");
    assert_eq!(temp_files(&case), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// Hostile input.
// ---------------------------------------------------------------------------------------

#[test]
fn sharded_index_symlink_tricks_and_odd_paths() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(model.join("real-sub")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let shard = fixture("sharded/model-00001-of-00002.safetensors");
    std::fs::copy(&shard, model.join("m.safetensors")).unwrap();
    std::fs::copy(&shard, outside.join("evil.safetensors")).unwrap();
    let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, model.join(name));
    link(&outside, "sub").unwrap(); // a directory symlink leaving the folder
    link(&model.join("hop2.safetensors"), "hop1.safetensors").unwrap(); // a chain
    link(&outside.join("evil.safetensors"), "hop2.safetensors").unwrap();
    link(&model.join("loop.safetensors"), "loop.safetensors").unwrap();
    link(&model.join("m.safetensors"), "inside.safetensors").unwrap();
    let index = model.join("model.safetensors.index.json");
    let write_index = |file: &str| {
        let text = serde_json::json!({"weight_map": {"a.weight": file, "a.bias": file}});
        std::fs::write(&index, text.to_string()).unwrap();
    };
    let inspect = |path: &Path| qforge_on(&["inspect"], path);
    for (file, needle) in [
        ("sub/evil.safetensors", "outside the model folder"),
        ("hop1.safetensors", "outside the model folder"),
        ("loop.safetensors", "loop.safetensors"),
        ("real-sub", "not a regular file"),
        ("m.safetensors\0", "inside the model folder"),
        ("m.safetensors\r", "inside the model folder"),
        ("..\\m.safetensors", "m.safetensors"),
        ("./../outside/evil.safetensors", "inside the model folder"),
    ] {
        write_index(file);
        assert_invalid(&inspect(&index), needle);
        assert_invalid(&inspect(&model), needle);
    }
    // Symlinks that stay inside are fine, and so is a folder reached through a symlink.
    write_index("inside.safetensors");
    let r = json(&qforge_on(&["inspect", "--json"], &index));
    assert_eq!(r["tensors"].as_array().unwrap().len(), 2);
    std::os::unix::fs::symlink(&model, dir.path().join("alias")).unwrap();
    let r = json(&qforge_on(
        &["inspect", "--json"],
        &dir.path().join("alias"),
    ));
    assert_eq!(r["tensors"].as_array().unwrap().len(), 2);
}

/// A GGUF whose metadata key, string value and tensor name carry terminal escapes.
fn control_char_gguf() -> Vec<u8> {
    let mut g = GgufBytes::header(3, 1, 2);
    g.str(b"general.architecture").u32(8).str(b"llama");
    g.str(b"evil\x1b[31m.key\x07")
        .u32(8)
        .str(b"value\x1b]0;title\x07\r");
    g.tensor(b"w\x1b[2J\r", &[32], 0, 0).data(128);
    g.0
}

/// Bytes a terminal would act on: C0 controls other than newline, and DEL.
fn raw_controls(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .copied()
        .filter(|&b| (b < 0x20 && b != b'\n') || b == 0x7f)
        .collect()
}

#[test]
fn control_characters_in_names_are_kept_and_escaped_in_json() {
    // Decision: names are data; they are accepted and kept byte for byte (quantize writes
    // them back unchanged), and every output escapes them.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ctl.gguf");
    std::fs::write(&input, control_char_gguf()).unwrap();
    let out = qforge_on(&["inspect", "--json", "--tensors"], &input);
    assert_eq!(raw_controls(&out.stdout), b"", "JSON escapes controls");
    let r = json(&out);
    assert_eq!(r["metadata"][1]["key"], "evil\x1b[31m.key\x07");
    assert_eq!(r["metadata"][1]["value"], "value\x1b]0;title\x07\r");
    assert_eq!(r["tensors"][0]["name"], "w\x1b[2J\r");

    let dest = dir.path().join("q.gguf");
    let out = qforge(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        dest.to_str().unwrap(),
        "-t",
        "Q8_0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = qforge::formats::TensorSource::open(&dest).unwrap();
    assert_eq!(q.tensors[0].name, "w\x1b[2J\r");
    assert!(q.get("evil\x1b[31m.key\x07").is_some());
}

#[test]
fn inspect_text_output_never_sends_raw_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ctl.gguf");
    std::fs::write(&input, control_char_gguf()).unwrap();
    let out = qforge_on(&["inspect", "--tensors"], &input);
    assert!(out.status.success());
    assert_eq!(raw_controls(&out.stdout), b"");
}

/// A safetensors file from a header string and a data length.
fn safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data, 0);
    v
}

#[test]
fn error_lines_never_send_raw_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ctl.safetensors");
    // A JSON escape, so the header is valid JSON whose dtype string holds a raw ESC.
    let h = r#"{"w":{"dtype":"X\u001b[31m","shape":[1],"data_offsets":[0,4]}}"#;
    std::fs::write(&p, safetensors(h, 4)).unwrap();
    let out = qforge_on(&["inspect"], &p);
    assert_clean_failure(&out, 2, "bad dtype");
    assert_eq!(raw_controls(&out.stderr), b"");
}

/// Three F32 tensors: a clean one, one with 3 NaN, one with +inf and -inf.
fn nonfinite_gguf() -> Vec<u8> {
    let mut g = GgufBytes::header(3, 3, 1);
    g.str(b"general.architecture").u32(8).str(b"llama");
    for (i, name) in NONFINITE_NAMES.iter().enumerate() {
        g.tensor(name.as_bytes(), &[256, 2], 0, i as u64 * 2048);
    }
    g.data(0);
    for i in 0..3 {
        let mut x: Vec<f32> = (0..512)
            .map(|j| ((i * 512 + j) as f32 * 0.37).sin())
            .collect();
        if i == 1 {
            x[5] = f32::NAN;
            x[6] = -f32::NAN;
            x[400] = f32::NAN;
        } else if i == 2 {
            x[0] = f32::INFINITY;
            x[511] = f32::NEG_INFINITY;
        }
        g.0.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    }
    g.0
}

const NONFINITE_NAMES: [&str; 3] = [
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
];

#[test]
fn nonfinite_weights_are_refused_unless_allowed_and_reported_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("nonfinite.gguf");
    std::fs::write(&gguf, nonfinite_gguf()).unwrap();
    // bnb-safetensors writes a GGUF back under Hugging Face names, which takes a whole
    // model: it gets the same tensors in a safetensors file (names kept).
    let st = dir.path().join("nonfinite.safetensors");
    let g = qforge::formats::TensorSource::open(&gguf).unwrap();
    let views: Vec<_> = g
        .tensors
        .iter()
        .map(|t| {
            let shape = t.shape.iter().map(|&d| d as usize).collect();
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, g.data(t));
            (t.name.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &st).unwrap();
    for (format, ty, file_output) in [
        ("gguf", "Q8_0", true),
        ("qnat", "NF4", true),
        ("bnb-safetensors", "NF4", false),
    ] {
        let input = if file_output { &gguf } else { &st };
        let input = input.to_str().unwrap();
        let case = dir.path().join(format);
        std::fs::create_dir(&case).unwrap();
        let dest = case.join("out");
        let d = dest.to_str().unwrap();
        let base = ["quantize", input, "-o", d, "-t", ty, "--format", format];
        // Refused, naming the first bad tensor and its count; nothing is left behind and
        // a previous output file is untouched.
        if file_output {
            std::fs::write(&dest, PREVIOUS).unwrap();
        }
        let out = qforge(&base);
        assert_invalid(
            &out,
            "tensor blk.0.attn_k.weight has 3 NaN or infinite values; pass --allow-nonfinite",
        );
        if file_output {
            assert_eq!(std::fs::read(&dest).unwrap(), PREVIOUS, "{format}");
            std::fs::remove_file(&dest).unwrap();
        } else {
            assert!(!dest.exists(), "{format}: refused output left in place");
        }
        assert_eq!(temp_files(&case), Vec::<String>::new(), "{format}");

        // Allowed: every tensor reports its own count, in JSON and in the text table.
        let mut allowed = base.to_vec();
        allowed.push("--allow-nonfinite");
        let mut with_json = allowed.clone();
        with_json.push("--json");
        let r = json(&qforge(&with_json));
        let counts: Vec<(String, u64)> = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let n = t["non_finite"].as_u64();
                (t["name"].as_str().unwrap().to_string(), n.unwrap())
            })
            .collect();
        let count = |name: &str| counts.iter().find(|(n, _)| n.contains(name)).map(|c| c.1);
        assert_eq!(count("attn_q"), Some(0), "{format}: {counts:?}");
        assert_eq!(count("attn_k"), Some(3), "{format}: {counts:?}");
        assert_eq!(count("attn_v"), Some(2), "{format}: {counts:?}");
        if file_output {
            std::fs::remove_file(&dest).unwrap();
        } else {
            std::fs::remove_dir_all(&dest).unwrap();
        }
        let out = qforge(&allowed);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |name: &str| text.lines().find(|l| l.contains(name)).unwrap_or("");
        assert!(line("attn_k").contains("3 non-finite"), "{format}: {text}");
        assert!(line("attn_v").contains("2 non-finite"), "{format}: {text}");
        assert!(!line("attn_q").contains("non-finite"), "{format}: {text}");
    }
}

#[test]
fn element_counts_that_overflow_are_invalid_input() {
    // A zero dimension makes the true product 0, but the other dimensions multiply past
    // u64 (or i64, ggml's type for ne) as soon as they are taken in another order.
    let dir = tempfile::tempdir().unwrap();
    let mut ggufs = Vec::new();
    for ne in [
        &[0, 1 << 62, 1 << 62][..],
        &[1 << 62, 1 << 62, 0],
        &[32, 0, 1 << 40, 1 << 40],
        &[1 << 63],
    ] {
        let mut g = GgufBytes::header(3, 1, 0);
        g.tensor(b"blk.0.attn_q.weight", ne, 0, 0).data(64);
        ggufs.push((format!("{ne:?}.gguf"), g.0));
    }
    let mut files = ggufs;
    for shape in [
        "[0,4611686018427387904,4611686018427387904]",
        "[9223372036854775808,0]",
    ] {
        let h = format!(
            r#"{{"model.layers.0.self_attn.q_proj.weight":{{"dtype":"F16","shape":{shape},"data_offsets":[0,0]}}}}"#
        );
        files.push((format!("{shape}.safetensors"), safetensors(&h, 0)));
    }
    for (name, bytes) in &files {
        let lib = if name.ends_with(".gguf") {
            qforge::formats::gguf::read_header(bytes).map(|_| ())
        } else {
            qforge::formats::safetensors::read_shard(bytes, 0).map(|_| ())
        };
        let err = lib.expect_err(name);
        assert_eq!(qforge::error::exit_code(&err), 2, "{name}: {err:#}");
        assert!(format!("{err:#}").contains("overflow"), "{name}: {err:#}");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_invalid(&qforge_on(&["inspect", "--tensors"], &path), "overflow");
        let dest = dir.path().join("out.gguf");
        let out = qforge(&[
            "quantize",
            path.to_str().unwrap(),
            "-o",
            dest.to_str().unwrap(),
            "-t",
            "Q4_K_M",
        ]);
        assert_invalid(&out, "overflow");
        assert!(!dest.exists());
    }
}

// ---------------------------------------------------------------------------------------
// Determinism.
// ---------------------------------------------------------------------------------------

#[test]
fn safetensors_to_q4_k_m_is_identical_for_1_2_and_8_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-llama.safetensors");
    let outputs: Vec<Vec<u8>> = ["1", "2", "8"]
        .iter()
        .map(|threads| {
            let dest = dir.path().join(format!("t{threads}.gguf"));
            let out = qforge(&[
                "quantize",
                input.to_str().unwrap(),
                "-o",
                dest.to_str().unwrap(),
                "-t",
                "Q4_K_M",
                "--threads",
                threads,
            ]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::read(&dest).unwrap()
        })
        .collect();
    assert!(outputs[0].len() > 100_000);
    assert!(outputs[1] == outputs[0], "2 threads differ from 1");
    assert!(outputs[2] == outputs[0], "8 threads differ from 1");
}

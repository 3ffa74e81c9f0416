//! llama-quantize's command line and file options on small models, end to end: the
//! positional form (`INPUT [OUTPUT] TYPE [NTHREADS]`, ftype numbers, the default output
//! name), `--override-kv`, `--prune-layers`, `--tensor-type-file`, `--keep-split` with split
//! input, the `quantize.imatrix.*` keys, `--max-buffer-size`, and their errors. The
//! byte-for-byte comparison with llama-quantize itself is `llama_quantize.rs`.

use crate::common::*;
use qforge::formats::ggml_type::GgmlType;
use qforge::formats::gguf::split::open_model;
use qforge::formats::gguf::writer::{GgufLayout, GgufStream, TensorSpec};
use qforge::formats::gguf::Arrays;
use qforge::formats::gguf::Value;
use qforge::formats::{TensorSource, TensorType};
use std::path::{Path, PathBuf};

type Kv = Vec<(String, Value)>;

/// Deterministic F32 values.
fn values(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((x as f32 / u32::MAX as f32) - 0.5).to_le_bytes()
        })
        .collect()
}

/// Writes a GGUF of F32 tensors `(name, ne)` with `meta`, random values.
fn write_gguf(path: &Path, meta: &Kv, tensors: &[(String, Vec<u64>)]) {
    write_gguf_with(path, meta, tensors, |i, n| values(n, i as u32));
}

/// [`write_gguf`] with tensor `i`'s `n` values from `fill`.
fn write_gguf_with(
    path: &Path,
    meta: &Kv,
    tensors: &[(String, Vec<u64>)],
    fill: impl Fn(usize, usize) -> Vec<u8>,
) {
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, ne)| TensorSpec {
            name: name.clone(),
            ne: ne.clone(),
            ty: GgmlType::F32,
        })
        .collect();
    let layout = GgufLayout::new(meta, &specs).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    let mut s = GgufStream::start(&mut file, &layout).unwrap();
    for (i, (_, ne)) in tensors.iter().enumerate() {
        s.write_data(&fill(i, ne.iter().product::<u64>() as usize))
            .unwrap();
    }
    s.finish().unwrap();
}

/// A llama with `blocks` blocks of 256-wide tensors: its metadata and tensors.
fn model(blocks: u32) -> (Kv, Vec<(String, Vec<u64>)>) {
    let meta: Kv = vec![
        ("general.architecture".into(), Value::string("llama")),
        ("general.name".into(), Value::string("small")),
        ("llama.block_count".into(), Value::U32(blocks)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.attention.head_count_kv".into(), Value::U32(4)),
        ("general.file_type".into(), Value::U32(0)),
    ];
    let mut tensors = vec![
        ("token_embd.weight".to_string(), vec![256, 32]),
        ("output_norm.weight".to_string(), vec![256]),
    ];
    for b in 0..blocks {
        for t in ["attn_q", "attn_v", "ffn_down"] {
            tensors.push((format!("blk.{b}.{t}.weight"), vec![256, 16]));
        }
        tensors.push((format!("blk.{b}.attn_norm.weight"), vec![256]));
    }
    (meta, tensors)
}

fn small_model(dir: &Path, blocks: u32) -> PathBuf {
    let (meta, tensors) = model(blocks);
    let path = dir.join("small.gguf");
    write_gguf(&path, &meta, &tensors);
    path
}

/// The same model split by gguf-split's rules into files of `per_file` tensors.
fn split_model(dir: &Path, blocks: u32, per_file: usize) -> Vec<PathBuf> {
    let (meta, tensors) = model(blocks);
    let parts: Vec<_> = tensors.chunks(per_file).collect();
    let n = parts.len() as u16;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let mut kv = if i == 0 { meta.clone() } else { Vec::new() };
            kv.push(("split.no".into(), Value::U16(i as u16)));
            kv.push(("split.count".into(), Value::U16(n)));
            kv.push((
                "split.tensors.count".into(),
                Value::I32(tensors.len() as i32),
            ));
            let path = dir.join(format!("in-{:05}-of-{n:05}.gguf", i + 1));
            let first = i * per_file;
            write_gguf_with(&path, &kv, part, |j, n| values(n, (first + j) as u32));
            path
        })
        .collect()
}

fn run(args: &[&str]) {
    let o = qforge(args);
    assert!(
        o.status.success(),
        "qforge {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn keys(src: &TensorSource) -> Vec<&str> {
    src.metadata.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn llama_quantizes_positional_form_equals_the_flag_form() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 2);
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    run(&["quantize", "-q", s(&input), "-o", s(&a), "-t", "Q8_0"]);
    run(&["quantize", "-q", s(&input), s(&b), "q8_0", "2"]);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // ftype 7 is Q8_0; without OUTPUT the file is ggml-model-NAME.gguf beside the input.
    run(&["quantize", "-q", s(&input), "7"]);
    let default = dir.path().join("ggml-model-Q8_0.gguf");
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&default).unwrap());
    // ftype 15 is listed first as Q4_K (llama-quantize's table order).
    run(&["quantize", "-q", s(&input), "15", "0"]);
    assert!(dir.path().join("ggml-model-Q4_K.gguf").exists());
    // --dry-run writes nothing.
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    run(&["quantize", "-q", "--dry-run", s(&input), "Q6_K"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
}

#[test]
fn positional_form_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 1);
    let out = dir.path().join("o.gguf");
    let (i, o) = (s(&input), s(&out));
    for (args, needle) in [
        (vec![i, o, "Q8_0", "-o", o], "not both"),
        (vec![i, o, "Q8_0", "-t", "Q4_0"], "not both"),
        (vec![i, o, "Q8_0", "--threads", "2"], "not both"),
        (vec![i, o], "missing TYPE after OUTPUT"),
        (vec![i, o, "Q9_9"], "invalid TYPE \"Q9_9\""),
        (vec![i, o, "99"], "invalid TYPE \"99\""),
        (vec![i, o, "Q8_0", "many"], "invalid NTHREADS"),
        (vec![i, o, "Q8_0", "--format", "qnat"], "writes GGUF"),
    ] {
        let mut a = vec!["quantize"];
        a.extend(args);
        assert_invalid(&qforge(&a), needle);
        assert!(!out.exists());
    }
}

#[test]
fn help_shows_both_forms_and_the_llama_flags() {
    let o = qforge(&["quantize", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("INPUT -o OUTPUT [-t TYPE]"), "{help}");
    assert!(
        help.contains("INPUT [OUTPUT] TYPE [NTHREADS]   (llama-quantize's form)"),
        "{help}"
    );
    for flag in [
        "--allow-requantize",
        "--leave-output-tensor",
        "--pure",
        "--imatrix",
        "--include-weights",
        "--exclude-weights",
        "--output-tensor-type",
        "--token-embedding-type",
        "--tensor-type",
        "--tensor-type-file",
        "--prune-layers",
        "--keep-split",
        "--override-kv",
        "--dry-run",
        "--max-buffer-size",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    let o = qforge(&[
        "quantize",
        "in.gguf",
        "x.gguf",
        "Q8_0",
        "--max-buffer-size",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn override_kv_sets_keys_as_llama_quantize_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 1);
    let out = dir.path().join("o.gguf");
    run(&[
        "quantize",
        "-q",
        "--override-kv",
        "general.name=str:renamed",
        "--override-kv",
        "x.count=int:-7",
        "--override-kv",
        "x.scale=float:0.25",
        "--override-kv",
        "x.flag=bool:true",
        s(&input),
        s(&out),
        "Q8_0",
    ]);
    let q = TensorSource::open(&out).unwrap();
    assert_eq!(
        &keys(&q)[keys(&q).len() - 6..],
        [
            "general.quantization_version",
            "general.file_type",
            "general.name",
            "x.count",
            "x.scale",
            "x.flag"
        ]
    );
    assert_eq!(q.get("general.name"), Some(&Value::string("renamed")));
    assert_eq!(
        q.get("x.count"),
        Some(&Value::U32(7)),
        "int is written as u32 |v|"
    );
    assert_eq!(q.get("x.scale"), Some(&Value::F32(0.25)));
    assert_eq!(q.get("x.flag"), Some(&Value::Bool(true)));
    for (bad, needle) in [
        ("x", "expected KEY=TYPE:VALUE"),
        ("x=u8:1", "expected KEY=TYPE:VALUE"),
        ("x=bool:yes", "a bool is true or false"),
    ] {
        let o = qforge(&["quantize", "--override-kv", bad, s(&input), s(&out), "Q8_0"]);
        assert_invalid(&o, needle);
    }
}

#[test]
fn prune_layers_removes_blocks_and_renumbers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 5);
    let out = dir.path().join("o.gguf");
    run(&[
        "quantize",
        "-q",
        "--prune-layers",
        "3,1",
        s(&input),
        s(&out),
        "Q8_0",
    ]);
    let q = TensorSource::open(&out).unwrap();
    assert_eq!(q.get("llama.block_count"), Some(&Value::U32(3)));
    assert_eq!(keys(&q).last(), Some(&"llama.block_count"));
    let src = TensorSource::open(&input).unwrap();
    // blk.2 becomes blk.1 and blk.4 becomes blk.2, with their own data.
    let full = dir.path().join("full.gguf");
    run(&["quantize", "-q", s(&input), s(&full), "Q8_0"]);
    let f = TensorSource::open(&full).unwrap();
    let data = |src: &TensorSource, name: &str| {
        let t = src.tensors.iter().find(|t| t.name == name).unwrap();
        src.data(t).to_vec()
    };
    for (new, old) in [(0, 0), (1, 2), (2, 4)] {
        let name = |b| format!("blk.{b}.attn_q.weight");
        assert_eq!(data(&q, &name(new)), data(&f, &name(old)), "{new} <- {old}");
    }
    assert_eq!(q.tensors.len(), src.tensors.len() - 8);
    assert!(!q.tensors.iter().any(|t| t.name.starts_with("blk.3.")));
    assert_invalid(
        &qforge(&[
            "quantize",
            "--prune-layers",
            "1,x",
            s(&input),
            s(&out),
            "Q8_0",
        ]),
        "--prune-layers: invalid layer id \"x\"",
    );
}

#[test]
fn tensor_type_file_adds_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 2);
    let out = dir.path().join("o.gguf");
    let list = dir.path().join("types.txt");
    std::fs::write(&list, "ATTN_Q=q5_0\n  blk\\.1\\.ffn_down=Q6_K ").unwrap();
    run(&[
        "quantize",
        "-q",
        "--tensor-type-file",
        s(&list),
        s(&input),
        s(&out),
        "Q8_0",
    ]);
    let q = TensorSource::open(&out).unwrap();
    let ty = |name: &str| q.tensors.iter().find(|t| t.name == name).unwrap().ty;
    assert_eq!(ty("blk.0.attn_q.weight"), TensorType::Ggml(GgmlType::Q5_0));
    assert_eq!(
        ty("blk.1.ffn_down.weight"),
        TensorType::Ggml(GgmlType::Q6_K)
    );
    assert_eq!(
        ty("blk.0.ffn_down.weight"),
        TensorType::Ggml(GgmlType::Q8_0)
    );
    std::fs::write(&list, "attn_q").unwrap();
    assert_invalid(
        &qforge(&[
            "quantize",
            "--tensor-type-file",
            s(&list),
            s(&input),
            s(&out),
            "Q8_0",
        ]),
        "expected REGEX=TYPE",
    );
    let missing = dir.path().join("none.txt");
    assert_invalid(
        &qforge(&[
            "quantize",
            "--tensor-type-file",
            s(&missing),
            s(&input),
            s(&out),
            "Q8_0",
        ]),
        "--tensor-type-file",
    );
}

#[test]
fn split_input_is_one_model_and_keep_split_splits_the_output_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let whole = small_model(dir.path(), 3);
    let parts = split_model(dir.path(), 3, 5);
    assert_eq!(parts.len(), 3);
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    run(&["quantize", "-q", s(&whole), s(&a), "Q4_0"]);
    run(&["quantize", "-q", s(&parts[0]), s(&b), "Q4_0"]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "split input: the same file as the whole model"
    );

    let out = dir.path().join("k.gguf");
    run(&[
        "quantize",
        "-q",
        "--keep-split",
        s(&parts[0]),
        s(&out),
        "Q4_0",
    ]);
    assert!(!out.exists());
    let shard = |i: usize| dir.path().join(format!("k-{i:05}-of-00003.gguf"));
    let first = TensorSource::open(&shard(1)).unwrap();
    let n = keys(&first).len();
    assert_eq!(
        &keys(&first)[n - 3..],
        ["split.no", "split.count", "split.tensors.count"]
    );
    for i in 1..=3 {
        let f = TensorSource::open(&shard(i)).unwrap();
        let input = TensorSource::open(&parts[i - 1]).unwrap();
        assert_eq!(f.tensors.len(), input.tensors.len(), "file {i}");
        assert_eq!(f.get("split.no"), Some(&Value::U16(i as u16 - 1)));
        assert_eq!(f.get("split.tensors.count"), Some(&Value::I32(14)));
        if i > 1 {
            assert_eq!(keys(&f), ["split.no", "split.count", "split.tensors.count"]);
        }
    }
    // Read back as one model, the split output holds the whole file's tensors.
    let joined = open_model(&shard(1), Arrays::Raw).unwrap();
    let single = TensorSource::open(&a).unwrap();
    for t in &single.tensors {
        let u = joined.tensors.iter().find(|u| u.name == t.name).unwrap();
        assert_eq!(joined.data(u), single.data(t), "{}", t.name);
    }

    // A later file, or a set with a file missing, is refused.
    assert_invalid(
        &qforge(&["quantize", s(&parts[1]), s(&b), "Q4_0"]),
        "give the first",
    );
    std::fs::remove_file(&parts[2]).unwrap();
    assert_invalid(
        &qforge(&["quantize", s(&parts[0]), s(&b), "Q4_0"]),
        "in-00003-of-00003.gguf",
    );
}

/// Writes an imatrix GGUF with every weight of [`model`] at 1.0, the metadata
/// llama-imatrix writes (datasets, chunk count and size).
fn imatrix(path: &Path, blocks: u32, dataset: &str) {
    let (_, tensors) = model(blocks);
    let meta: Kv = vec![
        ("general.type".into(), Value::string("imatrix")),
        (
            "imatrix.datasets".into(),
            Value::Array(
                qforge::formats::gguf::ValueType::String,
                vec![Value::string(dataset)],
            ),
        ),
        ("imatrix.chunk_count".into(), Value::U32(3)),
        ("imatrix.chunk_size".into(), Value::U32(512)),
    ];
    let mut specs = Vec::new();
    for (name, ne) in tensors.iter().filter(|(_, ne)| ne.len() == 2) {
        specs.push((format!("{name}.in_sum2"), vec![ne[0], 1]));
        specs.push((format!("{name}.counts"), vec![1, 1]));
    }
    // Sums of squares in (0, 1], a count of 2 per matrix.
    write_gguf_with(path, &meta, &specs, |i, n| {
        (0..n)
            .flat_map(|j| {
                let v = if i % 2 == 1 {
                    2.0f32
                } else {
                    1.0 / (1 + j % 7) as f32
                };
                v.to_le_bytes()
            })
            .collect()
    });
}

#[test]
fn imatrix_keys_follow_llama_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 2);
    let m = dir.path().join("im.gguf");
    imatrix(&m, 2, "calibration.txt");
    let out = dir.path().join("o.gguf");
    run(&[
        "quantize",
        "-q",
        "--imatrix",
        s(&m),
        "--exclude-weights",
        "attn_v",
        s(&input),
        s(&out),
        "Q4_K_M",
    ]);
    let q = TensorSource::open(&out).unwrap();
    let n = keys(&q).len();
    assert_eq!(
        &keys(&q)[n - 4..],
        [
            "quantize.imatrix.file",
            "quantize.imatrix.dataset",
            "quantize.imatrix.entries_count",
            "quantize.imatrix.chunks_count"
        ]
    );
    assert_eq!(q.get("quantize.imatrix.file"), Some(&Value::string(s(&m))));
    assert_eq!(
        q.get("quantize.imatrix.dataset"),
        Some(&Value::string("calibration.txt"))
    );
    // token_embd + 3 weights in 2 blocks, minus the 2 attn_v.
    assert_eq!(
        q.get("quantize.imatrix.entries_count"),
        Some(&Value::U32(5))
    );
    assert_eq!(q.get("quantize.imatrix.chunks_count"), Some(&Value::U32(3)));
    // A filter that leaves no entry: no imatrix at all, no keys.
    run(&[
        "quantize",
        "-q",
        "--imatrix",
        s(&m),
        "--include-weights",
        "nothing",
        s(&input),
        s(&out),
        "Q4_K_M",
    ]);
    let q = TensorSource::open(&out).unwrap();
    assert!(!keys(&q).iter().any(|k| k.starts_with("quantize.")));
}

#[test]
fn types_that_need_an_imatrix_are_refused_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = small_model(dir.path(), 2);
    let out = dir.path().join("o.gguf");
    assert_invalid(
        &qforge(&["quantize", s(&input), s(&out), "Q2_K_S"]),
        "Q2_K in this mix requires an importance matrix",
    );
    // An imatrix without the entry of a tensor that needs one.
    let m = dir.path().join("im.gguf");
    imatrix(&m, 2, "d");
    assert_invalid(
        &qforge(&[
            "quantize",
            "--imatrix",
            s(&m),
            "--exclude-weights",
            "ffn_down",
            s(&input),
            s(&out),
            "Q2_K_S",
        ]),
        "blk.0.ffn_down.weight: Q",
    );
    assert!(!out.exists());
}

//! What llama-quantize does to a GGUF besides choosing tensor types
//! (`llama_model_quantize_impl` in llama.cpp `src/llama-quant.cpp` and `tools/quantize/quantize.cpp`):
//! the output's metadata keys and their order, `--override-kv`, the
//! `quantize.imatrix.*` keys, the tensor order, `--prune-layers` and `--keep-split`.
//!
//! Key order follows ggml's `gguf_set_val_*`, which removes a key and appends it: the input's
//! keys in order, then `general.quantization_version` and `general.file_type` moved to the
//! end, the `split.*` keys removed, then each override (the user's `--override-kv` in
//! command-line order, then `quantize.imatrix.file`, `.dataset`, `.entries_count`,
//! `.chunks_count`), then `ARCH.block_count` when layers were pruned, and for a split output
//! the `split.*` keys of each file.

use super::gguf::{OutputTensor, QNT_VERSION};
use crate::formats::gguf::split::{
    split_path, SPLIT_COUNT, SPLIT_KEYS, SPLIT_NO, SPLIT_TENSORS_COUNT,
};
use crate::formats::gguf::{Value, ValueType};
use crate::formats::{Format, TensorSource};
use crate::quant::imatrix::Imatrix;
use crate::quant::mix::weight_name_order;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Metadata keys in file order.
pub type Kv = Vec<(String, Value)>;

/// llama-quantize's options that shape the output file(s) beyond the tensor types.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// `--override-kv KEY=TYPE:VALUE`, parsed ([`parse_kv_override`]), in command-line order.
    pub kv_overrides: Kv,
    /// `--prune-layers`: block numbers to remove, sorted, without duplicates.
    pub prune_layers: Vec<u32>,
    /// `--keep-split`: one output file per input file, named as gguf-split names them.
    pub keep_split: bool,
}

/// Longest byte length of a string llama.cpp's `llama_model_kv_override` holds.
const KV_STR_MAX: usize = 127;

/// `gguf_set_val_*`: removes `key` and appends it with `value`.
pub fn set_key(meta: &mut Kv, key: &str, value: Value) {
    meta.retain(|(k, _)| k != key);
    meta.push((key.to_string(), value));
}

/// The metadata as llama-quantize's model loader sees it when it reads the hyperparameters
/// the mix rules use (`load_arch`, `load_hparams` with the `--override-kv` list): a `str:`
/// override of `general.architecture`, and `int:` overrides of `{arch}.block_count` and
/// `{arch}.expert_count` (`get_key`: applied whether or not the file has the key) and of
/// `{arch}.attention.head_count[_kv]` (`get_key_or_arr`: applied only over a scalar the
/// file has). An override of another type is ignored there, as the loader ignores it.
/// The `tokenizer.*` keys (most of a file's metadata, no hyperparameter) are left out.
pub fn loader_metadata(meta: &[(String, Value)], overrides: &[(String, Value)]) -> Kv {
    let mut out: Kv = meta
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer."))
        .cloned()
        .collect();
    let find = |kv: &[(String, Value)], key: &str| kv.iter().position(|(k, _)| k == key);
    for (key, v) in overrides {
        if key == "general.architecture" && matches!(v, Value::String(_)) {
            set_key(&mut out, key, v.clone());
        }
    }
    let arch = find(&out, "general.architecture")
        .and_then(|i| out[i].1.as_str().map(|s| s.into_owned()))
        .unwrap_or_default();
    for (key, v) in overrides {
        let Value::U32(_) = v else { continue };
        let Some(field) = key.strip_prefix(&arch).and_then(|k| k.strip_prefix('.')) else {
            continue;
        };
        let applies = match field {
            "block_count" | "expert_count" => true,
            "attention.head_count" | "attention.head_count_kv" => {
                find(meta, key).is_some_and(|i| meta[i].1.value_type() != ValueType::Array)
            }
            _ => false,
        };
        if applies {
            match find(&out, key) {
                Some(i) => out[i].1 = v.clone(),
                None => out.push((key.clone(), v.clone())),
            }
        }
    }
    out
}

/// Parses `--override-kv KEY=TYPE:VALUE` as llama.cpp's `string_parse_kv_override` does and
/// returns the value as llama-quantize writes it: `int:` (`atol`) as a u32 of its absolute
/// value, `float:` (`atof`) as f32, `bool:true|false`, `str:` (at most 127 bytes).
pub fn parse_kv_override(spec: &str) -> Result<(String, Value)> {
    let malformed = || {
        invalid!(
            "--override-kv {spec:?}: expected KEY=TYPE:VALUE with TYPE int, float, bool or str"
        )
    };
    let (key, rest) = spec.split_once('=').ok_or_else(malformed)?;
    if key.len() >= 128 {
        bail_invalid!("--override-kv {spec:?}: the key is longer than 127 bytes");
    }
    let value = if let Some(v) = rest.strip_prefix("int:") {
        Value::U32(leading_int(v).unsigned_abs() as u32)
    } else if let Some(v) = rest.strip_prefix("float:") {
        Value::F32(leading_float(v) as f32)
    } else if let Some(v) = rest.strip_prefix("bool:") {
        match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => bail_invalid!("--override-kv {spec:?}: a bool is true or false"),
        }
    } else if let Some(v) = rest.strip_prefix("str:") {
        if v.len() > KV_STR_MAX {
            bail_invalid!("--override-kv {spec:?}: the value is longer than 127 bytes");
        }
        Value::string(v)
    } else {
        return Err(malformed());
    };
    Ok((key.to_string(), value))
}

/// C's `atol`: optional leading spaces and sign, then digits; 0 when there are none.
fn leading_int(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            n.wrapping_mul(10).wrapping_add(i64::from(d - b'0'))
        });
    if neg {
        n.wrapping_neg()
    } else {
        n
    }
}

/// C's `atof` for decimal input: the longest leading prefix that is a number; 0 if none.
fn leading_float(s: &str) -> f64 {
    let s = s.trim_start();
    (1..=s.len())
        .rev()
        .filter(|&n| s.is_char_boundary(n))
        .find_map(|n| s[..n].parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Parses `--prune-layers L0,L1,...`: sorted, duplicates removed.
pub fn parse_prune_layers(spec: &str) -> Result<Vec<u32>> {
    let mut ids = spec
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| invalid!("--prune-layers: invalid layer id {s:?}"))
        })
        .collect::<Result<Vec<u32>>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The `quantize.imatrix.*` keys llama-quantize adds for an importance matrix: the file as
/// given on the command line, the first dataset, the number of entries (after
/// `--include-weights`/`--exclude-weights`) and the number of chunks when known.
pub fn imatrix_keys(file: &Path, m: &Imatrix) -> Kv {
    let clip = |s: &[u8]| Value::String(s[..s.len().min(KV_STR_MAX)].to_vec());
    let mut kv = vec![(
        "quantize.imatrix.file".to_string(),
        clip(file.as_os_str().as_encoded_bytes()),
    )];
    if let Some(d) = m.datasets.first() {
        kv.push(("quantize.imatrix.dataset".into(), clip(d.as_bytes())));
    }
    kv.push((
        "quantize.imatrix.entries_count".into(),
        Value::U32(m.entries.len() as u32),
    ));
    if let Some(c) = m.chunks.filter(|&c| c > 0) {
        kv.push(("quantize.imatrix.chunks_count".into(), Value::U32(c as u32)));
    }
    kv
}

/// The first output file's metadata: `input` with the file type, quantization version,
/// overrides and (when layers were pruned) the block count set, and no `split.*` keys.
pub fn output_metadata(
    input: Kv,
    file_type: u32,
    overrides: &[(String, Value)],
    block_count: Option<(&str, u32)>,
) -> Kv {
    let mut meta = input;
    set_key(
        &mut meta,
        "general.quantization_version",
        Value::U32(QNT_VERSION),
    );
    set_key(&mut meta, "general.file_type", Value::U32(file_type));
    meta.retain(|(k, _)| !SPLIT_KEYS.contains(&k.as_str()));
    for (k, v) in overrides {
        set_key(&mut meta, k, v.clone());
    }
    if let Some((arch, n)) = block_count {
        set_key(&mut meta, &format!("{arch}.block_count"), Value::U32(n));
    }
    meta
}

/// The metadata of every output file for `n_split` files: the first file's, then, when
/// there are several, each with the `split.*` keys appended (the later files hold only those).
pub fn split_metadata(first: Kv, n_split: u16, n_tensors: usize) -> Vec<Kv> {
    if n_split <= 1 {
        return vec![first];
    }
    (0..n_split)
        .map(|i| {
            let mut meta = if i == 0 { first.clone() } else { Vec::new() };
            set_key(&mut meta, SPLIT_NO, Value::U16(i));
            set_key(&mut meta, SPLIT_COUNT, Value::U16(n_split));
            set_key(&mut meta, SPLIT_TENSORS_COUNT, Value::I32(n_tensors as i32));
            meta
        })
        .collect()
}

/// The output tensors of `src` in llama-quantize's order, layers in `prune` removed and the
/// later ones renumbered (`remap_layer`); with the new block count when `prune` is not empty.
///
/// A GGUF's tensors come in loader order, or with `keep_split` in file and offset order;
/// other inputs keep their order (llama-quantize does not read them).
pub fn arrange<'a>(
    src: &'a TensorSource,
    prune: &[u32],
    keep_split: bool,
) -> (Vec<OutputTensor<'a>>, Option<u32>) {
    let mut order: Vec<_> = src.tensors.iter().collect();
    if src.format == Format::Gguf {
        order.sort_by(|a, b| weight_name_order(&a.name, &b.name));
    }
    let mut mapped: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    let mut next = 0u32;
    let mut out = Vec::with_capacity(order.len());
    for t in order {
        let name = match (prune.first(), block_of(&t.name)) {
            (Some(&front), Some((blk, digits))) => {
                let new = *mapped.entry(blk).or_insert_with(|| {
                    if prune.contains(&blk) {
                        None
                    } else if blk < front {
                        next = blk + 1;
                        Some(blk)
                    } else {
                        next += 1;
                        Some(next - 1)
                    }
                });
                match new {
                    None => continue,
                    Some(n) => format!("{}{n}{}", &t.name[..digits.start], &t.name[digits.end..]),
                }
            }
            _ => t.name.clone(),
        };
        out.push(OutputTensor { name, source: t });
    }
    if keep_split {
        out.sort_by_key(|t| (t.source.file, t.source.offset));
    }
    (out, (!prune.is_empty()).then_some(next))
}

/// The block number of the first `blk.N.` in a name, and where its digits are.
fn block_of(name: &str) -> Option<(u32, std::ops::Range<usize>)> {
    let mut from = 0;
    while let Some(i) = name[from..].find("blk.") {
        let start = from + i + 4;
        let len = name[start..].bytes().take_while(u8::is_ascii_digit).count();
        if len > 0 && name[start + len..].starts_with('.') {
            if let Ok(n) = name[start..start + len].parse() {
                return Some((n, start..start + len));
            }
        }
        from = start;
    }
    None
}

/// The output files: `out` itself, or with `keep_split` gguf-split's names
/// (`PREFIX-0000i-of-0000N.gguf`, PREFIX being `out` without a `.gguf` it contains, as
/// llama-quantize strips it), even for one file.
pub fn output_paths(out: &Path, keep_split: bool, n_split: u16) -> Vec<PathBuf> {
    if !keep_split {
        return vec![out.to_path_buf()];
    }
    let s = out.to_string_lossy();
    let prefix = if s.contains(".gguf") {
        &s[..s.len() - 5]
    } else {
        &s[..]
    };
    (0..n_split.max(1))
        .map(|i| PathBuf::from(split_path(prefix, i, n_split.max(1))))
        .collect()
}

/// The number of output files: the highest input file index plus one with `keep_split`.
pub fn split_count(tensors: &[OutputTensor<'_>], keep_split: bool) -> Result<u16> {
    if !keep_split {
        return Ok(1);
    }
    let n = tensors.iter().map(|t| t.source.file + 1).max().unwrap_or(1);
    u16::try_from(n).map_err(|_| invalid!("--keep-split: {n} input files"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::ggml_type::GgmlType;
    use crate::formats::{TensorInfo, TensorType};

    #[test]
    fn overrides_parse_as_llama_cpp_and_are_written_as_llama_quantize_writes() {
        let p = |s: &str| parse_kv_override(s).unwrap();
        assert_eq!(p("a.b=int:-7"), ("a.b".into(), Value::U32(7)));
        assert_eq!(p("x=int:12abc").1, Value::U32(12));
        assert_eq!(p("x=int:abc").1, Value::U32(0));
        assert_eq!(p("x=float:0.25").1, Value::F32(0.25));
        assert_eq!(p("x=float: 1e3x").1, Value::F32(1000.0));
        assert_eq!(p("x=bool:false").1, Value::Bool(false));
        assert_eq!(p("x=str:a=b:c").1, Value::string("a=b:c"));
        for bad in ["x", "x=int7", "x=bool:yes", "x=u32:1"] {
            assert!(parse_kv_override(bad).is_err(), "{bad}");
        }
        assert!(parse_kv_override(&format!("x=str:{}", "a".repeat(128))).is_err());
        assert!(parse_kv_override(&format!("{}=int:1", "k".repeat(128))).is_err());
    }

    /// The loader's rules: `get_key` keys take an int override even when absent,
    /// `get_key_or_arr` keys only over a scalar the file has, other types are ignored, and
    /// an overridden architecture moves the prefix.
    #[test]
    fn loader_metadata_applies_overrides_as_llama_cpp_loads_hparams() {
        let meta: Kv = vec![
            ("general.architecture".into(), Value::string("llama")),
            ("llama.block_count".into(), Value::U32(30)),
            ("llama.attention.head_count".into(), Value::U32(9)),
            (
                "llama.attention.head_count_kv".into(),
                Value::Array(crate::formats::gguf::ValueType::U32, vec![Value::U32(3)]),
            ),
            ("qwen2.block_count".into(), Value::U32(24)),
        ];
        let get = |kv: &Kv, k: &str| kv.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let o = |k: &str, v: Value| (k.to_string(), v);
        let m = loader_metadata(
            &meta,
            &[
                o("llama.block_count", Value::U32(40)),
                o("llama.expert_count", Value::U32(8)),
                o("llama.attention.head_count", Value::F32(2.0)),
                o("llama.attention.head_count_kv", Value::U32(1)),
                o("llama.context_length", Value::U32(7)),
            ],
        );
        assert_eq!(get(&m, "llama.block_count"), Some(Value::U32(40)));
        assert_eq!(get(&m, "llama.expert_count"), Some(Value::U32(8)));
        assert_eq!(get(&m, "llama.attention.head_count"), Some(Value::U32(9)));
        assert!(matches!(
            get(&m, "llama.attention.head_count_kv"),
            Some(Value::Array(..))
        ));
        assert_eq!(get(&m, "llama.context_length"), None);
        let m = loader_metadata(
            &meta[..3],
            &[o("llama.attention.head_count_kv", Value::U32(1))],
        );
        assert_eq!(get(&m, "llama.attention.head_count_kv"), None, "absent");
        let m = loader_metadata(
            &meta,
            &[
                o("general.architecture", Value::string("qwen2")),
                o("qwen2.expert_count", Value::U32(4)),
                o("llama.expert_count", Value::U32(8)),
            ],
        );
        let cfg = crate::model::ModelConfig::from_gguf(&m, None);
        assert_eq!(
            (cfg.arch.as_deref(), cfg.n_layer, cfg.n_expert),
            (Some("qwen2"), Some(24), Some(4))
        );
    }

    #[test]
    fn prune_lists_are_sorted_and_checked() {
        assert_eq!(parse_prune_layers("7,1,3,1").unwrap(), [1, 3, 7]);
        assert!(parse_prune_layers("1,-2").is_err());
        assert!(parse_prune_layers("").is_err());
    }

    #[test]
    fn keys_are_moved_to_the_end_and_split_keys_dropped() {
        let meta: Kv = vec![
            ("general.architecture".into(), Value::string("llama")),
            ("general.file_type".into(), Value::U32(32)),
            (SPLIT_NO.into(), Value::U16(0)),
            ("llama.block_count".into(), Value::U32(4)),
            ("general.quantization_version".into(), Value::U32(2)),
        ];
        let out = output_metadata(
            meta,
            15,
            &[("general.architecture".into(), Value::string("llama"))],
            Some(("llama", 3)),
        );
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.quantization_version",
                "general.file_type",
                "general.architecture",
                "llama.block_count"
            ]
        );
        assert_eq!(out[1].1, Value::U32(15));
        assert_eq!(out[3].1, Value::U32(3));
        let split = split_metadata(out.clone(), 2, 9);
        assert_eq!(split[0].len(), out.len() + 3);
        assert_eq!(split[1].len(), 3);
        assert_eq!(split[1][0], (SPLIT_NO.to_string(), Value::U16(1)));
        assert_eq!(
            split[1][2],
            (SPLIT_TENSORS_COUNT.to_string(), Value::I32(9))
        );
    }

    #[test]
    fn imatrix_keys_clip_strings_and_skip_what_is_unknown() {
        let m = Imatrix {
            entries: [("a".to_string(), vec![1.0])].into(),
            datasets: vec!["d".repeat(200), "second".into()],
            chunks: Some(0),
        };
        let kv = imatrix_keys(Path::new("dir/im.gguf"), &m);
        let keys: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "quantize.imatrix.file",
                "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count"
            ]
        );
        assert_eq!(kv[0].1, Value::string("dir/im.gguf"));
        assert_eq!(kv[1].1, Value::string(&"d".repeat(127)));
        assert_eq!(kv[2].1, Value::U32(1));
    }

    fn source(names: &[(&str, usize, u64)]) -> TensorSource {
        TensorSource {
            path: "m.gguf".into(),
            format: Format::Gguf,
            version: Some(3),
            alignment: Some(32),
            metadata: Vec::new(),
            tensors: names
                .iter()
                .map(|&(n, file, offset)| TensorInfo {
                    name: n.into(),
                    ty: TensorType::Ggml(GgmlType::F32),
                    shape: vec![4],
                    file,
                    offset,
                    bytes: 16,
                })
                .collect(),
            files: Vec::new(),
            qnat: None,
        }
    }

    #[test]
    fn pruning_renumbers_later_blocks_like_remap_layer() {
        let src = source(&[
            ("blk.0.a", 0, 0),
            ("blk.1.a", 0, 32),
            ("blk.2.a", 0, 64),
            ("blk.3.a", 0, 96),
            ("blk.10.a", 0, 128),
            ("output.weight", 0, 160),
        ]);
        let (out, n) = arrange(&src, &[1, 3], false);
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["output.weight", "blk.0.a", "blk.1.a", "blk.2.a"]);
        assert_eq!(out[2].source.name, "blk.2.a");
        assert_eq!(out[3].source.name, "blk.10.a");
        assert_eq!(n, Some(3));
        let (out, n) = arrange(&src, &[], false);
        assert_eq!(out.len(), 6);
        assert_eq!(n, None);
    }

    #[test]
    fn keep_split_orders_by_file_then_offset() {
        let src = source(&[
            ("blk.1.a", 1, 0),
            ("blk.0.b", 0, 64),
            ("blk.0.a", 0, 96),
            ("x", 1, 32),
        ]);
        let (out, _) = arrange(&src, &[], true);
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["blk.0.b", "blk.0.a", "blk.1.a", "x"]);
        assert_eq!(split_count(&out, true).unwrap(), 2);
        assert_eq!(split_count(&out, false).unwrap(), 1);
    }

    #[test]
    fn split_outputs_are_named_as_llama_quantize_names_them() {
        assert_eq!(
            output_paths(Path::new("o.gguf"), false, 3),
            [PathBuf::from("o.gguf")]
        );
        assert_eq!(
            output_paths(Path::new("d/o.gguf"), true, 2),
            [
                PathBuf::from("d/o-00001-of-00002.gguf"),
                PathBuf::from("d/o-00002-of-00002.gguf")
            ]
        );
        assert_eq!(
            output_paths(Path::new("o"), true, 1),
            [PathBuf::from("o-00001-of-00001.gguf")]
        );
    }
}

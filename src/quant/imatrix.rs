//! Importance matrices as llama.cpp's `llama-imatrix` writes them: the GGUF format
//! (tensors `NAME.in_sum2` and `NAME.counts`) and the legacy `.dat` format.
//!
//! The result is, per weight tensor name, one importance value per column for each
//! matrix (experts of a 3-D tensor have one row of values each), computed exactly as
//! `llama-quantize` does: `in_sum2 / count` (1.0 where a matrix saw no input), or for
//! legacy files `values / ncall`.

use crate::formats::cursor::Cursor;
use crate::formats::ggml_type::GgmlType;
use crate::formats::{SourceFile, TensorSource, TensorType};
use crate::{bail_invalid, invalid};
use anyhow::{Context, Result};
use regex::Regex;
use std::collections::BTreeMap;
use std::path::Path;

/// A loaded importance matrix.
#[derive(Debug, Clone, Default)]
pub struct Imatrix {
    /// Tensor name -> importance values (`columns * matrices`).
    pub entries: BTreeMap<String, Vec<f32>>,
    /// Calibration dataset names recorded in the file.
    pub datasets: Vec<String>,
    /// Number of calibration chunks, when recorded.
    pub chunks: Option<u64>,
}

impl Imatrix {
    /// Loads a GGUF or legacy imatrix file.
    pub fn load(path: &Path) -> Result<Imatrix> {
        let file = SourceFile::open(path)?;
        let parsed = if file.data().starts_with(b"GGUF") {
            load_gguf(path)
        } else {
            parse_legacy(file.data())
        };
        parsed.with_context(|| format!("imatrix {}", path.display()))
    }

    /// Keeps only entries whose name matches one of `include` (when non-empty) and none
    /// of `exclude`; like llama-quantize, a plain name matches as a substring.
    pub fn filter(&mut self, include: &[Regex], exclude: &[Regex]) {
        self.entries.retain(|name, _| {
            (include.is_empty() || include.iter().any(|r| r.is_match(name)))
                && !exclude.iter().any(|r| r.is_match(name))
        });
    }
}

fn load_gguf(path: &Path) -> Result<Imatrix> {
    let src = TensorSource::open(path)?;
    let mut sums = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for t in &src.tensors {
        let (base, is_sum) = if let Some(b) = t.name.strip_suffix(".in_sum2") {
            (b, true)
        } else if let Some(b) = t.name.strip_suffix(".counts") {
            (b, false)
        } else {
            continue;
        };
        if t.ty != TensorType::Ggml(GgmlType::F32) {
            bail_invalid!("tensor {} must be F32, found {}", t.name, t.ty);
        }
        let values: Vec<f32> = src
            .data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let ne = t.ne();
        let entry = (
            ne[0] as usize,
            ne.get(1).copied().unwrap_or(1) as usize,
            values,
        );
        if is_sum {
            sums.insert(base.to_string(), entry);
        } else {
            counts.insert(base.to_string(), entry);
        }
    }
    if sums.is_empty() {
        bail_invalid!("no NAME.in_sum2 tensors: not an imatrix file");
    }
    let mut entries = BTreeMap::new();
    for (name, (ne0, ne1, s)) in sums {
        let (_, _, c) = counts
            .remove(&name)
            .ok_or_else(|| invalid!("{name}.in_sum2 has no matching {name}.counts"))?;
        if c.len() != ne1 {
            bail_invalid!("{name}.counts has {} values for {ne1} matrices", c.len());
        }
        let mut e = vec![1.0f32; ne0 * ne1];
        for (j, &count) in c.iter().enumerate() {
            if count > 0.0 {
                for i in 0..ne0 {
                    e[j * ne0 + i] = s[j * ne0 + i] / count;
                }
            }
        }
        entries.insert(name, e);
    }
    if let Some(name) = counts.keys().next() {
        bail_invalid!("{name}.counts has no matching {name}.in_sum2");
    }
    let datasets = match src.get("imatrix.datasets") {
        Some(crate::formats::gguf::Value::Array(_, v)) => v
            .iter()
            .filter_map(|d| d.as_str().map(|s| s.into_owned()))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Imatrix {
        entries,
        datasets,
        chunks: src.get("imatrix.chunk_count").and_then(|v| v.as_u64()),
    })
}

/// Parses the legacy format: `i32 n`, then per entry `i32 name_len, name, i32 ncall,
/// i32 nval, f32[nval]`, optionally followed by `i32 last_call, i32 len, dataset name`.
pub fn parse_legacy(data: &[u8]) -> Result<Imatrix> {
    let mut c = Cursor::new(data);
    let n = c.u32("entry count")? as i32;
    if n < 1 {
        bail_invalid!("no entries (count {n}): not a legacy imatrix file");
    }
    c.check_count(n as u64, 16, "imatrix entry")?;
    let mut entries = BTreeMap::new();
    for i in 0..n {
        let len = c.u32("name length")? as i32;
        if len < 1 {
            bail_invalid!("entry {i}: name length {len}");
        }
        let name = std::str::from_utf8(c.take(len as u64, "entry name")?)
            .map_err(|_| invalid!("entry {i}: name is not UTF-8"))?
            .to_string();
        let ncall = c.u32("ncall")? as i32;
        let nval = c.u32("value count")? as i32;
        if nval < 1 {
            bail_invalid!("entry {name:?}: value count {nval}");
        }
        let bytes = c.take(nval as u64 * 4, "entry values")?;
        let mut values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        if ncall > 0 {
            for v in &mut values {
                *v /= ncall as f32;
            }
        }
        if entries.insert(name.clone(), values).is_some() {
            bail_invalid!("duplicate entry {name:?}");
        }
    }
    let mut out = Imatrix {
        entries,
        ..Default::default()
    };
    if c.remaining() > 0 {
        out.chunks = Some(u64::from(c.u32("last call")?));
        let len = c.u32("dataset name length")?;
        let name = c.take(u64::from(len), "dataset name")?;
        // llama.cpp records a dataset only when its name is not empty.
        if len > 0 {
            out.datasets = vec![String::from_utf8_lossy(name).into_owned()];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], tail: Option<(i32, &str)>) -> Vec<u8> {
        let mut v = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, ncall, vals) in entries {
            v.extend_from_slice(&(name.len() as i32).to_le_bytes());
            v.extend_from_slice(name.as_bytes());
            v.extend_from_slice(&ncall.to_le_bytes());
            v.extend_from_slice(&(vals.len() as i32).to_le_bytes());
            for x in *vals {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        if let Some((calls, ds)) = tail {
            v.extend_from_slice(&calls.to_le_bytes());
            v.extend_from_slice(&(ds.len() as i32).to_le_bytes());
            v.extend_from_slice(ds.as_bytes());
        }
        v
    }

    #[test]
    fn an_empty_legacy_dataset_name_is_no_dataset() {
        let m = parse_legacy(&legacy(&[("x", 1, &[1.0])], Some((3, "")))).unwrap();
        assert_eq!((m.chunks, m.datasets.len()), (Some(3), 0));
    }

    #[test]
    fn legacy_values_are_divided_by_ncall() {
        let data = legacy(
            &[("blk.0.attn_q.weight", 4, &[8.0, 2.0]), ("x", 0, &[3.0])],
            Some((10, "wiki.train")),
        );
        let m = parse_legacy(&data).unwrap();
        assert_eq!(m.entries["blk.0.attn_q.weight"], [2.0, 0.5]);
        assert_eq!(m.entries["x"], [3.0]);
        assert_eq!(m.chunks, Some(10));
        assert_eq!(m.datasets, ["wiki.train"]);
    }

    #[test]
    fn legacy_truncation_and_absurd_counts_are_errors() {
        let data = legacy(&[("abc", 1, &[1.0, 2.0, 3.0])], None);
        for len in 0..data.len() {
            assert!(parse_legacy(&data[..len]).is_err(), "len {len}");
        }
        let mut bad = i32::MAX.to_le_bytes().to_vec();
        bad.extend_from_slice(&[0; 32]);
        assert!(parse_legacy(&bad).is_err());
    }

    #[test]
    fn filter_include_exclude() {
        let mut m = parse_legacy(&legacy(
            &[
                ("blk.0.attn_q.weight", 1, &[1.0]),
                ("blk.0.ffn_up.weight", 1, &[1.0]),
            ],
            None,
        ))
        .unwrap();
        m.filter(&[], &[Regex::new("ffn").unwrap()]);
        assert_eq!(m.entries.len(), 1);
        m.filter(&[Regex::new("attn_k").unwrap()], &[]);
        assert!(m.entries.is_empty());
    }
}

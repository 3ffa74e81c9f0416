//! The converted source: a Hugging Face checkpoint seen as convert_hf_to_gguf.py would
//! write it — GGUF tensor names in convert's order, shapes checked against config.json,
//! and per-tensor transforms applied when a tensor's values are read.
//!
//! Nothing is copied up front: values are decoded from the memory-mapped shards row by
//! row ([`Converted::read_rows`]), so memory stays near a chunk of the largest tensor.

use super::arch::{self, Arch};
use super::config::HfConfig;
use crate::formats::ggml_type::GgmlType;
use crate::formats::{TensorInfo, TensorSource, TensorType};
use crate::{bail_invalid, invalid};
use anyhow::Result;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A tensor the architecture generates (float32 values, 1-D).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// GGUF name.
    pub name: String,
    /// The values.
    pub values: Vec<f32>,
}

/// What an architecture's `generate_extra_tensors` produces: tensors, and keys it
/// writes while doing so (they land right after `general.architecture`, since convert
/// generates tensors before it writes the rest of the metadata).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    /// Generated tensors, first in the output.
    pub tensors: Vec<Generated>,
    /// Keys written during tensor preparation.
    pub kv: Vec<(String, crate::formats::gguf::Value)>,
}

/// How a tensor's outer rows are ordered relative to the checkpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// As stored.
    Identity,
    /// `LlamaModel.permute(w, n_head, ...)`: within each head, the two rotary halves
    /// interleaved (`reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2)`).
    RopePermute {
        /// Heads the rows split into.
        n_head: u64,
    },
}

impl RowOrder {
    /// The checkpoint row that output row `r` (of `rows`) comes from.
    pub fn source_row(self, r: u64, rows: u64) -> u64 {
        match self {
            RowOrder::Identity => r,
            RowOrder::RopePermute { n_head } => {
                let half = rows / n_head / 2;
                let (h, rem) = (r / (2 * half), r % (2 * half));
                let (j, i) = (rem / 2, rem % 2);
                h * 2 * half + i * half + j
            }
        }
    }

    /// The output row that checkpoint row `s` (of `rows`) goes to: the inverse of
    /// [`RowOrder::source_row`].
    pub fn target_row(self, s: u64, rows: u64) -> u64 {
        match self {
            RowOrder::Identity => s,
            RowOrder::RopePermute { n_head } => {
                let half = rows / n_head / 2;
                let (h, rem) = (s / (2 * half), s % (2 * half));
                let (i, j) = (rem / half, rem % half);
                h * 2 * half + 2 * j + i
            }
        }
    }
}

/// One output tensor.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The checkpoint's name (or the GGUF name for generated tensors).
    pub hf_name: String,
    /// GGUF name.
    pub name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<u64>,
    /// Outer-row order.
    pub rows: RowOrder,
    /// The checkpoint tensor, or `None` for a generated one.
    pub source: Option<TensorInfo>,
    /// Values of a generated tensor.
    pub generated: Option<Vec<f32>>,
    /// Block number (`blk.N`).
    pub bid: Option<u64>,
    /// Added to every value after decoding (Gemma's norm `+ 1`).
    pub add: f32,
}

impl Planned {
    /// ggml's `ne` (innermost first).
    pub fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().copied().collect()
    }

    /// Elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The source element type as a ggml type (F32 for generated tensors).
    pub fn source_type(&self) -> GgmlType {
        self.source
            .as_ref()
            .and_then(|s| s.ty.as_ggml())
            .unwrap_or(GgmlType::F32)
    }
}

/// A Hugging Face folder opened for conversion.
pub struct Converted {
    /// The model folder.
    pub dir: PathBuf,
    /// The mapped shards.
    pub src: TensorSource,
    /// config.json with the transformers defaults filled in.
    pub cfg: HfConfig,
    /// config.json as written (gguf-py's metadata reads the bare file).
    pub raw_hparams: serde_json::Map<String, serde_json::Value>,
    /// The architecture table.
    pub arch: &'static Arch,
    /// Output tensors in convert's order.
    pub tensors: Vec<Planned>,
    /// Keys written while preparing tensors ([`Extra::kv`]).
    pub early_kv: Vec<(String, crate::formats::gguf::Value)>,
}

/// The model folder of an input to convert: a folder (its config.json is then
/// required), or a `.safetensors` / `.safetensors.index.json` file with config.json
/// beside it (without one, the file is quantized under its own tensor names as before).
pub fn model_dir(input: &Path) -> Option<PathBuf> {
    if input.is_dir() {
        return Some(input.to_path_buf());
    }
    let name = input.file_name()?.to_string_lossy();
    if !(name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json")) {
        return None;
    }
    let dir = match input.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dir.join("config.json").is_file().then_some(dir)
}

impl Converted {
    /// Opens `input` (see [`model_dir`]) for conversion: config, architecture, tensors
    /// mapped, checked and ordered.
    pub fn open(input: &Path, dir: &Path) -> Result<Converted> {
        let mut cfg = HfConfig::load(dir)?;
        let raw_hparams = cfg.hparams.clone();
        let hf_arch = cfg.architecture()?.to_string();
        let arch = arch::find(&hf_arch)?;
        (arch.defaults)(&hf_arch, &mut cfg);
        let src = TensorSource::open(input)?;
        if src.format != crate::formats::Format::Safetensors {
            bail_invalid!("{}: not a safetensors checkpoint", input.display());
        }
        let block_count =
            cfg.require_u64(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"])?;
        // convert's order: generated tensors, then shard files by name, tensors by name.
        let mut order: Vec<&TensorInfo> = src.tensors.iter().collect();
        let shard_name = |t: &TensorInfo| {
            src.files[t.file]
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        order.sort_by(|a, b| (shard_name(a), &a.name).cmp(&(shard_name(b), &b.name)));
        let extra = (arch.extra)(&cfg)?;
        let mut tensors: Vec<Planned> = extra
            .tensors
            .into_iter()
            .map(|g| Planned {
                hf_name: g.name.clone(),
                shape: vec![g.values.len() as u64],
                name: g.name,
                rows: RowOrder::Identity,
                source: None,
                generated: Some(g.values),
                bid: None,
                add: 0.0,
            })
            .collect();
        for info in order {
            // The model class's filter, then TextModel's, then ModelBase's rename.
            let Some(hf) = (arch.filter)(&info.name).filter(|n| !arch::multimodal(n)) else {
                continue;
            };
            let hf = hf.replace("language_model.", "");
            if arch::skipped(&hf) {
                continue;
            }
            let (name, bid) = arch::map_name(arch, &hf)
                .filter(|(_, bid)| bid.is_none_or(|b| b < block_count))
                .ok_or_else(|| {
                    invalid!(
                        "cannot map tensor {:?} to a GGUF name for {}",
                        info.name,
                        arch.gguf_arch
                    )
                })?;
            match info.ty {
                TensorType::Safetensors(
                    ::safetensors::Dtype::F32 | ::safetensors::Dtype::F16 | ::safetensors::Dtype::BF16,
                ) => {}
                other => bail_invalid!(
                    "tensor {:?} has dtype {other}; only F32, F16 and BF16 checkpoints are supported",
                    info.name
                ),
            }
            let mut t = Planned {
                hf_name: info.name.clone(),
                name,
                shape: info.shape.clone(),
                rows: RowOrder::Identity,
                source: Some(info.clone()),
                generated: None,
                bid,
                add: 0.0,
            };
            if t.shape.is_empty() {
                t.shape = vec![1];
            }
            (arch.tensor)(&cfg, &mut t)?;
            tensors.push(t);
        }
        let mut seen = HashSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                bail_invalid!("two tensors map to {}", t.name);
            }
        }
        Ok(Converted {
            dir: dir.to_path_buf(),
            src,
            cfg,
            raw_hparams,
            arch,
            tensors,
            early_kv: extra.kv,
        })
    }

    /// The checkpoint type of the first tensor with two or more dimensions (what convert's
    /// `--outtype auto` looks at).
    pub fn guessed_type(&self) -> GgmlType {
        self.tensors
            .iter()
            .filter(|t| t.source.is_some() && t.shape.len() >= 2)
            .map(|t| t.source_type())
            .next()
            .unwrap_or(GgmlType::F32)
    }

    /// Decodes output rows `first..first + out.len() / row_len` of `t` (rows of the
    /// innermost dimension) into `out`, transforms applied.
    pub fn read_rows(&self, t: &Planned, first: u64, out: &mut [f32]) -> Result<()> {
        if let Some(values) = &t.generated {
            let start = first as usize * values.len();
            out.copy_from_slice(&values[start..start + out.len()]);
            return Ok(());
        }
        let info = t.source.as_ref().expect("planned tensors have a source");
        let data = self.src.data(info);
        let ty = info.ty;
        let size = t.source_type().type_size() as usize;
        let outer = t.shape[0];
        let inner = (t.elements() / outer.max(1)) as usize;
        let row_len = *t.shape.last().expect("shape") as usize;
        let mut e = first as usize * row_len;
        let mut done = 0;
        while done < out.len() {
            let (o, within) = (e / inner, e % inner);
            let n = (inner - within).min(out.len() - done);
            let s = t.rows.source_row(o as u64, outer) as usize * inner + within;
            crate::quant::decode(
                ty,
                &data[s * size..(s + n) * size],
                &mut out[done..done + n],
            )?;
            done += n;
            e += n;
        }
        if t.add != 0.0 {
            for v in out.iter_mut() {
                *v += t.add;
            }
        }
        Ok(())
    }

    /// Hints that tensor `t`'s mapped pages will not be read again.
    pub fn release(&self, t: &Planned) {
        if let Some(info) = &t.source {
            self.src.release(info, 0..info.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The permutation convert applies: reshape(n_head, 2, half, ...).swapaxes(1, 2).
    #[test]
    fn rope_permutation_interleaves_each_heads_halves() {
        let order = RowOrder::RopePermute { n_head: 2 };
        let rows: Vec<u64> = (0..8).map(|r| order.source_row(r, 8)).collect();
        // head 0: rows 0,1 | 2,3 -> 0,2,1,3; head 1: 4,6,5,7
        assert_eq!(rows, [0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(RowOrder::Identity.source_row(5, 8), 5);
        let order = RowOrder::RopePermute { n_head: 3 };
        for r in 0..24 {
            assert_eq!(order.target_row(order.source_row(r, 24), 24), r);
        }
    }

    #[test]
    fn model_dir_needs_a_config_beside_the_input() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("model.safetensors");
        assert_eq!(model_dir(&f), None);
        assert_eq!(model_dir(d.path()), Some(d.path().to_path_buf()));
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        assert_eq!(model_dir(&f), Some(d.path().to_path_buf()));
        assert_eq!(model_dir(&d.path().join("model.gguf")), None);
    }
}

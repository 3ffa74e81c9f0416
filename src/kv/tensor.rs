//! Plain row-major matrices and the per-layer KV / query containers.
//!
//! Tensor naming convention for captured data (safetensors, read by the CLI):
//! `layer.{i}.key` and `layer.{i}.value` with shape `[kv_heads, tokens, head_dim]`,
//! `layer.{i}.query` with shape `[query_heads, n_queries, head_dim]`; see
//! [`tensor_name`] and [`split_heads`].

use anyhow::{bail, Result};

/// Row-major `rows x cols` matrix of `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// Wraps `data` (length `rows * cols`, `cols > 0`).
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if cols == 0 {
            bail!("matrix must have at least one column");
        }
        if rows.checked_mul(cols) != Some(data.len()) {
            bail!(
                "matrix data has {} values, expected {rows} x {cols}",
                data.len()
            );
        }
        Ok(Self { rows, cols, data })
    }

    /// All-zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable row-major values.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, returning its values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Row `i` (panics if out of range; callers index within `rows()`).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Copy of rows `start..end`.
    pub fn slice_rows(&self, start: usize, end: usize) -> Result<Matrix> {
        if start > end || end > self.rows {
            bail!("row range {start}..{end} out of 0..{}", self.rows);
        }
        Matrix::new(
            end - start,
            self.cols,
            self.data[start * self.cols..end * self.cols].to_vec(),
        )
    }
}

/// Which tensors a profile compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvRole {
    /// Keys only (values stay raw).
    Key,
    /// Values only (keys stay raw).
    Value,
    /// Keys and values.
    Both,
}

impl KvRole {
    /// Whether keys are compressed.
    pub fn keys(self) -> bool {
        matches!(self, KvRole::Key | KvRole::Both)
    }

    /// Whether values are compressed.
    pub fn values(self) -> bool {
        matches!(self, KvRole::Value | KvRole::Both)
    }
}

/// One layer: per KV head, keys and values `[tokens x head_dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerKv {
    /// Keys, one matrix per KV head.
    pub keys: Vec<Matrix>,
    /// Values, one matrix per KV head.
    pub values: Vec<Matrix>,
}

/// A whole KV cache: one [`LayerKv`] per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct KvData {
    /// Layers in order.
    pub layers: Vec<LayerKv>,
}

/// Queries: `layers[l][h]` is `[n_queries x head_dim]` for query head `h`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queries {
    /// Per layer, per query head.
    pub layers: Vec<Vec<Matrix>>,
}

/// Dimensions found in a [`KvData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvDims {
    /// Number of layers.
    pub layers: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Tokens per head.
    pub tokens: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl KvData {
    /// Checks that every layer has the same heads, tokens and head_dim; returns them.
    pub fn dims(&self) -> Result<KvDims> {
        let Some(first) = self.layers.first() else {
            bail!("KV data has no layers");
        };
        let Some(m0) = first.keys.first() else {
            bail!("layer 0 has no KV heads");
        };
        let dims = KvDims {
            layers: self.layers.len(),
            kv_heads: first.keys.len(),
            tokens: m0.rows(),
            head_dim: m0.cols(),
        };
        for (l, layer) in self.layers.iter().enumerate() {
            for (what, ms) in [("key", &layer.keys), ("value", &layer.values)] {
                if ms.len() != dims.kv_heads {
                    bail!(
                        "layer {l} has {} {what} heads, expected {}",
                        ms.len(),
                        dims.kv_heads
                    );
                }
                for (h, m) in ms.iter().enumerate() {
                    if m.rows() != dims.tokens || m.cols() != dims.head_dim {
                        bail!(
                            "layer {l} {what} head {h} is {}x{}, expected {}x{}",
                            m.rows(),
                            m.cols(),
                            dims.tokens,
                            dims.head_dim
                        );
                    }
                }
            }
        }
        Ok(dims)
    }

    /// Every key and/or value row (per `role`) concatenated, e.g. for calibration.
    pub fn rows(&self, role: KvRole) -> Vec<f32> {
        let mut out = Vec::new();
        for layer in &self.layers {
            if role.keys() {
                layer
                    .keys
                    .iter()
                    .for_each(|m| out.extend_from_slice(m.data()));
            }
            if role.values() {
                layer
                    .values
                    .iter()
                    .for_each(|m| out.extend_from_slice(m.data()));
            }
        }
        out
    }
}

impl Queries {
    /// Checks shape against `layers`, `query_heads`, `head_dim`; returns queries per head.
    pub fn check(&self, layers: usize, query_heads: usize, head_dim: usize) -> Result<usize> {
        if self.layers.len() != layers {
            bail!("queries have {} layers, KV has {layers}", self.layers.len());
        }
        let n = self
            .layers
            .first()
            .and_then(|l| l.first())
            .map_or(0, |m| m.rows());
        for (l, heads) in self.layers.iter().enumerate() {
            if heads.len() != query_heads {
                bail!(
                    "layer {l} has {} query heads, expected {query_heads}",
                    heads.len()
                );
            }
            for (h, m) in heads.iter().enumerate() {
                if m.cols() != head_dim || m.rows() != n {
                    bail!(
                        "layer {l} query head {h} is {}x{}, expected {n}x{head_dim}",
                        m.rows(),
                        m.cols()
                    );
                }
            }
        }
        Ok(n)
    }
}

/// Tensor name for layer `i` and `kind` ("key", "value" or "query"): `layer.{i}.{kind}`.
pub fn tensor_name(layer: usize, kind: &str) -> String {
    format!("layer.{layer}.{kind}")
}

/// Splits a `[heads, rows, cols]` row-major tensor into one matrix per head.
pub fn split_heads(heads: usize, rows: usize, cols: usize, data: &[f32]) -> Result<Vec<Matrix>> {
    if heads.checked_mul(rows).and_then(|v| v.checked_mul(cols)) != Some(data.len()) {
        bail!(
            "tensor has {} values, expected [{heads}, {rows}, {cols}]",
            data.len()
        );
    }
    if heads == 0 || cols == 0 {
        bail!("tensor [{heads}, {rows}, {cols}] has an empty head or column axis");
    }
    if rows == 0 {
        return Ok(vec![Matrix::zeros(0, cols); heads]);
    }
    data.chunks_exact(rows * cols)
        .map(|c| Matrix::new(rows, cols, c.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_basics() {
        let m = Matrix::new(2, 3, vec![1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(m.row(1), &[4., 5., 6.]);
        assert_eq!(m.slice_rows(1, 2).unwrap().data(), &[4., 5., 6.]);
        assert!(m.slice_rows(2, 3).is_err());
        assert!(Matrix::new(2, 2, vec![0.0; 3]).is_err());
        assert!(Matrix::new(0, 0, vec![]).is_err());
    }

    #[test]
    fn split_and_dims() {
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let heads = split_heads(2, 3, 2, &data).unwrap();
        assert_eq!(heads[1].row(0), &[6., 7.]);
        assert!(split_heads(2, 3, 3, &data).is_err());
        let kv = KvData {
            layers: vec![LayerKv {
                keys: heads.clone(),
                values: heads.clone(),
            }],
        };
        let d = kv.dims().unwrap();
        assert_eq!((d.layers, d.kv_heads, d.tokens, d.head_dim), (1, 2, 3, 2));
        assert_eq!(kv.rows(KvRole::Key).len(), 12);
        assert_eq!(kv.rows(KvRole::Both).len(), 24);
        let bad = KvData {
            layers: vec![LayerKv {
                keys: heads.clone(),
                values: heads[..1].to_vec(),
            }],
        };
        assert!(bad.dims().is_err());
        assert_eq!(tensor_name(3, "key"), "layer.3.key");
    }
}

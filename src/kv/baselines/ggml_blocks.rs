//! ggml block formats as KV baselines (`q8_0`, `q4_0`), through qforge's ggml codecs
//! (bit-exact with ggml's reference quantizer): each KV row is one ggml row.

use anyhow::{bail, Result};

use super::super::codec::{check_matrix, KvCodec};
use super::super::tensor::Matrix;
use crate::formats::ggml_type::GgmlType;
use crate::quant::ggml::Codec;

/// A ggml block type used as a KV codec; head_dim must be a multiple of its block.
#[derive(Debug, Clone)]
pub struct GgmlBlocks {
    head_dim: usize,
    ty: GgmlType,
    codec: &'static Codec,
}

impl GgmlBlocks {
    /// Codec of type `ty` for rows of `head_dim`.
    pub fn new(ty: GgmlType, head_dim: usize) -> Result<Self> {
        let Some(codec) = ty.codec() else {
            bail!("{ty}: no codec");
        };
        if head_dim == 0 || !head_dim.is_multiple_of(codec.block_size()) {
            bail!(
                "{ty}: head_dim must be a positive multiple of {}, got {head_dim}",
                codec.block_size()
            );
        }
        Ok(Self {
            head_dim,
            ty,
            codec,
        })
    }

    fn row_bytes(&self) -> usize {
        self.head_dim / self.codec.block_size() * self.codec.type_size()
    }
}

/// ggml `q8_0` (8.5 bits per value).
pub fn q8_0(head_dim: usize) -> Result<GgmlBlocks> {
    GgmlBlocks::new(GgmlType::Q8_0, head_dim)
}

/// ggml `q4_0` (4.5 bits per value).
pub fn q4_0(head_dim: usize) -> Result<GgmlBlocks> {
    GgmlBlocks::new(GgmlType::Q4_0, head_dim)
}

impl KvCodec for GgmlBlocks {
    fn name(&self) -> String {
        self.ty.name().to_ascii_lowercase()
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn bits_per_value(&self) -> f64 {
        self.ty.bits_per_weight()
    }

    fn encoded_len(&self, rows: usize) -> usize {
        rows * self.row_bytes()
    }

    fn encode(&self, m: &Matrix) -> Result<Vec<u8>> {
        check_matrix(self, m)?;
        if let Some(i) = m.data().iter().position(|v| !v.is_finite()) {
            bail!("{}: value {i} is not finite", self.name());
        }
        let rb = self.row_bytes();
        let mut out = vec![0u8; self.encoded_len(m.rows())];
        for (x, dst) in m
            .data()
            .chunks_exact(self.head_dim)
            .zip(out.chunks_exact_mut(rb))
        {
            (self.codec.quantize_row)(x, dst, None);
        }
        Ok(out)
    }

    fn decode(&self, bytes: &[u8], rows: usize) -> Result<Matrix> {
        if bytes.len() != self.encoded_len(rows) {
            bail!(
                "{}: {} bytes for {rows} rows, expected {}",
                self.name(),
                bytes.len(),
                self.encoded_len(rows)
            );
        }
        let mut out = Matrix::zeros(rows, self.head_dim);
        (self.codec.dequantize)(bytes, out.data_mut());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trip_is_close_and_sizes_match_ggml() {
        let data: Vec<f32> = (0..128).map(|i| ((i as f32) * 0.37).sin()).collect();
        let m = Matrix::new(2, 64, data).unwrap();
        let c = q8_0(64).unwrap();
        let bytes = c.encode(&m).unwrap();
        assert_eq!(bytes.len(), 2 * 2 * 34);
        let back = c.decode(&bytes, 2).unwrap();
        let err = m
            .data()
            .iter()
            .zip(back.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 0.01, "{err}");
        assert_eq!(q4_0(64).unwrap().bits_per_value(), 4.5);
        assert!(q4_0(48).is_err());
    }
}

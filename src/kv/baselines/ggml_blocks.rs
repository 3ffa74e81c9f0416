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
    /// Block channel `c` holds row channel `order[c]` (`None`: the row's order).
    order: Option<Vec<usize>>,
    /// Orthonormal Walsh-Hadamard transform of each run of this many channels (after
    /// `order`) before quantizing, undone after decoding.
    hadamard: Option<usize>,
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
            order: None,
            hadamard: None,
        })
    }

    /// llama.cpp's quantized KV cache (`attn_rot_k` / `attn_rot_v`, on unless
    /// `LLAMA_ATTN_ROT_DISABLE`): each head is multiplied by the orthonormal Sylvester
    /// Hadamard matrix of size `n`, the largest power of two that divides head_dim, when
    /// that is at least 64 (queries get the same rotation and attention outputs are rotated
    /// back, so coding the rotated rows and rotating back is the same computation).
    /// Without such an `n` the codec is unchanged, as in llama.cpp.
    pub fn llama_cpp_rotation(mut self) -> Self {
        let n = 1usize << self.head_dim.trailing_zeros();
        self.hadamard = (n >= 64).then_some(n);
        self
    }

    /// Rotates `row` in place (the transform is its own inverse).
    fn rotate(&self, row: &mut [f32]) -> Result<()> {
        if let Some(n) = self.hadamard {
            let scale = 1.0 / (n as f32).sqrt();
            for chunk in row.chunks_exact_mut(n) {
                crate::kv::rotation::fwht(chunk)?;
                chunk.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(())
    }

    /// The same codec on rows whose channels are first put in `order` (channel `c` of the
    /// quantized row is channel `order[c]` of the input row) and put back after decoding:
    /// the key layout of llama.cpp's cache
    /// ([`crate::kv::weights::llama_cpp_key_order`]), whose blocks group other channels.
    pub fn with_order(mut self, order: Vec<usize>) -> Result<Self> {
        let mut seen = vec![false; self.head_dim];
        if order.len() != self.head_dim
            || !order
                .iter()
                .all(|&c| c < self.head_dim && !std::mem::replace(&mut seen[c], true))
        {
            bail!("channel order is not a permutation of 0..{}", self.head_dim);
        }
        self.order = Some(order);
        Ok(self)
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
        let mut row = vec![0f32; self.head_dim];
        for (x, dst) in m
            .data()
            .chunks_exact(self.head_dim)
            .zip(out.chunks_exact_mut(rb))
        {
            match &self.order {
                Some(order) => {
                    for (r, &c) in row.iter_mut().zip(order) {
                        *r = x[c];
                    }
                }
                None => row.copy_from_slice(x),
            }
            self.rotate(&mut row)?;
            (self.codec.quantize_row)(&row, dst, None);
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
        let mut row = vec![0f32; self.head_dim];
        for x in out.data_mut().chunks_exact_mut(self.head_dim) {
            self.rotate(x)?;
            if let Some(order) = &self.order {
                row.copy_from_slice(x);
                for (&r, &c) in row.iter().zip(order) {
                    x[c] = r;
                }
            }
        }
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

    #[test]
    fn channel_order_changes_the_blocks_and_is_undone() {
        // One large channel in the first half: in row order it sets block 0's scale; put
        // at channel 63 (the second block), it leaves block 0's small values nearly exact.
        let mut x: Vec<f32> = (0..64).map(|i| 0.01 * (i % 7) as f32).collect();
        x[5] = 100.0;
        let m = Matrix::new(1, 64, x.clone()).unwrap();
        let mut order: Vec<usize> = (0..64).collect();
        order.swap(5, 63);
        let plain = q4_0(64).unwrap();
        let ordered = q4_0(64).unwrap().with_order(order).unwrap();
        let err = |c: &GgmlBlocks| {
            let back = c.round_trip(&m).unwrap();
            (0..32)
                .filter(|&i| i != 5)
                .map(|i| (back.data()[i] - x[i]).abs())
                .fold(0f32, f32::max)
        };
        assert!(err(&ordered) < 0.01, "{}", err(&ordered));
        assert!(err(&plain) > 0.02, "{}", err(&plain));
        assert!((ordered.round_trip(&m).unwrap().data()[5] - 100.0).abs() < 1e-3);
        assert!(q4_0(64).unwrap().with_order(vec![0; 64]).is_err());
    }

    #[test]
    fn llama_cpp_rotation_spreads_an_outlier_and_is_undone() {
        // A lone spike: plain q4_0 zeroes its block's small values; rotated, the spike is
        // spread over all 64 channels and comes back close.
        let mut x = vec![0.05f32; 64];
        x[3] = 10.0;
        let m = Matrix::new(1, 64, x.clone()).unwrap();
        let rel = |c: &GgmlBlocks| {
            let back = c.round_trip(&m).unwrap();
            let e: f32 = back
                .data()
                .iter()
                .zip(&x)
                .map(|(a, b)| (a - b).powi(2))
                .sum();
            e / x.iter().map(|v| v * v).sum::<f32>()
        };
        let rotated = q8_0(64).unwrap().llama_cpp_rotation();
        assert_eq!(rotated.hadamard, Some(64));
        assert!(rel(&rotated) < 1e-4, "{}", rel(&rotated));
        // head_dim 96: the largest power of two dividing it is 32 < 64, no rotation.
        assert_eq!(q8_0(96).unwrap().llama_cpp_rotation().hadamard, None);
        assert_eq!(q8_0(192).unwrap().llama_cpp_rotation().hadamard, Some(64));
    }
}

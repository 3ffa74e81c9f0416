//! Quantized weight matrices as the kernels read them: `n` rows of `k` values in ggml's
//! block layout (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, IQ4_XS) or bitsandbytes' NF4 layout (packed codes,
//! first value of a pair in the high nibble, one f32 absmax per block).

use crate::formats::blocks::QK_K;
use crate::formats::ggml_type::GgmlType;
use crate::formats::weight_format::WeightFormat;
use crate::formats::{TensorSource, TensorType};
use crate::quant::bnb::{self, FourBit};
use crate::quant::ggml::Codec;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use rayon::prelude::*;

/// A weight type the GEMM kernels take (bench-gemm's `--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum WeightType {
    /// ggml Q4_K: 256-value super-blocks, 6-bit scales and mins, 4.5 bits per weight.
    #[value(name = "q4_k")]
    Q4K,
    /// ggml Q6_K: 256-value super-blocks, 8-bit scales per 16 values, 6.5625 bits.
    #[value(name = "q6_k")]
    Q6K,
    /// ggml Q8_0: 32-value blocks, f16 scale, 8.5 bits.
    #[value(name = "q8_0")]
    Q8_0,
    /// ggml Q4_0: 32-value blocks, f16 scale, 4.5 bits.
    #[value(name = "q4_0")]
    Q4_0,
    /// bitsandbytes NF4 with an f32 absmax per block (64 by default), 4.5 bits at 64.
    Nf4,
    /// ggml Q5_K: Q4_K with a fifth bit per value, 5.5 bits per weight.
    #[value(name = "q5_k")]
    Q5K,
    /// ggml IQ4_XS: 256-value super-blocks of 32-value groups with 6-bit scales, 4-bit
    /// indices into a 16-entry non-linear table, 4.25 bits per weight.
    #[value(name = "iq4_xs")]
    Iq4Xs,
}

impl WeightType {
    /// Every type, in the order the CLI lists them.
    pub const ALL: [WeightType; 7] = [
        Self::Q4K,
        Self::Q6K,
        Self::Q8_0,
        Self::Q4_0,
        Self::Nf4,
        Self::Q5K,
        Self::Iq4Xs,
    ];

    /// Lower-case name, as the CLI and the JSON report spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4K => "q4_k",
            Self::Q6K => "q6_k",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Nf4 => "nf4",
            Self::Q5K => "q5_k",
            Self::Iq4Xs => "iq4_xs",
        }
    }

    /// The ggml codec of a ggml type; `None` for NF4.
    pub fn ggml_codec(self) -> Option<&'static Codec> {
        self.ggml_type().and_then(GgmlType::codec)
    }

    /// The ggml type, if it is one.
    pub fn ggml_type(self) -> Option<GgmlType> {
        GgmlType::try_from(WeightFormat::from(self)).ok()
    }

    /// Values per block of the weight format (NF4: the default 64).
    pub fn block_size(self) -> usize {
        self.ggml_codec().map_or(NF4_BLOCK, |c| c.block_size())
    }

    /// The offset the 32-value-block SIMD kernels add to make this type's levels unsigned
    /// (Q4_0 levels are stored +8; Q8_0 values and NF4 table entries are shifted by 128);
    /// `None` for the 256-value types, which correct with the activation sums instead.
    pub fn lane_bias(self) -> Option<i32> {
        match self {
            Self::Q4_0 => Some(8),
            Self::Q8_0 | Self::Nf4 => Some(128),
            Self::Q4K | Self::Q5K | Self::Q6K | Self::Iq4Xs => None,
        }
    }

    /// Values per block of the 8-bit activations the fused kernels pair with this type.
    pub fn activation_block(self) -> usize {
        match self {
            Self::Q4K | Self::Q5K | Self::Q6K | Self::Iq4Xs => QK_K,
            _ => 32,
        }
    }
}

/// The NF4 block size the kernels and random weights use.
pub const NF4_BLOCK: usize = 64;

/// The bytes of a weight matrix: owned, or a range of a shared memory map (zero-copy,
/// as `crate::candle` hands out the tensors of a mapped file).
#[derive(Clone)]
pub enum WeightBytes {
    /// Bytes the matrix owns.
    Owned(Vec<u8>),
    /// `range` of a memory-mapped file.
    Mapped {
        /// The mapped file.
        map: std::sync::Arc<memmap2::Mmap>,
        /// The matrix's bytes within it.
        range: std::ops::Range<usize>,
    },
    /// A copy on huge pages ([`QuantMatrix::on_huge_pages`]), for rows a GEMV streams.
    Huge(super::hugepage::HugeBuf),
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Owned(v) => v,
            WeightBytes::Mapped { map, range } => &map[range.clone()],
            WeightBytes::Huge(b) => b,
        }
    }
}

impl From<Vec<u8>> for WeightBytes {
    fn from(v: Vec<u8>) -> Self {
        WeightBytes::Owned(v)
    }
}

/// A quantized `n x k` weight matrix, row-major (row `r` holds output `r`'s weights).
#[derive(Clone)]
pub struct QuantMatrix {
    /// Weight type.
    pub ty: WeightType,
    /// Output rows.
    pub n: usize,
    /// Values per row (inner dimension).
    pub k: usize,
    /// Block bytes (ggml) or packed NF4 codes, rows one after another.
    pub data: WeightBytes,
    /// NF4 only: one absmax per block, rows one after another.
    pub absmax: Vec<f32>,
}

impl QuantMatrix {
    /// The same matrix with its bytes copied onto huge pages
    /// ([`HugeBuf`](super::hugepage::HugeBuf)): rows that a GEMV streams from memory read
    /// faster without a page walk every 4 KiB.
    pub fn on_huge_pages(&self) -> QuantMatrix {
        let mut data = super::hugepage::HugeBuf::zeroed(self.data.len());
        data.copy_from_slice(&self.data);
        QuantMatrix {
            ty: self.ty,
            n: self.n,
            k: self.k,
            data: WeightBytes::Huge(data),
            absmax: self.absmax.clone(),
        }
    }

    /// Checks that `k` is a whole number of blocks, of activation blocks and of the 64
    /// values the SIMD kernels take at a time.
    pub fn check_shape(ty: WeightType, n: usize, k: usize) -> Result<()> {
        let b = ty.block_size().max(ty.activation_block()).max(64);
        if n == 0 || k == 0 || !k.is_multiple_of(b) {
            bail_invalid!(
                "{}: --k must be a positive multiple of {b} and --n positive (got k={k}, n={n})",
                ty.name()
            );
        }
        Ok(())
    }

    /// Quantizes `w` (`n * k` values, row-major) with our bit-exact codecs, rows in parallel.
    pub fn quantize(ty: WeightType, w: &[f32], n: usize, k: usize) -> Result<Self> {
        Self::check_shape(ty, n, k)?;
        assert_eq!(w.len(), n * k, "weights must hold n * k values");
        let row_bytes = Self::row_bytes_of(ty, k);
        let mut data = vec![0u8; n * row_bytes];
        let mut absmax = Vec::new();
        match ty.ggml_codec() {
            Some(c) => data
                .par_chunks_mut(row_bytes)
                .zip(w.par_chunks(k))
                .for_each(|(dst, src)| (c.quantize_row)(src, dst, None)),
            None => {
                absmax = vec![0f32; n * k / NF4_BLOCK];
                data.par_chunks_mut(row_bytes)
                    .zip(absmax.par_chunks_mut(k / NF4_BLOCK))
                    .zip(w.par_chunks(k))
                    .for_each(|((dst, am), src)| {
                        bnb::quantize_4bit_into(FourBit::Nf4, src, NF4_BLOCK, dst, am)
                    });
            }
        }
        Ok(QuantMatrix {
            ty,
            n,
            k,
            data: data.into(),
            absmax,
        })
    }

    /// Seeded random weights, roughly N(0, 0.02) with a few larger values per row, quantized.
    pub fn random(ty: WeightType, n: usize, k: usize, seed: u64) -> Result<Self> {
        Self::check_shape(ty, n, k)?;
        let mut w = vec![0f32; n * k];
        w.par_chunks_mut(k).enumerate().for_each(|(r, row)| {
            let mut rng = crate::kv::prng::SplitMix64::new(seed ^ (r as u64).wrapping_mul(0x9e37));
            for v in row.iter_mut() {
                *v = (rng.next_gaussian() * 0.02) as f32;
            }
            let outlier = rng.next_below(k as u64) as usize;
            row[outlier] *= 8.0;
        });
        Self::quantize(ty, &w, n, k)
    }

    /// Takes a 2-D tensor from a GGUF, safetensors or QNAT file: kept byte for byte when it
    /// already has type `ty` (ggml types), otherwise decoded to f32 and quantized.
    pub fn from_tensor(src: &TensorSource, name: &str, ty: WeightType) -> Result<Self> {
        let t = src
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| invalid!("no tensor named {name:?} in {}", src.path.display()))?;
        let [n, k] = t.shape[..] else {
            bail_invalid!(
                "tensor {name:?} has shape {:?}; bench-gemm needs 2-D",
                t.shape
            );
        };
        let (n, k) = (n as usize, k as usize);
        Self::check_shape(ty, n, k)?;
        let bytes = src.data(t);
        if ty.ggml_type().is_some_and(|g| t.ty == TensorType::Ggml(g)) {
            return Ok(QuantMatrix {
                ty,
                n,
                k,
                data: bytes.to_vec().into(),
                absmax: Vec::new(),
            });
        }
        if !crate::quant::can_decode(t.ty) {
            bail_invalid!("tensor {name:?} has type {}, which cannot be decoded", t.ty);
        }
        let mut w = vec![0f32; n * k];
        crate::quant::decode(t.ty, bytes, &mut w)?;
        Self::quantize(ty, &w, n, k)
    }

    /// Bytes of one row of type `ty` with `k` values.
    pub fn row_bytes_of(ty: WeightType, k: usize) -> usize {
        match ty.ggml_codec() {
            Some(c) => k / c.block_size() * c.type_size(),
            None => k / 2,
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        Self::row_bytes_of(self.ty, self.k)
    }

    /// Row `r`'s block bytes (or packed codes).
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r`'s NF4 absmax values (empty for ggml types).
    pub fn row_absmax(&self, r: usize) -> &[f32] {
        match self.ty {
            WeightType::Nf4 => {
                let per_row = self.k / NF4_BLOCK;
                &self.absmax[r * per_row..(r + 1) * per_row]
            }
            _ => &[],
        }
    }

    /// Bytes the quantized matrix occupies (codes plus absmax).
    pub fn bytes(&self) -> u64 {
        (self.data.len() + self.absmax.len() * 4) as u64
    }

    /// Dequantizes rows `rows` into `out` (`rows.len() * k` values), exactly as the codecs do.
    pub fn dequantize_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        assert_eq!(out.len(), rows.len() * self.k);
        for (r, dst) in rows.zip(out.chunks_mut(self.k)) {
            match self.ty.ggml_codec() {
                Some(c) => (c.dequantize)(self.row(r), dst),
                None => bnb::dequantize_4bit(
                    FourBit::Nf4,
                    self.row(r),
                    self.row_absmax(r),
                    NF4_BLOCK,
                    self.k,
                    dst,
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_shapes() {
        use clap::ValueEnum;
        for t in WeightType::ALL {
            assert_eq!(WeightType::from_str(&t.name().to_uppercase(), true), Ok(t));
            let value = t.to_possible_value().expect("listed");
            assert_eq!(value.get_name(), t.name());
        }
        assert!(WeightType::from_str("q3_k", true).is_err());
        assert_eq!(WeightType::value_variants(), WeightType::ALL);
        assert!(QuantMatrix::check_shape(WeightType::Q4K, 4, 128).is_err());
        assert!(QuantMatrix::check_shape(WeightType::Q4_0, 4, 64).is_ok());
        assert!(QuantMatrix::check_shape(WeightType::Q4_0, 4, 96).is_err());
        assert!(QuantMatrix::check_shape(WeightType::Nf4, 4, 32).is_err());
        assert!(QuantMatrix::check_shape(WeightType::Q8_0, 0, 32).is_err());
    }

    #[test]
    fn random_weights_have_the_codec_sizes_and_decode_close() {
        for ty in WeightType::ALL {
            let (n, k) = (3, 512);
            let m = QuantMatrix::random(ty, n, k, 7).unwrap();
            assert_eq!(m.row_bytes() * n, m.data.len());
            let bpw = m.bytes() as f64 * 8.0 / (n * k) as f64;
            let expect = match ty {
                WeightType::Q4K | WeightType::Q4_0 | WeightType::Nf4 => 4.5,
                WeightType::Q6K => 6.5625,
                WeightType::Q8_0 => 8.5,
                WeightType::Q5K => 5.5,
                WeightType::Iq4Xs => 4.25,
            };
            assert!((bpw - expect).abs() < 1e-9, "{ty:?} {bpw}");
            let mut out = vec![0f32; n * k];
            m.dequantize_rows(0..n, &mut out);
            let rms = (out.iter().map(|v| v * v).sum::<f32>() / out.len() as f32).sqrt();
            assert!(rms > 0.015 && rms < 0.04, "{ty:?} rms {rms}");
        }
    }
}

//! Unit encoders: how a run of f32 values becomes output bytes.

use crate::formats::ggml_type::GgmlType;
use crate::quant::ggml::Codec;
use anyhow::{bail, Result};

/// Encodes fixed-size units of f32 (a row, a block) into bytes, and decodes them back.
pub trait RowEncoder: Sync {
    /// Elements per unit for a tensor whose rows have `row_len` elements.
    fn unit_len(&self, row_len: usize) -> usize {
        row_len
    }
    /// Output bytes for a unit of `len` elements, or an error if it cannot be encoded.
    fn unit_bytes(&self, len: usize) -> Result<usize>;
    /// Side values per unit kept outside the byte stream (e.g. a block's absmax).
    fn side_len(&self) -> usize {
        0
    }
    /// Encodes `x` into `dst` (exactly `unit_bytes(x.len())` bytes) and `side`.
    fn encode(&self, x: &[f32], dst: &mut [u8], side: &mut [f32], imatrix: Option<&[f32]>);
    /// Decodes `src` (with its `side` values) into `out`.
    fn decode(&self, src: &[u8], side: &[f32], out: &mut [f32]);
}

/// A ggml block type as a [`RowEncoder`]: one unit per row.
pub struct GgmlEncoder {
    /// The output type.
    pub ty: GgmlType,
    codec: &'static Codec,
}

impl GgmlEncoder {
    /// The encoder for `ty`, if qforge has its codec.
    pub fn new(ty: GgmlType) -> Result<GgmlEncoder> {
        match ty.codec() {
            Some(codec) => Ok(GgmlEncoder { ty, codec }),
            None => bail!("quantizing to {ty} is not implemented"),
        }
    }
}

impl RowEncoder for GgmlEncoder {
    fn unit_bytes(&self, len: usize) -> Result<usize> {
        match self.ty.row_bytes(len as u64) {
            Some(b) => Ok(b as usize),
            None => bail!(
                "row length {len} is not a multiple of the {} block size {}",
                self.ty,
                self.ty.block_size()
            ),
        }
    }

    fn encode(&self, x: &[f32], dst: &mut [u8], _side: &mut [f32], imatrix: Option<&[f32]>) {
        (self.codec.quantize_row)(x, dst, imatrix)
    }

    fn decode(&self, src: &[u8], _side: &[f32], out: &mut [f32]) {
        (self.codec.dequantize)(src, out)
    }
}

/// bitsandbytes NF4/FP4 as a [`RowEncoder`]: one unit per block, packed codes streamed,
/// the block's absmax kept as its side value (double quantization needs them all).
pub struct FourBitEncoder {
    /// NF4 or FP4.
    pub kind: crate::quant::bnb::FourBit,
    /// Elements per block.
    pub block_size: usize,
}

impl FourBitEncoder {
    /// Checks the block size (a power of two from 32 to 4096, as bitsandbytes allows).
    pub fn new(kind: crate::quant::bnb::FourBit, block_size: usize) -> Result<FourBitEncoder> {
        if !crate::quant::bnb::is_valid_block_size(block_size) {
            crate::bail_invalid!(
                "block size {block_size} is not one of {:?}",
                crate::quant::bnb::BLOCK_SIZES
            );
        }
        Ok(FourBitEncoder { kind, block_size })
    }
}

impl RowEncoder for FourBitEncoder {
    fn unit_len(&self, _row_len: usize) -> usize {
        self.block_size
    }

    fn unit_bytes(&self, len: usize) -> Result<usize> {
        Ok(len.div_ceil(2))
    }

    fn side_len(&self) -> usize {
        1
    }

    fn encode(&self, x: &[f32], dst: &mut [u8], side: &mut [f32], _imatrix: Option<&[f32]>) {
        crate::quant::bnb::quantize_4bit_into(self.kind, x, self.block_size, dst, side)
    }

    fn decode(&self, src: &[u8], side: &[f32], out: &mut [f32]) {
        let n = out.len();
        crate::quant::bnb::dequantize_4bit(self.kind, src, side, self.block_size, n, out)
    }
}

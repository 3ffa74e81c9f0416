//! Zero-copy candle storage: blocks of a memory-mapped file read in place.

use crate::formats::ggml_type::GgmlType;
use crate::{bail_invalid, invalid};
use anyhow::Result;
use candle_core::quantized::k_quants::{self, GgmlType as Blocks};
use candle_core::quantized::{GgmlDType, QStorage, QTensor, QuantizedType};
use candle_core::CpuStorage;
use half::f16;
use memmap2::Mmap;
use std::ops::Range;
use std::sync::Arc;

/// candle's dtype for one of our ggml types; `None` where candle has none (IQ types,
/// TQ, MXFP4, ...).
pub fn candle_dtype(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        GgmlType::Q8_K => GgmlDType::Q8K,
        _ => return None,
    })
}

/// A byte range of a shared memory map.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl MappedBytes {
    /// `range` of `map`; invalid input when it lies outside.
    pub fn new(map: Arc<Mmap>, range: Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > map.len() {
            bail_invalid!(kind: OutOfBounds,
                "byte range {range:?} is outside the {}-byte file",
                map.len()
            );
        }
        Ok(MappedBytes { map, range })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }

    /// The map and the range, for [`crate::kernels::weights::WeightBytes::Mapped`].
    pub fn into_parts(self) -> (Arc<Mmap>, Range<usize>) {
        (self.map, self.range)
    }
}

/// Blocks of one candle block type read in place from a memory map: the storage of a
/// zero-copy `QTensor`. Any bit pattern is a valid block (they hold integers and f16/f32),
/// and the start is checked to be aligned for the type; a write (`from_float`, which
/// candle only calls on storage it quantizes into) first copies the blocks.
pub struct MappedBlocks<T> {
    bytes: MappedBytes,
    owned: Option<Vec<T>>,
}

impl<T: Blocks> MappedBlocks<T> {
    /// The blocks of `bytes`: a whole number of `T`, aligned for `T`.
    pub fn new(bytes: MappedBytes) -> Result<Self> {
        let b = bytes.bytes();
        let size = std::mem::size_of::<T>();
        if !b.len().is_multiple_of(size) {
            bail_invalid!(kind: BadShape, "{} bytes are not a whole number of {size}-byte {:?} blocks", b.len(), T::DTYPE);
        }
        if !(b.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
            bail_invalid!(kind: BadLayout, "{:?} blocks at a misaligned offset", T::DTYPE);
        }
        Ok(MappedBlocks { bytes, owned: None })
    }

    /// The blocks.
    pub fn blocks(&self) -> &[T] {
        match &self.owned {
            Some(v) => v,
            None => {
                let b = self.bytes.bytes();
                // SAFETY: `new` checked size and alignment; `T` is a candle block type
                // (plain integers and floats, any bit pattern valid); the map is read-only
                // and lives as long as `self`.
                unsafe {
                    std::slice::from_raw_parts(
                        b.as_ptr().cast::<T>(),
                        b.len() / std::mem::size_of::<T>(),
                    )
                }
            }
        }
    }

    fn blocks_mut(&mut self) -> &mut [T] {
        if self.owned.is_none() {
            self.owned = Some(self.blocks().to_vec());
        }
        self.owned.as_mut().expect("just set")
    }
}

fn to_candle(e: anyhow::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("{e:#}"))
}

impl<T: Blocks + Send + Sync> QuantizedType for MappedBlocks<T> {
    fn dtype(&self) -> GgmlDType {
        T::DTYPE
    }

    fn matmul_t(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[f32],
        dst: &mut [f32],
    ) -> candle_core::Result<()> {
        k_quants::matmul(mkn, lhs, self.blocks(), dst)
    }

    fn matmul_t_f16(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[f16],
        dst: &mut [f16],
    ) -> candle_core::Result<()> {
        k_quants::matmul_f16(mkn, lhs, self.blocks(), dst)
    }

    fn embedding(
        &self,
        ids: &[u32],
        rows: usize,
        hidden: usize,
    ) -> candle_core::Result<CpuStorage> {
        if !hidden.is_multiple_of(T::BLCK_SIZE) {
            return Err(to_candle(invalid!(
                "quantized embedding hidden size {hidden} is not divisible by block size {}",
                T::BLCK_SIZE
            )));
        }
        let row_blocks = hidden / T::BLCK_SIZE;
        let blocks = self.blocks();
        if blocks.len() != rows * row_blocks {
            return Err(to_candle(invalid!(
                "quantized tensor has {} blocks, expected {}",
                blocks.len(),
                rows * row_blocks
            )));
        }
        let mut out = vec![0f32; ids.len() * hidden];
        for (dst, &id) in out.chunks_mut(hidden).zip(ids) {
            let row = id as usize;
            if row >= rows {
                return Err(to_candle(invalid!(
                    "embedding id {row} is out of range for {rows} rows"
                )));
            }
            T::to_float(&blocks[row * row_blocks..(row + 1) * row_blocks], dst);
        }
        Ok(CpuStorage::F32(out))
    }

    fn dequantize(&self, elem_count: usize) -> candle_core::Result<CpuStorage> {
        let mut ys = vec![0f32; elem_count];
        T::to_float(self.blocks(), &mut ys);
        Ok(CpuStorage::F32(ys))
    }

    fn storage_size_in_bytes(&self) -> usize {
        std::mem::size_of_val(self.blocks())
    }

    fn as_ptr(&self) -> *const u8 {
        self.blocks().as_ptr().cast()
    }

    fn block_size(&self) -> usize {
        T::BLCK_SIZE
    }

    fn from_float(&mut self, xs: &[f32]) {
        T::from_float(xs, self.blocks_mut())
    }

    fn from_float_imatrix(&mut self, xs: &[f32], imatrix_weights: &[f32], n_per_row: usize) {
        T::from_float_imatrix(xs, self.blocks_mut(), imatrix_weights, n_per_row)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self.blocks())
    }
}

/// A candle `QTensor` of `shape` over `bytes` in place (candle dtype `dtype`).
pub(super) fn qtensor(bytes: MappedBytes, dtype: GgmlDType, shape: Vec<usize>) -> Result<QTensor> {
    use k_quants::*;
    fn boxed<T: Blocks + Send + Sync + 'static>(b: MappedBytes) -> Result<Box<dyn QuantizedType>> {
        Ok(Box::new(MappedBlocks::<T>::new(b)?))
    }
    let storage = match dtype {
        GgmlDType::F32 => boxed::<f32>(bytes)?,
        GgmlDType::F16 => boxed::<f16>(bytes)?,
        GgmlDType::BF16 => boxed::<half::bf16>(bytes)?,
        GgmlDType::Q4_0 => boxed::<BlockQ4_0>(bytes)?,
        GgmlDType::Q4_1 => boxed::<BlockQ4_1>(bytes)?,
        GgmlDType::Q5_0 => boxed::<BlockQ5_0>(bytes)?,
        GgmlDType::Q5_1 => boxed::<BlockQ5_1>(bytes)?,
        GgmlDType::Q8_0 => boxed::<BlockQ8_0>(bytes)?,
        GgmlDType::Q8_1 => boxed::<BlockQ8_1>(bytes)?,
        GgmlDType::Q2K => boxed::<BlockQ2K>(bytes)?,
        GgmlDType::Q3K => boxed::<BlockQ3K>(bytes)?,
        GgmlDType::Q4K => boxed::<BlockQ4K>(bytes)?,
        GgmlDType::Q5K => boxed::<BlockQ5K>(bytes)?,
        GgmlDType::Q6K => boxed::<BlockQ6K>(bytes)?,
        GgmlDType::Q8K => boxed::<BlockQ8K>(bytes)?,
    };
    Ok(QTensor::new(QStorage::Cpu(storage), shape)?)
}

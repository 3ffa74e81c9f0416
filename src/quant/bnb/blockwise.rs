//! Blockwise 4-bit quantization and dequantization (bitsandbytes `quantize_4bit`,
//! `dequantize_4bit`, CPU path).
//!
//! Per block: `absmax = max |x|` (NaN if the block holds a NaN); full blocks are scaled by
//! `x * (1 / max(absmax, 1e-38))` and store the unclamped absmax, while a final partial block
//! is scaled by `x / max(absmax, 1e-38)` and stores that clamped value (bitsandbytes handles
//! the remainder separately, with a division). Codes come from [`Quantizer`]; pairs are packed
//! high nibble first and an odd count is padded with the code of 0.0.

use rayon::prelude::*;

use super::codes::{Quantizer, FP4_DEQUANT, NF4};
use super::pack::{pack_pair, packed_len, unpack_pair};
use super::simd::full_blocks;
use super::{FourBit, QuantInput};
use crate::cpu::{self, Level};

/// Block sizes bitsandbytes accepts for 4-bit quantization.
pub const BLOCK_SIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Smallest divisor bitsandbytes uses (`absmax.clamp(min=1e-38)`, a subnormal f32).
const TINY: f32 = 1e-38;

/// Elements converted to f32 at a time for non-f32 inputs (a multiple of every block size).
const CONVERT_CHUNK: usize = 4096;

/// Blocks handed to one rayon task.
const PAR_CHUNK: usize = 1 << 16;

/// A 4-bit quantized tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized4 {
    /// Packed codes, `ceil(n / 2)` bytes, first element of each pair in the high nibble.
    pub packed: Vec<u8>,
    /// One f32 absmax per block.
    pub absmax: Vec<f32>,
    /// Elements per block.
    pub block_size: usize,
    /// Number of quantized elements.
    pub n: usize,
}

/// Whether bitsandbytes accepts `block_size` (a power of two from 32 to 4096).
pub fn is_valid_block_size(block_size: usize) -> bool {
    BLOCK_SIZES.contains(&block_size)
}

/// Number of absmax values for `n` elements in blocks of `block_size`.
pub fn num_blocks(n: usize, block_size: usize) -> usize {
    n.div_ceil(block_size)
}

fn check_layout(n: usize, block_size: usize, packed: usize, absmax: usize) {
    assert!(
        is_valid_block_size(block_size),
        "invalid 4-bit block size {block_size}"
    );
    assert_eq!(packed, packed_len(n), "packed buffer length");
    assert_eq!(absmax, num_blocks(n, block_size), "absmax buffer length");
}

/// Quantizes `x` to 4 bits in blocks of `block_size`.
///
/// # Panics
/// If `block_size` is not one of [`BLOCK_SIZES`].
pub fn quantize_4bit<T: QuantInput>(kind: FourBit, x: &[T], block_size: usize) -> Quantized4 {
    assert!(
        is_valid_block_size(block_size),
        "invalid 4-bit block size {block_size}"
    );
    let mut q = Quantized4 {
        packed: vec![0; packed_len(x.len())],
        absmax: vec![0.0; num_blocks(x.len(), block_size)],
        block_size,
        n: x.len(),
    };
    quantize_4bit_into(kind, x, block_size, &mut q.packed, &mut q.absmax);
    q
}

/// Quantizes `x` into caller buffers without allocating, with the fastest available kernel.
///
/// `packed` must hold `ceil(x.len() / 2)` bytes and `absmax` `ceil(x.len() / block_size)`
/// values. To stream a large tensor, call this on consecutive pieces whose lengths are
/// multiples of `block_size` (only the last piece may be shorter or ragged), writing to the
/// matching sub-slices: the bytes equal those of a single call on the whole tensor.
///
/// # Panics
/// On an invalid block size or wrong buffer lengths.
pub fn quantize_4bit_into<T: QuantInput>(
    kind: FourBit,
    x: &[T],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
) {
    quantize_4bit_into_with(cpu::level(), kind, x, block_size, packed, absmax);
}

/// [`quantize_4bit_into`] with an explicit instruction-set level (benchmarks, cross-checks).
///
/// # Panics
/// As [`quantize_4bit_into`], and if this CPU does not support `kernel`.
pub fn quantize_4bit_into_with<T: QuantInput>(
    kernel: Level,
    kind: FourBit,
    x: &[T],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
) {
    check_layout(x.len(), block_size, packed.len(), absmax.len());
    let q = Quantizer::get(kind);
    if let Some(x) = T::as_f32_slice(x) {
        quantize_f32(kernel, q, x, block_size, packed, absmax);
        return;
    }
    let mut buf = [0.0f32; CONVERT_CHUNK];
    let per_chunk = CONVERT_CHUNK / block_size;
    for ((xc, pc), ac) in x
        .chunks(CONVERT_CHUNK)
        .zip(packed.chunks_mut(CONVERT_CHUNK / 2))
        .zip(absmax.chunks_mut(per_chunk))
    {
        let b = &mut buf[..xc.len()];
        for (d, &s) in b.iter_mut().zip(xc) {
            *d = s.to_f32();
        }
        quantize_f32(kernel, q, b, block_size, pc, ac);
    }
}

/// [`quantize_4bit_into`] spread over the current rayon pool; the output does not depend on
/// the number of threads.
///
/// # Panics
/// As [`quantize_4bit_into`].
pub fn quantize_4bit_into_par<T: QuantInput>(
    kind: FourBit,
    x: &[T],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
) {
    check_layout(x.len(), block_size, packed.len(), absmax.len());
    let chunk = PAR_CHUNK.max(block_size);
    let kernel = cpu::level();
    x.par_chunks(chunk)
        .zip(packed.par_chunks_mut(chunk / 2))
        .zip(absmax.par_chunks_mut(chunk / block_size))
        .for_each(|((xc, pc), ac)| quantize_4bit_into_with(kernel, kind, xc, block_size, pc, ac));
}

/// Quantizes f32 values: all full blocks with `kernel`, then the ragged tail.
fn quantize_f32(
    kernel: Level,
    q: &Quantizer,
    x: &[f32],
    block_size: usize,
    packed: &mut [u8],
    absmax: &mut [f32],
) {
    let full = x.len() / block_size;
    let (xf, xt) = x.split_at(full * block_size);
    let (pf, pt) = packed.split_at_mut(full * block_size / 2);
    let (af, at) = absmax.split_at_mut(full);
    full_blocks(kernel, q, xf, block_size, pf, af);
    if let Some(am) = at.first_mut() {
        tail_block(q, xt, pt, am);
    }
}

/// Largest |x| of a block; the first NaN (sign cleared) if there is one.
#[inline]
pub(super) fn block_absmax(x: &[f32]) -> f32 {
    let mut m = 0.0f32;
    for v in x {
        let a = v.abs();
        if a.is_nan() {
            return a;
        }
        if a > m {
            m = a;
        }
    }
    m
}

/// `max(absmax, 1e-38)` as torch's `clamp(min=...)`: NaN stays NaN.
#[inline]
pub(super) fn clamp_tiny(absmax: f32) -> f32 {
    if absmax < TINY {
        TINY
    } else {
        absmax
    }
}

/// The final partial block: divides by the clamped absmax, which is what it stores.
///
/// bitsandbytes takes this absmax with torch's whole-tensor `max()`, whose vector kernel
/// returns an all-ones NaN (`0xffff_ffff`) when two or more values include a NaN.
fn tail_block(q: &Quantizer, x: &[f32], packed: &mut [u8], absmax: &mut f32) {
    let mut m = block_absmax(x);
    if m.is_nan() && x.len() > 1 {
        m = f32::from_bits(u32::MAX);
    }
    let m = clamp_tiny(m);
    *absmax = m;
    for (p, pair) in packed.iter_mut().zip(x.chunks(2)) {
        let second = pair.get(1).map_or(q.pad_code(), |&v| q.code(v / m));
        *p = pack_pair(q.code(pair[0] / m), second);
    }
}

/// Dequantizes `n` values: `table[code] * absmax[i / block_size]` in f32 (FP4 code 8 gives
/// `-0.0`, as in bitsandbytes' native kernels).
///
/// # Panics
/// If the buffers are too short for `n` values or `block_size` is invalid.
pub fn dequantize_4bit(
    kind: FourBit,
    packed: &[u8],
    absmax: &[f32],
    block_size: usize,
    n: usize,
    out: &mut [f32],
) {
    check_layout(
        n,
        block_size,
        packed.len().min(packed_len(n)),
        absmax.len().min(num_blocks(n, block_size)),
    );
    let table = match kind {
        FourBit::Nf4 => NF4,
        FourBit::Fp4 => FP4_DEQUANT,
    };
    for ((ob, pb), &scale) in out[..n]
        .chunks_mut(block_size)
        .zip(packed.chunks(block_size / 2))
        .zip(absmax)
    {
        for (o, &byte) in ob.chunks_mut(2).zip(pb) {
            let (first, second) = unpack_pair(byte);
            o[0] = table[usize::from(first)] * scale;
            if let Some(o1) = o.get_mut(1) {
                *o1 = table[usize::from(second)] * scale;
            }
        }
    }
}

/// [`dequantize_4bit`] spread over the current rayon pool.
///
/// # Panics
/// As [`dequantize_4bit`].
pub fn dequantize_4bit_par(
    kind: FourBit,
    packed: &[u8],
    absmax: &[f32],
    block_size: usize,
    n: usize,
    out: &mut [f32],
) {
    let chunk = PAR_CHUNK.max(block_size);
    out[..n]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, oc)| {
            let start = i * chunk;
            let blocks = start / block_size..num_blocks(start + oc.len(), block_size);
            let bytes = start / 2..packed_len(start + oc.len());
            dequantize_4bit(
                kind,
                &packed[bytes],
                &absmax[blocks],
                block_size,
                oc.len(),
                oc,
            );
        });
}

//! Typed, zero-copy views of ggml blocks, laid out as the structs of ggml's `ggml-common.h`.
//!
//! Every field is a byte array (`f16` scales as `[u8; 2]`, little-endian), so each struct has
//! alignment 1 and a view over any byte slice, mmap'd or not, is valid. The sizes are checked
//! against the type table ([`GgmlType::type_size`]) at compile time, so a block layout is
//! written down once; codecs and kernels both read it through [`blocks`] / [`blocks_mut`].

use super::ggml_type::GgmlType;
use anyhow::Result;

/// Values per k-quant super-block (`QK_K` in ggml).
pub const QK_K: usize = GgmlType::Q4_K.block_size() as usize;

/// Values per block of the legacy types and IQ4_NL (`QK4_0`, `QK8_0`, ... in ggml).
pub const QK: usize = GgmlType::Q4_0.block_size() as usize;

/// A ggml block struct.
///
/// # Safety
/// Implementors are `#[repr(C)]`, consist of byte arrays only (alignment 1, no padding, every
/// bit pattern valid) and have the size of `TYPE`'s blocks. The `ggml_blocks!` macro, the
/// only implementor, checks this at compile time.
pub unsafe trait Block: Copy + 'static {
    /// The ggml type the block belongs to.
    const TYPE: GgmlType;
}

macro_rules! ggml_blocks {
    ($( $(#[$doc:meta])* $name:ident = $ty:ident { $( $(#[$fdoc:meta])* $field:ident : [$elem:ty; $len:expr] ),* $(,)? } )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(C)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: [$elem; $len], )*
        }

        impl $name {
            /// The all-zero block.
            pub const ZERO: $name = $name { $( $field: [0; $len], )* };
        }

        // SAFETY: checked just below: byte arrays only, alignment 1, the table's size.
        unsafe impl Block for $name {
            const TYPE: GgmlType = GgmlType::$ty;
        }

        const _: () = {
            assert!(std::mem::size_of::<$name>() == GgmlType::$ty.type_size() as usize);
            assert!(std::mem::align_of::<$name>() == 1);
            assert!(0 $( + std::mem::size_of::<[$elem; $len]>() )* == std::mem::size_of::<$name>());
        };
    )*};
}

ggml_blocks! {
    /// `block_q4_0`: 32 values, 4-bit levels stored +8.
    BlockQ4_0 = Q4_0 {
        /// Scale (f16).
        d: [u8; 2],
        /// Levels: value `j` in the low nibble of byte `j`, value `j + 16` in the high one.
        qs: [u8; QK / 2],
    }
    /// `block_q4_1`: 32 values, 4-bit levels with a minimum.
    BlockQ4_1 = Q4_1 {
        /// Scale (f16).
        d: [u8; 2],
        /// Minimum (f16).
        m: [u8; 2],
        /// Levels, as in [`BlockQ4_0`].
        qs: [u8; QK / 2],
    }
    /// `block_q5_0`: 32 values, 5-bit levels stored +16.
    BlockQ5_0 = Q5_0 {
        /// Scale (f16).
        d: [u8; 2],
        /// Fifth bits, one per value.
        qh: [u8; 4],
        /// Low nibbles, as in [`BlockQ4_0`].
        qs: [u8; QK / 2],
    }
    /// `block_q5_1`: 32 values, 5-bit levels with a minimum.
    BlockQ5_1 = Q5_1 {
        /// Scale (f16).
        d: [u8; 2],
        /// Minimum (f16).
        m: [u8; 2],
        /// Fifth bits, one per value.
        qh: [u8; 4],
        /// Low nibbles, as in [`BlockQ4_0`].
        qs: [u8; QK / 2],
    }
    /// `block_q8_0`: 32 signed 8-bit values and a scale.
    BlockQ8_0 = Q8_0 {
        /// Scale (f16).
        d: [u8; 2],
        /// Values.
        qs: [i8; QK],
    }
    /// `block_q2_K`: a 256-value super-block of 16 groups with 4-bit scales and mins.
    BlockQ2K = Q2_K {
        /// Per group: scale (low nibble) and min (high nibble).
        scales: [u8; QK_K / 16],
        /// 2-bit levels.
        qs: [u8; QK_K / 4],
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Super-block scale of the mins (f16).
        dmin: [u8; 2],
    }
    /// `block_q3_K`: a 256-value super-block of 16 groups with 6-bit scales.
    BlockQ3K = Q3_K {
        /// High bits of the levels.
        hmask: [u8; QK_K / 8],
        /// Low 2 bits of the levels.
        qs: [u8; QK_K / 4],
        /// 6-bit scales, packed.
        scales: [u8; 12],
        /// Super-block scale (f16).
        d: [u8; 2],
    }
    /// `block_q4_K`: a 256-value super-block of 8 groups with 6-bit scales and mins.
    BlockQ4K = Q4_K {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Super-block scale of the mins (f16).
        dmin: [u8; 2],
        /// 6-bit scales and mins, packed (see `get_scale_min_k4`).
        scales: [u8; 12],
        /// 4-bit levels: group `2i` in the low nibbles of `qs[32i..32i + 32]`, `2i + 1` in
        /// the high ones.
        qs: [u8; QK_K / 2],
    }
    /// `block_q5_K`: [`BlockQ4K`] with a fifth bit per value.
    BlockQ5K = Q5_K {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Super-block scale of the mins (f16).
        dmin: [u8; 2],
        /// 6-bit scales and mins, packed.
        scales: [u8; 12],
        /// Fifth bits.
        qh: [u8; QK_K / 8],
        /// Low nibbles.
        qs: [u8; QK_K / 2],
    }
    /// `block_q6_K`: a 256-value super-block of 16 groups with 8-bit scales.
    BlockQ6K = Q6_K {
        /// Low 4 bits of the levels.
        ql: [u8; QK_K / 2],
        /// High 2 bits of the levels.
        qh: [u8; QK_K / 4],
        /// Signed 8-bit group scales.
        scales: [i8; QK_K / 16],
        /// Super-block scale (f16).
        d: [u8; 2],
    }
    /// `block_iq4_nl`: 32 values, 4-bit indices into a non-linear table.
    BlockIq4Nl = IQ4_NL {
        /// Scale (f16).
        d: [u8; 2],
        /// Indices, as the levels of [`BlockQ4_0`].
        qs: [u8; QK / 2],
    }
    /// `block_iq2_xxs`: a 256-value super-block of 8 groups of 32; per group two `u32`:
    /// four 8-bit grid indices, then four 7-bit sign codes and a 4-bit scale.
    BlockIq2Xxs = IQ2_XXS {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Grid indices, signs and scales (`u16[QK_K / 8]` in ggml).
        qs: [u8; QK_K / 4],
    }
    /// `block_iq2_xs`: 32 `u16` of a 9-bit grid index and a 7-bit sign code, 4-bit scales
    /// per 16 values.
    BlockIq2Xs = IQ2_XS {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Grid indices and sign codes (`u16[QK_K / 8]` in ggml).
        qs: [u8; QK_K / 4],
        /// Two 4-bit scales per byte.
        scales: [u8; QK_K / 32],
    }
    /// `block_iq2_s`: 10-bit grid indices and 8 explicit sign bits per 8 values.
    BlockIq2S = IQ2_S {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Low 8 bits of the 32 grid indices, then the 32 sign bytes.
        qs: [u8; QK_K / 4],
        /// High 2 bits of the grid indices.
        qh: [u8; QK_K / 32],
        /// Two 4-bit scales per byte.
        scales: [u8; QK_K / 32],
    }
    /// `block_iq1_s`: 11-bit indices into the ternary grid, a 3-bit scale and a delta sign
    /// per 32 values.
    BlockIq1S = IQ1_S {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Low 8 bits of the grid indices.
        qs: [u8; QK_K / 8],
        /// Per 32 values (`u16` in ggml): high index bits, the scale and the delta sign.
        qh: [u8; QK_K / 16],
    }
    /// `block_iq1_m`: as [`BlockIq1S`] with 3-bit scales per 16 values and a delta sign per
    /// 8; the f16 super-block scale is spread over the top nibbles of `scales`.
    BlockIq1M = IQ1_M {
        /// Low 8 bits of the grid indices.
        qs: [u8; QK_K / 8],
        /// High 3 index bits and the delta sign of each 8 values, two per byte.
        qh: [u8; QK_K / 16],
        /// 3-bit scales (`u16[4]`) with the super-block scale in their top nibbles.
        scales: [u8; QK_K / 32],
    }
    /// `block_iq3_xxs`: a 256-value super-block of 8 groups on the 256-point IQ3 grid.
    BlockIq3Xxs = IQ3_XXS {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// 64 grid indices (8 per group of 32), then per group a little-endian `u32`:
        /// four 7-bit sign indices (`ksigns_iq2xs`) and a 4-bit scale in the top bits.
        qs: [u8; 3 * QK_K / 8],
    }
    /// `block_iq3_s`: a 256-value super-block of 8 groups on the 512-point IQ3 grid.
    BlockIq3S = IQ3_S {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// Low 8 bits of the 64 grid indices.
        qs: [u8; QK_K / 4],
        /// Ninth bits of the grid indices, one byte per group.
        qh: [u8; QK_K / 32],
        /// Sign bits, one per value.
        signs: [u8; QK_K / 8],
        /// 4-bit group scales, two per byte.
        scales: [u8; QK_K / 64],
    }
    /// `block_iq4_xs`: a 256-value super-block of IQ4_NL groups with 6-bit scales.
    BlockIq4Xs = IQ4_XS {
        /// Super-block scale (f16).
        d: [u8; 2],
        /// High 2 bits of the 8 group scales.
        scales_h: [u8; 2],
        /// Low 4 bits of the group scales.
        scales_l: [u8; QK_K / 64],
        /// Indices.
        qs: [u8; QK_K / 2],
    }
    /// `block_tq1_0`: a 256-value super-block of ternary values packed in base 3.
    BlockTq1_0 = TQ1_0 {
        /// Five trits per byte (240 values), as a fixed-point fraction of 243.
        qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
        /// Four trits per byte (the last 16 values).
        qh: [u8; QK_K / 64],
        /// Scale (f16).
        d: [u8; 2],
    }
    /// `block_tq2_0`: a 256-value super-block of ternary values, 2 bits each (stored +1).
    BlockTq2_0 = TQ2_0 {
        /// Value `32 * (4k + n) + m` in bits `2n..2n + 2` of byte `32k + m`.
        qs: [u8; QK_K / 4],
        /// Scale (f16).
        d: [u8; 2],
    }
    /// `block_mxfp4`: 32 E2M1 values with a shared power-of-two (E8M0) scale.
    BlockMxfp4 = MXFP4 {
        /// Scale exponent (E8M0).
        e: [u8; 1],
        /// E2M1 indices, as the levels of [`BlockQ4_0`].
        qs: [u8; QK / 2],
    }
    /// `block_q1_0`: 128 signs with one scale (`+d` or `-d`).
    BlockQ1_0 = Q1_0 {
        /// Scale (f16).
        d: [u8; 2],
        /// Bit `j % 8` of byte `j / 8`: 1 where value `j` is `+d`.
        qs: [u8; 16],
    }
    /// `block_q2_0`: 64 values in `{-1, 0, 1, 2} * d`, 2 bits each (stored +1).
    BlockQ2_0 = Q2_0 {
        /// Scale (f16).
        d: [u8; 2],
        /// Value `j` in bits `2 * (j % 4)..` of byte `j / 4`.
        qs: [u8; 16],
    }
}

/// The whole blocks in `bytes`; an error when the length is not a whole number of blocks.
#[inline]
pub fn blocks<B: Block>(bytes: &[u8]) -> Result<&[B]> {
    let n = block_count::<B>(bytes.len())?;
    // SAFETY: `B` has alignment 1, no padding and accepts any bytes (trait contract); the
    // slice covers exactly `n * size_of::<B>()` bytes of `bytes`.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) })
}

/// [`blocks`] for writing.
#[inline]
pub fn blocks_mut<B: Block>(bytes: &mut [u8]) -> Result<&mut [B]> {
    let n = block_count::<B>(bytes.len())?;
    // SAFETY: as in `blocks`; the borrow is unique.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) })
}

/// The whole blocks at the start of `bytes`; a trailing partial block is left out (as
/// `chunks_exact` does).
#[inline]
pub fn whole_blocks<B: Block>(bytes: &[u8]) -> &[B] {
    let n = bytes.len() / std::mem::size_of::<B>();
    // SAFETY: as in `blocks`, over the first `n` blocks.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) }
}

/// [`whole_blocks`] for writing.
#[inline]
pub fn whole_blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let n = bytes.len() / std::mem::size_of::<B>();
    // SAFETY: as in `blocks_mut`, over the first `n` blocks.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) }
}

/// Block `i` of `bytes` (a bounds-checked view, as cheap as slicing the bytes).
///
/// # Panics
/// When `bytes` holds fewer than `i + 1` blocks.
#[inline(always)]
pub fn block_at<B: Block>(bytes: &[u8], i: usize) -> &B {
    let size = std::mem::size_of::<B>();
    let b = &bytes[i * size..(i + 1) * size];
    // SAFETY: `b` is exactly one `B`, which has alignment 1 and accepts any bytes.
    unsafe { &*b.as_ptr().cast::<B>() }
}

#[inline]
fn block_count<B: Block>(len: usize) -> Result<usize> {
    let size = std::mem::size_of::<B>();
    if !len.is_multiple_of(size) {
        anyhow::bail!(
            "{} bytes are not a whole number of {} blocks ({size} bytes each)",
            len,
            B::TYPE
        );
    }
    Ok(len / size)
}

/// An f16 stored little-endian, as f32.
#[inline]
pub fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_cover_whole_blocks_at_any_offset() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1 + 2 * 144).collect();
        // An odd offset: no alignment is needed.
        let v = blocks::<BlockQ4K>(&bytes[1..]).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].d, [145, 146]);
        assert_eq!(v[0].scales[0], 5);
        assert_eq!(v[0].qs[0], 17);
        assert!(blocks::<BlockQ4K>(&bytes[..100]).is_err());
        let mut out = vec![0u8; 2 * 34];
        blocks_mut::<BlockQ8_0>(&mut out).unwrap()[1].qs[31] = -1;
        assert_eq!(out[67], 0xFF);
        assert_eq!(block_at::<BlockQ4K>(&bytes[1..], 1).d, [145, 146]);
        assert!(std::panic::catch_unwind(|| block_at::<BlockQ4K>(&bytes[1..], 2)).is_err());
        assert_eq!(whole_blocks::<BlockQ4K>(&bytes[..289]).len(), 2);
        assert_eq!(whole_blocks_mut::<BlockQ8_0>(&mut out[..67]).len(), 1);
        assert_eq!(f16_le([0x00, 0x3C]), 1.0);
        assert_eq!((QK, QK_K), (32, 256));
    }
}

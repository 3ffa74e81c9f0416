//! Fixed-width LSB-first bit packing.
//!
//! Index `i` of width `b` occupies bits `i*b .. (i+1)*b` of a little-endian
//! bit stream, where stream bit `j` is bit `j % 8` of byte `j / 8`; the least
//! significant bit of each index comes first. Unused high bits of the last byte
//! are zero.

use anyhow::{bail, Result};

/// Largest supported index width in bits.
pub const MAX_BITS: u32 = 16;

/// Bytes needed for `count` indices of `bits` bits.
pub fn packed_len(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

fn check(bits: u32, count: usize, bytes: usize) -> Result<()> {
    if bits == 0 || bits > MAX_BITS {
        bail!("index width must be 1..={MAX_BITS} bits, got {bits}");
    }
    let need = packed_len(count, bits);
    if bytes != need {
        bail!("packed buffer has {bytes} bytes, {count} indices of {bits} bits need {need}");
    }
    Ok(())
}

/// Packs `indices` (each `< 2^bits`) into `out` (exactly [`packed_len`] bytes).
pub fn pack_into(indices: &[u16], bits: u32, out: &mut [u8]) -> Result<()> {
    check(bits, indices.len(), out.len())?;
    let limit = 1u32 << bits;
    if let Some(bad) = indices.iter().find(|&&v| u32::from(v) >= limit) {
        bail!("index {bad} does not fit in {bits} bits");
    }
    pack_unchecked(indices, bits, out);
    Ok(())
}

/// Packs without validation; indices must already fit (used by the codecs' hot path).
pub(super) fn pack_unchecked(indices: &[u16], bits: u32, out: &mut [u8]) {
    // Accumulate LSB-first and flush 32 bits at a time (acc never exceeds 47 bits).
    let mut acc: u64 = 0;
    let mut nacc: u32 = 0;
    let mut pos = 0;
    for &v in indices {
        acc |= u64::from(v) << nacc;
        nacc += bits;
        if nacc >= 32 {
            out[pos..pos + 4].copy_from_slice(&(acc as u32).to_le_bytes());
            pos += 4;
            acc >>= 32;
            nacc -= 32;
        }
    }
    while nacc > 0 {
        out[pos] = acc as u8;
        pos += 1;
        acc >>= 8;
        nacc = nacc.saturating_sub(8);
    }
}

/// Packs `indices` into a new vector.
pub fn pack(indices: &[u16], bits: u32) -> Result<Vec<u8>> {
    let mut out = vec![0u8; packed_len(indices.len(), bits.clamp(1, MAX_BITS))];
    pack_into(indices, bits, &mut out)?;
    Ok(out)
}

/// Unpacks `out.len()` indices of `bits` bits from `bytes` (exactly [`packed_len`] bytes).
pub fn unpack_into(bytes: &[u8], bits: u32, out: &mut [u16]) -> Result<()> {
    check(bits, out.len(), bytes.len())?;
    unpack_unchecked(bytes, bits, out);
    Ok(())
}

/// Unpacks without validation (lengths must match).
pub(super) fn unpack_unchecked(bytes: &[u8], bits: u32, out: &mut [u16]) {
    let mask = (1u64 << bits) - 1;
    let mut acc: u64 = 0;
    let mut nacc: u32 = 0;
    let mut pos = 0;
    for o in out.iter_mut() {
        if nacc < bits {
            if let Some(w) = bytes.get(pos..pos + 4) {
                acc |= u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])) << nacc;
                pos += 4;
                nacc += 32;
            } else {
                while nacc < bits {
                    acc |= u64::from(bytes[pos]) << nacc;
                    pos += 1;
                    nacc += 8;
                }
            }
        }
        *o = (acc & mask) as u16;
        acc >>= bits;
        nacc -= bits;
    }
}

/// Unpacks `count` indices into a new vector.
pub fn unpack(bytes: &[u8], bits: u32, count: usize) -> Result<Vec<u16>> {
    let mut out = vec![0u16; count];
    unpack_into(bytes, bits, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bit_layout_is_lsb_first() {
        // 1 + 2<<3 + 3<<6 + 4<<9 + 5<<12 + 6<<15 + 7<<18 = 0x1F58D1.
        let bytes = pack(&[1, 2, 3, 4, 5, 6, 7, 0], 3).unwrap();
        assert_eq!(bytes, vec![0xD1, 0x58, 0x1F]);
        assert_eq!(unpack(&bytes, 3, 8).unwrap(), vec![1, 2, 3, 4, 5, 6, 7, 0]);
    }

    #[test]
    fn exact_layouts_other_widths() {
        assert_eq!(
            pack(&[1, 0, 1, 1, 0, 0, 0, 1, 1], 1).unwrap(),
            vec![0x8D, 0x01]
        );
        assert_eq!(pack(&[0, 1, 2, 3], 2).unwrap(), vec![0xE4]);
        assert_eq!(pack(&[0x1F, 0x01], 5).unwrap(), vec![0x3F, 0x00]);
        assert_eq!(pack(&[0xAB, 0xCD], 8).unwrap(), vec![0xAB, 0xCD]);
        // 12-bit: 0xABC then 0x123 -> bits 0xABC | 0x123 << 12 = 0x123ABC.
        assert_eq!(pack(&[0xABC, 0x123], 12).unwrap(), vec![0xBC, 0x3A, 0x12]);
        assert_eq!(pack(&[0xBEEF], 16).unwrap(), vec![0xEF, 0xBE]);
    }

    #[test]
    fn round_trip_all_widths() {
        for bits in 1..=MAX_BITS {
            let idx: Vec<u16> = (0..37u32)
                .map(|i| (2_654_435_761u32.wrapping_mul(i + 1) >> 7) as u16)
                .map(|v| (u32::from(v) & ((1u32 << bits) - 1)) as u16)
                .collect();
            let b = pack(&idx, bits).unwrap();
            assert_eq!(b.len(), packed_len(37, bits));
            assert_eq!(unpack(&b, bits, 37).unwrap(), idx);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(pack(&[8], 3).is_err());
        assert!(pack(&[0], 0).is_err());
        assert!(pack(&[0], 17).is_err());
        assert!(unpack(&[0, 0], 3, 6).is_err());
    }
}

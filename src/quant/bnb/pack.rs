//! Nibble packing: two 4-bit codes per byte, the first element in the high nibble.

/// Bytes needed for `n` packed 4-bit codes (an odd count gets one padding nibble).
#[inline]
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// Packs two codes; `first` goes to the high nibble.
#[inline(always)]
pub fn pack_pair(first: u8, second: u8) -> u8 {
    (first << 4) | (second & 0x0f)
}

/// Splits a byte into its (first, second) codes.
#[inline(always)]
pub fn unpack_pair(byte: u8) -> (u8, u8) {
    (byte >> 4, byte & 0x0f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for a in 0..16 {
            for b in 0..16 {
                assert_eq!(unpack_pair(pack_pair(a, b)), (a, b));
            }
        }
        assert_eq!(pack_pair(0xA, 0x3), 0xA3);
        assert_eq!(packed_len(0), 0);
        assert_eq!(packed_len(7), 4);
    }
}

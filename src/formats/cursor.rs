//! A bounds-checked little-endian cursor over a byte slice (usually a memory map).
//!
//! Every read checks the remaining length first and fails with an [`InvalidInput`]
//! naming the offset, so a truncated or lying file can never cause a panic or an
//! out-of-bounds read. [`Cursor::capacity_for`] bounds vector pre-allocation by what the
//! remaining bytes could possibly hold, so an absurd count never turns into a huge
//! allocation.
//!
//! [`InvalidInput`]: crate::error::InvalidInput

use crate::invalid;
use anyhow::Result;

/// Little-endian reader over a borrowed slice with a position.
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Starts reading `data` at offset 0.
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    /// Current offset from the start of the slice.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes from offset `start` to the current position (empty when `start` is not
    /// before it).
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.data[start.min(self.pos)..self.pos]
    }

    /// Bytes left after the current position.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Takes the next `n` bytes; `what` names them in the error.
    pub fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(invalid!(kind: Truncated,
                "truncated file: {what} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            ));
        }
        let n = n as usize;
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `f32`.
    pub fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `f64`.
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// The largest pre-allocation that `count` items of at least `min_item_bytes` each
    /// can justify given the bytes left: never more than the file could hold.
    pub fn capacity_for(&self, count: u64, min_item_bytes: usize) -> usize {
        let fit = self.remaining() / min_item_bytes.max(1);
        count.min(fit as u64) as usize
    }

    /// Fails unless `count` items of at least `min_item_bytes` each can fit in the rest.
    pub fn check_count(&self, count: u64, min_item_bytes: usize, what: &str) -> Result<()> {
        let fit = (self.remaining() / min_item_bytes.max(1)) as u64;
        if count > fit {
            return Err(invalid!(kind: Implausible,
                "implausible {what} count {count} at offset {}: the {} bytes left hold at most {fit}",
                self.pos,
                self.remaining()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_reports_truncation() {
        let bytes = [1u8, 0, 0, 0, 2, 0];
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.u32("a").unwrap(), 1);
        assert_eq!(c.u16("b").unwrap(), 2);
        let err = c.u8("tail").unwrap_err();
        let kind = crate::error::invalid_kind(&err);
        assert_eq!(kind, Some(crate::error::InvalidKind::Truncated), "{err}");
        assert!(err.to_string().contains("offset 6"), "{err}");
    }

    #[test]
    fn huge_take_and_counts_are_rejected_without_allocating() {
        let bytes = [0u8; 16];
        let mut c = Cursor::new(&bytes);
        assert!(c.take(u64::MAX, "x").is_err());
        assert!(c.check_count(1 << 60, 24, "tensor").is_err());
        assert_eq!(c.capacity_for(1 << 60, 8), 2);
        assert!(c.check_count(2, 8, "kv").is_ok());
    }
}

//! Large read-mostly buffers (repacked weights) on transparent huge pages where the
//! kernel allows them (`MADV_HUGEPAGE`): a GEMV streams its weights once, and 2 MiB pages
//! spare it a page walk every 4 KiB.

use std::ops::{Deref, DerefMut};

/// A zero-initialised byte buffer in its own anonymous mapping, advised to use huge
/// pages (Linux; elsewhere the advice is skipped).
pub struct HugeBuf {
    map: memmap2::MmapMut,
    len: usize,
}

impl HugeBuf {
    /// `len` zero bytes. Panics only where the system cannot map `len` bytes (as a
    /// `Vec` would abort).
    pub fn zeroed(len: usize) -> HugeBuf {
        let map = memmap2::MmapMut::map_anon(len.max(1)).expect("anonymous memory map");
        // Only advice: where huge pages are off, the buffer stays on 4 KiB pages.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        HugeBuf { map, len }
    }
}

impl Clone for HugeBuf {
    fn clone(&self) -> HugeBuf {
        let mut copy = HugeBuf::zeroed(self.len);
        copy.copy_from_slice(self);
        copy
    }
}

impl Deref for HugeBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl DerefMut for HugeBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_buffers_are_zeroed_writable_and_of_their_length() {
        for len in [0, 1, 4 << 20] {
            let mut b = HugeBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0));
            if len > 0 {
                b[len - 1] = 7;
                assert_eq!(b[len - 1], 7);
            }
        }
    }
}

//! The fixed 128-byte v2 header.
//!
//! ```text
//! off  size  field
//!   0     4  magic "QNAT"
//!   4     4  version (u32) = 2
//!   8     4  header_size (u32) = 128
//!  12     4  flags (u32) = 0
//!  16     8  data_offset (u64) = 128
//!  24     8  data_size (u64), a multiple of 64
//!  32     8  metadata_offset (u64) = data_offset + data_size
//!  40     8  metadata_size (u64)
//!  48     4  tensor_count (u32)
//!  52     4  alignment (u32) = 64
//!  56     8  file_size (u64) = metadata_offset + metadata_size
//!  64    32  sha256 of the metadata bytes
//!  96    32  sha256 of header bytes 0..96
//! ```

use super::{ALIGNMENT, HEADER_SIZE, MAGIC, VERSION};
use crate::bail_invalid;
use crate::formats::cursor::Cursor;
use anyhow::Result;
use sha2::{Digest, Sha256};

/// Bytes of the header covered by the header checksum.
const HASHED: usize = 96;

/// A decoded, validated v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Format version (2).
    pub version: u32,
    /// Header size in bytes (128).
    pub header_size: u32,
    /// Flags (0; no flag is defined in v2).
    pub flags: u32,
    /// Absolute offset of the data section (128).
    pub data_offset: u64,
    /// Size of the data section including the padding after its last section.
    pub data_size: u64,
    /// Absolute offset of the metadata JSON.
    pub metadata_offset: u64,
    /// Size of the metadata JSON in bytes.
    pub metadata_size: u64,
    /// Number of tensors in the directory.
    pub tensor_count: u32,
    /// Section alignment (64).
    pub alignment: u32,
    /// Total file size.
    pub file_size: u64,
    /// SHA-256 of the metadata bytes.
    pub metadata_sha256: [u8; 32],
}

impl Header {
    /// A header for the given section sizes; the data section starts right after it.
    pub(crate) fn new(
        data_size: u64,
        metadata_size: u64,
        tensor_count: u32,
        metadata_sha256: [u8; 32],
    ) -> Option<Header> {
        let metadata_offset = HEADER_SIZE.checked_add(data_size)?;
        Some(Header {
            version: VERSION,
            header_size: HEADER_SIZE as u32,
            flags: 0,
            data_offset: HEADER_SIZE,
            data_size,
            metadata_offset,
            metadata_size,
            tensor_count,
            alignment: ALIGNMENT as u32,
            file_size: metadata_offset.checked_add(metadata_size)?,
            metadata_sha256,
        })
    }

    /// The 128 header bytes, header checksum included.
    pub fn encode(&self) -> [u8; HEADER_SIZE as usize] {
        let mut b = [0u8; HEADER_SIZE as usize];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.header_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_size.to_le_bytes());
        b[32..40].copy_from_slice(&self.metadata_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.metadata_size.to_le_bytes());
        b[48..52].copy_from_slice(&self.tensor_count.to_le_bytes());
        b[52..56].copy_from_slice(&self.alignment.to_le_bytes());
        b[56..64].copy_from_slice(&self.file_size.to_le_bytes());
        b[64..96].copy_from_slice(&self.metadata_sha256);
        let digest: [u8; 32] = Sha256::digest(&b[..HASHED]).into();
        b[96..128].copy_from_slice(&digest);
        b
    }

    /// Decodes and validates the header of a whole file held in `data`: magic, version,
    /// header checksum, fixed fields, and every offset and size against `data.len()`.
    pub fn decode(data: &[u8]) -> Result<Header> {
        let mut c = Cursor::new(data);
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            bail_invalid!(kind: BadMagic, "bad magic {magic:02x?}: not a QNAT file");
        }
        let version = c.u32("version")?;
        match version {
            VERSION if super::qlora::detect(data).is_some() => {
                bail_invalid!(kind: UnsupportedVersion,
                    "this is qlora-rs's QNAT \"version 2\" (28-byte header, per-tensor flags), not qforge's QNAT v2; read it with qnat::qlora or migrate it to version 2"
                )
            }
            VERSION => {}
            1 => bail_invalid!(kind: UnsupportedVersion,
                "QNAT version 1 (qlora-rs export) has no reliable offsets or checksums; migrate it to version 2"
            ),
            v => {
                bail_invalid!(kind: UnsupportedVersion, "unsupported QNAT version {v} (this reader knows version 2)")
            }
        }
        let file_len = data.len() as u64;
        if file_len < HEADER_SIZE {
            bail_invalid!(kind: Truncated,
                "truncated file: {file_len} bytes, less than the {HEADER_SIZE}-byte QNAT header"
            );
        }
        let digest: [u8; 32] = Sha256::digest(&data[..HASHED]).into();
        if digest[..] != data[HASHED..HEADER_SIZE as usize] {
            bail_invalid!(kind: Checksum, "header checksum mismatch: the QNAT header is corrupted");
        }
        let header_size = c.u32("header size")?;
        let flags = c.u32("flags")?;
        let data_offset = c.u64("data offset")?;
        let data_size = c.u64("data size")?;
        let metadata_offset = c.u64("metadata offset")?;
        let metadata_size = c.u64("metadata size")?;
        let tensor_count = c.u32("tensor count")?;
        let alignment = c.u32("alignment")?;
        let file_size = c.u64("file size")?;
        let mut metadata_sha256 = [0u8; 32];
        metadata_sha256.copy_from_slice(c.take(32, "metadata sha256")?);

        if u64::from(header_size) != HEADER_SIZE {
            bail_invalid!(kind: BadLayout, "header size {header_size}, expected {HEADER_SIZE}");
        }
        if flags != 0 {
            bail_invalid!(kind: UnsupportedVersion, "unknown header flags {flags:#x} (version 2 defines none)");
        }
        if u64::from(alignment) != ALIGNMENT {
            bail_invalid!(kind: BadLayout, "alignment {alignment}, expected {ALIGNMENT}");
        }
        if file_len < file_size {
            bail_invalid!(kind: Truncated,
                "truncated file: the header says {file_size} bytes but the file has {file_len}"
            );
        }
        if file_len > file_size {
            bail_invalid!(kind: BadLayout,
                "{} unexpected bytes after the end of the file ({file_size} bytes per the header)",
                file_len - file_size
            );
        }
        if data_offset != HEADER_SIZE {
            bail_invalid!(kind: BadLayout, "data section at offset {data_offset}, expected {HEADER_SIZE}");
        }
        if data_size % ALIGNMENT != 0 {
            bail_invalid!(kind: BadLayout, "data section size {data_size} is not a multiple of {ALIGNMENT}");
        }
        if data_offset.checked_add(data_size) != Some(metadata_offset) {
            bail_invalid!(kind: BadLayout,
                "metadata offset {metadata_offset} does not follow the data section ({data_offset} + {data_size})"
            );
        }
        if metadata_offset.checked_add(metadata_size) != Some(file_size) {
            bail_invalid!(kind: BadLayout,
                "metadata at {metadata_offset} + {metadata_size} bytes does not end at the file size {file_size}"
            );
        }
        Ok(Header {
            version,
            header_size,
            flags,
            data_offset,
            data_size,
            metadata_offset,
            metadata_size,
            tensor_count,
            alignment,
            file_size,
            metadata_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let h = Header::new(64, 10, 3, [7; 32]).unwrap();
        let mut file = h.encode().to_vec();
        file.resize(128 + 64 + 10, 0);
        assert_eq!(Header::decode(&file).unwrap(), h);
        assert_eq!(&file[0..4], b"QNAT");
        assert_eq!(h.file_size, 202);
    }

    #[test]
    fn overflowing_sizes_are_refused() {
        assert!(Header::new(u64::MAX - 10, 10, 0, [0; 32]).is_none());
    }
}

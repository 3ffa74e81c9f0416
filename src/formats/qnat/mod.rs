//! QNAT v2: qforge's native quantized-checkpoint format (spec: `docs/QNAT.md`).
//!
//! ```text
//! offset 0     header, 128 bytes (fixed; written last, by seeking back)
//! offset 128   data section: every tensor's sections, each 64-byte aligned, zero padded
//! metadata_offset   metadata: UTF-8 JSON (model info + tensor directory with sha256s)
//! ```
//!
//! - [`QnatWriter`] streams tensors section by section (chunks of any size), hashing on the
//!   fly; the metadata goes after the data and the header is written last.
//! - [`parse_index`] validates header and metadata completely (a file is opened and
//!   memory-mapped through [`TensorSource`](crate::formats::TensorSource)); the
//!   [`QnatIndex`] hands out aligned `&[u8]` slices of sections without copying, and
//!   [`QnatIndex::verify`] recomputes every tensor's SHA-256.
//! - [`qlora`] reads the QNAT files of qlora-rs (its v1 and its version 2 layouts) as
//!   they are, decodes them as qlora-rs does, and migrates
//!   them to v2.

mod gguf_kv;
mod header;
mod layout;
pub mod qlora;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use header::Header;
pub use layout::{
    ComputeDtype, ModelInfo, Scheme, Section, SectionDtype, SectionRole, SourceDigest, TensorEntry,
    TensorHeader,
};
pub use reader::{parse_index, QnatIndex, Summary, TensorCheck, TensorSummary};
pub use writer::QnatWriter;

/// The first four bytes of every QNAT file (v1 and v2).
pub const MAGIC: &[u8; 4] = b"QNAT";
/// The format version this module reads and writes.
pub const VERSION: u32 = 2;
/// Size of the fixed v2 header in bytes.
pub const HEADER_SIZE: u64 = 128;
/// Alignment of every section (and of the data and metadata sections) in bytes.
pub const ALIGNMENT: u64 = 64;
/// Most dimensions a tensor shape may have.
pub const MAX_DIMS: usize = 8;
/// Nested block size qforge uses for double quantization (bitsandbytes' 256).
pub const DEFAULT_NESTED_BLOCK: u64 = 256;

/// `n` rounded up to a multiple of [`ALIGNMENT`]; `None` on overflow.
pub(crate) fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGNMENT - 1).map(|m| m & !(ALIGNMENT - 1))
}

pub(crate) use crate::formats::atomic::hex;

/// Parses 64 lower-case hex digits into a digest.
pub(crate) fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

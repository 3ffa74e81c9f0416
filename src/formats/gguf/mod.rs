//! GGUF: llama.cpp's model file format (versions 2 and 3 read, version 3 written).
//!
//! Why our own code rather than a crate: candle-core's `gguf_file` can neither write
//! tensor data as a stream nor read IQ/TQ/MXFP4/NVFP4 types, and `ggus` (the one
//! maintained alternative) parses into its own owned structures without our file-size
//! validation and keeps no byte-exact string values. GGUF is small (a header of
//! length-prefixed records followed by aligned tensor data), so a few hundred lines of
//! ours give exact control over validation, metadata order and streaming output.

pub mod reader;
pub mod split;
pub mod value;
pub mod writer;

pub use reader::{read_header, read_header_with, Arrays, GgufHeader, GgufTensorInfo};
pub use value::{RawArray, Value, ValueType};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;

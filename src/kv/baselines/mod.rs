//! Baseline codecs behind [`super::codec::KvCodec`].
//!
//! * [`turbo`]: TurboQuant-style scalar codec (rotation + per-coordinate Lloyd-Max
//!   + fp16 norm), which is [`super::codec::VqCodec`] with block_dim 1.
//! * [`kivi`]: KIVI-style asymmetric quantization, keys per channel over token
//!   groups, values per token over channel groups.
//! * [`ggml_blocks`]: ggml `q8_0` / `q4_0` blocks through qforge's exact ggml codecs.
//! * [`choice`]: which of them `verify --compare` measures next to a profile.

pub mod choice;
pub mod ggml_blocks;
pub mod kivi;
pub mod turbo;

pub use ggml_blocks::{q4_0, q8_0, GgmlBlocks};
pub use kivi::{Kivi, KiviAxis};
pub use turbo::{turboquant, turboquant_params};

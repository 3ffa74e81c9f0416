//! KV-cache compression with FibQuant-style vector quantization.
//!
//! Pipeline per KV row `x` (head_dim `d`): store `||x||` as fp16, rotate
//! `x/||x||` with a seeded randomized Walsh-Hadamard transform (padded to
//! `D = next_pow2(d)`), split into k-blocks, replace each block by the index of
//! its nearest codeword in an explicit radial-angular codebook (Beta-quantile
//! radii × Fibonacci / Roberts-Kronecker directions, Lloyd-refined), and pack
//! the indices LSB-first. Bits per value: `(16 + (D/k)·log2 N) / d`.
//!
//! Entry points for a CLI:
//! * build: [`profile::build_profile`] with a [`profile::ProfileSpec`] and optional
//!   calibration [`tensor::KvData`]; write [`profile::KvProfile::to_json`].
//! * verify: [`profile::KvProfile::from_json`] (parses and validates every digest),
//!   then [`receipt::evaluate`] on evaluation KV + [`tensor::Queries`]; write
//!   [`receipt::Receipt::to_json`]; `receipt.verdict` is the outcome.
//! * encode/decode caches: [`paging::PagedCodec`].
//! * baselines behind [`codec::KvCodec`]: [`baselines`], compared with
//!   [`receipt::round_trip_kv`] + [`receipt::compare_kv`].
//!
//! The `kv-profile` commands run [`run::build`] and [`run::verify`], with the KV files
//! and shapes of [`io`].
//!
//! Formats and recipes are documented in `docs/kv-profile.md`.

pub mod axis;
pub mod baselines;
pub mod capture;
pub mod codebook;
pub mod codec;
pub mod digest;
pub mod directions;
pub mod forward;
pub mod io;
pub mod lloyd;
pub mod metrics;
pub mod pack;
pub mod paging;
pub mod prng;
pub mod profile;
pub mod receipt;
pub mod rotation;
pub mod run;
pub mod search;
pub mod special;
pub mod symeig;
pub mod synth;
pub mod tensor;
pub mod weights;

pub use codebook::Codebook;
pub use codec::{KvCodec, VqCodec, VqParams};
pub use metrics::QualityMetrics;
pub use paging::{EncodedKv, PagedCodec};
pub use profile::{build_profile, KvProfile, KvShape, ProfileSpec};
pub use receipt::{evaluate, Receipt, Verdict};
pub use tensor::{KvData, KvRole, LayerKv, Matrix, Queries};

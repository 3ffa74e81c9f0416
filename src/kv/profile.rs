//! The KV profile (`qforge.kv-profile/1`): shape, codec parameters, page
//! geometry, protected regions, fallback policy, quality budget, calibration
//! digest, the embedded codebook, and SHA-256 digests of every part.
//!
//! Digest recipe ([`PartDigests`]): each part's digest is the lowercase hex
//! SHA-256 of its canonical JSON (see `digest.rs`: keys sorted by UTF-8 bytes,
//! no whitespace, serde_json number formatting):
//! `shape`, `codec`, `pages`, `protected`, `fallback`, `budget` are the JSON
//! values of those fields; `calibration` is the JSON of `calibration_digest`
//! (`null` or the hex string); `codebook` is the SHA-256 of the raw codebook
//! bytes (equal to `codebook.sha256`); `profile` is the canonical JSON of the
//! whole profile object with the `digests` key removed. Digests detect
//! accidental or naive edits; they are not signatures.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::axis::{AxisPolicy, ChannelMaps};
use super::codebook::Codebook;
use super::codec::{VqCodec, VqParams};
use super::digest::{
    canonical_digest, canonical_json_value, f32_stream_digest, from_hex, sha256_hex, to_hex,
};
use super::rotation::{padded_dim, MAX_DIM};
use super::tensor::{KvData, KvRole, Queries};

/// Profile schema identifier.
/// fib-quant's KV profile schema (`schema_version`), refused with a reason on load.
pub const FIB_QUANT_SCHEMA: &str = "fib_quant_kv_compression_profile_v1";

pub const PROFILE_SCHEMA: &str = "qforge.kv-profile/1";
/// Codebook blob format identifier.
pub const CODEBOOK_FORMAT: &str = "qforge.kv-codebook/1";
/// Rotation identifier recorded in the codec parameters.
pub const ROTATION_ID: &str = "rht-splitmix64";
/// Tag of the calibration-data digest stream.
pub const CALIBRATION_TAG: &str = "qforge.kv-calibration/1";

/// Where RoPE was applied when the KV was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RopeState {
    /// Keys captured before RoPE.
    PreRope,
    /// Keys captured after RoPE (what a KV cache usually holds).
    PostRope,
    /// The model has no rotary embedding.
    None,
}

/// KV cache shape the profile is built for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvShape {
    /// Layers.
    pub layers: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Query heads per layer (multiple of `kv_heads`).
    pub query_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Nominal context length (evaluation data may differ).
    pub tokens: usize,
    /// Which tensors are compressed.
    pub role: KvRole,
    /// RoPE state of the keys.
    pub rope: RopeState,
    /// RoPE base, if known.
    pub rope_theta: Option<f64>,
}

/// Codec family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodecKind {
    /// Vector codebook, block_dim 2..=8.
    Fibquant,
    /// Scalar codebook, block_dim 1.
    Turboquant,
}

/// Codec parameters (all derived values are re-checked on validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecParams {
    /// Codec family.
    pub kind: CodecKind,
    /// Rotation identifier, always [`ROTATION_ID`].
    pub rotation: String,
    /// Seed of rotation signs and training samples.
    pub seed: u64,
    /// Block dimension k.
    pub block_dim: usize,
    /// Codebook size N.
    pub codebook_size: usize,
    /// `log2 N`.
    pub index_bits: u32,
    /// Padded dimension D.
    pub padded_dim: usize,
    /// `(16 + (D/k)·log2 N) / head_dim`.
    pub bits_per_value: f64,
    /// Lloyd iterations used in training.
    pub lloyd_iterations: u32,
    /// Training blocks used in training.
    pub training_blocks: usize,
    /// Rows store `||x|| / <y, ŷ>` instead of `||x||` (§1); omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unbiased_norm: bool,
    /// Bits of each row's norm, 16 (fp16) or 8 (log scale, [`super::codec::NormCode`]);
    /// omitted when 16.
    #[serde(default = "fp16_norm_bits", skip_serializing_if = "is_fp16_norm")]
    pub norm_bits: u32,
}

fn fp16_norm_bits() -> u32 {
    16
}

fn is_fp16_norm(bits: &u32) -> bool {
    *bits == 16
}

/// Page geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageGeometry {
    /// Tokens per page.
    pub tokens_per_page: usize,
}

/// Regions stored raw (bit-exact).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedRegions {
    /// First tokens of every head (attention sinks).
    pub first_tokens: usize,
    /// Last tokens of every head (recent window).
    pub last_tokens: usize,
    /// Layers kept entirely raw.
    pub layers: Vec<usize>,
    /// KV heads kept entirely raw (in every layer).
    pub heads: Vec<usize>,
}

impl ProtectedRegions {
    /// Whether token `t` of `tokens` is in the first/last window.
    pub fn token(&self, t: usize, tokens: usize) -> bool {
        t < self.first_tokens || t + self.last_tokens >= tokens
    }

    /// Whether a whole (layer, head) stream is raw.
    pub fn stream(&self, layer: usize, head: usize) -> bool {
        self.layers.contains(&layer) || self.heads.contains(&head)
    }
}

/// What to do when a page cannot be encoded (non-finite values, norm above fp16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackPolicy {
    /// Store the page raw and record why.
    KeepRaw,
    /// Return an error.
    Fail,
}

/// Quality budget; `None` items are not checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityBudget {
    /// `k` for top-k disagreement.
    pub top_k: usize,
    /// Maximum key-logit MSE.
    pub max_key_logit_mse: Option<f64>,
    /// Maximum mean attention total variation.
    pub max_attention_tv: Option<f64>,
    /// Maximum mean top-k disagreement.
    pub max_topk_disagreement: Option<f64>,
    /// Maximum value-aggregation MSE.
    pub max_value_agg_mse: Option<f64>,
    /// Maximum perplexity increase of the model run with the encoded cache over the fp16
    /// cache (`kv-profile verify --model`); omitted from the JSON when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_perplexity_delta: Option<f64>,
}

impl Default for QualityBudget {
    fn default() -> Self {
        Self {
            top_k: 8,
            max_key_logit_mse: None,
            max_attention_tv: None,
            max_topk_disagreement: None,
            max_value_agg_mse: None,
            max_perplexity_delta: None,
        }
    }
}

/// The embedded codebook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodebookBlob {
    /// Always [`CODEBOOK_FORMAT`].
    pub format: String,
    /// Always `"hex"` (lowercase).
    pub encoding: String,
    /// Byte length.
    pub bytes: usize,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// The bytes, hex-encoded.
    pub data: String,
}

/// An extra codec of a profile whose streams use several codecs ([`Allocation`]): its
/// parameters and its codebook, checked like the profile's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Codec parameters (same rules as [`KvProfile::codec`]).
    pub codec: CodecParams,
    /// The codebook.
    pub codebook: CodebookBlob,
}

/// Which codec codes each layer's keys and values: `0` is the profile's `codec`, `i ≥ 1`
/// its `tiers[i − 1]`. One entry per layer in each list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// Codec of each layer's keys.
    pub keys: Vec<usize>,
    /// Codec of each layer's values.
    pub values: Vec<usize>,
}

impl Allocation {
    /// The codec index of a stream.
    pub fn of(&self, layer: usize, key: bool) -> usize {
        let list = if key { &self.keys } else { &self.values };
        list.get(layer).copied().unwrap_or(0)
    }
}

/// Digests of every part (see module docs for the recipe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartDigests {
    /// Digest of `shape`.
    pub shape: String,
    /// Digest of `codec`.
    pub codec: String,
    /// Digest of `pages`.
    pub pages: String,
    /// Digest of `protected`.
    pub protected: String,
    /// Digest of `fallback`.
    pub fallback: String,
    /// Digest of `budget`.
    pub budget: String,
    /// Digest of `calibration_digest`.
    pub calibration: String,
    /// SHA-256 of the codebook bytes.
    pub codebook: String,
    /// Digest of `[axis, channels]`; absent for a `per_token` profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis: Option<String>,
    /// Digest of `[tiers, allocation]`; absent for a profile with one codec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<String>,
    /// Digest of the whole profile without `digests`.
    pub profile: String,
}

/// A complete, self-verifying KV profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvProfile {
    /// Always [`PROFILE_SCHEMA`].
    pub schema: String,
    /// KV shape.
    pub shape: KvShape,
    /// Codec parameters.
    pub codec: CodecParams,
    /// Page geometry.
    pub pages: PageGeometry,
    /// Protected regions.
    pub protected: ProtectedRegions,
    /// Fallback policy.
    pub fallback: FallbackPolicy,
    /// Quality budget.
    pub budget: QualityBudget,
    /// SHA-256 of the calibration data ([`calibration_digest`]) or `null`.
    pub calibration_digest: Option<String>,
    /// The codebook.
    pub codebook: CodebookBlob,
    /// Axis policy ([`super::axis`]); omitted when `per_token`.
    #[serde(default, skip_serializing_if = "AxisPolicy::is_per_token")]
    pub axis: AxisPolicy,
    /// Per-channel maps learned from calibration; omitted when the policy has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<ChannelMaps>,
    /// Extra codecs ([`Allocation`]); omitted when the profile has one codec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// Which codec codes each stream; omitted (every stream uses `codec`) without tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
    /// Part digests.
    pub digests: PartDigests,
}

/// Codec choice for [`build_profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct CodecSpec {
    /// Family.
    pub kind: CodecKind,
    /// Seed.
    pub seed: u64,
    /// Block dimension (1 for turboquant).
    pub block_dim: usize,
    /// Codebook size (power of two).
    pub codebook_size: usize,
    /// Lloyd iterations (`None`: default 25).
    pub lloyd_iterations: Option<u32>,
    /// Training blocks (`None`: default from [`VqParams::new`]).
    pub training_blocks: Option<usize>,
    /// Store the unbiased norm (see [`VqCodec::set_unbiased`]).
    pub unbiased_norm: bool,
    /// Bits per row norm, 16 or 8 ([`VqCodec::set_norm_bits`]).
    pub norm_bits: u32,
}

impl Default for CodecSpec {
    /// FibQuant k = 4, N = 256 (2.125 bits/value at d = 128), seed 0.
    fn default() -> Self {
        Self {
            kind: CodecKind::Fibquant,
            seed: 0,
            block_dim: 4,
            codebook_size: 256,
            lloyd_iterations: None,
            training_blocks: None,
            unbiased_norm: false,
            norm_bits: 16,
        }
    }
}

/// Everything needed to build a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileSpec {
    /// KV shape.
    pub shape: KvShape,
    /// Codec choice.
    pub codec: CodecSpec,
    /// Page geometry.
    pub pages: PageGeometry,
    /// Protected regions.
    pub protected: ProtectedRegions,
    /// Fallback policy.
    pub fallback: FallbackPolicy,
    /// Quality budget.
    pub budget: QualityBudget,
    /// Axis policy (a policy with channel maps needs calibration KV).
    pub axis: AxisPolicy,
    /// Extra codecs (each with its own codebook, trained on the calibration rows of the
    /// streams allocated to it); empty for a profile with one codec.
    pub tiers: Vec<CodecSpec>,
    /// Which codec codes each stream; needed with `tiers`.
    pub allocation: Option<Allocation>,
    /// Learn each channel map in its own basis ([`super::axis::ChannelMap::learn_basis`]).
    pub channel_basis: bool,
}

impl ProfileSpec {
    /// Defaults: [`CodecSpec::default`], 256 tokens per page, nothing protected,
    /// keep-raw fallback, top-8 budget with no limits.
    pub fn new(shape: KvShape) -> Self {
        Self {
            shape,
            codec: CodecSpec::default(),
            pages: PageGeometry {
                tokens_per_page: 256,
            },
            protected: ProtectedRegions::default(),
            fallback: FallbackPolicy::KeepRaw,
            budget: QualityBudget::default(),
            axis: AxisPolicy::PerToken,
            tiers: Vec::new(),
            allocation: None,
            channel_basis: false,
        }
    }
}

fn vq_params(kind: CodecKind, shape: &KvShape, c: &CodecSpec) -> Result<VqParams> {
    match (kind, c.block_dim) {
        (CodecKind::Fibquant, 2..=8) | (CodecKind::Turboquant, 1) => {}
        (CodecKind::Fibquant, k) => bail!("fibquant block_dim must be in 2..=8, got {k}"),
        (CodecKind::Turboquant, k) => bail!("turboquant block_dim must be 1, got {k}"),
    }
    let mut p = VqParams::new(shape.head_dim, c.block_dim, c.codebook_size);
    p.seed = c.seed;
    if let Some(i) = c.lloyd_iterations {
        p.lloyd_iterations = i;
    }
    if let Some(t) = c.training_blocks {
        p.training_blocks = t;
    }
    p.norm_bits = c.norm_bits;
    p.validate()?;
    Ok(p)
}

/// Digest of calibration data: [`f32_stream_digest`] with tag
/// `qforge.kv-calibration/1`, dims `[layers, kv_heads, tokens, head_dim, role]`
/// (role 0 = key, 1 = value, 2 = both) and the rows of [`KvData::rows`]`(role)`.
pub fn calibration_digest(kv: &KvData, role: KvRole) -> Result<String> {
    let d = kv.dims()?;
    let role_code = match role {
        KvRole::Key => 0,
        KvRole::Value => 1,
        KvRole::Both => 2,
    };
    let dims = [d.layers, d.kv_heads, d.tokens, d.head_dim, role_code].map(|v| v as u64);
    let rows = kv.rows(role);
    Ok(f32_stream_digest(CALIBRATION_TAG, &dims, [rows.as_slice()]))
}

fn check_shape(s: &KvShape) -> Result<()> {
    if s.layers == 0 || s.kv_heads == 0 || s.query_heads == 0 || s.tokens == 0 {
        bail!("shape: layers, kv_heads, query_heads and tokens must be positive");
    }
    if !s.query_heads.is_multiple_of(s.kv_heads) {
        bail!(
            "shape: query_heads {} must be a multiple of kv_heads {}",
            s.query_heads,
            s.kv_heads
        );
    }
    if s.head_dim == 0 || s.head_dim > MAX_DIM {
        bail!(
            "shape: head_dim must be in 1..={MAX_DIM}, got {}",
            s.head_dim
        );
    }
    if let Some(t) = s.rope_theta {
        if !t.is_finite() || t <= 0.0 {
            bail!("shape: rope_theta must be finite and positive, got {t}");
        }
    }
    Ok(())
}

fn check_regions(spec_shape: &KvShape, p: &ProtectedRegions, pages: &PageGeometry) -> Result<()> {
    if pages.tokens_per_page == 0 {
        bail!("pages: tokens_per_page must be positive");
    }
    for (what, list, limit) in [
        ("layers", &p.layers, spec_shape.layers),
        ("heads", &p.heads, spec_shape.kv_heads),
    ] {
        if let Some(bad) = list.iter().find(|&&v| v >= limit) {
            bail!("protected {what}: {bad} is out of range 0..{limit}");
        }
        let mut sorted = list.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != list.len() {
            bail!("protected {what}: duplicate entries");
        }
    }
    Ok(())
}

fn check_budget(b: &QualityBudget) -> Result<()> {
    if b.top_k == 0 {
        bail!("budget: top_k must be positive");
    }
    for (name, v) in [
        ("max_key_logit_mse", b.max_key_logit_mse),
        ("max_attention_tv", b.max_attention_tv),
        ("max_topk_disagreement", b.max_topk_disagreement),
        ("max_value_agg_mse", b.max_value_agg_mse),
        ("max_perplexity_delta", b.max_perplexity_delta),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 {
                bail!("budget: {name} must be finite and >= 0, got {v}");
            }
        }
    }
    Ok(())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The recorded parameters of a codec.
fn codec_params(kind: CodecKind, p: &VqParams, unbiased_norm: bool) -> CodecParams {
    let norm_bits = p.norm_bits;
    CodecParams {
        kind,
        rotation: ROTATION_ID.to_string(),
        seed: p.seed,
        block_dim: p.block_dim,
        codebook_size: p.codebook_size,
        index_bits: p.index_bits(),
        padded_dim: p.padded_dim(),
        bits_per_value: p.bits_per_value(),
        lloyd_iterations: p.lloyd_iterations,
        training_blocks: p.training_blocks,
        unbiased_norm,
        norm_bits,
    }
}

/// Codebook bytes as the profile embeds them.
fn blob(bytes: &[u8]) -> CodebookBlob {
    CodebookBlob {
        format: CODEBOOK_FORMAT.to_string(),
        encoding: "hex".to_string(),
        bytes: bytes.len(),
        sha256: sha256_hex(bytes),
        data: to_hex(bytes),
    }
}

/// The rows of the streams of `role` that `alloc` gives to codec `tier`, layer by layer,
/// keys before values.
fn allocated_rows(kv: &KvData, role: KvRole, alloc: &Allocation, tier: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for (l, layer) in kv.layers.iter().enumerate() {
        for (key, heads) in [(true, &layer.keys), (false, &layer.values)] {
            let on = if key { role.keys() } else { role.values() };
            if on && alloc.of(l, key) == tier {
                for m in heads {
                    out.extend_from_slice(m.data());
                }
            }
        }
    }
    out
}

/// Trains the codebook (on `calibration` rows of the profile's role when
/// given) and assembles a digested profile.
pub fn build_profile(spec: &ProfileSpec, calibration: Option<&KvData>) -> Result<KvProfile> {
    build_profile_with(spec, calibration, None)
}

/// [`build_profile`] with the calibration queries that per-channel key maps are weighted
/// by ([`super::axis`]); an axis policy with key maps needs them.
pub fn build_profile_with(
    spec: &ProfileSpec,
    calibration: Option<&KvData>,
    queries: Option<&Queries>,
) -> Result<KvProfile> {
    check_shape(&spec.shape)?;
    check_regions(&spec.shape, &spec.protected, &spec.pages)?;
    check_budget(&spec.budget)?;
    let (k, v) = spec.axis.channels();
    let role = spec.shape.role;
    if spec.codec.norm_bits == 8 && ((role.keys() && !k) || (role.values() && !v)) {
        bail!(
            "8-bit norms need a channel map for every coded role (they put row norms near 1): the {:?} axis policy has none for {}",
            spec.axis,
            if role.keys() && !k { "keys" } else { "values" }
        );
    }
    let channels = match calibration {
        Some(kv) if k || v => {
            let empty = Queries { layers: Vec::new() };
            let q = match queries {
                Some(q) => q,
                None if !k => &empty,
                None => bail!(
                    "the {:?} axis policy weights key channels by calibration queries; the calibration has none",
                    spec.axis
                ),
            };
            let mut maps = ChannelMaps::learn(spec.axis, kv, q, spec.channel_basis)?;
            if spec.codec.norm_bits == 8 {
                maps.center_norms(kv);
            }
            Some(maps)
        }
        None if k || v => bail!(
            "the {:?} axis policy learns per-channel maps from calibration KV; give calibration data",
            spec.axis
        ),
        _ => None,
    };
    let mapped = match (&channels, calibration) {
        (Some(maps), Some(kv)) => Some(maps.apply(kv)),
        _ => None,
    };
    let cal_digest = match calibration {
        Some(kv) => {
            let dims = kv.dims().context("calibration data")?;
            if dims.head_dim != spec.shape.head_dim {
                bail!(
                    "calibration head_dim {} does not match shape head_dim {}",
                    dims.head_dim,
                    spec.shape.head_dim
                );
            }
            Some(calibration_digest(kv, spec.shape.role)?)
        }
        None => None,
    };
    if spec.tiers.is_empty() != spec.allocation.is_none() {
        bail!("tiers and an allocation go together: give both or neither");
    }
    let train_kv = mapped.as_ref().or(calibration);
    // Each codec trains on the calibration rows of the streams it codes (all rows of the
    // profile's role when it codes none, or without an allocation).
    let train =
        |kind: CodecKind, c: &CodecSpec, tier: usize| -> Result<(CodecParams, CodebookBlob)> {
            let params = vq_params(kind, &spec.shape, c)?;
            let rows = train_kv.map(|kv| {
                let own = spec
                    .allocation
                    .as_ref()
                    .map(|a| allocated_rows(kv, spec.shape.role, a, tier))
                    .unwrap_or_default();
                if own.is_empty() {
                    kv.rows(spec.shape.role)
                } else {
                    own
                }
            });
            let (cb, _) = params.train_codebook(rows.as_deref())?;
            Ok((
                codec_params(kind, &params, c.unbiased_norm),
                blob(&cb.to_bytes()),
            ))
        };
    let (codec, codebook) = train(spec.codec.kind, &spec.codec, 0)?;
    let tiers = spec
        .tiers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (codec, codebook) =
                train(c.kind, c, i + 1).with_context(|| format!("tier {}", i + 1))?;
            Ok(Tier { codec, codebook })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut profile = KvProfile {
        schema: PROFILE_SCHEMA.to_string(),
        shape: spec.shape.clone(),
        codec,
        pages: spec.pages.clone(),
        protected: spec.protected.clone(),
        fallback: spec.fallback,
        budget: spec.budget.clone(),
        calibration_digest: cal_digest,
        codebook,
        axis: spec.axis,
        channels,
        tiers,
        allocation: spec.allocation.clone(),
        digests: PartDigests {
            shape: String::new(),
            codec: String::new(),
            pages: String::new(),
            protected: String::new(),
            fallback: String::new(),
            budget: String::new(),
            calibration: String::new(),
            codebook: String::new(),
            axis: None,
            tiers: None,
            profile: String::new(),
        },
    };
    profile.digests = profile.compute_digests()?;
    profile.validate()?;
    Ok(profile)
}

impl KvProfile {
    /// Computes every part digest from the current contents.
    pub fn compute_digests(&self) -> Result<PartDigests> {
        let bytes = from_hex(&self.codebook.data).context("codebook data")?;
        let mut whole = serde_json::to_value(self).context("serializing profile")?;
        if let Some(obj) = whole.as_object_mut() {
            obj.remove("digests");
        }
        Ok(PartDigests {
            shape: canonical_digest(&self.shape)?,
            codec: canonical_digest(&self.codec)?,
            pages: canonical_digest(&self.pages)?,
            protected: canonical_digest(&self.protected)?,
            fallback: canonical_digest(&self.fallback)?,
            budget: canonical_digest(&self.budget)?,
            calibration: canonical_digest(&self.calibration_digest)?,
            codebook: sha256_hex(&bytes),
            axis: if self.axis.is_per_token() && self.channels.is_none() {
                None
            } else {
                Some(canonical_digest(&(&self.axis, &self.channels))?)
            },
            tiers: if self.tiers.is_empty() && self.allocation.is_none() {
                None
            } else {
                Some(canonical_digest(&(&self.tiers, &self.allocation))?)
            },
            profile: sha256_hex(canonical_json_value(&whole).as_bytes()),
        })
    }

    /// The decoded, checked codebook.
    pub fn codebook(&self) -> Result<Codebook> {
        codebook_of(&self.codebook, &self.codec)
    }

    /// Full validation: schema, every part digest, shape/codec consistency and
    /// codebook bytes. Errors say which part failed.
    pub fn validate(&self) -> Result<()> {
        if self.schema != PROFILE_SCHEMA {
            bail!(
                "unsupported profile schema {:?} (expected {PROFILE_SCHEMA})",
                self.schema
            );
        }
        let want = self.compute_digests()?;
        let pairs = [
            ("shape", &self.digests.shape, &want.shape),
            ("codec", &self.digests.codec, &want.codec),
            ("pages", &self.digests.pages, &want.pages),
            ("protected", &self.digests.protected, &want.protected),
            ("fallback", &self.digests.fallback, &want.fallback),
            ("budget", &self.digests.budget, &want.budget),
            ("calibration", &self.digests.calibration, &want.calibration),
            ("codebook", &self.digests.codebook, &want.codebook),
            ("profile", &self.digests.profile, &want.profile),
        ];
        // The parts a profile may lack (digest `None`).
        let optional = [
            ("tiers", &self.digests.tiers, &want.tiers),
            ("axis", &self.digests.axis, &want.axis),
        ];
        for (part, stored, computed) in optional {
            if stored != computed {
                bail!(
                    "profile digest mismatch for part `{part}`: stored {stored:?}, computed {computed:?}; the profile was modified after it was built"
                );
            }
        }
        for (part, stored, computed) in pairs {
            if stored != computed {
                bail!(
                    "profile digest mismatch for part `{part}`: stored {stored}, computed {computed}; the profile was modified after it was built"
                );
            }
        }
        check_shape(&self.shape)?;
        check_regions(&self.shape, &self.protected, &self.pages)?;
        check_budget(&self.budget)?;
        let s = &self.shape;
        let dims = [s.layers, s.kv_heads, s.head_dim];
        match (&self.channels, self.axis.channels()) {
            (None, (false, false)) => {}
            (Some(maps), _) => maps.check(self.axis, dims).context("channels")?,
            (None, _) => bail!("the {:?} axis policy needs channel maps", self.axis),
        }
        if let Some(d) = &self.calibration_digest {
            if !is_hex64(d) {
                bail!("calibration_digest must be 64 lowercase hex characters");
            }
        }
        check_codec(&self.shape, &self.codec).map_err(|e| anyhow::anyhow!("codec: {e:#}"))?;
        self.codebook()?;
        for (i, t) in self.tiers.iter().enumerate() {
            check_codec(&self.shape, &t.codec)
                .and_then(|_| codebook_of(&t.codebook, &t.codec))
                .map_err(|e| anyhow::anyhow!("tiers[{i}]: {e:#}"))?;
        }
        match &self.allocation {
            None if self.tiers.is_empty() => {}
            None => bail!("tiers: {} tiers but no allocation", self.tiers.len()),
            Some(_) if self.tiers.is_empty() => bail!("allocation: the profile has no tiers"),
            Some(a) => {
                for (name, list) in [("keys", &a.keys), ("values", &a.values)] {
                    if list.len() != self.shape.layers {
                        bail!(
                            "allocation.{name}: {} entries, the shape has {} layers",
                            list.len(),
                            self.shape.layers
                        );
                    }
                    if let Some(bad) = list.iter().find(|&&i| i > self.tiers.len()) {
                        bail!(
                            "allocation.{name}: codec {bad} does not exist (0..={})",
                            self.tiers.len()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Pretty JSON (the on-disk form).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).context("serializing profile")
    }

    /// Parses and fully validates a profile.
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Foreign {
            schema_version: Option<String>,
        }
        if let Ok(Foreign {
            schema_version: Some(v),
        }) = serde_json::from_str(text)
        {
            if v == FIB_QUANT_SCHEMA {
                bail!("{FIB_QUANT_SCHEMA} (fib-quant) profiles cannot be imported: fib-quant's dense QR rotation, its Lloyd codebook (named only by a digest) and its json_digest are not reproduced (docs/kv-profile.md §10)");
            }
        }
        let p: KvProfile = serde_json::from_str(text).context("parsing KV profile JSON")?;
        p.validate()?;
        Ok(p)
    }

    /// Codec name, e.g. `fibquant-k4-n256` or `turboquant-b2`; a profile with tiers joins
    /// the names of the codecs its allocation uses with `+` (keys' first).
    pub fn codec_name(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for i in self.used_codecs() {
            let name = codec_name_of(self.codec_params(i));
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names.join("+")
    }

    /// The parameters of codec `i` (0 the profile's, `i` its `tiers[i − 1]`).
    pub fn codec_params(&self, i: usize) -> &CodecParams {
        match i {
            0 => &self.codec,
            i => &self.tiers[i - 1].codec,
        }
    }

    /// The codec index of each compressed stream kind, keys' layers first, then values'.
    fn used_codecs(&self) -> Vec<usize> {
        let Some(a) = &self.allocation else {
            return vec![0];
        };
        let role = self.shape.role;
        let mut out = Vec::new();
        if role.keys() {
            out.extend(&a.keys);
        }
        if role.values() {
            out.extend(&a.values);
        }
        out
    }

    /// Nominal bits per value: the codec's, or with tiers the mean over the compressed
    /// roles' layers of each one's codec (before raw tokens, layers and heads).
    pub fn bits_per_value(&self) -> f64 {
        let used = self.used_codecs();
        used.iter()
            .map(|&i| self.codec_params(i).bits_per_value)
            .sum::<f64>()
            / used.len().max(1) as f64
    }

    /// Builds the codec from the embedded codebook (after full validation).
    pub fn codec(&self) -> Result<VqCodec> {
        Ok(self.codecs()?.swap_remove(0))
    }

    /// Every codec (the profile's, then its tiers') from the embedded codebooks, after full
    /// validation; [`Allocation::of`] indexes them.
    pub fn codecs(&self) -> Result<Vec<VqCodec>> {
        self.validate()?;
        let one = |c: &CodecParams, b: &CodebookBlob| -> Result<VqCodec> {
            let mut codec = VqCodec::new(
                &codec_name_of(c),
                self.shape.head_dim,
                c.seed,
                codebook_of(b, c)?,
            )?;
            codec.set_unbiased(c.unbiased_norm);
            codec.set_norm_bits(c.norm_bits)?;
            Ok(codec)
        };
        let mut out = vec![one(&self.codec, &self.codebook)?];
        for t in &self.tiers {
            out.push(one(&t.codec, &t.codebook)?);
        }
        Ok(out)
    }

    /// The codec index of a stream ([`Allocation::of`]; 0 without tiers).
    pub fn codec_of(&self, layer: usize, key: bool) -> usize {
        self.allocation.as_ref().map_or(0, |a| a.of(layer, key))
    }
}

/// Codec name of `c`, e.g. `fibquant-k4-n256-unbiased`.
fn codec_name_of(c: &CodecParams) -> String {
    let name = match c.kind {
        CodecKind::Fibquant => format!("fibquant-k{}-n{}", c.block_dim, c.codebook_size),
        CodecKind::Turboquant => format!("turboquant-b{}", c.index_bits),
    };
    let name = if c.unbiased_norm {
        name + "-unbiased"
    } else {
        name
    };
    if c.norm_bits == 16 {
        name
    } else {
        format!("{name}-norm{}", c.norm_bits)
    }
}

/// The rotation and derived fields of `c` against the shape.
fn check_codec(shape: &KvShape, c: &CodecParams) -> Result<()> {
    if c.rotation != ROTATION_ID {
        bail!(
            "unsupported rotation {:?} (expected {ROTATION_ID})",
            c.rotation
        );
    }
    let spec = CodecSpec {
        kind: c.kind,
        seed: c.seed,
        block_dim: c.block_dim,
        codebook_size: c.codebook_size,
        lloyd_iterations: Some(c.lloyd_iterations),
        training_blocks: Some(c.training_blocks),
        unbiased_norm: c.unbiased_norm,
        norm_bits: c.norm_bits,
    };
    let p = vq_params(c.kind, shape, &spec)?;
    if c.padded_dim != padded_dim(shape.head_dim)
        || c.index_bits != p.index_bits()
        || c.bits_per_value != p.bits_per_value()
    {
        bail!(
            "derived fields disagree (padded_dim {}, index_bits {}, bits_per_value {}; expected {}, {}, {})",
            c.padded_dim,
            c.index_bits,
            c.bits_per_value,
            p.padded_dim(),
            p.index_bits(),
            p.bits_per_value()
        );
    }
    Ok(())
}

/// The decoded codebook of `b`, checked against its digest and `c`'s dimensions.
fn codebook_of(b: &CodebookBlob, c: &CodecParams) -> Result<Codebook> {
    if b.format != CODEBOOK_FORMAT || b.encoding != "hex" {
        bail!(
            "codebook: unsupported format {:?} / encoding {:?}",
            b.format,
            b.encoding
        );
    }
    let bytes = from_hex(&b.data).context("codebook data")?;
    if bytes.len() != b.bytes {
        bail!(
            "codebook: {} bytes, header field says {}",
            bytes.len(),
            b.bytes
        );
    }
    let got = sha256_hex(&bytes);
    if got != b.sha256 {
        bail!(
            "codebook: sha256 mismatch (stored {}, computed {got}); the codebook bytes were modified",
            b.sha256
        );
    }
    let cb = Codebook::from_bytes(&bytes)?;
    if (cb.k(), cb.n(), cb.padded_dim()) != (c.block_dim, c.codebook_size, c.padded_dim) {
        bail!(
            "codebook: dims (k={}, N={}, D={}) do not match codec (k={}, N={}, D={})",
            cb.k(),
            cb.n(),
            cb.padded_dim(),
            c.block_dim,
            c.codebook_size,
            c.padded_dim
        );
    }
    Ok(cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_quant_profiles_are_refused_with_the_reason() {
        let text = r#"{"schema_version":"fib_quant_kv_compression_profile_v1","profile_id":"x"}"#;
        let e = format!("{:#}", KvProfile::from_json(text).unwrap_err());
        assert!(e.contains("cannot be imported"), "{e}");
        let other = r#"{"schema_version":"something_else"}"#;
        let e = format!("{:#}", KvProfile::from_json(other).unwrap_err());
        assert!(e.contains("parsing KV profile JSON"), "{e}");
    }

    fn small_spec() -> ProfileSpec {
        let mut s = ProfileSpec::new(KvShape {
            layers: 2,
            kv_heads: 2,
            query_heads: 4,
            head_dim: 32,
            tokens: 64,
            role: KvRole::Both,
            rope: RopeState::PostRope,
            rope_theta: Some(10_000.0),
        });
        s.codec.codebook_size = 16;
        s.codec.lloyd_iterations = Some(4);
        s.codec.training_blocks = Some(4096);
        s.budget.max_attention_tv = Some(0.25);
        s
    }

    #[test]
    fn build_validate_round_trip() {
        let p = build_profile(&small_spec(), None).unwrap();
        assert_eq!(p.schema, PROFILE_SCHEMA);
        assert_eq!(p.codec.padded_dim, 32);
        assert_eq!(p.codec.bits_per_value, (16.0 + 8.0 * 4.0) / 32.0);
        let json = p.to_json().unwrap();
        let back = KvProfile::from_json(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.codec().unwrap().codebook().sha256(), p.codebook.sha256);
        // Deterministic: same spec, same bytes.
        assert_eq!(
            build_profile(&small_spec(), None)
                .unwrap()
                .to_json()
                .unwrap(),
            json
        );
    }

    #[test]
    fn tampered_number_is_rejected() {
        let json = build_profile(&small_spec(), None)
            .unwrap()
            .to_json()
            .unwrap();
        let bad = json.replacen("\"tokens_per_page\": 256", "\"tokens_per_page\": 255", 1);
        assert_ne!(bad, json);
        let err = KvProfile::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("part `pages`"), "{err}");
        let bad = json.replacen("\"max_attention_tv\": 0.25", "\"max_attention_tv\": 0.5", 1);
        assert!(KvProfile::from_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("part `budget`"));
    }

    #[test]
    fn tampered_codebook_byte_is_rejected() {
        let p = build_profile(&small_spec(), None).unwrap();
        let mut q = p.clone();
        // Flip one bit of the last codebook byte.
        let mut bytes = from_hex(&q.codebook.data).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        q.codebook.data = to_hex(&bytes);
        let err = q.validate().unwrap_err().to_string();
        assert!(err.contains("part `codebook`"), "{err}");
        // Even with the digests recomputed, the blob's own sha256 catches it.
        q.digests = q.compute_digests().unwrap();
        let err = q.validate().unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch"), "{err}");
    }

    #[test]
    fn consistency_checks() {
        let p = build_profile(&small_spec(), None).unwrap();
        let resealed = |f: &dyn Fn(&mut KvProfile)| {
            let mut q = p.clone();
            f(&mut q);
            q.digests = q.compute_digests().unwrap();
            q.validate().unwrap_err().to_string()
        };
        assert!(resealed(&|q| q.schema = "x".into()).contains("schema"));
        assert!(resealed(&|q| q.codec.bits_per_value = 1.0).contains("derived"));
        assert!(resealed(&|q| q.shape.query_heads = 3).contains("multiple"));
        assert!(resealed(&|q| q.protected.layers = vec![5]).contains("out of range"));
        assert!(resealed(&|q| q.codec.codebook_size = 32).contains("derived"));
        let wrong_n = resealed(&|q| {
            q.codec.codebook_size = 32;
            q.codec.index_bits = 5;
            q.codec.bits_per_value = (16.0 + 8.0 * 5.0) / 32.0;
        });
        assert!(wrong_n.contains("codebook: dims"), "{wrong_n}");
        let mut unknown: serde_json::Value = serde_json::from_str(&p.to_json().unwrap()).unwrap();
        unknown["extra"] = serde_json::json!(1);
        assert!(KvProfile::from_json(&unknown.to_string()).is_err());
    }

    #[test]
    fn tiers_are_allocated_checked_and_digested() {
        let mut s = small_spec();
        let mut wide = s.codec.clone();
        wide.codebook_size = 64;
        s.tiers = vec![wide];
        s.allocation = Some(Allocation {
            keys: vec![1, 0],
            values: vec![0, 0],
        });
        let p = build_profile(&s, None).unwrap();
        assert_eq!(p.codecs().unwrap().len(), 2);
        assert_eq!((p.codec_of(0, true), p.codec_of(1, true)), (1, 0));
        // (16 + 8·4) / 32 = 1.5 and (16 + 8·6) / 32 = 2.0: one stream in four at 2.0.
        assert_eq!(p.bits_per_value(), 1.625);
        assert_eq!(p.codec_name(), "fibquant-k4-n64+fibquant-k4-n16");
        let back = KvProfile::from_json(&p.to_json().unwrap()).unwrap();
        assert_eq!(back, p);
        let mut q = p.clone();
        q.allocation.as_mut().unwrap().values[1] = 1;
        let e = q.validate().unwrap_err().to_string();
        assert!(e.contains("part `tiers`"), "{e}");
        let resealed = |f: &dyn Fn(&mut KvProfile)| {
            let mut q = p.clone();
            f(&mut q);
            q.digests = q.compute_digests().unwrap();
            q.validate().unwrap_err().to_string()
        };
        assert!(
            resealed(&|q| q.allocation.as_mut().unwrap().keys[0] = 2).contains("does not exist")
        );
        assert!(
            resealed(&|q| q.allocation.as_mut().unwrap().keys.pop().map(drop).unwrap())
                .contains("entries")
        );
        assert!(resealed(&|q| q.allocation = None).contains("no allocation"));
        assert!(resealed(&|q| q.tiers[0].codec.bits_per_value = 1.0).contains("tiers[0]"));
        // Tiers without an allocation (or the reverse) are refused at build time.
        s.allocation = None;
        assert!(build_profile(&s, None).is_err());
    }

    #[test]
    fn spec_errors() {
        let mut s = small_spec();
        s.codec.block_dim = 3;
        assert!(build_profile(&s, None).is_err());
        let mut s = small_spec();
        s.codec.kind = CodecKind::Turboquant;
        assert!(build_profile(&s, None)
            .unwrap_err()
            .to_string()
            .contains("block_dim must be 1"));
        s.codec.block_dim = 1;
        s.codec.codebook_size = 4;
        let p = build_profile(&s, None).unwrap();
        assert_eq!(p.codec_name(), "turboquant-b2");
        let mut s = small_spec();
        s.budget.max_attention_tv = Some(f64::NAN);
        assert!(build_profile(&s, None).is_err());
    }
}
